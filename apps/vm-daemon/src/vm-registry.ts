/**
 * The VM registry: which VMs exist, from the definition files in the config dir. Loads and
 * reloads them (also on edits, through fs.watch), keeps a placeholder VM for a file that never
 * was valid (so the switcher can say what is wrong with it), and the config errors. It knows
 * nothing of D-Bus, backends or switching: the manager core (vm-manager.ts) runs the VMs it holds,
 * dbus-service.ts publishes both. (As systemd's machined splits machine.c from machined-dbus.c.)
 */
import { watch, type FSWatcher } from 'node:fs';
import { BulkheadError, vmIdFromPath, type Vm1Properties } from '@bulkhead/contract';
import { TypedEmitter, type Logger, type VmState } from '@bulkhead/common';
import type { VmHandle } from './backend/backend';
import {
  formatConfigError,
  loadConfigDir,
  type ConfigError,
  type ConfigOptions,
  type VmDefinition,
} from './config';

/**
 * Why a VM's definition file is not (or no longer) what the VM runs with — a code the daemon acts
 * on, and the text people read in LastError (like NetworkManager's StateReason: code + text).
 *   invalid-file  the file exists but is invalid: the VM keeps its last valid definition (or is a
 *                 placeholder that cannot start)
 *   file-removed  the file was deleted while the VM ran: it keeps running, takes no slot, and
 *                 goes away once it stops
 */
export type ConfigProblemCode = 'invalid-file' | 'file-removed';
export interface ConfigProblem {
  code: ConfigProblemCode;
  text: string;
}

/** One VM: its definition and what the manager core keeps about it. */
export class VmEntry {
  state: VmState = 'stopped';
  stateReason = 'defined';
  /** Error of the last start/stop/... ('' when none); shown in LastError after the config problem. */
  opError = '';
  /** How the hypervisor names the running VM (a QEMU pid, a Xen domid); null when not running. */
  handle: VmHandle | null = null;
  inputQmpSocket = '';
  /** Resolves when a running start() finishes (so a switch can wait for a Start in flight). */
  starting: Promise<void> | null = null;

  constructor(
    public def: VmDefinition,
    /** True when the definition file is invalid and no valid version was ever loaded: cannot start. */
    public placeholder: boolean,
    public configProblem: ConfigProblem | null,
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
  /** Where path fields may point and who must own the files (default: see ConfigOptions). */
  config?: ConfigOptions;
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
  'Backend',
  'ConfigFile',
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
  private watcher: FSWatcher | null = null;
  private reloadTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly opts: VmRegistryOptions) {
    super();
  }

  /**
   * Re-read the config dir. Valid files are applied; an invalid file leaves its VM (if one was
   * loaded from it before) as it was, with the error in LastError; removed stopped VMs go away,
   * removed running VMs stay until they stop. Returns the number of valid definitions.
   */
  reload(): number {
    const loaded = loadConfigDir(this.opts.configDir, this.opts.config);
    for (const e of loaded.errors) this.opts.log.warn(`config: ${formatConfigError(e)}`);
    const seen = new Set<string>();
    for (const def of loaded.vms) {
      seen.add(def.id);
      const e = this.vms.get(def.id);
      if (!e) {
        this.vms.set(def.id, new VmEntry(def, false, null));
        this.emit('vm-added', def.id);
        continue;
      }
      const changed =
        JSON.stringify(e.def) !== JSON.stringify(def) || e.placeholder || e.configProblem !== null;
      e.def = def;
      e.placeholder = false;
      e.configProblem = null;
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
        new VmEntry(placeholderDefinition(id, err.file), true, { code: 'invalid-file', text }),
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

  /** A VM stopped: when its file was removed meanwhile, it goes now. */
  stopped(e: VmEntry): void {
    if (e.fileRemoved && this.vms.get(e.def.id) === e) {
      this.vms.delete(e.def.id);
      this.emit('vm-removed', e.def.id);
    }
  }

  /** Reload after edits of the config dir (debounced); a watch that fails is logged, not fatal. */
  watch(): void {
    const { configDir, log } = this.opts;
    try {
      this.watcher = watch(configDir, () => {
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
      this.watcher.on('error', (e) => log.warn(`watching ${configDir} stopped: ${e.message}`));
    } catch (e) {
      log.warn(`cannot watch ${configDir} (use Reload): ${(e as Error).message}`);
    }
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
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
