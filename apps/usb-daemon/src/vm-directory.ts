import { BUS_NAMES, SWITCHER_PATH, VM_MANAGER_PATH, vmIdFromPath } from '@bulkhead/contract';
import { TypedEmitter, type Logger } from '@bulkhead/common';
import { variant, type BusClient, type Unsubscribe } from '@bulkhead/dbus';

const VM_IFACE = 'org.bulkhead.Vm1';
const MANAGER_IFACE = 'org.bulkhead.VmManager1';

/** What usb-daemon needs to know about one VM. */
export interface VmView {
  path: string;
  id: string;
  state: string;
  usbAutoAttach: boolean;
}

export interface VmDirectoryEvents {
  /** vm-daemon (re)appeared and the VM list was read afresh: assignments should be reconciled. */
  synced: [];
  vmState: [path: string, state: string, previous: string];
  vmRemoved: [path: string];
  activeVm: [path: string, previous: string];
}

/** A host USB device a VM holds, as its device model reports it. */
export interface VmUsbAttachment {
  handle: string;
  bus: number;
  address: number;
}

/**
 * usb-daemon's only way to touch VMs: the VMs and focus published by vm-daemon, and the Vm1 USB
 * methods (AttachUsbDevice, DetachUsbDevice, ListUsbDevices), so any backend (QEMU now, Xen
 * later) that implements Vm1 works unchanged.
 */
export interface VmControl {
  readonly events: TypedEmitter<VmDirectoryEvents>;
  vms(): ReadonlyMap<string, VmView>;
  activeVm(): string;
  start(): Promise<void>;
  stop(): Promise<void>;
  attach(vm: string, bus: number, address: number, port: string): Promise<string>;
  detach(vm: string, handle: string): Promise<void>;
  list(vm: string): Promise<VmUsbAttachment[]>;
}

/** VmControl over D-Bus: follows org.bulkhead.VmManager1's ObjectManager and ActiveVm. */
export class DbusVmControl implements VmControl {
  readonly events = new TypedEmitter<VmDirectoryEvents>();
  private readonly known = new Map<string, VmView>();
  private active: string = SWITCHER_PATH;
  private unwatchObjects: Unsubscribe | null = null;
  private unwatchOwner: Unsubscribe | null = null;
  private syncing: Promise<void> = Promise.resolve();
  private firstSync: Promise<void> | null = null;

  constructor(
    private readonly client: BusClient,
    private readonly log: Logger,
    private readonly opts: { attachTimeoutMs?: number } = {},
  ) {}

  vms(): ReadonlyMap<string, VmView> {
    return this.known;
  }

  activeVm(): string {
    return this.active;
  }

  /** Resolves once the VM list was read (or vm-daemon was found absent). */
  async start(): Promise<void> {
    let resolveFirst!: () => void;
    this.firstSync = new Promise((r) => (resolveFirst = r));
    this.unwatchOwner = await this.client.watchNameOwner(BUS_NAMES.vmManager, (owner) => {
      if (owner) {
        this.syncing = this.syncing.then(() => this.sync()).finally(resolveFirst);
      } else {
        this.log.warn(
          'vm-daemon (org.bulkhead.VmManager1) is not on the bus; assignments are kept until it returns',
        );
        resolveFirst();
      }
    });
    await this.firstSync;
  }

  async stop(): Promise<void> {
    await this.unwatchOwner?.();
    await this.unwatchObjects?.();
    this.unwatchOwner = this.unwatchObjects = null;
  }

  private async sync(): Promise<void> {
    await this.unwatchObjects?.();
    this.unwatchObjects = null;
    try {
      const { objects, unsubscribe } = await this.client.watchObjects(BUS_NAMES.vmManager, VM_MANAGER_PATH, {
        added: (path, ifaces) => {
          const p = ifaces[VM_IFACE];
          if (p) this.upsert(path, p);
        },
        removed: (path, ifaces) => {
          if (!ifaces.includes(VM_IFACE) || !this.known.delete(path)) return;
          this.events.emit('vmRemoved', path);
        },
        changed: (path, iface, changed) => {
          if (iface === MANAGER_IFACE && path === VM_MANAGER_PATH && typeof changed.ActiveVm === 'string')
            this.setActive(changed.ActiveVm);
          else if (iface === VM_IFACE) this.upsert(path, changed);
        },
      });
      this.unwatchObjects = unsubscribe;
      const fresh = new Set<string>();
      for (const [path, ifaces] of Object.entries(objects)) {
        if (!ifaces[VM_IFACE]) continue;
        fresh.add(path);
        this.upsert(path, ifaces[VM_IFACE]);
      }
      for (const path of [...this.known.keys()])
        if (!fresh.has(path)) {
          this.known.delete(path);
          this.events.emit('vmRemoved', path);
        }
      const active = await this.client.get(BUS_NAMES.vmManager, VM_MANAGER_PATH, MANAGER_IFACE, 'ActiveVm');
      this.setActive(active);
      this.events.emit('synced');
    } catch (e) {
      this.log.error(`cannot read the VM list from vm-daemon: ${(e as Error).message}`);
    }
  }

  private setActive(path: string): void {
    if (path === this.active) return;
    const previous = this.active;
    this.active = path;
    this.events.emit('activeVm', path, previous);
  }

  private upsert(path: string, props: Record<string, unknown>): void {
    const had = this.known.get(path);
    const vm: VmView = had ?? {
      path,
      id: vmIdFromPath(path) ?? path,
      state: 'stopped',
      usbAutoAttach: false,
    };
    if (typeof props.Id === 'string' && props.Id) vm.id = props.Id;
    if (typeof props.UsbAutoAttach === 'boolean') vm.usbAutoAttach = props.UsbAutoAttach;
    const previous = had ? had.state : 'stopped';
    if (typeof props.State === 'string') vm.state = props.State;
    this.known.set(path, vm);
    if (vm.state !== previous) this.events.emit('vmState', path, vm.state, previous);
  }

  async attach(vm: string, bus: number, address: number, port: string): Promise<string> {
    const proxy = this.client.proxy(BUS_NAMES.vmManager, vm, VM_IFACE, {
      timeoutMs: this.opts.attachTimeoutMs ?? 60_000,
    });
    return proxy.AttachUsbDevice(bus, address, { port: variant('s', port) });
  }

  async detach(vm: string, handle: string): Promise<void> {
    await this.client
      .proxy(BUS_NAMES.vmManager, vm, VM_IFACE, { timeoutMs: this.opts.attachTimeoutMs ?? 60_000 })
      .DetachUsbDevice(handle);
  }

  async list(vm: string): Promise<VmUsbAttachment[]> {
    const rows = await this.client.proxy(BUS_NAMES.vmManager, vm, VM_IFACE).ListUsbDevices();
    return rows.map(([handle, bus, address]) => ({ handle, bus, address }));
  }
}
