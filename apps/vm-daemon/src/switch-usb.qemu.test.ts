/**
 * Issue 17 item 2: follow-focus USB devices move INSIDE the switch (move-usb asks usb-daemon and
 * waits), each device is a sub-step in LastSwitch, and a later step that fails gives them back.
 * The real vm-daemon (its own process) with two real QEMU (TCG) test guests, a FakeInputDaemon
 * and a FakeUsbDaemon (no USB device exists on the test host), on a private dbus-daemon. The
 * switch is stopped right after move-usb by vm-daemon's test gate, the target's QEMU is
 * SIGKILLed there, and the switch goes on: publish fails, the devices are back on the old VM.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BulkheadError, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { unwrap, type BusClient } from '@bulkhead/dbus';
import { FakeInputDaemon } from './testing/fake-input-daemon';
import { FakeUsbDaemon } from './testing/fake-usb-daemon';
import { waitFor } from './testing/daemon-process';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuPid } from './testing/qemu-test-world';

const MGR = 'org.bulkhead.VmManager1';
const ALPHA = vmPath('alpha');
const BETA = vmPath('beta');

let world: QemuTestWorld;
let client: BusClient;
let input: FakeInputDaemon;
let usb: FakeUsbDaemon;
let runDir: string;
let gate: string;

const mgr = () => client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
const mgrProp = (p: 'ActiveVm' | 'LastSwitch') => client.get(MGR, VM_MANAGER_PATH, MGR, p);
const pidOf = (id: string) => qemuPid(runDir, id);

before(async () => {
  assert.ok(existsSync(KERNEL), `test guest not built: make -C apps/vm-daemon/guest (${KERNEL})`);
  world = await QemuTestWorld.start(
    'switch-usb-',
    Object.fromEntries(
      ['alpha', 'beta'].map((id, i) => [
        id,
        { id, slot: i + 1, color: '#2a6fdb', memoryMiB: 32, autostart: true, kernel: KERNEL },
      ]),
    ),
  );
  ({ client, runDir } = world);
  gate = join(world.root, 'gate');
  mkdirSync(gate);
  const bus = world.bus;
  input = await FakeInputDaemon.start(bus.address);
  world.onStop(() => input.stop());
  // 'stick' is on alpha already; 'cam' waits in the Control Domain.
  usb = await FakeUsbDaemon.start(bus.address, { stick: ALPHA, cam: '/' });
  world.onStop(() => usb.stop());
  await world.spawnVmDaemon({ env: { BULKHEAD_TEST_SWITCH_GATE: gate } });
  for (const id of ['alpha', 'beta'])
    await waitFor(
      `${id} running`,
      async () => (await client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State')) === 'running',
      20_000,
    );
});

after(async () => {
  await world?.stop();
});

test('move-usb moves the follow-focus devices inside the switch, one sub-step per device', async () => {
  await mgr().Switch(ALPHA, {});
  assert.equal(usb.holders.get('cam'), ALPHA);
  assert.equal(usb.holders.get('stick'), ALPHA);
  const last = unwrap(await mgrProp('LastSwitch')) as { steps: Array<[string, bigint]>; skipped: string[] };
  const names = last.steps.map(([n]) => n);
  // Only what moved: 'stick' was on alpha already.
  assert.deepEqual(names.slice(names.indexOf('move-usb'), names.indexOf('publish')), [
    'move-usb',
    'usb-move:cam',
  ]);
  assert.ok(!last.skipped.includes('move-usb'));
});

test('the target killed after move-usb: the switch rolls back and the devices are back on the old VM', async () => {
  writeFileSync(join(gate, 'hold-after-move-usb'), '');
  const switching = mgr().Switch(BETA, {});
  const outcome = switching.then(
    () => null,
    (e: unknown) => e,
  );
  await waitFor('the switch at move-usb', () => existsSync(join(gate, 'at-move-usb')), 20_000);
  assert.equal(usb.holders.get('cam'), BETA, 'moved before the switch goes on');
  assert.equal(usb.holders.get('stick'), BETA);
  process.kill(pidOf('beta'), 'SIGKILL');
  await waitFor(
    'beta crashed',
    async () => (await client.get(MGR, BETA, 'org.bulkhead.Vm1', 'State')) === 'crashed',
    10_000,
  );
  rmSync(join(gate, 'hold-after-move-usb'));
  const err = await outcome;
  assert.ok(err instanceof BulkheadError && err.errorName === 'BackendFailed', String(err));
  assert.equal(usb.holders.get('cam'), ALPHA);
  assert.equal(usb.holders.get('stick'), ALPHA);
  assert.match(usb.calls.at(-1)!, /^ReturnDevices /);
  assert.equal(await mgrProp('ActiveVm'), ALPHA);
  assert.equal(input.focused, ALPHA);
  const last = unwrap(await mgrProp('LastSwitch')) as { outcome: string; steps: Array<[string, bigint]> };
  assert.equal(last.outcome, 'rolled-back');
  const names = last.steps.map(([n]) => n);
  for (const s of [
    'usb-move:cam',
    'usb-move:stick',
    'rollback:usb-return:cam',
    'rollback:usb-return:stick',
    'rollback',
  ])
    assert.ok(names.includes(s), `${s} in LastSwitch.steps: ${names.join(' ')}`);
});
