/**
 * The person's VM files: what CreateVm and Update write and Delete removes. They live in their
 * own directory (default <state dir>/vms: /var/lib/bulkhead/vm-daemon/vms), never in the
 * administrator's (/etc/bulkhead/vms), and their disks in their own image directory (<state>/images), so nothing the UI role asks for can write, replace
 * or delete an admin file or disk.
 *
 * A request becomes a file document, and that document goes through parseVmDefinition — the very
 * validation files on disk get — before anything is written; its errors are reworded to name the
 * option the caller sent (memory_mib, not memoryMiB). Files are written atomically.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import { MAX_SLOT, readJsonFile, writeFileAtomic } from '@bulkhead/common';
import {
  BOOT_ENTRY,
  DISK_FORMATS,
  ID_RE,
  MAX_NAME_CHARS,
  XEN_DISK_FORMATS,
  parseVmDefinition,
  resolveInside,
  type BackendName,
  type ConfigOptions,
  type DiskFormat,
  type VmDefinition,
} from './config';
import { checkFreeSpace, importTargetOf } from './disk-manager';
import { describeValue, pathText } from './config-text';

/** What CreateVm and Update accept (after the bus adapter checked each option's D-Bus type). */
export interface VmOptions {
  id?: string;
  name?: string;
  slot?: number;
  color?: string;
  memory_mib?: number;
  vcpus?: number;
  network?: string;
  usb_auto_attach?: boolean;
  disk_size_mib?: number;
  disk_format?: string;
  disk_import?: string;
  /** An ISO path; '' (Update) ejects. */
  cdrom?: string;
}

/**
 * The networks the person may pick, per backend (a bridge is the administrator's business). On
 * Xen, 'user' (NAT through QEMU's user-mode network) does not exist: the device model of an HVM
 * domain gets its network cards from libxl's vif, which needs a bridge.
 */
const PERSON_NETWORKS: Record<BackendName, string[]> = { qemu: ['none', 'user'], xen: ['none'] };
/** The disk formats a new or imported disk may have, per backend (xl has no VHDX). */
const PERSON_DISK_FORMATS: Record<BackendName, readonly DiskFormat[]> = {
  qemu: DISK_FORMATS,
  xen: XEN_DISK_FORMATS,
};

const DEFAULT_COLOR = '#2a6fdb';
const DEFAULT_MEMORY_MIB = 512;
/** Largest disk the UI may ask for (1 TiB); the free space usually bounds it long before. */
export const MAX_DISK_MIB = 1024 * 1024;

/** A definition file's field → the option naming it in CreateVm/Update. */
const OPTION_OF_FIELD: Record<string, string> = {
  memoryMiB: 'memory_mib',
  usbAutoAttach: 'usb_auto_attach',
  'disks[0].format': 'disk_format',
  'disks[0].sizeMiB': 'disk_size_mib',
  'disks[0].path': 'disk',
};

const bad = (option: string, reason: string) => new BulkheadError('InvalidArgument', `${option}: ${reason}`);

/** What beginNewDisk's marker says. */
interface CreateMarker {
  disk: string;
  vmFile: string;
}

/** A marker removeCreateLeftovers found. */
export interface CreateLeftover {
  marker: string;
  disk: string;
  /** The VM file the cut-off CreateVm was to write; null: the marker could not be read (left). */
  vmFile: string | null;
  /** The disk existed with no VM file and no VM naming it, and was removed. */
  diskRemoved: boolean;
}

/** beginNewDisk's marker for `disk`: hidden, beside it. The one place that knows the name. */
export function newDiskMarkerPath(disk: string): string {
  return join(dirname(disk), `.${basename(disk)}.creating`);
}

/** What the caller wants done besides writing the file. */
export interface CreatePlan {
  def: VmDefinition;
  /** The document written to def.file. */
  doc: Record<string, unknown>;
  newDisk: { path: string; format: DiskFormat; sizeMiB: number } | null;
  importDisk: { source: string; path: string; format: DiskFormat } | null;
}

export interface VmStoreOptions {
  dir: string;
  imageDir: string;
  /** Where ISOs and imported images may come from (USB sticks mounted read-only). */
  mediaRoots: string[];
  /**
   * The backend this daemon runs (default qemu): CreateVm writes VMs for it, and options it
   * cannot honour are refused by name. On Xen a person's VM is an HVM domain (no kernel, no
   * sidecar: xen-options.ts's defaults — the device model's CD-ROM, disk and USB controller).
   */
  backend?: BackendName;
  /**
   * The running backend's check of each file (ConfigOptions.check: on Xen the guest kind, its
   * sidecar and its medium), applied to the person's files when loaded and to every request.
   */
  check?: ConfigOptions['check'];
}

export class VmStore {
  constructor(readonly opts: VmStoreOptions) {}

  /** The backend the VMs this store writes are for. */
  get backend(): BackendName {
    return this.opts.backend ?? 'qemu';
  }

  /** The ConfigOptions the registry loads the person's dir with (disks only in imageDir). */
  get configOptions(): ConfigOptions {
    return { imageDirs: [this.opts.imageDir], mediaRoots: this.opts.mediaRoots, check: this.opts.check };
  }

  /** Make the directories (the daemon owns them; nobody else may write them). */
  ensureDirs(): void {
    mkdirSync(this.opts.dir, { recursive: true, mode: 0o755 });
    mkdirSync(this.opts.imageDir, { recursive: true, mode: 0o700 });
  }

  /**
   * Remove what an import left when the daemon died in the middle of it (qemu-img's hidden
   * temporary output, see DiskImport): only this daemon writes the image dir, and at start no
   * import runs, so every such file is a leftover. Returns the files removed.
   */
  removeImportLeftovers(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.opts.imageDir);
    } catch {
      return [];
    }
    const gone = names.map((n) => join(this.opts.imageDir, n)).filter((f) => importTargetOf(f) !== null);
    for (const f of gone) rmSync(f, { force: true });
    return gone;
  }

  /**
   * CreateVm is about to make the new disk `disk` for the VM file `vmFile`: a marker beside the
   * disk, durable before qemu-img creates it, says so until newDiskDone. A daemon killed between
   * the disk and the VM file (SIGKILL, power loss) leaves the marker, which proves at the next
   * start that the disk is this daemon's (removeCreateLeftovers). Refuses a disk that exists.
   */
  beginNewDisk(disk: string, vmFile: string): void {
    if (existsSync(disk))
      throw new BulkheadError('InvalidArgument', `disk: ${disk} already exists; not overwriting it`);
    const marker: CreateMarker = { disk, vmFile };
    writeFileAtomic(newDiskMarkerPath(disk), `${JSON.stringify(marker)}\n`, 0o600);
  }

  /** The VM file naming `disk` is written: the disk is the VM's from now on. */
  newDiskDone(disk: string): void {
    rmSync(newDiskMarkerPath(disk), { force: true });
  }

  /**
   * CreateVm failed after beginNewDisk: the disk (if qemu-img made any of it) goes, then the marker.
   * The disk did not exist when the marker was written, and only this daemon writes the image dir.
   */
  abandonNewDisk(disk: string): void {
    rmSync(disk, { force: true });
    rmSync(newDiskMarkerPath(disk), { force: true });
  }

  /**
   * Remove what a CreateVm cut off between its new disk and its VM file left (see beginNewDisk):
   * at start no CreateVm runs, so every marker is a leftover. The disk goes only when the marker
   * names it and its VM file does not exist, and `inUse` (a VM loaded from any dir naming it) says
   * no; otherwise only the marker goes. A marker that cannot be read is left, with its disk.
   */
  removeCreateLeftovers(inUse: (disk: string) => boolean): CreateLeftover[] {
    let names: string[];
    try {
      names = readdirSync(this.opts.imageDir);
    } catch {
      return [];
    }
    const found: CreateLeftover[] = [];
    for (const name of names) {
      const m = /^\.(.+)\.creating$/.exec(name);
      if (!m) continue;
      const markerPath = join(this.opts.imageDir, name);
      const disk = join(this.opts.imageDir, m[1]);
      // The state files' reader: a FIFO, a symlink or a huge file is unreadable, not waited on.
      const read = readJsonFile(markerPath, (v) => {
        const j = (v ?? {}) as Partial<CreateMarker>;
        if (j.disk !== disk || typeof j.vmFile !== 'string' || !this.owns(j.vmFile))
          throw new Error('not a marker of this disk');
        return { disk, vmFile: j.vmFile };
      });
      const marker: CreateMarker | null = read.ok ? read.value : null;
      if (!marker) {
        found.push({ marker: markerPath, disk, vmFile: null, diskRemoved: false });
        continue;
      }
      const keep = existsSync(marker.vmFile) || inUse(disk);
      const diskRemoved = !keep && existsSync(disk);
      if (diskRemoved) rmSync(disk, { force: true });
      rmSync(markerPath, { force: true });
      found.push({ marker: markerPath, disk, vmFile: marker.vmFile, diskRemoved });
    }
    return found;
  }

  /**
   * Check a CreateVm request against the rules and the VMs that exist (`taken`: their ids and
   * slots); nothing is written. Throws InvalidArgument naming the option.
   */
  planCreate(name: string, o: VmOptions, taken: { ids: Set<string>; slots: Set<number> }): CreatePlan {
    checkName(name);
    let id: string;
    if (o.id !== undefined) {
      if (!ID_RE.test(o.id))
        throw bad(
          'id',
          `must match ${ID_RE} (lowercase letters, digits, '-', '_'), got ${describeValue(o.id)}`,
        );
      if (taken.ids.has(o.id)) throw bad('id', `'${o.id}' is already used by another VM`);
      id = o.id;
    } else id = idFromName(name, taken.ids);
    let slot = o.slot;
    if (slot === undefined) {
      slot = [...Array(MAX_SLOT).keys()].map((i) => i + 1).find((s) => !taken.slots.has(s));
      if (slot === undefined) throw bad('slot', `every slot 1-${MAX_SLOT} is taken; delete a VM first`);
    } else if (taken.slots.has(slot)) throw bad('slot', `slot ${slot} is already used by another VM`);
    checkNetwork(o.network, this.backend);
    if (o.disk_size_mib !== undefined && o.disk_import !== undefined)
      throw bad('disk_import', 'give either disk_size_mib (a new disk) or disk_import, not both');
    if (o.disk_format !== undefined && o.disk_size_mib === undefined && o.disk_import === undefined)
      throw bad('disk_format', 'needs disk_size_mib or disk_import');
    const format = (o.disk_format ?? 'qcow2') as DiskFormat;
    if (!(DISK_FORMATS as readonly string[]).includes(format))
      throw bad(
        'disk_format',
        `must be one of ${DISK_FORMATS.join(', ')} (vpc = VHD), got ${describeValue(format)}`,
      );
    if (!PERSON_DISK_FORMATS[this.backend].includes(format))
      throw bad(
        'disk_format',
        `${format} is not available on the ${BOOT_ENTRY[this.backend]} boot entry (${this.backend} takes ${PERSON_DISK_FORMATS[this.backend].join(', ')}; vpc = VHD)`,
      );
    if (o.disk_size_mib !== undefined && (o.disk_size_mib < 1 || o.disk_size_mib > MAX_DISK_MIB))
      throw bad('disk_size_mib', `must be from 1 to ${MAX_DISK_MIB} MiB, got ${o.disk_size_mib}`);
    const diskPath = join(this.opts.imageDir, `${id}.${format === 'vpc' ? 'vhd' : format}`);
    const wantsDisk = o.disk_size_mib !== undefined || o.disk_import !== undefined;
    if (wantsDisk && existsSync(diskPath))
      throw bad('id', `a disk ${pathText(diskPath)} already exists for '${id}'; pick another id`);
    let importSource: string | null = null;
    if (o.disk_import !== undefined) importSource = this.mediaPath('disk_import', o.disk_import);
    const cdrom = o.cdrom !== undefined && o.cdrom !== '' ? this.mediaPath('cdrom', o.cdrom) : null;

    const doc: Record<string, unknown> = {
      id,
      name,
      slot,
      kind: 'personal',
      color: o.color ?? DEFAULT_COLOR,
      memoryMiB: o.memory_mib ?? DEFAULT_MEMORY_MIB,
      vcpus: o.vcpus ?? 1,
      disks: wantsDisk ? [{ path: diskPath, format }] : [],
      network: o.network ?? 'none',
      usbAutoAttach: o.usb_auto_attach ?? false,
      backend: this.backend,
      ...(cdrom ? { cdrom } : {}),
    };
    const def = this.validate(join(this.opts.dir, `${id}.json`), doc);
    if (o.disk_size_mib !== undefined)
      checkFreeSpace('disk_size_mib', this.opts.imageDir, o.disk_size_mib * 1024 * 1024);
    if (importSource) checkFreeSpace('disk_import', this.opts.imageDir, statSync(importSource).size);
    return {
      def,
      doc,
      newDisk: o.disk_size_mib !== undefined ? { path: diskPath, format, sizeMiB: o.disk_size_mib } : null,
      importDisk: importSource ? { source: importSource, path: diskPath, format } : null,
    };
  }

  /** The document of `def` with an Update's changes, validated; nothing is written. */
  planUpdate(
    def: VmDefinition,
    o: VmOptions,
    takenSlots: Set<number>,
  ): { def: VmDefinition; doc: Record<string, unknown> } {
    if (o.name !== undefined) checkName(o.name);
    if (o.slot !== undefined && o.slot !== def.slot && takenSlots.has(o.slot))
      throw bad('slot', `slot ${o.slot} is already used by another VM`);
    checkNetwork(o.network, def.backend);
    const doc = documentOf(def);
    if (o.name !== undefined) doc.name = o.name;
    if (o.slot !== undefined) doc.slot = o.slot;
    if (o.color !== undefined) doc.color = o.color;
    if (o.memory_mib !== undefined) doc.memoryMiB = o.memory_mib;
    if (o.vcpus !== undefined) doc.vcpus = o.vcpus;
    if (o.network !== undefined) doc.network = o.network;
    if (o.usb_auto_attach !== undefined) doc.usbAutoAttach = o.usb_auto_attach;
    if (o.cdrom !== undefined) {
      if (o.cdrom === '') delete doc.cdrom;
      else doc.cdrom = this.mediaPath('cdrom', o.cdrom);
    }
    return { def: this.validate(def.file, doc), doc };
  }

  /** Write a validated document atomically (readable by all, writable by the daemon only). */
  write(file: string, doc: Record<string, unknown>): void {
    if (!this.owns(file)) throw new BulkheadError('Failed', `${file} is not in ${this.opts.dir}`);
    writeFileAtomic(file, `${JSON.stringify(doc, null, 2)}\n`, 0o644);
  }

  /** Remove a person VM's file and, when asked, its disks inside the person's image dir only. */
  remove(def: VmDefinition, removeDisks: boolean): string[] {
    if (!this.owns(def.file)) throw new BulkheadError('Failed', `${def.file} is not in ${this.opts.dir}`);
    const removed: string[] = [];
    if (removeDisks)
      for (const d of def.disks)
        if (inside(d.path, this.opts.imageDir) && existsSync(d.path)) {
          rmSync(d.path, { force: true });
          removed.push(d.path);
        }
    rmSync(def.file, { force: true });
    return removed;
  }

  /** Whether `file` is one of the person's VM files (directly in the person's dir). */
  owns(file: string): boolean {
    return resolve(file, '..') === resolve(this.opts.dir);
  }

  /** Disks of `def` the person's image dir holds (the ones Delete may remove). */
  ownDisks(def: VmDefinition): string[] {
    return def.disks.map((d) => d.path).filter((p) => inside(p, this.opts.imageDir));
  }

  /** An ISO or image the person picked: an existing regular file under a media root. */
  private mediaPath(option: string, v: string): string {
    if (v.length > 1024) throw bad(option, 'must be at most 1024 characters');
    if (!v.startsWith('/')) throw bad(option, `must be an absolute path, got ${describeValue(v)}`);
    if (v.includes(',')) throw bad(option, "must not contain ','");
    const roots = option === 'cdrom' ? [...this.opts.mediaRoots, this.opts.imageDir] : this.opts.mediaRoots;
    const r = resolveInside(v, '/', roots);
    if (!r.ok) throw bad(option, r.reason);
    let st;
    try {
      st = statSync(r.path);
    } catch (e) {
      throw bad(option, `${pathText(r.path)}: ${(e as NodeJS.ErrnoException).code ?? 'cannot read it'}`);
    }
    if (!st.isFile()) throw bad(option, `${pathText(r.path)} is not a regular file`);
    return r.path;
  }

  /** parseVmDefinition on the document, its errors reworded to name the caller's option. */
  private validate(file: string, doc: Record<string, unknown>): VmDefinition {
    const parsed = parseVmDefinition(file, JSON.stringify(doc), this.configOptions);
    const problem = parsed.ok ? (this.opts.check?.(parsed.def) ?? null) : parsed.error;
    if (parsed.ok && !problem) return parsed.def;
    const { field, reason } = problem!;
    throw bad(OPTION_OF_FIELD[field] ?? field, reason);
  }
}

/** A network the person may pick on `backend`; the error says what the other backend would allow. */
function checkNetwork(network: string | undefined, backend: BackendName): void {
  if (network === undefined || PERSON_NETWORKS[backend].includes(network)) return;
  if (PERSON_NETWORKS.qemu.includes(network) || PERSON_NETWORKS.xen.includes(network))
    throw bad(
      'network',
      `'${network}' is not available on the ${BOOT_ENTRY[backend]} boot entry (${backend} takes ${PERSON_NETWORKS[backend].join(', ')})` +
        (backend === 'xen'
          ? ": NAT ('user') is QEMU's user-mode network, which Xen domains do not have"
          : ''),
    );
  throw bad(
    'network',
    `must be one of ${PERSON_NETWORKS[backend].join(', ')}, got ${describeValue(network)}`,
  );
}

function inside(p: string, dir: string): boolean {
  const root = resolve(dir);
  return resolve(p).startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * A name the person types. Besides the file rules (visible, no control/bidi characters, checked
 * with the document), no '/' or '\': a name is never a path, and one that looks like one
 * ('../../etc/x') is refused rather than silently turned into something else.
 */
function checkName(name: string): void {
  if (name.length > MAX_NAME_CHARS)
    throw bad('name', `must be at most ${MAX_NAME_CHARS} characters, got ${name.length}`);
  if (/[/\\]/.test(name)) throw bad('name', `must not contain '/' or '\\', got ${describeValue(name)}`);
}

/** A free id from a name: "Lab 2" → "lab-2", then "lab-2-2", ... */
export function idFromName(name: string, taken: Set<string>): string {
  const base =
    name
      .normalize('NFKD')
      // Accents come apart from their letters under NFKD: drop the marks, keep the letters.
      .replace(/\p{M}/gu, '')
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 24)
      .replace(/-+$/, '') || 'vm';
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) if (!taken.has(`${base}-${i}`)) return `${base}-${i}`;
}

/** A VM's network as its file and Vm1.Network write it: none | user | bridge:NAME. */
export function networkText(network: VmDefinition['network']): string {
  return network.mode === 'bridge' ? `bridge:${network.bridge}` : network.mode;
}

/** The file document of a definition (what Update starts from). */
function documentOf(def: VmDefinition): Record<string, unknown> {
  const network = networkText(def.network);
  return {
    id: def.id,
    name: def.name,
    slot: def.slot,
    kind: def.kind,
    color: def.color,
    ...(def.icon ? { icon: def.icon } : {}),
    memoryMiB: def.memoryMiB,
    vcpus: def.vcpus,
    disks: def.disks.map((d) => ({
      path: d.path,
      format: d.format,
      ...(d.readonly ? { readonly: true } : {}),
      ...(d.sizeMiB !== null ? { sizeMiB: d.sizeMiB } : {}),
    })),
    network,
    autostart: def.autostart,
    usbAutoAttach: def.usbAutoAttach,
    display: def.display,
    backend: def.backend,
    ...(def.kernel ? { kernel: def.kernel } : {}),
    ...(def.append ? { append: def.append } : {}),
    ...(def.cdrom ? { cdrom: def.cdrom } : {}),
  };
}
