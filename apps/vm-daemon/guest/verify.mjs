#!/usr/bin/env node
// verify.mjs - boots the Bulkhead test guest in QEMU (TCG) on -machine pc and
// q35, measures start-to-READY time, drives the PS/2 keyboard and mouse through
// QMP input-send-event, checks the guest's serial log line by line, and takes a
// QMP screendump PNG whose pixels are checked for the color and the name.
//
//   node verify.mjs [--keep-png DIR] [--machine pc|q35]
//
// QMP goes through @bulkhead/qmp (shared/qmp), the client every other QMP
// speaker uses: build it first (`npx tsc -b shared/qmp`, or scripts/setup.sh).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const kernel = path.join(here, 'build', 'bulkhead-guest.elf');
const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const keepDir = opt('--keep-png');
const machines = opt('--machine') ? [opt('--machine')] : ['pc', 'q35'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const qmpDist = path.join(here, '..', '..', '..', 'shared', 'qmp', 'dist', 'index.js');
if (!fs.existsSync(qmpDist)) {
  console.error(`verify.mjs: ${qmpDist} is missing: build the QMP client first (npx tsc -b shared/qmp)`);
  process.exit(2);
}
const { QmpClient } = createRequire(import.meta.url)(qmpDist);

/** A QMP session with the guest's QEMU: cmd(execute, args) resolves with the reply's return. */
async function qmpConnect(sock, untilMs) {
  const client = await QmpClient.connect(sock, { retryUntilMs: untilMs });
  return { cmd: (execute, args) => client.execute(execute, args), close: () => client.close() };
}

/** Decodes an 8-bit RGB/RGBA non-interlaced PNG into {width,height,px(x,y)}. */
function decodePng(buf) {
  if (buf.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let off = 8;
  let width = 0,
    height = 0,
    colorType = 0,
    bitDepth = 0,
    interlace = 0;
  const idat = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      bitDepth = data[8];
      colorType = data[9];
      interlace = data[12];
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  if (bitDepth !== 8 || interlace !== 0 || (colorType !== 2 && colorType !== 6))
    throw new Error(`unsupported PNG (depth ${bitDepth}, color ${colorType}, interlace ${interlace})`);
  const bpp = colorType === 6 ? 4 : 3;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const out = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = out.subarray(y * stride, (y + 1) * stride);
    const prev = y ? out.subarray((y - 1) * stride, y * stride) : Buffer.alloc(stride);
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? row[i - bpp] : 0,
        b = prev[i],
        c = i >= bpp ? prev[i - bpp] : 0;
      let v = src[i];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c,
          pa = Math.abs(p - a),
          pb = Math.abs(p - b),
          pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      row[i] = v & 255;
    }
  }
  return { width, height, px: (x, y) => [...out.subarray((y * width + x) * bpp, (y * width + x) * bpp + 3)] };
}

// qcode -> the serial line the guest must print for a press (release: "up").
const KEYS = [
  ['a', '1e'],
  ['esc', '01'],
  ['ret', '1c'],
  ['shift', '2a'],
  ['shift_r', '36'],
  ['ctrl', '1d'],
  ['ctrl_r', 'e01d'],
  ['alt', '38'],
  ['alt_r', 'e038'],
  ['meta_l', 'e05b'],
  ['up', 'e048'],
  ['kp_enter', 'e01c'],
  ['kp_divide', 'e035'],
  ['delete', 'e053'],
  ['f12', '58'],
  ['print', 'e037'],
];

async function verify(machine) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulkhead-guest-'));
  const log = path.join(dir, 'serial.log');
  const sock = path.join(dir, 'qmp.sock');
  const color = machine === 'pc' ? '#2a6fdb' : '#c0392b';
  const name = machine === 'pc' ? 'personal' : 'business';
  const t0 = process.hrtime.bigint();
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-accel',
      'tcg',
      '-machine',
      machine,
      '-m',
      '32',
      '-display',
      'none',
      '-no-reboot',
      '-serial',
      `file:${log}`,
      '-qmp',
      `unix:${sock},server=on,wait=off`,
      '-kernel',
      kernel,
      '-append',
      `name=${name} color=${color}`,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const failures = [];
  const check = (ok, what) => {
    if (!ok) failures.push(what);
    console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}`);
  };
  const serial = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '');
  const waitFor = async (pred, ms) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (pred(serial())) return true;
      await sleep(5);
    }
    return pred(serial());
  };
  console.log(`== -machine ${machine}: name=${name} color=${color}`);
  let qmp;
  try {
    const ready = await waitFor((s) => s.includes(`BULKHEAD-GUEST READY name=${name}\n`), 10000);
    const bootMs = Number(process.hrtime.bigint() - t0) / 1e6;
    check(ready, `READY line after ${bootMs.toFixed(0)} ms`);
    check(bootMs < 1000, 'boot under 1 s');
    qmp = await qmpConnect(sock, 5000);
    const status = await qmp.cmd('query-status');
    check(status.status === 'running', `query-status: ${status.status}`);

    const key = (q, down) => ({ type: 'key', data: { down, key: { type: 'qcode', data: q } } });
    let mark = serial().length;
    const expect = [];
    for (const [q, code] of KEYS) {
      await qmp.cmd('input-send-event', { events: [key(q, true)] });
      await qmp.cmd('input-send-event', { events: [key(q, false)] });
      expect.push(`KEY down ${code}`, `KEY up ${code}`);
    }
    const want = expect.join('\n') + '\n';
    const gotKeys = await waitFor((s) => s.slice(mark).includes(want), 5000);
    check(gotKeys, `${KEYS.length} keys down/up in order`);
    if (!gotKeys) console.log(serial().slice(mark));

    mark = serial().length;
    const btn = (b, down) => ({ type: 'btn', data: { down, button: b } });
    const rel = (axis, value) => ({ type: 'rel', data: { axis, value } });
    await qmp.cmd('input-send-event', { events: [rel('x', 10), rel('y', 5)] });
    await qmp.cmd('input-send-event', { events: [btn('left', true)] });
    await qmp.cmd('input-send-event', { events: [btn('left', false)] });
    await qmp.cmd('input-send-event', { events: [btn('right', true)] });
    await qmp.cmd('input-send-event', { events: [btn('right', false)] });
    await qmp.cmd('input-send-event', { events: [btn('middle', true)] });
    await qmp.cmd('input-send-event', { events: [btn('middle', false)] });
    await qmp.cmd('input-send-event', { events: [rel('x', -3), rel('y', -7)] });
    const mouseWant =
      [
        'REL 10 -5',
        'BTN down left',
        'BTN up left',
        'BTN down right',
        'BTN up right',
        'BTN down middle',
        'BTN up middle',
        'REL -3 7',
      ].join('\n') + '\n';
    const gotMouse = await waitFor((s) => s.slice(mark).includes(mouseWant), 5000);
    check(gotMouse, 'mouse motion and buttons');
    if (!gotMouse) console.log(serial().slice(mark));

    await sleep(100); // let the on-screen event log redraw
    const png = path.join(keepDir ?? dir, `bulkhead-guest-${machine}.png`);
    await qmp.cmd('screendump', { filename: png, format: 'png' });
    const img = decodePng(fs.readFileSync(png));
    check(img.width === 640 && img.height === 480, `screendump ${img.width}x${img.height} (${png})`);
    const rgb = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
    const same = (p, q) => p.every((v, i) => Math.abs(v - q[i]) <= 2);
    check(
      same(img.px(5, 5), rgb) && same(img.px(634, 474), rgb) && same(img.px(320, 300), rgb),
      'background color',
    );
    let ink = 0;
    for (let y = 144; y < 192; y++) for (let x = 0; x < 640; x++) if (!same(img.px(x, y), rgb)) ink++;
    check(ink > name.length * 200, `name drawn (${ink} text pixels)`);
  } catch (e) {
    check(false, `error: ${e.stack ?? e}`);
  } finally {
    qmp?.close();
    qemu.kill('SIGTERM');
    await new Promise((r) => (qemu.exitCode !== null ? r() : qemu.once('exit', r)));
    if (!keepDir) fs.rmSync(dir, { recursive: true, force: true });
  }
  return failures;
}

if (!fs.existsSync(kernel)) {
  console.error(`missing ${kernel}: run make first`);
  process.exit(2);
}
let failed = 0;
for (const m of machines) failed += (await verify(m)).length;
console.log(failed ? `${failed} check(s) FAILED` : 'all checks passed');
process.exit(failed ? 1 : 0);
