/**
 * Fuzz targets for VM definition files (used by config.fuzz.test.ts with a fixed seed and by
 * `npm run fuzz` with random seeds). Inputs: arbitrary JSON, arbitrary text, mutations of the
 * shipped examples (examples/vms/*.json) with hostile values (NUL, bidi and zero-width
 * characters, 100,000-character strings, `..` paths, values nested up to 40,000 levels), and
 * config dirs holding special files (FIFO, socket, directory, symlinks in and out, group-writable
 * and oversized files). Properties:
 *  - parseVmDefinition never throws; it answers a definition that satisfies the schema (no
 *    invisible characters in shown text, every path inside the image directories), or an error
 *    naming the file and a field, short and with nothing unescaped;
 *  - a config dir with one mutated file and one good file loads the good VM, and a VmManager
 *    reloading the mutated file holds either the old definition or the new one, never a mix;
 *  - a config dir with special files loads (never blocks), loads the good VM, refuses each
 *    special file as such and quotes nothing of a file it must not read.
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { SWITCHER_PATH } from '@bulkhead/contract';
import { MAX_SLOT, VM_KINDS, createLogger } from '@bulkhead/common';
import { checkProperty, type FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import {
  BACKENDS,
  DEFAULT_MEDIA_ROOTS,
  DISK_FORMATS,
  XEN_DISK_FORMATS,
  defaultImageDirs,
  loadConfigDir,
  parseVmDefinition,
  type ConfigError,
  type VmDefinition,
} from './config';
import { MAX_FILE_BYTES } from './config-files';
import { FakeBackend } from './testing/fake-backend';
import { StateStore } from './state-store';
import { DONE, type InputFocus } from './switch-transaction';
import { VmManager } from './vm-manager';

const EXAMPLES = join(__dirname, '..', 'examples', 'vms');
const examples: Array<Record<string, unknown>> = readdirSync(EXAMPLES)
  .filter((n) => n.endsWith('.json'))
  .sort()
  .map((n) => JSON.parse(readFileSync(join(EXAMPLES, n), 'utf8')) as Record<string, unknown>);
/**
 * The examples as a person's VM on the Xen entry: an HVM domain, so no kernel (the examples' kernel
 * path is relative to their own dir, outside the image dirs of the fuzzed file's).
 */
const xenExamples = examples.map(({ kernel: _k, append: _a, ...e }) => ({ ...e, backend: 'xen' }));
/** The examples' fields, and `cdrom` (an installation medium) which no example sets. */
const FIELDS = [...new Set([...examples.flatMap((e) => Object.keys(e)), 'cdrom'])];

/** Values that sit on or just past the edges of the schema, plus arbitrary JSON. */
const edgyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    null,
    true,
    0,
    -1,
    1,
    MAX_SLOT,
    MAX_SLOT + 1,
    16,
    15,
    1.5,
    1e308,
    '',
    'x'.repeat(65),
    '#zzzzzz',
    '#2A6FDB',
    'bridge:',
    'bridge:br0',
    'user',
    [],
    {},
    { pci: [] },
    { pci: ['0000:00:02.0'] },
    { pci: ['0000:00:02.8'] },
    [{ path: 'a.qcow2', format: 'qcow2' }],
    [{ path: 'a,b', format: 'raw' }],
    [{ path: 'x', format: 'vmdk' }],
    [{ path: 'x', format: 'raw', sizeMiB: 0 }],
    '__proto__',
    // Hostile text: NUL and other controls, bidi overrides/isolates, zero-width, huge.
    'a\u0000b',
    'Personal\u202e',
    '\u2066Business\u2069',
    'Per\u200bsonal',
    'x\u061c',
    '\u001b[31m',
    '\ud800',
    '\u3164',
    ' ',
    'x'.repeat(100_000),
    'é'.repeat(70),
    // Paths out of the image directories.
    '/etc/shadow',
    '../../../../etc/shadow',
    '../../guest/build/bulkhead-guest.elf',
    'install.iso',
    'a,b.iso',
    '/media/bulkhead/../../etc/shadow',
    [{ path: '../../../../etc/shadow', format: 'raw' }],
    [{ path: '/dev/sda', format: 'raw' }],
    [{ path: 'sub/../../x.raw', format: 'raw' }],
    [{ path: 'ok.raw', format: 'raw', sizeMiB: 1 }],
    // A disk xl cannot take, and QEMU's user-mode network: refused in a Xen file at load.
    [{ path: 'ok.vhdx', format: 'vhdx' }],
    ...VM_KINDS,
    ...DISK_FORMATS,
    ...BACKENDS,
  ),
  fc.jsonValue({ maxDepth: 3 }),
);

type Mutation =
  | { op: 'set'; field: string; value: unknown }
  | { op: 'delete'; field: string }
  | { op: 'add'; field: string; value: unknown };
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), field: fc.constantFrom(...FIELDS), value: edgyValue }),
  fc.record({ op: fc.constant('delete' as const), field: fc.constantFrom(...FIELDS) }),
  fc.record({
    op: fc.constant('add' as const),
    field: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('memoryMib', '__proto__', 'constructor')),
    value: edgyValue,
  }),
);

function mutate(base: Record<string, unknown>, ms: Mutation[]): Record<string, unknown> {
  const o: Record<string, unknown> = JSON.parse(JSON.stringify(base));
  for (const m of ms) {
    if (m.op === 'delete') delete o[m.field];
    else
      Object.defineProperty(o, m.field, {
        value: m.value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
  }
  return o;
}

/** An example with one field (or $comment) set to arrays or objects nested `depth` levels. */
const deeplyNested: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom(...examples),
    fc.constantFrom(...FIELDS, '$comment'),
    fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1000, max: 40_000 })),
    fc.constantFrom('[', '{"a":'),
  )
  .map(([b, field, depth, open]) => {
    const o: Record<string, unknown> = { ...b };
    delete o[field];
    const base = JSON.stringify(o);
    const deep = open.repeat(depth) + (open === '[' ? '' : '1') + (open === '[' ? ']' : '}').repeat(depth);
    return `${base.slice(0, -1)}${base.length > 2 ? ',' : ''}${JSON.stringify(field)}:${deep}}`;
  });

/** A definition file's text: a mutated example, arbitrary JSON, or text cut/garbled. */
export const definitionText: fc.Arbitrary<string> = fc.oneof(
  { weight: 1, arbitrary: deeplyNested },
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom(...examples), fc.array(mutation, { minLength: 1, maxLength: 4 }))
      .map(([b, ms]) => JSON.stringify(mutate(b, ms))),
  },
  {
    // A Xen VM (a person's VM on the Xen entry is one) given what only QEMU can do, among others.
    weight: 1,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...xenExamples),
        fc.constantFrom<Record<string, unknown>>(
          { network: 'user' },
          { disks: [{ path: 'ok.vhdx', format: 'vhdx' }] },
          { disks: [{ path: 'ok.qcow2', format: 'qcow2' }], network: 'none' },
        ),
        fc.array(mutation, { maxLength: 2 }),
      )
      .map(([b, xen, ms]) => JSON.stringify(mutate({ ...b, ...xen }, ms))),
  },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null') },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...examples), fc.nat(), fc.string({ maxLength: 3 }))
      .map(([b, cut, junk]) => {
        const t = JSON.stringify(b, null, 2);
        const at = cut % (t.length + 1);
        return t.slice(0, at) + junk + t.slice(at + (cut % 3));
      }),
  },
);

/**
 * Characters no shown text may hold (written out here, apart from the implementation's class):
 * C0/C1 controls, bidi marks/embeddings/overrides/isolates, zero-width characters, the BOM,
 * lone surrogates.
 */
const INVISIBLE =
  /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\u3164]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** An error as ConfigErrors shows it: names the file, short, nothing unescaped. */
function checkError(e: ConfigError, file: string): void {
  const bad = (why: string) => {
    throw new Error(`${why}: ${JSON.stringify(e).slice(0, 600)}`);
  };
  if (e.file !== file) bad(`error names file ${e.file}, not ${file}`);
  if (!e.field || !e.reason) bad('error without field/reason');
  if (e.reason.length > 500 || e.field.length > 100) bad('error too long');
  if (INVISIBLE.test(e.field) || INVISIBLE.test(e.reason)) bad('unescaped invisible character in the error');
}

/** What a definition that parseVmDefinition accepted must satisfy (the README's schema). */
function checkDefinition(
  d: VmDefinition,
  file: string,
  imageDirs = defaultImageDirs(join(file, '..')),
): void {
  const fail = (why: string) => {
    throw new Error(`accepted an invalid definition (${why}): ${JSON.stringify(d).slice(0, 600)}`);
  };
  if (INVISIBLE.test(d.name) || !/\S/.test(d.name)) fail('invisible name');
  if (INVISIBLE.test(d.icon) || INVISIBLE.test(d.append)) fail('invisible icon/append');
  const inImageDir = (p: string) =>
    imageDirs.some((dir) => p.startsWith(`${dir}/`)) && !p.split('/').includes('..');
  if (d.disks.some((k) => !inImageDir(k.path))) fail('disk outside the image directories');
  if (d.kernel !== null && !inImageDir(d.kernel)) fail('kernel outside the image directories');
  const inMediaRoot = (p: string) =>
    DEFAULT_MEDIA_ROOTS.some((dir) => p.startsWith(`${dir}/`)) && !p.split('/').includes('..');
  if (d.cdrom != null && (!(inImageDir(d.cdrom) || inMediaRoot(d.cdrom)) || d.cdrom.includes(',')))
    fail('cdrom outside the image directories and media roots');
  if (d.file !== file) fail('file');
  if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(d.id)) fail('id');
  if (typeof d.name !== 'string' || d.name.length < 1 || d.name.length > 64) fail('name');
  if (!Number.isInteger(d.slot) || d.slot < 1 || d.slot > MAX_SLOT) fail('slot');
  if (!(VM_KINDS as readonly string[]).includes(d.kind)) fail('kind');
  if (!/^#[0-9a-f]{6}$/.test(d.color)) fail('color');
  if (!Number.isInteger(d.memoryMiB) || d.memoryMiB < 16) fail('memoryMiB');
  if (!Number.isInteger(d.vcpus) || d.vcpus < 1 || d.vcpus > 64) fail('vcpus');
  if (
    !Array.isArray(d.disks) ||
    d.disks.some((k) => !k.path.startsWith('/') || !DISK_FORMATS.includes(k.format))
  )
    fail('disks');
  if (typeof d.autostart !== 'boolean' || typeof d.usbAutoAttach !== 'boolean') fail('booleans');
  if (d.gpu !== null && (!Array.isArray(d.gpu.pci) || d.gpu.pci.length === 0)) fail('gpu');
  if (!['vnc', 'none'].includes(d.display)) fail('display');
  if (!(BACKENDS as readonly string[]).includes(d.backend)) fail('backend');
  if (d.append && !d.kernel) fail('append without kernel');
  // What only QEMU can do never reaches a Xen VM (issue 18: refused at load, not at start).
  if (d.backend === 'xen' && d.network.mode === 'user') fail("xen with 'user' networking");
  if (d.backend === 'xen' && d.disks.some((k) => !XEN_DISK_FORMATS.includes(k.format)))
    fail('xen with a disk format xl cannot take');
}

/** parseVmDefinition(text): a valid object or an error naming file and field; never a throw. */
export const parseProperty = fc.property(definitionText, (text) => {
  const file = '/etc/bulkhead/vms/fuzz.json';
  const r = parseVmDefinition(file, text);
  if (r.ok) return checkDefinition(r.def, file);
  checkError(r.error, file);
  if (r.id !== null && !/^[a-z0-9][a-z0-9_-]{0,31}$/.test(r.id)) throw new Error(`bad id ${r.id}`);
});

const log = createLogger('fuzz', 'error');
const quietInput: InputFocus = { freeze: async () => DONE, setFocus: async () => DONE };
const GOOD = { id: 'good', slot: 9, color: '#123456', memoryMiB: 32 };

/**
 * A dir holding a good file and a file being edited (starts as `personal`, becomes the mutated
 * text): the good VM always loads; the edited VM's definition is the old or the new one.
 */
export const dirProperty = fc.property(definitionText, (text) => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-fuzz-'));
  const manager = (() => {
    const configDir = join(root, 'vms');
    mkdirSync(configDir);
    const edited = join(configDir, 'b-edited.json');
    writeFileSync(join(configDir, 'a-good.json'), JSON.stringify(GOOD));
    writeFileSync(edited, JSON.stringify({ ...examples[0], kernel: null, append: '' }));
    const m = new VmManager({
      backend: new FakeBackend(),
      input: quietInput,
      configDir,
      state: new StateStore(join(root, 'state'), log),
      log,
      watchConfig: false,
    });
    return { m, configDir, edited };
  })();
  try {
    const { m, configDir, edited } = manager;
    m.reload();
    const oldId = examples[0].id as string;
    const old = JSON.stringify(m.get(oldId).def);
    writeFileSync(edited, text);
    const loaded = loadConfigDir(configDir);
    if (!loaded.vms.some((v) => v.id === 'good')) throw new Error('the good file did not load');
    m.reload();
    if (JSON.stringify(m.get('good').def) !== JSON.stringify(loaded.vms.find((v) => v.id === 'good')))
      throw new Error('good VM changed');
    const parsed = parseVmDefinition(edited, text);
    if (parsed.ok && parsed.def.id !== 'good' && parsed.def.slot !== GOOD.slot) {
      // The new definition is applied whole.
      const e = m.get(parsed.def.id);
      if (JSON.stringify(e.def) !== JSON.stringify(parsed.def))
        throw new Error('new definition applied partially');
    } else if (!parsed.ok && parsed.id === oldId && Buffer.byteLength(text) <= MAX_FILE_BYTES) {
      // An invalid edit keeps the whole old definition, with the error shown. (A file over the
      // size limit is refused unread, so its id is unknown: that VM goes like any unreadable one.)
      const e = m.get(oldId);
      if (JSON.stringify(e.def) !== old)
        throw new Error(`old definition changed by an invalid edit: ${JSON.stringify(e.def)}`);
      if (!e.configError.includes(edited))
        throw new Error(`LastError does not name the file: ${e.configError}`);
    }
    // Every VM the manager holds is a whole definition from one file version.
    for (const e of m.vms.values()) if (!e.placeholder) checkDefinition(e.def, e.def.file);
    if (m.activeVm !== SWITCHER_PATH) throw new Error('a reload changed the active VM');
  } finally {
    manager.m.close();
    rmSync(root, { recursive: true, force: true });
  }
});

const SECRET = 'root:$y$j9T$FUZZSECRET:19000:0:99999:7:::';
const SPECIAL_KINDS = [
  'definition',
  'fifo',
  'socket',
  'directory',
  'symlink-outside',
  'symlink-dangling',
  'symlink-inside',
  'group-writable',
  'oversized',
] as const;
type SpecialKind = (typeof SPECIAL_KINDS)[number];
/** What loading must say of each kind of entry (null: whatever its text deserves). */
const EXPECTED: Record<SpecialKind, RegExp | null> = {
  definition: null,
  fifo: /^not a regular file \(fifo\)$/,
  socket: /^not a regular file \(socket\)$/,
  directory: /^not a regular file \(directory\)$/,
  'symlink-outside': /^not a regular file \(symlink\)$/,
  'symlink-dangling': /^not a regular file \(symlink\)$/,
  'symlink-inside': /^not a regular file \(symlink\)$/,
  'group-writable': /^writable by group/,
  oversized: /^the file is \d+ bytes, larger than the \d+-byte limit/,
};

/**
 * A config dir with a good file and special entries named *.json: loading never blocks, loads the
 * good VM, refuses each special entry as what it is, and quotes nothing of the secret a symlink
 * points to.
 */
export const specialFilesProperty = fc.asyncProperty(
  fc.array(fc.record({ kind: fc.constantFrom(...SPECIAL_KINDS), text: definitionText }), {
    minLength: 1,
    maxLength: 5,
  }),
  async (entries) => {
    const root = mkdtempSync(join(tmpdir(), 'vmd-fuzz-special-'));
    const servers: Array<ReturnType<typeof createServer>> = [];
    try {
      const dir = join(root, 'vms');
      mkdirSync(dir);
      writeFileSync(join(root, 'shadow'), SECRET, { mode: 0o600 });
      writeFileSync(join(dir, 'a-good.json'), JSON.stringify(GOOD));
      for (const [i, { kind, text }] of entries.entries()) {
        const path = join(dir, `e-${i}.json`);
        if (kind === 'definition') writeFileSync(path, text);
        else if (kind === 'fifo') execFileSync('mkfifo', [path]);
        else if (kind === 'socket') {
          const server = createServer();
          servers.push(server);
          await new Promise<void>((r) => server.listen(path, r));
        } else if (kind === 'directory') mkdirSync(path);
        else if (kind === 'symlink-outside') symlinkSync(join(root, 'shadow'), path);
        else if (kind === 'symlink-dangling') symlinkSync(join(root, 'gone'), path);
        else if (kind === 'symlink-inside') symlinkSync('a-good.json', path);
        else if (kind === 'group-writable') {
          writeFileSync(path, text);
          chmodSync(path, 0o664);
        } else writeFileSync(path, text.padEnd(1 << 20, ' '));
      }
      const loaded = loadConfigDir(dir);
      if (!loaded.vms.some((v) => v.id === 'good')) throw new Error('the good file did not load');
      for (const v of loaded.vms) checkDefinition(v, v.file, defaultImageDirs(dir));
      for (const [i, { kind }] of entries.entries()) {
        const file = join(dir, `e-${i}.json`);
        const errors = loaded.errors.filter((e) => e.file === file);
        for (const e of errors) checkError(e, file);
        const want = EXPECTED[kind];
        if (want && !(errors.length === 1 && errors[0].field === '(file)' && want.test(errors[0].reason)))
          throw new Error(`${kind} e-${i}.json: expected ${want}, got ${JSON.stringify(errors)}`);
      }
      const all = JSON.stringify(loaded.errors);
      if (all.includes('FUZZSECRET') || all.includes('root:')) throw new Error(`secret quoted: ${all}`);
    } finally {
      for (const s of servers) s.close();
      rmSync(root, { recursive: true, force: true });
    }
  },
);

export const fuzzTargets: FuzzTarget[] = [
  { name: 'vm-daemon: definition file', run: (o) => checkProperty(parseProperty, o) },
  { name: 'vm-daemon: config dir reload', run: (o) => checkProperty(dirProperty, o) },
  { name: 'vm-daemon: config dir special files', run: (o) => checkProperty(specialFilesProperty, o) },
];
