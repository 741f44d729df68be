/** The New-machine dialog's options as vm-daemon's CreateVm/Update a{sv}. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { machineOptionsDict } from './core';

test("the main process sends the dialog's options under vm-daemon's names and D-Bus types", () => {
  const d = machineOptionsDict({
    name: 'Lab',
    slot: 3,
    color: '#2e7d32',
    memoryMiB: 256,
    vcpus: 2,
    network: 'user',
    usbAutoAttach: true,
    diskSizeMiB: 64,
    diskFormat: 'qcow2',
    cdrom: '',
  });
  assert.deepEqual(Object.fromEntries(Object.entries(d).map(([k, v]) => [k, [v.signature, v.value]])), {
    name: ['s', 'Lab'],
    slot: ['u', 3],
    color: ['s', '#2e7d32'],
    memory_mib: ['u', 256],
    vcpus: ['u', 2],
    network: ['s', 'user'],
    usb_auto_attach: ['b', true],
    disk_size_mib: ['u', 64],
    disk_format: ['s', 'qcow2'],
    cdrom: ['s', ''],
  });
});
