/**
 * Fuzz target: evdev byte streams through input-daemon's parser, hotkeys and router (fixed seed
 * in evdev.fuzz.test.ts, random under `npm run fuzz`). Streams mix well-formed struct
 * input_events (known and unknown types/codes, key-ups without key-downs, repeats, SYN_DROPPED)
 * with random bytes, split at arbitrary points (partial structs), interleaved with focus changes
 * and freezes. Properties: nothing throws; a frame only ever reaches the router's destination at
 * that moment (never a VM that is not focused); no sink ever receives a key-up for a key it does
 * not hold; and after a final freeze no key or button is left held in any sink (no stuck key).
 */
import fc from 'fast-check';
import { checkProperty, type FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { buildChords, HotkeyMatcher } from './hotkeys';
import {
  EV_KEY,
  EV_SYN,
  INPUT_EVENT_SIZE,
  InputEventParser,
  SYN_DROPPED,
  SYN_REPORT,
  type Frame,
} from './input-event';
import { InputPipeline } from './pipeline';
import { Router } from './router';
import type { InputSink } from './sinks/sink';

const TARGETS = ['/', '/org/bulkhead/VmManager1/vm/a', '/org/bulkhead/VmManager1/vm/b'];

class CheckingSink implements InputSink {
  readonly alive = true;
  readonly description = 'fuzz';
  /** Codes this sink holds (received value 1 or 2 without a 0 since). */
  readonly held = new Set<number>();
  constructor(
    readonly target: string,
    private readonly isDestination: () => boolean,
    private readonly problems: string[],
  ) {}
  write(frame: Frame): void {
    const onlyReleases = frame.every((e) => e.type === EV_KEY && e.value === 0);
    if (!this.isDestination() && !onlyReleases)
      this.problems.push(
        `frame reached ${this.target}, which is not the destination: ${JSON.stringify(frame)}`,
      );
    for (const e of frame) {
      if (e.type !== EV_KEY) continue;
      if (e.value === 0) {
        if (!this.held.delete(e.code))
          this.problems.push(`${this.target} got key-up ${e.code} without a key-down`);
      } else if (e.value === 1) this.held.add(e.code);
      else if (!this.held.has(e.code))
        this.problems.push(`${this.target} got repeat ${e.code} of a key it does not hold`);
    }
  }
  async close(): Promise<void> {}
}

type Piece =
  | { k: 'event'; type: number; code: number; value: number }
  | { k: 'bytes'; bytes: Uint8Array }
  | { k: 'focus'; target: number }
  | { k: 'freeze' };

const KEYS = [2, 3, 29, 97, 42, 56, 30, 31, 14, 0x110, 0x111, 0x2ff, 0];
const piece: fc.Arbitrary<Piece> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      k: fc.constant('event' as const),
      type: fc.oneof(
        fc.constantFrom(EV_KEY, EV_KEY, EV_SYN, 2, 3, 4, 0x11),
        fc.integer({ min: 0, max: 0xffff }),
      ),
      code: fc.oneof(fc.constantFrom(...KEYS, SYN_REPORT, SYN_DROPPED), fc.integer({ min: 0, max: 0xffff })),
      value: fc.oneof(fc.constantFrom(0, 1, 2), fc.integer()),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 30 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant('focus' as const), target: fc.nat({ max: TARGETS.length - 1 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ k: 'freeze' as const }) },
);

function encode(type: number, code: number, value: number): Buffer {
  const b = Buffer.alloc(INPUT_EVENT_SIZE);
  b.writeUInt16LE(type, 16);
  b.writeUInt16LE(code, 18);
  b.writeInt32LE(value, 20);
  return b;
}

export const evdevProperty = fc.property(
  fc.array(piece, { maxLength: 80 }),
  fc.array(fc.nat({ max: 40 }), { minLength: 1, maxLength: 8 }),
  (pieces, splits) => {
    const problems: string[] = [];
    const ref: { router?: Router } = {};
    const sinks = TARGETS.map((t) => {
      const s: CheckingSink = new CheckingSink(t, () => ref.router!.destination() === s, problems);
      return s;
    });
    const router = (ref.router = new Router(
      sinks[0],
      { setLeds: () => undefined },
      { info: () => undefined, warn: () => undefined },
    ));
    const pipeline = new InputPipeline(new HotkeyMatcher(buildChords()), router, (c) => {
      if (c.action.kind === 'secure-attention') return router.lock();
      router.freeze();
      router.setFocus(TARGETS[c.action.slot % TARGETS.length], sinks[c.action.slot % TARGETS.length]);
    });
    const parser = new InputEventParser({
      frame: (f) => pipeline.handleFrame(f),
      dropped: () => undefined,
      resync: () => undefined,
    });
    // Build the byte stream, flushing it to the parser in odd-sized chunks at each focus change.
    let stream = Buffer.alloc(0);
    let si = 0;
    const flush = () => {
      let off = 0;
      while (off < stream.length) {
        const n = Math.max(1, splits[si++ % splits.length]);
        parser.push(stream.subarray(off, off + n));
        off += n;
      }
      stream = Buffer.alloc(0);
    };
    for (const p of pieces) {
      if (p.k === 'event') stream = Buffer.concat([stream, encode(p.type, p.code, p.value)]);
      else if (p.k === 'bytes') stream = Buffer.concat([stream, Buffer.from(p.bytes)]);
      else {
        flush();
        if (p.k === 'focus') router.setFocus(TARGETS[p.target], sinks[p.target]);
        else router.freeze();
      }
    }
    flush();
    parser.push(encode(EV_SYN, SYN_REPORT, 0));
    router.unlock();
    router.freeze();
    for (const s of sinks)
      if (s.held.size) problems.push(`${s.target} is left holding ${[...s.held].join(',')} (stuck)`);
    if (problems.length) throw new Error(problems.slice(0, 5).join('\n'));
  },
);

export const fuzzTargets: FuzzTarget[] = [
  { name: 'input-daemon: evdev stream', run: (o) => checkProperty(evdevProperty, o) },
];
