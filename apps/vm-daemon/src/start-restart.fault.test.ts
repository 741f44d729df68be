/**
 * vm-daemon SIGKILLed while a VM's Start waits for its QEMU (pid file written, QMP not yet
 * greeting: QEMU still initialising — on a loaded 2-core machine under TCG, or with a GPU to set
 * up, that takes seconds). The restarted daemon must find that QEMU and supervise it (the VM is
 * shown running, with the same pid), not show the VM stopped while its QEMU runs on unsupervised —
 * where the next Start (autostart, a switch) would run a second QEMU beside the first. The slow
 * initialisation is QEMU stopped (SIGSTOP) for 4 s, as long as a slow start keeps it from its
 * main loop.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { vmPath } from '@bulkhead/contract';
import type { BusClient } from '@bulkhead/dbus';
import { FakeInputDaemon } from './testing/fake-input-daemon';
import { processAlive, waitFor, type DaemonProcess } from './testing/daemon-process';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuPid, qemuTestSkip } from './testing/qemu-test-world';

const MGR = 'org.bulkhead.VmManager1';
const skip = qemuTestSkip();

let world: QemuTestWorld;
let client: BusClient;
let daemon: DaemonProcess;
let stoppedPid = 0;

const state = (id: string) => client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State') as Promise<string>;

before(async () => {
  if (skip) return;
  world = await QemuTestWorld.start('start-kill-', {
    alpha: { id: 'alpha', slot: 1, color: '#2a6fdb', memoryMiB: 32, vcpus: 1, kernel: KERNEL },
  });
  client = world.client;
  const input = await FakeInputDaemon.start(world.bus.address);
  world.onStop(() => input.stop());
  daemon = await world.spawnVmDaemon();
});
after(async () => {
  if (stoppedPid) process.kill(stoppedPid, 'SIGCONT');
  await world?.stop();
});

test(
  "vm-daemon SIGKILLed during a VM's Start, its QEMU slow to answer: the restarted daemon supervises that QEMU, shown running",
  { skip },
  async () => {
    const starting = client
      .proxy(MGR, vmPath('alpha'), 'org.bulkhead.Vm1')
      .Start({})
      .catch((e: unknown) => e);
    const pidFile = join(world.runDir, 'alpha', 'qemu.pid');
    const pid = await waitFor(
      'the QEMU pid file',
      () => (existsSync(pidFile) ? qemuPid(world.runDir, 'alpha') : 0),
      15_000,
      5,
    );
    process.kill(pid, 'SIGSTOP');
    stoppedPid = pid;
    const exited = new Promise((r) => daemon.child.once('exit', r));
    daemon.child.kill('SIGKILL');
    await exited;
    await starting;
    // QEMU's initialisation goes on 4 s later, while the new daemon starts.
    const cont = setTimeout(() => {
      process.kill(pid, 'SIGCONT');
      stoppedPid = 0;
    }, 4000);
    try {
      daemon = await world.spawnVmDaemon();
    } finally {
      await new Promise((r) => setTimeout(r, 4500));
      clearTimeout(cont);
    }
    assert.ok(processAlive(pid), 'the QEMU is gone');
    assert.equal(
      await state('alpha'),
      'running',
      "alpha's QEMU runs, but vm-daemon does not show it running",
    );
    assert.equal(qemuPid(world.runDir, 'alpha'), pid);
  },
);
