import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  BulkheadError,
  CONTRACT,
  VM_MANAGER_PATH,
  vmPath,
  type CallContext,
  type InterfaceContract,
  type Vm1Properties,
  type Vm1Service,
  type VmManager1Properties,
  type VmManager1Service,
} from '@bulkhead/contract';
import {
  BusClient,
  ServiceHost,
  checkImplementation,
  connectBus,
  ensureUiAccount,
  accountIds,
  startPrivateBus,
  variant,
  type MessageBus,
  type PrivateBus,
} from './index';
import { callAs } from './testing/run-as';

/** A fake VM manager: enough behaviour to exercise the toolkit, no hypervisor. */
class FakeVmManager implements VmManager1Service {
  switched: string[] = [];
  Switch(_ctx: CallContext, vm: string): void {
    if (vm !== '/' && vm !== vmPath('personal')) throw new BulkheadError('NoSuchVm', `no VM at ${vm}`);
    this.switched.push(vm);
  }
  SwitchToSlot(_ctx: CallContext, slot: number): void {
    if (slot > 9) throw new BulkheadError('InvalidArgument', `slot ${slot} is out of range 0-9`);
  }
  Reload(): number {
    throw new Error('a bug with a secret stack');
  }
  CreateVm(): string {
    return '/';
  }
}

function fakeVmProps(name: string): Vm1Properties {
  return {
    Id: name,
    Name: name,
    Slot: 1,
    Kind: 'personal',
    Color: '#2a6fdb',
    Icon: '',
    State: 'stopped',
    StateReason: '',
    StateReasonCode: 'none',
    LastError: '',
    HasGpu: false,
    Autostart: false,
    UsbAutoAttach: true,
    MemoryMiB: 64,
    Vcpus: 1,
    Network: 'none',
    Backend: 'qemu',
    ConfigFile: `/etc/bulkhead/vms/${name}.json`,
    InputQmpSocket: '',
    Owner: 'admin',
    Cdrom: '',
    DiskJob: '',
    DiskJobProgress: 0,
    Unavailable: '',
    Display: 'vnc',
  };
}

class FakeVm implements Vm1Service {
  constructor(public props: Vm1Properties) {}
  Start(): void {
    this.props.State = 'running';
  }
  Stop(): void {}
  Kill(): void {}
  Pause(): void {}
  Resume(): void {}
  Screenshot(): Buffer {
    return Buffer.from('png');
  }
  AttachUsbDevice(): string {
    return 'usb1';
  }
  DetachUsbDevice(): void {}
  ListUsbDevices(): Array<[string, number, number]> {
    return [];
  }
  Update(): void {}
  Delete(): void {}
  CancelDiskJob(): void {}
  Eject(): void {}
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
let serviceConn: MessageBus;
let clientConn: MessageBus;
let host: ServiceHost;
let client: BusClient;
const manager = new FakeVmManager();

before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
  serviceConn = await connectBus(bus.address);
  clientConn = await connectBus(bus.address);
  host = new ServiceHost(serviceConn, { log: () => undefined });
  host.addObjectManager(VM_MANAGER_PATH);
  host.export(VM_MANAGER_PATH, 'org.bulkhead.VmManager1', manager, managerProps);
  await host.requestName('org.bulkhead.VmManager1');
  client = new BusClient(clientConn, 5000);
});

after(async () => {
  serviceConn?.disconnect();
  clientConn?.disconnect();
  await bus?.stop();
});

test('an exported object is listed by ObjectManager with its properties, and InterfacesAdded arrives', async () => {
  const added: string[] = [];
  const watch = await client.watchObjects('org.bulkhead.VmManager1', VM_MANAGER_PATH, {
    added: (path) => added.push(path),
  });
  const vm = new FakeVm(fakeVmProps('personal'));
  host.export(vmPath('personal'), 'org.bulkhead.Vm1', vm, () => vm.props);
  const { objects } = await client.watchObjects('org.bulkhead.VmManager1', VM_MANAGER_PATH, {});
  assert.deepEqual(Object.keys(objects), [vmPath('personal')]);
  assert.equal(objects[vmPath('personal')]['org.bulkhead.Vm1'].Name, 'personal');
  assert.equal(objects[vmPath('personal')]['org.bulkhead.Vm1'].Color, '#2a6fdb');
  await waitFor(() => added.includes(vmPath('personal')));
  await watch.unsubscribe();
});

test('PropertiesChanged carries the new value', async () => {
  const vm = new FakeVm(fakeVmProps('business'));
  const exported = host.export(vmPath('business'), 'org.bulkhead.Vm1', vm, () => vm.props);
  const seen: Array<Record<string, unknown>> = [];
  const watch = await client.watchObjects('org.bulkhead.VmManager1', VM_MANAGER_PATH, {
    changed: (path, iface, changed) =>
      path === vmPath('business') && iface === 'org.bulkhead.Vm1' && seen.push(changed),
  });
  vm.props.State = 'running';
  exported.propertiesChanged('State');
  await waitFor(() => seen.length > 0);
  assert.deepEqual(seen[0], { State: 'running' });
  assert.equal(
    await client.get('org.bulkhead.VmManager1', vmPath('business'), 'org.bulkhead.Vm1', 'State'),
    'running',
  );
  await watch.unsubscribe();
});

test('a named error reaches the client with its name and message', async () => {
  const proxy = client.proxy('org.bulkhead.VmManager1', VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
  await assert.rejects(proxy.Switch('/org/bulkhead/VmManager1/vm/nope', {}), (e: unknown) => {
    assert.ok(e instanceof BulkheadError);
    assert.equal(e.dbusName, 'org.bulkhead.Error.NoSuchVm');
    assert.match(e.message, /no VM at \/org\/bulkhead\/VmManager1\/vm\/nope/);
    return true;
  });
  await proxy.Switch('/', {});
  assert.deepEqual(manager.switched, ['/']);
});

test('an unexpected exception reaches the client as Failed, without its stack', async () => {
  const proxy = client.proxy('org.bulkhead.VmManager1', VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
  await assert.rejects(proxy.Reload(), (e: unknown) => {
    assert.ok(e instanceof BulkheadError);
    assert.equal(e.errorName, 'Failed');
    assert.doesNotMatch(e.message, /secret|at .*\.js/);
    return true;
  });
});

test('a call with the wrong argument types gets InvalidArgument and the daemon stays up', async () => {
  await assert.rejects(
    client.call('org.bulkhead.VmManager1', VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'SwitchToSlot', 's', [
      'one',
    ]),
    (e: unknown) =>
      e instanceof BulkheadError && e.errorName === 'InvalidArgument' && /takes \(ua\{sv\}\)/.test(e.message),
  );
  await client
    .proxy('org.bulkhead.VmManager1', VM_MANAGER_PATH, 'org.bulkhead.VmManager1')
    .SwitchToSlot(1, { x: variant('s', 'y') });
});

test('Introspect returns the contract of the object and its children', async () => {
  const [xml] = await client.call(
    'org.bulkhead.VmManager1',
    VM_MANAGER_PATH,
    'org.freedesktop.DBus.Introspectable',
    'Introspect',
    '',
    [],
  );
  assert.match(xml, /<interface name="org.bulkhead.VmManager1">/);
  assert.match(xml, /<method name="SwitchToSlot">/);
  assert.match(xml, /<node name="vm"\/>/);
  assert.match(xml, /org.freedesktop.DBus.ObjectManager/);
});

test('unexport announces InterfacesRemoved', async () => {
  const removed: string[] = [];
  const vm = new FakeVm(fakeVmProps('temp'));
  host.export(vmPath('temp'), 'org.bulkhead.Vm1', vm, () => vm.props);
  const watch = await client.watchObjects('org.bulkhead.VmManager1', VM_MANAGER_PATH, {
    removed: (p) => removed.push(p),
  });
  host.unexport(vmPath('temp'));
  await waitFor(() => removed.includes(vmPath('temp')));
  await watch.unsubscribe();
});

test('the XML-vs-code check fails when a member is removed from either side', () => {
  const contract = CONTRACT['org.bulkhead.VmManager1'] as InterfaceContract;
  assert.deepEqual(
    checkImplementation(contract, new FakeVmManager(), managerProps() as unknown as Record<string, unknown>),
    [],
  );
  // Removed from the code: an implementation without SwitchToSlot.
  const partial = { Switch: () => undefined, Reload: () => 0, CreateVm: () => '/' };
  assert.deepEqual(
    checkImplementation(contract, partial, managerProps() as unknown as Record<string, unknown>),
    ['org.bulkhead.VmManager1.SwitchToSlot: in the XML, missing in the code'],
  );
  // Removed from the XML: a contract without Reload.
  const { Reload: _gone, ...methods } = contract.methods;
  const problems = checkImplementation(
    { ...contract, methods },
    new FakeVmManager(),
    managerProps() as unknown as Record<string, unknown>,
  );
  assert.deepEqual(problems, ['org.bulkhead.VmManager1.Reload: in the code, missing in the XML']);
  // A property dropped from the code.
  const { Accelerator: _a, ...props } = managerProps();
  assert.deepEqual(checkImplementation(contract, new FakeVmManager(), props), [
    'org.bulkhead.VmManager1.Accelerator (property): in the XML, missing in the code',
  ]);
  // And export() refuses such an implementation outright.
  assert.throws(
    () =>
      host.export(
        '/org/bulkhead/Broken',
        'org.bulkhead.VmManager1',
        partial as unknown as VmManager1Service,
        managerProps,
      ),
    /code and contract disagree/,
  );
});

test('the generated TypeScript and policy files match the XML (npm run codegen is not stale)', () => {
  const repo = join(__dirname, '..', '..', '..');
  const r = spawnSync(process.execPath, [join(repo, 'shared/contract/scripts/codegen.mjs'), '--check'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
});

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

// --- Access control on a bus with the real (generated) policy files -----------------------------
const isRoot = process.getuid?.() === 0;
test(
  'with the real policy: root may call everything, the UI user only Access=ui members, nobody nothing',
  { skip: !isRoot && 'needs root to run clients as other users' },
  async () => {
    const ui = ensureUiAccount();
    const nobody = accountIds('nobody');
    assert.ok(ui && nobody, 'accounts bulkhead-ui and nobody exist');
    const sys = await startPrivateBus({ mode: 'system' });
    const conn = await connectBus(sys.address);
    try {
      const h = new ServiceHost(conn, { log: () => undefined });
      const m = new FakeVmManager();
      h.addObjectManager(VM_MANAGER_PATH);
      h.export(VM_MANAGER_PATH, 'org.bulkhead.VmManager1', m, managerProps);
      await h.requestName('org.bulkhead.VmManager1');
      const call = (ids: { uid: number; gid: number } | null, member: string, sig: string, body: unknown[]) =>
        callAs(
          ids,
          sys.address,
          'org.bulkhead.VmManager1',
          VM_MANAGER_PATH,
          'org.bulkhead.VmManager1',
          member,
          sig,
          body,
        );

      // Switch is Access=ui: root and the UI user may, nobody may not.
      assert.equal((await call(null, 'Switch', 'oa{sv}', ['/', {}])).ok, true);
      assert.equal((await call(ui, 'Switch', 'oa{sv}', ['/', {}])).ok, true);
      const denied = await call(nobody, 'Switch', 'oa{sv}', ['/', {}]);
      assert.equal(denied.ok, false);
      assert.equal(denied.error, 'org.freedesktop.DBus.Error.AccessDenied');
      // Reload is Access=root: the UI user is refused by the bus policy.
      const uiReload = await call(ui, 'Reload', '', []);
      assert.equal(uiReload.error, 'org.freedesktop.DBus.Error.AccessDenied');
      // Reading properties: UI yes, nobody no.
      const get = (ids: { uid: number; gid: number } | null) =>
        callAs(
          ids,
          sys.address,
          'org.bulkhead.VmManager1',
          VM_MANAGER_PATH,
          'org.freedesktop.DBus.Properties',
          'Get',
          'ss',
          ['org.bulkhead.VmManager1', 'ActiveVm'],
        );
      assert.equal((await get(ui)).ok, true);
      assert.equal((await get(nobody)).ok, false);
      // nobody may not own our names.
      assert.equal(m.switched.length, 2);
    } finally {
      conn.disconnect();
      await sys.stop();
    }
  },
);

test(
  'defence in depth: with a permissive bus, the daemon itself refuses nobody and the UI user where Access says so',
  { skip: !isRoot && 'needs root' },
  async () => {
    const ui = ensureUiAccount();
    const nobody = accountIds('nobody');
    const open = await startPrivateBus({ mode: 'open' });
    const conn = await connectBus(open.address);
    try {
      const h = new ServiceHost(conn, { log: () => undefined });
      h.export(VM_MANAGER_PATH, 'org.bulkhead.VmManager1', new FakeVmManager(), managerProps);
      await h.requestName('org.bulkhead.VmManager1');
      const call = (ids: { uid: number; gid: number } | null, member: string, sig: string, body: unknown[]) =>
        callAs(
          ids,
          open.address,
          'org.bulkhead.VmManager1',
          VM_MANAGER_PATH,
          'org.bulkhead.VmManager1',
          member,
          sig,
          body,
        );
      const r1 = await call(nobody, 'Switch', 'oa{sv}', ['/', {}]);
      assert.equal(r1.error, 'org.bulkhead.Error.AccessDenied');
      const r2 = await call(ui, 'Reload', '', []);
      assert.equal(r2.error, 'org.bulkhead.Error.AccessDenied');
      assert.equal((await call(ui, 'Switch', 'oa{sv}', ['/', {}])).ok, true);
      // Nobody learns which objects exist: an object that exists and one that does not get the
      // same answer, whatever the interface (Properties, one outside the contract).
      for (const [iface, member, sig, body] of [
        ['org.freedesktop.DBus.Properties', 'Get', 'ss', ['org.bulkhead.Vm1', 'State']],
        ['org.freedesktop.DBus.Properties', 'GetAll', 's', ['org.bulkhead.VmManager1']],
        ['com.example.Nothing', 'Foo', '', []],
      ] as const) {
        const answers = [];
        for (const path of [VM_MANAGER_PATH, `${VM_MANAGER_PATH}/vm/nosuchvm`])
          answers.push(
            (
              await callAs(nobody, open.address, 'org.bulkhead.VmManager1', path, iface, member, sig, [
                ...body,
              ])
            ).error,
          );
        assert.deepEqual(
          answers,
          ['org.bulkhead.Error.AccessDenied', 'org.bulkhead.Error.AccessDenied'],
          `${iface}.${member}`,
        );
      }
    } finally {
      conn.disconnect();
      await open.stop();
    }
  },
);
