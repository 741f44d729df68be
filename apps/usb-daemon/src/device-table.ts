/**
 * The devices usb-daemon has seen and the state of each: who holds it, its attachment handle, its
 * lifecycle state. Knows nothing of D-Bus or of policy: every change is reported to one listener
 * (the bus adapter turns it into PropertiesChanged).
 */
import { SWITCHER_PATH } from '@bulkhead/contract';
import { deviceId, type UsbDeviceInfo } from './device';
import type { UsbDeviceKey } from './enumerators/enumerator';
import { isInputDevice, policyDeviceOf, type PolicyDevice } from './policy';

export type DeviceState =
  'available' | 'attaching' | 'attached' | 'detaching' | 'input' | 'rejected' | 'gone';

/** '/' (the switcher's path) stands for the Control Domain wherever a holder is named. */
export const CONTROL_DOMAIN = SWITCHER_PATH;

export interface DeviceEntry {
  id: string;
  info: UsbDeviceInfo;
  policy: PolicyDevice;
  /** VM object path, or '/' = the Control Domain. */
  assignedVm: string;
  /** The backend's attachment handle while assignedVm is a VM. */
  handle: string | null;
  state: DeviceState;
  /** Refused by policy (or by the person at a prompt) since it appeared. */
  rejected: boolean;
  gone: boolean;
  /** Operations on one device run one after another (attach, detach, cleanup). */
  queue: Promise<unknown>;
}

/** The device properties whose value a change to an entry may alter. */
export type DeviceChange = 'AssignedVm' | 'State' | 'Sticky' | 'FollowFocus';

/** bus/address: how the host (and a VM's ListUsbDevices) names a device right now. */
export const keyOf = (k: UsbDeviceKey): string => `${k.bus}/${k.address}`;

export class DeviceTable {
  private readonly devices = new Map<string, DeviceEntry>();
  private readonly byKey = new Map<string, string>();

  constructor(private readonly onChange: (entry: DeviceEntry, changed: DeviceChange[]) => void) {}

  get size(): number {
    return this.devices.size;
  }

  values(): IterableIterator<DeviceEntry> {
    return this.devices.values();
  }

  get(id: string): DeviceEntry | undefined {
    return this.devices.get(id);
  }

  /** The device at a bus/address key ("3/7"), if one is present there. */
  atKey(key: string): DeviceEntry | undefined {
    const id = this.byKey.get(key);
    return id === undefined ? undefined : this.devices.get(id);
  }

  /** Record a device that appeared; null when its bus/address is already known. */
  add(info: UsbDeviceInfo): DeviceEntry | null {
    const key = keyOf(info);
    if (this.byKey.has(key)) return null; // already known (listed and hotplugged at start)
    let id = deviceId(info);
    if (this.devices.has(id)) id = `${id}@${info.port}`; // two devices claiming one serial
    const policy = policyDeviceOf(info);
    const entry: DeviceEntry = {
      id,
      info,
      policy,
      assignedVm: CONTROL_DOMAIN,
      handle: null,
      state: isInputDevice(policy) ? 'input' : 'available',
      rejected: false,
      gone: false,
      queue: Promise.resolve(),
    };
    this.devices.set(id, entry);
    this.byKey.set(key, id);
    return entry;
  }

  /** Mark the device at `key` gone (its bus/address is free again); the entry stays until forget. */
  vanished(key: UsbDeviceKey): DeviceEntry | undefined {
    const entry = this.atKey(keyOf(key));
    if (!entry) return undefined;
    this.byKey.delete(keyOf(key));
    entry.gone = true;
    if (entry.state !== 'attaching' && entry.state !== 'detaching') this.setState(entry, 'gone');
    return entry;
  }

  forget(entry: DeviceEntry): void {
    entry.assignedVm = CONTROL_DOMAIN;
    entry.handle = null;
    entry.state = 'gone';
    this.devices.delete(entry.id);
  }

  /** Run `op` after every earlier operation on the same device settled. */
  enqueue<T>(entry: DeviceEntry, op: () => Promise<T>): Promise<T> {
    const run = entry.queue.then(op, op);
    entry.queue = run.catch(() => undefined);
    return run;
  }

  /** The state of a device in the Control Domain with nothing in flight. */
  restingState(entry: DeviceEntry): DeviceState {
    if (entry.gone) return 'gone';
    if (entry.rejected) return 'rejected';
    return isInputDevice(entry.policy) ? 'input' : 'available';
  }

  setState(entry: DeviceEntry, state: DeviceState): void {
    if (entry.state === state) return;
    entry.state = state;
    this.onChange(entry, ['State']);
  }

  setAssigned(entry: DeviceEntry, vm: string, handle: string | null, state: DeviceState): void {
    const changed = entry.assignedVm !== vm;
    entry.assignedVm = vm;
    entry.handle = handle;
    entry.state = state;
    this.onChange(entry, changed ? ['AssignedVm', 'State', 'Sticky'] : ['State']);
  }
}
