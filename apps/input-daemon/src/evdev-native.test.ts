import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EvdevError, EvdevHandle, UinputDevice, nativeInputEventSize } from './evdev-native';
import { INPUT_EVENT_SIZE } from './input-event';
import { seatDeviceSpec } from './sinks/uinput-sink';

test('the addon loads and agrees that struct input_event is 24 bytes', () => {
  assert.equal(nativeInputEventSize(), INPUT_EVENT_SIZE);
});

test('opening a missing evdev node gives an ENOENT EvdevError naming the path', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'evdev-')), 'event99');
  assert.throws(
    () => EvdevHandle.open(path),
    (e: unknown) => {
      assert.ok(e instanceof EvdevError);
      assert.equal(e.code, 'ENOENT');
      assert.equal(e.errno, 2);
      assert.equal(e.syscall, 'open');
      assert.equal(e.path, path);
      assert.match(e.message, /event99/);
      return true;
    },
  );
});

test('creating a uinput device without the uinput node gives ENOENT, not a crash', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'uinput-')), 'uinput');
  assert.throws(
    () => UinputDevice.create(seatDeviceSpec('t'), path),
    (e: unknown) => e instanceof EvdevError && e.code === 'ENOENT' && e.path === path,
  );
});

test('evdev ioctls on a file that is not an input device fail with ENOTTY', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'evdev-')), 'plain');
  writeFileSync(file, 'x');
  const h = EvdevHandle.open(file, { writable: false });
  try {
    assert.throws(
      () => h.name(),
      (e: unknown) => e instanceof EvdevError && e.code === 'ENOTTY' && e.syscall === 'ioctl(EVIOCGNAME)',
    );
    assert.throws(
      () => h.grab(true),
      (e: unknown) => e instanceof EvdevError && e.code === 'ENOTTY',
    );
  } finally {
    h.close();
    h.close();
  }
});
