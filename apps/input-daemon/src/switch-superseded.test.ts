/**
 * Issue 17: vm-daemon runs the LAST switch request after the one running, and answers a replaced
 * pending request with Superseded. Keys typed after a hotkey pressed during a running switch go to
 * that hotkey's VM — never to the VM the running switch lands on first — and a Superseded answer
 * is neither a hotkey error nor a reason to hand held input anywhere. Driven through InputService
 * (virtual seat, fake sinks) with a vm-daemon stand-in answering in the order vm-daemon does: the
 * running switch's Freeze/SetFocus then its answer, Superseded at once to a replaced request, then
 * the pending request's Freeze/SetFocus and answer. No timing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@bulkhead/common';
import { BulkheadError, type CallContext } from '@bulkhead/contract';
import { variant } from '@bulkhead/dbus';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { EV_KEY, EV_SYN, SYN_REPORT } from './input-event';
import { InputService, type VmManagerLink } from './input-service';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';

const VM_1 = '/org/bulkhead/VmManager1/vm/one';
const VM_2 = '/org/bulkhead/VmManager1/vm/two';
const CTRL = 29,
  KEY_1 = 2,
  KEY_2 = 3,
  X = 45,
  Y = 21;
const ctx = {} as CallContext;
const log = createLogger('switch-superseded-test', 'error');

/** vm-daemon stand-in: SwitchToSlot calls wait; the test answers each by its slot order. */
class FakeQueueingVmManager implements VmManagerLink {
  calls: Array<{ slot: number; resolve: () => void; reject: (e: Error) => void }> = [];
  switchToSlot(slot: number): Promise<void> {
    return new Promise((resolve, reject) => this.calls.push({ slot, resolve, reject }));
  }
}

function setup() {
  const seat = new VirtualSeat();
  const sinks: Record<string, FakeSink> = { [VM_1]: new FakeSink(VM_1), [VM_2]: new FakeSink(VM_2) };
  const vmd = new FakeQueueingVmManager();
  const service = new InputService(
    seat,
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    { forVm: async (target) => sinks[target] },
    vmd,
    log,
    { holdTimeoutMs: 60_000 },
  );
  const focus = (target: string) =>
    service.SetFocus(ctx, target, { qmp_socket: variant('s', `/fake/${target}`) });
  const key = (code: number, value: number) =>
    seat.inject('keyboard', [
      [EV_KEY, code, value],
      [EV_SYN, SYN_REPORT, 0],
    ]);
  const tap = (code: number) => (key(code, 1), key(code, 0));
  const chord = (k: number) => (key(CTRL, 1), key(k, 1), key(k, 0), key(CTRL, 0));
  const keys = (s: FakeSink) =>
    s
      .events()
      .filter((e) => e.type === EV_KEY && e.code !== CTRL)
      .map((e) => `${e.value ? 'down' : 'up'} ${e.code}`);
  const tick = () => new Promise((r) => setImmediate(r));
  return { service, vmd, sinks, focus, key, tap, chord, keys, tick };
}

const superseded = () => new BulkheadError('Superseded', 'replaced by a newer request (fake)');

test('Ctrl+1 runs, Ctrl+2 pressed meanwhile, then typing: the keys reach VM 2, not VM 1 where the running switch lands', async () => {
  const t = setup();
  await t.focus(VM_2);
  t.chord(KEY_1); // switch to VM 1 starts
  await t.tick();
  await t.service.Freeze(ctx, {});
  t.chord(KEY_2); // pending behind it
  t.tap(X);
  await t.focus(VM_1); // the running switch focuses VM 1 ...
  t.vmd.calls[0].resolve(); // ... and answers
  await t.tick();
  assert.deepEqual(t.keys(t.sinks[VM_1]), [], 'VM 1 got keys typed after Ctrl+2');
  await t.service.Freeze(ctx, {}); // the pending switch to VM 2 runs
  await t.focus(VM_2);
  t.vmd.calls[1].resolve();
  await t.service.settled();
  assert.deepEqual(
    t.vmd.calls.map((c) => c.slot),
    [1, 2],
  );
  assert.deepEqual(t.keys(t.sinks[VM_2]), ['down 45', 'up 45']);
  assert.deepEqual(t.keys(t.sinks[VM_1]), []);
});

test('Ctrl+1, Ctrl+2, Ctrl+1 within one switch: Ctrl+2 is Superseded (no hotkey error), typing after the last Ctrl+1 reaches VM 1', async () => {
  const t = setup();
  await t.focus(VM_2);
  t.chord(KEY_1);
  await t.tick();
  await t.service.Freeze(ctx, {});
  t.chord(KEY_2);
  t.tap(X); // typed for VM 2: Ctrl+1 below replaces that request, so it goes nowhere
  t.chord(KEY_1);
  await t.tick();
  t.vmd.calls[1].reject(superseded()); // vm-daemon answers the replaced request at once
  t.tap(Y);
  await t.focus(VM_1);
  t.vmd.calls[0].resolve();
  await t.service.Freeze(ctx, {}); // the last request (VM 1 again) runs
  await t.focus(VM_1);
  t.vmd.calls[2].resolve();
  await t.service.settled();
  assert.deepEqual(
    t.vmd.calls.map((c) => c.slot),
    [1, 2, 1],
  );
  assert.deepEqual(t.keys(t.sinks[VM_1]), ['down 21', 'up 21']);
  assert.deepEqual(t.keys(t.sinks[VM_2]), []);
  assert.equal(t.service.properties().LastHotkeyError, '', 'Superseded is not a hotkey failure');
  assert.equal(t.service.properties().FocusedTarget, VM_1);
});

test('a hotkey Superseded by a click (not a hotkey): what was typed after it reaches nobody', async () => {
  const t = setup();
  await t.focus(VM_2);
  t.chord(KEY_1);
  t.tap(X);
  t.vmd.calls[0].reject(superseded());
  await t.service.settled();
  assert.deepEqual(t.keys(t.sinks[VM_1]), []);
  assert.deepEqual(t.keys(t.sinks[VM_2]), []);
  assert.equal(t.service.properties().LastHotkeyError, '');
  t.tap(Y); // the hold is over: input flows to the focus again
  assert.deepEqual(t.keys(t.sinks[VM_2]), ['down 21', 'up 21']);
});

test('a Ctrl pressed while a dropped hotkey switch ran never reaches the VM being left, with the next key or later', async () => {
  for (const end of ['Superseded', 'NoSuchVm'] as const) {
    const t = setup();
    await t.focus(VM_1);
    t.chord(KEY_2);
    t.key(CTRL, 1); // typed during the hold; the matcher holds a lone Ctrl back (a chord may follow)
    const before = t.sinks[VM_1].events().length;
    t.vmd.calls[0].reject(new BulkheadError(end, `${end} (fake)`));
    await t.service.settled();
    t.tap(X); // after the hold: input flows to VM 1 again
    t.key(CTRL, 0);
    const after = t.sinks[VM_1].events()
      .slice(before)
      .filter((e) => e.type === EV_KEY)
      .map((e) => `${e.value ? 'down' : 'up'} ${e.code}`);
    assert.deepEqual(after, ['down 45', 'up 45'], `${end}: only what was typed after the hold, no Ctrl`);
  }
});
