import type { UsbDeviceInfo } from '../device';
import type { UsbDeviceKey, UsbEnumerator, UsbHotplugHandlers } from '../enumerators/enumerator';

/** A USB bus driven by tests: plug() and unplug() fire hotplug events synchronously. */
export class FakeUsbEnumerator implements UsbEnumerator {
  readonly name = 'fake';
  private readonly devices = new Map<string, UsbDeviceInfo>();
  private readonly watchers = new Set<UsbHotplugHandlers>();

  constructor(initial: UsbDeviceInfo[] = []) {
    for (const d of initial) this.devices.set(key(d), d);
  }

  async list(): Promise<UsbDeviceInfo[]> {
    return [...this.devices.values()];
  }

  watch(handlers: UsbHotplugHandlers): () => void {
    this.watchers.add(handlers);
    return () => this.watchers.delete(handlers);
  }

  plug(d: UsbDeviceInfo): void {
    this.devices.set(key(d), d);
    for (const w of this.watchers) w.added(d);
  }

  unplug(k: UsbDeviceKey): void {
    this.devices.delete(key(k));
    for (const w of this.watchers) w.removed({ bus: k.bus, address: k.address });
  }
}

const key = (k: UsbDeviceKey) => `${k.bus}/${k.address}`;

let nextAddress = 10;

/** A device description for tests; defaults to a USB stick with a serial. */
export function fakeDevice(over: Partial<UsbDeviceInfo> = {}): UsbDeviceInfo {
  const address = over.address ?? nextAddress++;
  return {
    bus: 1,
    address,
    port: `1-${address}`,
    vendorId: 0x0781,
    productId: 0x5567,
    deviceCodes: { classCode: 0, subclass: 0, protocol: 0 },
    interfaces: [{ classCode: 0x08, subclass: 0x06, protocol: 0x50 }],
    serial: `SER${address}`,
    vendor: 'SanDisk',
    product: 'Cruzer Blade',
    ...over,
  };
}

export const KEYBOARD_INTERFACE = { classCode: 0x03, subclass: 1, protocol: 1 };
export const MOUSE_INTERFACE = { classCode: 0x03, subclass: 1, protocol: 2 };
