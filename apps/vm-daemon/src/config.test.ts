import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigDir } from './config';
import { createDiskImage, inspectDiskImage, prepareDisks } from './backend/disk-images';
import { BulkheadError } from '@bulkhead/contract';

const vm = (id: string, slot: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ id, name: id, slot, kind: 'personal', color: '#112233', memoryMiB: 32, ...extra });

function dirWith(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-config-'));
  for (const [n, t] of Object.entries(files)) writeFileSync(join(dir, n), t);
  return dir;
}

test('good files load with defaults and resolved paths', () => {
  const dir = dirWith({
    'a.json': vm('alpha', 1, {
      kernel: 'k.elf',
      append: 'name=a',
      disks: [{ path: 'd.qcow2', format: 'qcow2' }],
      network: 'bridge:br0',
    }),
  });
  const r = loadConfigDir(dir);
  assert.deepEqual(r.errors, []);
  assert.equal(r.vms.length, 1);
  const d = r.vms[0];
  assert.equal(d.kernel, join(dir, 'k.elf'));
  assert.equal(d.disks[0].path, join(dir, 'd.qcow2'));
  assert.equal(d.disks[0].readonly, false);
  assert.deepEqual(d.network, { mode: 'bridge', bridge: 'br0' });
  assert.equal(d.backend, 'qemu');
  assert.equal(d.vcpus, 1);
  assert.equal(d.gpu, null);
  rmSync(dir, { recursive: true });
});

test('each malformed file is rejected with file, field and reason; the good ones load', () => {
  const dir = dirWith({
    '1-good.json': vm('good', 1, { gpu: { pci: ['0000:00:02.0'] } }),
    '2-badjson.json': '{ "id": "x", ',
    '3-badcolor.json': vm('badcolor', 3, { color: 'blue' }),
    '4-badslot.json': vm('badslot', 12),
    '5-dupslot.json': vm('dupslot', 1),
    '6-dupid.json': vm('good', 6),
    '7-gpu.json': vm('gpu2', 7, { gpu: { pci: ['0000:00:02.0'] } }),
    '8-typo.json': vm('typo', 8, { memoryMib: 64 }),
    '9-disk.json': vm('disk', 9, { disks: [{ path: 'x.vhd', format: 'vhd' }] }),
    'ignored.txt': 'not a definition',
  });
  const r = loadConfigDir(dir);
  assert.deepEqual(
    r.vms.map((v) => v.id),
    ['good'],
  );
  const byFile = Object.fromEntries(r.errors.map((e) => [e.file.slice(dir.length + 1), [e.field, e.reason]]));
  assert.equal(byFile['2-badjson.json'][0], '(file)');
  assert.match(byFile['2-badjson.json'][1], /not valid JSON/);
  assert.deepEqual(byFile['3-badcolor.json'][0], 'color');
  assert.match(byFile['3-badcolor.json'][1], /#rrggbb/);
  assert.equal(byFile['4-badslot.json'][0], 'slot');
  assert.match(byFile['4-badslot.json'][1], /1 to 9/);
  assert.deepEqual(byFile['5-dupslot.json'], ['slot', 'slot 1 is already used by 1-good.json']);
  assert.deepEqual(byFile['6-dupid.json'], ['id', "id 'good' is already used by 1-good.json"]);
  assert.deepEqual(byFile['7-gpu.json'], [
    'gpu',
    'PCI device 0000:00:02.0 is already claimed by 1-good.json',
  ]);
  assert.deepEqual(byFile['8-typo.json'], ['memoryMib', 'unknown field']);
  assert.equal(byFile['9-disk.json'][0], 'disks[0].format');
  assert.equal(r.errors.length, 8);
  // Ids readable from invalid files (and not taken by a valid one) get a VM object with LastError.
  assert.ok(r.invalidIds.has('badcolor'));
  assert.ok(!r.invalidIds.has('good'));
  rmSync(dir, { recursive: true });
});

test('a GPU may be named by several VMs only when all of them share it for hand-off', () => {
  // GPU hand-off is the Xen backend's (a QEMU definition asking for it is refused, next test).
  const xenVm = (id: string, slot: number, extra: Record<string, unknown>) =>
    vm(id, slot, { backend: 'xen', ...extra });
  const shared = { pci: ['0000:00:02.0', '0000:00:02.1'], handoff: true };
  const dir = dirWith({
    '1-personal.json': xenVm('personal', 1, { gpu: shared }),
    '2-business.json': xenVm('business', 2, {
      gpu: { pci: ['0000:00:02.1', '0000:00:02.0'], handoff: true },
    }),
    '3-accident.json': xenVm('accident', 3, { gpu: { pci: ['0000:00:02.0'] } }),
    '4-subset.json': xenVm('subset', 4, { gpu: { pci: ['0000:00:02.0'], handoff: true } }),
    '5-badflag.json': xenVm('badflag', 5, { gpu: { pci: ['0000:00:03.0'], handoff: 'yes' } }),
    '6-typo.json': xenVm('typo', 6, { gpu: { pci: ['0000:00:03.0'], shared: true } }),
    '7-own.json': xenVm('own', 7, { gpu: { pci: ['0000:00:04.0'] } }),
    '8-late-handoff.json': xenVm('late', 8, { gpu: { pci: ['0000:00:04.0'], handoff: true } }),
  });
  const r = loadConfigDir(dir);
  assert.deepEqual(
    r.vms.map((v) => [v.id, v.gpu?.handoff]),
    [
      ['personal', true],
      ['business', true],
      ['own', false],
    ],
  );
  const byFile = Object.fromEntries(r.errors.map((e) => [e.file.slice(dir.length + 1), [e.field, e.reason]]));
  assert.deepEqual(byFile['3-accident.json'], [
    'gpu',
    'PCI device 0000:00:02.0 is already claimed by 1-personal.json; a GPU may be named by several VMs only when every one of them sets "handoff": true',
  ]);
  assert.equal(byFile['4-subset.json'][0], 'gpu');
  assert.match(
    byFile['4-subset.json'][1],
    /shared for hand-off by 1-personal\.json .*list the same functions/,
  );
  assert.deepEqual(byFile['5-badflag.json'], ['gpu.handoff', 'must be true or false, got "yes"']);
  assert.deepEqual(byFile['6-typo.json'], ['gpu.shared', 'unknown field']);
  // An earlier exclusive claim is not turned into a shared one by a later file saying handoff.
  assert.match(byFile['8-late-handoff.json'][1], /already claimed by 7-own\.json; a GPU may be named/);
  assert.equal(r.errors.length, 5);
  rmSync(dir, { recursive: true });
});

test('GPU hand-off on the QEMU backend is refused at load, saying why and what to use instead', () => {
  const dir = dirWith({
    '1-qemu.json': vm('personal', 1, { gpu: { pci: ['0000:00:02.0'], handoff: true } }),
    '2-default.json': vm('business', 2, { backend: 'qemu', gpu: { pci: ['0000:00:03.0'], handoff: true } }),
    '3-passthrough.json': vm('own', 3, { gpu: { pci: ['0000:00:04.0'] } }),
  });
  try {
    const r = loadConfigDir(dir);
    // A GPU given to one QEMU VM for good (no hand-off) is still fine.
    assert.deepEqual(
      r.vms.map((v) => v.id),
      ['own'],
    );
    const reason =
      'GPU hand-off is not supported on the QEMU/KVM backend yet: use the Xen backend ("backend": "xen")';
    assert.deepEqual(
      r.errors.map((e) => [e.file.slice(dir.length + 1), e.field, e.reason]),
      [
        ['1-qemu.json', 'gpu.handoff', reason],
        ['2-default.json', 'gpu.handoff', reason],
      ],
    );
    // The VMs of the refused files still appear, with the error, so the switcher can show it.
    assert.deepEqual([...r.invalidIds.keys()].sort(), ['business', 'personal']);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('qemu-img creates and inspects qcow2 and vpc (VHD) disks; a wrong declared format is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-disk-'));
  for (const format of ['qcow2', 'vpc'] as const) {
    const path = join(dir, `disk.${format}`);
    await prepareDisks(join(dir, 'vm.json'), [{ path, format, readonly: false, sizeMiB: 16 }]);
    const info = await inspectDiskImage(path);
    assert.equal(info.format, format);
    assert.ok(info.virtualSize >= 16 << 20, `virtual size ${info.virtualSize}`);
  }
  await createDiskImage(join(dir, 'real.qcow2'), 'qcow2', 8);
  await assert.rejects(
    prepareDisks(join(dir, 'vm.json'), [
      { path: join(dir, 'real.qcow2'), format: 'vpc', readonly: false, sizeMiB: null },
    ]),
    (e: unknown) =>
      e instanceof BulkheadError &&
      e.errorName === 'InvalidConfig' &&
      /disks\[0\]\.format: declared vpc, but qemu-img finds qcow2/.test(e.message),
  );
  await assert.rejects(
    prepareDisks(join(dir, 'vm.json'), [
      { path: join(dir, 'missing.raw'), format: 'raw', readonly: false, sizeMiB: null },
    ]),
    /disks\[0\]\.path: .* does not exist/,
  );
  rmSync(dir, { recursive: true });
});

test('with backends set, valid files of another backend are set aside (not errors), before the id and slot checks', () => {
  // What the image holds: the KVM entry's QEMU VMs and the Xen entry's VMs, same ids and slots.
  const dir = dirWith({
    'business.json': vm('business', 2, { backend: 'qemu', kind: 'business' }),
    'business-xen.json': vm('business', 2, { backend: 'xen', kind: 'business' }),
    'personal.json': vm('personal', 1, { backend: 'qemu' }),
    'personal-xen.json': vm('personal', 1, { backend: 'xen' }),
    'broken-xen.json': vm('broken', 3, { backend: 'xen', color: 'blue' }),
  });
  for (const backend of ['qemu', 'xen'] as const) {
    const r = loadConfigDir(dir, { backends: [backend] });
    assert.deepEqual(
      r.vms.map((v) => [v.id, v.slot, v.backend, v.file.slice(dir.length + 1)]),
      backend === 'qemu'
        ? [
            ['business', 2, 'qemu', 'business.json'],
            ['personal', 1, 'qemu', 'personal.json'],
          ]
        : [
            ['business', 2, 'xen', 'business-xen.json'],
            ['personal', 1, 'xen', 'personal-xen.json'],
          ],
    );
    assert.deepEqual(
      r.otherBackend.map((o) => o.file.slice(dir.length + 1)).sort(),
      backend === 'qemu' ? ['business-xen.json', 'personal-xen.json'] : ['business.json', 'personal.json'],
    );
    // An invalid file is reported whatever backend it names: it cannot be read to know.
    assert.deepEqual(
      r.errors.map((e) => [e.file.slice(dir.length + 1), e.field]),
      [['broken-xen.json', 'color']],
    );
  }
  // Without the option every backend is loaded, and the second file of an id is the error it was.
  const all = loadConfigDir(dir);
  assert.deepEqual(all.otherBackend, []);
  assert.deepEqual(
    all.errors.map((e) => [e.file.slice(dir.length + 1), e.field]),
    [
      ['broken-xen.json', 'color'],
      ['business.json', 'id'],
      ['personal.json', 'id'],
    ],
  );
  rmSync(dir, { recursive: true });
});
