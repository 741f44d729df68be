import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildChords, HotkeyMatcher } from './hotkeys';
import {
  BTN_LEFT,
  EV_KEY,
  EV_MSC,
  EV_REL,
  REL_WHEEL,
  REL_X,
  REL_Y,
  ev,
  type InputEvent,
} from './input-event';
import { InputPipeline } from './pipeline';
import { Router } from './router';
import { FakeSink } from './testing/fake-sink';

/**
 * What a VM actually receives through hotkeys + router for the everyday modifier uses, now that a
 * modifier that could start a chord is held back until the next event decides.
 */
const CTRL = 29,
  RCTRL = 97,
  SHIFT = 42,
  ALT = 56,
  KEY_1 = 2,
  KEY_2 = 3,
  C = 46,
  BACKSPACE = 14;
const MSC_SCAN = 4;
const VM_A = '/org/bulkhead/VmManager1/vm/a',
  VM_B = '/org/bulkhead/VmManager1/vm/b';
const quiet = { info: () => undefined, warn: () => undefined };
const down = (code: number) => ev(EV_KEY, code, 1);
const up = (code: number) => ev(EV_KEY, code, 0);

function setup() {
  const switcher = new FakeSink('/');
  const a = new FakeSink(VM_A);
  const b = new FakeSink(VM_B);
  const router = new Router(switcher, { setLeds: () => undefined }, quiet);
  const chords: string[] = [];
  const pipeline = new InputPipeline(new HotkeyMatcher(buildChords()), router, (c) => chords.push(c.text));
  router.setFocus(VM_A, a);
  /** One key event per frame, preceded by its scan code like a real keyboard's frames. */
  const key = (code: number, value: number) =>
    pipeline.handleFrame([ev(EV_MSC, MSC_SCAN, 0x70000 + code), ev(EV_KEY, code, value)]);
  const keys = (...events: InputEvent[]) => events.forEach((e) => key(e.code, e.value));
  return { switcher, a, b, router, pipeline, chords, key, keys };
}

test('a lone Ctrl tap reaches the VM as press then release (nothing is lost by holding it back)', () => {
  const { a, keys, chords } = setup();
  keys(down(CTRL));
  assert.deepEqual(a.events(), [], 'held back while it could start a chord');
  keys(up(CTRL));
  assert.deepEqual(a.events(), [down(CTRL), up(CTRL)]);
  assert.deepEqual(chords, []);
});

test('lone Alt and lone Shift taps (Windows menus, IME switching) reach the VM whole', () => {
  const { a, keys } = setup();
  keys(down(ALT), up(ALT), down(SHIFT), up(SHIFT));
  assert.deepEqual(a.events(), [down(ALT), up(ALT), down(SHIFT), up(SHIFT)]);
});

test('Ctrl+C reaches the VM exactly as typed, in order', () => {
  const { a, keys } = setup();
  keys(down(CTRL), down(C), up(C), up(CTRL));
  assert.deepEqual(a.events(), [down(CTRL), down(C), up(C), up(CTRL)]);
});

test('Ctrl+click: the held-back Ctrl goes out in the button frame, just before the button', () => {
  const { a, key, pipeline } = setup();
  key(CTRL, 1);
  pipeline.handleFrame([ev(EV_REL, REL_X, 3), ev(EV_KEY, BTN_LEFT, 1)]);
  pipeline.handleFrame([ev(EV_KEY, BTN_LEFT, 0)]);
  key(CTRL, 0);
  assert.deepEqual(a.frames, [
    [ev(EV_REL, REL_X, 3), down(CTRL), down(BTN_LEFT)],
    [up(BTN_LEFT)],
    [up(CTRL)],
  ]);
});

test('Ctrl+wheel (zoom): Ctrl goes out before the wheel; plain pointer motion does not spoil Ctrl+2', () => {
  const { a, key, pipeline, chords } = setup();
  key(CTRL, 1);
  pipeline.handleFrame([ev(EV_REL, REL_WHEEL, -1)]);
  key(CTRL, 0);
  assert.deepEqual(a.events(), [down(CTRL), ev(EV_REL, REL_WHEEL, -1), up(CTRL)]);

  key(CTRL, 1);
  pipeline.handleFrame([ev(EV_REL, REL_X, 1), ev(EV_REL, REL_Y, -1)]); // a jittering mouse
  key(KEY_2, 1);
  key(KEY_2, 0);
  key(CTRL, 0);
  assert.deepEqual(chords, ['Ctrl+2']);
  assert.deepEqual(
    a.events().slice(3),
    [ev(EV_REL, REL_X, 1), ev(EV_REL, REL_Y, -1)],
    'the motion, and no key at all',
  );
});

test('Ctrl+Shift+1 is not a chord: every key reaches the VM, in the order pressed', () => {
  const { a, keys, chords } = setup();
  keys(down(CTRL), down(SHIFT), down(KEY_1), up(KEY_1), up(SHIFT), up(CTRL));
  assert.deepEqual(chords, []);
  assert.deepEqual(
    a.events().filter((e) => e.type === EV_KEY),
    [down(CTRL), down(SHIFT), down(KEY_1), up(KEY_1), up(SHIFT), up(CTRL)],
  );
});

test('Ctrl+Alt+Backspace: both modifiers held back in order; nothing of the chord reaches the VM', () => {
  const { a, keys, chords } = setup();
  keys(down(CTRL), down(ALT), down(BACKSPACE), ev(EV_KEY, BACKSPACE, 2), up(BACKSPACE), up(ALT), up(CTRL));
  assert.deepEqual(chords, ['Ctrl+Alt+Backspace']);
  assert.deepEqual(
    a.events().filter((e) => e.type === EV_KEY),
    [],
  );
  // Ctrl+Alt+Del is the guest's: it gets Ctrl and Alt, in order, then Del.
  keys(down(CTRL), down(ALT), down(111), up(111), up(ALT), up(CTRL));
  assert.deepEqual(
    a.events().filter((e) => e.type === EV_KEY),
    [down(CTRL), down(ALT), down(111), up(111), up(ALT), up(CTRL)],
  );
});

test('autorepeat of a held-back Ctrl keeps it held back: Ctrl (repeating) + 2 still switches, Ctrl (repeating) + C still copies', () => {
  const { a, keys, chords } = setup();
  keys(
    down(RCTRL),
    ev(EV_KEY, RCTRL, 2),
    ev(EV_KEY, RCTRL, 2),
    down(KEY_2),
    up(KEY_2),
    ev(EV_KEY, RCTRL, 2),
    up(RCTRL),
  );
  assert.deepEqual(chords, ['Ctrl+2']);
  assert.deepEqual(
    a.events().filter((e) => e.type === EV_KEY),
    [],
  );
  keys(down(CTRL), ev(EV_KEY, CTRL, 2), down(C), ev(EV_KEY, CTRL, 2), up(C), up(CTRL));
  assert.deepEqual(
    a.events().filter((e) => e.type === EV_KEY),
    [down(CTRL), down(C), ev(EV_KEY, CTRL, 2), up(C), up(CTRL)],
  );
});

test('a switch while Ctrl is held back: A never saw it, B gets no half stroke, and B types normally', () => {
  const { a, b, keys, router } = setup();
  keys(down(CTRL));
  router.freeze();
  router.setFocus(VM_B, b);
  keys(down(C), up(C), up(CTRL), down(C), up(C));
  assert.deepEqual(a.events(), []);
  assert.deepEqual(
    b.events().filter((e) => e.type === EV_KEY),
    [down(C), up(C), down(C), up(C)],
  );
});

test('after a chord, the still-held Ctrl can switch again but never reaches the new target', () => {
  const { a, b, keys, router, chords } = setup();
  keys(down(CTRL), down(KEY_2), up(KEY_2));
  router.freeze();
  router.setFocus(VM_B, b);
  keys(down(C), up(C), down(KEY_1), up(KEY_1), up(CTRL));
  assert.deepEqual(chords, ['Ctrl+2', 'Ctrl+1'], 'Ctrl+C in between is a plain c to B');
  assert.deepEqual(a.events(), []);
  assert.deepEqual(
    b.events().filter((e) => e.type === EV_KEY),
    [down(C), up(C)],
  );
});

test('two keyboards pressing the same key: the VM gets one press, and its release once both keyboards let go', () => {
  const { a, pipeline } = setup();
  const kbd1 = { name: 'fake keyboard 1' };
  const kbd2 = { name: 'fake keyboard 2' };
  const A = 30;
  pipeline.handleFrame([down(A)], kbd1);
  pipeline.handleFrame([down(A)], kbd2);
  pipeline.handleFrame([up(A)], kbd1);
  pipeline.handleFrame([ev(EV_KEY, A, 2)], kbd2);
  assert.deepEqual(a.events(), [down(A), ev(EV_KEY, A, 2)], 'still down: keyboard 2 holds it');
  pipeline.handleFrame([up(A)], kbd2);
  assert.deepEqual(a.events(), [down(A), ev(EV_KEY, A, 2), up(A)]);
  // The same for a button held on two mice.
  const mouse1 = { name: 'fake mouse 1' };
  const mouse2 = { name: 'fake mouse 2' };
  pipeline.handleFrame([down(BTN_LEFT)], mouse1);
  pipeline.handleFrame([down(BTN_LEFT)], mouse2);
  pipeline.handleFrame([up(BTN_LEFT)], mouse2);
  pipeline.handleFrame([up(BTN_LEFT)], mouse1);
  assert.deepEqual(a.events().slice(3), [down(BTN_LEFT), up(BTN_LEFT)]);
});

test('Ctrl held on one keyboard and tapped on another, then 2: still the chord Ctrl+2, nothing of it reaches the VM', () => {
  const { a, pipeline, chords } = setup();
  const kbd1 = { name: 'fake keyboard 1' };
  const kbd2 = { name: 'fake keyboard 2' };
  pipeline.handleFrame([down(CTRL)], kbd1);
  pipeline.handleFrame([down(CTRL)], kbd2);
  pipeline.handleFrame([up(CTRL)], kbd2);
  pipeline.handleFrame([down(KEY_2)], kbd1);
  pipeline.handleFrame([up(KEY_2)], kbd1);
  pipeline.handleFrame([up(CTRL)], kbd1);
  assert.deepEqual(chords, ['Ctrl+2']);
  assert.deepEqual(a.events(), []);
});
