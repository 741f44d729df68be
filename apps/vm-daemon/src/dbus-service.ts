import {
  BulkheadError,
  VM_MANAGER_PATH,
  vmPath,
  encodeLastSwitch,
  type CallContext,
  type VariantDict,
  type Vm1Properties,
  type Vm1Service,
  type VmManager1Properties,
  type VmManager1Service,
} from '@bulkhead/contract';
import { parseOptions, type ExportedInterface, type ServiceHost } from '@bulkhead/dbus';
import type { SwitchRecord } from './switch-transaction';
import type { VmManager } from './vm-manager';
import { networkText } from './vm-store';

/** LastSwitch as the contract's a{sv}. */
export function lastSwitchDict(r: SwitchRecord | null): VariantDict {
  if (!r) return {};
  // Typed by the XML's org.bulkhead.Dict: a missing, misspelled or mistyped key fails tsc (and,
  // for a value of the wrong kind at run time, encodeLastSwitch throws naming the key).
  return encodeLastSwitch({
    from: r.from,
    target: r.target,
    outcome: r.outcome,
    error: r.error,
    message: r.message,
    started_usec: r.startedUsec,
    duration_usec: r.durationUsec,
    steps: r.steps,
    skipped: r.skipped,
  });
}

/**
 * A VM's Vm1 properties: the bus shape of the core's entry (as machined's machine-dbus.c renders a
 * Machine): the bus adapter renders the entry, the core (VmManager) only names which properties
 * changed in its 'vm-changed' event.
 */
export function vmProperties(manager: VmManager, id: string): Vm1Properties {
  const e = manager.get(id);
  const d = e.def;
  return {
    Id: d.id,
    Name: d.name,
    Slot: d.slot,
    Kind: d.kind,
    Color: d.color,
    Icon: d.icon,
    State: e.state,
    StateReason: e.stateReason,
    StateReasonCode: e.stateReasonCode,
    LastError: e.configError || e.opError,
    HasGpu: d.gpu !== null,
    Autostart: d.autostart,
    UsbAutoAttach: d.usbAutoAttach,
    MemoryMiB: d.memoryMiB,
    Vcpus: d.vcpus,
    Network: networkText(d.network),
    Backend: d.backend,
    ConfigFile: d.file,
    Owner: e.owner,
    Cdrom: d.cdrom ?? '',
    DiskJob: e.diskJob ? 'import' : '',
    DiskJobProgress: e.diskJob?.percent ?? 0,
    Unavailable: e.unavailable,
    Display: d.display,
    InputQmpSocket: e.state === 'running' || e.state === 'paused' ? e.inputQmpSocket : '',
  };
}

class VmObject implements Vm1Service {
  constructor(
    private readonly manager: VmManager,
    private readonly id: string,
  ) {}
  async Start(_ctx: CallContext, options: VariantDict): Promise<void> {
    parseOptions('Start', options, {});
    await this.manager.start(this.id);
  }
  async Stop(_ctx: CallContext, options: VariantDict): Promise<void> {
    const o = parseOptions('Stop', options, { timeout_ms: 'u' } as const);
    await this.manager.stop(this.id, o.timeout_ms ?? 30_000);
  }
  async Kill(): Promise<void> {
    await this.manager.kill(this.id);
  }
  async Pause(): Promise<void> {
    await this.manager.pause(this.id);
  }
  async Resume(): Promise<void> {
    await this.manager.resume(this.id);
  }
  async Screenshot(_ctx: CallContext, options: VariantDict): Promise<Buffer> {
    parseOptions('Screenshot', options, {});
    return this.manager.screenshot(this.id);
  }
  async AttachUsbDevice(
    _ctx: CallContext,
    bus: number,
    address: number,
    options: VariantDict,
  ): Promise<string> {
    const o = parseOptions('AttachUsbDevice', options, { port: 's' } as const);
    return this.manager.attachUsb(this.id, { bus, address, port: o.port });
  }
  async DetachUsbDevice(_ctx: CallContext, handle: string): Promise<void> {
    await this.manager.detachUsb(this.id, handle);
  }
  async ListUsbDevices(): Promise<Array<[string, number, number]>> {
    return this.manager.listUsb(this.id);
  }
  async Update(_ctx: CallContext, options: VariantDict): Promise<void> {
    await this.manager.updateVm(this.id, parseOptions('Update', options, UPDATE_OPTION_TYPES));
  }
  async Delete(_ctx: CallContext, options: VariantDict): Promise<void> {
    const o = parseOptions('Delete', options, { remove_disks: 'b' } as const);
    await this.manager.deleteVm(this.id, o.remove_disks ?? false);
  }
  async Eject(): Promise<void> {
    await this.manager.ejectVm(this.id);
  }
  async CancelDiskJob(): Promise<void> {
    await this.manager.cancelDiskJob(this.id);
  }
}

/** D-Bus types of the options Update takes (see vm-store.ts for their rules). */
const UPDATE_OPTION_TYPES = {
  name: 's',
  slot: 'u',
  color: 's',
  memory_mib: 'u',
  vcpus: 'u',
  network: 's',
  usb_auto_attach: 'b',
  cdrom: 's',
} as const;

/** D-Bus types of CreateVm's options: Update's plus what only a new VM has. */
const CREATE_OPTION_TYPES = {
  ...UPDATE_OPTION_TYPES,
  id: 's',
  disk_size_mib: 'u',
  disk_format: 's',
  disk_import: 's',
} as const;

class ManagerObject implements VmManager1Service {
  constructor(private readonly manager: VmManager) {}
  async Switch(_ctx: CallContext, vm: string, options: VariantDict): Promise<void> {
    parseOptions('Switch', options, {});
    await this.manager.switchTo(vm);
  }
  async SwitchToSlot(_ctx: CallContext, slot: number, options: VariantDict): Promise<void> {
    parseOptions('SwitchToSlot', options, {});
    await this.manager.switchToSlot(slot);
  }
  async CreateVm(_ctx: CallContext, name: string, options: VariantDict): Promise<string> {
    const o = parseOptions('CreateVm', options, CREATE_OPTION_TYPES);
    if ('name' in o)
      throw new BulkheadError('InvalidArgument', 'CreateVm: the name is the first argument, not an option');
    return vmPath(await this.manager.createVm(name, o));
  }
  Reload(): number {
    try {
      return this.manager.reload();
    } catch (e) {
      throw new BulkheadError('BackendFailed', `reload failed: ${(e as Error).message}`);
    }
  }
}

/**
 * Publishes a VmManager on the bus: org.bulkhead.VmManager1 (+ ObjectManager) at
 * /org/bulkhead/VmManager1 and one org.bulkhead.Vm1 per VM, following the core's events.
 */
export class VmManagerDbus {
  private managerIface!: ExportedInterface<'org.bulkhead.VmManager1'>;
  private readonly vmIfaces = new Map<string, ExportedInterface<'org.bulkhead.Vm1'>>();

  constructor(
    private readonly host: ServiceHost,
    private readonly manager: VmManager,
  ) {}

  /**
   * Getters: a PropertiesChanged reads only the properties it names. Every switch sends several
   * (Switching, ActiveVm, then Switching with LastSwitch), and building LastSwitch's dict and the
   * config errors for each of them was ~5 % of the daemon's allocation per switch (issue 17).
   */
  managerProperties(): VmManager1Properties {
    const m = this.manager;
    return {
      get ActiveVm() {
        return m.activeVm;
      },
      get Switching() {
        return m.transaction.inProgress;
      },
      get LastSwitch() {
        return lastSwitchDict(m.lastSwitch);
      },
      get ConfigErrors() {
        return m.configErrors.map((e) => [e.file, e.field, e.reason] as [string, string, string]);
      },
      get Accelerator() {
        return m.accelerator;
      },
      get GpuHolder() {
        return m.gpuHolder;
      },
    };
  }

  export(): void {
    this.host.addObjectManager(VM_MANAGER_PATH);
    this.managerIface = this.host.export(
      VM_MANAGER_PATH,
      'org.bulkhead.VmManager1',
      new ManagerObject(this.manager),
      () => this.managerProperties(),
    );
    for (const id of this.manager.vms.keys()) this.exportVm(id);
    this.manager.on('vm-added', (id) => this.exportVm(id));
    this.manager.on('vm-removed', (id) => {
      this.host.unexport(vmPath(id));
      this.vmIfaces.delete(id);
    });
    this.manager.on('vm-changed', (id, props) => this.vmIfaces.get(id)?.propertiesChanged(...new Set(props)));
    this.manager.on('manager-changed', (props) => this.managerIface.propertiesChanged(...new Set(props)));
    this.manager.on('switch-progress', (target, step, detail) =>
      this.managerIface.emit('SwitchProgress', target, step, detail),
    );
  }

  private exportVm(id: string): void {
    if (this.vmIfaces.has(id)) return;
    const iface = this.host.export(vmPath(id), 'org.bulkhead.Vm1', new VmObject(this.manager, id), () =>
      vmProperties(this.manager, id),
    );
    this.vmIfaces.set(id, iface);
  }
}
