/**
 * The config dir's loader against hostile files: special files (FIFO, socket, directory,
 * symlinks), wrong owner or mode, huge files, deep nesting, huge or invisible text, path fields
 * escaping the image directories. Every bad file gives one short error naming file and field,
 * quoting nothing of what it should not read, and the good file beside it loads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  MAX_DEFINITION_FILES,
  MAX_NESTING,
  TEST_GUEST_DIR,
  loadConfigDir,
  parseVmDefinition,
  type ConfigError,
} from './config';
import { MAX_FILE_BYTES, readDefinitionFile } from './config-files';
import { loadXenOptions } from './backend/xen/xen-options';
import { BulkheadError } from '@bulkhead/contract';

const vm = (id: string, slot: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ id, slot, color: '#112233', memoryMiB: 32, ...extra });
const SECRET = 'root:$y$j9T$TOPSECRETHASH:19000:0:99999:7:::';
const isRoot = process.getuid?.() === 0;

/** A config dir with a good VM in slot 1, plus whatever `fill` puts there. */
function dirWith(fill: (dir: string, outside: string) => void | Promise<void>) {
  const root = mkdtempSync(join(tmpdir(), 'vmd-files-'));
  const dir = join(root, 'vms');
  mkdirSync(dir);
  writeFileSync(join(dir, 'a-good.json'), vm('good', 1));
  return { root, dir, fill: async () => fill(dir, root) };
}

/** Load `dir`; the good VM must be there; answers the errors by file name. */
function load(dir: string, imageDirs?: string[]): Map<string, ConfigError> {
  const r = loadConfigDir(dir, imageDirs ? { imageDirs } : {});
  assert.deepEqual(
    r.vms.map((v) => v.id),
    ['good'],
  );
  for (const e of r.errors) {
    assert.ok(e.reason.length <= 500, `reason of ${e.file} is ${e.reason.length} characters`);
    assert.ok(e.field.length <= 100, `field of ${e.file} is ${e.field.length} characters`);
    assert.ok(!`${e.file}${e.field}${e.reason}`.includes('TOPSECRET'), `secret quoted: ${e.reason}`);
  }
  return new Map(r.errors.map((e) => [e.file.slice(dir.length + 1), e]));
}

test('FIFO, socket, directory, symlink to a file outside, dangling symlink: refused from lstat, nothing read', async () => {
  const { root, dir, fill } = dirWith(async (d, outside) => {
    execFileSync('mkfifo', [join(d, 'fifo.json')]);
    mkdirSync(join(d, 'dir.json'));
    writeFileSync(join(outside, 'shadow'), SECRET, { mode: 0o600 });
    symlinkSync(join(outside, 'shadow'), join(d, 'link.json'));
    symlinkSync(join(outside, 'nothing-here'), join(d, 'dangling.json'));
    await new Promise<void>((r) => createServer().listen(join(d, 'socket.json'), r).unref());
  });
  await fill();
  const errors = load(dir);
  const reasons = Object.fromEntries([...errors].map(([f, e]) => [f, [e.field, e.reason]]));
  assert.deepEqual(reasons, {
    'fifo.json': ['(file)', 'not a regular file (fifo)'],
    'dir.json': ['(file)', 'not a regular file (directory)'],
    'link.json': ['(file)', 'not a regular file (symlink)'],
    'dangling.json': ['(file)', 'not a regular file (symlink)'],
    'socket.json': ['(file)', 'not a regular file (socket)'],
  });
  rmSync(root, { recursive: true, force: true });
});

test('owner and mode: another user’s file and a group- or world-writable file are refused, saying why', async (t) => {
  const { root, dir, fill } = dirWith((d) => {
    writeFileSync(join(d, 'group-writable.json'), vm('gw', 2));
    chmodSync(join(d, 'group-writable.json'), 0o664);
    writeFileSync(join(d, 'world-writable.json'), vm('ww', 3));
    chmodSync(join(d, 'world-writable.json'), 0o646);
    if (isRoot) {
      writeFileSync(join(d, 'nobody.json'), vm('nobody', 4));
      chownSync(join(d, 'nobody.json'), 65534, 65534);
    }
  });
  await fill();
  const errors = load(dir);
  assert.match(errors.get('group-writable.json')!.reason, /^writable by group \(mode 0664\)/);
  assert.match(errors.get('world-writable.json')!.reason, /^writable by others \(mode 0646\)/);
  if (isRoot)
    assert.equal(errors.get('nobody.json')!.reason, 'owned by uid 65534, must be owned by uid 0 (root)');
  else t.diagnostic('not root: the other-owner case needs chown');
  rmSync(root, { recursive: true, force: true });
});

test('a 20 MB file is refused by its size before it is read; the reason says the size and the limit', async () => {
  const { root, dir, fill } = dirWith((d) =>
    writeFileSync(join(d, 'big.json'), vm('big', 2, { color: 'x'.repeat(20 << 20) })),
  );
  await fill();
  const big = load(dir).get('big.json')!;
  assert.match(
    big.reason,
    new RegExp(`^the file is 2097\\d{4} bytes, larger than the ${MAX_FILE_BYTES}-byte limit`),
  );
  rmSync(root, { recursive: true, force: true });
});

test('a value too long for its field is quoted as a short escaped excerpt', () => {
  const r = parseVmDefinition('/x/big.json', vm('big', 2, { color: `\u0000${'x'.repeat(60_000)}` }));
  assert.ok(!r.ok);
  assert.equal(r.error.field, 'color');
  assert.match(r.error.reason, /^must be #rrggbb, got "\\u0000x{79}… \(60001 characters\)"$/);
});

test('nesting: 30,000 levels in name, or deep under an unknown field, is refused naming the field, without recursion', () => {
  const depth = 30_000;
  const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`;
  const named = parseVmDefinition(
    '/x/a.json',
    `{"id":"a","slot":1,"color":"#112233","memoryMiB":32,"name":${deep}}`,
  );
  assert.ok(!named.ok);
  assert.equal(named.error.field, 'name');
  assert.equal(
    named.error.reason,
    `nested deeper than ${MAX_NESTING} levels (arrays/objects inside each other)`,
  );
  const objects = parseVmDefinition(
    '/x/a.json',
    `{"$comment":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`,
  );
  assert.ok(!objects.ok);
  assert.equal(objects.error.field, '$comment');
  const top = parseVmDefinition('/x/a.json', deep);
  assert.ok(!top.ok);
  assert.equal(top.error.field, '(file)');
  // Brackets inside strings are text, not nesting.
  const inString = parseVmDefinition('/x/a.json', vm('a', 1, { name: '['.repeat(40), icon: '' }));
  assert.ok(inString.ok, JSON.stringify(inString));
  // Shallow arrays where the schema wants a string are described, not printed.
  const arr = parseVmDefinition('/x/a.json', vm('a', 1, { name: [[[1, 2]]] }));
  assert.ok(!arr.ok);
  assert.deepEqual([arr.error.field, arr.error.reason], ['name', 'must be a string, got an array of 1 item']);
});

test('a syntax error says where, never quoting the content', () => {
  const r = parseVmDefinition('/x/shadow.json', SECRET);
  assert.ok(!r.ok);
  assert.equal(r.error.field, '(file)');
  assert.ok(!r.error.reason.includes('TOPSECRET') && !r.error.reason.includes('root:'), r.error.reason);
  assert.match(r.error.reason, /^not valid JSON/);
  const trailing = parseVmDefinition('/x/a.json', '{"id": "a",\n "slot": 1,}');
  assert.ok(!trailing.ok);
  assert.match(trailing.error.reason, /^not valid JSON: .* at line 2, column 12$/);
});

test('text shown to a person: NUL, controls, bidi overrides and isolates, invisible characters are refused naming the field', () => {
  const refused = (extra: Record<string, unknown>, field: string, char: string) => {
    const r = parseVmDefinition('/x/a.json', vm('a', 1, extra));
    assert.ok(!r.ok, `accepted ${JSON.stringify(extra)}`);
    assert.equal(r.error.field, field);
    assert.ok(r.error.reason.includes(char), `${r.error.reason} names ${char}`);
    // What is quoted is escaped: no raw control or bidi character reaches an error.
    assert.doesNotMatch(
      r.error.reason,
      /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\u061c]/,
    );
  };
  refused({ name: 'a\u0000b' }, 'name', 'U+0000');
  refused({ name: 'Personal\u202e' }, 'name', 'U+202E');
  refused({ name: '\u2067Business' }, 'name', 'U+2067');
  refused({ name: 'Per\u200fsonal' }, 'name', 'U+200F');
  refused({ name: 'x\u061c' }, 'name', 'U+061C');
  refused({ name: 'Pers\u200bonal' }, 'name', 'U+200B');
  refused({ name: 'tab\there' }, 'name', 'U+0009');
  refused({ name: '\u001b[31mred' }, 'name', 'U+001B');
  refused({ name: '\u3164' }, 'name', 'U+3164');
  refused({ name: 'a', append: 'console=ttyS0\nx' }, 'append', 'U+000A');
  const blank = parseVmDefinition('/x/a.json', vm('a', 1, { name: '   ' }));
  assert.ok(!blank.ok);
  assert.deepEqual([blank.error.field, blank.error.reason], ['name', 'must have a visible character']);
  const long = parseVmDefinition('/x/a.json', vm('a', 1, { name: 'n'.repeat(65) }));
  assert.ok(!long.ok);
  assert.equal(long.error.field, 'name');
  const icon = parseVmDefinition('/x/a.json', vm('a', 1, { icon: '../../etc/x' }));
  assert.ok(!icon.ok);
  assert.equal(icon.error.field, 'icon');
  // Ordinary names in any script, and emoji, are fine.
  for (const name of ['Personal', 'Privé', '個人', 'Работа', 'Home 🏠'])
    assert.ok(parseVmDefinition('/x/a.json', vm('a', 1, { name })).ok, name);
});

test('an unknown field with a huge or control-laden name is named short and escaped', () => {
  const r = parseVmDefinition('/x/a.json', `{"id":"a","${'k'.repeat(100_000)}\\u0000":1}`);
  assert.ok(!r.ok);
  assert.ok(r.error.field.length < 100, r.error.field.slice(0, 100));
  assert.match(r.error.field, /^k{40}… \(100001 characters\)$/);
  const ctl = parseVmDefinition('/x/a.json', '{"id":"a","x\\u202ey\\u0000":1}');
  assert.ok(!ctl.ok);
  assert.equal(ctl.error.field, 'x\\u202ey\\u0000');
});

test('a file name with control or bidi characters is refused and shown escaped', async () => {
  const { root, dir, fill } = dirWith((d) => writeFileSync(join(d, 'evil\u202enosj.json'), vm('evil', 2)));
  await fill();
  const errors = load(dir);
  const e = errors.get('evil\\u202enosj.json');
  assert.ok(e, [...errors.keys()].join(', '));
  assert.match(e.reason, /U\+202E/);
  rmSync(root, { recursive: true, force: true });
});

test('path fields: a disk or kernel resolving outside the image directories is refused naming the field', async () => {
  const images = mkdtempSync(join(tmpdir(), 'vmd-images-'));
  const { root, dir, fill } = dirWith((d) => {
    writeFileSync(
      join(d, 'dotdot.json'),
      vm('dotdot', 2, { disks: [{ path: '../../../../etc/shadow', format: 'raw' }] }),
    );
    writeFileSync(join(d, 'device.json'), vm('device', 3, { disks: [{ path: '/dev/sda', format: 'raw' }] }));
    writeFileSync(
      join(d, 'sneaky.json'),
      vm('sneaky', 4, { disks: [{ path: join(images, '..', 'etc', 'passwd'), format: 'raw' }] }),
    );
    writeFileSync(
      join(d, 'prefix.json'),
      vm('prefix', 5, { disks: [{ path: `${images}-evil/d.raw`, format: 'raw' }] }),
    );
    writeFileSync(join(d, 'kernel.json'), vm('kernel', 6, { kernel: '/boot/vmlinuz' }));
  });
  await fill();
  const errors = load(dir, [dir, images]);
  assert.equal(errors.size, 5, [...errors.keys()].join(', '));
  for (const f of ['dotdot.json', 'device.json', 'sneaky.json', 'prefix.json'])
    assert.equal(errors.get(f)!.field, 'disks[0].path', f);
  assert.equal(errors.get('kernel.json')!.field, 'kernel');
  assert.match(
    errors.get('dotdot.json')!.reason,
    /^resolves to \/etc\/shadow, outside the VM image directories/,
  );
  // Inside: relative to the file, absolute in an image dir, and `..` that stays inside.
  const ok = loadConfigDir(dir, { imageDirs: [dir, images] });
  const inside = parseVmDefinition(
    join(dir, 'ok.json'),
    vm('ok', 7, {
      disks: [
        { path: 'd.qcow2', format: 'qcow2' },
        { path: join(images, 'sub', '..', 'e.raw'), format: 'raw' },
      ],
    }),
    { imageDirs: [dir, images] },
  );
  assert.ok(inside.ok, JSON.stringify(inside));
  assert.deepEqual(
    inside.def.disks.map((d) => d.path),
    [join(dir, 'd.qcow2'), join(images, 'e.raw')],
  );
  assert.equal(ok.vms.length, 1);
  // The shipped examples name the test guest as '../../guest/build/...': still inside.
  const examples = loadConfigDir(join(__dirname, '..', 'examples', 'vms'));
  assert.deepEqual(examples.errors, []);
  assert.deepEqual(
    examples.vms.map((v) => v.kernel),
    examples.vms.map(() => join(TEST_GUEST_DIR, 'bulkhead-guest.elf')),
  );
  rmSync(root, { recursive: true, force: true });
  rmSync(images, { recursive: true, force: true });
});

test('too many definition files: the first ones in name order are read, the rest reported once', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-many-'));
  writeFileSync(join(dir, 'a-good.json'), vm('good', 1));
  for (let i = 0; i < MAX_DEFINITION_FILES + 10; i++)
    writeFileSync(join(dir, `b-${String(i).padStart(3, '0')}.json`), '{}');
  const r = loadConfigDir(dir);
  assert.deepEqual(
    r.vms.map((v) => v.id),
    ['good'],
  );
  assert.equal(r.errors.length, MAX_DEFINITION_FILES);
  assert.match(
    r.errors[0].reason,
    new RegExp(`^${MAX_DEFINITION_FILES + 11} definition files; only the first`),
  );
  assert.equal(readdirSync(dir).length, MAX_DEFINITION_FILES + 11);
  rmSync(dir, { recursive: true, force: true });
});

test('a file that is not UTF-8 is refused as such, its bytes not quoted', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-read-'));
  writeFileSync(join(dir, 'a-good.json'), vm('good', 1));
  writeFileSync(join(dir, 'bin.json'), Buffer.from([0x7b, 0xff, 0xfe, 0x7d]));
  assert.deepEqual(load(dir).get('bin.json'), {
    file: join(dir, 'bin.json'),
    field: '(file)',
    reason: 'not valid UTF-8 text',
  });
  assert.deepEqual(readDefinitionFile(join(dir, 'a-good.json')), { ok: true, text: vm('good', 1) });
  assert.deepEqual(readDefinitionFile(join(dir, 'missing.json')), {
    ok: false,
    reason: 'cannot read: ENOENT (lstat)',
    missing: true,
  });
  rmSync(dir, { recursive: true, force: true });
});

test('a Xen sidecar (<id>.xen) is read by the same rules: a FIFO is refused, not waited on', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-sidecar-'));
  execFileSync('mkfifo', [join(dir, 'x.xen')]);
  assert.throws(
    () => loadXenOptions({ file: join(dir, 'x.json'), kernel: null }),
    (e: unknown) =>
      e instanceof BulkheadError &&
      e.errorName === 'InvalidConfig' &&
      e.message === `${join(dir, 'x.xen')}: (file): not a regular file (fifo)`,
  );
  // No sidecar: the defaults.
  assert.equal(loadXenOptions({ file: join(dir, 'y.json'), kernel: null }).type, 'hvm');
  rmSync(dir, { recursive: true, force: true });
});
