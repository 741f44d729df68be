/**
 * Faults during a switch, against the real vm-daemon process, real QEMU (TCG, the test guest) and
 * a FakeInputDaemon whose Freeze/SetFocus can be held while the test SIGKILLs a QEMU. Whatever
 * dies when, once things settle: ActiveVm is '/' or a VM that is running, and the last SetFocus
 * input-daemon received names ActiveVm (input never goes to a VM that is not the active one).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  BulkheadError,
  SWITCHER_PATH,
  VM_MANAGER_PATH,
  vmIdFromPath,
  vmPath,
  type CallContext,
  type VariantDict,
} from '@bulkhead/contract';
import type { BusClient } from '@bulkhead/dbus';
import { FakeInputDaemon } from './testing/fake-input-daemon';
import { waitFor } from './testing/daemon-process';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuPid } from './testing/qemu-test-world';

const MGR = 'org.bulkhead.VmManager1';
const IDS = ['alpha', 'beta', 'gamma'];

let world: QemuTestWorld;
let client: BusClient;
let input: FakeInputDaemon;
let runDir: string;

const state = (id: string) => client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State') as Promise<string>;
const activeVm = () =>
  client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm') as Promise<string>;
const manager = () => client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
const vm = (id: string) => client.proxy(MGR, vmPath(id), 'org.bulkhead.Vm1');
const pidOf = (id: string) => qemuPid(runDir, id);
const lastFocus = () => input.calls.filter((c) => c.method === 'SetFocus').at(-1)?.target ?? SWITCHER_PATH;

/** Hooks run inside the FakeInputDaemon's handlers, before it records/answers the call. */
let onFreeze: (() => Promise<void>) | null = null;
let onSetFocus: ((target: string) => Promise<void>) | null = null;

async function killAndWait(id: string): Promise<void> {
  process.kill(pidOf(id), 'SIGKILL');
  await waitFor(`${id} crashed`, async () => (await state(id)) === 'crashed', 10_000, 10);
}

async function ensureRunning(id: string): Promise<void> {
  const s = await state(id);
  if (s !== 'running') await vm(id).Start({});
}

/** The consistency the switch promises, once the daemon has settled. */
async function assertConsistent(what: string): Promise<void> {
  // Let every pending fall-back finish: ActiveVm and the last SetFocus must agree and stay so.
  await waitFor(
    `${what}: ActiveVm and input focus agree`,
    async () => {
      if ((await client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'Switching')) === true)
        return false;
      const a = await activeVm();
      return a === lastFocus() && (a === SWITCHER_PATH || (await state(vmIdFromPath(a)!)) === 'running');
    },
    10_000,
    50,
  ).catch(async (e) => {
    const a = await activeVm();
    throw new Error(
      `${(e as Error).message}\nActiveVm=${a} (${a === SWITCHER_PATH ? '-' : await state(vmIdFromPath(a)!)}), last SetFocus=${lastFocus()}\n` +
        `calls: ${input.calls.map((c) => `${c.method}${c.target ? `(${c.target})` : ''}`).join(' ')}`,
    );
  });
  await new Promise((r) => setTimeout(r, 300));
  const a = await activeVm();
  assert.equal(lastFocus(), a, `${what}: input focus moved away from ActiveVm afterwards`);
  if (a !== SWITCHER_PATH)
    assert.equal(await state(vmIdFromPath(a)!), 'running', `${what}: active VM not running`);
}

before(async () => {
  assert.ok(existsSync(KERNEL), `test guest not built: make -C apps/vm-daemon/guest (${KERNEL})`);
  world = await QemuTestWorld.start(
    'vmd-fault-',
    Object.fromEntries(
      IDS.map((id, i) => [
        id,
        {
          id,
          slot: i + 1,
          color: '#2a6fdb',
          memoryMiB: 32,
          autostart: i < 2,
          kernel: KERNEL,
          append: `name=${id}`,
        },
      ]),
    ),
  );
  ({ client, runDir } = world);
  input = await FakeInputDaemon.start(world.bus.address);
  world.onStop(() => input.stop());
  // Wrap the fake's handlers so a test can act while a switch waits on input-daemon.
  const freeze = input.Freeze.bind(input);
  const setFocus = input.SetFocus.bind(input);
  Object.assign(input, {
    Freeze: async (ctx: CallContext, o: VariantDict) => {
      const h = onFreeze;
      onFreeze = null;
      if (h) await h();
      return freeze(ctx, o);
    },
    SetFocus: async (ctx: CallContext, target: string, o: VariantDict) => {
      const h = onSetFocus;
      if (h) await h(target);
      return setFocus(ctx, target, o);
    },
  });
  await world.spawnVmDaemon();
  await waitFor(
    'alpha and beta running',
    async () => (await state('alpha')) === 'running' && (await state('beta')) === 'running',
    20_000,
  );
});

after(async () => {
  onFreeze = null;
  onSetFocus = null;
  await world?.stop();
});

test('the target QEMU killed while the switch focuses input on it: no switch to a dead VM', async () => {
  await manager().SwitchToSlot(1, {});
  assert.equal(await activeVm(), vmPath('alpha'));
  onSetFocus = async (target) => {
    if (target !== vmPath('beta')) return;
    onSetFocus = null;
    await killAndWait('beta'); // the daemon has seen it die before the switch goes on
  };
  const r = await manager()
    .SwitchToSlot(2, {})
    .then(
      () => null,
      (e: unknown) => e,
    );
  assert.ok(r === null || r instanceof BulkheadError, `switch answered ${String(r)}`);
  await assertConsistent('target killed at focus-input');
  assert.notEqual(await activeVm(), vmPath('beta'));
});

test('the target QEMU killed while it is being started by the switch', async () => {
  await ensureRunning('alpha');
  await manager().SwitchToSlot(1, {});
  const switching = manager()
    .SwitchToSlot(3, {})
    .then(
      () => null,
      (e: unknown) => e,
    );
  // Kill gamma's QEMU as soon as it exists (during the starting-vm step).
  const pid = await waitFor(
    'gamma qemu.pid',
    () => (existsSync(join(runDir, 'gamma', 'qemu.pid')) ? pidOf('gamma') : 0),
    10_000,
    2,
  );
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone already */
  }
  const r = await switching;
  assert.ok(r === null || r instanceof BulkheadError, `switch answered ${String(r)}`);
  await assertConsistent('target killed at starting-vm');
});

test('the source QEMU killed while input is frozen: the switch lands on the target', async () => {
  await ensureRunning('alpha');
  await ensureRunning('beta');
  await manager().SwitchToSlot(1, {});
  onFreeze = () => killAndWait('alpha');
  await manager().SwitchToSlot(2, {});
  await assertConsistent('source killed at freeze-input');
  assert.equal(await activeVm(), vmPath('beta'));
});

test('the source QEMU killed and the switch rolls back: focus ends on the switcher, not the dead source', async () => {
  await ensureRunning('alpha');
  await ensureRunning('beta');
  await manager().SwitchToSlot(1, {});
  onFreeze = () => killAndWait('alpha');
  input.failSetFocusTo = vmPath('beta');
  try {
    await assert.rejects(manager().SwitchToSlot(2, {}), (e: unknown) => e instanceof BulkheadError);
  } finally {
    input.failSetFocusTo = null;
  }
  await assertConsistent('source killed, then rollback');
  assert.equal(await activeVm(), SWITCHER_PATH);
});
