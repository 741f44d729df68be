/**
 * Issue 14 (a real lock): while the seat is locked, VmManager1.Switch and SwitchToSlot to a VM are
 * refused with org.bulkhead.Error.Locked and change nothing — no VM boots, ActiveVm stays on the
 * switcher (the lock screen). The real vm-daemon and the real input-daemon (virtual seat) run as
 * their own processes on a private dbus-daemon, with real QEMU (TCG) test guests.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { BUS_NAMES, INPUT_PATH, isBulkheadError, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { variant, type BusClient } from '@bulkhead/dbus';
import { waitFor } from './testing/daemon-process';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuTestSkip } from './testing/qemu-test-world';

const MGR = 'org.bulkhead.VmManager1';
const skip = qemuTestSkip({ inputDaemon: true });

let world: QemuTestWorld;
let client: BusClient;

const vmDef = (id: string, slot: number, autostart: boolean) => ({
  id,
  name: id,
  slot,
  kind: 'personal',
  color: '#2a6fdb',
  memoryMiB: 32,
  vcpus: 1,
  autostart,
  kernel: KERNEL,
  append: `name=${id}`,
});
const input = () => client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
const manager = () => client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
const activeVm = () => client.get(MGR, VM_MANAGER_PATH, MGR, 'ActiveVm');
const state = (id: string) => client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State');

before(async () => {
  if (skip) return;
  world = await QemuTestWorld.start('lock-switch-', {
    business: vmDef('business', 2, true),
    spare: vmDef('spare', 3, false),
  });
  client = world.client;
  await world.spawnInputDaemon({ runDir: join(world.root, 'input-run') });
  await world.spawnVmDaemon({ args: ['--stop-vms-on-exit'] });
  await waitFor('business running', async () => (await state('business')) === 'running', 30_000);
});

after(async () => {
  await world?.stop();
});

test(
  'while locked, a D-Bus Switch to a VM is refused with Locked and changes nothing; after Unlock it works',
  { skip },
  async () => {
    await manager().Switch(vmPath('business'), {});
    assert.equal(await activeVm(), vmPath('business'));

    await input().Lock();
    // The lock brings the screen home (SwitchToSlot(0) from input-daemon).
    await waitFor(
      'the lock returned the screen to the switcher',
      async () => (await activeVm()) === '/',
      15_000,
    );

    await assert.rejects(manager().Switch(vmPath('business'), {}), (e) => isBulkheadError(e, 'Locked'));
    await assert.rejects(manager().SwitchToSlot(2, {}), (e) => isBulkheadError(e, 'Locked'));
    // A stopped VM is not even booted by a refused switch.
    await assert.rejects(manager().SwitchToSlot(3, {}), (e) => isBulkheadError(e, 'Locked'));
    assert.equal(await state('spare'), 'stopped');
    assert.equal(await activeVm(), '/');
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'FocusedTarget'), '/');

    // Going home is always allowed (it is where the lock screen is).
    await manager().SwitchToSlot(0, {});

    await input().Unlock({ password: variant('s', 'virtual seat: no password') });
    await manager().SwitchToSlot(2, {});
    assert.equal(await activeVm(), vmPath('business'));
  },
);
