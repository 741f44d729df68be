import type { UsbDeviceInfo } from '../device';

/** Identifies an attached device at one instant (unique among attached devices). */
export interface UsbDeviceKey {
  bus: number;
  address: number;
}

export interface UsbHotplugHandlers {
  added(info: UsbDeviceInfo): void;
  removed(key: UsbDeviceKey): void;
  /** A device could not be read (e.g. it vanished while being read); the daemon logs it. */
  error?(message: string): void;
}

/**
 * Where usb-daemon learns which USB devices exist. watch() is called before list(), so a device
 * plugged in between is reported at least once (the daemon deduplicates by bus/address).
 */
export interface UsbEnumerator {
  readonly name: string;
  list(): Promise<UsbDeviceInfo[]>;
  /** Start hotplug notifications; the returned function stops them. */
  watch(handlers: UsbHotplugHandlers): () => void;
}

/** For hosts without USB (the demo, this build host): no devices, no events. */
export class NoUsbEnumerator implements UsbEnumerator {
  readonly name = 'none';
  async list(): Promise<UsbDeviceInfo[]> {
    return [];
  }
  watch(): () => void {
    return () => undefined;
  }
}
