/**
 * Security model item 10 (after waking, the suspend transaction resumes the VMs it paused) when
 * vm-daemon is SIGKILLed inside that transaction: the real vm-daemon on a private bus, one real
 * QEMU (TCG) test guest, fake-logind and a fake input-daemon. The daemon is killed while the
 * machine sleeps (its VMs paused for the sleep); the restarted daemon must resume the VMs it had
 * paused for the sleep — a daemon killed mid-suspend must not leave them paused for good — and
 * must not resume a VM the person paused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { POWER_PATH, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import type { BusClient } from '@bulkhead/dbus';
import { FakeInputDaemon } from '../testing/fake-input-daemon';
import { processAlive, waitFor, type DaemonProcess } from '../testing/daemon-process';
import {
  TEST_GUEST_KERNEL as KERNEL,
  QemuTestWorld,
  qemuPid,
  qemuTestSkip,
} from '../testing/qemu-test-world';
import { FakeLogind } from './testing/fake-system-services';

const MGR = 'org.bulkhead.VmManager1';
const skip = qemuTestSkip();

let world: QemuTestWorld;
let client: BusClient;
let logind: FakeLogind;
let daemon: DaemonProcess;

const state = (id: string) => client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State') as Promise<string>;
const activeVm = () => client.get(MGR, VM_MANAGER_PATH, MGR, 'ActiveVm') as Promise<string>;

async function killDaemon(): Promise<void> {
  const exited = new Promise((r) => daemon.child.once('exit', r));
  daemon.child.kill('SIGKILL');
  await exited;
}

before(async () => {
  if (skip) return;
  world = await QemuTestWorld.start('suspend-kill-', {
    personal: {
      id: 'personal',
      slot: 1,
      color: '#2a6fdb',
      memoryMiB: 32,
      vcpus: 1,
      autostart: true,
      kernel: KERNEL,
    },
  });
  client = world.client;
  logind = await FakeLogind.start(world.bus.address);
  world.onStop(() => logind.stop());
  const input = await FakeInputDaemon.start(world.bus.address);
  world.onStop(() => input.stop());
  daemon = await world.spawnVmDaemon();
  await waitFor('personal running', async () => (await state('personal')) === 'running', 30_000);
});
after(async () => {
  await world?.stop();
});

test(
  'vm-daemon SIGKILLed while the machine sleeps: the restarted daemon resumes the VMs paused for the sleep',
  { skip },
  async () => {
    await client.proxy(MGR, VM_MANAGER_PATH, MGR).Switch(vmPath('personal'), {});
    const pid = qemuPid(world.runDir, 'personal');
    const suspended = client
      .proxy(MGR, POWER_PATH, 'org.bulkhead.Power1')
      .Suspend({})
      .catch((e: unknown) => e);
    await logind.waitAsleep();
    assert.equal(await state('personal'), 'paused');
    await killDaemon();
    await suspended;
    logind.wake(); // nobody listens: the daemon that paused the VM is gone
    daemon = await world.spawnVmDaemon();
    assert.ok(processAlive(pid), 'the QEMU was stopped');
    assert.equal(qemuPid(world.runDir, 'personal'), pid, 'the VM was restarted, not resumed');
    await waitFor(
      `personal running again (it is ${await state('personal')})`,
      async () => (await state('personal')) === 'running',
      10_000,
    );
    // The person is back where they were (the seat is input-daemon's, locked across restarts).
    await waitFor('personal active again', async () => (await activeVm()) === vmPath('personal'), 5000);
  },
);

test(
  "a VM the person paused stays paused across vm-daemon's SIGKILL (only a sleep's pause is undone)",
  { skip },
  async () => {
    await client.proxy(MGR, vmPath('personal'), 'org.bulkhead.Vm1').Pause();
    assert.equal(await state('personal'), 'paused');
    await killDaemon();
    daemon = await world.spawnVmDaemon();
    // Give a wrong resume time to happen.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await state('personal'), 'paused');
  },
);
