/**
 * Disk imports with the real qemu-img: a VHD becomes the VM's qcow2 disk with progress; an import
 * cancelled midway leaves no partial file (neither the target nor qemu-img's temporary output) and,
 * through the manager, no VM either; an image with a backing file is refused before anything runs.
 * A CreateVm cut off between its new disk and its VM file (a SIGKILLed stand-in daemon) leaves a
 * disk the next start removes, and only such a disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import { createLogger, type Logger } from '@bulkhead/common';
import { DiskImport, createDisk, inspectSource } from './disk-manager';
import { FakeBackend } from './testing/fake-backend';
import { StateStore } from './state-store';
import { DONE } from './switch-transaction';
import { VmManager } from './vm-manager';
import { VmStore } from './vm-store';
import { waitFor } from './testing/daemon-process';
import { vmProperties } from './dbus-service';

const log = createLogger('test', 'error');

/**
 * A raw image of random bytes (incompressible, no zero runs for qemu-img to skip), big enough
 * that a conversion reports several progress steps before it ends.
 */
function randomRaw(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  try {
    for (let i = 0; i < mib; i++) writeSync(fd, randomBytes(1 << 20));
  } finally {
    closeSync(fd);
  }
}

test('an import converts a VHD into a qcow2 disk and reports progress up to 100', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  try {
    const src = join(dir, 'seed.vhd');
    execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', src, '32M']);
    const info = await inspectSource(src);
    assert.equal(info.format, 'vpc');
    const target = join(dir, 'out.qcow2');
    const job = new DiskImport(src, info.format, target, 'qcow2');
    const seen: number[] = [];
    job.on('progress', (p) => seen.push(p));
    await job.done;
    assert.equal(seen.at(-1), 100);
    assert.equal(
      JSON.parse(execFileSync('qemu-img', ['info', '--output=json', target], { encoding: 'utf8' })).format,
      'qcow2',
    );
    assert.deepEqual(readdirSync(dir).sort(), ['out.qcow2', 'seed.vhd']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an import cancelled midway answers Cancelled and leaves no partial file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  try {
    const src = join(dir, 'big.img');
    randomRaw(src, 96);
    const target = join(dir, 'out.qcow2');
    const job = new DiskImport(src, 'raw', target, 'qcow2');
    let cancelledAt = -1;
    job.on('progress', (p) => {
      // Cancel once qemu-img has written part of the disk, not before it began.
      if (cancelledAt < 0 && p > 0 && p < 100) {
        assert.ok(existsSync(job.tempPath), 'qemu-img is writing its temporary output');
        cancelledAt = p;
        job.cancel();
      }
    });
    await assert.rejects(job.done, (e: unknown) => e instanceof BulkheadError && e.errorName === 'Cancelled');
    assert.ok(cancelledAt > 0 && cancelledAt < 100, `cancelled midway (at ${cancelledAt}%)`);
    assert.ok(!existsSync(target), 'no disk under the target name');
    assert.ok(!existsSync(job.tempPath), 'no temporary output left');
    assert.deepEqual(readdirSync(dir), ['big.img']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an image with a backing file is refused (it would read a file the person names)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  try {
    writeFileSync(join(dir, 'secret'), 'root:$y$secret\n');
    const src = join(dir, 'evil.qcow2');
    execFileSync('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      join(dir, 'secret'),
      src,
      '1M',
    ]);
    await assert.rejects(inspectSource(src), (e: unknown) => {
      assert.ok(e instanceof BulkheadError && e.errorName === 'InvalidArgument');
      assert.match(e.message, /^disk_import: evil\.qcow2 has a backing file/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an import source that names another file as its data (qcow2 data_file), or is no regular file, is refused before qemu-img reads it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  try {
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'root:$y$secret\n'.padEnd(65536, 'x'));
    const src = join(dir, 'evil.qcow2');
    // The guest's data is the host's file: converting it would copy the file into the VM's disk.
    execFileSync('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `data_file=${secret},data_file_raw=on`,
      src,
      '64K',
    ]);
    await assert.rejects(inspectSource(src), (e: unknown) => {
      assert.ok(e instanceof BulkheadError && e.errorName === 'InvalidArgument', String(e));
      assert.match(e.message, /^disk_import: evil\.qcow2 keeps its data in another file \(qcow2 data_file\)/);
      return true;
    });
    const fifo = join(dir, 'image.raw');
    execFileSync('mkfifo', [fifo]);
    // No writer: qemu-img's open would wait for one, and the CreateVm with it.
    await assert.rejects(inspectSource(fifo), /disk_import: image\.raw is not a regular file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CreateVm with disk_import: DiskJob shows the import; cancelling it removes the VM, its file and every byte of the disk', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  const media = join(root, 'media');
  const configDir = join(root, 'etc-vms');
  mkdirSync(media);
  mkdirSync(configDir);
  randomRaw(join(media, 'seed.img'), 96);
  const store = new VmStore({ dir: join(root, 'vms'), imageDir: join(root, 'images'), mediaRoots: [media] });
  const manager = new VmManager({
    backend: new FakeBackend(),
    input: { freeze: async () => DONE, setFocus: async () => DONE },
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
    person: store,
  });
  try {
    manager.reload();
    const id = await manager.createVm('Imported', { disk_import: join(media, 'seed.img') });
    assert.equal(vmProperties(manager, id).DiskJob, 'import');
    await assert.rejects(
      manager.start(id),
      (e: unknown) => e instanceof BulkheadError && e.errorName === 'InvalidState',
    );
    await waitFor('import progress', () => (manager.vms.get(id)?.diskJob?.percent ?? 1) > 0, 60_000);
    if (vmProperties(manager, id).DiskJob === '')
      assert.fail('the import finished before it could be cancelled');
    await manager.cancelDiskJob(id);
    assert.ok(!manager.vms.has(id), 'the VM made for the import is gone');
    assert.deepEqual(readdirSync(join(root, 'vms')), []);
    assert.deepEqual(readdirSync(join(root, 'images')), [], 'no disk and no partial output');
  } finally {
    manager.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('a daemon restarted in the middle of an import removes the partial output it left', () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  try {
    const store = new VmStore({ dir: join(root, 'vms'), imageDir: join(root, 'images'), mediaRoots: [] });
    store.ensureDirs();
    writeFileSync(join(root, 'images', '.lab.qcow2.importing'), 'half a disk');
    writeFileSync(join(root, 'images', 'keep.qcow2'), 'a finished disk');
    assert.deepEqual(store.removeImportLeftovers(), [join(root, 'images', '.lab.qcow2.importing')]);
    assert.deepEqual(readdirSync(join(root, 'images')), ['keep.qcow2']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a daemon restarted after an import was cut off names the VM that never got its disk (LastError) and removes the partial output', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  const media = join(root, 'media');
  mkdirSync(media);
  mkdirSync(join(root, 'etc-vms'));
  writeFileSync(join(media, 'seed.img'), Buffer.alloc(4096));
  const store = new VmStore({ dir: join(root, 'vms'), imageDir: join(root, 'images'), mediaRoots: [media] });
  store.ensureDirs();
  // What the killed daemon left: the VM file CreateVm wrote, and qemu-img's hidden partial output.
  const plan = store.planCreate(
    'Lab',
    { disk_import: join(media, 'seed.img') },
    { ids: new Set(), slots: new Set() },
  );
  store.write(plan.def.file, plan.doc);
  const partial = join(root, 'images', `.${basename(plan.importDisk!.path)}.importing`);
  writeFileSync(partial, 'half a disk');
  const manager = new VmManager({
    backend: new FakeBackend(),
    input: { freeze: async () => DONE, setFocus: async () => DONE },
    configDir: join(root, 'etc-vms'),
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
    person: store,
  });
  try {
    await manager.init();
    assert.ok(!existsSync(partial), 'the partial output is gone');
    assert.match(
      vmProperties(manager, plan.def.id).LastError,
      /disk import was cut off when vm-daemon stopped .*delete this VM and create it again/,
    );
  } finally {
    manager.close();
    rmSync(root, { recursive: true, force: true });
  }
});

/** A VmManager over `store` with a fake backend, whose log lines go to `lines`. */
function personManager(root: string, store: VmStore, lines: string[]): VmManager {
  const captured: Logger = {
    debug: () => undefined,
    info: (m) => lines.push(m),
    warn: (m) => lines.push(m),
    error: (m) => lines.push(m),
    child: () => captured,
  };
  mkdirSync(join(root, 'etc-vms'), { recursive: true });
  return new VmManager({
    backend: new FakeBackend(),
    input: { freeze: async () => DONE, setFocus: async () => DONE },
    configDir: join(root, 'etc-vms'),
    state: new StateStore(join(root, 'state'), log),
    log: captured,
    watchConfig: false,
    person: store,
  });
}

test("a vm-daemon SIGKILLed between CreateVm's new disk and its VM file: the next start removes the disk it made, and CreateVm of that id works again", async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-create-'));
  const dirs = { dir: join(root, 'vms'), imageDir: join(root, 'images'), mediaRoots: [] };
  const disk = join(root, 'images', 'lab.qcow2');
  const lines: string[] = [];
  let manager: VmManager | null = null;
  try {
    // A stand-in for vm-daemon: the real store and disk manager (qemu-img), a fake backend; the VM
    // file's write says so and never returns, for the SIGKILL to land between disk and file.
    const daemon = spawn(
      process.execPath,
      [
        '-e',
        `const { mkdirSync } = require('node:fs');
         const { VmStore } = require('./vm-store');
         const { VmManager } = require('./vm-manager');
         const { StateStore } = require('./state-store');
         const { FakeBackend } = require('./testing/fake-backend');
         const { createLogger } = require('@bulkhead/common');
         const log = createLogger('fake-daemon', 'error');
         const store = new VmStore(${JSON.stringify(dirs)});
         store.write = () => {
           console.log('writing the VM file');
           Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
         };
         mkdirSync(${JSON.stringify(join(root, 'etc-vms'))}, { recursive: true });
         const manager = new VmManager({
           backend: new FakeBackend(),
           input: { freeze: async () => ({}), setFocus: async () => ({}) },
           configDir: ${JSON.stringify(join(root, 'etc-vms'))},
           state: new StateStore(${JSON.stringify(join(root, 'state'))}, log),
           log,
           watchConfig: false,
           person: store,
         });
         manager.reload();
         manager.createVm('Lab', { id: 'lab', disk_size_mib: 16 }).catch((e) => { console.error(e); process.exit(3); });`,
      ],
      { cwd: __dirname, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      daemon.stdout!.on('data', () => resolve());
      daemon.once('exit', (code) =>
        reject(new Error(`the stand-in exited (${code}) before writing the VM file`)),
      );
    });
    const exited = new Promise((resolve) => daemon.once('exit', resolve));
    daemon.kill('SIGKILL');
    await exited;
    assert.ok(existsSync(disk), 'the killed CreateVm made the disk');
    assert.ok(!existsSync(join(root, 'vms', 'lab.json')), '...and never wrote the VM file');

    const store = new VmStore(dirs);
    manager = personManager(root, store, lines);
    await manager.init();
    assert.ok(!existsSync(disk), 'the next start removed the disk');
    assert.deepEqual(readdirSync(join(root, 'images')), [], 'and its marker');
    assert.ok(
      lines.some((l) => l.includes(`removed ${disk}`) && /CreateVm made it and was cut off/.test(l)),
      `the removal is logged with why: ${lines.join(' | ')}`,
    );
    assert.equal(await manager.createVm('Lab', { id: 'lab', disk_size_mib: 16 }), 'lab');
    assert.ok(existsSync(disk));
    assert.deepEqual(
      readdirSync(join(root, 'images')),
      ['lab.qcow2'],
      'no marker once the VM file is written',
    );
  } finally {
    manager?.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('at start, a disk CreateVm did not prove its own stays: one with no marker, one whose VM file was written (only the marker goes), one whose marker cannot be read', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-create-'));
  const store = new VmStore({ dir: join(root, 'vms'), imageDir: join(root, 'images'), mediaRoots: [] });
  store.ensureDirs();
  const images = join(root, 'images');
  const lines: string[] = [];
  let manager: VmManager | null = null;
  try {
    // A disk someone put there (a restored backup), no VM file, no marker.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(images, 'stray.qcow2'), '16M']);
    // A CreateVm killed after its VM file was written, before its marker went.
    const plan = store.planCreate(
      'Kept',
      { id: 'kept', disk_size_mib: 16 },
      { ids: new Set(), slots: new Set() },
    );
    store.beginNewDisk(plan.newDisk!.path, plan.def.file);
    await createDisk(plan.newDisk!.path, 'qcow2', 16);
    store.write(plan.def.file, plan.doc);
    // A marker that does not say what it marks.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(images, 'odd.qcow2'), '16M']);
    writeFileSync(join(images, '.odd.qcow2.creating'), '{"half');
    // A FIFO as a marker: read as unreadable, never waited on (init would hang on it).
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(images, 'pipe.qcow2'), '16M']);
    execFileSync('mkfifo', [join(images, '.pipe.qcow2.creating')]);

    manager = personManager(root, store, lines);
    await manager.init();
    assert.deepEqual(readdirSync(images).sort(), [
      '.odd.qcow2.creating',
      '.pipe.qcow2.creating',
      'kept.qcow2',
      'odd.qcow2',
      'pipe.qcow2',
      'stray.qcow2',
    ]);
    assert.ok(manager.vms.has('kept'), 'the VM whose file was written is there, with its disk');
    assert.ok(
      lines.some((l) => /odd\.qcow2\.creating cannot be read/.test(l)),
      lines.join(' | '),
    );
    assert.ok(
      lines.some((l) => /pipe\.qcow2\.creating cannot be read/.test(l)),
      lines.join(' | '),
    );
    // The stray disk still blocks its id: nothing proves it is a leftover of this daemon's.
    await assert.rejects(
      manager.createVm('Stray', { id: 'stray', disk_size_mib: 16 }),
      (e: unknown) => e instanceof BulkheadError && /pick another id/.test(e.message),
    );
  } finally {
    manager?.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('CreateVm whose qemu-img fails leaves neither a disk nor a marker', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-create-'));
  const store = new VmStore({ dir: join(root, 'vms'), imageDir: join(root, 'images'), mediaRoots: [] });
  const lines: string[] = [];
  const manager = personManager(root, store, lines);
  const path = process.env.PATH;
  try {
    manager.reload();
    process.env.PATH = '/nonexistent'; // no qemu-img to run
    await assert.rejects(manager.createVm('Lab', { id: 'lab', disk_size_mib: 16 }));
    process.env.PATH = path;
    assert.deepEqual(readdirSync(join(root, 'images')), []);
    assert.deepEqual(readdirSync(join(root, 'vms')), []);
  } finally {
    process.env.PATH = path;
    manager.close();
    rmSync(root, { recursive: true, force: true });
  }
});

// vm-daemon's unit stops only its main process (KillMode=process: the VMs must outlive it), so
// nothing kills qemu-img with it: what ends it is its progress output (-p) to the daemon's closed
// pipe (SIGPIPE, default in the child), within a percent of the conversion.
test('qemu-img dies with the daemon that ran the import (SIGKILL of the daemon alone, as its unit does)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-import-'));
  try {
    const src = join(dir, 'big.img');
    randomRaw(src, 96);
    // A stand-in for vm-daemon: a node process that runs one DiskImport and says when it is under way.
    const daemon = spawn(
      process.execPath,
      [
        '-e',
        `const { DiskImport } = require(${JSON.stringify(join(__dirname, 'disk-manager.js'))});
         const job = new DiskImport(${JSON.stringify(src)}, 'raw', ${JSON.stringify(join(dir, 'out.qcow2'))}, 'qcow2');
         job.on('progress', (p) => { if (p > 0) console.log('under way'); });
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      daemon.stdout!.on('data', () => resolve());
      daemon.once('exit', () => reject(new Error('the stand-in exited before the import got under way')));
    });
    const converting = () => qemuImgsWriting(dir);
    assert.equal(converting().length, 1, 'qemu-img is converting');
    daemon.kill('SIGKILL');
    await waitFor('qemu-img gone with the daemon', () => converting().length === 0, 10_000, 50);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Pids of qemu-img processes whose command line names a file in `dir`. */
function qemuImgsWriting(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    if (basename(argv[0] ?? '') === 'qemu-img' && argv.some((a) => a.startsWith(dir)))
      pids.push(Number(name));
  }
  return pids;
}
