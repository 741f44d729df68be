/**
 * The VM registry: which VMs exist, from the definition files in the config dir. Loads and
 * reloads them (also on edits, through fs.watch), keeps a placeholder VM for a file that never
 * was valid (so the switcher can say what is wrong with it), and the config errors. It knows
 * nothing of D-Bus, backends or switching: the manager core (vm-manager.ts) runs the VMs it holds,
 * dbus-service.ts publishes both. (As systemd's machined splits machine.c from machined-dbus.c.)
 */
import { watch, type FSWatcher } from 'node:fs';
import { BulkheadError, vmIdFromPath, type Vm1Properties, type Vm1StateReasonCode } from '@bulkhead/contract';
import { TypedEmitter, type Logger, type VmState } from '@bulkhead/common';
import type { VmHandle } from './backend/backend';
import type { DiskImport } from './disk-manager';
import { basename } from 'node:path';
import {
  BOOT_ENTRY,
  cdromProblem,
  formatConfigError,
  loadConfigDir,
  type ConfigError,
  type BackendName,
  type ConfigOptions,
  type LoadedConfig,
  type VmDefinition,
} from './config';

/**
 * Why a person's VM made for `backend` cannot run in a daemon that runs `runs`, or '' when it
 * can. In words for the tile (LastError): the VM is kept, and says where it runs.
 */
export function unavailableReason(def: VmDefinition, runs: readonly BackendName[] | undefined): string {
  if (!runs || runs.includes(def.backend)) return '';
  const here = runs.map((b) => BOOT_ENTRY[b]).join(' / ');
  return `made on the ${BOOT_ENTRY[def.backend]} boot entry (backend '${def.backend}'): it runs only there, not on ${here}. It is kept unchanged; restart into ${BOOT_ENTRY[def.backend]} to use it`;
}

/**
 * Why a VM's definition file is not (or no longer) what the VM runs with — a code the daemon acts
 * on, and the text people read in LastError (like NetworkManager's StateReason: code + text).
 *   invalid-file  the file exists but is invalid: the VM keeps its last valid definition (or is a
 *                 placeholder that cannot start)
 *   file-removed  the file was deleted while the VM ran: it keeps running, takes no slot, and
 *                 goes away once it stops
 */
export type ConfigProblemCode = 'invalid-file' | 'file-removed';

/**
 * Who a VM belongs to, by the directory its file is in (never by anything the file says):
 *   admin   a file of the administrator's VM dir: the UI may start, stop and switch to it only
 *   person  a file vm-daemon wrote for the person (CreateVm): the UI may also edit and delete it
 */
export type VmOwner = 'admin' | 'person';
export interface ConfigProblem {
  code: ConfigProblemCode;
  text: string;
}

/** One VM: its definition and what the manager core keeps about it. */
export class VmEntry {
  state: VmState = 'stopped';
  stateReason = 'defined';
  /** StateReason as the contract's code (programs act on it; stateReason is the words). */
  stateReasonCode: Vm1StateReasonCode = 'none';
  /** Error of the last start/stop/... ('' when none); shown in LastError after the config problem. */
  opError = '';
  /** How the hypervisor names the running VM (a QEMU pid, a Xen domid); null when not running. */
  handle: VmHandle | null = null;
  inputQmpSocket = '';
  /** Resolves when a running start() finishes (so a switch can wait for a Start in flight). */
  starting: Promise<void> | null = null;
  /** The disk import running for this VM (CreateVm with disk_import), or null. */
  diskJob: DiskImport | null = null;
  /** Settles once the import's outcome is applied (the VM deleted after a cancel, ...). */
  diskJobSettled: Promise<void> = Promise.resolve();
  /**
   * Why this VM cannot run on this boot entry ('' when it can): a person's VM made on the other
   * entry (its file says the other backend). It is listed, keeps its id and slot, and is never
   * rewritten or removed by the daemon; it cannot start, be switched to or be changed here.
   */
  unavailable = '';

  constructor(
    public def: VmDefinition,
    /** True when the definition file is invalid and no valid version was ever loaded: cannot start. */
    public placeholder: boolean,
    public configProblem: ConfigProblem | null,
    public owner: VmOwner = 'admin',
  ) {}

  /** The config problem's text, '' when the definition file is fine (LastError shows it first). */
  get configError(): string {
    return this.configProblem?.text ?? '';
  }

  /** The file is gone: the VM only runs out its time (no slot, removed once it stops). */
  get fileRemoved(): boolean {
    return this.configProblem?.code === 'file-removed';
  }
}

export interface VmRegistryEvents {
  'vm-added': [id: string];
  'vm-removed': [id: string];
  'vm-changed': [id: string, props: Array<keyof Vm1Properties>];
  'config-errors-changed': [];
}

export interface VmRegistryOptions {
  configDir: string;
  /**
   * The person's VM dir (files vm-daemon writes on CreateVm/Update), or none. Its VMs are owned
   * by the person; an id or slot an admin file already uses is refused there, so the admin's
   * VMs can never be shadowed by the person's.
   */
  person?: { dir: string; config: ConfigOptions };
  /** Where path fields may point and who must own the files (default: see ConfigOptions). */
  config?: ConfigOptions;
  /**
   * The backends this daemon runs (VmBackend.runs; default: all). A person's file for another
   * one is listed as unavailable (VmEntry.unavailable), never dropped: the admin's files of
   * another backend are set aside by ConfigOptions.backends instead.
   */
  runs?: readonly BackendName[];
  log: Logger;
}

/** Every property a changed definition may change. */
const DEFINITION_PROPERTIES: Array<keyof Vm1Properties> = [
  'Name',
  'Slot',
  'Kind',
  'Color',
  'Icon',
  'LastError',
  'HasGpu',
  'Autostart',
  'UsbAutoAttach',
  'MemoryMiB',
  'Vcpus',
  'Network',
  'Backend',
  'ConfigFile',
  'Owner',
  'Cdrom',
  'Unavailable',
  'Display',
];

/** A VM object that says what is wrong with its file, so the switcher can show it. */
function placeholderDefinition(id: string, file: string): VmDefinition {
  return {
    id,
    name: id,
    slot: 0,
    kind: 'personal',
    color: '#808080',
    icon: '',
    memoryMiB: 0,
    vcpus: 0,
    disks: [],
    network: { mode: 'none' },
    autostart: false,
    gpu: null,
    usbAutoAttach: false,
    display: 'none',
    backend: 'qemu',
    kernel: null,
    append: '',
    file,
  };
}

export class VmRegistry extends TypedEmitter<VmRegistryEvents> {
  readonly vms = new Map<string, VmEntry>();
  configErrors: ConfigError[] = [];
  private readonly watchers: FSWatcher[] = [];
  private reloadTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** The files of another backend last set aside (logged when it changes). */
  private otherBackendText = '';

  constructor(private readonly opts: VmRegistryOptions) {
    super();
  }

  /** Why the VM's installation medium may not be opened now (see cdromProblem), or null. */
  mediumProblem(e: VmEntry): string | null {
    const config = e.owner === 'person' ? this.opts.person?.config : this.opts.config;
    return cdromProblem(e.def, config);
  }

  /**
   * Re-read the config dir. Valid files are applied; an invalid file leaves its VM (if one was
   * loaded from it before) as it was, with the error in LastError; removed stopped VMs go away,
   * removed running VMs stay until they stop. Returns the number of valid definitions.
   */
  reload(): number {
    const loaded = this.loadAll();
    for (const e of loaded.errors) this.opts.log.warn(`config: ${formatConfigError(e)}`);
    // Files of another backend (the image's QEMU VMs on its Xen entry, say): not errors, said once.
    const aside = loaded.otherBackend.map((o) => `${basename(o.file)} (${o.backend})`).join(', ');
    if (aside !== this.otherBackendText && aside !== '')
      this.opts.log.info(`config: not loaded, for another backend than this daemon's: ${aside}`);
    this.otherBackendText = aside;
    const seen = new Set<string>();
    for (const def of loaded.vms) {
      seen.add(def.id);
      const owner = loaded.owners.get(def.id) ?? 'admin';
      // Only a person's file can be of another backend here (the admin's were set aside).
      const unavailable = unavailableReason(def, this.opts.runs);
      const e = this.vms.get(def.id);
      if (!e) {
        const added = new VmEntry(def, false, null, owner);
        added.unavailable = unavailable;
        this.vms.set(def.id, added);
        this.emit('vm-added', def.id);
        continue;
      }
      const changed =
        JSON.stringify(e.def) !== JSON.stringify(def) ||
        e.placeholder ||
        e.configProblem !== null ||
        e.owner !== owner ||
        e.unavailable !== unavailable;
      e.unavailable = unavailable;
      e.def = def;
      e.placeholder = false;
      e.configProblem = null;
      e.owner = owner;
      if (changed) this.emit('vm-changed', def.id, DEFINITION_PROPERTIES);
    }
    for (const [id, err] of loaded.invalidIds) {
      seen.add(id);
      const text = formatConfigError(err);
      const e = this.vms.get(id);
      if (e) {
        if (e.configError !== text) {
          e.configProblem = { code: 'invalid-file', text };
          this.emit('vm-changed', id, ['LastError']);
        }
        continue;
      }
      this.vms.set(
        id,
        new VmEntry(
          placeholderDefinition(id, err.file),
          true,
          { code: 'invalid-file', text },
          loaded.owners.get(id) ?? 'admin',
        ),
      );
      this.emit('vm-added', id);
    }
    for (const [id, e] of [...this.vms]) {
      if (seen.has(id)) continue;
      if (e.state === 'stopped' || e.state === 'crashed') {
        this.vms.delete(id);
        this.emit('vm-removed', id);
      } else if (!e.configProblem) {
        e.configProblem = {
          code: 'file-removed',
          text: `${e.def.file}: (file): the definition file was removed; the VM keeps running and disappears once it stops`,
        };
        this.emit('vm-changed', id, ['LastError']);
      }
    }
    const before = JSON.stringify(this.configErrors);
    this.configErrors = loaded.errors;
    if (JSON.stringify(this.configErrors) !== before) this.emit('config-errors-changed');
    return loaded.vms.length;
  }

  /**
   * The admin dir, then the person dir. A person file may not take an id or slot of an admin
   * file (the admin's VMs come first: a person's file cannot shadow or displace them).
   */
  private loadAll(): LoadedConfig & { owners: Map<string, VmOwner> } {
    const admin = loadConfigDir(this.opts.configDir, this.opts.config);
    const owners = new Map<string, VmOwner>();
    for (const d of admin.vms) owners.set(d.id, 'admin');
    for (const id of admin.invalidIds.keys()) owners.set(id, 'admin');
    const person = this.opts.person;
    if (!person) return { ...admin, owners };
    const mine = loadConfigDir(person.dir, person.config);
    const slots = new Map(admin.vms.map((d) => [d.slot, d.file]));
    const vms = [...admin.vms];
    const errors = [...admin.errors, ...mine.errors];
    const invalidIds = new Map(admin.invalidIds);
    for (const d of mine.vms) {
      const clash = owners.has(d.id)
        ? { field: 'id', reason: `id '${d.id}' is already used by the administrator's VMs` }
        : slots.has(d.slot)
          ? { field: 'slot', reason: `slot ${d.slot} is already used by ${basename(slots.get(d.slot)!)}` }
          : null;
      if (clash) {
        const err = { file: d.file, ...clash };
        errors.push(err);
        if (!owners.has(d.id)) {
          invalidIds.set(d.id, err);
          owners.set(d.id, 'person');
        }
        continue;
      }
      vms.push(d);
      owners.set(d.id, 'person');
    }
    for (const [id, err] of mine.invalidIds) {
      if (owners.has(id)) continue;
      invalidIds.set(id, err);
      owners.set(id, 'person');
    }
    return { vms, errors, invalidIds, owners, otherBackend: [...admin.otherBackend, ...mine.otherBackend] };
  }

  /** A VM stopped: when its file was removed meanwhile, it goes now. */
  stopped(e: VmEntry): void {
    if (e.fileRemoved && this.vms.get(e.def.id) === e) {
      this.vms.delete(e.def.id);
      this.emit('vm-removed', e.def.id);
    }
  }

  /** Reload after edits of the config dir (debounced); a watch that fails is logged, not fatal. */
  watch(): void {
    this.watchDir(this.opts.configDir);
    if (this.opts.person) this.watchDir(this.opts.person.dir);
  }

  private watchDir(configDir: string): void {
    const { log } = this.opts;
    try {
      const watcher = watch(configDir, () => {
        if (this.reloadTimer) clearTimeout(this.reloadTimer);
        // Editors write in several steps (truncate, write, rename): reload once they are done.
        this.reloadTimer = setTimeout(() => {
          if (this.closed) return;
          try {
            this.reload();
          } catch (e) {
            log.error(`reload after an edit failed: ${(e as Error).message}`);
          }
        }, 150);
      });
      watcher.on('error', (e) => log.warn(`watching ${configDir} stopped: ${e.message}`));
      this.watchers.push(watcher);
    } catch (e) {
      log.warn(`cannot watch ${configDir} (use Reload): ${(e as Error).message}`);
    }
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers) w.close();
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
  }

  get(id: string): VmEntry {
    const e = this.vms.get(id);
    if (!e) throw new BulkheadError('NoSuchVm', `no VM with id '${id}'`);
    return e;
  }

  entryByPath(path: string): VmEntry | undefined {
    const id = vmIdFromPath(path);
    return id === null ? undefined : this.vms.get(id);
  }

  /** The VM a hotkey's slot names: not a placeholder, and not one whose file was removed. */
  bySlot(slot: number): VmEntry | undefined {
    return [...this.vms.values()].find((e) => !e.placeholder && e.def.slot === slot && !e.fileRemoved);
  }

  /** In slot order, then by id. */
  sorted(): VmEntry[] {
    return [...this.vms.values()].sort((a, b) => a.def.slot - b.def.slot || a.def.id.localeCompare(b.def.id));
  }
}
