/**
 * Input1.Prepare: vm-daemon lets input-daemon connect to a VM's QEMU when the VM starts, so the
 * first switch to it does not wait for that connect. Driven through InputService with a fake sink
 * factory that counts connects and can hold one open (a slow QEMU), so the interleavings are exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@bulkhead/common';
import { BulkheadError, type CallContext } from '@bulkhead/contract';
import { variant } from '@bulkhead/dbus';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { EV_KEY, EV_SYN, SYN_REPORT } from './input-event';
import { InputService } from './input-service';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';

const VM_A = '/org/bulkhead/VmManager1/vm/a';
const ctx = {} as CallContext;
const log = createLogger('prepare-test', 'error');
const socket = (path: string) => ({ qmp_socket: variant('s', path) });

function setup() {
  const seat = new VirtualSeat();
  const switcher = new FakeSink('/');
  const connects: string[] = [];
  let hold: Promise<void> | null = null;
  const sinks: FakeSink[] = [];
  const service = new InputService(
    seat,
    new HotkeyMatcher(buildChords()),
    switcher,
    {
      forVm: async (target, _vmId, path) => {
        connects.push(`${target} ${path}`);
        if (hold) await hold;
        const s = new FakeSink(target);
        sinks.push(s);
        return s;
      },
    },
    { switchToSlot: async () => undefined },
    log,
  );
  return {
    service,
    seat,
    switcher,
    connects,
    sinks,
    /**
     * Prepare(VM_A) with its connect held open; `meanwhile` starts while it connects and
     * `whileHeld` checks the state then; the connect is let go and both are awaited.
     */
    async duringPrepare(meanwhile: () => Promise<unknown>, whileHeld: () => void = () => undefined) {
      let release!: () => void;
      hold = new Promise((r) => (release = r));
      const preparing = service.Prepare(ctx, VM_A, socket('/run/a.sock'));
      const other = meanwhile();
      await new Promise((r) => setImmediate(r));
      whileHeld();
      hold = null;
      release();
      await Promise.all([preparing, other]);
    },
  };
}

test('Prepare connects to the VM and routes nothing; the first SetFocus to it uses that connection', async () => {
  const t = setup();
  await t.service.Prepare(ctx, VM_A, socket('/run/a.sock'));
  assert.deepEqual(t.connects, [`${VM_A} /run/a.sock`]);
  assert.equal(t.service.properties().FocusedTarget, '/', 'the focus did not move');
  // A key now still goes to the switcher, not to the prepared VM.
  t.seat.inject('keyboard', [
    [EV_KEY, 30, 1],
    [EV_SYN, SYN_REPORT, 0],
    [EV_KEY, 30, 0],
    [EV_SYN, SYN_REPORT, 0],
  ]);
  assert.equal(t.sinks[0].events().length, 0, 'nothing was sent to the prepared VM');
  await t.service.SetFocus(ctx, VM_A, socket('/run/a.sock'));
  assert.deepEqual(t.connects, [`${VM_A} /run/a.sock`], 'no second connect');
  assert.equal(t.service.properties().FocusedTarget, VM_A);
});

test('a SetFocus while Prepare still connects waits for that connection instead of opening another', async () => {
  const t = setup();
  await t.duringPrepare(
    () => t.service.SetFocus(ctx, VM_A, socket('/run/a.sock')),
    () => assert.equal(t.service.properties().FocusedTarget, '/', 'SetFocus waits for the connect'),
  );
  assert.deepEqual(t.connects, [`${VM_A} /run/a.sock`], 'one connect for both');
  assert.equal(t.service.properties().FocusedTarget, VM_A);
});

test('stopping the daemon while Prepare connects closes that connection too', async () => {
  const t = setup();
  await t.duringPrepare(() => t.service.close());
  assert.equal(t.sinks.length, 1);
  assert.equal(t.sinks[0].alive, false, 'the prepared connection was closed with the rest');
});

test('Prepare refuses the switcher, a path that is no VM, and a call without qmp_socket, by name', async () => {
  const t = setup();
  for (const [target, options] of [
    ['/', socket('/run/a.sock')],
    ['/org/bulkhead/Elsewhere', socket('/run/a.sock')],
    [VM_A, {}],
  ] as const)
    await assert.rejects(
      t.service.Prepare(ctx, target, options),
      (e: unknown) => e instanceof BulkheadError && e.errorName === 'InvalidArgument',
    );
  assert.deepEqual(t.connects, []);
});
