// Integration test: the QMP client against a real QEMU (TCG) running the Bulkhead test guest
// (apps/vm-daemon/guest). Skipped, saying why, only when QEMU or the guest cannot be had.
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';

import { QmpClient, QmpError, QmpEvent } from './qmp-client';

const QEMU = 'qemu-system-x86_64';
// The test guest is vm-daemon's (it is what vm-daemon runs); this package only borrows it.
const GUEST_DIR = path.resolve(__dirname, '../../../apps/vm-daemon/guest');
const GUEST = path.join(GUEST_DIR, 'build', 'bulkhead-guest.elf');
const COLOR = '#c0392b';

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '')
    .split(path.delimiter)
    .some((dir) => dir && fs.existsSync(path.join(dir, cmd)));
}

/** Why the test cannot run, or undefined. Builds the guest first if it can (it takes ~1 s). */
function skipReason(): string | undefined {
  if (!onPath(QEMU)) return `${QEMU} is not installed (apt-get install qemu-system-x86)`;
  if (!fs.existsSync(GUEST) && onPath('make') && fs.existsSync(path.join(GUEST_DIR, 'Makefile'))) {
    spawnSync('make', ['-C', GUEST_DIR], { stdio: 'ignore', timeout: 60_000 });
  }
  if (!fs.existsSync(GUEST)) return `the test guest is not built: run make -C ${GUEST_DIR}`;
  return undefined;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Decodes an 8-bit RGB(A) PNG (as QEMU's screendump writes) to a pixel reader. */
function decodePng(buf: Buffer): { width: number; height: number; px: (x: number, y: number) => number[] } {
  assert.equal(buf.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'PNG signature');
  let off = 8;
  let width = 0;
  let height = 0;
  let colorType = 0;
  const idat: Buffer[] = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.equal(data[8], 8, 'bit depth');
      colorType = data[9];
      assert.equal(data[12], 0, 'not interlaced');
    } else if (type === 'IDAT') idat.push(data);
    off += 12 + len;
  }
  const bpp = colorType === 6 ? 4 : 3;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const out = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? out[y * stride + i - bpp] : 0;
      const b = y > 0 ? out[(y - 1) * stride + i] : 0;
      const c = i >= bpp && y > 0 ? out[(y - 1) * stride + i - bpp] : 0;
      let v = raw[y * (stride + 1) + 1 + i];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[y * stride + i] = v & 255;
    }
  }
  return {
    width,
    height,
    px: (x, y) => [...out.subarray((y * width + x) * bpp, (y * width + x) * bpp + 3)],
  };
}

const skip = skipReason();

describe('QmpClient against real QEMU and the test guest', { skip, timeout: 30_000 }, () => {
  let dir = '';
  let serialLog = '';
  let qemu: ChildProcess | undefined;
  let client: QmpClient | undefined;
  const events: QmpEvent[] = [];

  const serial = () => (fs.existsSync(serialLog) ? fs.readFileSync(serialLog, 'utf8') : '');
  async function waitForSerial(text: string, fromOffset = 0, ms = 5000): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const s = serial().slice(fromOffset);
      if (s.includes(text)) return s;
      if (Date.now() > end) assert.fail(`serial log lacks ${JSON.stringify(text)}; it has:\n${s}`);
      await sleep(10);
    }
  }
  const key = (qcode: string, down: boolean) => ({
    type: 'key',
    data: { down, key: { type: 'qcode', data: qcode } },
  });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-qemu-test-'));
    serialLog = path.join(dir, 'serial.log');
    const sock = path.join(dir, 'qmp.sock');
    // -accel tcg: this must work without KVM.
    qemu = spawn(
      QEMU,
      [
        '-accel',
        'tcg',
        '-machine',
        'q35',
        '-m',
        '32',
        '-display',
        'none',
        '-no-reboot',
        '-serial',
        `file:${serialLog}`,
        '-qmp',
        `unix:${sock},server=on,wait=off`,
        '-kernel',
        GUEST,
        '-append',
        `name=business color=${COLOR}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    qemu.stderr?.on('data', (d) => (stderr += d));
    const exited = new Promise<never>((_, reject) =>
      qemu?.once('exit', (code) => reject(new Error(`QEMU exited early (${code}): ${stderr}`))),
    );
    exited.catch(() => {});
    client = await Promise.race([QmpClient.connect(sock, { retryUntilMs: 10_000, timeoutMs: 5000 }), exited]);
    client.on('event', (e) => events.push(e));
    await Promise.race([waitForSerial('BULKHEAD-GUEST READY name=business\n', 0, 10_000), exited]);
  });

  after(async () => {
    await client?.close();
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      const gone = new Promise((r) => qemu?.once('exit', r));
      qemu.kill('SIGTERM');
      await gone;
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('greeting and query-status', async () => {
    assert.ok(client);
    assert.ok(client.greeting.QMP.version.qemu.major >= 7);
    const status = await client.execute<{ status: string; running: boolean }>('query-status');
    assert.equal(status.status, 'running');
    assert.equal(status.running, true);
  });

  test('QEMU error replies become QmpError', async () => {
    assert.ok(client);
    await assert.rejects(
      client.execute('no-such-command'),
      (err: QmpError) => err.qmpClass === 'CommandNotFound',
    );
    await assert.rejects(
      client.execute('input-send-event', { events: [{ type: 'abs', data: { axis: 'x', value: 1 } }] }),
      QmpError,
    );
  });

  test('keys sent with input-send-event reach the guest (execute and send)', async () => {
    assert.ok(client);
    const mark = serial().length;
    await client.execute('input-send-event', { events: [key('a', true)] });
    await client.execute('input-send-event', { events: [key('a', false)] });
    // the fast path: pipelined, replies dropped
    const errors: Error[] = [];
    client.on('command-error', (e) => errors.push(e));
    for (const q of ['ctrl_r', 'shift', 'ret']) {
      client.send('input-send-event', { events: [key(q, true)] });
      client.send('input-send-event', { events: [key(q, false)] });
    }
    client.send('input-send-event', {
      events: [
        { type: 'rel', data: { axis: 'x', value: 10 } },
        { type: 'rel', data: { axis: 'y', value: 5 } },
      ],
    });
    client.send('input-send-event', { events: [{ type: 'btn', data: { down: true, button: 'left' } }] });
    client.send('input-send-event', { events: [{ type: 'btn', data: { down: false, button: 'left' } }] });
    const want = [
      'KEY down 1e',
      'KEY up 1e',
      'KEY down e01d',
      'KEY up e01d',
      'KEY down 2a',
      'KEY up 2a',
      'KEY down 1c',
      'KEY up 1c',
      'REL 10 -5',
      'BTN down left',
      'BTN up left',
      '',
    ].join('\n');
    await waitForSerial(want, mark);
    await client.execute('query-status');
    assert.deepEqual(errors, []);
  });

  test('stop and cont produce STOP and RESUME events', async () => {
    assert.ok(client);
    await client.execute('stop');
    assert.equal((await client.execute<{ status: string }>('query-status')).status, 'paused');
    await client.execute('cont');
    const end = Date.now() + 2000;
    while (!events.some((e) => e.event === 'RESUME') && Date.now() < end) await sleep(10);
    const names = events.map((e) => e.event);
    assert.ok(names.includes('STOP') && names.includes('RESUME'), names.join(','));
    assert.ok(events[0].timestamp.seconds > 0);
  });

  test('screendump writes a PNG showing the guest color and name', async () => {
    assert.ok(client);
    const png = path.join(dir, 'screen.png');
    await client.execute('screendump', { filename: png, format: 'png' });
    const img = decodePng(fs.readFileSync(png));
    assert.equal(img.width, 640);
    assert.equal(img.height, 480);
    const want = [1, 3, 5].map((i) => parseInt(COLOR.slice(i, i + 2), 16));
    assert.deepEqual(img.px(2, 2), want, 'background color in the corner');
    let ink = 0;
    for (let y = 144; y < 192; y++) for (let x = 0; x < 640; x++) if (img.px(x, y)[0] !== want[0]) ink++;
    assert.ok(ink > 1000, `the name is drawn (${ink} pixels)`);
  });
});
