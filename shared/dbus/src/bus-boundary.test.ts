/**
 * The bus boundary of ServiceHost: whatever a daemon hands it (NUL, unpaired surrogates, huge
 * strings, invalid object paths, values too deep or of the wrong type, errors its contract does
 * not declare), every call is answered, every message sent is valid, and the host keeps serving.
 * In-process on a private 'open' bus; the implementations are fakes of VmManager1/Vm1.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BulkheadError,
  VM_MANAGER_PATH,
  vmPath,
  type CallContext,
  type Vm1Properties,
  type VmManager1Properties,
  type VmManager1Service,
} from '@bulkhead/contract';
import {
  BusClient,
  INVALID_OBJECT_PATH,
  REPLACEMENT_CHARACTER,
  ServiceHost,
  TEXT_MAX_CHARS,
  busString,
  connectBus,
  isValidObjectPath,
  startPrivateBus,
  unwrap,
  variant,
  Variant,
  type MessageBus,
  type PrivateBus,
} from './index';

const NAME = 'org.bulkhead.VmManager1';
const HUGE = 'y'.repeat(100_000);

/** A fake manager whose values and errors the test sets. */
class FakeHostileManager implements VmManager1Service {
  switchError: Error | null = null;
  reloadResult: unknown = 1;
  Switch(): void {
    if (this.switchError) throw this.switchError;
  }
  SwitchToSlot(_ctx: CallContext, slot: number): void {
    // Not in SwitchToSlot's declared errors: the contract-violation case.
    if (slot === 7) throw new BulkheadError('PolicyDenied', 'slot 7 is policy-denied');
  }
  CreateVm(): string {
    return '/';
  }
  Reload(): number {
    return this.reloadResult as number;
  }
}

function fakeHostileVmProps(): Vm1Properties {
  return {
    Id: 'evil',
    Name: 'a\u0000b',
    Slot: 1,
    Kind: 'personal',
    Color: '#000000',
    Icon: 'lone \uD800 high, lone \uDC00 low, pair \uD83D\uDE00',
    State: 'stopped',
    StateReason: HUGE,
    StateReasonCode: 'none',
    LastError: '',
    HasGpu: false,
    Autostart: false,
    UsbAutoAttach: false,
    MemoryMiB: 64,
    Vcpus: 1,
    Network: 'none',
    Backend: 'qemu',
    ConfigFile: '/etc/bulkhead/vms/evil.json',
    InputQmpSocket: '',
    Owner: 'admin',
    Cdrom: '',
    DiskJob: '',
    DiskJobProgress: 0,
    Unavailable: '',
    Display: 'vnc',
  };
}

const noVm = () => ({
  Start() {},
  Stop() {},
  Kill() {},
  Pause() {},
  Resume() {},
  Screenshot: () => Buffer.alloc(0),
  AttachUsbDevice: () => '',
  DetachUsbDevice() {},
  ListUsbDevices: () => [] as Array<[string, number, number]>,
  Update() {},
  Delete() {},
  CancelDiskJob() {},
  Eject() {},
});

let bus: PrivateBus;
let serviceConn: MessageBus;
let clientConn: MessageBus;
let host: ServiceHost;
let client: BusClient;
const logged: string[] = [];
const manager = new FakeHostileManager();
const managerProps: VmManager1Properties = {
  ActiveVm: '/',
  Switching: false,
  LastSwitch: {},
  ConfigErrors: [],
  Accelerator: 'tcg',
  GpuHolder: '/',
};

/** Every string anywhere in a value, Variants and containers included. */
function strings(v: unknown): string[] {
  const u = unwrap(v);
  if (typeof u === 'string') return [u];
  if (Array.isArray(u)) return u.flatMap(strings);
  if (u && typeof u === 'object' && !Buffer.isBuffer(u))
    return Object.entries(u).flatMap(([k, x]) => [k, ...strings(x)]);
  return [];
}
const wellFormed = (s: string) =>
  !/\0|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
  serviceConn = await connectBus(bus.address);
  clientConn = await connectBus(bus.address);
  // Strict off here: the test inspects both modes by itself (see the undeclared-error tests).
  host = new ServiceHost(serviceConn, {
    log: (level, msg) => logged.push(`${level}: ${msg}`),
    strictContract: false,
  });
  host.addObjectManager(VM_MANAGER_PATH);
  host.export(VM_MANAGER_PATH, 'org.bulkhead.VmManager1', manager, () => managerProps);
  await host.requestName(NAME);
  client = new BusClient(clientConn, 5000);
});

after(async () => {
  serviceConn?.disconnect();
  clientConn?.disconnect();
  await bus?.stop();
});

test('busString: NUL and unpaired surrogates become U+FFFD, long strings are cut with a marker', () => {
  assert.equal(busString('a\0b'), `a${REPLACEMENT_CHARACTER}b`);
  assert.equal(busString('x\uD800y\uDC00'), `x${REPLACEMENT_CHARACTER}y${REPLACEMENT_CHARACTER}`);
  assert.equal(busString('\uD83D\uDE00'), '\uD83D\uDE00');
  assert.equal(busString('abcdef', 3), 'abc… (3 more characters)');
  // A cut never splits a surrogate pair into an invalid half.
  assert.equal(busString('ab\uD83D\uDE00cd', 3), 'ab… (4 more characters)');
  assert.ok(isValidObjectPath(vmPath('\u0000 \uD800 ../../x')));
});

test('properties with NUL, unpaired surrogates and a 100,000-character string: Get, GetAll and GetManagedObjects answer with valid strings', async () => {
  const props = fakeHostileVmProps();
  host.export(vmPath('evil'), 'org.bulkhead.Vm1', noVm(), () => props);
  const all = await client.getAll(NAME, vmPath('evil'), 'org.bulkhead.Vm1');
  assert.equal(all.Name, `a${REPLACEMENT_CHARACTER}b`);
  assert.equal(
    all.Icon,
    `lone ${REPLACEMENT_CHARACTER} high, lone ${REPLACEMENT_CHARACTER} low, pair \uD83D\uDE00`,
  );
  assert.equal(
    all.StateReason,
    `${'y'.repeat(TEXT_MAX_CHARS)}… (${100_000 - TEXT_MAX_CHARS} more characters)`,
  );
  assert.equal(
    await client.get(NAME, vmPath('evil'), 'org.bulkhead.Vm1', 'Name'),
    `a${REPLACEMENT_CHARACTER}b`,
  );
  const [objects] = await client.call(
    NAME,
    VM_MANAGER_PATH,
    'org.freedesktop.DBus.ObjectManager',
    'GetManagedObjects',
    '',
    [],
  );
  const every = strings(objects);
  assert.ok(every.includes(`a${REPLACEMENT_CHARACTER}b`));
  assert.deepEqual(
    every.filter((s) => !wellFormed(s)),
    [],
  );
  host.unexport(vmPath('evil'));
});

test('PropertiesChanged, InterfacesAdded and signal arguments carry valid strings', async () => {
  const seen: Array<{ member: string; body: unknown }> = [];
  const unsubscribe = await client.subscribe({ sender: NAME }, (msg) =>
    seen.push({ member: msg.member, body: msg.body }),
  );
  const props = fakeHostileVmProps();
  const vm = host.export(vmPath('evil2'), 'org.bulkhead.Vm1', noVm(), () => props);
  props.LastError = 'binary \u0000\u0001\uDFFF junk';
  vm.propertiesChanged('LastError', 'Name');
  const mgr = host.export(VM_MANAGER_PATH, 'org.bulkhead.VmManager1', manager, () => managerProps);
  mgr.emit('SwitchProgress', '/', 'failed', `detail \u0000 ${HUGE}`);
  // The marker: signals from one sender arrive in order.
  mgr.emit('SwitchProgress', '/', 'done', 'marker');
  await waitFor(() => seen.some((s) => strings(s.body).includes('marker')));
  await unsubscribe();
  host.unexport(vmPath('evil2'));
  const members = seen.map((s) => s.member);
  assert.ok(members.includes('InterfacesAdded'));
  assert.ok(members.includes('PropertiesChanged'));
  const changed = seen.find((s) => s.member === 'PropertiesChanged')!;
  assert.deepEqual(unwrap((changed.body as unknown[])[1]), {
    LastError: `binary ${REPLACEMENT_CHARACTER}\u0001${REPLACEMENT_CHARACTER} junk`,
    Name: `a${REPLACEMENT_CHARACTER}b`,
  });
  const progress = seen.find((s) => s.member === 'SwitchProgress')!;
  const detail = (progress.body as string[])[2];
  assert.ok(detail.startsWith(`detail ${REPLACEMENT_CHARACTER} yyy`));
  assert.match(detail, /… \(\d+ more characters\)$/);
  assert.deepEqual(
    seen.flatMap((s) => strings(s.body)).filter((s) => !wellFormed(s)),
    [],
  );
});

test('an error message with NUL and 100,000 characters reaches the caller valid and capped', async () => {
  manager.switchError = new BulkheadError('NoSuchVm', `no VM named 'x\u0000y' ${HUGE}`);
  try {
    await assert.rejects(
      client.proxy(NAME, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').Switch('/', {}),
      (e: unknown) => {
        assert.ok(e instanceof BulkheadError);
        assert.equal(e.errorName, 'NoSuchVm');
        assert.ok(e.message.startsWith(`no VM named 'x${REPLACEMENT_CHARACTER}y' yyy`));
        assert.ok(e.message.length < TEXT_MAX_CHARS + 100);
        return true;
      },
    );
  } finally {
    manager.switchError = null;
  }
});

test('a reply that cannot be marshalled, or nests too deep, is answered with Failed and the host keeps serving', async () => {
  const proxy = client.proxy(NAME, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
  manager.reloadResult = 'not a number';
  await assert.rejects(
    proxy.Reload(),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'Failed',
  );
  // A property of the wrong type: GetAll answers Failed instead of never answering.
  const props = { ...managerProps, Switching: 'yes' as unknown as boolean };
  host.export('/org/bulkhead/Other', 'org.bulkhead.VmManager1', manager, () => props);
  await assert.rejects(
    client.getAll(NAME, '/org/bulkhead/Other', 'org.bulkhead.VmManager1'),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'Failed',
  );
  // A LastSwitch whose variants nest beyond any D-Bus limit (a cycle would do the same).
  let deep: Variant = variant('s', 'bottom');
  for (let i = 0; i < 100; i++) deep = variant('v', deep);
  props.Switching = false;
  props.LastSwitch = { deep };
  await assert.rejects(
    client.get(NAME, '/org/bulkhead/Other', 'org.bulkhead.VmManager1', 'LastSwitch'),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'Failed',
  );
  host.unexport('/org/bulkhead/Other');
  manager.reloadResult = 3;
  assert.equal(await proxy.Reload(), 3);
});

test('an invalid object path in a value is replaced, so the bus does not drop the daemon', async () => {
  const props = { ...managerProps, ActiveVm: '/org/bulkhead/VmManager1/vm/bad id\u0000' };
  host.export('/org/bulkhead/Other2', 'org.bulkhead.VmManager1', manager, () => props);
  assert.equal(
    await client.get(NAME, '/org/bulkhead/Other2', 'org.bulkhead.VmManager1', 'ActiveVm'),
    INVALID_OBJECT_PATH,
  );
  host.unexport('/org/bulkhead/Other2');
  assert.equal(await client.get(NAME, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm'), '/');
  assert.ok(logged.some((l) => /invalid object path/.test(l)));
});

test('export refuses an object path that is not valid', () => {
  assert.throws(
    () => host.export('/org/bulkhead/VmManager1/vm/bad id', 'org.bulkhead.Vm1', noVm(), fakeHostileVmProps),
    /not a valid object path/,
  );
});

test('an undeclared named error: answered as raised and logged in production, Failed under strictContract', async () => {
  const proxy = client.proxy(NAME, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
  await assert.rejects(
    proxy.SwitchToSlot(7, {}),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'PolicyDenied',
  );
  assert.deepEqual(host.contractViolations.at(-1), {
    iface: 'org.bulkhead.VmManager1',
    member: 'SwitchToSlot',
    error: 'PolicyDenied',
    message: 'slot 7 is policy-denied',
  });
  assert.ok(logged.some((l) => /^warn: .*SwitchToSlot raised PolicyDenied/.test(l)));

  const conn = await connectBus(bus.address);
  try {
    const strict = new ServiceHost(conn, { log: () => undefined, strictContract: true });
    strict.export(VM_MANAGER_PATH, 'org.bulkhead.VmManager1', new FakeHostileManager(), () => managerProps);
    const unique = (conn as unknown as { name: string }).name;
    await assert.rejects(
      client.proxy(unique, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').SwitchToSlot(7, {}),
      (e: unknown) =>
        e instanceof BulkheadError &&
        e.errorName === 'Failed' &&
        /undeclared error: .*PolicyDenied/.test(e.message),
    );
    assert.equal(strict.contractViolations.length, 1);
    // Declared errors pass unchanged in strict mode too.
    const m = new FakeHostileManager();
    m.switchError = new BulkheadError('InvalidConfig', 'vm.json: kernel: /nope does not exist');
    strict.export('/org/bulkhead/Strict2', 'org.bulkhead.VmManager1', m, () => managerProps);
    await assert.rejects(
      client.proxy(unique, '/org/bulkhead/Strict2', 'org.bulkhead.VmManager1').Switch('/', {}),
      (e: unknown) => e instanceof BulkheadError && e.errorName === 'InvalidConfig',
    );
  } finally {
    conn.disconnect();
  }
});

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), 'condition not reached');
}

test('no signal leaves the host before it owns its name (the policy can only restrict a named sender)', async () => {
  const conn = await connectBus(bus.address);
  const seen: string[] = [];
  const unsubscribe = await client.subscribe({}, (msg) => {
    if (msg.sender === (conn as unknown as { name: string }).name) seen.push(`${msg.member} ${msg.body[0]}`);
  });
  try {
    const h = new ServiceHost(conn, { log: () => undefined });
    h.addObjectManager('/org/bulkhead/Early');
    h.export('/org/bulkhead/Early/before', 'org.bulkhead.Vm1', noVm(), fakeHostileVmProps);
    await h.requestName('org.bulkhead.Usb1');
    h.export('/org/bulkhead/Early/after', 'org.bulkhead.Vm1', noVm(), fakeHostileVmProps);
    // Signals of one sender arrive in order: once 'after' is here, 'before' would have been too.
    await waitFor(() => seen.includes('InterfacesAdded /org/bulkhead/Early/after'));
    assert.deepEqual(seen, ['InterfacesAdded /org/bulkhead/Early/after']);
  } finally {
    await unsubscribe();
    conn.disconnect();
  }
});

test('a property that declares a longer org.bulkhead.MaxLength (Usb1.Rules) is not cut to the free-text cap', async () => {
  const rules = `{"rules":[${'{"action":"deny","comment":"x"},'.repeat(400)}{"action":"deny"}]}`;
  assert.ok(rules.length > TEXT_MAX_CHARS);
  const usb = host.export(
    '/org/bulkhead/RulesTest',
    'org.bulkhead.Usb1',
    { AnswerPrompt() {}, SetRules() {}, MoveFollowFocus: () => [], ReturnDevices: () => [] },
    () => ({ Rules: rules, PendingPrompts: [] }),
  );
  const seen: unknown[] = [];
  const unsubscribe = await client.subscribe({ sender: NAME, path: '/org/bulkhead/RulesTest' }, (msg) =>
    seen.push(unwrap(msg.body[1])),
  );
  try {
    usb.propertiesChanged('Rules');
    await waitFor(() => seen.length > 0);
    assert.deepEqual(seen[0], { Rules: rules });
    assert.equal(await client.get(NAME, '/org/bulkhead/RulesTest', 'org.bulkhead.Usb1', 'Rules'), rules);
  } finally {
    await unsubscribe();
    host.unexport('/org/bulkhead/RulesTest');
  }
});
