/**
 * Issue 12 item 3: keys typed right after a switch hotkey, while vm-daemon has not yet frozen and
 * refocused input, never reach the VM being left. Driven through InputService (virtual seat, fake
 * sinks) with a vm-daemon stand-in whose SwitchToSlot waits until the test lets it go on, so every
 * interleaving is exact (no timing).
 */
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@bulkhead/common';
import type { CallContext } from '@bulkhead/contract';
import { variant } from '@bulkhead/dbus';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { EV_KEY, EV_REL, EV_SYN, REL_X, SYN_REPORT, ev } from './input-event';
import { HOLD_SAFETY_BOUND_MS, InputService, type VmManagerLink } from './input-service';
import { MAX_HELD_EVENTS } from './router';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';

const VM_A = '/org/bulkhead/VmManager1/vm/a';
const VM_B = '/org/bulkhead/VmManager1/vm/b';
const CTRL = 29,
  KEY_2 = 3,
  BACKSPACE = 14,
  ALT = 56,
  A = 30,
  B = 48,
  C = 46;
const ctx = {} as CallContext;
const log = createLogger('switch-hold-test', 'error');

/** vm-daemon stand-in: SwitchToSlot waits for the test, which plays vm-daemon's calls meanwhile. */
class FakeSlowVmManager implements VmManagerLink {
  slots: number[] = [];
  private pending: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  switchToSlot(slot: number): Promise<void> {
    this.slots.push(slot);
    return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
  }
  succeed(): void {
    this.pending.shift()!.resolve();
  }
  fail(msg = 'org.bulkhead.Error.BackendFailed: fake switch failure'): void {
    this.pending.shift()!.reject(new Error(msg));
  }
}

function setup(holdTimeoutMs?: number) {
  const seat = new VirtualSeat();
  const switcher = new FakeSink('/');
  const sinks: Record<string, FakeSink> = { [VM_A]: new FakeSink(VM_A), [VM_B]: new FakeSink(VM_B) };
  const vmd = new FakeSlowVmManager();
  const service = new InputService(
    seat,
    new HotkeyMatcher(buildChords()),
    switcher,
    { forVm: async (target) => sinks[target] },
    vmd,
    log,
    { holdTimeoutMs },
  );
  const focus = (target: string) =>
    service.SetFocus(ctx, target, { qmp_socket: variant('s', `/fake/${target}`) });
  const frame = (...events: Array<[number, number, number]>) =>
    seat.inject('keyboard', [...events, [EV_SYN, SYN_REPORT, 0]]);
  const key = (code: number, value: number) => frame([EV_KEY, code, value]);
  const tap = (code: number) => (key(code, 1), key(code, 0));
  const chord = (mod: number, k: number) => (key(mod, 1), key(k, 1), key(k, 0), key(mod, 0));
  /** Key events a sink got, as 'down 30' / 'up 30'. */
  const keys = (s: FakeSink) =>
    s
      .events()
      .filter((e) => e.type === EV_KEY)
      .map((e) => `${e.value ? 'down' : 'up'} ${e.code}`);
  const sinksAdd = (target: string) => (sinks[target] = new FakeSink(target));
  return { seat, service, vmd, sinks, sinksAdd, switcher, focus, frame, key, tap, chord, keys };
}

test('Ctrl+2 then typing before vm-daemon freezes: nothing of it reaches A; all of it reaches B, in order, once B has the focus', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.tap(A);
  t.chord(CTRL, KEY_2);
  t.tap(B);
  t.tap(C);
  t.key(A, 1);
  // vm-daemon's switch, late: Freeze, then SetFocus(B), then SwitchToSlot returns.
  await t.service.Freeze(ctx, {});
  t.key(A, 0);
  await t.focus(VM_B);
  t.tap(C);
  t.vmd.succeed();
  await t.service.settled();
  assert.deepEqual(t.vmd.slots, [2]);
  assert.deepEqual(t.keys(t.sinks[VM_A]), ['down 30', 'up 30'], 'A got keys typed after Ctrl+2');
  assert.deepEqual(t.keys(t.sinks[VM_B]), [
    'down 48',
    'up 48',
    'down 46',
    'up 46',
    'down 30',
    'up 30',
    'down 46',
    'up 46',
  ]);
});

test('a switch that fails (SwitchToSlot refused): what was typed meanwhile reaches nobody; typing after it goes to A again', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  t.tap(B);
  t.vmd.fail();
  await t.service.settled();
  t.tap(C);
  assert.deepEqual(t.keys(t.sinks[VM_A]), ['down 46', 'up 46']);
  assert.deepEqual(t.keys(t.sinks[VM_B]), []);
  assert.match(t.service.properties().LastHotkeyError, /SwitchToSlot\(2\) failed/);
});

test('a switch rolled back to A (Freeze, SetFocus(A), then the error): A never gets what was typed for B', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  t.tap(B);
  await t.service.Freeze(ctx, {});
  t.tap(C);
  await t.focus(VM_A); // the rollback re-focuses the VM being left
  t.tap(B);
  t.vmd.fail();
  await t.service.settled();
  assert.deepEqual(t.keys(t.sinks[VM_A]), []);
  assert.deepEqual(t.keys(t.sinks[VM_B]), []);
  t.tap(A);
  assert.deepEqual(t.keys(t.sinks[VM_A]), ['down 30', 'up 30']);
});

test('Ctrl+1 while A has the focus: the switch to A succeeds and what was typed meanwhile reaches A', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, 2); // KEY_1
  t.tap(B);
  await t.service.Freeze(ctx, {});
  await t.focus(VM_A);
  assert.deepEqual(t.keys(t.sinks[VM_A]), [], 'held until the switch is reported done');
  t.vmd.succeed();
  await t.service.settled();
  assert.deepEqual(t.keys(t.sinks[VM_A]), ['down 48', 'up 48']);
});

test('secure attention during a pending switch drops what was held: nothing typed before the lock reaches any VM', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  t.tap(B);
  t.key(CTRL, 1);
  t.key(ALT, 1);
  t.key(BACKSPACE, 1);
  t.key(BACKSPACE, 0);
  t.key(ALT, 0);
  t.key(CTRL, 0);
  await new Promise((r) => setImmediate(r)); // the lock runs in the focus queue
  assert.equal(t.service.properties().Locked, true);
  await t.service.Freeze(ctx, {});
  await t.focus(VM_B);
  t.vmd.succeed();
  t.vmd.succeed(); // the lock's own SwitchToSlot(0)
  await t.service.settled();
  assert.deepEqual(t.keys(t.sinks[VM_A]), []);
  assert.deepEqual(t.keys(t.sinks[VM_B]), []);
});

test('more typing during one switch than the bound: all of it is dropped, not a prefix; pointer motion is never held', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  t.frame([EV_REL, REL_X, 5]);
  for (let i = 0; i < MAX_HELD_EVENTS / 2 + 1; i++) t.tap(A);
  await t.service.Freeze(ctx, {});
  await t.focus(VM_B);
  t.vmd.succeed();
  await t.service.settled();
  assert.deepEqual(t.sinks[VM_A].events(), []);
  assert.deepEqual(t.sinks[VM_B].events(), []);
  t.tap(B);
  assert.deepEqual(t.keys(t.sinks[VM_B]), ['down 48', 'up 48']);
});

test('vm-daemon never answers: after the hold timeout what was held is dropped and input flows again', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const t = setup(2000);
    await t.focus(VM_A);
    t.chord(CTRL, KEY_2);
    t.tap(B);
    mock.timers.tick(1999);
    t.tap(C);
    assert.deepEqual(t.sinks[VM_A].events(), []);
    mock.timers.tick(1);
    t.tap(A);
    assert.deepEqual(t.keys(t.sinks[VM_A]), ['down 30', 'up 30']);
    assert.deepEqual(t.sinks[VM_B].events(), []);
    assert.ok(t.service.router.stats.heldDropped >= 4);
    assert.deepEqual(
      t.sinks[VM_A].events().map((e) => ev(e.type, e.code, e.value)),
      [ev(EV_KEY, A, 1), ev(EV_KEY, A, 0)],
    );
  } finally {
    mock.timers.reset();
  }
});

// ---- issue 17: the hold ends when the hotkey's own switch resolves, however long it takes ----

const VM_C = '/org/bulkhead/VmManager1/vm/c';
/** vm-daemon's Freeze for a switch to `target` in `slot` (Input1.Freeze options target, slot). */
const freezeFor = (t: ReturnType<typeof setup>, target: string, slot: number) =>
  t.service.Freeze(ctx, { target: variant('o', target), slot: variant('u', slot) });

test("a hotkey pressed during a click-started switch before its Freeze: typing after Ctrl+2 reaches B, never the click's target C", async () => {
  const t = setup();
  t.sinksAdd(VM_C);
  await t.focus(VM_A);
  // A click on C's tile started a switch in vm-daemon; it has not frozen input yet (it boots C).
  t.chord(CTRL, KEY_2); // queued in vm-daemon behind the click's switch
  t.tap(B);
  await freezeFor(t, VM_C, 3); // the click's switch
  t.tap(C);
  await t.focus(VM_C);
  assert.deepEqual(t.keys(t.sinks[VM_C]), [], 'C got keys typed after Ctrl+2');
  await freezeFor(t, VM_B, 2); // the hotkey's switch runs next
  await t.focus(VM_B);
  assert.deepEqual(
    t.keys(t.sinks[VM_B]),
    ['down 48', 'up 48', 'down 46', 'up 46'],
    'delivered at its SetFocus',
  );
  t.vmd.succeed();
  await t.service.settled();
  t.tap(A);
  assert.deepEqual(t.keys(t.sinks[VM_B]), ['down 48', 'up 48', 'down 46', 'up 46', 'down 30', 'up 30']);
  assert.deepEqual(t.keys(t.sinks[VM_A]), []);
  assert.deepEqual(t.keys(t.sinks[VM_C]), []);
});

test("the hotkey's switch runs after a click's and rolls back to where that one landed: nothing held reaches it", async () => {
  const t = setup();
  t.sinksAdd(VM_C);
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  t.tap(B);
  await freezeFor(t, VM_C, 3);
  await t.focus(VM_C); // the click's switch lands on C
  await freezeFor(t, VM_B, 2);
  await t.focus(VM_C); // the hotkey's switch failed after freeze-input: back to C
  t.vmd.fail();
  await t.service.settled();
  assert.deepEqual(t.keys(t.sinks[VM_C]), []);
  assert.deepEqual(t.keys(t.sinks[VM_B]), []);
  assert.deepEqual(t.keys(t.sinks[VM_A]), []);
});

test('"Ctrl+2 abc" while the switch takes 5 s (a GPU moving): abc reaches B; the default bound is far beyond a switch', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const t = setup();
    await t.focus(VM_A);
    t.chord(CTRL, KEY_2);
    t.tap(A);
    await freezeFor(t, VM_B, 2);
    mock.timers.tick(2500);
    t.tap(B);
    mock.timers.tick(2500);
    t.tap(C);
    assert.deepEqual(t.keys(t.sinks[VM_A]), [], 'A got keys typed after Ctrl+2');
    await t.focus(VM_B);
    t.vmd.succeed();
    await t.service.settled();
    assert.deepEqual(t.keys(t.sinks[VM_B]), ['down 30', 'up 30', 'down 48', 'up 48', 'down 46', 'up 46']);
    assert.equal(t.service.router.stats.heldDropped, 0);
  } finally {
    mock.timers.reset();
  }
});

test('vm-daemon never answers: input is held until the safety bound (HOLD_SAFETY_BOUND_MS), then dropped', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const t = setup();
    await t.focus(VM_A);
    t.chord(CTRL, KEY_2);
    t.tap(B);
    mock.timers.tick(HOLD_SAFETY_BOUND_MS - 1);
    assert.equal(t.service.router.isHolding, true);
    mock.timers.tick(1);
    assert.equal(t.service.router.isHolding, false);
    t.tap(A);
    assert.deepEqual(t.keys(t.sinks[VM_A]), ['down 30', 'up 30']);
  } finally {
    mock.timers.reset();
  }
});

test('stopping while vm-daemon has not answered a hotkey: close() does not wait for the answer', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2); // vm-daemon never answers
  const started = Date.now();
  await t.service.close();
  assert.ok(Date.now() - started < 10_000, `close() took ${Date.now() - started} ms`);
});

test('Ctrl pressed while the hotkey\'s switch runs and still held when it lands: B gets "a" then Ctrl+C, as typed — not "a" and a bare "c"', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  t.tap(A);
  t.key(CTRL, 1); // held back as a possible chord start while the switch runs
  await freezeFor(t, VM_B, 2);
  await t.focus(VM_B); // the hotkey's own switch lands: what was typed goes to B
  t.tap(C);
  t.key(CTRL, 0);
  t.vmd.succeed();
  await t.service.settled();
  assert.deepEqual(t.keys(t.sinks[VM_A]), []);
  assert.deepEqual(t.keys(t.sinks[VM_B]), ['down 30', 'up 30', 'down 29', 'down 46', 'up 46', 'up 29']);
});

test("Ctrl pressed while the hotkey's switch runs, the switch refused: the Ctrl goes with what was held, to nobody", async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  t.tap(A);
  t.key(CTRL, 1);
  t.vmd.fail();
  await t.service.settled();
  t.tap(C);
  t.key(CTRL, 0);
  assert.deepEqual(t.keys(t.sinks[VM_A]), ['down 46', 'up 46']);
  assert.deepEqual(t.keys(t.sinks[VM_B]), []);
});

test('Ctrl pressed after more typing than the bound during the switch: it is dropped with all of the rest, even when the switch lands', async () => {
  const t = setup();
  await t.focus(VM_A);
  t.chord(CTRL, KEY_2);
  for (let i = 0; i < MAX_HELD_EVENTS / 2 + 1; i++) t.tap(A);
  t.key(CTRL, 1);
  await freezeFor(t, VM_B, 2);
  await t.focus(VM_B);
  t.tap(C);
  t.key(CTRL, 0);
  t.vmd.succeed();
  await t.service.settled();
  assert.deepEqual(t.keys(t.sinks[VM_A]), []);
  assert.deepEqual(t.keys(t.sinks[VM_B]), ['down 46', 'up 46'], 'no Ctrl: it went with what was dropped');
});
