import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { UsbDeviceInfo, UsbInterfaceCodes } from '../device';

/** Where Linux lists USB devices: one directory per device named by its port path ('1-2.3'). */
export const SYSFS_USB_DEVICES = '/sys/bus/usb/devices';

/**
 * What the kernel publishes about one USB device in sysfs (all read without opening it): everything
 * an enumerator reports about a device.
 */
export type SysfsUsbDevice = UsbDeviceInfo;

function attr(dir: string, name: string): string | null {
  try {
    return readFileSync(join(dir, name), 'utf8').trim();
  } catch {
    return null;
  }
}

const int = (s: string | null, radix: number): number | null => {
  if (s === null || s === '') return null;
  const n = parseInt(s, radix);
  return Number.isFinite(n) ? n : null;
};

/** Is `name` a device directory (port path), not a root hub ('usb1') or an interface ('1-2:1.0')? */
export const isPortName = (name: string): boolean => /^[0-9]+-[0-9]+(\.[0-9]+)*$/.test(name);

/** Read one device directory; null when it is gone or incomplete (e.g. vanished while reading). */
export function readSysfsUsbDevice(root: string, port: string): SysfsUsbDevice | null {
  const dir = join(root, port);
  const bus = int(attr(dir, 'busnum'), 10);
  const address = int(attr(dir, 'devnum'), 10);
  const vendorId = int(attr(dir, 'idVendor'), 16);
  const productId = int(attr(dir, 'idProduct'), 16);
  if (bus === null || address === null || vendorId === null || productId === null) return null;
  return {
    port,
    bus,
    address,
    vendorId,
    productId,
    deviceCodes: {
      classCode: int(attr(dir, 'bDeviceClass'), 16) ?? 0,
      subclass: int(attr(dir, 'bDeviceSubClass'), 16) ?? 0,
      protocol: int(attr(dir, 'bDeviceProtocol'), 16) ?? 0,
    },
    interfaces: readSysfsInterfaces(root, port),
    serial: attr(dir, 'serial') ?? '',
    vendor: attr(dir, 'manufacturer') ?? '',
    product: attr(dir, 'product') ?? '',
  };
}

/** Interfaces of the active configuration: sibling directories '<port>:<config>.<interface>'. */
export function readSysfsInterfaces(root: string, port: string): UsbInterfaceCodes[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const out: UsbInterfaceCodes[] = [];
  for (const n of names.filter((n) => n.startsWith(`${port}:`)).sort()) {
    const dir = join(root, n);
    const classCode = int(attr(dir, 'bInterfaceClass'), 16);
    if (classCode === null) continue;
    out.push({
      classCode,
      subclass: int(attr(dir, 'bInterfaceSubClass'), 16) ?? 0,
      protocol: int(attr(dir, 'bInterfaceProtocol'), 16) ?? 0,
    });
  }
  return out;
}

/** The port path of the device at bus/address, found by scanning busnum/devnum; null if none. */
export function findSysfsPort(root: string, bus: number, address: number): string | null {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return null;
  }
  for (const n of names.filter(isPortName)) {
    const dir = join(root, n);
    if (int(attr(dir, 'busnum'), 10) === bus && int(attr(dir, 'devnum'), 10) === address) return n;
  }
  return null;
}
