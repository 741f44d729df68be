import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOwnUinputDevice } from './evdev-seat';
import { seatDeviceSpec } from '../sinks/uinput-sink';
import { BUS_USB, BUS_VIRTUAL } from '../input-event';

test('the evdev seat recognises the uinput devices input-daemon creates, and only those', () => {
  const spec = seatDeviceSpec('bulkhead-switcher');
  // What the kernel reports for the switcher sink's device: never grabbed (the kiosk reads it).
  assert.equal(
    isOwnUinputDevice({ bustype: spec.bustype!, vendor: spec.vendor!, product: spec.product! }),
    true,
  );
  // A real keyboard, or another virtual device, is grabbed as usual.
  assert.equal(isOwnUinputDevice({ bustype: BUS_USB, vendor: spec.vendor!, product: spec.product! }), false);
  assert.equal(isOwnUinputDevice({ bustype: BUS_VIRTUAL, vendor: 0x0627, product: 0x0001 }), false);
});
