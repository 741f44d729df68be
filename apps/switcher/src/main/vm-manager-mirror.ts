/** The switcher's mirror of vm-daemon (org.bulkhead.VmManager1 and its Vm1 objects). */
import {
  BUS_NAMES,
  VM1_VIEW_DEFAULTS,
  VM_MANAGER_PATH,
  decodeLastSwitch,
  vm1ViewPatch,
} from '@bulkhead/contract';
import type { TypedEmitter } from '@bulkhead/common';
import type { BusClient, Unsubscribe } from '@bulkhead/dbus';
import type { ConfigErrorModel, LastSwitchModel, VmModel } from '../common/model';
import type { DaemonStateEvents } from './daemon-state';
import { decodeDictOrNull, type Props } from './mirror-props';
import type { DaemonMirror } from './name-owner-tracker';

const VM1 = 'org.bulkhead.Vm1';
const VMM1 = 'org.bulkhead.VmManager1';

/**
 * A VM object's model from its GetAll/InterfacesAdded properties: every Vm1 property, mapped by the
 * table generated from the XML (a property cannot be left out by hand any more).
 */
export function vmFromProps(path: string, p: Props): VmModel {
  return { path, ...VM1_VIEW_DEFAULTS, color: '#607080', ...vm1ViewPatch(p) };
}

/**
 * LastSwitch (a{sv}) as published by vm-daemon, in milliseconds; null before the first switch. A
 * dict that does not match the contract is reported (naming the key) and shown as no switch,
 * rather than as a half-read one.
 */
export function lastSwitchFromDict(d: unknown): LastSwitchModel | null {
  const r = decodeDictOrNull('LastSwitch', decodeLastSwitch, d);
  if (!r) return null;
  const ms = (us: bigint) => Number(us) / 1000;
  return {
    from: r.from,
    target: r.target,
    outcome: r.outcome,
    error: r.error,
    startedMs: ms(r.started_usec),
    durationMs: ms(r.duration_usec),
    steps: r.steps.map(([step, us]) => [step, ms(us)]),
  };
}

export class VmManagerMirror implements DaemonMirror {
  readonly vms = new Map<string, VmModel>();
  activeVm = '/';
  switching = false;
  lastSwitch: LastSwitchModel | null = null;
  configErrors: ConfigErrorModel[] = [];
  accelerator = '';
  gpuHolder = '/';

  constructor(
    private readonly client: BusClient,
    private readonly events: TypedEmitter<DaemonStateEvents>,
  ) {}

  /** The VMs in tile order: by slot (none last), then name. */
  sortedVms(): VmModel[] {
    return [...this.vms.values()].sort(
      (a, b) => (a.slot || 99) - (b.slot || 99) || a.name.localeCompare(b.name),
    );
  }

  async connect(subs: Unsubscribe[]): Promise<void> {
    const dest = BUS_NAMES.vmManager;
    subs.push(
      await this.client.onSignal(
        dest,
        { path: VM_MANAGER_PATH },
        VMM1,
        'SwitchProgress',
        ([target, step, detail]) => this.events.emit('switchProgress', target, step, detail),
      ),
    );
    const watch = await this.client.watchObjects(dest, VM_MANAGER_PATH, {
      added: (path, ifaces) => {
        if (!ifaces[VM1]) return;
        this.vms.set(path, vmFromProps(path, ifaces[VM1]));
        this.events.emit('changed');
      },
      removed: (path, ifaces) => {
        if (!ifaces.includes(VM1)) return;
        this.vms.delete(path);
        this.events.emit('changed');
      },
      changed: (path, iface, changed) => {
        if (iface === VMM1 && path === VM_MANAGER_PATH) this.applyManagerProps(changed);
        else if (iface === VM1) {
          const vm = this.vms.get(path);
          if (!vm) return;
          const patch = vm1ViewPatch(changed);
          Object.assign(vm, patch);
          this.events.emit('vmPatch', path, patch);
        }
      },
    });
    subs.push(watch.unsubscribe);
    this.vms.clear();
    for (const [path, ifaces] of Object.entries(watch.objects))
      if (ifaces[VM1]) this.vms.set(path, vmFromProps(path, ifaces[VM1]));
    const props = await this.client.getAll(dest, VM_MANAGER_PATH, VMM1);
    this.applyManagerProps(props as unknown as Props, false);
  }

  private applyManagerProps(p: Props, notify = true): void {
    if ('ActiveVm' in p) this.activeVm = String(p.ActiveVm);
    if ('Switching' in p) this.switching = !!p.Switching;
    if ('LastSwitch' in p) this.lastSwitch = lastSwitchFromDict(p.LastSwitch);
    if ('ConfigErrors' in p)
      this.configErrors = ((p.ConfigErrors as unknown[]) ?? []).map((e) => {
        const [file, field, reason] = e as [string, string, string];
        return { file, field, reason } satisfies ConfigErrorModel;
      });
    if ('Accelerator' in p) this.accelerator = String(p.Accelerator);
    if ('GpuHolder' in p) this.gpuHolder = String(p.GpuHolder);
    if (notify) this.events.emit('changed');
  }

  clear(): void {
    this.vms.clear();
    this.activeVm = '/';
    this.switching = false;
    this.configErrors = [];
    this.accelerator = '';
    this.gpuHolder = '/';
    // LastSwitch is kept: it is history, shown as such in diagnostics.
  }
}
