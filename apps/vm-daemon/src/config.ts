import { readdirSync, readFileSync } from 'node:fs';
import { basename, isAbsolute, join, resolve } from 'node:path';
import { MAX_SLOT, VM_KINDS, type VmKind } from '@bulkhead/common';

/** Disk image formats qemu-img and QEMU understand under these names ('vpc' is VHD). */
export const DISK_FORMATS = ['qcow2', 'raw', 'vpc', 'vhdx'] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];
export const BACKENDS = ['qemu', 'xen'] as const;
export type BackendName = (typeof BACKENDS)[number];

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
  /** 'none' | 'vnc': how the screen is exported (always a VNC unix socket for the QEMU backend). */
  display: string;
  backend: BackendName;
  /** Direct kernel boot (the test guest): absolute or relative to the file. */
  kernel: string | null;
  append: string;
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
  '$comment',
]);
const ID_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
const PCI_RE = /^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/;
const BRIDGE_RE = /^[A-Za-z0-9_.-]{1,15}$/;

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
export function parseVmDefinition(file: string, text: string): ParsedFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return {
      ok: false,
      error: { file, field: '(file)', reason: `not valid JSON: ${(e as Error).message}` },
      id: null,
    };
  }
  const id =
    raw &&
    typeof raw === 'object' &&
    typeof (raw as { id?: unknown }).id === 'string' &&
    ID_RE.test((raw as { id: string }).id)
      ? (raw as { id: string }).id
      : null;
  try {
    return { ok: true, def: validate(file, raw) };
  } catch (e) {
    if (e instanceof FieldError) return { ok: false, error: { file, field: e.field, reason: e.message }, id };
    throw e;
  }
}

function validate(file: string, raw: unknown): VmDefinition {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new FieldError('(file)', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  // An empty key is shown as "" so the error still names a field.
  for (const k of Object.keys(o)) if (!KNOWN_FIELDS.has(k)) throw new FieldError(k || '""', 'unknown field');
  const dir = resolve(file, '..');
  const str = (k: string, dflt?: string): string => {
    const v = o[k];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v !== 'string')
      throw new FieldError(k, v === undefined ? 'is required' : `must be a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = o[k];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw new FieldError(k, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const int = (k: string, min: number, max: number, dflt?: number): number => {
    const v = o[k];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw new FieldError(k, `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return v;
  };

  const id = str('id');
  if (!ID_RE.test(id))
    throw new FieldError(
      'id',
      `must match ${ID_RE} (lowercase letters, digits, '-', '_'), got ${JSON.stringify(id)}`,
    );
  const name = str('name', id);
  if (name.length === 0 || name.length > 64) throw new FieldError('name', 'must be 1-64 characters');
  const slot = int('slot', 1, MAX_SLOT);
  const kind = str('kind', 'personal');
  if (!(VM_KINDS as readonly string[]).includes(kind))
    throw new FieldError('kind', `must be one of ${VM_KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  const color = str('color');
  if (!COLOR_RE.test(color)) throw new FieldError('color', `must be #rrggbb, got ${JSON.stringify(color)}`);
  const icon = str('icon', '');
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
        throw new FieldError(`${f}.${k}`, 'unknown field');
    if (typeof dd.path !== 'string' || dd.path === '')
      throw new FieldError(`${f}.path`, 'must be a non-empty string');
    if (typeof dd.format !== 'string' || !(DISK_FORMATS as readonly string[]).includes(dd.format))
      throw new FieldError(
        `${f}.format`,
        `must be one of ${DISK_FORMATS.join(', ')} (vpc = VHD), got ${JSON.stringify(dd.format)}`,
      );
    if (dd.readonly !== undefined && typeof dd.readonly !== 'boolean')
      throw new FieldError(`${f}.readonly`, 'must be true or false');
    if (
      dd.sizeMiB !== undefined &&
      (typeof dd.sizeMiB !== 'number' || !Number.isInteger(dd.sizeMiB) || dd.sizeMiB < 1)
    )
      throw new FieldError(`${f}.sizeMiB`, 'must be a positive integer');
    if (/[,\n]/.test(dd.path)) throw new FieldError(`${f}.path`, "must not contain ',' or a newline");
    disks.push({
      path: isAbsolute(dd.path) ? dd.path : join(dir, dd.path),
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
  else throw new FieldError('network', `must be none, user or bridge:<name>, got ${JSON.stringify(netText)}`);

  let gpu: VmDefinition['gpu'] = null;
  if (o.gpu !== undefined && o.gpu !== null) {
    const g = o.gpu as Record<string, unknown>;
    if (typeof g !== 'object' || Array.isArray(g) || !Array.isArray(g.pci) || g.pci.length === 0)
      throw new FieldError(
        'gpu',
        'must be null or {"pci": ["0000:00:02.0", ...], "handoff"?: boolean} listing every function of the device',
      );
    for (const k of Object.keys(g))
      if (k !== 'pci' && k !== 'handoff') throw new FieldError(`gpu.${k}`, 'unknown field');
    if (g.handoff !== undefined && typeof g.handoff !== 'boolean')
      throw new FieldError('gpu.handoff', `must be true or false, got ${JSON.stringify(g.handoff)}`);
    g.pci.forEach((p, i) => {
      if (typeof p !== 'string' || !PCI_RE.test(p))
        throw new FieldError(
          `gpu.pci[${i}]`,
          `must be a PCI address like 0000:00:02.0, got ${JSON.stringify(p)}`,
        );
    });
    gpu = { pci: (g.pci as string[]).map((p) => p.toLowerCase()), handoff: g.handoff === true };
  }

  const display = str('display', 'vnc');
  if (!['vnc', 'none'].includes(display))
    throw new FieldError('display', `must be vnc or none, got ${JSON.stringify(display)}`);
  const backend = str('backend', 'qemu');
  if (!(BACKENDS as readonly string[]).includes(backend))
    throw new FieldError('backend', `must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(backend)}`);

  let kernel: string | null = null;
  if (o.kernel !== undefined && o.kernel !== null) {
    const k = str('kernel');
    kernel = isAbsolute(k) ? k : join(dir, k);
  }
  const append = str('append', '');
  if (append && !kernel) throw new FieldError('append', "needs 'kernel' (it is the kernel command line)");

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
    display,
    backend: backend as BackendName,
    kernel,
    append,
    file,
  };
}

export interface LoadedConfig {
  /** Valid definitions, in file-name order. */
  vms: VmDefinition[];
  errors: ConfigError[];
  /** Ids read from invalid files (where the id itself was readable and not taken): their LastError. */
  invalidIds: Map<string, ConfigError>;
}

/**
 * Read every *.json file of `dir`. Each file is validated on its own; then files are checked
 * against each other in file-name order, so the later of two files claiming the same id, slot or
 * GPU function is the one rejected and the earlier one keeps working. A GPU may be named by
 * several files only when every one of them says `"handoff": true` and lists the same functions
 * (a GPU shared for hand-off); any other double claim is an accident and rejected.
 */
export function loadConfigDir(dir: string): LoadedConfig {
  const errors: ConfigError[] = [];
  const invalidIds = new Map<string, ConfigError>();
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
      .sort();
  } catch (e) {
    errors.push({
      file: dir,
      field: '(directory)',
      reason: `cannot read the VM directory: ${(e as Error).message}`,
    });
    return { vms: [], errors, invalidIds };
  }
  const vms: VmDefinition[] = [];
  const byId = new Map<string, string>();
  const bySlot = new Map<number, string>();
  /** Who claimed each GPU function first: file, and the whole claim (for shared hand-off GPUs). */
  const byPci = new Map<string, { file: string; gpu: NonNullable<VmDefinition['gpu']> }>();
  for (const n of names) {
    const file = join(dir, n);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      errors.push({ file, field: '(file)', reason: `cannot read: ${(e as Error).message}` });
      continue;
    }
    const parsed = parseVmDefinition(file, text);
    const reject = (error: ConfigError, id: string | null) => {
      errors.push(error);
      if (id && !byId.has(id) && !invalidIds.has(id)) invalidIds.set(id, error);
    };
    if (!parsed.ok) {
      reject(parsed.error, parsed.id);
      continue;
    }
    const d = parsed.def;
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
  return { vms, errors, invalidIds };
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
