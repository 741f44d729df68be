/**
 * vm-daemon end to end: the real daemon process (dist/main.js) on a private bus, real QEMU (TCG)
 * running the test guest, a FakeInputDaemon standing in for input-daemon.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BulkheadError, SWITCHER_PATH, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { variant, type BusClient, type PrivateBus } from '@bulkhead/dbus';
import { FakeInputDaemon } from './testing/fake-input-daemon';
import { spawnDaemon, waitFor, type DaemonProcess } from './testing/daemon-process';
import { decodePng, dominantColor } from './testing/png';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuPid } from './testing/qemu-test-world';

const COLORS: Record<string, string> = { personal: '#2a6fdb', business: '#e07b00', spare: '#1f9d55' };
const MGR = 'org.bulkhead.VmManager1';

let world: QemuTestWorld;
let bus: PrivateBus;
let client: BusClient;
let input: FakeInputDaemon;
let daemon: DaemonProcess;
let configDir: string;
let runDir: string;
let stateDir: string;

const vmDef = (id: string, slot: number, autostart: boolean) => ({
  id,
  name: id,
  slot,
  kind: 'personal',
  color: COLORS[id],
  memoryMiB: 32,
  vcpus: 1,
  autostart,
  kernel: KERNEL,
  append: `name=${id} color=${COLORS[id]}`,
});
const vmProp = (id: string, p: 'State' | 'StateReason' | 'LastError' | 'InputQmpSocket') =>
  client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', p);
const mgrProp = (p: 'ActiveVm' | 'LastSwitch' | 'ConfigErrors' | 'Switching') =>
  client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', p);
const manager = () => client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
const vm = (id: string) => client.proxy(MGR, vmPath(id), 'org.bulkhead.Vm1');
const pidOf = (id: string) => qemuPid(runDir, id);
const isNamed = (name: string) => (e: unknown) => e instanceof BulkheadError && e.errorName === name;

before(async () => {
  assert.ok(existsSync(KERNEL), `test guest not built: make -C apps/vm-daemon/guest (${KERNEL})`);
  world = await QemuTestWorld.start('vmd-e2e-', {
    personal: vmDef('personal', 1, true),
    business: vmDef('business', 2, true),
    spare: vmDef('spare', 3, false),
    'x-badcolor': { ...vmDef('spare', 5, false), id: 'badcolor', color: 'purple' },
    'y-dupslot': { ...vmDef('spare', 1, false), id: 'dupslot' },
  });
  ({ bus, client, configDir, runDir, stateDir } = world);
  input = await FakeInputDaemon.start(bus.address);
  world.onStop(() => input.stop());
  daemon = await spawnDaemon({ bus: bus.address, configDir, runDir, stateDir });
});
after(async () => {
  await daemon?.stop();
  await world?.stop();
});

test('autostart VMs start and reach running; the bad files are reported and the rest load', async () => {
  await waitFor(
    'personal and business running',
    async () =>
      (await vmProp('personal', 'State')) === 'running' && (await vmProp('business', 'State')) === 'running',
    20_000,
  );
  assert.equal(await vmProp('spare', 'State'), 'stopped');
  assert.equal(await vmProp('personal', 'InputQmpSocket'), join(runDir, 'personal', 'input-qmp.sock'));
  // Each running VM's input path is prepared for its first switch (Input1.Prepare), and only that.
  await waitFor(
    'Input1.Prepare for both running VMs',
    async () => input.calls.filter((c) => c.method === 'Prepare').length >= 2,
    10_000,
  );
  assert.deepEqual(
    input.calls
      .filter((c) => c.method === 'Prepare')
      .map((c) => [c.target, c.options.qmp_socket])
      .sort(),
    ['business', 'personal'].map((id) => [vmPath(id), join(runDir, id, 'input-qmp.sock')]),
  );
  const errors = (await mgrProp('ConfigErrors')) as Array<[string, string, string]>;
  assert.deepEqual(
    errors.map(([f, field]) => [f, field]),
    [
      [join(configDir, 'x-badcolor.json'), 'color'],
      [join(configDir, 'y-dupslot.json'), 'slot'],
    ],
  );
  assert.match(errors[1][2], /slot 1 is already used by personal\.json/);
  assert.match((await vmProp('badcolor', 'LastError')) as string, /x-badcolor\.json: color: must be #rrggbb/);
});

test('the screenshot of each VM shows its own color', async () => {
  for (const id of ['personal', 'business']) {
    await waitFor(
      `${id} guest READY`,
      () => readFileSync(join(runDir, id, 'serial.log'), 'utf8').includes(`READY name=${id}`),
      20_000,
    );
    const png = await vm(id).Screenshot({});
    const img = decodePng(png);
    assert.ok(img.width >= 320, `width ${img.width}`);
    assert.equal(dominantColor(img), COLORS[id], `${id} screenshot`);
  }
});

test("Switch moves ActiveVm, focuses input on the VM's input QMP socket and times each step", async () => {
  await manager().Switch(vmPath('personal'), {});
  assert.equal(await mgrProp('ActiveVm'), vmPath('personal'));
  const last = (await mgrProp('LastSwitch')) as Record<string, unknown>;
  assert.equal(last.outcome, 'ok');
  assert.equal(last.from, SWITCHER_PATH);
  assert.equal(last.target, vmPath('personal'));
  const steps = last.steps as Array<[string, bigint]>;
  assert.deepEqual(
    steps.map(([n]) => n),
    ['starting-vm', 'freeze-input', 'move-gpu', 'focus-input', 'move-usb', 'publish'],
  );
  assert.ok(steps.every(([, us]) => typeof us === 'bigint'));
  assert.equal(typeof last.duration_usec, 'bigint');
  const focus = input.calls.filter((c) => c.method === 'SetFocus').at(-1)!;
  assert.equal(focus.target, vmPath('personal'));
  assert.deepEqual(focus.options, { qmp_socket: join(runDir, 'personal', 'input-qmp.sock') });
  assert.equal(input.calls.at(-2)!.method, 'Freeze');
  await manager().SwitchToSlot(2, {});
  assert.equal(await mgrProp('ActiveVm'), vmPath('business'));
});

test('a failing focus-input rolls back to the previous VM with a named error', async () => {
  input.failSetFocusTo = vmPath('personal');
  await assert.rejects(manager().SwitchToSlot(1, {}), isNamed('BackendFailed'));
  input.failSetFocusTo = null;
  assert.equal(await mgrProp('ActiveVm'), vmPath('business'));
  assert.equal(input.focused, vmPath('business'));
  const last = (await mgrProp('LastSwitch')) as Record<string, unknown>;
  assert.equal(last.outcome, 'rolled-back');
  assert.equal(last.error, 'org.bulkhead.Error.BackendFailed');
  assert.deepEqual((last.steps as Array<[string, bigint]>).map(([n]) => n).slice(-2), [
    'focus-input',
    'rollback',
  ]);
});

test('switching to a stopped VM starts it; requests during it: the last one runs next, the one it replaced gets Superseded', async () => {
  const first = manager().SwitchToSlot(3, {});
  await waitFor('Switching', async () => (await mgrProp('Switching')) === true, 5000, 5);
  const replaced = manager().SwitchToSlot(1, {});
  const pending = manager().SwitchToSlot(3, {});
  await assert.rejects(replaced, isNamed('Superseded'));
  await first;
  await pending;
  assert.equal(await vmProp('spare', 'State'), 'running');
  assert.equal(await mgrProp('ActiveVm'), vmPath('spare'));
});

test("killing the active VM's QEMU marks it crashed with a reason and focus returns to the switcher", async () => {
  process.kill(pidOf('spare'), 'SIGKILL');
  await waitFor('spare crashed', async () => (await vmProp('spare', 'State')) === 'crashed', 5000, 10);
  assert.match((await vmProp('spare', 'StateReason')) as string, /qemu exited with signal SIGKILL/);
  assert.equal(await mgrProp('ActiveVm'), SWITCHER_PATH);
  await waitFor('input focus on the switcher', () => input.focused === SWITCHER_PATH, 5000);
});

test('an edited config dir is picked up (fs.watch) and Reload counts the valid files', async () => {
  writeFileSync(
    join(configDir, 'z-extra.json'),
    JSON.stringify({ ...vmDef('spare', 4, false), id: 'extra', name: 'Extra' }),
  );
  await waitFor(
    'extra VM on the bus',
    async () => (await client.get(MGR, vmPath('extra'), 'org.bulkhead.Vm1', 'Name')) === 'Extra',
    5000,
    50,
  );
  assert.equal(await manager().Reload(), 4);
});

test("USB: attaching an absent host device fails with QEMU's words; the list asked of QEMU is empty", async () => {
  await assert.rejects(
    vm('personal').AttachUsbDevice(1, 5, {}),
    (e: unknown) => isNamed('BackendFailed')(e) && /usb/i.test((e as Error).message),
  );
  assert.deepEqual(await vm('personal').ListUsbDevices(), []);
  await assert.rejects(vm('personal').DetachUsbDevice('usbhost-b1-a5'), isNamed('NoSuchDevice'));
});

test('Pause and Resume drive QEMU; Stop kills a guest that ignores ACPI after the timeout; a crashed VM starts again', async () => {
  await vm('personal').Pause();
  assert.equal(await vmProp('personal', 'State'), 'paused');
  await vm('personal').Resume();
  assert.equal(await vmProp('personal', 'State'), 'running');
  await vm('spare').Start({});
  assert.equal(await vmProp('spare', 'State'), 'running');
  await vm('spare').Stop({ timeout_ms: variant('u', 300) });
  assert.equal(await vmProp('spare', 'State'), 'stopped');
  assert.match((await vmProp('spare', 'StateReason')) as string, /did not power off in time/);
  await assert.rejects(vm('spare').Stop({}), isNamed('InvalidState'));
  await assert.rejects(vm('spare').Stop({ timeout: variant('u', 1) }), isNamed('InvalidArgument'));
});

test('a restarted vm-daemon re-adopts the running VMs without restarting them', async () => {
  const pids = { personal: pidOf('personal'), business: pidOf('business') };
  await manager().SwitchToSlot(2, {});
  await daemon.stop();
  for (const p of Object.values(pids)) process.kill(p, 0); // still alive
  daemon = await spawnDaemon({ bus: bus.address, configDir, runDir, stateDir });
  for (const id of ['personal', 'business'] as const) {
    assert.equal(await vmProp(id, 'State'), 'running');
    assert.match((await vmProp(id, 'StateReason')) as string, /re-adopted/);
    assert.equal(pidOf(id), pids[id]);
  }
  assert.equal(
    await mgrProp('ActiveVm'),
    vmPath('business'),
    'the active VM survives the restart (state file)',
  );
  assert.equal(dominantColor(decodePng(await vm('business').Screenshot({}))), COLORS.business);
  // An adopted VM is still supervised: its death is noticed through QMP and the pid.
  process.kill(pids.business, 'SIGKILL');
  await waitFor(
    'adopted business crashed',
    async () => (await vmProp('business', 'State')) === 'crashed',
    5000,
    10,
  );
  assert.match((await vmProp('business', 'StateReason')) as string, /adopted\) is gone/);
  assert.equal(await mgrProp('ActiveVm'), SWITCHER_PATH);
});
