/**
 * The USB device model of usb-daemon: what an enumerator reports, how classes are derived from
 * USB class codes, and the stable device id.
 */

/** Device and interface classes, as published in org.bulkhead.UsbDevice1.Classes. */
export const USB_CLASSES = [
  'storage',
  'hid',
  'keyboard',
  'mouse',
  'audio',
  'video',
  'printer',
  'network',
  'wireless',
  'smartcard',
  'hub',
  'other',
] as const;
export type UsbClass = (typeof USB_CLASSES)[number];

/** One interface's class triple (first alternate setting), as in the interface descriptor. */
export interface UsbInterfaceCodes {
  classCode: number;
  subclass: number;
  protocol: number;
}

/** What an enumerator knows about one attached device. */
export interface UsbDeviceInfo {
  bus: number;
  address: number;
  /** Port path, e.g. '1-2.3' (bus 1, root port 2, hub port 3): the sysfs device name. */
  port: string;
  vendorId: number;
  productId: number;
  /** bDeviceClass/SubClass/Protocol (0 = "per interface"). */
  deviceCodes: UsbInterfaceCodes;
  interfaces: UsbInterfaceCodes[];
  /** Empty when the device has no serial number string. */
  serial: string;
  vendor: string;
  product: string;
}

/** Classes of one class triple. HID boot protocol 1 = keyboard, 2 = mouse (HID 1.11 §4.3). */
export function classesOfCodes(c: UsbInterfaceCodes): UsbClass[] {
  switch (c.classCode) {
    case 0x00: // "use interface descriptors"
      return [];
    case 0x01:
      return ['audio'];
    case 0x02: // CDC: ACM modems, ECM/NCM Ethernet
    case 0x0a: // CDC data
      return ['network'];
    case 0x03:
      if (c.subclass === 1 && c.protocol === 1) return ['hid', 'keyboard'];
      if (c.subclass === 1 && c.protocol === 2) return ['hid', 'mouse'];
      return ['hid'];
    case 0x07:
      return ['printer'];
    case 0x08:
      return ['storage'];
    case 0x09:
      return ['hub'];
    case 0x0b:
      return ['smartcard'];
    case 0x0e:
      return ['video'];
    case 0x10: // audio/video devices
      return ['audio', 'video'];
    case 0xe0: // wireless controller: Bluetooth, or RNDIS (subclass 1, protocol 3) which is Ethernet
      return c.subclass === 1 && c.protocol === 3 ? ['network'] : ['wireless'];
    default:
      return ['other'];
  }
}

/** Classes from the device descriptor alone (0xef "miscellaneous" tells nothing either). */
export function deviceLevelClasses(info: UsbDeviceInfo): UsbClass[] {
  return info.deviceCodes.classCode === 0xef ? [] : classesOfCodes(info.deviceCodes);
}

export function interfaceClasses(info: UsbDeviceInfo): UsbClass[] {
  return sortClasses(info.interfaces.flatMap(classesOfCodes));
}

/** Device and interface classes together, in USB_CLASSES order, never empty. */
export function allClasses(info: UsbDeviceInfo): UsbClass[] {
  const all = sortClasses([...deviceLevelClasses(info), ...interfaceClasses(info)]);
  if (all.length > 1) return all.filter((c) => c !== 'other');
  return all.length ? all : ['other'];
}

function sortClasses(cs: UsbClass[]): UsbClass[] {
  return USB_CLASSES.filter((c) => cs.includes(c));
}

export const hex4 = (n: number): string => n.toString(16).padStart(4, '0');

/**
 * Stable id: 'vvvv:pppp:<serial>' when the device has a serial (the same stick in any port is the
 * same device), otherwise 'vvvv:pppp@<port>' (the port is the only thing that tells two identical
 * serial-less devices apart; VID:PID is kept so another device plugged into that port is not
 * mistaken for the old one).
 */
export function deviceId(info: UsbDeviceInfo): string {
  const base = `${hex4(info.vendorId)}:${hex4(info.productId)}`;
  return info.serial ? `${base}:${info.serial}` : `${base}@${info.port}`;
}

/** A short human name: product string, else vendor string, else VID:PID. */
export function displayName(info: UsbDeviceInfo): string {
  const p = info.product.trim();
  const v = info.vendor.trim();
  if (p && v && !p.toLowerCase().startsWith(v.toLowerCase())) return `${v} ${p}`;
  return p || v || `USB device ${hex4(info.vendorId)}:${hex4(info.productId)}`;
}
