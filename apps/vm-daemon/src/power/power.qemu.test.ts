/**
 * Issue 19 item 2, against the real daemons: vm-daemon and input-daemon (virtual seat) as their
 * own processes on a private dbus-daemon, two real QEMU (TCG) test guests, and fake-logind and
 * fake-UPower on that bus under the real names. Power1.Suspend locks the seat and pauses both
 * VMs (QMP stop; Vm1.State 'paused' — both QMP sockets of each QEMU are held by the daemons,
 * so the test cannot ask QEMU itself) before logind is asked to sleep; logind's
 * PrepareForSleep(false) resumes them; after unlocking, keys reach the active VM's serial log
 * and only its.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUS_NAMES, INPUT_PATH, POWER_PATH, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { unwrap, variant, type BusClient } from '@bulkhead/dbus';
import { waitFor } from '../testing/daemon-process';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuTestSkip } from '../testing/qemu-test-world';
import { FakeLogind, FakeUPower } from './testing/fake-system-services';

const MGR = 'org.bulkhead.VmManager1';
const skip = qemuTestSkip({ inputDaemon: true });

let world: QemuTestWorld;
let client: BusClient;
let logind: FakeLogind;
let upower: FakeUPower;
let runDir: string;

const vmDef = (id: string, slot: number) => ({
  id,
  name: id,
  slot,
  kind: 'personal',
  color: '#2a6fdb',
  memoryMiB: 32,
  vcpus: 1,
  autostart: true,
  kernel: KERNEL,
  append: `name=${id}`,
});
const state = (id: string) => client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State');
const power = () => client.proxy(MGR, POWER_PATH, 'org.bulkhead.Power1');
const powerProp = async (p: 'Battery' | 'Policy' | 'LastSuspend' | 'Suspending') =>
  client.get(MGR, POWER_PATH, 'org.bulkhead.Power1', p);
const serial = (id: string) => readFileSync(join(runDir, id, 'serial.log'), 'latin1');

before(async () => {
  if (skip) return;
  world = await QemuTestWorld.start('power-', {
    personal: vmDef('personal', 1),
    business: vmDef('business', 2),
  });
  ({ client, runDir } = world);
  const policy = join(world.root, 'power.json');
  writeFileSync(policy, JSON.stringify({ lid: 'lock', lowPercent: 20, criticalPercent: 5 }), { mode: 0o644 });
  logind = await FakeLogind.start(world.bus.address);
  world.onStop(() => logind.stop());
  upower = await FakeUPower.start(world.bus.address, { percentage: 57, onBattery: true });
  world.onStop(() => upower.stop());
  await world.spawnInputDaemon({ runDir: join(world.root, 'input-run') });
  await world.spawnVmDaemon({ args: ['--stop-vms-on-exit'], env: { BULKHEAD_POWER_POLICY: policy } });
  for (const id of ['personal', 'business'])
    await waitFor(`${id} running`, async () => (await state(id)) === 'running', 30_000);
  for (const id of ['personal', 'business'])
    await waitFor(`${id} READY`, () => serial(id).includes(`READY name=${id}`), 30_000);
});
after(async () => {
  await world?.stop();
});

test('Power1 shows the policy file in force and the battery UPower reports', { skip }, async () => {
  const p = unwrap(await powerProp('Policy')) as Record<string, unknown>;
  assert.equal(p.lid, 'lock');
  assert.equal(p.power_key, 'suspend');
  assert.equal(p.low_percent, 20);
  assert.equal(p.error, '');
  await waitFor(
    'battery read',
    async () => (unwrap(await powerProp('Battery')) as { percentage: number }).percentage === 57,
  );
  upower.set({ percentage: 15 });
  await waitFor('low', async () => (unwrap(await powerProp('Battery')) as { level: string }).level === 'low');
});

test(
  'Suspend pauses both VMs before sleeping; waking resumes them; the seat stays locked; keys reach only the active VM',
  { skip },
  async () => {
    await client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').Switch(vmPath('personal'), {});
    const progress: string[] = [];
    const unsubscribe = await client.subscribe(
      { sender: MGR, path: POWER_PATH, interface: 'org.bulkhead.Power1', member: 'SuspendProgress' },
      (m) => progress.push(String(m.body[0])),
    );
    const suspended = power().Suspend({});
    await logind.waitAsleep();
    assert.deepEqual(logind.requests, ['suspend']);
    assert.equal(await state('personal'), 'paused');
    assert.equal(await state('business'), 'paused');
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'Locked'), true);
    assert.equal(await powerProp('Suspending'), true);

    logind.wake();
    await suspended;
    assert.equal(await state('personal'), 'running');
    assert.equal(await state('business'), 'running');
    assert.equal(await state('personal'), 'running');
    assert.equal(await state('business'), 'running');
    const last = unwrap(await powerProp('LastSuspend')) as {
      outcome: string;
      reason: string;
      not_back: unknown[];
    };
    assert.equal(last.outcome, 'ok');
    assert.equal(last.reason, 'request');
    assert.deepEqual(last.not_back, []);
    await waitFor('progress signals', () => progress.includes('done'));
    assert.deepEqual(
      progress.filter((s, i) => progress.indexOf(s) === i),
      ['lock-seat', 'wait-switch', 'pause-vms', 'sleep', 'resume-vms', 'done'],
    );
    await unsubscribe();
    // The lock screen is up until the person unlocks; then a switch and typing reach that VM only.
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'Locked'), true);
    const input = client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
    await input.Unlock({ password: variant('s', 'virtual seat: no password') });
    await client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').Switch(vmPath('business'), {});
    const before = { personal: serial('personal').length, business: serial('business').length };
    // 'a' down and up (KEY_A = 30), each with SYN_REPORT.
    await input.InjectEvents('keyboard', [
      [1, 30, 1],
      [0, 0, 0],
      [1, 30, 0],
      [0, 0, 0],
    ]);
    await waitFor(
      'the key in business',
      () => /KEY up 1e/.test(serial('business').slice(before.business)),
      15_000,
    );
    assert.equal(serial('personal').slice(before.personal), '', 'nothing reached the other VM');
  },
);

test('a refused sleep leaves both VMs running and says why', { skip }, async () => {
  logind.refuseNext = 'There is already a shutdown or sleep operation in progress';
  await assert.rejects(power().Suspend({}), /sleep: .*already a shutdown or sleep operation/);
  assert.equal(await state('personal'), 'running');
  assert.equal(await state('business'), 'running');
  const last = unwrap(await powerProp('LastSuspend')) as { outcome: string; error: string };
  assert.equal(last.outcome, 'failed');
  assert.match(last.error, /^sleep: /);
});
