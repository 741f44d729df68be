/**
 * Issue 17 item 1, end to end: a person presses Ctrl+1, Ctrl+2, Ctrl+1 while one switch runs
 * (held after freeze-input by vm-daemon's test gate: a GPU moving takes seconds) and types X.
 * The last request wins: the screen and the keyboard end on slot 1, Ctrl+2's request is answered
 * Superseded (once), no press is lost, and X reaches VM 1's guest only. The real vm-daemon and the
 * real input-daemon (virtual seat) as their own processes, real QEMU (TCG) test guests, a private
 * dbus-daemon.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUS_NAMES, INPUT_PATH, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { unwrap, type BusClient } from '@bulkhead/dbus';
import { waitFor } from './testing/daemon-process';
import { TEST_GUEST_KERNEL as KERNEL, QemuTestWorld, qemuTestSkip } from './testing/qemu-test-world';

const MGR = 'org.bulkhead.VmManager1';
const ONE = vmPath('one');
const TWO = vmPath('two');
const skip = qemuTestSkip({ inputDaemon: true });

let world: QemuTestWorld;
let client: BusClient;
let inputLog = '';
let runDir: string;
let gate: string;
const progress: string[] = [];

const EV_KEY = 1;
const SYN: [number, number, number] = [0, 0, 0];
const CTRL = 29;
const X = 45; // scancode 2d in the guest
const chord = (k: number): Array<[number, number, number]> => [
  [EV_KEY, CTRL, 1],
  SYN,
  [EV_KEY, k, 1],
  SYN,
  [EV_KEY, k, 0],
  SYN,
  [EV_KEY, CTRL, 0],
  SYN,
];
const KEY_1 = 2;
const KEY_2 = 3;
const inject = (events: Array<[number, number, number]>) =>
  client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1').InjectEvents('keyboard', events);
const mgrProp = (p: 'ActiveVm' | 'Switching' | 'LastSwitch') => client.get(MGR, VM_MANAGER_PATH, MGR, p);
const serial = (id: string) => {
  const f = join(runDir, id, 'serial.log');
  return existsSync(f) ? readFileSync(f, 'utf8') : '';
};

before(async () => {
  if (skip) return;
  const guest = (id: string, slot: number) => ({
    id,
    slot,
    color: '#2a6fdb',
    memoryMiB: 32,
    autostart: true,
    kernel: KERNEL,
    append: `name=${id}`,
  });
  world = await QemuTestWorld.start('hotkey-queue-', { one: guest('one', 1), two: guest('two', 2) });
  ({ client, runDir } = world);
  gate = join(world.root, 'gate');
  mkdirSync(gate);
  await world.spawnInputDaemon({
    runDir: join(world.root, 'input-run'),
    onLog: (text) => (inputLog += text),
  });
  await world.spawnVmDaemon({ args: ['--stop-vms-on-exit'], env: { BULKHEAD_TEST_SWITCH_GATE: gate } });
  for (const id of ['one', 'two'])
    await waitFor(`${id} guest READY`, () => serial(id).includes(`READY name=${id}`), 30_000);
  await client.onSignal(
    MGR,
    { path: VM_MANAGER_PATH },
    'org.bulkhead.VmManager1',
    'SwitchProgress',
    ([target, step]) => progress.push(`${step} ${target}`),
  );
});
after(async () => {
  await world?.stop();
});

test(
  'Ctrl+1, Ctrl+2, Ctrl+1 within one running switch: ends on slot 1, one Superseded, X typed after reaches VM 1 only',
  { skip },
  async () => {
    await client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').SwitchToSlot(2, {});
    assert.equal(await mgrProp('ActiveVm'), TWO);

    writeFileSync(join(gate, 'hold-after-freeze-input'), '');
    await inject(chord(KEY_1));
    await waitFor(
      'the switch to VM 1 held after freeze-input',
      () => existsSync(join(gate, 'at-freeze-input')),
      10_000,
    );
    assert.equal(readFileSync(join(gate, 'at-freeze-input'), 'utf8'), ONE);
    await inject(chord(KEY_2));
    await waitFor('Ctrl+2 pending', () => progress.includes(`pending ${TWO}`), 10_000);
    await inject(chord(KEY_1));
    await waitFor('Ctrl+2 replaced by Ctrl+1', () => progress.includes(`superseded ${TWO}`), 10_000);
    await inject([[EV_KEY, X, 1], SYN, [EV_KEY, X, 0], SYN]);
    rmSync(join(gate, 'hold-after-freeze-input'));

    // The running switch ends on VM 1, then the last request (VM 1 again) runs.
    await waitFor(
      'the last request ran',
      async () => {
        const last = unwrap(await mgrProp('LastSwitch')) as { from: string; target: string };
        return last.from === ONE && last.target === ONE && (await mgrProp('Switching')) === false;
      },
      20_000,
    );
    assert.equal(await mgrProp('ActiveVm'), ONE);
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'FocusedTarget'), ONE);
    await waitFor('X in VM 1', () => serial('one').includes('KEY down 2d'), 10_000);
    assert.ok(!serial('two').includes('KEY down 2d'), 'X reached VM 2');
    assert.equal(inputLog.match(/SwitchToSlot\(\d\) superseded/g)?.length, 1, inputLog);
    assert.match(inputLog, /Ctrl\+2 → SwitchToSlot\(2\) superseded/);
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'LastHotkeyError'), '');
  },
);

const tap = (k: number): Array<[number, number, number]> => [[EV_KEY, k, 1], SYN, [EV_KEY, k, 0], SYN];
/** Serial lines of key presses a guest printed, from `after` on. */
const downs = (id: string) => serial(id).match(/KEY down [0-9a-f]+/g) ?? [];
/** Holds the running switch after `step` (vm-daemon's test gate); resolves when it is there. */
function holdAfter(step: string): () => void {
  rmSync(join(gate, `at-${step}`), { force: true });
  writeFileSync(join(gate, `hold-after-${step}`), '');
  return () => rmSync(join(gate, `hold-after-${step}`));
}
async function switchedTo(target: string): Promise<void> {
  await waitFor(
    `the switches ended on ${target}`,
    async () =>
      (await mgrProp('Switching')) === false &&
      (await mgrProp('ActiveVm')) === target &&
      (await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'FocusedTarget')) === target,
    20_000,
  );
}

test(
  'a click starts a switch to VM 1, Ctrl+2 is pressed before that switch froze input, Q typed: Q reaches VM 2, never VM 1',
  { skip },
  async () => {
    const mgr = client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
    await mgr.SwitchToSlot(0, {});
    const Q = 16; // scancode 10
    const oneBefore = downs('one').length;
    const twoBefore = downs('two').length;
    const pendings = () => progress.filter((p) => p === `pending ${TWO}`).length;
    const pendingBefore = pendings();
    const release = holdAfter('starting-vm');
    const click = mgr.SwitchToSlot(1, {}); // the person clicks VM 1's tile
    await waitFor(
      'the click held before freeze-input',
      () => existsSync(join(gate, 'at-starting-vm')),
      10_000,
    );
    await inject([...chord(KEY_2), ...tap(Q)]);
    await waitFor('Ctrl+2 pending', () => pendings() > pendingBefore, 10_000);
    release();
    await click;
    await switchedTo(TWO);
    await waitFor('Q in VM 2', () => downs('two').length > twoBefore, 10_000);
    assert.deepEqual(downs('two').slice(twoBefore), ['KEY down 10']);
    assert.deepEqual(downs('one').slice(oneBefore), [], 'VM 1 (the click) got a key typed after Ctrl+2');
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'LastHotkeyError'), '');
  },
);

test(
  '"Ctrl+1 w" while the switch takes 3 s (held after freeze-input, beyond the old 2 s hold bound): w reaches VM 1',
  { skip },
  async () => {
    const W = 17; // scancode 11
    const oneBefore = downs('one').length;
    const twoBefore = downs('two').length;
    const release = holdAfter('freeze-input');
    await inject([...chord(KEY_1), ...tap(W)]);
    await waitFor(
      'the switch held after freeze-input',
      () => existsSync(join(gate, 'at-freeze-input')),
      10_000,
    );
    await new Promise((r) => setTimeout(r, 3000));
    release();
    await switchedTo(ONE);
    await waitFor('w in VM 1', () => downs('one').length > oneBefore, 10_000);
    assert.deepEqual(downs('one').slice(oneBefore), ['KEY down 11']);
    assert.deepEqual(downs('two').slice(twoBefore), []);
    assert.doesNotMatch(inputLog, /no switch within/);
  },
);
