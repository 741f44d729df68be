/**
 * Fuzz targets for VM definition files (used by config.fuzz.test.ts with a fixed seed and by
 * `npm run fuzz` with random seeds). Inputs: arbitrary JSON, arbitrary text, and mutations of the
 * shipped examples (examples/vms/*.json). Properties:
 *  - parseVmDefinition never throws; it answers a definition that satisfies the schema, or an
 *    error naming the file and a field;
 *  - a config dir with one mutated file and one good file loads the good VM, and a VmManager
 *    reloading the mutated file holds either the old definition or the new one, never a mix.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { SWITCHER_PATH } from '@bulkhead/contract';
import { MAX_SLOT, VM_KINDS, createLogger } from '@bulkhead/common';
import { checkProperty, type FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { BACKENDS, DISK_FORMATS, loadConfigDir, parseVmDefinition, type VmDefinition } from './config';
import { FakeBackend } from './backend/fake-backend';
import { StateStore } from './state-store';
import { DONE, type InputFocus } from './switch-transaction';
import { VmManager } from './vm-manager';

const EXAMPLES = join(__dirname, '..', 'examples', 'vms');
const examples: Array<Record<string, unknown>> = readdirSync(EXAMPLES)
  .filter((n) => n.endsWith('.json'))
  .sort()
  .map((n) => JSON.parse(readFileSync(join(EXAMPLES, n), 'utf8')) as Record<string, unknown>);
const FIELDS = [...new Set(examples.flatMap((e) => Object.keys(e)))];

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

/** A definition file's text: a mutated example, arbitrary JSON, or text cut/garbled. */
export const definitionText: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom(...examples), fc.array(mutation, { minLength: 1, maxLength: 4 }))
      .map(([b, ms]) => JSON.stringify(mutate(b, ms))),
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

/** What a definition that parseVmDefinition accepted must satisfy (the README's schema). */
function checkDefinition(d: VmDefinition, file: string): void {
  const fail = (why: string) => {
    throw new Error(`accepted an invalid definition (${why}): ${JSON.stringify(d)}`);
  };
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
}

/** parseVmDefinition(text): a valid object or an error naming file and field; never a throw. */
export const parseProperty = fc.property(definitionText, (text) => {
  const file = '/etc/bulkhead/vms/fuzz.json';
  const r = parseVmDefinition(file, text);
  if (r.ok) return checkDefinition(r.def, file);
  if (r.error.file !== file) throw new Error(`error names file ${r.error.file}`);
  if (!r.error.field || !r.error.reason)
    throw new Error(`error without field/reason: ${JSON.stringify(r.error)}`);
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
    } else if (!parsed.ok && parsed.id === oldId) {
      // An invalid edit keeps the whole old definition, with the error shown.
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

export const fuzzTargets: FuzzTarget[] = [
  { name: 'vm-daemon: definition file', run: (o) => checkProperty(parseProperty, o) },
  { name: 'vm-daemon: config dir reload', run: (o) => checkProperty(dirProperty, o) },
];
