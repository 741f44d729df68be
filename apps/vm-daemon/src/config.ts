import { readdirSync, realpathSync } from 'node:fs';
import { basename, join, resolve, sep } from 'node:path';
import { MAX_SLOT, VM_KINDS, type VmKind } from '@bulkhead/common';
import { VM1_DISPLAY_VALUES, type Vm1Display } from '@bulkhead/contract';
import { defaultFileRules, readDefinitionFile, type FileRules } from './config-files';
import { boundedReason, describeValue, excerpt, fieldName, firstUnsafeChar, pathText } from './config-text';

/** Disk image formats qemu-img and QEMU understand under these names ('vpc' is VHD). */
export const DISK_FORMATS = ['qcow2', 'raw', 'vpc', 'vhdx'] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];
/** The disk formats xl can give a Xen domain (qcow2 and VHD through QEMU's qdisk). */
export const XEN_DISK_FORMATS: readonly DiskFormat[] = ['qcow2', 'raw', 'vpc'];
export const BACKENDS = ['qemu', 'xen'] as const;
export type BackendName = (typeof BACKENDS)[number];
/** The image's GRUB entry that runs each backend (what errors and LastError tell a person to boot). */
export const BOOT_ENTRY: Record<BackendName, string> = { qemu: 'Bulkhead (KVM)', xen: 'Bulkhead (Xen)' };

export interface DiskDefinition {
  /** Absolute, or relative to the definition file's directory. Resolved to absolute on load. */
  path: string;
  format: DiskFormat;
  readonly: boolean;
  /** When set and the image does not exist, qemu-img creates it with this size at start. */
  sizeMiB: number | null;
}

export type NetworkDefinition = { mode: 'none' } | { mode: 'user' } | { mode: 'bridge'; bridge: string };

/** One VM, as read from one JSON file of the config dir. See README.md for the schema. */
export interface VmDefinition {
  id: string;
  name: string;
  slot: number;
  kind: VmKind;
  color: string;
  icon: string;
  memoryMiB: number;
  vcpus: number;
  disks: DiskDefinition[];
  network: NetworkDefinition;
  autostart: boolean;
  /**
   * PCI functions (all functions of the device) passed through, or null. `handoff`: the GPU is
   * shared for hand-off: several definitions may name it (each with handoff: true) and the
   * switch gives it to whichever of them is active.
   */
  gpu: { pci: string[]; handoff: boolean } | null;
  usbAutoAttach: boolean;
  /**
   * 'none' | 'vnc': how the screen is exported (always a VNC unix socket for the QEMU backend).
   * Published as Vm1.Display: with 'none' the switcher asks for no screenshots and shows no view.
   */
  display: Vm1Display;
  backend: BackendName;
  /** Direct kernel boot (the test guest): absolute or relative to the file. */
  kernel: string | null;
  append: string;
  /**
   * An installation medium (ISO) attached as a CD-ROM and booted before the disks, or null.
   * Inside the image dirs or the media roots (where the Control Domain mounts USB sticks).
   */
  cdrom?: string | null;
  /** Absolute path of the definition file. */
  file: string;
}

/** One problem of one definition file: what ConfigErrors publishes as (file, field, reason). */
export interface ConfigError {
  file: string;
  field: string;
  reason: string;
}

export const formatConfigError = (e: ConfigError): string => `${e.file}: ${e.field}: ${e.reason}`;

/**
 * Deepest nesting of arrays/objects a definition file may have. The schema needs 3 (disks[i] is
 * an object); `$comment` may hold some structure. Checked on the text before JSON.parse, so no
 * walker (validation, error formatting, comparison) ever meets a deeper value.
 */
export const MAX_NESTING = 16;
/** Most definition files read from the config dir (there are only MAX_SLOT slots). */
export const MAX_DEFINITION_FILES = 64;
/** Longest `name` (code units), `icon`, `append` and path fields. */
export const MAX_NAME_CHARS = 64;
export const MAX_APPEND_CHARS = 1024;
export const MAX_PATH_CHARS = 1024;
/** The default directory of VM disk images (kernels, ISOs, ...) besides the config dir. */
export const DEFAULT_IMAGE_DIR = '/var/lib/bulkhead/images';
/** The test guest shipped with vm-daemon (the examples, the demo and the image boot it). */
export const TEST_GUEST_DIR = resolve(__dirname, '..', 'guest', 'build');

/** How definition files are read and where the paths they name may point. */
export interface ConfigOptions {
  /**
   * Directories every path field (`disks[].path`, `kernel`) must resolve into (after `..` is
   * applied). Default: defaultImageDirs(the config dir).
   */
  imageDirs?: string[];
  /** Owner and size rules of the files themselves (default: defaultFileRules()). */
  fileRules?: FileRules;
  /**
   * Where `cdrom` may point besides `imageDirs`: the mount roots of removable media
   * (default DEFAULT_MEDIA_ROOTS).
   */
  mediaRoots?: string[];
  /**
   * The backends whose files are loaded (default: every backend). A valid file naming another
   * backend is set aside before the id, slot and GPU checks (LoadedConfig.otherBackend), not
   * reported as an error: one image holds the QEMU VM files of its KVM boot entry and the Xen VM
   * files of its Xen entry, the same ids and slots in both, and vm-daemon loads the set of the
   * backend it chose (main.ts).
   */
  backends?: readonly BackendName[];
  /**
   * The running backend's own check of each of its files, after the fields' (e.g. the Xen
   * backend's sidecar and guest kind: xen-options.ts xenDefinitionProblem). A problem is the
   * file's ConfigError: the VM is not loaded, and a kind the backend cannot start or give input
   * focus is refused here, when its file is loaded, not at a start or a switch.
   */
  check?: (def: VmDefinition) => ConfigError | null;
}

/** Where the Control Domain mounts USB sticks (read-only): ISOs and disk imports come from here. */
export const DEFAULT_MEDIA_ROOTS = ['/media/bulkhead'];

/** The config dir (images next to their definition), DEFAULT_IMAGE_DIR and the test guest's dir. */
export function defaultImageDirs(configDir: string): string[] {
  return [resolve(configDir), DEFAULT_IMAGE_DIR, TEST_GUEST_DIR];
}

const KNOWN_FIELDS = new Set([
  'id',
  'name',
  'slot',
  'kind',
  'color',
  'icon',
  'memoryMiB',
  'vcpus',
  'disks',
  'network',
  'autostart',
  'gpu',
  'usbAutoAttach',
  'display',
  'backend',
  'kernel',
  'append',
  'cdrom',
  '$comment',
]);
/** A VM id: also its file name and object path, so nothing a path could be made of. */
export const ID_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
const PCI_RE = /^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/;
const BRIDGE_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const ICON_RE = /^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$/;

class FieldError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(reason);
  }
}

/** What parsing one file gives: a definition, or the first error plus whatever id could be read. */
export type ParsedFile =
  { ok: true; def: VmDefinition } | { ok: false; error: ConfigError; id: string | null };

/**
 * Validate one definition file's text. Every field is checked for type and range; unknown fields
 * are rejected so that a typo ("memoryMib") never silently falls back to a default.
 */
export function parseVmDefinition(file: string, text: string, opts: ConfigOptions = {}): ParsedFile {
  const fail = (field: string, reason: string): ParsedFile => ({
    ok: false,
    error: { file, field, reason: boundedReason(reason) },
    id: null,
  });
  const tooDeep = nestingBeyond(text, MAX_NESTING);
  if (tooDeep)
    return fail(
      tooDeep.field === null ? '(file)' : fieldName(tooDeep.field),
      `nested deeper than ${MAX_NESTING} levels (arrays/objects inside each other)`,
    );
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return fail('(file)', `not valid JSON: ${jsonErrorText(text, (e as Error).message)}`);
  }
  const id =
    raw &&
    typeof raw === 'object' &&
    typeof (raw as { id?: unknown }).id === 'string' &&
    ID_RE.test((raw as { id: string }).id)
      ? (raw as { id: string }).id
      : null;
  try {
    return {
      ok: true,
      def: validate(
        file,
        raw,
        opts.imageDirs ?? defaultImageDirs(resolve(file, '..')),
        opts.mediaRoots ?? DEFAULT_MEDIA_ROOTS,
      ),
    };
  } catch (e) {
    if (e instanceof FieldError)
      return { ok: false, error: { file, field: e.field, reason: boundedReason(e.message) }, id };
    throw e;
  }
}

/**
 * Whether `text` nests arrays/objects deeper than `limit`, and under which top-level key. A
 * linear scan with a counter (no recursion, no parse), so a 100,000-level value costs nothing
 * more than its length; strings are skipped so brackets inside them do not count.
 */
export function nestingBeyond(text: string, limit: number): { field: string | null } | null {
  let depth = 0;
  let key: string | null = null;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i + 1;
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
      // A key of the top-level object: the field a too-deep value is reported under.
      if (depth === 1 && expectKey) {
        key = text.slice(start, Math.min(i, start + 200));
        expectKey = false;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth === 1) expectKey = c === 0x7b;
      if (depth > limit) return { field: key };
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
  return null;
}

/**
 * JSON.parse's message without the excerpt of the input V8 puts in it ('Unexpected token 'r',
 * "root:$y$j9"... is not valid JSON': the first bytes of whatever the file is), with the
 * position as line and column.
 */
function jsonErrorText(text: string, message: string): string {
  const at = /at position (\d+)/.exec(message);
  // Whatever V8 quotes of the input starts at a double quote: keep only the words before it.
  const quote = message.indexOf('"');
  const what = (quote >= 0 ? message.slice(0, quote) : message)
    .replace(/ at position \d+.*$/s, '')
    .replace(/ in JSON$/, '')
    .replace(/[\s,:]+$/, '')
    .replace(/^Unexpected token '(.+)'$/su, (_m, t: string) => `unexpected character ${describeValue(t)}`);
  if (!at) return excerpt(what, 120);
  const pos = Math.min(Number(at[1]), text.length);
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  const column = pos - before.lastIndexOf('\n');
  return `${excerpt(what, 120)} at line ${line}, column ${column}`;
}

/**
 * `v` as text shown to a person or handed to QEMU: no control, format (bidi, zero-width) or other
 * invisible characters, at most `max` code units.
 */
function checkText(field: string, v: string, max: number): string {
  if (v.length > max) throw new FieldError(field, `must be at most ${max} characters, got ${v.length}`);
  const bad = firstUnsafeChar(v);
  if (bad)
    throw new FieldError(
      field,
      `must not contain control, bidi or invisible characters, got ${describeValue(v)} (${bad.char} at character ${bad.at + 1})`,
    );
  return v;
}

/**
 * A path field: absolute, or relative to the definition file's directory; after `..` is applied
 * it must lie inside one of `imageDirs` (a disk of '../../etc/shadow' or '/dev/sda' would hand a
 * host file to a VM).
 */
function checkPath(field: string, v: string, dir: string, imageDirs: string[]): string {
  checkText(field, v, MAX_PATH_CHARS);
  const abs = resolve(dir, v);
  const inside = imageDirs.some((d) => {
    const root = resolve(d);
    return abs.startsWith(root.endsWith(sep) ? root : root + sep);
  });
  if (!inside)
    throw new FieldError(
      field,
      `resolves to ${pathText(abs)}, outside the VM image directories (${imageDirs.map(pathText).join(', ')})`,
    );
  return abs;
}

/**
 * A path that must stay inside `roots` also once symlinks are followed (a stick's filesystem is
 * the person's: a symlink on it to /etc/shadow must not become a VM's CD-ROM). A path that does
 * not exist (the stick was pulled) is judged by its resolved name; the start fails later.
 */
function checkRealPath(field: string, v: string, dir: string, roots: string[]): string {
  checkText(field, v, MAX_PATH_CHARS);
  const r = resolveInside(v, dir, roots);
  if (!r.ok) throw new FieldError(field, r.reason);
  return r.path;
}

/**
 * Why `def.cdrom` may not be opened now, or null. Its file was checked when it was read, but the
 * medium may have changed since: a USB stick swapped for another with the same label is mounted
 * at the same place, and may hold a symlink out of the media roots at the ISO's name. Checked
 * again, as validate() does, right before QEMU is started on it.
 */
export function cdromProblem(def: VmDefinition, opts: ConfigOptions = {}): string | null {
  if (!def.cdrom) return null;
  const dir = resolve(def.file, '..');
  const roots = [...(opts.imageDirs ?? defaultImageDirs(dir)), ...(opts.mediaRoots ?? DEFAULT_MEDIA_ROOTS)];
  const r = resolveInside(def.cdrom, dir, roots);
  return r.ok ? null : `${def.file}: cdrom: ${r.reason}`;
}

/**
 * `v` (absolute, or relative to `dir`) resolved, when it lies inside one of `roots` both by name
 * (after `..`) and, when it exists, after following symlinks; else why not.
 */
export function resolveInside(
  v: string,
  dir: string,
  roots: string[],
): { ok: true; path: string } | { ok: false; reason: string } {
  const within = (p: string, root: string) => p.startsWith(root.endsWith(sep) ? root : root + sep);
  const abs = resolve(dir, v);
  if (!roots.some((r) => within(abs, resolve(r))))
    return { ok: false, reason: `resolves to ${pathText(abs)}, outside ${roots.map(pathText).join(', ')}` };
  let real: string;
  try {
    real = realpathSync(abs);
  } catch {
    return { ok: true, path: abs };
  }
  const realRoots = roots.map((r) => {
    try {
      return realpathSync(r);
    } catch {
      return resolve(r);
    }
  });
  if (!realRoots.some((r) => within(real, r)))
    return {
      ok: false,
      reason: `${pathText(abs)} leads to ${pathText(real)} through a symlink, outside ${roots.map(pathText).join(', ')}`,
    };
  return { ok: true, path: abs };
}

function validate(file: string, raw: unknown, imageDirs: string[], mediaRoots: string[]): VmDefinition {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new FieldError('(file)', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  // The key is from the file: shown escaped and cut (an empty key as "").
  for (const k of Object.keys(o))
    if (!KNOWN_FIELDS.has(k)) throw new FieldError(fieldName(k), 'unknown field');
  const dir = resolve(file, '..');
  const str = (k: string, dflt?: string): string => {
    const v = o[k];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v !== 'string')
      throw new FieldError(k, v === undefined ? 'is required' : `must be a string, got ${describeValue(v)}`);
    return v;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = o[k];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw new FieldError(k, `must be true or false, got ${describeValue(v)}`);
    return v;
  };
  const int = (k: string, min: number, max: number, dflt?: number): number => {
    const v = o[k];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw new FieldError(k, `must be an integer from ${min} to ${max}, got ${describeValue(v)}`);
    return v;
  };

  const id = str('id');
  if (!ID_RE.test(id))
    throw new FieldError(
      'id',
      `must match ${ID_RE} (lowercase letters, digits, '-', '_'), got ${describeValue(id)}`,
    );
  const name = checkText('name', str('name', id), MAX_NAME_CHARS);
  // A tile must show something: a blank name would hide which VM it is.
  if (!/\S/u.test(name)) throw new FieldError('name', 'must have a visible character');
  const slot = int('slot', 1, MAX_SLOT);
  const kind = str('kind', 'personal');
  if (!(VM_KINDS as readonly string[]).includes(kind))
    throw new FieldError('kind', `must be one of ${VM_KINDS.join(', ')}, got ${describeValue(kind)}`);
  const color = str('color');
  if (!COLOR_RE.test(color)) throw new FieldError('color', `must be #rrggbb, got ${describeValue(color)}`);
  const icon = str('icon', '');
  if (!ICON_RE.test(icon))
    throw new FieldError(
      'icon',
      `must be an icon name (letters, digits, '_', '.', '-'), got ${describeValue(icon)}`,
    );
  const memoryMiB = int('memoryMiB', 16, 1024 * 1024);
  const vcpus = int('vcpus', 1, 64, 1);

  const disks: DiskDefinition[] = [];
  const rawDisks = o.disks ?? [];
  if (!Array.isArray(rawDisks)) throw new FieldError('disks', 'must be an array');
  rawDisks.forEach((d, i) => {
    const f = `disks[${i}]`;
    if (!d || typeof d !== 'object' || Array.isArray(d))
      throw new FieldError(f, 'must be an object {path, format, readonly}');
    const dd = d as Record<string, unknown>;
    for (const k of Object.keys(dd))
      if (!['path', 'format', 'readonly', 'sizeMiB'].includes(k))
        throw new FieldError(`${f}.${fieldName(k)}`, 'unknown field');
    if (typeof dd.path !== 'string' || dd.path === '')
      throw new FieldError(`${f}.path`, 'must be a non-empty string');
    if (typeof dd.format !== 'string' || !(DISK_FORMATS as readonly string[]).includes(dd.format))
      throw new FieldError(
        `${f}.format`,
        `must be one of ${DISK_FORMATS.join(', ')} (vpc = VHD), got ${describeValue(dd.format)}`,
      );
    if (dd.readonly !== undefined && typeof dd.readonly !== 'boolean')
      throw new FieldError(`${f}.readonly`, 'must be true or false');
    if (
      dd.sizeMiB !== undefined &&
      (typeof dd.sizeMiB !== 'number' || !Number.isInteger(dd.sizeMiB) || dd.sizeMiB < 1)
    )
      throw new FieldError(`${f}.sizeMiB`, 'must be a positive integer');
    // QEMU's -drive splits its value at ','.
    if (dd.path.includes(',')) throw new FieldError(`${f}.path`, "must not contain ','");
    disks.push({
      path: checkPath(`${f}.path`, dd.path, dir, imageDirs),
      format: dd.format as DiskFormat,
      readonly: (dd.readonly as boolean | undefined) ?? false,
      sizeMiB: (dd.sizeMiB as number | undefined) ?? null,
    });
  });

  const netText = str('network', 'none');
  let network: NetworkDefinition;
  if (netText === 'none' || netText === 'user') network = { mode: netText };
  else if (netText.startsWith('bridge:') && BRIDGE_RE.test(netText.slice(7)))
    network = { mode: 'bridge', bridge: netText.slice(7) };
  else throw new FieldError('network', `must be none, user or bridge:<name>, got ${describeValue(netText)}`);

  let gpu: VmDefinition['gpu'] = null;
  if (o.gpu !== undefined && o.gpu !== null) {
    const g = o.gpu as Record<string, unknown>;
    if (typeof g !== 'object' || Array.isArray(g) || !Array.isArray(g.pci) || g.pci.length === 0)
      throw new FieldError(
        'gpu',
        'must be null or {"pci": ["0000:00:02.0", ...], "handoff"?: boolean} listing every function of the device',
      );
    for (const k of Object.keys(g))
      if (k !== 'pci' && k !== 'handoff') throw new FieldError(`gpu.${fieldName(k)}`, 'unknown field');
    if (g.handoff !== undefined && typeof g.handoff !== 'boolean')
      throw new FieldError('gpu.handoff', `must be true or false, got ${describeValue(g.handoff)}`);
    g.pci.forEach((p, i) => {
      if (typeof p !== 'string' || !PCI_RE.test(p))
        throw new FieldError(
          `gpu.pci[${i}]`,
          `must be a PCI address like 0000:00:02.0, got ${describeValue(p)}`,
        );
    });
    gpu = { pci: (g.pci as string[]).map((p) => p.toLowerCase()), handoff: g.handoff === true };
  }

  const display = str('display', 'vnc');
  if (!(VM1_DISPLAY_VALUES as readonly string[]).includes(display))
    throw new FieldError('display', `must be vnc or none, got ${describeValue(display)}`);
  const backend = str('backend', 'qemu');
  if (!(BACKENDS as readonly string[]).includes(backend))
    throw new FieldError('backend', `must be one of ${BACKENDS.join(', ')}, got ${describeValue(backend)}`);
  // What only QEMU can do is refused in a Xen file when it is loaded, not when it is started: the
  // file's author (or the person's CreateVm/Update, which validate the same document) learns why.
  if (backend === 'xen') {
    if (network.mode === 'user')
      throw new FieldError(
        'network',
        "'user' networking (NAT through QEMU's user-mode network) is QEMU-only; a Xen VM takes none or bridge:<name>",
      );
    const vhdx = disks.findIndex((d) => !XEN_DISK_FORMATS.includes(d.format));
    if (vhdx >= 0)
      throw new FieldError(
        `disks[${vhdx}].format`,
        `${disks[vhdx].format} is not supported by the Xen backend (xl takes ${XEN_DISK_FORMATS.join(', ')}; vpc = VHD); convert the image with qemu-img`,
      );
  }
  // A QEMU switch moves no GPU (only the Xen backend has a hand-off): accepting the flag would
  // promise a hand-off that never happens, so the file is refused where its author sees why.
  if (gpu?.handoff && backend === 'qemu')
    throw new FieldError(
      'gpu.handoff',
      'GPU hand-off is not supported on the QEMU/KVM backend yet: use the Xen backend ("backend": "xen")',
    );

  let kernel: string | null = null;
  if (o.kernel !== undefined && o.kernel !== null) {
    kernel = checkPath('kernel', str('kernel'), dir, imageDirs);
  }
  const append = checkText('append', str('append', ''), MAX_APPEND_CHARS);
  if (append && !kernel) throw new FieldError('append', "needs 'kernel' (it is the kernel command line)");
  let cdrom: string | null = null;
  if (o.cdrom !== undefined && o.cdrom !== null) {
    const c = str('cdrom');
    // QEMU's -drive splits its value at ','.
    if (c.includes(',')) throw new FieldError('cdrom', "must not contain ','");
    cdrom = checkRealPath('cdrom', c, dir, [...imageDirs, ...mediaRoots]);
  }

  return {
    id,
    name,
    slot,
    kind: kind as VmKind,
    color: color.toLowerCase(),
    icon,
    memoryMiB,
    vcpus,
    disks,
    network,
    autostart: bool('autostart', false),
    gpu,
    usbAutoAttach: bool('usbAutoAttach', false),
    display: display as Vm1Display,
    backend: backend as BackendName,
    kernel,
    append,
    cdrom,
    file,
  };
}

export interface LoadedConfig {
  /** Valid definitions, in file-name order. */
  vms: VmDefinition[];
  errors: ConfigError[];
  /** Ids read from invalid files (where the id itself was readable and not taken): their LastError. */
  invalidIds: Map<string, ConfigError>;
  /** Valid files set aside because they name a backend not in ConfigOptions.backends. */
  otherBackend: Array<{ file: string; backend: BackendName }>;
}

/**
 * Read every *.json file of `dir`. Each file is validated on its own; then files are checked
 * against each other in file-name order, so the later of two files claiming the same id, slot or
 * GPU function is the one rejected and the earlier one keeps working. A GPU may be named by
 * several files only when every one of them says `"handoff": true` and lists the same functions
 * (a GPU shared for hand-off); any other double claim is an accident and rejected.
 */
export function loadConfigDir(dir: string, opts: ConfigOptions = {}): LoadedConfig {
  const errors: ConfigError[] = [];
  const invalidIds = new Map<string, ConfigError>();
  const imageDirs = opts.imageDirs ?? defaultImageDirs(dir);
  const fileRules = opts.fileRules ?? defaultFileRules();
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
      .sort();
  } catch (e) {
    errors.push({
      file: dir,
      field: '(directory)',
      reason: boundedReason(
        `cannot read the VM directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      ),
    });
    return { vms: [], errors, invalidIds, otherBackend: [] };
  }
  if (names.length > MAX_DEFINITION_FILES) {
    errors.push({
      file: dir,
      field: '(directory)',
      reason: `${names.length} definition files; only the first ${MAX_DEFINITION_FILES} in file-name order are read`,
    });
    names = names.slice(0, MAX_DEFINITION_FILES);
  }
  const vms: VmDefinition[] = [];
  const otherBackend: LoadedConfig['otherBackend'] = [];
  const byId = new Map<string, string>();
  const bySlot = new Map<number, string>();
  /** Who claimed each GPU function first: file, and the whole claim (for shared hand-off GPUs). */
  const byPci = new Map<string, { file: string; gpu: NonNullable<VmDefinition['gpu']> }>();
  for (const n of names) {
    // The name is shown (ConfigFile, ConfigErrors): one with control or bidi characters could
    // pass for another file's, so it is refused, and named escaped.
    const badName = firstUnsafeChar(n);
    if (badName) {
      errors.push({
        file: join(dir, excerpt(n)),
        field: '(file)',
        reason: `the file name contains a control, bidi or invisible character (${badName.char}); rename it`,
      });
      continue;
    }
    const file = join(dir, n);
    const read = readDefinitionFile(file, fileRules);
    if (!read.ok) {
      errors.push({ file, field: '(file)', reason: boundedReason(read.reason) });
      continue;
    }
    const parsed = parseVmDefinition(file, read.text, { imageDirs, mediaRoots: opts.mediaRoots });
    const reject = (error: ConfigError, id: string | null) => {
      errors.push(error);
      if (id && !byId.has(id) && !invalidIds.has(id)) invalidIds.set(id, error);
    };
    if (!parsed.ok) {
      reject(parsed.error, parsed.id);
      continue;
    }
    const d = parsed.def;
    if (opts.backends && !opts.backends.includes(d.backend)) {
      otherBackend.push({ file, backend: d.backend });
      continue;
    }
    const problem = opts.check?.(d) ?? null;
    if (problem) {
      reject(problem, d.id);
      continue;
    }
    if (byId.has(d.id)) {
      errors.push({
        file,
        field: 'id',
        reason: `id '${d.id}' is already used by ${basename(byId.get(d.id)!)}`,
      });
      continue;
    }
    if (bySlot.has(d.slot)) {
      reject(
        { file, field: 'slot', reason: `slot ${d.slot} is already used by ${basename(bySlot.get(d.slot)!)}` },
        d.id,
      );
      continue;
    }
    const gpuClash = d.gpu ? gpuClaimError(d.gpu, byPci) : null;
    if (gpuClash) {
      reject({ file, field: 'gpu', reason: gpuClash }, d.id);
      continue;
    }
    byId.set(d.id, file);
    bySlot.set(d.slot, file);
    for (const p of d.gpu?.pci ?? []) if (!byPci.has(p)) byPci.set(p, { file, gpu: d.gpu! });
    vms.push(d);
  }
  for (const id of byId.keys()) invalidIds.delete(id);
  return { vms, errors, invalidIds, otherBackend };
}

/** Why `gpu` may not claim its functions given the earlier claims, or null when it may. */
function gpuClaimError(
  gpu: NonNullable<VmDefinition['gpu']>,
  byPci: Map<string, { file: string; gpu: NonNullable<VmDefinition['gpu']> }>,
): string | null {
  for (const p of gpu.pci) {
    const earlier = byPci.get(p);
    if (!earlier) continue;
    const other = basename(earlier.file);
    if (!gpu.handoff || !earlier.gpu.handoff)
      return (
        `PCI device ${p} is already claimed by ${other}` +
        (gpu.handoff || earlier.gpu.handoff
          ? '; a GPU may be named by several VMs only when every one of them sets "handoff": true'
          : '')
      );
    const same =
      earlier.gpu.pci.length === gpu.pci.length && earlier.gpu.pci.every((q) => gpu.pci.includes(q));
    if (!same)
      return `PCI device ${p} is shared for hand-off by ${other} with the functions ${earlier.gpu.pci.join(', ')}; list the same functions`;
  }
  return null;
}
