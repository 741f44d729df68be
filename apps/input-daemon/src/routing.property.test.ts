import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildChords, HotkeyMatcher } from './hotkeys';
import {
  BTN_LEFT,
  BTN_RIGHT,
  EV_KEY,
  EV_MSC,
  EV_REL,
  REL_WHEEL,
  REL_X,
  REL_Y,
  ev,
  type Frame,
  type InputEvent,
} from './input-event';
import { InputPipeline } from './pipeline';
import { Router } from './router';
import type { InputSink } from './sinks/sink';

const CTRL = 29,
  RCTRL = 97,
  SHIFT = 42,
  ALT = 56,
  BACKSPACE = 14,
  MSC_SCAN = 4;
const LETTERS = [30, 31, 32, 48]; // a s d b
const DIGITS = [2, 3, 4]; // 1 2 3: Ctrl+digit is a chord, Ctrl+Shift+digit and Ctrl+Alt+digit are not
const MODIFIERS = [CTRL, RCTRL, SHIFT, ALT];
const BUTTONS = [BTN_LEFT, BTN_RIGHT];
const TARGETS = [
  '/',
  '/org/bulkhead/VmManager1/vm/a',
  '/org/bulkhead/VmManager1/vm/b',
  '/org/bulkhead/VmManager1/vm/c',
];

/** One key event a sink received, with the physical key stroke it belongs to (the seq of its press). */
interface Received {
  e: InputEvent;
  stroke: number | undefined;
  /** The router's destination generation at the write. */
  generation: number;
}

/** A sink that checks, at every write, that it IS the router's destination, and notes each key event's stroke. */
class ProbeSink implements InputSink {
  readonly received: Received[] = [];
  readonly alive = true;
  readonly description = 'probe';
  violations: string[] = [];
  constructor(
    readonly target: string,
    private readonly isDestination: (s: ProbeSink) => boolean,
    private readonly strokeOf: (e: InputEvent) => number | undefined,
    private readonly generation: () => number,
  ) {}
  write(frame: Frame): void {
    if (!this.isDestination(this))
      this.violations.push(`frame ${JSON.stringify(frame)} reached non-destination ${this.target}`);
    for (const e of frame)
      this.received.push({
        e,
        stroke: e.type === EV_KEY ? this.strokeOf(e) : undefined,
        generation: this.generation(),
      });
  }
  async close(): Promise<void> {}
}

type Op =
  | { k: 'type'; code: number }
  | { k: 'down'; code: number }
  | { k: 'up'; code: number }
  | { k: 'repeat'; code: number }
  /** Ctrl [+ Shift | + Alt] + key; `jiggle`: the mouse moves between Ctrl and the key. */
  | { k: 'chord'; ctrl: number; extra: 'none' | 'shift' | 'alt'; key: number; jiggle: boolean }
  | { k: 'move'; dx: number; dy: number }
  | { k: 'wheel'; d: number }
  | { k: 'focus'; target: number }
  | { k: 'lock' }
  | { k: 'unlock' }
  /** A slow vm-daemon (second property) answers the oldest pending hotkey switch. */
  | { k: 'switch-done' }
  | { k: 'switch-refused' }
  | { k: 'switch-rolled-back' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('type' as const),
      code: fc.constantFrom(...LETTERS, ...MODIFIERS),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('down' as const),
      code: fc.constantFrom(...MODIFIERS, ...LETTERS, ...BUTTONS),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('up' as const),
      code: fc.constantFrom(...MODIFIERS, ...LETTERS, ...BUTTONS),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant('repeat' as const), code: fc.constantFrom(CTRL, ALT, ...LETTERS) }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('chord' as const),
      ctrl: fc.constantFrom(CTRL, RCTRL),
      extra: fc.constantFrom('none' as const, 'shift' as const, 'alt' as const),
      key: fc.constantFrom(...DIGITS, BACKSPACE),
      jiggle: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('move' as const),
      dx: fc.integer({ min: -20, max: 20 }),
      dy: fc.integer({ min: -20, max: 20 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('wheel' as const), d: fc.constantFrom(-1, 1) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('focus' as const),
      target: fc.integer({ min: 0, max: TARGETS.length - 1 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('lock' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('unlock' as const) }) },
);

/** The ops of a slow vm-daemon: a hotkey's switch resolves only when one of these comes. */
const slowOpArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: opArb },
  {
    weight: 4,
    arbitrary: fc.constantFrom<Op>(
      { k: 'switch-done' },
      { k: 'switch-done' },
      { k: 'switch-refused' },
      { k: 'switch-rolled-back' },
    ),
  },
);

/**
 * `slowSwitches`: a chord's switch does not happen at once; the router holds input (holdForSwitch)
 * until a switch-* op resolves it, as InputService does with a real vm-daemon.
 */
function run(ops: Op[], slowSwitches = false): void {
  const ref: { router?: Router } = {};
  /** Key/button events the test sent → their seq. */
  const order = new Map<InputEvent, number>();
  let seq = 0;
  /** Physically held code → the seq of its press (its stroke), while held. */
  const stroke = new Map<number, number>();
  /**
   * Key event → its stroke, fixed when the event first reaches the router: as the test sends it,
   * or, for a held-back modifier's press the pipeline puts back, when the pipeline flushes it (its
   * key is down then, in that stroke). A frame held back in a switch keeps it when it is delivered:
   * by then the key may have been released and pressed again, a later stroke. Events the router
   * makes itself (the releases of a destination change) are written at once: their stroke is the
   * one at the write.
   */
  const strokeAtRoute = new Map<InputEvent, number | undefined>();
  const strokeOf = (e: InputEvent) => (strokeAtRoute.has(e) ? strokeAtRoute.get(e) : stroke.get(e.code));
  const sinks = TARGETS.map(
    (t) =>
      new ProbeSink(
        t,
        (s) => ref.router!.destination() === s,
        strokeOf,
        () => ref.router!.generation,
      ),
  );
  const router = (ref.router = new Router(
    sinks[0],
    { setLeds: () => undefined },
    { info: () => undefined, warn: () => undefined },
  ));
  const route = router.route.bind(router);
  router.route = (frame) => {
    for (const e of frame)
      if (e.type === EV_KEY && !strokeAtRoute.has(e)) strokeAtRoute.set(e, stroke.get(e.code));
    route(frame);
  };
  /** Destination generation → the seq of the first key event sent after it began. */
  const generationStart = new Map<number, number>([[router.generation, 0]]);
  /** The hold of the pending hotkey switch: its origin, and the seq typing began to be held at. */
  let hold: { token: number; origin: string; startSeq: number } | null = null;
  /** Key events sent while a hold was on → that hold (they must never reach its origin...). */
  const heldUnder = new Map<InputEvent, { token: number; origin: string }>();
  /** ...unless that switch succeeded onto the origin itself (Ctrl+1 while in VM 1). */
  const switchedToOrigin = new Set<number>();
  const changeDestination = (change: () => void) => {
    const holdBefore = hold;
    const delivered = router.stats.holdsDelivered;
    const generation = router.generation;
    change();
    if (router.generation !== generation) generationStart.set(router.generation, seq);
    // What a hold kept back was typed from its start on: it belongs to where it was delivered.
    // (A hold with no frames counts: a Ctrl held back during it goes on to where it went.)
    if (holdBefore && router.stats.holdsDelivered > delivered)
      generationStart.set(router.generation, holdBefore.startSeq);
    if (!router.isHolding) hold = null;
  };
  /** Switches asked by hotkeys, oldest first, that the slow vm-daemon has not answered yet. */
  const pendingSwitches: Array<{ token: number; slot: number; origin: string }> = [];
  /** Strokes of every key (< 0x100) held when a chord matched: the chord's keys, modifiers included. */
  const chordStrokes = new Set<number>();
  let chordsMatched = 0;
  // A fast vm-daemon: a slot chord immediately freezes and refocuses (slot N → TARGETS[N]).
  const pipeline = new InputPipeline(new HotkeyMatcher(buildChords()), router, (c) => {
    chordsMatched++;
    for (const [code, s] of stroke) if (code < 0x100) chordStrokes.add(s);
    const action = c.action;
    if (action.kind === 'secure-attention') return changeDestination(() => router.lock());
    if (slowSwitches) {
      if (router.isLocked) return; // InputService: no switching while locked
      const origin = router.focusedTarget;
      changeDestination(() => {
        const token = router.holdForSwitch({ slot: action.slot });
        hold = { token, origin, startSeq: seq };
        pendingSwitches.push({ token, slot: action.slot, origin });
      });
      return;
    }
    changeDestination(() => router.freeze());
    changeDestination(() => router.setFocus(TARGETS[action.slot], sinks[action.slot]));
  });
  const send = (events: InputEvent[]) => {
    for (const e of events)
      if (e.type === EV_KEY) {
        order.set(e, seq++);
        if (hold) heldUnder.set(e, hold);
      }
    pipeline.handleFrame(events);
    if (!router.isHolding) hold = null;
  };
  // Key frames carry the scan code first, like a real keyboard's.
  const keyFrame = (code: number, value: number) =>
    code < 0x100 ? [ev(EV_MSC, MSC_SCAN, code), ev(EV_KEY, code, value)] : [ev(EV_KEY, code, value)];
  const press = (code: number) => {
    if (stroke.has(code)) return;
    stroke.set(code, seq);
    send(keyFrame(code, 1));
  };
  const release = (code: number) => {
    if (!stroke.has(code)) return;
    send(keyFrame(code, 0));
    stroke.delete(code);
  };
  const move = (dx: number, dy: number) => send([ev(EV_REL, REL_X, dx), ev(EV_REL, REL_Y, dy)]);
  for (const op of ops) {
    switch (op.k) {
      case 'type':
        press(op.code);
        release(op.code);
        break;
      case 'down':
        press(op.code);
        break;
      case 'up':
        release(op.code);
        break;
      case 'repeat':
        if (stroke.has(op.code)) send(keyFrame(op.code, 2));
        break;
      case 'chord': {
        const had = new Set(stroke.keys());
        const fresh = [...had].every((c) => c >= 0x100); // only mouse buttons held: nothing spoils it
        const before = chordsMatched;
        press(op.ctrl);
        if (op.extra === 'shift') press(SHIFT);
        if (op.extra === 'alt') press(ALT);
        if (op.jiggle) move(1, -1);
        press(op.key);
        const matched = chordsMatched - before;
        const isChord =
          (op.extra === 'none' && DIGITS.includes(op.key)) || (op.extra === 'alt' && op.key === BACKSPACE);
        if (fresh)
          assert.equal(
            matched,
            isChord ? 1 : 0,
            `Ctrl${op.extra === 'none' ? '' : `+${op.extra}`}+${op.key} on a clean keyboard: ${isChord ? 'must' : 'must not'} match`,
          );
        else if (op.extra === 'shift') assert.equal(matched, 0, 'no chord has Shift, whatever else is held');
        if (stroke.has(op.key)) send(keyFrame(op.key, 2));
        release(op.key);
        for (const m of [op.ctrl, SHIFT, ALT]) if (!had.has(m)) release(m);
        break;
      }
      case 'move':
        move(op.dx, op.dy);
        break;
      case 'wheel':
        send([ev(EV_REL, REL_WHEEL, op.d)]);
        break;
      case 'focus':
        // A switch input-daemon did not ask for (a click), with the Freeze options vm-daemon sends.
        changeDestination(() => router.freeze({ target: TARGETS[op.target], slot: op.target }));
        changeDestination(() => router.setFocus(TARGETS[op.target], sinks[op.target]));
        break;
      case 'lock':
        changeDestination(() => router.lock());
        break;
      case 'unlock':
        changeDestination(() => router.unlock());
        break;
      case 'switch-done': {
        const sw = pendingSwitches.shift();
        if (!sw) break;
        changeDestination(() => router.freeze({ target: TARGETS[sw.slot], slot: sw.slot }));
        changeDestination(() => router.setFocus(TARGETS[sw.slot], sinks[sw.slot]));
        if (router.focusedTarget === sw.origin) switchedToOrigin.add(sw.token);
        changeDestination(() => router.endHold(sw.token, 'switched'));
        break;
      }
      case 'switch-refused': {
        const sw = pendingSwitches.shift();
        if (sw) changeDestination(() => router.endHold(sw.token, 'failed'));
        break;
      }
      case 'switch-rolled-back': {
        const sw = pendingSwitches.shift();
        if (!sw) break;
        const back = TARGETS.indexOf(sw.origin);
        changeDestination(() => router.freeze({ target: TARGETS[sw.slot], slot: sw.slot }));
        changeDestination(() => router.setFocus(sw.origin, sinks[back]));
        changeDestination(() => router.endHold(sw.token, 'failed'));
        break;
      }
    }
  }
  for (const code of [...stroke.keys()]) release(code);

  for (const s of sinks) {
    assert.deepEqual(s.violations, [], 'leak: an event reached a target that was not the destination');
    const down = new Set<number>();
    let last = -1;
    for (const { e, stroke: st, generation } of s.received) {
      if (e.type !== EV_KEY) continue;
      // Typed after a switch hotkey: never in the VM being left (unless the person asked for it).
      const h = heldUnder.get(e);
      assert.ok(
        !h || h.origin !== s.target || switchedToOrigin.has(h.token),
        `${s.target} got ${e.code} (value ${e.value}), typed after a hotkey switching away from it`,
      );
      // No half strokes: a key pressed before this destination began (a held-back modifier
      // included) gets nothing here — its release in the old one came from the router.
      if (e.value !== 0 || order.has(e))
        assert.ok(
          st === undefined || st >= generationStart.get(generation)!,
          `${s.target} got ${e.code} (value ${e.value}) of a stroke pressed before it had the input`,
        );
      // THE strict rule: no event of any key of a matched chord — modifiers included — reaches anyone.
      assert.ok(
        st === undefined || !chordStrokes.has(st),
        `key ${e.code} (value ${e.value}) of a matched chord reached ${s.target}`,
      );
      if (e.value === 1) {
        assert.ok(!down.has(e.code), `${s.target} got a second press of ${e.code}`);
        down.add(e.code);
      } else if (e.value === 0) {
        assert.ok(down.delete(e.code), `${s.target} got a release of ${e.code} whose press it never saw`);
      } else assert.ok(down.has(e.code), `${s.target} got a repeat of ${e.code} it does not hold`);
      // Events the test sent carry their seq; a held-back press flushed later carries its press's.
      const n = order.get(e) ?? (e.value === 1 ? st : undefined);
      if (n !== undefined) {
        assert.ok(n > last, `${s.target}: key/button events reordered (${n} after ${last})`);
        last = n;
      }
    }
    assert.deepEqual([...down], [], `${s.target} is left with stuck keys/buttons`);
  }
}

test('property: ~2000 random interleavings leak nothing, leave nothing stuck, reorder nothing, and no key of a matched chord reaches anyone', () => {
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), (ops) => run(ops)),
    {
      seed: 20261126,
      numRuns: 2000,
    },
  );
});

test('property: with a slow vm-daemon, ~1000 interleavings of typing across hotkeys, switches done, refused and rolled back: nothing typed after a hotkey reaches the VM being left, and all of the above still holds', () => {
  fc.assert(
    fc.property(fc.array(slowOpArb, { minLength: 1, maxLength: 60 }), (ops) => run(ops, true)),
    { seed: 20261201, numRuns: 1000 },
  );
});
