import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BUS_NAMES,
  BulkheadError,
  USB_PATH,
  usbDevicePath,
  vmPath,
  type UsbDevice1Properties,
} from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import {
  BusClient,
  ServiceHost,
  connectBus,
  startPrivateBus,
  variant,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { deviceId, type UsbDeviceInfo } from './device';
import { UsbService } from './usb-service';
import { DbusVmControl } from './vm-directory';
import { FakeUsbEnumerator, KEYBOARD_INTERFACE, fakeDevice } from './testing/fake-usb-enumerator';
import { FakeVmManager } from './testing/fake-vm-manager';

const DEV = 'org.bulkhead.UsbDevice1';
const quiet = createLogger('usb-test', 'error');

interface Daemon {
  conn: MessageBus;
  host: ServiceHost;
  service: UsbService;
}

/** One private bus with a FakeVmManager, a FakeUsbEnumerator and usb-daemon, per test. */
class Rig {
  bus!: PrivateBus;
  vms!: FakeVmManager;
  client!: BusClient;
  daemon: Daemon | null = null;
  private conns: MessageBus[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'usb-daemon-test-'));
  readonly rulesFile = join(this.dir, 'usb-rules.json');

  constructor(readonly usb = new FakeUsbEnumerator()) {}

  async init(): Promise<this> {
    this.bus = await startPrivateBus({ mode: 'open' });
    this.vms = new FakeVmManager(await this.connect());
    await this.vms.start();
    this.client = new BusClient(await this.connect(), 5000);
    return this;
  }

  async connect(): Promise<MessageBus> {
    const c = await connectBus(this.bus.address);
    this.conns.push(c);
    return c;
  }

  async startDaemon(opts: { promptTimeoutMs?: number } = {}): Promise<Daemon> {
    const conn = await this.connect();
    const host = new ServiceHost(conn, { log: () => undefined });
    const service = new UsbService({
      host,
      enumerator: this.usb,
      vms: new DbusVmControl(new BusClient(conn, 5000), quiet),
      log: quiet,
      rulesFile: this.rulesFile,
      stateDir: this.dir,
      promptTimeoutMs: opts.promptTimeoutMs,
    });
    await service.start();
    await host.requestName(BUS_NAMES.usb);
    this.daemon = { conn, host, service };
    return this.daemon;
  }

  /** Stop usb-daemon the way a crash or restart would: devices stay where they are. */
  async stopDaemon(): Promise<void> {
    if (!this.daemon) return;
    await this.daemon.service.stop();
    this.daemon.host.close();
    this.daemon.conn.disconnect();
    this.conns = this.conns.filter((c) => c !== this.daemon!.conn);
    this.daemon = null;
  }

  device(info: UsbDeviceInfo) {
    return this.client.proxy(BUS_NAMES.usb, usbDevicePath(deviceId(info)), DEV);
  }

  props(info: UsbDeviceInfo): Promise<UsbDevice1Properties> {
    return this.client.getAll(BUS_NAMES.usb, usbDevicePath(deviceId(info)), DEV);
  }

  usbApi() {
    return this.client.proxy(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1');
  }

  async managed(): Promise<string[]> {
    const { objects, unsubscribe } = await this.client.watchObjects(BUS_NAMES.usb, USB_PATH, {});
    await unsubscribe();
    return Object.keys(objects).sort();
  }

  async close(): Promise<void> {
    await this.stopDaemon();
    this.vms?.close();
    for (const c of this.conns) c.disconnect();
    await this.bus?.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function withRig(fn: (rig: Rig) => Promise<void>, usb?: FakeUsbEnumerator): Promise<void> {
  const rig = await new Rig(usb).init();
  try {
    await fn(rig);
  } finally {
    await rig.close();
  }
}

const rejectsWith = (p: Promise<unknown>, name: string, re: RegExp) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof BulkheadError, `expected ${name}, got ${String(e)}`);
    assert.equal(e.errorName, name);
    assert.match(e.message, re);
    return true;
  });

test('devices appear as UsbDevice1 objects with their properties; hotplug adds one; keyboards stay with input', async () => {
  const stick = fakeDevice({
    address: 5,
    port: '1-1.2',
    serial: 'S1',
    vendor: 'SanDisk',
    product: 'Cruzer Blade',
  });
  const kbd = fakeDevice({
    address: 6,
    port: '1-3',
    serial: '',
    vendorId: 0x0627,
    productId: 0x0001,
    interfaces: [KEYBOARD_INTERFACE],
  });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work', { usbAutoAttach: false });
      await rig.startDaemon();
      assert.deepEqual(await rig.managed(), [usbDevicePath(deviceId(stick))]);
      const p = await rig.props(stick);
      assert.equal(p.Name, 'SanDisk Cruzer Blade');
      assert.equal(p.VendorId, 0x0781);
      assert.equal(p.Serial, 'S1');
      assert.deepEqual(p.Classes, ['storage']);
      assert.equal(p.Bus, 1);
      assert.equal(p.Address, 5);
      assert.equal(p.Port, '1-1.2');
      assert.equal(p.AssignedVm, '/');
      assert.equal(p.State, 'available');

      const added: string[] = [];
      const w = await rig.client.watchObjects(BUS_NAMES.usb, USB_PATH, { added: (path) => added.push(path) });
      rig.usb.plug(kbd);
      await waitFor('InterfacesAdded for the keyboard', () => added.includes(usbDevicePath(deviceId(kbd))));
      await w.unsubscribe();
      const k = await rig.props(kbd);
      assert.deepEqual(k.Classes, ['hid', 'keyboard']);
      assert.equal(k.State, 'input');
      assert.equal(k.AssignedVm, '/');
      await rejectsWith(rig.device(kbd).Assign(vmPath('work'), {}), 'PolicyDenied', /input-daemon/);
      assert.equal(rig.vms.calls.filter((c) => c.method === 'AttachUsbDevice').length, 0);
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('Assign attaches through Vm1.AttachUsbDevice; Assign to another VM detaches first; Release detaches', async () => {
  const stick = fakeDevice({ address: 7, port: '2-1', bus: 2 });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      rig.vms.addVm('home', { slot: 2 });
      await rig.startDaemon();
      const changes: Array<Record<string, unknown>> = [];
      const w = await rig.client.watchObjects(BUS_NAMES.usb, USB_PATH, {
        changed: (_p, _i, c) => changes.push(c),
      });

      await rig.device(stick).Assign(vmPath('work'), {});
      assert.deepEqual(
        rig.vms.calls.filter((c) => c.method === 'AttachUsbDevice'),
        [{ vm: 'work', method: 'AttachUsbDevice', args: [2, 7, '2-1'] }],
      );
      let p = await rig.props(stick);
      assert.equal(p.AssignedVm, vmPath('work'));
      assert.equal(p.State, 'attached');
      await waitFor('PropertiesChanged AssignedVm', () =>
        changes.some((c) => c.AssignedVm === vmPath('work')),
      );
      assert.ok(changes.some((c) => c.State === 'attaching'));

      rig.vms.calls.length = 0;
      await rig.device(stick).Assign(vmPath('home'), {});
      assert.deepEqual(
        rig.vms.calls.map((c) => `${c.method}@${c.vm}`),
        ['DetachUsbDevice@work', 'AttachUsbDevice@home'],
      );
      assert.equal(rig.vms.vm('work').attachments.size, 0, 'never in two VMs');
      assert.equal(rig.vms.vm('home').attachments.size, 1);

      await rig.device(stick).Release();
      p = await rig.props(stick);
      assert.equal(p.AssignedVm, '/');
      assert.equal(p.State, 'available');
      assert.equal(rig.vms.vm('home').attachments.size, 0);
      await rejectsWith(rig.device(stick).Release(), 'InvalidState', /not assigned/);
      await w.unsubscribe();
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('a device plugged in goes to the focused VM with UsbAutoAttach, never to the switcher', async () => {
  const a = fakeDevice({ address: 8 });
  const b = fakeDevice({ address: 9 });
  await withRig(async (rig) => {
    rig.vms.addVm('work', { usbAutoAttach: true });
    await rig.startDaemon();
    rig.usb.plug(a); // switcher focused
    await waitFor('object for a', async () => (await rig.managed()).includes(usbDevicePath(deviceId(a))));
    rig.vms.setActive(vmPath('work'));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await rig.props(a)).AssignedVm, '/');
    rig.usb.plug(b);
    await waitFor('b attached to work', async () => (await rig.props(b)).State === 'attached');
    assert.equal((await rig.props(b)).AssignedVm, vmPath('work'));
  });
});

test('a device vanishing while assigned is detached from the VM and its object removed', async () => {
  const stick = fakeDevice({ address: 10 });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      await rig.startDaemon();
      await rig.device(stick).Assign(vmPath('work'), {});
      const handle = [...rig.vms.vm('work').attachments.keys()][0];
      const removed: string[] = [];
      const w = await rig.client.watchObjects(BUS_NAMES.usb, USB_PATH, {
        removed: (path) => removed.push(path),
      });
      rig.usb.unplug(stick);
      await waitFor('InterfacesRemoved', () => removed.includes(usbDevicePath(deviceId(stick))));
      assert.ok(rig.vms.calls.some((c) => c.method === 'DetachUsbDevice' && c.args[0] === handle));
      assert.equal(rig.vms.vm('work').attachments.size, 0);
      assert.deepEqual(await rig.managed(), []);
      await w.unsubscribe();
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('a device vanishing during an attach leaves no attachment and no object', async () => {
  const stick = fakeDevice({ address: 11 });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      await rig.startDaemon();
      let open!: () => void;
      rig.vms.attachGate = new Promise((r) => (open = r));
      const assigning = rig.device(stick).Assign(vmPath('work'), {});
      await waitFor('attach under way', () => rig.vms.calls.some((c) => c.method === 'AttachUsbDevice'));
      rig.usb.unplug(stick);
      open();
      await rejectsWith(assigning, 'NoSuchDevice', /vanished/);
      await waitFor('object removed', async () => (await rig.managed()).length === 0);
      assert.equal(rig.vms.vm('work').attachments.size, 0);
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('a VM that crashes gives its devices back; a sticky device follows its VM when it starts', async () => {
  const stick = fakeDevice({ address: 12, serial: 'STICKY1' });
  await withRig(
    async (rig) => {
      const work = rig.vms.addVm('work');
      await rig.startDaemon();
      await rig.device(stick).Assign(vmPath('work'), {});
      await rig.device(stick).SetSticky(true);
      assert.equal((await rig.props(stick)).Sticky, true);
      const rules = JSON.parse(readFileSync(rig.rulesFile, 'utf8'));
      assert.deepEqual(rules.rules[0], {
        match: { vid: '0781', pid: '5567', serial: 'STICKY1' },
        action: 'always',
        vm: 'work',
        comment: 'sticky (SetSticky)',
      });

      work.setState('crashed');
      await waitFor('back to the Control Domain', async () => (await rig.props(stick)).AssignedVm === '/');
      assert.equal((await rig.props(stick)).State, 'available');

      rig.vms.calls.length = 0;
      work.setState('running');
      await waitFor('sticky device re-attached', async () => (await rig.props(stick)).State === 'attached');
      assert.equal((await rig.props(stick)).AssignedVm, vmPath('work'));
      assert.equal(work.attachments.size, 1);
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('FollowFocus moves the device when ActiveVm changes, and the flag survives a restart', async () => {
  const stick = fakeDevice({ address: 13 });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      rig.vms.addVm('home', { slot: 2 });
      await rig.startDaemon();
      await rig.device(stick).Assign(vmPath('work'), {});
      await rig.device(stick).SetFollowFocus(true);
      rig.vms.setActive(vmPath('home'));
      await waitFor(
        'moved to home',
        async () =>
          (await rig.props(stick)).AssignedVm === vmPath('home') &&
          (await rig.props(stick)).State === 'attached',
      );
      assert.equal(rig.vms.vm('work').attachments.size, 0);
      rig.vms.setActive('/');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal((await rig.props(stick)).AssignedVm, vmPath('home'), 'never to the switcher');

      await rig.stopDaemon();
      await rig.startDaemon();
      assert.equal((await rig.props(stick)).FollowFocus, true);
      assert.ok(existsSync(join(rig.dir, 'usb-daemon.json')));
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('a corrupt usb-daemon.json is kept aside, not overwritten by the next save; SetRules over an invalid rules file keeps that file aside too', async () => {
  const stick = fakeDevice({ address: 22 });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      const state = join(rig.dir, 'usb-daemon.json');
      writeFileSync(state, '{"version": 1, "followFocus": ["1-4:0781:5567:A1"'); // torn
      writeFileSync(rig.rulesFile, '{"rules": [ {"action": "alwys", "vm": "work"} ]}'); // a typo
      await rig.startDaemon();
      await rig.device(stick).SetFollowFocus(true); // a save
      assert.equal(
        readFileSync(`${state}.corrupt`, 'utf8'),
        '{"version": 1, "followFocus": ["1-4:0781:5567:A1"',
        'the torn file, as it was',
      );
      assert.deepEqual(JSON.parse(readFileSync(state, 'utf8')).followFocus, [deviceId(stick)]);

      const good = { rules: [{ match: { vid: '0781' }, action: 'always', vm: 'work' }] };
      await rig.usbApi().SetRules(JSON.stringify(good));
      assert.equal(
        readFileSync(`${rig.rulesFile}.corrupt`, 'utf8'),
        '{"rules": [ {"action": "alwys", "vm": "work"} ]}',
        "the administrator's invalid file, kept",
      );
      assert.deepEqual(JSON.parse(readFileSync(rig.rulesFile, 'utf8')), good);
      await rig.usbApi().SetRules(JSON.stringify(good));
      assert.equal(
        existsSync(`${rig.rulesFile}.corrupt.1`),
        false,
        'a valid file is replaced, not kept aside',
      );
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('fake vm-daemon: a switch while usb-daemon was down (killed, restarting): the restarted one moves a follow-focus device to the VM now focused', async () => {
  const stick = fakeDevice({ address: 16 });
  const kept = fakeDevice({ address: 17 });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      rig.vms.addVm('home', { slot: 2 });
      rig.vms.setActive(vmPath('work'));
      await rig.startDaemon();
      await rig.device(stick).Assign(vmPath('work'), {});
      await rig.device(stick).SetFollowFocus(true);
      await rig.device(kept).SetFollowFocus(true);
      await rig.stopDaemon();
      // The switch's move-usb found no usb-daemon on the bus (skipped): nothing moved the stick.
      rig.vms.setActive(vmPath('home'));
      await rig.startDaemon();
      await waitFor(
        'the follow-focus stick in home, the VM in front',
        async () =>
          (await rig.props(stick)).AssignedVm === vmPath('home') &&
          (await rig.props(stick)).State === 'attached',
      );
      assert.equal(rig.vms.vm('work').attachments.size, 0, 'work, no longer in front, still holds it');
      // One the person had in the Control Domain stays there: a restart is not a switch.
      assert.equal((await rig.props(kept)).AssignedVm, '/');
    },
    new FakeUsbEnumerator([stick, kept]),
  );
});

test('a restarted usb-daemon rebuilds assignments from ListUsbDevices without detaching anything', async () => {
  const stick = fakeDevice({ address: 14 });
  const other = fakeDevice({ address: 15 });
  await withRig(async (rig) => {
    rig.vms.addVm('work', { usbAutoAttach: true });
    rig.vms.setActive(vmPath('work'));
    await rig.startDaemon();
    rig.usb.plug(stick);
    rig.usb.plug(other);
    await waitFor(
      'both auto-attached',
      async () =>
        (await rig.props(stick)).State === 'attached' && (await rig.props(other)).State === 'attached',
    );
    await rig.device(other).Release();
    await rig.stopDaemon();
    rig.vms.calls.length = 0;

    await rig.startDaemon();
    const p = await rig.props(stick);
    assert.equal(p.AssignedVm, vmPath('work'));
    assert.equal(p.State, 'attached');
    assert.equal(rig.vms.calls.filter((c) => c.method === 'DetachUsbDevice').length, 0);
    assert.equal(
      rig.vms.calls.filter((c) => c.method === 'AttachUsbDevice' && c.args[1] === stick.address).length,
      0,
    );
    // Asked once: vm-daemon's first answer and the start are one reconciliation, not two at once.
    assert.equal(rig.vms.calls.filter((c) => c.method === 'ListUsbDevices').length, 1);
    assert.equal(
      (await rig.props(other)).AssignedVm,
      '/',
      'a device the person took back stays back after a restart',
    );
    // The rebuilt entry carries the VM's own handle, so Release detaches the right attachment.
    await rig.device(stick).Release();
    assert.deepEqual([...rig.vms.vm('work').attachments.values()], []);
  });
});

test("an 'ask' rule emits AttachRequested; AnswerPrompt allow attaches; an unanswered prompt times out to deny", async () => {
  const cam = fakeDevice({
    address: 16,
    serial: 'CAM1',
    interfaces: [{ classCode: 0x0e, subclass: 1, protocol: 0 }],
  });
  const cam2 = fakeDevice({
    address: 17,
    serial: 'CAM2',
    interfaces: [{ classCode: 0x0e, subclass: 1, protocol: 0 }],
  });
  await withRig(async (rig) => {
    writeFileSync(
      rig.rulesFile,
      JSON.stringify({ rules: [{ match: { classes: ['video'] }, action: 'ask' }] }),
    );
    rig.vms.addVm('work');
    rig.vms.setActive(vmPath('work'));
    await rig.startDaemon({ promptTimeoutMs: 300 });
    const asked: Array<[number, string, string]> = [];
    const rejected: Array<[string, string]> = [];
    const u1 = await rig.client.onSignal(
      BUS_NAMES.usb,
      { path: USB_PATH },
      'org.bulkhead.Usb1',
      'AttachRequested',
      (a) => asked.push(a),
    );
    const u2 = await rig.client.onSignal(
      BUS_NAMES.usb,
      { path: USB_PATH },
      'org.bulkhead.Usb1',
      'DeviceRejected',
      (a) => rejected.push(a),
    );
    rig.usb.plug(cam);
    await waitFor('AttachRequested', () => asked.length === 1);
    const [id, dev, vm] = asked[0];
    assert.equal(dev, usbDevicePath(deviceId(cam)));
    assert.equal(vm, vmPath('work'));
    assert.deepEqual(await rig.client.get(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1', 'PendingPrompts'), [
      [id, dev, vm],
    ]);
    await rejectsWith(rig.usbApi().AnswerPrompt(id, 'maybe'), 'InvalidArgument', /allow.*deny/);
    await rig.usbApi().AnswerPrompt(id, 'allow');
    assert.equal((await rig.props(cam)).State, 'attached');
    await rejectsWith(rig.usbApi().AnswerPrompt(id, 'allow'), 'InvalidState', /not open/);

    rig.usb.plug(cam2);
    await waitFor('second prompt', () => asked.length === 2);
    await waitFor('timeout → rejected', () => rejected.some(([d]) => d === usbDevicePath(deviceId(cam2))));
    assert.equal((await rig.props(cam2)).State, 'rejected');
    assert.deepEqual(
      await rig.client.get(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1', 'PendingPrompts'),
      [],
    );
    await u1();
    await u2();
  });
});

test('wrong arguments get named errors, invalid rules change nothing, and the daemon stays up', async () => {
  const twinA = fakeDevice({ address: 18, port: '1-8', serial: '' });
  const twinB = fakeDevice({ address: 19, port: '1-9', serial: '' });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      rig.vms.addVm('off', { state: 'stopped', slot: 3 });
      await rig.startDaemon();
      const dev = rig.device(twinA);
      await rejectsWith(dev.Assign(vmPath('nope'), {}), 'NoSuchVm', /nope/);
      await rejectsWith(dev.Assign(vmPath('off'), {}), 'InvalidState', /stopped/);
      await rejectsWith(
        dev.Assign(vmPath('work'), { bogus: variant('s', 'x') }),
        'InvalidArgument',
        /unknown option 'bogus'/,
      );
      await rejectsWith(
        rig.client.call(BUS_NAMES.usb, usbDevicePath(deviceId(twinA)), DEV, 'Assign', 's', ['work']),
        'InvalidArgument',
        /takes \(oa\{sv\}\)/,
      );
      // An unknown device path is answered by the bus toolkit (UnknownObject).
      await assert.rejects(
        rig.client.proxy(BUS_NAMES.usb, usbDevicePath('no:such:device'), DEV).Release(),
        /no object at/,
      );

      await dev.Assign(vmPath('work'), {});
      await rejectsWith(dev.SetSticky(true), 'PolicyDenied', /no serial number.*identical device/);

      const before = (await rig.client.get(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1', 'Rules')) as string;
      await rejectsWith(rig.usbApi().SetRules('{"rules": ['), 'InvalidConfig', /field '\(json\)'/);
      await rejectsWith(
        rig.usbApi().SetRules(JSON.stringify({ rules: [{ action: 'allow' }, { action: 'permit' }] })),
        'InvalidConfig',
        /rule 1, field 'action'/,
      );
      await rejectsWith(
        rig.usbApi().SetRules(JSON.stringify({ rules: [{ match: { vid: 'xyz' }, action: 'deny' }] })),
        'InvalidConfig',
        /rule 0, field 'match.vid'/,
      );
      assert.equal(await rig.client.get(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1', 'Rules'), before);
      assert.equal(existsSync(rig.rulesFile), false, 'nothing written');

      const good = {
        rules: [
          { match: { classes: ['storage'], vm: 'work' }, action: 'deny', comment: 'no sticks at work' },
        ],
      };
      await rig.usbApi().SetRules(JSON.stringify(good));
      assert.deepEqual(JSON.parse(readFileSync(rig.rulesFile, 'utf8')), good);
      assert.deepEqual(
        JSON.parse((await rig.client.get(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1', 'Rules')) as string),
        good,
      );
      await rejectsWith(
        rig.device(twinB).Assign(vmPath('work'), {}),
        'PolicyDenied',
        /rule 0 denies.*no sticks at work/,
      );

      // Still serving.
      assert.equal((await rig.props(twinA)).State, 'attached');
    },
    new FakeUsbEnumerator([twinA, twinB]),
  );
});

test('a failing AttachUsbDevice leaves the device in the Control Domain with DeviceRejected', async () => {
  const stick = fakeDevice({ address: 20 });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      await rig.startDaemon();
      const rejected: string[] = [];
      const u = await rig.client.onSignal(
        BUS_NAMES.usb,
        { path: USB_PATH },
        'org.bulkhead.Usb1',
        'DeviceRejected',
        ([, r]) => rejected.push(r),
      );
      rig.vms.failNextAttach = 'failed to find host usb device 1:20';
      await rejectsWith(
        rig.device(stick).Assign(vmPath('work'), {}),
        'BackendFailed',
        /failed to find host usb device/,
      );
      const p = await rig.props(stick);
      assert.equal(p.AssignedVm, '/');
      assert.equal(p.State, 'available');
      await waitFor('DeviceRejected', () => rejected.some((r) => /failed to find host usb device/.test(r)));
      await u();
    },
    new FakeUsbEnumerator([stick]),
  );
});

test('MoveFollowFocus (the switch step) moves follow-focus devices and answers when done; ReturnDevices puts each back', async () => {
  const stick = fakeDevice({ address: 13 });
  const cam = fakeDevice({ address: 14, serial: 'cam' });
  const plain = fakeDevice({ address: 15, serial: 'plain' });
  await withRig(
    async (rig) => {
      rig.vms.addVm('work');
      rig.vms.addVm('home', { slot: 2 });
      await rig.startDaemon();
      await rig.device(stick).Assign(vmPath('work'), {});
      await rig.device(stick).SetFollowFocus(true);
      await rig.device(cam).SetFollowFocus(true); // in the Control Domain
      await rig.device(plain).Assign(vmPath('work'), {}); // not follow-focus: stays

      const moves = await rig.usbApi().MoveFollowFocus(vmPath('home'), {});
      // Answered once the moves are over: no waiting for a later ActiveVm change.
      const byId = new Map(moves.map((m) => [m[0], m]));
      assert.deepEqual(
        [...byId.keys()].sort(),
        [deviceId(stick), deviceId(cam)].sort(),
        'one row per follow-focus device',
      );
      assert.equal(byId.get(deviceId(stick))![1], vmPath('work'));
      assert.equal(byId.get(deviceId(cam))![1], '/');
      assert.ok(moves.every((m) => m[2] === 'moved' && typeof m[3] === 'bigint'));
      assert.equal((await rig.props(stick)).AssignedVm, vmPath('home'));
      assert.equal((await rig.props(cam)).AssignedVm, vmPath('home'));
      assert.equal((await rig.props(plain)).AssignedVm, vmPath('work'));

      const back = await rig.usbApi().ReturnDevices(moves.map((m) => [m[0], m[1]] as [string, string]));
      assert.ok(
        back.every((m) => m[2] === 'returned'),
        JSON.stringify(back, (_k, v) => String(v)),
      );
      assert.equal((await rig.props(stick)).AssignedVm, vmPath('work'));
      assert.equal((await rig.props(cam)).AssignedVm, '/');
      assert.equal(rig.vms.vm('home').attachments.size, 0);

      // Nothing moves to the switcher; a VM that is not running is a named error.
      assert.deepEqual(await rig.usbApi().MoveFollowFocus('/', {}), []);
      await rejectsWith(rig.usbApi().MoveFollowFocus(vmPath('nope'), {}), 'InvalidArgument', /no VM/);
      // A device that is gone is reported in its row, not thrown.
      const gone = await rig.usbApi().ReturnDevices([['no-such-device', '/']]);
      assert.match(gone[0][2], /^failed: .*not present/);
    },
    new FakeUsbEnumerator([stick, cam, plain]),
  );
});

test('a rules file others may write, a symlink or a FIFO is refused: nothing is attached by it, and the daemon starts', async () => {
  const stick = fakeDevice({ address: 21, serial: 'RULED1' });
  const rules = JSON.stringify({
    rules: [{ match: { vid: '0781', pid: '5567', serial: 'RULED1' }, action: 'always', vm: 'work' }],
  });
  const cases: Array<[string, (file: string, dir: string) => void, boolean]> = [
    ['root-only (the control: the rule applies)', (f) => writeFileSync(f, rules, { mode: 0o644 }), true],
    ['writable by others', (f) => (writeFileSync(f, rules), chmodSync(f, 0o666)), false],
    [
      'a symlink to a file with the rule',
      (f, dir) => (
        writeFileSync(join(dir, 'elsewhere.json'), rules),
        symlinkSync(join(dir, 'elsewhere.json'), f)
      ),
      false,
    ],
    ['a FIFO (would hold the start for good)', (f) => execFileSync('mkfifo', [f]), false],
  ];
  for (const [what, make, applies] of cases)
    await withRig(
      async (rig) => {
        rig.vms.addVm('work');
        make(rig.rulesFile, rig.dir);
        await rig.startDaemon();
        if (applies)
          await waitFor(
            `${what}: attached by the rule`,
            async () => (await rig.props(stick)).State === 'attached',
          );
        else {
          await new Promise((r) => setTimeout(r, 200));
          const p = await rig.props(stick);
          assert.equal(p.AssignedVm, '/', what);
          assert.equal(
            rig.vms.calls.filter((c) => c.method === 'AttachUsbDevice').length,
            0,
            `${what}: nothing attached`,
          );
        }
      },
      new FakeUsbEnumerator([stick]),
    );
});
