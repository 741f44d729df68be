/**
 * vm-daemon's backend from the machine it runs on: Xen in Xen's control domain (the image's
 * "Bulkhead (Xen)" entry), QEMU/KVM everywhere else, and --backend / BULKHEAD_BACKEND override it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseBackend, parseArgs, readXenCapabilities } from './main';

test('auto: Xen in dom0 (capabilities list control_d), QEMU in a Xen guest, without Xen or without xenfs', () => {
  assert.equal(
    chooseBackend('auto', () => 'control_d\n'),
    'xen',
  );
  // A domU's /proc/xen/capabilities is empty; no Xen or xenfs not mounted: no file at all.
  assert.equal(
    chooseBackend('auto', () => ''),
    'qemu',
  );
  assert.equal(
    chooseBackend('auto', () => null),
    'qemu',
  );
  assert.equal(
    chooseBackend('auto', () => 'not_control_d'),
    'qemu',
  );
});

test('qemu and xen override what the machine says; anything else is refused by name', () => {
  assert.equal(
    chooseBackend('qemu', () => 'control_d\n'),
    'qemu',
  );
  assert.equal(
    chooseBackend('xen', () => null),
    'xen',
  );
  assert.throws(() => chooseBackend('kvm', () => null), /--backend must be auto, qemu or xen, got 'kvm'/);
});

test('the default is auto; BULKHEAD_BACKEND sets it and --backend wins over the environment', () => {
  assert.equal(parseArgs([], {}).backend, 'auto');
  assert.equal(parseArgs([], { BULKHEAD_BACKEND: 'qemu' }).backend, 'qemu');
  assert.equal(parseArgs(['--backend', 'xen'], { BULKHEAD_BACKEND: 'qemu' }).backend, 'xen');
});

test('readXenCapabilities: the file as written, null when it is missing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-xencaps-'));
  try {
    writeFileSync(join(dir, 'capabilities'), 'control_d\n');
    assert.equal(readXenCapabilities(join(dir, 'capabilities')), 'control_d\n');
    assert.equal(readXenCapabilities(join(dir, 'missing')), null);
    assert.equal(
      chooseBackend('auto', () => readXenCapabilities(join(dir, 'capabilities'))),
      'xen',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
