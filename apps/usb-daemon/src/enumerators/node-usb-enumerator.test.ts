import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as NodeUsb from 'usb';
import { NodeUsbEnumerator } from './node-usb-enumerator';
import { findSysfsPort, readSysfsUsbDevice } from './sysfs';

/** A sysfs tree like the kernel's for QEMU's usb-storage at 1-1 and usb-kbd at 1-2.4. */
function fakeSysfs(): string {
  const root = mkdtempSync(join(tmpdir(), 'usb-sysfs-'));
  const dev = (name: string, attrs: Record<string, string>) => {
    mkdirSync(join(root, name));
    for (const [k, v] of Object.entries(attrs)) writeFileSync(join(root, name, k), v + '\n');
  };
  dev('usb1', { busnum: '1', devnum: '1', idVendor: '1d6b', idProduct: '0002', bDeviceClass: '09' });
  dev('1-1', {
    busnum: '1',
    devnum: '2',
    idVendor: '46f4',
    idProduct: '0001',
    bDeviceClass: '00',
    serial: '1-0000:00:04.0-1',
    manufacturer: 'QEMU',
    product: 'QEMU USB HARDDRIVE',
  });
  dev('1-1:1.0', { bInterfaceClass: '08', bInterfaceSubClass: '06', bInterfaceProtocol: '50' });
  dev('1-2.4', {
    busnum: '1',
    devnum: '5',
    idVendor: '0627',
    idProduct: '0001',
    bDeviceClass: '00',
    manufacturer: 'QEMU',
    product: 'QEMU USB Keyboard',
  });
  dev('1-2.4:1.0', { bInterfaceClass: '03', bInterfaceSubClass: '01', bInterfaceProtocol: '01' });
  return root;
}

test('sysfs: a device directory gives ids, strings and interface classes; the port is found by bus/address', () => {
  const root = fakeSysfs();
  try {
    const d = readSysfsUsbDevice(root, '1-1');
    assert.deepEqual(d, {
      port: '1-1',
      bus: 1,
      address: 2,
      vendorId: 0x46f4,
      productId: 1,
      deviceCodes: { classCode: 0, subclass: 0, protocol: 0 },
      interfaces: [{ classCode: 8, subclass: 6, protocol: 0x50 }],
      serial: '1-0000:00:04.0-1',
      vendor: 'QEMU',
      product: 'QEMU USB HARDDRIVE',
    });
    assert.equal(readSysfsUsbDevice(root, '1-2.4')?.serial, '');
    assert.equal(readSysfsUsbDevice(root, '1-7'), null, 'a vanished device reads as null');
    assert.equal(findSysfsPort(root, 1, 5), '1-2.4');
    assert.equal(findSysfsPort(root, 1, 1), null, 'root hubs have no port path');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('NodeUsbEnumerator: node-usb for bus/address/port/descriptors, sysfs for strings; root hubs skipped', async () => {
  const root = fakeSysfs();
  // Stand-ins for node-usb Device objects, shaped like usb 2.x's (only the fields we read).
  const usbDevice = (
    bus: number,
    address: number,
    ports: number[] | undefined,
    vid: number,
    pid: number,
    cfg: unknown,
  ) => ({
    busNumber: bus,
    deviceAddress: address,
    portNumbers: ports,
    deviceDescriptor: {
      idVendor: vid,
      idProduct: pid,
      bDeviceClass: 0,
      bDeviceSubClass: 0,
      bDeviceProtocol: 0,
    },
    get configDescriptor() {
      if (cfg instanceof Error) throw cfg;
      return cfg;
    },
  });
  const list = [
    usbDevice(1, 1, [], 0x1d6b, 2, undefined),
    usbDevice(1, 2, [1], 0x46f4, 1, {
      interfaces: [[{ bInterfaceClass: 8, bInterfaceSubClass: 6, bInterfaceProtocol: 0x50 }]],
    }),
    usbDevice(1, 5, undefined, 0x0627, 1, new Error('LIBUSB_ERROR_NOT_FOUND')),
  ];
  const module = {
    getDeviceList: () => list,
    usb: { on: () => undefined, off: () => undefined },
  } as unknown as typeof NodeUsb;
  try {
    const e = new NodeUsbEnumerator({ usb: module, sysfsRoot: root });
    const got = await e.list();
    assert.equal(got.length, 2);
    assert.deepEqual(
      got.map((d) => [
        d.port,
        d.bus,
        d.address,
        d.serial,
        d.product,
        d.interfaces[0].classCode,
        d.interfaces[0].protocol,
      ]),
      [
        ['1-1', 1, 2, '1-0000:00:04.0-1', 'QEMU USB HARDDRIVE', 8, 0x50],
        ['1-2.4', 1, 5, '', 'QEMU USB Keyboard', 3, 1], // port and interfaces from sysfs
      ],
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('NodeUsbEnumerator loads the real node-usb binding (no devices on this host is fine)', async () => {
  const e = new NodeUsbEnumerator();
  const got = await e.list();
  assert.ok(Array.isArray(got));
});
