import {
  BUS_NAMES,
  BulkheadError,
  SWITCHER_PATH,
  VM_MANAGER_PATH,
  vmPath,
  type CallContext,
  type Vm1Properties,
  type Vm1Service,
  type Vm1State,
  type VmManager1Properties,
  type VmManager1Service,
  type VariantDict,
} from '@bulkhead/contract';
import { ServiceHost, parseOptions, type ExportedInterface, type MessageBus } from '@bulkhead/dbus';

export interface FakeAttachment {
  handle: string;
  bus: number;
  address: number;
  port: string;
}

/** One call the fake received, for assertions on order. */
export interface FakeUsbCall {
  vm: string;
  method: 'AttachUsbDevice' | 'DetachUsbDevice' | 'ListUsbDevices';
  args: unknown[];
}

/**
 * A VM manager on a private bus that implements just what usb-daemon uses: the ObjectManager of
 * Vm1 objects with State/UsbAutoAttach, VmManager1.ActiveVm, and the Vm1 USB methods (which keep
 * a table of attachments instead of driving a device model).
 */
export class FakeVmManager {
  readonly host: ServiceHost;
  readonly calls: FakeUsbCall[] = [];
  readonly vms = new Map<string, FakeVm>();
  private activeVm = SWITCHER_PATH;
  private manager: ExportedInterface<'org.bulkhead.VmManager1'> | null = null;
  private nextHandle = 1;
  /** When set, AttachUsbDevice waits for this promise before answering. */
  attachGate: Promise<void> | null = null;
  /** When set, the next AttachUsbDevice fails with this BackendFailed message. */
  failNextAttach: string | null = null;

  constructor(readonly conn: MessageBus) {
    this.host = new ServiceHost(conn, { log: () => undefined });
  }

  async start(): Promise<void> {
    this.host.addObjectManager(VM_MANAGER_PATH);
    const impl: VmManager1Service = {
      Switch: (_ctx: CallContext, vm: string) => this.setActive(vm),
      SwitchToSlot: () => {
        throw new BulkheadError('NotSupported', 'fake');
      },
      Reload: () => this.vms.size,
      CreateVm: () => {
        throw new BulkheadError('Failed', 'not in this fake');
      },
    };
    this.manager = this.host.export(
      VM_MANAGER_PATH,
      'org.bulkhead.VmManager1',
      impl,
      (): VmManager1Properties => ({
        ActiveVm: this.activeVm,
        Switching: false,
        LastSwitch: {},
        ConfigErrors: [],
        Accelerator: 'tcg',
        GpuHolder: '/',
      }),
    );
    await this.host.requestName(BUS_NAMES.vmManager);
  }

  addVm(id: string, opts: { state?: Vm1State; usbAutoAttach?: boolean; slot?: number } = {}): FakeVm {
    const vm = new FakeVm(this, id, opts);
    this.vms.set(vmPath(id), vm);
    vm.exported = this.host.export(vmPath(id), 'org.bulkhead.Vm1', vm, () => vm.props);
    return vm;
  }

  vm(id: string): FakeVm {
    const v = this.vms.get(vmPath(id));
    if (!v) throw new Error(`no fake VM ${id}`);
    return v;
  }

  setActive(path: string): void {
    if (path !== SWITCHER_PATH && !this.vms.has(path))
      throw new BulkheadError('NoSuchVm', `no VM at ${path}`);
    this.activeVm = path;
    this.manager?.propertiesChanged('ActiveVm');
  }

  newHandle(): string {
    return `usbhost${this.nextHandle++}`;
  }

  close(): void {
    this.host.close();
  }
}

export class FakeVm implements Vm1Service {
  readonly props: Vm1Properties;
  readonly attachments = new Map<string, FakeAttachment>();
  exported: ExportedInterface<'org.bulkhead.Vm1'> | null = null;

  constructor(
    private readonly manager: FakeVmManager,
    readonly id: string,
    opts: { state?: Vm1State; usbAutoAttach?: boolean; slot?: number },
  ) {
    this.props = {
      Id: id,
      Name: id,
      Slot: opts.slot ?? 1,
      Kind: 'personal',
      Color: '#2a6fdb',
      Icon: '',
      State: opts.state ?? 'running',
      StateReason: '',
      StateReasonCode: 'none',
      LastError: '',
      HasGpu: false,
      Autostart: false,
      UsbAutoAttach: opts.usbAutoAttach ?? false,
      MemoryMiB: 64,
      Vcpus: 1,
      Backend: 'qemu',
      ConfigFile: `/etc/bulkhead/vms/${id}.json`,
      InputQmpSocket: '',
      Owner: 'admin',
      Network: 'none',
      Cdrom: '',
      DiskJob: '',
      DiskJobProgress: 0,
      Unavailable: '',
      Display: 'vnc',
    };
  }

  get path(): string {
    return vmPath(this.id);
  }

  /** Change State; a stopped or crashed VM loses its device model and so its attachments. */
  setState(state: Vm1State): void {
    this.props.State = state;
    if (state === 'stopped' || state === 'crashed') this.attachments.clear();
    this.exported?.propertiesChanged('State');
  }

  private requireRunning(): void {
    if (this.props.State !== 'running' && this.props.State !== 'paused')
      throw new BulkheadError('InvalidState', `VM ${this.id} is ${this.props.State}`);
  }

  Start(): void {
    this.setState('running');
  }
  Stop(): void {
    this.setState('stopped');
  }
  Kill(): void {
    this.setState('stopped');
  }
  Pause(): void {
    this.setState('paused');
  }
  Resume(): void {
    this.setState('running');
  }
  Screenshot(): Buffer {
    return Buffer.alloc(0);
  }

  async AttachUsbDevice(
    _ctx: CallContext,
    bus: number,
    address: number,
    options: VariantDict,
  ): Promise<string> {
    const { port } = parseOptions('AttachUsbDevice', options, { port: 's' } as const);
    this.manager.calls.push({ vm: this.id, method: 'AttachUsbDevice', args: [bus, address, port] });
    this.requireRunning();
    if (this.manager.attachGate) await this.manager.attachGate;
    if (this.manager.failNextAttach) {
      const msg = this.manager.failNextAttach;
      this.manager.failNextAttach = null;
      throw new BulkheadError('BackendFailed', msg);
    }
    const handle = this.manager.newHandle();
    this.attachments.set(handle, { handle, bus, address, port: port ?? '' });
    return handle;
  }

  DetachUsbDevice(_ctx: CallContext, handle: string): void {
    this.manager.calls.push({ vm: this.id, method: 'DetachUsbDevice', args: [handle] });
    this.requireRunning();
    if (!this.attachments.delete(handle))
      throw new BulkheadError('NoSuchDevice', `no USB attachment ${handle} in ${this.id}`);
  }

  ListUsbDevices(): Array<[string, number, number]> {
    this.manager.calls.push({ vm: this.id, method: 'ListUsbDevices', args: [] });
    this.requireRunning();
    return [...this.attachments.values()].map((a) => [a.handle, a.bus, a.address]);
  }
  Update(): void {
    throw new BulkheadError('Failed', 'not in this fake');
  }
  Delete(): void {
    throw new BulkheadError('Failed', 'not in this fake');
  }
  CancelDiskJob(): void {
    throw new BulkheadError('Failed', 'not in this fake');
  }
  Eject(): void {
    throw new BulkheadError('Failed', 'not in this fake');
  }
}
