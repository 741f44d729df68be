import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import { createLogger, type VmState } from '@bulkhead/common';
import type { VmDefinition } from '../../config';
import { XenBackend } from './xen-backend';
import { FakeXenWorld } from '../../testing/fake-xen-world';
import { FakeXlRunner } from '../../testing/fake-xl-runner';

const log = createLogger('test', 'error');

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'xenbe-'));
  const world = new FakeXenWorld();
  const dumpDir = join(root, 'dump');
  mkdirSync(dumpDir);
  // xl's per-domain logs: the test's own dir, never the host's /var/log/xen.
  const xlLogDir = join(root, 'xl-logs');
  mkdirSync(xlLogDir);
  const mk = () =>
    new XenBackend({ runRoot: join(root, 'run'), runner: world, log, dumpDir, xlLogDir, pollMs: 0 });
  const def = (id: string, over: Partial<VmDefinition> = {}): VmDefinition => {
    const file = join(root, `${id}.json`);
    writeFileSync(join(root, 'vmlinuz'), 'k');
    return {
      id,
      name: id,
      slot: 1,
      kind: 'personal',
      color: '#000000',
      icon: '',
      memoryMiB: 64,
      vcpus: 1,
      disks: [],
      network: { mode: 'none' },
      autostart: false,
      gpu: null,
      usbAutoAttach: false,
      display: 'none',
      backend: 'xen',
      kernel: join(root, 'vmlinuz'),
      append: '',
      file,
      ...over,
    };
  };
  return { root, world, dumpDir, xlLogDir, mk, def };
}

const states = (b: XenBackend) => {
  const seen: Array<[string, VmState, string]> = [];
  b.on('state', (id, s, r) => seen.push([id, s, r]));
  return seen;
};

test('start writes the config, runs xl create and reports the domid; stop shuts down and waits', async () => {
  const { world, mk, def, root } = setup();
  const b = mk();
  const seen = states(b);
  const r = await b.start(def('personal'));
  assert.deepEqual(r.handle, { kind: 'domid', domid: 1 }, 'a Xen VM is named by its domid');
  assert.equal(
    r.inputQmpSocket,
    join(root, 'run', 'personal', 'input-qmp.sock'),
    'a PV guest gets input through the QMP socket of the QEMU serving its virtual keyboard',
  );
  const cfg = readFileSync(join(root, 'run', 'personal', 'personal.cfg'), 'utf8');
  assert.match(cfg, /type = "pv"/);
  assert.ok(world.calls.includes(`xl create ${join(root, 'run', 'personal', 'personal.cfg')}`));
  assert.equal(b.domidOf('personal'), 1);
  const stopped = b.stop('personal', 5000);
  world.fire('@releaseDomain');
  assert.deepEqual(await stopped, { killed: false });
  assert.ok(world.calls.includes('xl shutdown -F 1'));
  assert.deepEqual(seen, [['personal', 'stopped', 'shut down on request']]);
  await b.detachAll();
});

test('a domain destroyed behind our back is reported on @releaseDomain; a core dump means crashed', async () => {
  const { world, mk, def, dumpDir } = setup();
  const b = mk();
  const seen = states(b);
  await b.start(def('a'));
  await b.start(def('b'));
  world.domains = world.domains.filter((d) => d.name !== 'a');
  world.fire('@releaseDomain');
  await b.reconcileSoon();
  assert.equal(seen.length, 1);
  assert.deepEqual(seen[0].slice(0, 2), ['a', 'stopped']);
  assert.match(seen[0][2], /gone without a stop request/);
  writeFileSync(join(dumpDir, 'b'), 'core');
  world.domains = world.domains.filter((d) => d.name !== 'b');
  world.fire('@releaseDomain');
  await b.reconcileSoon();
  assert.deepEqual(seen[1].slice(0, 2), ['b', 'crashed']);
  assert.match(seen[1][2], /crashed \(xl wrote a core dump/);
  await b.detachAll();
});

test("a guest that rebooted while no vm-daemon ran is found by the next daemon's adopt (rebootedWhileAway); a power-off is not", async () => {
  const { world, def, mk, xlLogDir } = setup();
  const first = mk();
  await first.start(def('a'));
  await first.start(def('b'));
  // vm-daemon is killed; meanwhile a's guest reboots (xl destroys domain 1), b's powers off.
  writeFileSync(join(xlLogDir, 'xl-a.log'), 'Domain 1 has shut down, reason code 1 0x1\n');
  writeFileSync(join(xlLogDir, 'xl-b.log'), 'Domain 2 has shut down, reason code 0 0x0\n');
  world.domains = [];
  const next = mk();
  assert.equal(await next.adopt(def('a')), null);
  assert.equal(await next.adopt(def('b')), null);
  assert.match(
    String(next.rebootedWhileAway('a')),
    /domain 1: the guest rebooted while vm-daemon was not running/,
  );
  assert.equal(next.rebootedWhileAway('a'), null, 'asked once');
  assert.equal(next.rebootedWhileAway('b'), null);
  await first.detachAll();
});

test("a rebooted guest's record outlives the daemon that saw the reboot, until its next start", async () => {
  const { world, def, mk, xlLogDir } = setup();
  const first = mk();
  await first.start(def('a'));
  writeFileSync(join(xlLogDir, 'xl-a.log'), 'Domain 1 has shut down, reason code 1 0x1\n');
  world.domains = [];
  world.fire('@releaseDomain');
  await first.reconcileSoon();
  // Killed before it started the guest again: the next daemon still learns of the reboot.
  const next = mk();
  assert.equal(await next.adopt(def('a')), null);
  assert.match(String(next.rebootedWhileAway('a')), /domain 1: the guest rebooted/);
  await first.detachAll();
});

test('a start waits while Xen is still destroying the last domain of the same name (a rebooted guest started again at once)', async () => {
  const { world, def, mk } = setup();
  const b = mk();
  await b.start(def('a'));
  // xl destroyed domain 1 after the guest's reboot: gone from `xl list -l`, its name not yet free.
  const [old] = world.domains.splice(0, 1);
  world.dying.push(old);
  world.fire('@releaseDomain');
  await b.reconcileSoon();
  setTimeout(() => (world.dying = []), 600);
  const t0 = Date.now();
  const again = await b.start(def('a'));
  assert.ok(Date.now() - t0 >= 500, 'it waited for the name');
  assert.deepEqual(again.handle, { kind: 'domid', domid: 2 });
  assert.equal(world.domains.length, 1);
  await b.detachAll();
});

test('a name still held after the bound fails the start by name, and no xl create ran', async () => {
  const { world, def, root } = setup();
  const b = new XenBackend({
    runRoot: join(root, 'run'),
    runner: world,
    log,
    dumpDir: join(root, 'dump'),
    xlLogDir: join(root, 'xl-logs'),
    pollMs: 0,
    nameFreeTimeoutMs: 300,
  });
  world.dying.push({ domid: 7, name: 'a' });
  await assert.rejects(
    b.start(def('a')),
    (e: BulkheadError) =>
      e.errorName === 'BackendFailed' && /domain 7 still holds the name 'a' 0.3 s after/.test(e.message),
  );
  assert.ok(!world.calls.some((c) => c.startsWith('xl create')), `no create: ${world.calls.join(', ')}`);
});

test("how a domain ended comes from xl's log of it: a reboot (e.g. an HVM triple fault) is told apart from a power-off", async () => {
  const { world, def, mk, xlLogDir } = setup();
  const b = mk();
  const seen: unknown[][] = [];
  b.on('state', (...args) => seen.push(args));
  await b.start(def('a'));
  await b.start(def('b'));
  // What xl's process for each domain writes before it destroys it (Xen 4.17's xl_vmcontrol.c).
  writeFileSync(
    join(xlLogDir, 'xl-a.log'),
    'Waiting for domain a (domid 1) to die [pid 605]\nDomain 1 has shut down, reason code 1 0x1\nAction for shutdown reason code 1 is destroy\n',
  );
  writeFileSync(
    join(xlLogDir, 'xl-b.log'),
    'Waiting for domain b (domid 2) to die [pid 606]\nDomain 2 has shut down, reason code 0 0x0\n',
  );
  world.domains = world.domains.filter((d) => d.name !== 'a' && d.name !== 'b');
  world.fire('@releaseDomain');
  await b.reconcileSoon();
  const a = seen.find((s) => s[0] === 'a')!;
  assert.deepEqual([a[1], a[3]], ['stopped', { guestReboot: true }]);
  assert.match(String(a[2]), /the guest rebooted/);
  const bb = seen.find((s) => s[0] === 'b')!;
  assert.deepEqual([bb[1], bb[3]], ['stopped', {}]);
  assert.match(String(bb[2]), /the guest powered off/);
  await b.detachAll();
});

test("xl failures come back as BackendFailed with xl's own words", async () => {
  const { world, mk, def } = setup();
  const b = mk();
  world.failOn(
    /^xl create/,
    'Parsing config from x.cfg\nlibxl: error: libxl_create.c:689:libxl__domain_make: Domain 5:domain creation fail: Cannot allocate memory\n',
  );
  await assert.rejects(
    b.start(def('big')),
    (e: BulkheadError) =>
      e.errorName === 'BackendFailed' &&
      /^xl create .*failed \(exit 1\): libxl: error: .*Cannot allocate memory/.test(e.message),
  );
  const r = new FakeXlRunner().on(/^xl list -l$/, { stdout: 'not json' });
  const b2 = new XenBackend({ runRoot: '/nonexistent', runner: r, log, pollMs: 0 });
  await assert.rejects(b2.listDomains(), /output is not JSON/);
});

test('a domain already named like the VM is refused, not duplicated', async () => {
  const { world, mk, def } = setup();
  world.add({ name: 'personal' });
  await assert.rejects(
    mk().start(def('personal')),
    (e: BulkheadError) => e.errorName === 'InvalidState' && /already exists \(domid 1\)/.test(e.message),
  );
});

test('fake xl: a daemon SIGKILLed between xl pause/unpause and its domain.json: the next one adopts the run state Xen has, not the record', async () => {
  const { world, mk, def, root } = setup();
  const first = mk();
  await first.start(def('work'));
  await first.start(def('notes'));
  await first.pause('notes');
  const record = (id: string) => join(root, 'run', id, 'domain.json');
  // What a SIGKILL right after each xl command leaves: Xen changed the domain, the record is the old one.
  const workBefore = readFileSync(record('work'));
  const notesBefore = readFileSync(record('notes'));
  await first.pause('work');
  await first.resume('notes');
  writeFileSync(record('work'), workBefore);
  writeFileSync(record('notes'), notesBefore);
  await first.detachAll();
  const second = mk();
  assert.equal((await second.adopt(def('work')))?.state, 'paused', 'work is paused in Xen, shown running');
  assert.equal((await second.adopt(def('notes')))?.state, 'running', 'notes runs in Xen, shown paused');
  // Both are usable from there: work resumes, notes pauses.
  await second.resume('work');
  await second.pause('notes');
  assert.equal(world.domains.find((d) => d.name === 'work')?.paused, false);
  assert.equal(world.domains.find((d) => d.name === 'notes')?.paused, true);
  await second.detachAll();
});

test('a restarted daemon re-adopts running domains with their domid and paused flag', async () => {
  const { world, mk, def, root } = setup();
  const first = mk();
  await first.start(def('personal'));
  await first.start(def('work'));
  await first.pause('work');
  await first.detachAll();
  const second = mk();
  const seen = states(second);
  const p = await second.adopt(def('personal'));
  const w = await second.adopt(def('work'));
  assert.deepEqual(p, {
    handle: { kind: 'domid', domid: 1 },
    inputQmpSocket: join(root, 'run', 'personal', 'input-qmp.sock'),
    adopted: true,
    state: 'running',
  });
  assert.equal(w?.state, 'paused');
  assert.equal(await second.adopt(def('ghost')), null);
  world.domains = world.domains.filter((d) => d.name !== 'personal');
  world.fire('@releaseDomain');
  await second.reconcileSoon();
  assert.deepEqual(
    seen.map((s) => s.slice(0, 2)),
    [['personal', 'stopped']],
  );
  await second.detachAll();
});

test('stop that times out destroys the domain and says so', async () => {
  const { world, mk, def } = setup();
  const b = mk();
  await b.start(def('stuck'));
  world.on(/^xl shutdown -F \d+$/, { code: 0 }); // the guest ignores the request
  const seen = states(b);
  assert.deepEqual(await b.stop('stuck', 50), { killed: true });
  assert.ok(world.calls.includes('xl destroy 1'));
  assert.deepEqual(seen, [['stuck', 'stopped', 'destroyed: the guest did not shut down in time']]);
  assert.equal(existsSync(join(b['opts'].runRoot, 'stuck', 'domain.json')), false);
});

test('USB: attach by hostbus/hostaddr gives a ctrl/port handle; list and detach use it', async () => {
  const { world, mk, def } = setup();
  const b = mk();
  const d = def('hvm', { kernel: null });
  await b.start(d);
  const h = await b.attachUsb('hvm', { bus: 3, address: 2 });
  assert.equal(h, 'xenusb-c0-p1');
  assert.ok(world.calls.includes('xl usbdev-attach 1 hostbus=3 hostaddr=2'));
  assert.deepEqual(await b.listUsb('hvm'), [['xenusb-c0-p1', 3, 2]]);
  await b.detachUsb('hvm', h);
  assert.ok(world.calls.includes('xl usbdev-detach 1 0 1'));
  assert.deepEqual(await b.listUsb('hvm'), []);
  await assert.rejects(b.detachUsb('hvm', h), (e: BulkheadError) => e.errorName === 'NoSuchDevice');
  await assert.rejects(
    b.detachUsb('hvm', 'usbhost-b1-a2'),
    (e: BulkheadError) => e.errorName === 'NoSuchDevice',
  );
  await b.start(def('pv'));
  await assert.rejects(
    b.attachUsb('pv', { bus: 1, address: 2 }),
    (e: BulkheadError) =>
      e.errorName === 'NotSupported' && /^pv: a PV guest cannot take USB devices .*pvUSB/.test(e.message),
  );
  const noCtrl = def('hvm-no-usb', { kernel: null });
  writeFileSync(noCtrl.file.replace(/\.json$/, '.xen'), '{"usbctrl":null}');
  await b.start(noCtrl);
  await assert.rejects(
    b.attachUsb('hvm-no-usb', { bus: 1, address: 2 }),
    (e: BulkheadError) => e.errorName === 'NotSupported' && /no USB controller/.test(e.message),
  );
  // A PV guest's screenshot is asked of the QEMU serving its vfb (its qmp.sock); none runs here.
  await assert.rejects(
    b.screenshot('pv', 1000),
    (e: BulkheadError) => e.errorName === 'BackendFailed' && /^pv: screendump: /.test(e.message),
  );
  await b.detachAll();
});

test('USB: a device recorded only in xenstore (Xen 4.17 devicemodel controller) is found, listed and detached', async () => {
  const { world, root, def } = setup();
  world.usbInXenstore = true;
  // busid "<bus>-<addr>" in the fake; sysfs resolves the real "1-1" style ids.
  const usbBusAddr = (busid: string) => {
    const [bus, address] = busid.split('-').map(Number);
    return { bus, address };
  };
  const b = new XenBackend({
    runRoot: join(root, 'run'),
    runner: world,
    log,
    dumpDir: join(root, 'dump'),
    pollMs: 0,
    usbBusAddr,
  });
  await b.start(def('hvm', { kernel: null }));
  const h = await b.attachUsb('hvm', { bus: 1, address: 2 });
  assert.equal(h, 'xenusb-c0-p1');
  assert.deepEqual(await b.listUsb('hvm'), [['xenusb-c0-p1', 1, 2]]);
  await b.detachUsb('hvm', h);
  assert.ok(world.calls.includes('xl usbdev-detach 1 0 1'));
  assert.deepEqual(await b.listUsb('hvm'), []);
  await assert.rejects(b.detachUsb('hvm', h), (e: BulkheadError) => e.errorName === 'NoSuchDevice');
  await b.detachAll();
});

test('operations on a VM that does not run are InvalidState', async () => {
  const { mk } = setup();
  const b = mk();
  for (const op of [() => b.pause('x'), () => b.stop('x', 10), () => b.listUsb('x')])
    await assert.rejects(op(), (e: BulkheadError) => e.errorName === 'InvalidState');
});

test('runningDomains: the domains this backend runs, by name and domid; one gone leaves the list once its death is seen', async () => {
  const { world, mk, def } = setup();
  const b = mk();
  await b.start(def('a'));
  await b.start(def('b'));
  assert.deepEqual(b.runningDomains(), [
    { name: 'a', domid: 1 },
    { name: 'b', domid: 2 },
  ]);
  world.domains = world.domains.filter((d) => d.name !== 'a');
  world.fire('@releaseDomain');
  await b.reconcileSoon();
  assert.deepEqual(b.runningDomains(), [{ name: 'b', domid: 2 }]);
  await b.detachAll();
});

test('fake xl: a torn domain.json is kept aside (domain.json.corrupt) and the domain adopted from what xl says', async () => {
  const { mk, def, root } = setup();
  const first = mk();
  await first.start(def('personal'));
  await first.detachAll();
  const record = join(root, 'run', 'personal', 'domain.json');
  writeFileSync(record, '{"domid": 1, "ty');
  const second = mk();
  assert.equal((await second.adopt(def('personal')))?.state, 'running');
  assert.equal(readFileSync(`${record}.corrupt`, 'utf8'), '{"domid": 1, "ty', 'the torn record, as it was');
  await second.detachAll();
});
