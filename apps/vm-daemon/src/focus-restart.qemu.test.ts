/**
 * Issue 12, items 1 and 2, end to end: the real vm-daemon (dist/main.js) and the real input-daemon
 * (apps/input-daemon/dist/main.js, virtual seat, QMP input path) as their own processes on a
 * private dbus-daemon, real QEMU (TCG) test guests whose serial console prints every key press and
 * release. input-daemon is SIGKILLed by pid and started again, as systemd's Restart=always does.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUS_NAMES, INPUT_PATH, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import type { BusClient } from '@bulkhead/dbus';
import { waitFor } from './testing/daemon-process';
import {
  TEST_GUEST_KERNEL as KERNEL,
  QemuTestWorld,
  qemuTestSkip,
  type InputDaemonProcess,
} from './testing/qemu-test-world';

const MGR = 'org.bulkhead.VmManager1';
const COLORS: Record<string, string> = { personal: '#2a6fdb', business: '#e07b00', spare: '#1f9d55' };
const skip = qemuTestSkip({ inputDaemon: true });

let world: QemuTestWorld;
let client: BusClient;
let runDir: string;
let inputRunDir: string;

type InputDaemon = InputDaemonProcess;
let inputDaemon: InputDaemon | null = null;

const startInputDaemon = (): Promise<InputDaemon> =>
  world.spawnInputDaemon({ runDir: inputRunDir, env: { BULKHEAD_LOG_LEVEL: 'info' } });
const killInputDaemon = (d: InputDaemon): Promise<void> => d.kill();

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
const serial = (id: string) => {
  const f = join(runDir, id, 'serial.log');
  return existsSync(f) ? readFileSync(f, 'utf8') : '';
};
const keyLines = (id: string) =>
  serial(id)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('KEY '));
const focusedTarget = () => client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'FocusedTarget');
const activeVm = () => client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm');
const manager = () => client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
const inject = (events: Array<[number, number, number]>) =>
  client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1').InjectEvents('keyboard', events);
const EV_KEY = 1;
const SYN: [number, number, number] = [0, 0, 0];
const press = (code: number): Array<[number, number, number]> => [[EV_KEY, code, 1], SYN];
const release = (code: number): Array<[number, number, number]> => [[EV_KEY, code, 0], SYN];
const J = 36; // scancode 24 in the guest
const K = 37; // 25
const L = 38; // 26

before(async () => {
  if (skip) return;
  world = await QemuTestWorld.start('focus-restart-', {
    personal: vmDef('personal', 1, true),
    business: vmDef('business', 2, true),
    spare: vmDef('spare', 3, false),
  });
  ({ client, runDir } = world);
  inputRunDir = join(world.root, 'input-run');
  inputDaemon = await startInputDaemon();
  await world.spawnVmDaemon({ args: ['--stop-vms-on-exit'] });
  for (const id of ['personal', 'business'])
    await waitFor(`${id} guest READY`, () => serial(id).includes(`READY name=${id}`), 30_000);
});
after(async () => {
  await world?.stop();
});

test(
  'input-daemon SIGKILLed after a switch and restarted: the new one is focused on ActiveVm and a typed key reaches that VM only',
  { skip },
  async () => {
    await manager().SwitchToSlot(2, {});
    assert.equal(await focusedTarget(), vmPath('business'));
    await killInputDaemon(inputDaemon!);
    inputDaemon = await startInputDaemon();
    await waitFor(
      `the restarted input-daemon focused on business (vm-daemon re-asserts SetFocus)`,
      async () => (await focusedTarget()) === vmPath('business'),
      15_000,
    );
    await inject([...press(J), ...release(J)]);
    await waitFor('business printed the j', () => keyLines('business').includes('KEY up 24'), 15_000);
    assert.deepEqual(keyLines('business'), ['KEY down 24', 'KEY up 24']);
    assert.deepEqual(keyLines('personal'), [], 'personal got a key typed while business was active');
  },
);

test(
  'a key held in a VM when input-daemon dies is released there by the next input-daemon, even when another VM has the focus by then',
  { skip },
  async () => {
    await inject(press(K));
    await waitFor('business saw k go down', () => keyLines('business').includes('KEY down 25'), 15_000);
    await killInputDaemon(inputDaemon!);
    // While input-daemon is down the person switches to personal (vm-daemon skips the input steps).
    await manager().SwitchToSlot(1, {});
    inputDaemon = await startInputDaemon();
    await waitFor('business saw k go up', () => keyLines('business').includes('KEY up 25'), 15_000);
    await waitFor(
      'the restarted input-daemon focused on personal',
      async () => (await focusedTarget()) === vmPath('personal'),
      15_000,
    );
    await inject([...press(L), ...release(L)]);
    await waitFor('personal printed the l', () => keyLines('personal').includes('KEY up 26'), 15_000);
    assert.deepEqual(keyLines('personal'), ['KEY down 26', 'KEY up 26']);
    assert.deepEqual(keyLines('business'), ['KEY down 24', 'KEY up 24', 'KEY down 25', 'KEY up 25']);
  },
);

test(
  'input-daemon SIGKILLed in the middle of a switch (while the target VM boots): the switch completes and the restarted daemon is focused on the new ActiveVm',
  { skip },
  async () => {
    const killed = new Promise<void>((resolve, reject) => {
      void client
        .subscribe({ interface: 'org.bulkhead.VmManager1', member: 'SwitchProgress' }, (m) => {
          if (m.body[1] === 'starting-vm' && inputDaemon) {
            const d = inputDaemon;
            inputDaemon = null;
            killInputDaemon(d).then(resolve, reject);
          }
        })
        .catch(reject);
    });
    await manager().SwitchToSlot(3, {});
    await killed;
    assert.equal(await activeVm(), vmPath('spare'));
    inputDaemon = await startInputDaemon();
    await waitFor(
      'the restarted input-daemon focused on spare',
      async () => (await focusedTarget()) === vmPath('spare'),
      15_000,
    );
    await waitFor('spare READY', () => serial('spare').includes('READY name=spare'), 30_000);
    const personalBefore = keyLines('personal').length;
    await inject([...press(J), ...release(J)]);
    await waitFor('spare printed the j', () => keyLines('spare').includes('KEY up 24'), 15_000);
    assert.deepEqual(keyLines('spare'), ['KEY down 24', 'KEY up 24']);
    assert.equal(keyLines('personal').length, personalBefore, 'personal got a key after the switch');
  },
);
