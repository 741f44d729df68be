/**
 * vm-daemon SIGKILLed and restarted — during normal use, in the middle of a switch, and with its
 * state file cut short — recovers from the system (the running QEMUs: qemu.pid + QMP), not from
 * memory: no VM is stopped or restarted (same pids), the active VM stays active, and input-daemon
 * is told where the focus is (the last SetFocus equals ActiveVm).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SWITCHER_PATH, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import type { BusClient, PrivateBus } from '@bulkhead/dbus';
import { FakeInputDaemon } from './testing/fake-input-daemon';
import { processAlive, spawnDaemon, waitFor, type DaemonProcess } from './testing/daemon-process';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuPid } from './testing/qemu-test-world';

const MGR = 'org.bulkhead.VmManager1';
const IDS = ['alpha', 'beta'];

let world: QemuTestWorld;
let bus: PrivateBus;
let client: BusClient;
let input: FakeInputDaemon;
let daemon: DaemonProcess;
let configDir: string;
let runDir: string;
let stateDir: string;

const state = (id: string) => client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State') as Promise<string>;
const reason = (id: string) =>
  client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'StateReason') as Promise<string>;
const activeVm = () =>
  client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm') as Promise<string>;
const manager = () => client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
const pidOf = (id: string) => qemuPid(runDir, id);
const lastFocus = () => input.calls.filter((c) => c.method === 'SetFocus').at(-1)?.target ?? SWITCHER_PATH;
const start = () => spawnDaemon({ bus: bus.address, configDir, runDir, stateDir });

async function killDaemon(): Promise<void> {
  const exited = new Promise((r) => daemon.child.once('exit', r));
  daemon.child.kill('SIGKILL');
  await exited;
}

/** After a restart: same QEMU pids, re-adopted, ActiveVm as expected, input told so. */
async function assertRecovered(pids: Record<string, number>, expectActive: string[]): Promise<void> {
  for (const id of IDS) {
    assert.ok(processAlive(pids[id]), `${id}'s QEMU was stopped`);
    assert.equal(pidOf(id), pids[id], `${id} was restarted`);
    assert.equal(await state(id), 'running');
    assert.match(await reason(id), /re-adopted/);
  }
  const a = await activeVm();
  assert.ok(expectActive.includes(a), `ActiveVm ${a}, expected one of ${expectActive.join(', ')}`);
  // What input-daemon routes to (not only what it was last told) is the active VM.
  await waitFor(
    `input focus restored (input has ${input.focused}, ActiveVm ${a})`,
    () => input.focused === a && lastFocus() === a,
    5000,
  );
}

before(async () => {
  assert.ok(existsSync(KERNEL), `test guest not built: make -C apps/vm-daemon/guest (${KERNEL})`);
  world = await QemuTestWorld.start(
    'vmd-kill-',
    Object.fromEntries(
      IDS.map((id, i) => [
        id,
        { id, slot: i + 1, color: '#2a6fdb', memoryMiB: 32, autostart: true, kernel: KERNEL },
      ]),
    ),
  );
  ({ bus, client, configDir, runDir, stateDir } = world);
  input = await FakeInputDaemon.start(bus.address);
  world.onStop(() => input.stop());
  daemon = await start();
  await waitFor(
    'both running',
    async () => (await state('alpha')) === 'running' && (await state('beta')) === 'running',
    20_000,
  );
});

after(async () => {
  await daemon?.stop();
  await world?.stop();
});

test('SIGKILL during normal use: VMs keep running, are re-adopted, the active VM stays active', async () => {
  await manager().SwitchToSlot(2, {});
  const pids = { alpha: pidOf('alpha'), beta: pidOf('beta') };
  await killDaemon();
  input.calls.length = 0;
  daemon = await start();
  await assertRecovered(pids, [vmPath('beta')]);
});

test('SIGKILL in the middle of a switch: the old or the new VM is active, consistently', async () => {
  await manager().SwitchToSlot(1, {});
  const pids = { alpha: pidOf('alpha'), beta: pidOf('beta') };
  // Hold the switch at freeze-input, then kill the daemon.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const frozen = new Promise<void>((reached) => {
    const freeze = input.Freeze.bind(input);
    Object.assign(input, {
      Freeze: async (...a: Parameters<typeof freeze>) => {
        reached();
        await held;
        return freeze(...a);
      },
    });
  });
  const switching = manager()
    .SwitchToSlot(2, {})
    .catch((e: unknown) => e);
  await frozen;
  await killDaemon();
  release();
  await switching; // no reply: the daemon died
  delete (input as Partial<FakeInputDaemon>).Freeze; // back to the class method
  input.calls.length = 0;
  daemon = await start();
  await assertRecovered(pids, [vmPath('alpha'), vmPath('beta')]);
  // And the restarted daemon switches normally.
  await manager().SwitchToSlot(2, {});
  assert.equal(await activeVm(), vmPath('beta'));
  assert.equal(lastFocus(), vmPath('beta'));
});

test('SIGKILL, then state.json cut short: reported, replaced, VMs re-adopted (none stopped)', async () => {
  const pids = { alpha: pidOf('alpha'), beta: pidOf('beta') };
  await killDaemon();
  const path = join(stateDir, 'state.json');
  writeFileSync(path, readFileSync(path, 'utf8').slice(0, 7));
  input.calls.length = 0;
  daemon = await start();
  assert.match(daemon.log(), /state file unusable/);
  assert.doesNotThrow(() => JSON.parse(readFileSync(path, 'utf8')), 'state.json replaced by a valid file');
  // The active VM was only in the lost file: the switcher has the focus, and the VMs run on.
  await assertRecovered(pids, [SWITCHER_PATH]);
});
