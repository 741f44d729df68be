import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@bulkhead/common';
import { BulkheadError, type CallContext } from '@bulkhead/contract';
import { buildChords, HotkeyMatcher } from './hotkeys';
import {
  ABS_X,
  BTN_LEFT,
  BTN_TOOL_FINGER,
  BTN_TOUCH,
  EV_ABS,
  EV_KEY,
  EV_REL,
  EV_SYN,
  REL_X,
  REL_Y,
  SYN_REPORT,
  encodeEvents,
  ev,
  type Frame,
} from './input-event';
import { InputService } from './input-service';
import { FrameQueue, frameToQmpEvents } from './sinks/qmp-sink';
import { EvdevSeat } from './sources/evdev-seat';
import { ReplaySource } from './sources/replay-source';
import { DeviceFramer, classify, type DeviceInfo } from './sources/source';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';

const log = createLogger('test', 'error');
const ctx = {} as CallContext;
const move = (dx: number, dy: number): Frame => [ev(EV_REL, REL_X, dx), ev(EV_REL, REL_Y, dy)];

test('under backlog, motion-only frames are summed; key and button frames keep their place', () => {
  const q = new FrameQueue();
  q.push(move(1, 2));
  q.push(move(3, -1));
  q.push([ev(EV_KEY, BTN_LEFT, 1)]);
  q.push(move(5, 5));
  q.push(move(-5, 0));
  const out: Frame[] = [];
  for (let f = q.shift(); f; f = q.shift()) out.push(f);
  assert.deepEqual(out, [move(4, 1), [ev(EV_KEY, BTN_LEFT, 1)], [ev(EV_REL, REL_Y, 5)]]);
  assert.equal(q.stats.coalesced, 2);
});

test('a frame becomes one input-send-event with qcodes, buttons, axes and wheel clicks', () => {
  const events = frameToQmpEvents([
    ev(EV_KEY, 29, 1),
    ev(EV_KEY, 30, 2),
    ev(EV_KEY, BTN_LEFT, 0),
    ev(EV_REL, REL_X, -3),
    ev(EV_REL, 8, -1),
    ev(EV_ABS, ABS_X, 100),
  ]);
  assert.deepEqual(events, [
    { type: 'key', data: { down: true, key: { type: 'qcode', data: 'ctrl' } } },
    { type: 'key', data: { down: true, key: { type: 'qcode', data: 'a' } } },
    { type: 'btn', data: { down: false, button: 'left' } },
    { type: 'rel', data: { axis: 'x', value: -3 } },
    { type: 'btn', data: { down: true, button: 'wheel-down' } },
    { type: 'btn', data: { down: false, button: 'wheel-down' } },
    { type: 'abs', data: { axis: 'x', value: 100 } },
  ]);
});

test('devices are classified by capabilities, whatever the bus', () => {
  const caps = (types: number[], keys: number[], rels: number[] = [], abs: number[] = []) => ({
    types: new Set(types),
    keys: new Set(keys),
    rels: new Set(rels),
    abs: new Set(abs),
  });
  const letters = [16, 17, 18, 19, 20, 30, 31, 32, 44, 45, 46, 57];
  assert.equal(classify(caps([EV_KEY], letters)), 'keyboard');
  assert.equal(classify(caps([EV_KEY, EV_REL], [BTN_LEFT], [REL_X, REL_Y])), 'mouse');
  assert.equal(
    classify(caps([EV_KEY, EV_ABS], [BTN_LEFT, BTN_TOUCH, BTN_TOOL_FINGER], [], [0, 1])),
    'touchpad',
  );
  assert.equal(classify(caps([EV_KEY, EV_ABS], [BTN_LEFT], [], [0, 1])), 'tablet');
  assert.equal(classify(caps([EV_KEY], [116])), 'other'); // power button
});

test('a vanished device releases what it held; tablet axes are scaled to 0…32767', () => {
  const frames: Frame[] = [];
  const info: DeviceInfo = { name: 't', cls: 'tablet', bus: 'usb', grabbed: true, node: '/dev/input/event5' };
  const f = new DeviceFramer(info, (fr) => frames.push(fr), { x: { min: 0, max: 1000 } });
  f.parser.push(encodeEvents([ev(EV_ABS, ABS_X, 500), ev(EV_KEY, BTN_LEFT, 1)]));
  f.releaseAll();
  assert.deepEqual(frames, [[ev(EV_ABS, ABS_X, 16384), ev(EV_KEY, BTN_LEFT, 1)], [ev(EV_KEY, BTN_LEFT, 0)]]);
});

test('a replay file goes through the same parser; a truncated tail is reported', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'replay-')), 'rec.bin');
  const body = Buffer.concat(
    Array.from({ length: 300 }, (_, i) => encodeEvents([ev(EV_KEY, 30, i % 2 ? 0 : 1)])),
  );
  writeFileSync(file, Buffer.concat([body, Buffer.alloc(10)]));
  const warnings: string[] = [];
  const src = new ReplaySource(file, 'keyboard', { chunkBytes: 100, onWarning: (m) => warnings.push(m) });
  const frames: Frame[] = [];
  src.on('frame', (fr) => frames.push(fr));
  await src.start();
  await src.done;
  assert.equal(frames.length, 300);
  assert.match(warnings[0], /10 trailing bytes/);
  await assert.rejects(new ReplaySource(join(file, 'nope')).start(), /replay .*nope/);
});

test('a FIFO replays as a live device: each frame as it is written, split records joined, a writer that leaves ends nothing', async () => {
  const fifo = join(mkdtempSync(join(tmpdir(), 'replay-fifo-')), 'kbd.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const src = new ReplaySource(fifo, 'keyboard');
  const frames: Frame[] = [];
  src.on('frame', (fr) => frames.push(fr));
  await src.start();
  const waitFrames = async (n: number) => {
    for (let i = 0; i < 200 && frames.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(frames.length, n);
  };
  // A writer writes a press, then closes: the frame arrives, and the source does not end.
  let w = openSync(fifo, 'w');
  const press = encodeEvents([ev(EV_KEY, 30, 1)]);
  writeSync(w, press.subarray(0, 10));
  writeSync(w, press.subarray(10));
  closeSync(w);
  await waitFrames(1);
  // Another writer later: its release still arrives.
  w = openSync(fifo, 'w');
  writeSync(w, encodeEvents([ev(EV_KEY, 30, 0)]));
  closeSync(w);
  await waitFrames(2);
  assert.deepEqual(
    frames.map((f) => f.filter((e) => e.type === EV_KEY).map((e) => [e.code, e.value])),
    [[[30, 1]], [[30, 0]]],
  );
  await src.stop();
  await src.done;
});

test('the evdev seat survives a directory of non-devices and a missing directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'devinput-'));
  writeFileSync(join(dir, 'event0'), 'not a device');
  const seat = new EvdevSeat(log, dir);
  await seat.start();
  assert.deepEqual(seat.devices(), []);
  await seat.stop();
  const none = new EvdevSeat(log, join(dir, 'missing'));
  await none.start();
  await none.stop();
});

test('Input1 rejects bad arguments with named errors and never throws into the daemon', async () => {
  const service = new InputService(
    new VirtualSeat(),
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    {
      forVm: async () => {
        throw new Error('connection refused');
      },
    },
    { switchToSlot: async () => undefined },
    log,
  );
  assert.throws(
    () => service.InjectEvents(ctx, 'joystick', []),
    (e: unknown) =>
      e instanceof BulkheadError && e.errorName === 'InvalidArgument' && /joystick/.test(e.message),
  );
  assert.throws(
    () => service.SetFocus(ctx, '/org/other', {}),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'InvalidArgument',
  );
  await assert.rejects(
    service.SetFocus(ctx, '/org/bulkhead/VmManager1/vm/x', {}),
    (e: unknown) => e instanceof BulkheadError && /no qmp_socket/.test(e.message),
  );
  const { Variant } = await import('dbus-next');
  await assert.rejects(
    service.SetFocus(ctx, '/org/bulkhead/VmManager1/vm/x', { qmp_socket: new Variant('s', '/nope') }),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'BackendFailed' && /\/nope/.test(e.message),
  );
  assert.equal(service.properties().FocusedTarget, '/');
  service.InjectEvents(ctx, 'keyboard', [
    [EV_KEY, 30, 1],
    [EV_SYN, SYN_REPORT, 0],
  ]);

  const replay = new InputService(
    new ReplaySource('/dev/null'),
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    {
      forVm: async () => {
        throw new Error('x');
      },
    },
    { switchToSlot: async () => undefined },
    log,
  );
  assert.throws(
    () => replay.InjectEvents(ctx, 'keyboard', []),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'NotSupported',
  );
});
