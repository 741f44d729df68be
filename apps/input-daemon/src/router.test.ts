import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { BTN_LEFT, EV_KEY, EV_REL, REL_X, ev } from './input-event';
import { InputPipeline } from './pipeline';
import { Router, type LedState } from './router';
import { FakeSink } from './testing/fake-sink';

const CTRL = 29,
  KEY_2 = 3,
  A = 30,
  B = 48,
  CAPS = 58;
const VM_A = '/org/bulkhead/VmManager1/vm/a',
  VM_B = '/org/bulkhead/VmManager1/vm/b';
const quiet = { info: () => undefined, warn: () => undefined };

function setup() {
  const switcher = new FakeSink('/');
  const a = new FakeSink(VM_A);
  const b = new FakeSink(VM_B);
  const leds: LedState[] = [];
  const router = new Router(switcher, { setLeds: (s) => leds.push(s) }, quiet);
  const chords: string[] = [];
  const pipeline = new InputPipeline(new HotkeyMatcher(buildChords()), router, (c) => chords.push(c.text));
  router.setFocus(VM_A, a);
  const key = (code: number, value: number) => pipeline.handleFrame([ev(EV_KEY, code, value)]);
  return { switcher, a, b, router, pipeline, chords, key, leds };
}

test('Ctrl+2: no event of Ctrl or 2 reaches A, B or the switcher, before or after the switch', () => {
  const { a, b, switcher, router, chords, key } = setup();
  key(CTRL, 1);
  key(KEY_2, 1);
  assert.deepEqual(chords, ['Ctrl+2']);
  // vm-daemon would now call Freeze and SetFocus(B)
  router.freeze();
  router.setFocus(VM_B, b);
  key(CTRL, 2);
  key(KEY_2, 0);
  key(CTRL, 0);
  key(B, 1);
  key(B, 0);
  assert.deepEqual(a.events(), []);
  assert.deepEqual(b.events(), [ev(EV_KEY, B, 1), ev(EV_KEY, B, 0)]);
  assert.equal(switcher.frames.length, 0);
});

test('Freeze releases held keys AND mouse buttons (BTN_LEFT = 0x110) in the old target; the new one gets no half stroke', () => {
  const { a, b, router, pipeline, key } = setup();
  key(A, 1);
  pipeline.handleFrame([ev(EV_KEY, BTN_LEFT, 1), ev(EV_REL, REL_X, 4)]);
  router.freeze();
  pipeline.handleFrame([ev(EV_REL, REL_X, 9)]); // dropped while frozen
  router.setFocus(VM_B, b);
  key(A, 2);
  key(A, 0);
  pipeline.handleFrame([ev(EV_KEY, BTN_LEFT, 0)]);
  assert.deepEqual(
    a.events().filter((e) => e.type === EV_KEY),
    [ev(EV_KEY, A, 1), ev(EV_KEY, BTN_LEFT, 1), ev(EV_KEY, A, 0), ev(EV_KEY, BTN_LEFT, 0)],
  );
  assert.deepEqual(b.events(), []);
  assert.deepEqual(router.heldCodes(), []);
});

test('while Locked input goes only to the switcher; Unlock restores the focused VM', () => {
  const { a, switcher, router, key } = setup();
  key(A, 1);
  router.lock();
  key(A, 0);
  key(B, 1);
  key(B, 0);
  router.unlock();
  key(A, 1);
  assert.deepEqual(a.events(), [ev(EV_KEY, A, 1), ev(EV_KEY, A, 0), ev(EV_KEY, A, 1)]);
  assert.deepEqual(switcher.events(), [ev(EV_KEY, B, 1), ev(EV_KEY, B, 0)]);
});

test('each target keeps its own Caps Lock LED, restored on focus', () => {
  const { b, router, key, leds } = setup();
  key(CAPS, 1);
  key(CAPS, 0);
  assert.deepEqual(leds.at(-1), { caps: true, num: false, scroll: false });
  router.freeze();
  router.setFocus(VM_B, b);
  assert.deepEqual(leds.at(-1), { caps: false, num: false, scroll: false });
  router.freeze();
  router.setFocus(VM_A, new FakeSink(VM_A));
  assert.deepEqual(leds.at(-1), { caps: true, num: false, scroll: false });
});

test('a dead sink does not throw into the pipeline', () => {
  const { a, key, router } = setup();
  a.alive = false;
  key(A, 1);
  assert.equal(a.frames.length, 0);
  assert.equal(router.focusedTarget, VM_A);
});
