/**
 * Fake daemons for the switcher's tests and UI previews: FakeVmManager (+ FakeVm), FakeInput and
 * FakeUsb (+ FakeUsbDevice), exported with the real ServiceHost on a private bus, so the switcher
 * talks to them exactly as to the real ones. No hypervisor, no devices.
 */
import { deflateSync, crc32 } from 'node:zlib';
import {
  BulkheadError,
  INPUT_PATH,
  encodeLastSwitch,
  USB_PATH,
  VM_MANAGER_PATH,
  usbDevicePath,
  vmPath,
  type CallContext,
  type Input1Properties,
  type Input1Service,
  type Usb1Properties,
  type Usb1Service,
  type UsbDevice1Properties,
  type UsbDevice1Service,
  type VariantDict,
  type Vm1Properties,
  type Vm1Service,
  type VmManager1Properties,
  type VmManager1Service,
} from '@bulkhead/contract';
import { ServiceHost, connectBus, type ExportedInterface, type MessageBus } from '@bulkhead/dbus';

/** A solid-color PNG (8-bit RGB), enough to stand for a VM's screen. */
export function solidPng(width: number, height: number, hex: string): Buffer {
  const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const row = Buffer.alloc(1 + width * 3);
  for (let x = 0; x < width; x++) row.set(rgb, 1 + x * 3);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

export function fakeVmProps(id: string, over: Partial<Vm1Properties> = {}): Vm1Properties {
  return {
    Id: id,
    Name: id[0].toUpperCase() + id.slice(1),
    Slot: 1,
    Kind: 'personal',
    Color: '#2a6fdb',
    Icon: '',
    State: 'stopped',
    StateReason: '',
    StateReasonCode: 'none',
    LastError: '',
    HasGpu: false,
    Autostart: false,
    UsbAutoAttach: true,
    MemoryMiB: 256,
    Vcpus: 1,
    Network: 'none',
    Backend: 'qemu',
    ConfigFile: `/etc/bulkhead/vms/${id}.json`,
    InputQmpSocket: '',
    Owner: 'admin',
    Cdrom: '',
    DiskJob: '',
    DiskJobProgress: 0,
    Unavailable: '',
    Display: 'vnc',
    ...over,
  };
}

export class FakeVm implements Vm1Service {
  handle!: ExportedInterface<'org.bulkhead.Vm1'>;
  /** How many times Screenshot was called (tests of who asks for screens). */
  screenshotCalls = 0;
  constructor(public props: Vm1Properties) {}
  set(p: Partial<Vm1Properties>): void {
    Object.assign(this.props, p);
    this.handle?.propertiesChanged(...(Object.keys(p) as Array<keyof Vm1Properties>));
  }
  Start(): void {
    if (this.props.State === 'running')
      throw new BulkheadError('InvalidState', `${this.props.Id} is already running`);
    this.set({ State: 'running' });
  }
  Stop(): void {
    if (this.props.State !== 'running')
      throw new BulkheadError('InvalidState', `${this.props.Id} is not running`);
    this.set({ State: 'stopped' });
  }
  Kill(): void {
    this.set({ State: 'stopped' });
  }
  Pause(): void {}
  Resume(): void {}
  Screenshot(): Buffer {
    this.screenshotCalls++;
    if (this.props.State !== 'running')
      throw new BulkheadError('InvalidState', `${this.props.Id} is not running`);
    // As vm-daemon answers for a console-only Xen HVM guest (its device model has no console).
    if (this.props.Display === 'none')
      throw new BulkheadError('BackendFailed', 'There is no console to take a screendump from');
    return solidPng(64, 40, this.props.Color);
  }
  AttachUsbDevice(): string {
    return 'usb1';
  }
  DetachUsbDevice(): void {}
  ListUsbDevices(): Array<[string, number, number]> {
    return [];
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

export class FakeVmManager implements VmManager1Service {
  readonly props: VmManager1Properties = {
    ActiveVm: '/',
    Switching: false,
    LastSwitch: {},
    ConfigErrors: [],
    Accelerator: 'tcg',
    GpuHolder: '/',
  };
  readonly vms = new Map<string, FakeVm>();
  readonly switchCalls: string[] = [];
  handle!: ExportedInterface<'org.bulkhead.VmManager1'>;
  /** A named error the next Switch fails with (tests of the failure message). */
  failNextSwitch: BulkheadError | null = null;

  async Switch(_ctx: CallContext, vm: string): Promise<void> {
    this.switchCalls.push(vm);
    if (this.failNextSwitch) {
      const e = this.failNextSwitch;
      this.failNextSwitch = null;
      throw e;
    }
    const target = vm === '/' ? null : this.vms.get(vm);
    if (vm !== '/' && !target) throw new BulkheadError('NoSuchVm', `no VM at ${vm}`);
    const from = this.props.ActiveVm;
    const t0 = Date.now();
    if (target && target.props.State !== 'running') {
      this.handle.emit('SwitchProgress', vm, 'starting-vm', `Starting ${target.props.Name}`);
      target.set({ State: 'running' });
    }
    for (const step of ['freeze-input', 'focus-input', 'publish'] as const)
      this.handle.emit('SwitchProgress', vm, step, '');
    this.props.ActiveVm = vm;
    // Built like vm-daemon builds it, so a key the contract requires cannot be left out here either.
    this.props.LastSwitch = encodeLastSwitch({
      from,
      target: vm,
      outcome: 'ok',
      error: '',
      message: '',
      started_usec: BigInt(t0) * 1000n,
      duration_usec: 1500n,
      steps: [
        ['freeze-input', 300n],
        ['focus-input', 900n],
        ['publish', 300n],
      ],
      skipped: [],
    });
    this.handle.propertiesChanged('ActiveVm', 'LastSwitch');
    this.handle.emit('SwitchProgress', vm, 'done', '');
  }
  async SwitchToSlot(ctx: CallContext, slot: number): Promise<void> {
    if (slot === 0) return this.Switch(ctx, '/');
    const vm = [...this.vms.values()].find((v) => v.props.Slot === slot);
    if (!vm) throw new BulkheadError('NoSuchVm', `no VM in slot ${slot}`);
    return this.Switch(ctx, vmPath(vm.props.Id));
  }
  Reload(): number {
    return this.vms.size;
  }
  CreateVm(): string {
    throw new BulkheadError('Failed', 'not in this fake');
  }
}

export class FakeInput implements Input1Service {
  readonly props: Input1Properties = {
    FocusedTarget: '/',
    Frozen: false,
    Locked: false,
    Seat: 'virtual',
    Devices: [],
    Hotkeys: [
      ['Ctrl+1', 'slot:1'],
      ['Ctrl+0', 'slot:0'],
    ],
    LastHotkeyError: '',
  };
  readonly injected: Array<[string, Array<[number, number, number]>]> = [];
  handle!: ExportedInterface<'org.bulkhead.Input1'>;
  Freeze(): void {}
  SetFocus(_ctx: CallContext, target: string): void {
    this.props.FocusedTarget = target;
    this.handle.propertiesChanged('FocusedTarget');
  }
  Prepare(): void {}
  Lock(): void {
    this.props.Locked = true;
    this.handle.propertiesChanged('Locked');
    this.handle.emit('SecureAttention');
  }
  /** The passwords Unlock was called with (this fake accepts any). */
  readonly unlockPasswords: unknown[] = [];
  Unlock(_ctx: CallContext, options: VariantDict): void {
    this.unlockPasswords.push(options.password?.value);
    this.props.Locked = false;
    this.handle.propertiesChanged('Locked');
  }
  InjectEvents(_ctx: CallContext, cls: string, events: Array<[number, number, number]>): void {
    this.injected.push([cls, events]);
  }
}

export class FakeUsbDevice implements UsbDevice1Service {
  handle!: ExportedInterface<'org.bulkhead.UsbDevice1'>;
  constructor(public props: UsbDevice1Properties) {}
  private set(p: Partial<UsbDevice1Properties>): void {
    Object.assign(this.props, p);
    this.handle.propertiesChanged(...(Object.keys(p) as Array<keyof UsbDevice1Properties>));
  }
  Assign(_ctx: CallContext, vm: string): void {
    this.set({ AssignedVm: vm, State: 'attached' });
  }
  Release(): void {
    this.set({ AssignedVm: '/', State: 'available' });
  }
  SetSticky(_ctx: CallContext, sticky: boolean): void {
    this.set({ Sticky: sticky });
  }
  SetFollowFocus(_ctx: CallContext, follow: boolean): void {
    this.set({ FollowFocus: follow });
  }
}

export class FakeUsb implements Usb1Service {
  readonly props: Usb1Properties = { Rules: '[]', PendingPrompts: [] };
  readonly answers: Array<[number, string]> = [];
  handle!: ExportedInterface<'org.bulkhead.Usb1'>;
  AnswerPrompt(_ctx: CallContext, id: number, answer: string): void {
    if (!this.props.PendingPrompts.some((p) => p[0] === id))
      throw new BulkheadError('NoSuchDevice', `no prompt ${id}`);
    this.answers.push([id, answer]);
    this.props.PendingPrompts = this.props.PendingPrompts.filter((p) => p[0] !== id);
    this.handle.propertiesChanged('PendingPrompts');
  }
  SetRules(): void {}
  // vm-daemon's calls (the switch's move-usb step): no switch runs against this fake.
  MoveFollowFocus(): Array<[string, string, string, bigint]> {
    return [];
  }
  ReturnDevices(): Array<[string, string, string, bigint]> {
    return [];
  }
  ask(id: number, device: string, vm: string): void {
    this.props.PendingPrompts = [...this.props.PendingPrompts, [id, device, vm]];
    this.handle.propertiesChanged('PendingPrompts');
    this.handle.emit('AttachRequested', id, device, vm);
  }
}

export function fakeUsbProps(id: string, over: Partial<UsbDevice1Properties> = {}): UsbDevice1Properties {
  return {
    Name: id,
    Vendor: 'Acme',
    Product: id,
    VendorId: 0x1234,
    ProductId: 0x5678,
    Serial: '',
    Classes: ['storage'],
    Bus: 1,
    Address: 2,
    Port: '1-1',
    AssignedVm: '/',
    Sticky: false,
    FollowFocus: false,
    State: 'available',
    ...over,
  };
}

/** One fake daemon: its own bus connection, so it can go away and come back like a process. */
class FakeService<T> {
  conn: MessageBus | null = null;
  host: ServiceHost | null = null;
  constructor(
    private readonly address: string,
    private readonly name: string,
    private readonly exportAll: (host: ServiceHost) => void,
    readonly impl: T,
  ) {}
  async up(): Promise<void> {
    this.conn = await connectBus(this.address);
    this.host = new ServiceHost(this.conn, { log: () => undefined });
    this.exportAll(this.host);
    await this.host.requestName(this.name);
  }
  /** Like the process dying: the connection closes, the bus name loses its owner. */
  down(): void {
    this.host?.close();
    this.conn?.disconnect();
    this.host = null;
    this.conn = null;
  }
}

export interface FakeDaemons {
  vmManager: FakeVmManager;
  input: FakeInput;
  usb: FakeUsb;
  usbDevices: Map<string, FakeUsbDevice>;
  stop(d: 'vmManager' | 'input' | 'usb'): void;
  start(d: 'vmManager' | 'input' | 'usb'): Promise<void>;
  close(): void;
}

export interface FakeSetup {
  vms?: Vm1Properties[];
  usbDevices?: Array<[id: string, props: UsbDevice1Properties]>;
  configErrors?: Array<[string, string, string]>;
  start?: Array<'vmManager' | 'input' | 'usb'>;
}

export async function startFakeDaemons(address: string, setup: FakeSetup = {}): Promise<FakeDaemons> {
  const vmManager = new FakeVmManager();
  vmManager.props.ConfigErrors = setup.configErrors ?? [];
  for (const p of setup.vms ?? [
    fakeVmProps('personal', { Slot: 1, Color: '#2a6fdb' }),
    fakeVmProps('business', { Slot: 2, Kind: 'business', Color: '#d9822b' }),
  ])
    vmManager.vms.set(vmPath(p.Id), new FakeVm({ ...p }));
  const input = new FakeInput();
  const usb = new FakeUsb();
  const usbDevices = new Map<string, FakeUsbDevice>();
  for (const [id, p] of setup.usbDevices ?? [])
    usbDevices.set(usbDevicePath(id), new FakeUsbDevice({ ...p }));

  const services = {
    vmManager: new FakeService(
      address,
      'org.bulkhead.VmManager1',
      (h) => {
        h.addObjectManager(VM_MANAGER_PATH);
        vmManager.handle = h.export(
          VM_MANAGER_PATH,
          'org.bulkhead.VmManager1',
          vmManager,
          () => vmManager.props,
        );
        for (const [path, vm] of vmManager.vms)
          vm.handle = h.export(path, 'org.bulkhead.Vm1', vm, () => vm.props);
      },
      vmManager,
    ),
    input: new FakeService(
      address,
      'org.bulkhead.Input1',
      (h) => {
        input.handle = h.export(INPUT_PATH, 'org.bulkhead.Input1', input, () => input.props);
      },
      input,
    ),
    usb: new FakeService(
      address,
      'org.bulkhead.Usb1',
      (h) => {
        h.addObjectManager(USB_PATH);
        usb.handle = h.export(USB_PATH, 'org.bulkhead.Usb1', usb, () => usb.props);
        for (const [path, d] of usbDevices)
          d.handle = h.export(path, 'org.bulkhead.UsbDevice1', d, () => d.props);
      },
      usb,
    ),
  };
  for (const d of setup.start ?? (['vmManager', 'input', 'usb'] as const)) await services[d].up();
  return {
    vmManager,
    input,
    usb,
    usbDevices,
    stop: (d) => services[d].down(),
    start: (d) => services[d].up(),
    close: () => Object.values(services).forEach((s) => s.down()),
  };
}
