/**
 * The person's VMs through the manager core (fake backend, real files, real qemu-img): every
 * option of CreateVm/Update is validated with an error naming it, a hostile request (path
 * traversal, a disk beyond the free space, an ISO outside the media roots, a symlink out of them)
 * changes nothing, an admin VM answers NotOwner, and files are written where the person's VMs
 * live, never in the admin's directory.
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
import { BulkheadError, SWITCHER_PATH } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from './testing/fake-backend';
import { StateStore } from './state-store';
import { DONE, type InputFocus } from './switch-transaction';
import { VmManager } from './vm-manager';
import { VmStore, idFromName, type VmOptions } from './vm-store';
import { freeBytes } from './disk-manager';
import { vmProperties } from './dbus-service';

const log = createLogger('test', 'error');

const fakeInput: InputFocus = {
  freeze: async () => DONE,
  setFocus: async () => DONE,
};

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vmd-store-'));
  const configDir = join(root, 'etc-vms');
  const media = join(root, 'media');
  mkdirSync(configDir);
  mkdirSync(media);
  writeFileSync(
    join(configDir, 'business.json'),
    JSON.stringify({
      id: 'business',
      name: 'Business',
      slot: 2,
      color: '#e07b00',
      memoryMiB: 32,
      kind: 'business',
    }),
  );
  writeFileSync(join(media, 'install.iso'), Buffer.alloc(64 * 1024));
  mkdirSync(join(media, 'folder'));
  const store = new VmStore({
    dir: join(root, 'person-vms'),
    imageDir: join(root, 'person-images'),
    mediaRoots: [media],
  });
  const backend = new FakeBackend();
  const manager = new VmManager({
    backend,
    input: fakeInput,
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
    person: store,
  });
  manager.reload();
  /** Every file under root, so a test can say "nothing changed". */
  const files = (): string[] => {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const n of readdirSync(d, { withFileTypes: true }))
        if (n.isDirectory()) walk(join(d, n.name));
        else out.push(join(d, n.name).slice(root.length));
    };
    walk(root);
    return out.filter((f) => !f.startsWith('/state/')).sort();
  };
  return {
    root,
    configDir,
    media,
    store,
    backend,
    manager,
    files,
    done: () => (manager.close(), rmSync(root, { recursive: true })),
  };
}

async function refused(p: Promise<unknown>, name: string, words: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof BulkheadError, `a named error, got ${String(e)}`);
    assert.equal(e.errorName, name, e.message);
    assert.match(e.message, words);
    return true;
  });
}

test('CreateVm writes a validated file into the person dir (never the admin dir) with a new qcow2 disk', async () => {
  const t = setup();
  try {
    const id = await t.manager.createVm('Lab', {
      slot: 3,
      color: '#00aa55',
      memory_mib: 128,
      vcpus: 2,
      disk_size_mib: 64,
      cdrom: join(t.media, 'install.iso'),
    });
    assert.equal(id, 'lab');
    const e = t.manager.get('lab');
    assert.equal(e.owner, 'person');
    assert.equal(e.def.slot, 3);
    assert.equal(e.def.memoryMiB, 128);
    assert.equal(e.def.cdrom, join(t.media, 'install.iso'));
    assert.equal(vmProperties(t.manager, 'lab').Owner, 'person');
    assert.equal(vmProperties(t.manager, 'business').Owner, 'admin');
    const file = join(t.root, 'person-vms', 'lab.json');
    assert.equal(e.def.file, file);
    assert.equal(
      JSON.parse(readFileSync(file, 'utf8')).disks[0].path,
      join(t.root, 'person-images', 'lab.qcow2'),
    );
    assert.ok(existsSync(join(t.root, 'person-images', 'lab.qcow2')));
    assert.deepEqual(readdirSync(t.configDir), ['business.json'], 'the admin dir is untouched');
    // A second VM of the same name gets its own id and the first free slot.
    assert.equal(await t.manager.createVm('Lab', {}), 'lab-2');
    assert.equal(t.manager.get('lab-2').def.slot, 1);
  } finally {
    t.done();
  }
});

test('every CreateVm option is validated and its error names the option; nothing is written', async () => {
  const t = setup();
  try {
    const before = t.files();
    const cases: Array<[string, VmOptions, string, RegExp]> = [
      ['Lab', { slot: 0 }, 'InvalidArgument', /^slot: must be an integer from 1 to 9, got 0/],
      ['Lab', { slot: 10 }, 'InvalidArgument', /^slot: must be an integer from 1 to 9/],
      ['Lab', { slot: 2 }, 'InvalidArgument', /^slot: slot 2 is already used/],
      ['Lab', { color: 'red' }, 'InvalidArgument', /^color: must be #rrggbb, got "red"/],
      ['Lab', { memory_mib: 8 }, 'InvalidArgument', /^memory_mib: must be an integer from 16/],
      ['Lab', { vcpus: 0 }, 'InvalidArgument', /^vcpus: must be an integer from 1 to 64/],
      ['Lab', { vcpus: 65 }, 'InvalidArgument', /^vcpus: must be an integer from 1 to 64/],
      ['Lab', { network: 'bridge:br0' }, 'InvalidArgument', /^network: must be one of none, user/],
      ['Lab', { network: 'wifi' }, 'InvalidArgument', /^network: must be one of none, user/],
      ['Lab', { disk_size_mib: 0 }, 'InvalidArgument', /^disk_size_mib: must be from 1/],
      [
        'Lab',
        { disk_size_mib: 64, disk_format: 'vmdk' },
        'InvalidArgument',
        /^disk_format: must be one of qcow2, raw, vpc, vhdx/,
      ],
      ['Lab', { disk_format: 'raw' }, 'InvalidArgument', /^disk_format: needs disk_size_mib or disk_import/],
      [
        'Lab',
        { disk_size_mib: 64, disk_import: join(t.media, 'install.iso') },
        'InvalidArgument',
        /^disk_import: give either/,
      ],
      ['Lab', { id: 'Business!' }, 'InvalidArgument', /^id: must match/],
      ['Lab', { id: 'business' }, 'InvalidArgument', /^id: 'business' is already used/],
      ['', {}, 'InvalidArgument', /^name: must have a visible character/],
      ['   ', {}, 'InvalidArgument', /^name: must have a visible character/],
      [
        'Lab\u202etxt',
        {},
        'InvalidArgument',
        /^name: must not contain control, bidi or invisible characters/,
      ],
      ['x'.repeat(65), {}, 'InvalidArgument', /^name: must be at most 64 characters/],
      [
        'Lab',
        { usb_auto_attach: true, cdrom: 'install.iso' },
        'InvalidArgument',
        /^cdrom: must be an absolute path/,
      ],
      ['Lab', { cdrom: join(t.media, 'missing.iso') }, 'InvalidArgument', /^cdrom: .*missing\.iso: ENOENT/],
      [
        'Lab',
        { cdrom: join(t.media, 'folder') },
        'InvalidArgument',
        /^cdrom: .*folder is not a regular file/,
      ],
      ['Lab', { cdrom: join(t.media, 'a,b.iso') }, 'InvalidArgument', /^cdrom: must not contain ','/],
    ];
    for (const [name, o, error, words] of cases) await refused(t.manager.createVm(name, o), error, words);
    assert.deepEqual(t.files(), before, 'no refused request wrote or removed a file');
    assert.deepEqual([...t.manager.vms.keys()], ['business']);
  } finally {
    t.done();
  }
});

test('hostile CreateVm requests (path traversal, disk beyond free space, ISO or import outside the media roots, a symlink out) answer a named error and change nothing', async () => {
  const t = setup();
  try {
    mkdirSync(join(t.root, 'secret'));
    writeFileSync(join(t.root, 'secret', 'shadow'), 'root:$y$secret');
    symlinkSync(join(t.root, 'secret', 'shadow'), join(t.media, 'innocent.iso'));
    mkdirSync(join(t.root, 'person-images'), { recursive: true });
    const before = t.files();
    const freeMiB = Math.floor(freeBytes(join(t.root, 'person-images')) / 1048576);
    const cases: Array<[string, VmOptions, RegExp]> = [
      ['../../etc/cron.d/evil', {}, /^name: must not contain '\/' or '\\'/],
      ['..\\..\\evil', {}, /^name: must not contain '\/' or '\\'/],
      ['Lab', { id: '../../etc/passwd' }, /^id: must match/],
      ['Lab', { id: '.hidden' }, /^id: must match/],
      [
        'Lab',
        { disk_size_mib: Math.min(freeMiB + 1024, 1024 * 1024) },
        /^disk_size_mib: .* (more than the .* MiB free|must be from 1)/,
      ],
      ['Lab', { cdrom: '/etc/shadow' }, /^cdrom: resolves to \/etc\/shadow, outside/],
      ['Lab', { cdrom: `${t.media}/../secret/shadow` }, /^cdrom: resolves to .*secret\/shadow, outside/],
      [
        'Lab',
        { cdrom: join(t.media, 'innocent.iso') },
        /^cdrom: .*innocent\.iso leads to .*secret\/shadow through a symlink/,
      ],
      ['Lab', { disk_import: '/etc/passwd' }, /^disk_import: resolves to \/etc\/passwd, outside/],
      ['Lab', { disk_import: join(t.media, 'innocent.iso') }, /^disk_import: .*through a symlink/],
    ];
    for (const [name, o, words] of cases)
      await refused(t.manager.createVm(name, o), 'InvalidArgument', words);
    assert.deepEqual(t.files(), before);
  } finally {
    t.done();
  }
});

test('Update changes a stopped person VM (every option validated by name); an admin VM answers NotOwner; a running one InvalidState', async () => {
  const t = setup();
  try {
    await t.manager.createVm('Lab', { slot: 3, disk_size_mib: 16, cdrom: join(t.media, 'install.iso') });
    await t.manager.updateVm('lab', {
      color: '#123456',
      memory_mib: 256,
      vcpus: 2,
      name: 'Lab two',
      network: 'user',
      usb_auto_attach: true,
      slot: 4,
    });
    const d = t.manager.get('lab').def;
    assert.deepEqual(
      [d.color, d.memoryMiB, d.vcpus, d.name, d.network.mode, d.usbAutoAttach, d.slot],
      ['#123456', 256, 2, 'Lab two', 'user', true, 4],
    );
    // Eject: the file no longer names the ISO, so the next start boots the disk.
    await t.manager.updateVm('lab', { cdrom: '' });
    assert.equal(t.manager.get('lab').def.cdrom, null);
    assert.equal(JSON.parse(readFileSync(d.file, 'utf8')).cdrom, undefined);
    const before = readFileSync(d.file, 'utf8');
    const cases: Array<[VmOptions, RegExp]> = [
      [{ color: '#12345' }, /^color: /],
      [{ memory_mib: 1 }, /^memory_mib: /],
      [{ vcpus: 100 }, /^vcpus: /],
      [{ slot: 2 }, /^slot: slot 2 is already used/],
      [{ slot: 12 }, /^slot: must be an integer from 1 to 9/],
      [{ name: '../x' }, /^name: must not contain/],
      [{ network: 'bridge:br0' }, /^network: /],
      [{ cdrom: '/etc/shadow' }, /^cdrom: resolves to \/etc\/shadow, outside/],
    ];
    for (const [o, words] of cases) await refused(t.manager.updateVm('lab', o), 'InvalidArgument', words);
    assert.equal(readFileSync(d.file, 'utf8'), before, 'a refused Update leaves the file as it was');

    const admin = readFileSync(join(t.configDir, 'business.json'), 'utf8');
    await refused(
      t.manager.updateVm('business', { color: '#000000' }),
      'NotOwner',
      /belongs to the administrator/,
    );
    await refused(t.manager.deleteVm('business', true), 'NotOwner', /belongs to the administrator/);
    assert.equal(readFileSync(join(t.configDir, 'business.json'), 'utf8'), admin);

    await t.manager.start('lab');
    await refused(t.manager.updateVm('lab', { memory_mib: 64 }), 'InvalidState', /is running; stop it first/);
    await refused(t.manager.deleteVm('lab', true), 'InvalidState', /is running; stop it first/);
    await t.manager.stop('lab');
    await t.manager.updateVm('lab', { memory_mib: 64 });
    assert.equal(t.manager.get('lab').def.memoryMiB, 64);
  } finally {
    t.done();
  }
});

test("Vm1.Network says each VM's network (none | user | bridge:NAME) and follows an Update", async () => {
  const t = setup();
  try {
    writeFileSync(
      join(t.configDir, 'bridged.json'),
      JSON.stringify({
        id: 'bridged',
        name: 'Bridged',
        slot: 5,
        color: '#00897b',
        memoryMiB: 32,
        network: 'bridge:br0',
      }),
    );
    t.manager.reload();
    assert.equal(vmProperties(t.manager, 'bridged').Network, 'bridge:br0');
    assert.equal(vmProperties(t.manager, 'business').Network, 'none');
    await t.manager.createVm('Lab', { slot: 3 });
    assert.equal(vmProperties(t.manager, 'lab').Network, 'none', 'CreateVm without network: none');
    await t.manager.updateVm('lab', { network: 'user' });
    assert.equal(vmProperties(t.manager, 'lab').Network, 'user');
    assert.equal(JSON.parse(readFileSync(t.manager.get('lab').def.file, 'utf8')).network, 'user');
    await refused(t.manager.updateVm('lab', { network: 'bridge:br0' }), 'InvalidArgument', /^network: /);
    assert.equal(vmProperties(t.manager, 'lab').Network, 'user', 'a refused Update changes nothing');
  } finally {
    t.done();
  }
});

test('Eject removes the installation medium from the file (the next start boots the disk); NotOwner for the admin; InvalidState without one', async () => {
  const t = setup();
  try {
    await t.manager.createVm('Lab', { cdrom: join(t.media, 'install.iso') });
    await t.manager.ejectVm('lab');
    assert.equal(t.manager.get('lab').def.cdrom, null);
    assert.equal(JSON.parse(readFileSync(t.manager.get('lab').def.file, 'utf8')).cdrom, undefined);
    await refused(t.manager.ejectVm('lab'), 'InvalidState', /has no installation medium/);
    await refused(t.manager.ejectVm('business'), 'NotOwner', /belongs to the administrator/);
  } finally {
    t.done();
  }
});

test('a person file cannot shadow an admin VM: an id or slot the admin uses is refused at load', () => {
  const t = setup();
  try {
    mkdirSync(join(t.root, 'person-vms'), { recursive: true });
    writeFileSync(
      join(t.root, 'person-vms', 'business.json'),
      JSON.stringify({ id: 'business', slot: 5, color: '#000000', memoryMiB: 32 }),
    );
    writeFileSync(
      join(t.root, 'person-vms', 'x.json'),
      JSON.stringify({ id: 'x', slot: 2, color: '#000000', memoryMiB: 32 }),
    );
    t.manager.reload();
    const b = t.manager.get('business');
    assert.equal(b.owner, 'admin');
    assert.equal(b.def.file, join(t.configDir, 'business.json'));
    assert.equal(b.def.slot, 2);
    assert.ok(
      t.manager.configErrors.some((e) => e.file.endsWith('person-vms/business.json') && e.field === 'id'),
    );
    assert.ok(t.manager.configErrors.some((e) => e.file.endsWith('person-vms/x.json') && e.field === 'slot'));
    assert.equal(t.manager.bySlot(2)?.def.id, 'business');
  } finally {
    t.done();
  }
});

test('Delete removes the file, and with remove_disks the disk; without it the disk stays', async () => {
  const t = setup();
  try {
    await t.manager.createVm('Keep', { disk_size_mib: 16 });
    await t.manager.createVm('Gone', { disk_size_mib: 16 });
    const keepDisk = t.manager.get('keep').def.disks[0].path;
    const goneDisk = t.manager.get('gone').def.disks[0].path;
    await t.manager.deleteVm('keep', false);
    await t.manager.deleteVm('gone', true);
    assert.ok(!t.manager.vms.has('keep') && !t.manager.vms.has('gone'));
    assert.ok(existsSync(keepDisk), 'remove_disks false keeps the disk');
    assert.ok(!existsSync(goneDisk), 'remove_disks true removes it');
    assert.deepEqual(readdirSync(join(t.root, 'person-vms')), []);
    assert.ok(t.manager.activeVm === SWITCHER_PATH);
  } finally {
    t.done();
  }
});

test('idFromName: a readable, free id from any name', () => {
  assert.equal(idFromName('Lab 2', new Set()), 'lab-2');
  assert.equal(idFromName('Café Überall', new Set()), 'cafe-uberall');
  assert.equal(idFromName('日本', new Set()), 'vm');
  assert.equal(idFromName('lab', new Set(['lab', 'lab-2'])), 'lab-3');
});
