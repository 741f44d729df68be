/**
 * What a QEMU holds, as usb-daemon needs it after a restart (bus and address of each host device):
 * from QOM entries and a fake sysfs, with QMP's qom-get faked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { usbAddressAtPort, usbAttachments } from './qemu-backend';

function fakeSysfs(devices: Record<string, string>): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'usb-sysfs-'));
  for (const [name, devnum] of Object.entries(devices)) {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, 'devnum'), `${devnum}\n`);
  }
  return { dir, done: () => rmSync(dir, { recursive: true }) };
}

/** qom-get hostaddr as QEMU answers it: the property as set (0 for a device added by port). */
const hostaddrAsSet = (set: Record<string, number>) => async (name: string) => set[name] ?? 0;

test("a stick attached by port is reported at the address the host gave it there, not QEMU's unset hostaddr 0", async () => {
  const sys = fakeSysfs({ '2-1': '2', '1-1.4': '7' });
  const entries = [
    { name: 'usbhost-b2-p1', type: 'child<usb-host>' },
    { name: 'usbhost-b1-p1.4', type: 'child<usb-host>' },
    { name: 'usbhost-b3-a5', type: 'child<usb-host>' },
    { name: 'xhci', type: 'child<qemu-xhci>' },
    { name: 'usbhost-b9-a1', type: 'child<usb-kbd>' },
  ];
  assert.deepEqual(
    await usbAttachments(entries, hostaddrAsSet({ 'usbhost-b3-a5': 5 }), (b, p) =>
      usbAddressAtPort(sys.dir, b, p),
    ),
    [
      ['usbhost-b2-p1', 2, 2],
      ['usbhost-b1-p1.4', 1, 7],
      ['usbhost-b3-a5', 3, 5],
    ],
  );
  sys.done();
});

test("a port with no device now (it was pulled) falls back to QEMU's hostaddr; a failing qom-get to 0", async () => {
  const sys = fakeSysfs({});
  const at = (b: number, p: string) => usbAddressAtPort(sys.dir, b, p);
  assert.deepEqual(
    await usbAttachments([{ name: 'usbhost-b2-p3', type: 'child<usb-host>' }], hostaddrAsSet({}), at),
    [['usbhost-b2-p3', 2, 0]],
  );
  const failing = async () => {
    throw new Error('qom-get: no such property');
  };
  assert.deepEqual(await usbAttachments([{ name: 'usbhost-b2-p3', type: 'child<usb-host>' }], failing, at), [
    ['usbhost-b2-p3', 2, 0],
  ]);
  sys.done();
});

test('sysfs is read only at a well-formed port path; garbage in devnum is no address', () => {
  const sys = fakeSysfs({ '2-1': 'garbage', '2-2': '0', '2-3': '300' });
  for (const port of ['1', '2', '3']) assert.equal(usbAddressAtPort(sys.dir, 2, port), null, port);
  for (const port of ['../2-1', '1/..', '', '1..2', 'a'])
    assert.equal(usbAddressAtPort(sys.dir, 2, port), null, `port '${port}'`);
  sys.done();
});
