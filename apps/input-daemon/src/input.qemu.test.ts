import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@bulkhead/common';
import {
  BUS_NAMES,
  INPUT_PATH,
  VM_MANAGER_PATH,
  vmPath,
  type CallContext,
  type VariantDict,
  type VmManager1Properties,
  type VmManager1Service,
} from '@bulkhead/contract';
import {
  BusClient,
  ServiceHost,
  connectBus,
  startPrivateBus,
  variant,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { BTN_LEFT, EV_KEY, EV_SYN, SYN_REPORT } from './input-event';
import { InputService, type VmManagerLink } from './input-service';
import { qmpConnector } from './qmp-wiring';
import { QmpSink, type QmpConnection } from './sinks/qmp-sink';
import { CountingSwitcherSink } from './sinks/switcher-sink';
import { VirtualSeat } from './sources/virtual-seat';
import { KEY_QCODES } from './keycodes';

/**
 * Host integration: two REAL QEMU test guests (apps/vm-daemon/guest), input-daemon with the
 * virtual seat and the QMP sink on a private bus, and a FakeVmManager that answers SwitchToSlot by
 * calling Input1.Freeze / SetFocus the way vm-daemon does. Each guest gets its own input QMP
 * socket (QEMU serves one client per socket; vm-daemon keeps its own).
 */

const REPO = join(__dirname, '..', '..', '..');
const GUEST = join(REPO, 'apps', 'vm-daemon', 'guest', 'build', 'bulkhead-guest.elf');
const missing = [
  !existsSync(GUEST) && `${GUEST} (make -C apps/vm-daemon/guest)`,
  spawnSync('qemu-system-x86_64', ['--version']).status !== 0 && 'qemu-system-x86_64',
].filter(Boolean);
const skip = missing.length ? `needs ${missing.join(', ')}` : false;

const VM_A = vmPath('a');
const VM_B = vmPath('b');
const dir = mkdtempSync(join(tmpdir(), 'input-qemu-'));
const guests: Record<'a' | 'b', { proc?: ChildProcess; log: string; qmp: string; ctl: string }> = {
  a: { log: join(dir, 'a.log'), qmp: join(dir, 'a-input.qmp'), ctl: join(dir, 'a-ctl.qmp') },
  b: { log: join(dir, 'b.log'), qmp: join(dir, 'b-input.qmp'), ctl: join(dir, 'b-ctl.qmp') },
};

/** Stands in for vm-daemon: a hotkey's SwitchToSlot freezes input, then focuses the slot's VM. */
class FakeVmManager implements VmManager1Service {
  calls: number[] = [];
  /** When set, a switch waits for it before Freeze: a slow vm-daemon (a busy machine, a GPU step). */
  gate: Promise<void> | null = null;
  constructor(private readonly client: BusClient) {}
  Switch(): void {}
  async SwitchToSlot(_ctx: CallContext, slot: number, _options: VariantDict): Promise<void> {
    this.calls.push(slot);
    if (this.gate) await this.gate;
    const vm = slot === 1 ? 'a' : slot === 2 ? 'b' : null;
    const input = this.client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
    await input.Freeze({});
    if (vm) await input.SetFocus(vmPath(vm), { qmp_socket: variant('s', guests[vm].qmp) });
    else await input.SetFocus('/', {});
  }
  Reload(): number {
    return 0;
  }
  CreateVm(): string {
    throw new Error('not in this fake');
  }
}
const managerProps = (): VmManager1Properties => ({
  ActiveVm: '/',
  Switching: false,
  LastSwitch: {},
  ConfigErrors: [],
  Accelerator: 'tcg',
  GpuHolder: '/',
});

let bus: PrivateBus;
const conns: MessageBus[] = [];
let service: InputService;
let client: BusClient;
let manager: FakeVmManager;

async function waitFor(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
const serial = (g: 'a' | 'b') => (existsSync(guests[g].log) ? readFileSync(guests[g].log, 'utf8') : '');
const lines = (g: 'a' | 'b', prefix: string) =>
  serial(g)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith(prefix));

before(async () => {
  if (skip) return;
  for (const [name, g] of Object.entries(guests)) {
    g.proc = spawn(
      'qemu-system-x86_64',
      [
        '-accel',
        'tcg',
        '-m',
        '32',
        '-display',
        'none',
        '-serial',
        `file:${g.log}`,
        '-qmp',
        `unix:${g.qmp},server=on,wait=off`,
        '-qmp',
        `unix:${g.ctl},server=on,wait=off`,
        '-kernel',
        GUEST,
        '-append',
        `name=${name} color=#2a6fdb`,
      ],
      { stdio: 'ignore' },
    );
  }
  bus = await startPrivateBus({ mode: 'open' });
  const [daemonConn, managerConn, testConn] = await Promise.all([
    connectBus(bus.address),
    connectBus(bus.address),
    connectBus(bus.address),
  ]);
  conns.push(daemonConn, managerConn, testConn);

  const log = createLogger('input-qemu-test', 'warn');
  const daemonClient = new BusClient(daemonConn, 10_000);
  const vmManagerLink: VmManagerLink = {
    switchToSlot: async (slot) => {
      await daemonClient.call(
        BUS_NAMES.vmManager,
        VM_MANAGER_PATH,
        'org.bulkhead.VmManager1',
        'SwitchToSlot',
        'ua{sv}',
        [slot, {}],
      );
    },
  };
  const connect = qmpConnector({ retryUntilMs: 10_000 });
  service = new InputService(
    new VirtualSeat(),
    new HotkeyMatcher(buildChords()),
    new CountingSwitcherSink(),
    { forVm: async (target, _id, socket) => new QmpSink(target, await connect(socket), socket) },
    vmManagerLink,
    log,
  );
  const host = new ServiceHost(daemonConn, { log: () => undefined });
  service.attach(host.export(INPUT_PATH, 'org.bulkhead.Input1', service, () => service.properties()));
  await host.requestName(BUS_NAMES.input);

  manager = new FakeVmManager(new BusClient(managerConn, 10_000));
  const mhost = new ServiceHost(managerConn, { log: () => undefined });
  mhost.export(VM_MANAGER_PATH, 'org.bulkhead.VmManager1', manager, managerProps);
  await mhost.requestName(BUS_NAMES.vmManager);
  client = new BusClient(testConn, 10_000);

  await waitFor(
    'both guests READY',
    () => serial('a').includes('BULKHEAD-GUEST READY') && serial('b').includes('BULKHEAD-GUEST READY'),
  );
});

after(async () => {
  await service?.close().catch(() => undefined);
  for (const g of Object.values(guests)) g.proc?.kill('SIGKILL');
  for (const c of conns) c.disconnect();
  await bus?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const SYN: [number, number, number] = [EV_SYN, SYN_REPORT, 0];
const key = (code: number, value: number): Array<[number, number, number]> => [[EV_KEY, code, value], SYN];
const tap = (code: number) => [...key(code, 1), ...key(code, 0)];
const CTRL = 29,
  KEY_2 = 3,
  A = 30,
  S = 31,
  D = 32,
  J = 36,
  K = 37,
  L = 38,
  C = 46;
/** Serial lines of Ctrl (left 1d, right e01d) or of the 2 key (03). */
const isCtrlOr2 = (line: string) => / (e0)?1d$| 03$/.test(line);

test(
  "typing and Ctrl+C on A, Ctrl+2, typing on B: each guest sees only its own keys and NO key of the chord, not even Ctrl; A's held button is released",
  { skip },
  async () => {
    const input = client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
    await input.SetFocus(VM_A, { qmp_socket: variant('s', guests.a.qmp) });
    await input.InjectEvents('keyboard', [...tap(A), ...tap(S), ...tap(D)]);
    await input.InjectEvents('keyboard', [...key(CTRL, 1), ...tap(C), ...key(CTRL, 0)]); // Ctrl+C is A's
    await input.InjectEvents('mouse', key(BTN_LEFT, 1)); // held across the switch
    await input.InjectEvents('keyboard', [
      ...key(CTRL, 1),
      ...key(KEY_2, 1),
      ...key(KEY_2, 0),
      ...key(CTRL, 0),
    ]);
    await service.settled();
    assert.deepEqual(manager.calls, [2]);
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'FocusedTarget'), VM_B);
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'LastHotkeyError'), '');
    await input.InjectEvents('keyboard', [...tap(J), ...tap(K), ...tap(L)]);
    await input.InjectEvents('mouse', key(BTN_LEFT, 0)); // its press went to A: B must not get half a click

    await waitFor('B got j k l', () => lines('b', 'KEY up 26').length > 0);
    await waitFor('A released its button', () => lines('a', 'BTN up left').length > 0);
    const aKeys = lines('a', 'KEY ');
    const bKeys = lines('b', 'KEY ');
    assert.deepEqual(aKeys, [
      'KEY down 1e',
      'KEY up 1e',
      'KEY down 1f',
      'KEY up 1f',
      'KEY down 20',
      'KEY up 20',
      'KEY down 1d',
      'KEY down 2e',
      'KEY up 2e',
      'KEY up 1d', // Ctrl+C, held back then flushed in order
    ]);
    assert.deepEqual(bKeys, [
      'KEY down 24',
      'KEY up 24',
      'KEY down 25',
      'KEY up 25',
      'KEY down 26',
      'KEY up 26',
    ]);
    // The strict rule: across the switch neither guest saw any event of Ctrl or 2 — a key logger in
    // A cannot tell a chord was pressed.
    assert.deepEqual(aKeys.slice(10).filter(isCtrlOr2), [], 'A saw part of the Ctrl+2 chord');
    assert.deepEqual(bKeys.filter(isCtrlOr2), [], 'B saw part of the Ctrl+2 chord');
    for (const g of ['a', 'b'] as const) assert.ok(!serial(g).includes(' 03'), `chord key 2 reached ${g}`);
    assert.deepEqual(lines('a', 'BTN '), ['BTN down left', 'BTN up left']);
    assert.deepEqual(lines('b', 'BTN '), []);
  },
);

test(
  'Ctrl+2 and typing on at once while vm-daemon is slow to switch: none of the keys typed after the chord reach A; B gets them all, in order',
  { skip },
  async () => {
    const input = client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
    await input.SetFocus(VM_A, { qmp_socket: variant('s', guests.a.qmp) });
    const aBefore = lines('a', 'KEY ').length;
    const bBefore = lines('b', 'KEY ').length;
    let openGate!: () => void;
    manager.gate = new Promise<void>((r) => (openGate = r));
    const Q = 16,
      W = 17,
      E = 18;
    // The chord and the next keys in one go, as fast typing does.
    await input.InjectEvents('keyboard', [
      ...key(CTRL, 1),
      ...key(KEY_2, 1),
      ...key(KEY_2, 0),
      ...key(CTRL, 0),
      ...tap(Q),
      ...tap(W),
    ]);
    await waitFor(
      'vm-daemon got SwitchToSlot(2)',
      () => manager.calls.at(-1) === 2 && manager.calls.length >= 2,
    );
    await input.InjectEvents('keyboard', tap(E));
    openGate();
    await service.settled();
    manager.gate = null;
    assert.equal(await client.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'FocusedTarget'), VM_B);
    await waitFor('B got q w e', () => lines('b', 'KEY ').length >= bBefore + 6);
    assert.deepEqual(lines('b', 'KEY ').slice(bBefore), [
      'KEY down 10',
      'KEY up 10',
      'KEY down 11',
      'KEY up 11',
      'KEY down 12',
      'KEY up 12',
    ]);
    // A marker typed into A afterwards: A's input is one ordered QMP pipeline, so once the marker
    // is on A's console anything sent to A before it is too.
    const Z = 44;
    await input.SetFocus(VM_A, { qmp_socket: variant('s', guests.a.qmp) });
    await input.InjectEvents('keyboard', tap(Z));
    await waitFor('A got the marker z', () => lines('a', 'KEY up 2c').length > 0);
    assert.deepEqual(
      lines('a', 'KEY ').slice(aBefore),
      ['KEY down 2c', 'KEY up 2c'],
      'A got keys typed after Ctrl+2',
    );
    await input.SetFocus(VM_B, { qmp_socket: variant('s', guests.b.qmp) });
  },
);

test('with vm-daemon gone, a chord is still swallowed and LastHotkeyError says why', { skip }, async () => {
  const input = client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
  await conns[1].releaseName(BUS_NAMES.vmManager);
  const before = lines('b', 'KEY ').length;
  await input.InjectEvents('keyboard', [
    ...key(CTRL, 1),
    ...key(KEY_2 + 1, 1),
    ...key(KEY_2 + 1, 0),
    ...key(CTRL, 0),
  ]);
  await service.settled();
  const err = (await client.get(
    BUS_NAMES.input,
    INPUT_PATH,
    'org.bulkhead.Input1',
    'LastHotkeyError',
  )) as string;
  assert.match(err, /Ctrl\+3 → SwitchToSlot\(3\) failed/);
  await input.InjectEvents('keyboard', tap(J));
  await waitFor('B got the next j', () => lines('b', 'KEY ').length >= before + 2);
  assert.deepEqual(
    lines('b', 'KEY ').slice(before),
    ['KEY down 24', 'KEY up 24'],
    'no Ctrl of the failed chord, just the j',
  );
});

test('every qcode of the key table is one QEMU accepts (query-qmp-schema)', { skip }, async () => {
  // The input socket is held by the sink; the control socket (vm-daemon's, here idle) answers.
  const qmp: QmpConnection = await qmpConnector({ retryUntilMs: 5000 })(guests.a.ctl);
  const schema = (await qmp.execute('query-qmp-schema', {})) as Array<{
    'meta-type': string;
    values?: string[];
  }>;
  await qmp.close();
  const qcodes = schema.find((t) => t['meta-type'] === 'enum' && t.values?.includes('ctrl_r'));
  assert.ok(qcodes?.values);
  for (const q of KEY_QCODES.values()) assert.ok(qcodes.values.includes(q), `QEMU has no qcode '${q}'`);
});
