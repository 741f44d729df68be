import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EV_KEY,
  EV_REL,
  EV_SYN,
  INPUT_EVENT_SIZE,
  InputEventParser,
  REL_X,
  SYN_DROPPED,
  SYN_REPORT,
  encodeEvents,
  ev,
  type Frame,
} from './input-event';

function collect() {
  const frames: Frame[] = [];
  let resyncs = 0;
  const p = new InputEventParser({ frame: (f) => frames.push(f), resync: () => resyncs++ });
  return { p, frames, resyncs: () => resyncs };
}

test('a struct input_event is 24 bytes and decodes type, code and signed value', () => {
  const buf = encodeEvents([ev(EV_REL, REL_X, -5)], { timeUs: 1_500_000n });
  assert.equal(buf.length, 2 * INPUT_EVENT_SIZE);
  assert.equal(buf.readBigInt64LE(0), 1n);
  assert.equal(buf.readBigInt64LE(8), 500_000n);
  const { p, frames } = collect();
  p.push(buf);
  assert.deepEqual(frames, [[ev(EV_REL, REL_X, -5)]]);
});

test('frames are grouped by SYN_REPORT and survive any split of the byte stream', () => {
  const stream = Buffer.concat([
    encodeEvents([ev(EV_KEY, 30, 1)]),
    encodeEvents([ev(EV_REL, 0, 3), ev(EV_REL, 1, -2)]),
    encodeEvents([ev(EV_KEY, 30, 0)]),
  ]);
  for (const split of [1, 5, 23, 24, 25, 47, 100]) {
    const { p, frames } = collect();
    for (let i = 0; i < stream.length; i += split) p.push(stream.subarray(i, i + split));
    assert.deepEqual(
      frames,
      [[ev(EV_KEY, 30, 1)], [ev(EV_REL, 0, 3), ev(EV_REL, 1, -2)], [ev(EV_KEY, 30, 0)]],
      `split ${split}`,
    );
    assert.equal(p.partialBytes, 0);
  }
});

test('a frame is not emitted before its SYN_REPORT; a partial struct waits for the rest', () => {
  const { p, frames } = collect();
  const one = encodeEvents([ev(EV_KEY, 30, 1)]);
  p.push(one.subarray(0, 30));
  assert.equal(frames.length, 0);
  assert.equal(p.partialBytes, 6);
  p.push(one.subarray(30));
  assert.equal(frames.length, 1);
});

test('SYN_DROPPED discards everything up to the next SYN_REPORT, then asks for a resync', () => {
  const { p, frames, resyncs } = collect();
  p.push(
    Buffer.concat([
      encodeEvents([ev(EV_KEY, 30, 1)], { syn: false }),
      encodeEvents([ev(EV_SYN, SYN_DROPPED, 0)], { syn: false }),
      encodeEvents([ev(EV_KEY, 31, 1), ev(EV_KEY, 31, 0)]), // lost in the overflow: discarded
      encodeEvents([ev(EV_KEY, 32, 1)]),
    ]),
  );
  assert.deepEqual(frames, [[ev(EV_KEY, 32, 1)]]);
  assert.equal(resyncs(), 1);
  assert.equal(p.stats.dropped, 1);
  assert.equal(SYN_REPORT, 0);
});
