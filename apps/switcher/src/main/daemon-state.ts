/**
 * The switcher's model of the machine, kept from the three daemons over D-Bus. Each daemon is
 * followed by its bus name: when the name loses its owner the daemon's part of the model is
 * dropped and it is shown as down (never stale state as live); when a new owner appears the
 * switcher subscribes and fetches everything again, by itself.
 */
import { BUS_NAMES, INPUT_PATH, USB_PATH, VM_MANAGER_PATH } from '@bulkhead/contract';
import { TypedEmitter } from '@bulkhead/common';
import { unwrap, type BusClient, type Unsubscribe } from '@bulkhead/dbus';
import {
  emptySnapshot,
  type ConfigErrorModel,
  type DaemonName,
  type DaemonStatus,
  type InputModel,
  type LastSwitchModel,
  type PromptModel,
  type SwitcherSnapshot,
  type UsbDeviceModel,
  type VmModel,
} from '../common/model';

const VM1 = 'org.bulkhead.Vm1';
const VMM1 = 'org.bulkhead.VmManager1';
const INPUT1 = 'org.bulkhead.Input1';
const USB1 = 'org.bulkhead.Usb1';
const USBDEV1 = 'org.bulkhead.UsbDevice1';

export interface DaemonStateEvents {
  /** Something other than one VM's properties changed: send a new snapshot. */
  changed: [];
  vmPatch: [path: string, patch: Partial<VmModel>];
  daemon: [name: DaemonName, status: DaemonStatus];
  switchProgress: [target: string, step: string, detail: string];
  secureAttention: [];
  prompt: [prompt: PromptModel];
  hotkey: [chord: string, action: string];
  usbRejected: [device: string, reason: string];
}

type Props = Record<string, unknown>;

const VM_FIELDS: Record<string, keyof VmModel> = {
  Id: 'id',
  Name: 'name',
  Slot: 'slot',
  Kind: 'kind',
  Color: 'color',
  Icon: 'icon',
  State: 'state',
  StateReason: 'stateReason',
  LastError: 'lastError',
  HasGpu: 'hasGpu',
  Autostart: 'autostart',
  MemoryMiB: 'memoryMiB',
  Vcpus: 'vcpus',
  Backend: 'backend',
  ConfigFile: 'configFile',
};

const USB_FIELDS: Record<string, keyof UsbDeviceModel> = {
  Name: 'name',
  Vendor: 'vendor',
  Product: 'product',
  VendorId: 'vendorId',
  ProductId: 'productId',
  Serial: 'serial',
  Classes: 'classes',
  Port: 'port',
  AssignedVm: 'assignedVm',
  Sticky: 'sticky',
  FollowFocus: 'followFocus',
  State: 'state',
};

const plain = (v: unknown): unknown => (typeof v === 'bigint' ? Number(v) : v);

function mapFields<T>(fields: Record<string, keyof T>, props: Props): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(props)) {
    const f = fields[k];
    if (f) (out as Record<string, unknown>)[f as string] = plain(v);
  }
  return out;
}

export function vmFromProps(path: string, p: Props): VmModel {
  return {
    path,
    id: '',
    name: '',
    slot: 0,
    kind: 'personal',
    color: '#607080',
    icon: '',
    state: 'stopped',
    stateReason: '',
    lastError: '',
    hasGpu: false,
    autostart: false,
    memoryMiB: 0,
    vcpus: 0,
    backend: '',
    configFile: '',
    ...mapFields<VmModel>(VM_FIELDS, p),
  };
}

export function usbFromProps(path: string, p: Props): UsbDeviceModel {
  return {
    path,
    name: '',
    vendor: '',
    product: '',
    vendorId: 0,
    productId: 0,
    serial: '',
    classes: [],
    port: '',
    assignedVm: '/',
    sticky: false,
    followFocus: false,
    state: 'available',
    ...mapFields<UsbDeviceModel>(USB_FIELDS, p),
  };
}

/** LastSwitch (a{sv}) as published by vm-daemon, in milliseconds. */
export function lastSwitchFromDict(d: unknown): LastSwitchModel | null {
  if (!d || typeof d !== 'object' || Object.keys(d).length === 0) return null;
  const r = d as Record<string, unknown>;
  const us = (v: unknown) => (typeof v === 'bigint' || typeof v === 'number' ? Number(v) / 1000 : 0);
  const steps = Array.isArray(r.steps)
    ? (r.steps as unknown[])
        .filter(Array.isArray)
        .map((s) => [String((s as unknown[])[0]), us((s as unknown[])[1])] as [string, number])
    : [];
  return {
    from: String(r.from ?? ''),
    target: String(r.target ?? ''),
    outcome: String(r.outcome ?? ''),
    error: String(r.error ?? ''),
    startedMs: us(r.started_usec),
    durationMs: us(r.duration_usec),
    steps,
  };
}

interface Tracker {
  generation: number;
  owner: string | null;
  subs: Unsubscribe[];
  retry?: NodeJS.Timeout;
}

export class DaemonState extends TypedEmitter<DaemonStateEvents> {
  private readonly model: SwitcherSnapshot;
  private readonly vms = new Map<string, VmModel>();
  private readonly usb = new Map<string, UsbDeviceModel>();
  private readonly trackers: Record<DaemonName, Tracker> = {
    vmManager: { generation: 0, owner: null, subs: [] },
    input: { generation: 0, owner: null, subs: [] },
    usb: { generation: 0, owner: null, subs: [] },
  };
  private readonly nameWatches: Unsubscribe[] = [];
  private stopped = false;

  constructor(
    private readonly client: BusClient,
    private readonly opts: { retryMs?: number; log?: (msg: string) => void; injectInput?: boolean } = {},
  ) {
    super();
    this.model = emptySnapshot(Date.now());
    this.model.features.injectInput = false;
  }

  async start(): Promise<void> {
    const names: Record<DaemonName, string> = {
      vmManager: BUS_NAMES.vmManager,
      input: BUS_NAMES.input,
      usb: BUS_NAMES.usb,
    };
    for (const d of Object.keys(names) as DaemonName[])
      this.nameWatches.push(await this.client.watchNameOwner(names[d], (owner) => this.onOwner(d, owner)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.nameWatches.map((u) => u()));
    for (const d of Object.keys(this.trackers) as DaemonName[]) await this.teardown(d);
  }

  snapshot(): SwitcherSnapshot {
    return {
      ...this.model,
      vms: [...this.vms.values()].sort(
        (a, b) => (a.slot || 99) - (b.slot || 99) || a.name.localeCompare(b.name),
      ),
      usbDevices: [...this.usb.values()].sort(
        (a, b) => a.port.localeCompare(b.port) || a.path.localeCompare(b.path),
      ),
      features: { injectInput: !!this.opts.injectInput && this.model.input?.seat === 'virtual' },
    };
  }

  vm(path: string): VmModel | undefined {
    return this.vms.get(path);
  }

  isUp(d: DaemonName): boolean {
    return this.model.daemons[d].up;
  }

  private log(msg: string): void {
    this.opts.log?.(msg);
  }

  private onOwner(d: DaemonName, owner: string | null): void {
    if (this.stopped) return;
    const t = this.trackers[d];
    if (owner === t.owner && owner !== null) return;
    t.owner = owner;
    const gen = ++t.generation;
    void this.teardown(d).then(() => {
      if (gen !== t.generation) return;
      this.clear(d);
      if (owner === null) this.setStatus(d, false, 'not running (its bus name has no owner)');
      else this.setStatus(d, false, 'connecting…');
      if (owner !== null) void this.connect(d, gen);
    });
  }

  private async teardown(d: DaemonName): Promise<void> {
    const t = this.trackers[d];
    clearTimeout(t.retry);
    const subs = t.subs.splice(0);
    await Promise.all(subs.map((u) => u().catch(() => undefined)));
  }

  /** Subscribe first, then fetch: nothing that changes in between is lost. Retries while the owner stays. */
  private async connect(d: DaemonName, gen: number): Promise<void> {
    const t = this.trackers[d];
    const subs: Unsubscribe[] = [];
    try {
      if (d === 'vmManager') await this.connectVmManager(subs);
      else if (d === 'input') await this.connectInput(subs);
      else await this.connectUsb(subs);
      if (gen !== t.generation || this.stopped) {
        await Promise.all(subs.map((u) => u().catch(() => undefined)));
        return;
      }
      t.subs.push(...subs);
      this.setStatus(d, true, '');
    } catch (e) {
      await Promise.all(subs.map((u) => u().catch(() => undefined)));
      if (gen !== t.generation || this.stopped) return;
      this.clear(d);
      this.setStatus(d, false, `not answering: ${(e as Error).message}`);
      this.log(`${d}: ${(e as Error).message}; retrying`);
      t.retry = setTimeout(
        () => gen === t.generation && void this.connect(d, gen),
        this.opts.retryMs ?? 1000,
      );
    }
  }

  private async connectVmManager(subs: Unsubscribe[]): Promise<void> {
    const dest = BUS_NAMES.vmManager;
    subs.push(
      await this.client.onSignal(
        dest,
        { path: VM_MANAGER_PATH },
        VMM1,
        'SwitchProgress',
        ([target, step, detail]) => this.emit('switchProgress', target, step, detail),
      ),
    );
    const watch = await this.client.watchObjects(dest, VM_MANAGER_PATH, {
      added: (path, ifaces) => {
        if (!ifaces[VM1]) return;
        this.vms.set(path, vmFromProps(path, ifaces[VM1]));
        this.emit('changed');
      },
      removed: (path, ifaces) => {
        if (!ifaces.includes(VM1)) return;
        this.vms.delete(path);
        this.emit('changed');
      },
      changed: (path, iface, changed) => {
        if (iface === VMM1 && path === VM_MANAGER_PATH) this.applyManagerProps(changed);
        else if (iface === VM1) {
          const vm = this.vms.get(path);
          if (!vm) return;
          const patch = mapFields<VmModel>(VM_FIELDS, changed);
          Object.assign(vm, patch);
          this.emit('vmPatch', path, patch);
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
    if ('ActiveVm' in p) this.model.activeVm = String(p.ActiveVm);
    if ('Switching' in p) this.model.switching = !!p.Switching;
    if ('LastSwitch' in p) this.model.lastSwitch = lastSwitchFromDict(p.LastSwitch);
    if ('ConfigErrors' in p)
      this.model.configErrors = ((p.ConfigErrors as unknown[]) ?? []).map((e) => {
        const [file, field, reason] = e as [string, string, string];
        return { file, field, reason } satisfies ConfigErrorModel;
      });
    if ('Accelerator' in p) this.model.accelerator = String(p.Accelerator);
    if (notify) this.emit('changed');
  }

  private async connectInput(subs: Unsubscribe[]): Promise<void> {
    const dest = BUS_NAMES.input;
    subs.push(
      await this.client.onSignal(dest, { path: INPUT_PATH }, INPUT1, 'SecureAttention', () =>
        this.emit('secureAttention'),
      ),
      await this.client.onSignal(dest, { path: INPUT_PATH }, INPUT1, 'HotkeyPressed', ([chord, action]) =>
        this.emit('hotkey', chord, action),
      ),
      await this.client.subscribe(
        {
          sender: dest,
          path: INPUT_PATH,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'PropertiesChanged',
        },
        (m) => {
          if (m.body[0] !== INPUT1 || !this.model.input) return;
          this.applyInputProps(unwrap(m.body[1]) as Props);
          this.emit('changed');
        },
      ),
    );
    const props = (await this.client.getAll(dest, INPUT_PATH, INPUT1)) as unknown as Props;
    this.model.input = {
      focusedTarget: '/',
      locked: false,
      frozen: false,
      seat: '',
      hotkeys: [],
      lastHotkeyError: '',
    };
    this.applyInputProps(props);
  }

  private applyInputProps(p: Props): void {
    const i = this.model.input as InputModel;
    if ('FocusedTarget' in p) i.focusedTarget = String(p.FocusedTarget);
    if ('Locked' in p) i.locked = !!p.Locked;
    if ('Frozen' in p) i.frozen = !!p.Frozen;
    if ('Seat' in p) i.seat = String(p.Seat);
    if ('Hotkeys' in p) i.hotkeys = (p.Hotkeys as Array<[string, string]>) ?? [];
    if ('LastHotkeyError' in p) i.lastHotkeyError = String(p.LastHotkeyError);
  }

  private async connectUsb(subs: Unsubscribe[]): Promise<void> {
    const dest = BUS_NAMES.usb;
    subs.push(
      await this.client.onSignal(dest, { path: USB_PATH }, USB1, 'AttachRequested', ([id, device, vm]) =>
        this.emit('prompt', { id, device, vm }),
      ),
      await this.client.onSignal(dest, { path: USB_PATH }, USB1, 'DeviceRejected', ([device, reason]) =>
        this.emit('usbRejected', device, reason),
      ),
    );
    const watch = await this.client.watchObjects(dest, USB_PATH, {
      added: (path, ifaces) => {
        if (!ifaces[USBDEV1]) return;
        this.usb.set(path, usbFromProps(path, ifaces[USBDEV1]));
        this.emit('changed');
      },
      removed: (path, ifaces) => {
        if (!ifaces.includes(USBDEV1)) return;
        this.usb.delete(path);
        this.emit('changed');
      },
      changed: (path, iface, changed) => {
        if (iface === USB1 && path === USB_PATH) {
          if ('PendingPrompts' in changed) this.model.prompts = promptsFrom(changed.PendingPrompts);
          this.emit('changed');
        } else if (iface === USBDEV1) {
          const dev = this.usb.get(path);
          if (!dev) return;
          Object.assign(dev, mapFields<UsbDeviceModel>(USB_FIELDS, changed));
          this.emit('changed');
        }
      },
    });
    subs.push(watch.unsubscribe);
    this.usb.clear();
    for (const [path, ifaces] of Object.entries(watch.objects))
      if (ifaces[USBDEV1]) this.usb.set(path, usbFromProps(path, ifaces[USBDEV1]));
    const props = (await this.client.getAll(dest, USB_PATH, USB1)) as unknown as Props;
    this.model.prompts = promptsFrom(props.PendingPrompts);
  }

  private clear(d: DaemonName): void {
    if (d === 'vmManager') {
      this.vms.clear();
      this.model.activeVm = '/';
      this.model.switching = false;
      this.model.configErrors = [];
      this.model.accelerator = '';
      // LastSwitch is kept: it is history, shown as such in diagnostics.
    } else if (d === 'input') this.model.input = null;
    else {
      this.usb.clear();
      this.model.prompts = [];
    }
  }

  private setStatus(d: DaemonName, up: boolean, detail: string): void {
    const s: DaemonStatus = { up, since: Date.now(), detail };
    this.model.daemons = { ...this.model.daemons, [d]: s };
    this.log(`${d}: ${up ? 'up' : 'down'}${detail ? ` (${detail})` : ''}`);
    this.emit('daemon', d, s);
    this.emit('changed');
  }
}

function promptsFrom(v: unknown): PromptModel[] {
  return Array.isArray(v) ? v.map((p) => ({ id: Number(p[0]), device: String(p[1]), vm: String(p[2]) })) : [];
}
