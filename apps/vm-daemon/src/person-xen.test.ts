/**
 * The person's VMs on the Xen entry (issue 18): the manager core with the real Xen backend over a
 * fake Xen (FakeXenWorld: a model of `xl`, no hypervisor), real files and real qemu-img.
 *
 * - CreateVm on Xen makes an HVM domain: the xl config built from the options (CD-ROM, disk,
 *   USB controller, input QMP socket) is what `xl create` gets.
 * - Every option the Xen backend cannot honour is refused naming it, on CreateVm, on Update and in
 *   a Xen file on disk; QEMU keeps taking them.
 * - Hostile requests on the Xen backend change nothing.
 * - A person's VM file of the other backend (made on the KVM entry) is listed as unavailable,
 *   keeps its slot, cannot start, be switched to or changed, and its file is never touched.
 * - Eject on Xen is `xl cd-eject <domid> hdc`, then the file no longer names the ISO.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BulkheadError, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { BOOT_ENTRY, loadConfigDir, type BackendName } from './config';
import { vmProperties } from './dbus-service';
import { freeBytes } from './disk-manager';
import { StateStore } from './state-store';
import { DONE, type InputFocus } from './switch-transaction';
import { VmManager } from './vm-manager';
import { unavailableReason } from './vm-registry';
import { VmStore, type VmOptions } from './vm-store';
import { XenBackend } from './backend/xen/xen-backend';
import { FakeXenWorld } from './testing/fake-xen-world';
import { xenDefinitionProblem } from './backend/xen/xen-options';

const log = createLogger('test', 'error');
const fakeInput: InputFocus = { freeze: async () => DONE, setFocus: async () => DONE };

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vmd-person-xen-'));
  const configDir = join(root, 'etc-vms');
  const media = join(root, 'media');
  const dumpDir = join(root, 'dump');
  for (const d of [configDir, media, dumpDir]) mkdirSync(d);
  // The admin's business VM of the Xen entry, and its KVM-entry twin (set aside on Xen).
  const business = { id: 'business', name: 'Business', slot: 2, color: '#c0392b', memoryMiB: 64 };
  writeFileSync(join(configDir, 'business.json'), JSON.stringify({ ...business, kind: 'business' }));
  writeFileSync(
    join(configDir, 'business-xen.json'),
    JSON.stringify({ ...business, kind: 'business', backend: 'xen' }),
  );
  writeFileSync(join(media, 'install.iso'), Buffer.alloc(64 * 1024));
  const store = (backend: BackendName) =>
    new VmStore({
      dir: join(root, 'person-vms'),
      imageDir: join(root, 'person-images'),
      mediaRoots: [media],
      backend,
      // As main.ts: the Xen backend's own check of each file (guest kind, sidecar, medium).
      check: backend === 'xen' ? xenDefinitionProblem : undefined,
    });
  const world = new FakeXenWorld();
  const backend = new XenBackend({ runRoot: join(root, 'run'), runner: world, log, dumpDir, pollMs: 0 });
  const manager = new VmManager({
    backend,
    input: fakeInput,
    configDir,
    config: { backends: ['xen'], mediaRoots: [media], check: xenDefinitionProblem },
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
    person: store('xen'),
  });
  manager.reload();
  const files = (): string[] => {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const n of readdirSync(d, { withFileTypes: true }))
        if (n.isDirectory()) walk(join(d, n.name));
        else out.push(join(d, n.name).slice(root.length));
    };
    walk(root);
    return out.sort();
  };
  const done = async () => {
    manager.close();
    await backend.detachAll();
    rmSync(root, { recursive: true, force: true });
  };
  return { root, configDir, media, world, backend, manager, store, files, done };
}

async function refused(p: Promise<unknown>, name: string, words: RegExp): Promise<void> {
  await assert.rejects(p, (e: BulkheadError) => {
    assert.equal(e.errorName, name, e.message);
    assert.match(e.message, words);
    return true;
  });
}

const cfgLines = (t: ReturnType<typeof setup>, id: string) =>
  readFileSync(join(t.root, 'run', id, `${id}.cfg`), 'utf8').split('\n');

test('CreateVm on Xen makes an HVM domain: its xl config has the ISO as CD-ROM booted first, the qcow2 disk, the emulated USB controller, the input QMP socket and its screen as VNC for the VM view', async () => {
  const t = setup();
  try {
    const iso = join(t.media, 'install.iso');
    const id = await t.manager.createVm('Lab', {
      slot: 3,
      memory_mib: 256,
      vcpus: 2,
      disk_size_mib: 64,
      usb_auto_attach: true,
      cdrom: iso,
    });
    assert.equal(id, 'lab');
    const e = t.manager.get('lab');
    assert.equal(e.owner, 'person');
    assert.equal(e.unavailable, '');
    const doc = JSON.parse(readFileSync(e.def.file, 'utf8')) as Record<string, unknown>;
    assert.equal(doc.backend, 'xen', 'the file is for the backend the daemon runs');
    assert.equal(doc.kernel, undefined, 'no kernel: an HVM guest boots through its firmware');
    assert.equal(vmProperties(t.manager, 'lab').Backend, 'xen');

    await t.manager.start('lab');
    assert.deepEqual(t.world.callsMatching(/^xl create /), [`xl create ${join(t.root, 'run/lab/lab.cfg')}`]);
    assert.deepEqual(
      t.world.domains.map((d) => d.name),
      ['lab'],
      'xl list shows the domain after Start',
    );
    const disk = join(t.root, 'person-images', 'lab.qcow2');
    const runDir = join(t.root, 'run', 'lab');
    const lines = cfgLines(t, 'lab');
    for (const l of [
      'name = "lab"',
      'type = "hvm"',
      'memory = 256',
      'vcpus = 2',
      'tsc_mode = "native"',
      'vga = "stdvga"',
      'boot = "dc"',
      'usbctrl = [ "type=devicemodel,version=2,ports=6" ]',
      `disk = [ "format=qcow2,vdev=hda,access=rw,backendtype=qdisk,target=${disk}", "format=raw,vdev=hdc,access=ro,devtype=cdrom,target=${iso}" ]`,
      `device_model_args_hvm = [ "-qmp", "unix:${runDir}/qmp.sock,server=on,wait=off", "-qmp", "unix:${runDir}/input-qmp.sock,server=on,wait=off", "-vnc", "unix:${runDir}/vnc.sock" ]`,
    ])
      assert.ok(lines.includes(l), `missing '${l}' in\n${lines.join('\n')}`);
    assert.ok(!lines.some((l) => l.startsWith('kernel') || l.startsWith('vif')), 'no kernel, no network');
    assert.equal(
      vmProperties(t.manager, 'lab').InputQmpSocket,
      join(runDir, 'input-qmp.sock'),
      "keys reach it through its device model's QMP",
    );
  } finally {
    await t.done();
  }
});

test("every option's validation per backend: what Xen cannot do is refused by name (CreateVm, Update, a file on disk); QEMU keeps taking it", async () => {
  const t = setup();
  try {
    const before = t.files();
    const xenRefusals: Array<[VmOptions, RegExp]> = [
      [
        { network: 'user' },
        /^network: 'user' is not available on the Bulkhead \(Xen\) boot entry \(xen takes none\)/,
      ],
      [{ network: 'bridge:br0' }, /^network: must be one of none, got "bridge:br0"/],
      [
        { disk_size_mib: 8, disk_format: 'vhdx' },
        /^disk_format: vhdx is not available on the Bulkhead \(Xen\)/,
      ],
      [{ disk_size_mib: 8, disk_format: 'qed' }, /^disk_format: must be one of qcow2, raw, vpc, vhdx/],
      [{ memory_mib: 8 }, /^memory_mib: must be an integer from 16/],
      [{ vcpus: 65 }, /^vcpus: must be an integer from 1 to 64/],
      [{ color: 'red' }, /^color: must be #rrggbb/],
      [{ slot: 2 }, /^slot: slot 2 is already used/],
    ];
    for (const [o, words] of xenRefusals)
      await refused(t.manager.createVm('Lab', o), 'InvalidArgument', words);
    assert.deepEqual(t.files(), before, 'a refused request writes nothing');

    // The same requests the QEMU backend takes (planned only: nothing written).
    const taken = { ids: new Set(['business']), slots: new Set([2]) };
    const qemu = t.store('qemu');
    assert.equal(qemu.planCreate('Lab', { network: 'user' }, taken).def.network.mode, 'user');
    assert.equal(
      qemu.planCreate('Lab', { disk_size_mib: 8, disk_format: 'vhdx' }, taken).newDisk?.format,
      'vhdx',
    );
    assert.equal(qemu.planCreate('Lab', {}, taken).def.backend, 'qemu');
    assert.throws(
      () => qemu.planCreate('Lab', { network: 'bridge:br0' }, taken),
      /network: must be one of none, user/,
    );
    // Formats Xen does take.
    for (const format of ['qcow2', 'raw', 'vpc'])
      assert.equal(
        t.store('xen').planCreate('Lab', { disk_size_mib: 8, disk_format: format }, taken).def.backend,
        'xen',
      );

    // Update on Xen: the same rules, by name; a valid change goes through.
    await t.manager.createVm('Lab', {});
    const file = t.manager.get('lab').def.file;
    const written = readFileSync(file, 'utf8');
    await refused(
      t.manager.updateVm('lab', { network: 'user' }),
      'InvalidArgument',
      /^network: 'user' is not available on the Bulkhead \(Xen\)/,
    );
    assert.equal(readFileSync(file, 'utf8'), written);
    await t.manager.updateVm('lab', { memory_mib: 384, usb_auto_attach: true });
    assert.equal(t.manager.get('lab').def.memoryMiB, 384);
    assert.equal(t.manager.get('lab').def.backend, 'xen', 'an Update keeps the backend');

    // A Xen file on disk with a QEMU-only value is refused when it is loaded, naming the field.
    const dir = join(t.root, 'admin-check');
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'a.json'),
      JSON.stringify({ id: 'a', slot: 1, color: '#000000', memoryMiB: 64, backend: 'xen', network: 'user' }),
    );
    writeFileSync(
      join(dir, 'b.json'),
      JSON.stringify({
        id: 'b',
        slot: 2,
        color: '#000000',
        memoryMiB: 64,
        backend: 'xen',
        disks: [{ path: 'b.vhdx', format: 'vhdx' }],
      }),
    );
    writeFileSync(
      join(dir, 'c.json'),
      JSON.stringify({
        id: 'c',
        slot: 3,
        color: '#000000',
        memoryMiB: 64,
        network: 'user',
        disks: [{ path: 'c.vhdx', format: 'vhdx' }],
      }),
    );
    const loaded = loadConfigDir(dir);
    assert.deepEqual(
      loaded.errors.map((e) => [e.field, /QEMU-only|not supported by the Xen backend/.test(e.reason)]),
      [
        ['network', true],
        ['disks[0].format', true],
      ],
    );
    assert.deepEqual(
      loaded.vms.map((v) => v.id),
      ['c'],
      'the same values in a QEMU file are fine',
    );

    // A medium on a Xen guest that boots a kernel directly: refused when the file is loaded.
    const pvDir = join(t.root, 'pv-check');
    mkdirSync(pvDir);
    writeFileSync(join(pvDir, 'k'), 'kernel');
    writeFileSync(join(t.media, 'x.iso'), 'iso');
    const pv = { slot: 1, color: '#000000', memoryMiB: 64, backend: 'xen', kernel: 'k' };
    writeFileSync(join(pvDir, 'pv.json'), JSON.stringify({ ...pv, id: 'pv', cdrom: join(t.media, 'x.iso') }));
    writeFileSync(join(pvDir, 'pv2.json'), JSON.stringify({ ...pv, id: 'pv2', slot: 2 }));
    const pvLoaded = loadConfigDir(pvDir, { mediaRoots: [t.media], check: xenDefinitionProblem });
    assert.deepEqual(
      pvLoaded.errors.map((e) => [e.field, e.reason.slice(0, 60)]),
      [['cdrom', 'a PV guest boots its kernel directly and has no emulated CD-']],
    );
    assert.deepEqual(
      pvLoaded.vms.map((v) => v.id),
      ['pv2'],
    );
  } finally {
    await t.done();
  }
});

test('hostile requests on the Xen backend (path traversal, ISO or import outside the media roots, a symlink out, a disk beyond the free space) answer a named error and change nothing', async () => {
  const t = setup();
  try {
    mkdirSync(join(t.root, 'secret'));
    writeFileSync(join(t.root, 'secret', 'shadow'), 'root:$y$secret');
    symlinkSync(join(t.root, 'secret', 'shadow'), join(t.media, 'innocent.iso'));
    mkdirSync(join(t.root, 'person-images'), { recursive: true });
    const before = t.files();
    const freeMiB = Math.floor(freeBytes(join(t.root, 'person-images')) / 1048576);
    const cases: Array<[string, VmOptions, RegExp]> = [
      ['../../etc/xen/evil', {}, /^name: must not contain '\/' or '\\'/],
      ['Lab', { id: '../../etc/xen/auto' }, /^id: must match/],
      ['Lab', { cdrom: '/etc/shadow' }, /^cdrom: resolves to \/etc\/shadow, outside/],
      ['Lab', { cdrom: `${t.media}/../secret/shadow` }, /^cdrom: resolves to .*secret\/shadow, outside/],
      [
        'Lab',
        { cdrom: join(t.media, 'innocent.iso') },
        /^cdrom: .*innocent\.iso leads to .*secret\/shadow through a symlink/,
      ],
      ['Lab', { cdrom: join(t.media, 'a,b.iso') }, /^cdrom: must not contain ','/],
      ['Lab', { disk_import: '/dev/sda' }, /^disk_import: resolves to \/dev\/sda, outside/],
      [
        'Lab',
        { disk_size_mib: Math.min(freeMiB + 1024, 1024 * 1024) },
        /^disk_size_mib: .* (more than the .* MiB free|must be from 1)/,
      ],
    ];
    for (const [name, o, words] of cases)
      await refused(t.manager.createVm(name, o), 'InvalidArgument', words);
    assert.deepEqual(t.files(), before);
    assert.deepEqual(t.world.calls, [], 'xl was never run');
  } finally {
    await t.done();
  }
});

test("a person's VM made on the KVM entry is listed on the Xen entry as unavailable there: its slot kept, not startable, not switchable, not changed, its file never touched", async () => {
  const t = setup();
  try {
    // What CreateVm wrote on the KVM boot entry (same person dir, QEMU backend).
    const kvm = t.store('qemu');
    const plan = kvm.planCreate('Old', { slot: 4, network: 'user' }, { ids: new Set(), slots: new Set([2]) });
    kvm.ensureDirs();
    kvm.write(plan.def.file, { ...plan.doc, autostart: true, cdrom: join(t.media, 'install.iso') });
    const bytes = readFileSync(plan.def.file);
    t.manager.reload();

    const e = t.manager.get('old');
    assert.equal(e.owner, 'person');
    assert.match(
      e.unavailable,
      /made on the Bulkhead \(KVM\) boot entry \(backend 'qemu'\): it runs only there, not on Bulkhead \(Xen\)/,
    );
    const props = vmProperties(t.manager, 'old');
    assert.equal(props.Unavailable, e.unavailable, 'the tile says why');
    assert.equal(props.LastError, '', 'not an error of the VM: it is fine, on the other entry');
    assert.equal(vmProperties(t.manager, 'business').Unavailable, '');
    assert.equal(props.Slot, 4);
    assert.equal(props.State, 'stopped');
    assert.deepEqual(t.manager.configErrors, [], 'not a config error: the file is fine, for the other entry');

    await refused(t.manager.start('old'), 'Unavailable', /^old: made on the Bulkhead \(KVM\) boot entry/);
    await refused(t.manager.switchTo(vmPath('old')), 'Unavailable', /Bulkhead \(KVM\)/);
    await refused(t.manager.switchToSlot(4), 'Unavailable', /Bulkhead \(KVM\)/);
    assert.equal(t.manager.lastSwitch, null, 'refused before any switch step ran');
    await t.manager.autostart();
    await refused(
      t.manager.updateVm('old', { color: '#ffffff' }),
      'Unavailable',
      /cannot change old: made on the Bulkhead \(KVM\)/,
    );
    await refused(t.manager.ejectVm('old'), 'Unavailable', /Bulkhead \(KVM\)/);
    assert.deepEqual(
      t.world.calls.filter((c) => !c.startsWith('xl list')),
      [],
      'no xl create for it, ever',
    );

    // Its id and slot stay taken, so the KVM entry finds it whole when the person boots it again.
    await refused(t.manager.createVm('New', { slot: 4 }), 'InvalidArgument', /^slot: slot 4 is already used/);
    await refused(t.manager.createVm('New', { id: 'old' }), 'InvalidArgument', /^id: 'old' is already used/);
    assert.equal(t.manager.get(await t.manager.createVm('New', {})).def.slot, 1);
    t.manager.reload();
    assert.deepEqual(
      readFileSync(plan.def.file),
      bytes,
      'the file is byte for byte what the KVM entry wrote',
    );

    // The rule both ways: a Xen file on a QEMU daemon says where it runs.
    assert.match(
      unavailableReason({ ...e.def, backend: 'xen' }, ['qemu']),
      new RegExp(`^made on the ${BOOT_ENTRY.xen.replace(/[()]/g, '\\$&')} boot entry`),
    );
    assert.equal(unavailableReason(e.def, ['qemu', 'xen']), '');

    // The person may still delete it on purpose (Delete is theirs, with the switcher's confirmation).
    await t.manager.deleteVm('old', false);
    assert.ok(!existsSync(plan.def.file));
  } finally {
    await t.done();
  }
});

test('Eject on Xen runs xl cd-eject on the running domain and drops the ISO from the file (the next start boots the disk); a failed eject changes nothing; a PV guest has no CD-ROM', async () => {
  const t = setup();
  try {
    const iso = join(t.media, 'install.iso');
    await t.manager.createVm('Lab', { disk_size_mib: 16, cdrom: iso });
    await t.manager.start('lab');
    const domid = t.world.domains.find((d) => d.name === 'lab')!.domid;

    t.world.failOn(
      /^xl cd-eject /,
      'libxl: error: libxl_disk.c:1010:cdrom_insert_ejected: Domain 1:device model did not answer',
    );
    await refused(t.manager.ejectVm('lab'), 'BackendFailed', /xl cd-eject \d+ hdc failed/);
    assert.equal(t.manager.get('lab').def.cdrom, iso, 'the file still names the ISO');

    await t.manager.ejectVm('lab');
    assert.deepEqual(t.world.callsMatching(/^xl cd-eject/), [
      `xl cd-eject ${domid} hdc`,
      `xl cd-eject ${domid} hdc`,
    ]);
    assert.equal(t.manager.get('lab').def.cdrom, null);
    assert.equal(JSON.parse(readFileSync(t.manager.get('lab').def.file, 'utf8')).cdrom, undefined);
    await refused(t.manager.ejectVm('lab'), 'InvalidState', /has no installation medium/);

    await t.manager.kill('lab');
    await t.manager.start('lab');
    const lines = cfgLines(t, 'lab');
    assert.ok(lines.includes('boot = "c"'), lines.join('\n'));
    assert.ok(!lines.some((l) => l.includes('devtype=cdrom')));

    // The backend itself refuses a CD-ROM for guests that boot a kernel directly.
    writeFileSync(join(t.root, 'vmlinuz'), 'k');
    const pv = {
      ...t.manager.get('lab').def,
      id: 'pv',
      kernel: join(t.root, 'vmlinuz'),
      file: join(t.root, 'pv.json'),
    };
    assert.throws(
      () => t.backend.configFor({ ...pv, cdrom: iso }),
      /cdrom: a PV guest boots its kernel directly and has no emulated CD-ROM/,
    );
    await t.backend.start(pv);
    await refused(t.backend.ejectCdrom('pv'), 'NotSupported', /PV guest: it has no emulated CD-ROM/);
    const three = {
      ...t.manager.get('lab').def,
      cdrom: iso,
      disks: [0, 1, 2].map(() => t.manager.get('lab').def.disks[0]),
    };
    assert.throws(
      () => t.backend.configFor(three),
      /cdrom: the CD-ROM is hdc on the emulated IDE bus: at most 2 disks/,
    );
  } finally {
    await t.done();
  }
});
