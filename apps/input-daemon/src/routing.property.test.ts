import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { BTN_LEFT, BTN_RIGHT, EV_KEY, EV_REL, REL_X, REL_Y, ev, type Frame, type InputEvent } from './input-event';
import { InputPipeline } from './pipeline';
import { Router } from './router';
import type { InputSink } from './sinks/sink';

const CTRL = 29, RCTRL = 97, SHIFT = 42;
const LETTERS = [30, 31, 32, 48]; // a s d b
const DIGITS = [2, 3, 4]; // 1 2 3: pressed with Ctrl (a chord) or with Ctrl+Shift (not a chord)
const BUTTONS = [BTN_LEFT, BTN_RIGHT];
const TARGETS = ['/', '/org/bulkhead/VmManager1/vm/a', '/org/bulkhead/VmManager1/vm/b', '/org/bulkhead/VmManager1/vm/c'];

/** A sink that checks, at every write, that it IS the router's destination, and keeps the originals. */
class ProbeSink implements InputSink {
  readonly received: InputEvent[] = [];
  readonly alive = true;
  readonly description = 'probe';
  violations: string[] = [];
  constructor(
    readonly target: string,
    private readonly isDestination: (s: ProbeSink) => boolean,
  ) {}
  write(frame: Frame): void {
    if (!this.isDestination(this)) this.violations.push(`frame ${JSON.stringify(frame)} reached non-destination ${this.target}`);
    this.received.push(...frame);
  }
  async close(): Promise<void> {}
}

type Op =
  | { k: 'type'; code: number }
  | { k: 'down'; code: number }
  | { k: 'up'; code: number }
  | { k: 'repeat'; code: number }
  | { k: 'chord'; ctrl: number; digit: number; extraShift: boolean }
  | { k: 'move'; dx: number; dy: number }
  | { k: 'focus'; target: number }
  | { k: 'lock' }
  | { k: 'unlock' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('type' as const), code: fc.constantFrom(...LETTERS) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('down' as const), code: fc.constantFrom(CTRL, RCTRL, SHIFT, ...LETTERS, ...BUTTONS) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('up' as const), code: fc.constantFrom(CTRL, RCTRL, SHIFT, ...LETTERS, ...BUTTONS) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('repeat' as const), code: fc.constantFrom(CTRL, ...LETTERS) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('chord' as const), ctrl: fc.constantFrom(CTRL, RCTRL), digit: fc.constantFrom(...DIGITS), extraShift: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('move' as const), dx: fc.integer({ min: -20, max: 20 }), dy: fc.integer({ min: -20, max: 20 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('focus' as const), target: fc.integer({ min: 0, max: TARGETS.length - 1 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('lock' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('unlock' as const) }) },
);

function run(ops: Op[]): void {
  const ref: { router?: Router } = {};
  const sinks = TARGETS.map((t) => new ProbeSink(t, (s) => ref.router!.destination() === s));
  const router = (ref.router = new Router(sinks[0], { setLeds: () => undefined }, { info: () => undefined, warn: () => undefined }));
  // A fast vm-daemon: a slot chord immediately freezes and refocuses (slot N → TARGETS[N]).
  const pipeline = new InputPipeline(new HotkeyMatcher(buildChords()), router, (c) => {
    if (c.action.kind !== 'slot') return;
    router.freeze();
    router.setFocus(TARGETS[c.action.slot], sinks[c.action.slot]);
  });
  const order = new Map<InputEvent, number>();
  let seq = 0;
  const physical = new Set<number>();
  /** Events of a chord key whose press matched exactly (Ctrl only held): none may reach anyone. */
  const chordEvents = new Set<InputEvent>();
  const matchedDigits = new Set<number>();
  const send = (events: InputEvent[]) => {
    for (const e of events) {
      if (e.type !== EV_KEY || !DIGITS.includes(e.code)) continue;
      if (e.value === 1 && [...physical].every((c) => c === e.code || c === CTRL || c === RCTRL)) matchedDigits.add(e.code);
      if (matchedDigits.has(e.code)) chordEvents.add(e);
      if (e.value === 0) matchedDigits.delete(e.code);
    }
    for (const e of events) if (e.type === EV_KEY) order.set(e, seq++);
    pipeline.handleFrame(events);
  };
  const press = (code: number) => {
    if (physical.has(code)) return;
    physical.add(code);
    send([ev(EV_KEY, code, 1)]);
  };
  const release = (code: number) => {
    if (!physical.delete(code)) return;
    send([ev(EV_KEY, code, 0)]);
  };
  for (const op of ops) {
    switch (op.k) {
      case 'type': press(op.code); release(op.code); break;
      case 'down': press(op.code); break;
      case 'up': release(op.code); break;
      case 'repeat': if (physical.has(op.code)) send([ev(EV_KEY, op.code, 2)]); break;
      case 'chord': {
        const had = new Set(physical);
        if (op.extraShift) press(SHIFT);
        press(op.ctrl);
        press(op.digit);
        send(physical.has(op.digit) ? [ev(EV_KEY, op.digit, 2)] : []);
        release(op.digit);
        if (!had.has(op.ctrl)) release(op.ctrl);
        if (op.extraShift && !had.has(SHIFT)) release(SHIFT);
        break;
      }
      case 'move': send([ev(EV_REL, REL_X, op.dx), ev(EV_REL, REL_Y, op.dy)]); break;
      case 'focus': router.freeze(); router.setFocus(TARGETS[op.target], sinks[op.target]); break;
      case 'lock': router.lock(); break;
      case 'unlock': router.unlock(); break;
    }
  }
  for (const code of [...physical]) release(code);

  for (const s of sinks) {
    assert.deepEqual(s.violations, [], 'leak: an event reached a target that was not the destination');
    const down = new Set<number>();
    let last = -1;
    for (const e of s.received) {
      if (e.type !== EV_KEY) continue;
      assert.ok(!chordEvents.has(e), `chord key ${e.code} (value ${e.value}) reached ${s.target}`);
      if (e.value === 1) {
        assert.ok(!down.has(e.code), `${s.target} got a second press of ${e.code}`);
        down.add(e.code);
      } else if (e.value === 0) {
        assert.ok(down.delete(e.code), `${s.target} got a release of ${e.code} whose press it never saw`);
      } else assert.ok(down.has(e.code), `${s.target} got a repeat of ${e.code} it does not hold`);
      const n = order.get(e);
      if (n !== undefined) {
        assert.ok(n > last, `${s.target}: key/button events reordered`);
        last = n;
      }
    }
    assert.deepEqual([...down], [], `${s.target} is left with stuck keys/buttons`);
  }
}

test('property: ~2000 random interleavings leak nothing, leave nothing stuck, reorder nothing', () => {
  fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), (ops) => run(ops)), {
    seed: 20261126,
    numRuns: 2000,
  });
});
