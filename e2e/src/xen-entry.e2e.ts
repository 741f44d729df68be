/**
 * The "Bulkhead (Xen)" entry of the test image's boot menu: OVMF → the disk's GRUB → Xen 4.17
 * (multiboot2) → the Debian kernel as dom0, with the whole Control Domain in dom0. Observed from
 * outside: Xen's own console on the serial port, the screen (QMP screendump); what only the inside
 * can show (is this dom0, which backend vm-daemon chose, Xen's daemons) through the test layer's
 * root shell on dom0's console (hvc0, which Xen puts on the same serial port).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './wait';
import { ImageMachine } from './image-machine';
import { classify, parseHexColor, readPpm, type SeenPicture } from './screen-picture';

const repo = join(__dirname, '..', '..');
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e-xen');

const imageVms = readdirSync(join(repo, 'dom0-rootfs', 'vms'))
  .filter((f) => f.endsWith('.json'))
  .map(
    (f) => JSON.parse(readFileSync(join(repo, 'dom0-rootfs', 'vms', f), 'utf8')) as Record<string, unknown>,
  )
  .map((v) => ({ id: String(v.id), color: parseHexColor(String(v.color)) }));

let m: ImageMachine;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  m = new ImageMachine({ imageDir, artifactsDir: artifacts, entry: 'xen' });
  // Xen, then a PV dom0 under TCG: slower to its shell than the KVM entry.
  await m.boot();
});

after(async () => {
  if (m?.serial) {
    const save = (cmd: string, file: string) =>
      m.serial
        .run(cmd, { timeoutMs: 30_000 })
        .then((r) => writeFileSync(join(artifacts, file), r.output))
        .catch(() => undefined);
    await save('journalctl -b --no-pager -u "bulkhead-*" -u xen | tail -n 300', 'journal-tail.txt');
    await save('xl dmesg | tail -n 200', 'xl-dmesg-tail.txt');
    await save('dmesg | tail -n 150', 'dmesg-tail.txt');
  }
  await m?.shutdown();
});

test('1. the Xen entry boots Xen 4.17 from the disk through UEFI, and Linux runs as its control domain', async () => {
  // Xen's banner is printed by Xen itself on its serial console, before dom0 exists.
  assert.match(m.serial.output, /Xen version 4\.17/, "Xen's banner on the serial port");
  assert.match(m.serial.output, /\(XEN\) .*EFI/i, 'Xen was started by UEFI firmware');
  assert.equal((await m.serial.check('cat /proc/xen/capabilities')).trim(), 'control_d');
  const xl = await m.serial.check('xl list');
  assert.match(xl, /^Domain-0\s+0\s/m, 'xl lists dom0 (xenstored answers)');
  assert.match(await m.serial.check('cat /proc/cmdline'), /root=PARTUUID=[0-9a-f-]{36} /);
});

test("2. dom0 runs the stack: Xen's daemons and the Bulkhead services; vm-daemon chose its Xen backend by itself", async () => {
  await waitFor(
    'the Bulkhead services',
    async () =>
      (
        await m.serial.run(
          'systemctl is-active bulkhead-vm-daemon bulkhead-input-daemon bulkhead-usb-daemon bulkhead-switcher bulkhead-kiosk',
        )
      ).code === 0,
    300_000,
    1000,
  );
  // Debian's xen init script starts oxenstored (or xenstored) and xenconsoled.
  const daemons = await m.serial.check('pgrep -a -x "oxenstored|xenstored|xenconsoled"');
  assert.match(daemons, /xenstored/, 'a xenstored runs');
  assert.match(daemons, /xenconsoled/, 'xenconsoled runs');
  // The unit is active as soon as node starts; the daemon logs its backend ~15 s later under TCG.
  const log = await waitFor(
    "vm-daemon's backend line",
    async () =>
      (await m.serial.run('journalctl -b --no-pager -u bulkhead-vm-daemon | grep -m1 "backend "')).output,
    120_000,
    1000,
  );
  assert.match(log, /backend xen \(auto/, 'vm-daemon: backend xen, chosen by auto');
});

test('3. the kiosk shows the tiles on the screen (screendump, nothing attached)', async () => {
  const ppm = join(artifacts, 'screen.ppm');
  let seen: SeenPicture = { kind: 'other', why: 'no screendump yet' };
  await waitFor(
    'the tiles on the screen',
    async () => {
      await m.qmp.execute('screendump', { filename: ppm });
      seen = classify(readPpm(ppm), imageVms);
      return seen.kind === 'tiles';
    },
    600_000,
    1000,
  ).catch((e: Error) => {
    throw new Error(`${e.message}; last seen: ${seen.kind === 'other' ? seen.why : seen.kind}`);
  });
  unlinkSync(ppm);
  await m.screendump('tiles');
});
