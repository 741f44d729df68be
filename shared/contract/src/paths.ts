/**
 * Object paths and their escaping, the way systemd does it (sd_bus_path_encode): every byte that is
 * not [A-Za-z0-9] becomes _XX (hex), and the empty string becomes "_".
 */
export const VM_MANAGER_PATH = '/org/bulkhead/VmManager1';
export const INPUT_PATH = '/org/bulkhead/Input1';
export const USB_PATH = '/org/bulkhead/Usb1';
export const POWER_PATH = '/org/bulkhead/Power1';
/** The switcher (the Control Domain's own UI, slot 0) wherever an object path names a VM. */
export const SWITCHER_PATH = '/';

export function escapePathElement(s: string): string {
  if (s === '') return '_';
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9]/.test(c) ? c : '_' + byte.toString(16).padStart(2, '0');
  }
  return out;
}

export function unescapePathElement(e: string): string {
  if (e === '_') return '';
  const bytes: number[] = [];
  for (let i = 0; i < e.length; i++) {
    if (e[i] === '_' && /^[0-9a-f]{2}$/.test(e.slice(i + 1, i + 3))) {
      bytes.push(parseInt(e.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(e.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

export const vmPath = (id: string): string => `${VM_MANAGER_PATH}/vm/${escapePathElement(id)}`;
export const usbDevicePath = (id: string): string => `${USB_PATH}/device/${escapePathElement(id)}`;

/** The VM id of a VM object path, or null when the path is not a VM's. */
export function vmIdFromPath(path: string): string | null {
  const prefix = `${VM_MANAGER_PATH}/vm/`;
  if (!path.startsWith(prefix)) return null;
  const rest = path.slice(prefix.length);
  return rest && !rest.includes('/') ? unescapePathElement(rest) : null;
}
export function usbDeviceIdFromPath(path: string): string | null {
  const prefix = `${USB_PATH}/device/`;
  if (!path.startsWith(prefix)) return null;
  const rest = path.slice(prefix.length);
  return rest && !rest.includes('/') ? unescapePathElement(rest) : null;
}

export const BUS_NAMES = {
  vmManager: 'org.bulkhead.VmManager1',
  input: 'org.bulkhead.Input1',
  usb: 'org.bulkhead.Usb1',
} as const;
