/**
 * Issue 19: "a suspend requested in the middle of a switch waits for the switch". The real
 * vm-daemon process with its real switch transaction and two real QEMU (TCG) test guests; the
 * switch is held in the middle (input-daemon is a FakeInputDaemon whose SetFocus waits for the
 * test), logind and UPower are fakes on the private bus under their real names. While the switch
 * is held, Power1.Suspend may lock the seat but pauses no VM and does not ask logind to sleep;
 * once the switch finishes, the VMs are paused, then logind is asked; waking resumes them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POWER_PATH, VM_MANAGER_PATH, vmPath, type CallContext, type VariantDict } from '@bulkhead/contract';
import {
  BusClient,
  connectBus,
  startPrivateBus,
  unwrap,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { FakeInputDaemon } from '../testing/fake-input-daemon';
import { spawnDaemon, waitFor, type DaemonProcess } from '../testing/daemon-process';
import { FakeLogind, FakeUPower } from './testing/fake-system-services';

const KERNEL = join(__dirname, '..', '..', 'guest', 'build', 'bulkhead-guest.elf');
const MGR = 'org.bulkhead.VmManager1';
const skip = existsSync(KERNEL) ? false : 'test guest not built';

let bus: PrivateBus;
let conn: MessageBus;
let client: BusClient;
let input: FakeInputDaemon;
let logind: FakeLogind;
let upower: FakeUPower;
let daemon: DaemonProcess;
let root: string;
let runDir: string;
/** Set while a test holds the switch: SetFocus waits on it. */
let holdFocus: Promise<void> | null = null;

const state = (id: string) => client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State') as Promise<string>;
const pidOf = (id: string) => Number(readFileSync(join(runDir, id, 'qemu.pid'), 'utf8'));

before(async () => {
  if (skip) return;
  root = mkdtempSync(join(tmpdir(), 'power-switch-'));
  const configDir = join(root, 'vms');
  runDir = join(root, 'run');
  mkdirSync(configDir);
  ['personal', 'business'].forEach((id, i) =>
    writeFileSync(
      join(configDir, `${id}.json`),
      JSON.stringify({ id, slot: i + 1, color: '#2a6fdb', memoryMiB: 32, autostart: true, kernel: KERNEL }),
    ),
  );
  const policy = join(root, 'power.json');
  writeFileSync(policy, JSON.stringify({ powerKey: 'suspend' }), { mode: 0o644 });
  bus = await startPrivateBus({ mode: 'open' });
  conn = await connectBus(bus.address);
  client = new BusClient(conn, 30_000);
  logind = await FakeLogind.start(bus.address);
  upower = await FakeUPower.start(bus.address, { percentage: 60, onBattery: true });
  input = await FakeInputDaemon.start(bus.address);
  const setFocus = input.SetFocus.bind(input);
  Object.assign(input, {
    SetFocus: async (ctx: CallContext, target: string, o: VariantDict) => {
      if (holdFocus) await holdFocus;
      return setFocus(ctx, target, o);
    },
  });
  daemon = await spawnDaemon({
    bus: bus.address,
    configDir,
    runDir,
    stateDir: join(root, 'state'),
    args: ['--stop-vms-on-exit'],
    env: { BULKHEAD_POWER_POLICY: policy },
  });
  await waitFor(
    'both VMs running',
    async () => (await state('personal')) === 'running' && (await state('business')) === 'running',
    30_000,
  );
});

after(async () => {
  await daemon?.stop();
  for (const id of ['personal', 'business']) {
    try {
      process.kill(pidOf(id), 'SIGKILL');
    } catch {
      /* not running */
    }
  }
  input?.stop();
  logind?.stop();
  upower?.stop();
  conn?.disconnect();
  await bus?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

test(
  'Suspend during a switch waits for the switch before pausing a VM or asking logind',
  { skip },
  async () => {
    const progress: string[] = [];
    const unsubscribe = await client.subscribe(
      { sender: MGR, path: POWER_PATH, interface: 'org.bulkhead.Power1', member: 'SuspendProgress' },
      (msg) => progress.push(String(msg.body[0])),
    );
    let release!: () => void;
    holdFocus = new Promise<void>((r) => (release = r));
    const switching = client
      .proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1')
      .Switch(vmPath('business'), {});
    await waitFor('the switch held at focus-input', async () =>
      input.calls.some((c) => c.method === 'Freeze'),
    );
    assert.equal(await client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'Switching'), true);

    const suspended = client.proxy(MGR, POWER_PATH, 'org.bulkhead.Power1').Suspend({});
    await waitFor('the suspend waiting for the switch', async () => progress.includes('wait-switch'));
    // Held for a while: nothing is paused and logind is not asked while the switch runs.
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(logind.requests, [], 'logind asked to sleep under a running switch');
    assert.equal(await state('personal'), 'running');
    assert.equal(await state('business'), 'running');
    assert.ok(!progress.includes('pause-vms'), `progress: ${progress.join(' ')}`);

    holdFocus = null;
    release();
    await switching;
    await logind.waitAsleep();
    assert.deepEqual(logind.requests, ['suspend']);
    assert.equal(
      await client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm'),
      vmPath('business'),
      'the switch finished where it was going, and the VM paused for the sleep stayed the active one',
    );
    assert.equal(await state('personal'), 'paused');
    assert.equal(await state('business'), 'paused');

    logind.wake();
    await suspended;
    assert.equal(await state('personal'), 'running');
    assert.equal(await state('business'), 'running');
    assert.equal(
      await client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm'),
      vmPath('business'),
      'still the active VM after waking',
    );
    assert.equal(
      input.calls.filter((c) => c.method === 'SetFocus').at(-1)?.target,
      vmPath('business'),
      "input-daemon's focus never left it",
    );
    const last = unwrap(await client.get(MGR, POWER_PATH, 'org.bulkhead.Power1', 'LastSuspend')) as {
      outcome: string;
      steps: Array<[string, string, string]>;
    };
    assert.equal(last.outcome, 'ok');
    assert.deepEqual(
      last.steps.find(([s]) => s === 'wait-switch'),
      ['wait-switch', 'ok', 'waited for the running switch'],
    );
    await unsubscribe();
  },
);
