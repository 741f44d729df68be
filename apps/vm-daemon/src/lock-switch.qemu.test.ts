/**
 * Issue 14 (a real lock): while the seat is locked, VmManager1.Switch and SwitchToSlot to a VM are
 * refused with org.bulkhead.Error.Locked and change nothing — no VM boots, ActiveVm stays on the
 * switcher (the lock screen). The real vm-daemon and the real input-daemon (virtual seat) run as
 * their own processes on a private dbus-daemon, with real QEMU (TCG) test guests.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUS_NAMES, INPUT_PATH, isBulkheadError, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import {
  BusClient,
  connectBus,
  startPrivateBus,
  variant,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { spawnDaemon, waitFor, type DaemonProcess } from './testing/daemon-process';

const KERNEL = join(__dirname, '..', 'guest', 'build', 'bulkhead-guest.elf');
const INPUT_MAIN = join(__dirname, '..', '..', 'input-daemon', 'dist', 'main.js');
const MGR = 'org.bulkhead.VmManager1';
const skip = !existsSync(KERNEL)
  ? 'test guest not built'
  : !existsSync(INPUT_MAIN)
    ? 'input-daemon not built'
    : false;

let bus: PrivateBus;
let conn: MessageBus;
let client: BusClient;
let vmDaemon: DaemonProcess;
let inputDaemon: ChildProcess;
let root: string;
let runDir: string;

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
  root = mkdtempSync(join(tmpdir(), 'lock-switch-'));
  const configDir = join(root, 'vms');
  runDir = join(root, 'run');
  mkdirSync(configDir);
  writeFileSync(join(configDir, 'business.json'), JSON.stringify(vmDef('business', 2, true)));
  writeFileSync(join(configDir, 'spare.json'), JSON.stringify(vmDef('spare', 3, false)));
  bus = await startPrivateBus({ mode: 'open' });
  conn = await connectBus(bus.address);
  client = new BusClient(conn, 30_000);
  inputDaemon = spawn(
    process.execPath,
    [INPUT_MAIN, '--seat', 'virtual', '--run-dir', join(root, 'input-run')],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, BULKHEAD_BUS: bus.address },
    },
  );
  let log = '';
  inputDaemon.stderr!.on('data', (d) => (log += d));
  await waitFor('input-daemon ready', () => log.includes(' ready: '), 20_000);
  vmDaemon = await spawnDaemon({
    bus: bus.address,
    configDir,
    runDir,
    stateDir: join(root, 'state'),
    args: ['--stop-vms-on-exit'],
  });
  await waitFor('business running', async () => (await state('business')) === 'running', 30_000);
});

after(async () => {
  inputDaemon?.kill('SIGKILL');
  await vmDaemon?.stop();
  for (const id of ['business', 'spare']) {
    try {
      process.kill(Number(readFileSync(join(runDir, id, 'qemu.pid'), 'utf8')), 'SIGKILL');
    } catch {
      /* not running */
    }
  }
  conn?.disconnect();
  await bus?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
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
