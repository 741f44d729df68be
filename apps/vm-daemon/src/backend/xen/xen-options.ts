/**
 * Xen-only settings of a VM. VmDefinition (config.ts) has no field for them yet, and its loader
 * rejects unknown fields, so they live in a sidecar file next to the definition:
 *   personal.json  →  personal.xen   (JSON, optional)
 *   {
 *     "type": "pv" | "pvh" | "hvm",          default: "pv" with a kernel, else "hvm"
 *     "ramdisk": "guest.cpio.gz",            initrd for direct kernel boot (relative to the file)
 *     "usbctrl": {"version": 2, "ports": 6} | null,
 *                                            default for HVM: devicemodel (QEMU-emulated) controller
 *                                            version 2, 6 ports; PV/PVH: none, and refused (qusb
 *                                            needs the guest's CONFIG_USB_XEN_HCD, which Debian
 *                                            kernels lack: the device would never appear)
 *     "pci": ["0000:00:04.0"],               devices assigned for the whole life of the domain
 *                                            (the GPU is NOT listed here: the hand-off moves it)
 *     "serialLog": true,                     HVM: guest serial port to <runDir>/serial.log
 *     "deviceModelArgs": ["-global", "x=y"]  extra arguments for the guest's QEMU: the HVM device
 *                                            model, or the PV/PVH QEMU that serves its virtual
 *                                            keyboard/pointer (xl-config.ts)
 *   }
 * A GPU several VMs share is not a sidecar field: it is the definition's
 * `"gpu": {"pci": [...], "handoff": true}` (config.ts), moved by the GPU hand-off.
 * TODO(config.ts owner): fold these into VmDefinition as `xen: {...}` and drop the sidecar.
 */
import { lstatSync } from 'node:fs';
import { isAbsolute, join, dirname, basename } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import { formatConfigError, type ConfigError, type VmDefinition } from '../../config';
import { readDefinitionFile } from '../../config-files';
import { describeValue, fieldName } from '../../config-text';
import { cdromProblem } from './xl-cdrom';

export type XenGuestType = 'pv' | 'pvh' | 'hvm';

export interface XenGuestOptions {
  type: XenGuestType;
  ramdisk: string | null;
  usbctrl: { version: 1 | 2 | 3; ports: number } | null;
  pci: string[];
  serialLog: boolean;
  deviceModelArgs: string[];
}

/**
 * USB for a PV/PVH guest is refused, not half-done: xl would accept a qusb controller and attach
 * devices to it, but the guest never sees them without the pvUSB front end (CONFIG_USB_XEN_HCD),
 * which Debian's kernels lack. Both the sidecar check and a USB request say so.
 */
export function pvUsbUnsupported(type: XenGuestType): string {
  return `a ${type.toUpperCase()} guest cannot take USB devices (it would need the Xen pvUSB front end, CONFIG_USB_XEN_HCD, which Debian's guest kernels lack); use "type": "hvm", whose device model emulates a USB controller`;
}

/**
 * A sidecar that cannot be used: org.bulkhead.Error.InvalidConfig on the bus, and the file, field
 * and reason apart, as a definition file's ConfigError has them.
 */
export class XenSidecarError extends BulkheadError implements ConfigError {
  constructor(
    readonly file: string,
    readonly field: string,
    readonly reason: string,
  ) {
    super('InvalidConfig', formatConfigError({ file, field, reason }));
  }
}

const PCI_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;
const KNOWN = new Set(['type', 'ramdisk', 'usbctrl', 'pci', 'serialLog', 'deviceModelArgs', '$comment']);

export function sidecarPath(def: Pick<VmDefinition, 'file'>): string {
  return join(dirname(def.file), basename(def.file).replace(/\.json$/, '') + '.xen');
}

/** Defaults for a definition without a sidecar. */
export function defaultXenOptions(def: Pick<VmDefinition, 'kernel'>, type?: XenGuestType): XenGuestOptions {
  const t = type ?? (def.kernel ? 'pv' : 'hvm');
  return {
    type: t,
    ramdisk: null,
    usbctrl: t === 'hvm' ? { version: 2, ports: 6 } : null,
    pci: [],
    serialLog: true,
    deviceModelArgs: [],
  };
}

/** Validate a sidecar's text; errors name the file and the field, like config.ts does. */
export function parseXenOptions(
  file: string,
  text: string,
  def: Pick<VmDefinition, 'kernel'>,
): XenGuestOptions {
  const bad = (field: string, reason: string) => new XenSidecarError(file, field, reason);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw bad('(file)', `not valid JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw bad('(file)', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KNOWN.has(k)) throw bad(fieldName(k), 'unknown field');
  if (o.type !== undefined && !['pv', 'pvh', 'hvm'].includes(o.type as string))
    throw bad('type', `must be pv, pvh or hvm, got ${describeValue(o.type)}`);
  const opts = defaultXenOptions(def, o.type as XenGuestType | undefined);
  if (o.ramdisk !== undefined && o.ramdisk !== null) {
    if (typeof o.ramdisk !== 'string' || o.ramdisk === '' || /["\n]/.test(o.ramdisk))
      throw bad('ramdisk', 'must be a path without quotes or newlines');
    opts.ramdisk = isAbsolute(o.ramdisk) ? o.ramdisk : join(dirname(file), o.ramdisk);
  }
  if (o.usbctrl === null) opts.usbctrl = null;
  else if (o.usbctrl !== undefined) {
    const u = o.usbctrl as Record<string, unknown>;
    if (typeof u !== 'object' || Array.isArray(u))
      throw bad('usbctrl', 'must be null or {"version": 1|2|3, "ports": 1-31}');
    const version = u.version ?? 2;
    const ports = u.ports ?? 6;
    if (![1, 2, 3].includes(version as number))
      throw bad('usbctrl.version', `must be 1, 2 or 3, got ${describeValue(version)}`);
    if (!Number.isInteger(ports) || (ports as number) < 1 || (ports as number) > 31)
      throw bad('usbctrl.ports', `must be an integer from 1 to 31, got ${describeValue(ports)}`);
    opts.usbctrl = { version: version as 1 | 2 | 3, ports: ports as number };
    if (opts.type !== 'hvm') throw bad('usbctrl', pvUsbUnsupported(opts.type));
  }
  const pciList = (k: 'pci'): string[] => {
    const v = o[k];
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw bad(k, 'must be an array of PCI addresses');
    return v.map((p, i) => {
      if (typeof p !== 'string' || !PCI_RE.test(p.toLowerCase()))
        throw bad(`${k}[${i}]`, `must be a PCI address like 0000:00:04.0, got ${describeValue(p)}`);
      return p.toLowerCase();
    });
  };
  opts.pci = pciList('pci');
  if (o.deviceModelArgs !== undefined) {
    const a = o.deviceModelArgs;
    if (!Array.isArray(a) || a.some((x) => typeof x !== 'string' || x === '' || /["\n\\]/.test(x)))
      throw bad(
        'deviceModelArgs',
        'must be an array of non-empty strings without quotes, backslashes or newlines',
      );
    opts.deviceModelArgs = a as string[];
  }
  if (o.serialLog !== undefined) {
    if (typeof o.serialLog !== 'boolean') throw bad('serialLog', 'must be true or false');
    opts.serialLog = o.serialLog;
  }
  return opts;
}

/** True when nothing at all is at `file` (lstat says ENOENT); any other answer leaves it to the read. */
function absent(file: string): boolean {
  try {
    return lstatSync(file, { throwIfNoEntry: false }) === undefined;
  } catch {
    return false;
  }
}

/** The sidecar of `def` when it exists, else the defaults. */
export function loadXenOptions(def: Pick<VmDefinition, 'file' | 'kernel'>): XenGuestOptions {
  const file = sidecarPath(def);
  // Read by the same rules as the definition files (a FIFO or symlink is refused, never waited on
  // or followed; root-owned, not group/other-writable, size-capped).
  const read = readDefinitionFile(file);
  if (!read.ok) {
    // No sidecar at all (not even a dangling symlink, which is refused): the defaults.
    if (absent(file)) return defaultXenOptions(def);
    throw new XenSidecarError(file, '(file)', read.reason);
  }
  return parseXenOptions(file, read.text, def);
}

/**
 * How each kind of Xen guest this backend starts receives input focus: input-daemon's QMP sink on
 * <runDir>/input-qmp.sock (xl-config.ts gives every kind one). A kind missing here would be
 * refused when its file is loaded (xenDefinitionProblem), never found out at a switch.
 */
export const XEN_INPUT_PATH: Readonly<Record<XenGuestType, string>> = {
  hvm: "the device model's emulated PS/2 keyboard and mouse (input-send-event on its QMP)",
  pv: "xen-kbdfront (vkb), served by the QEMU libxl starts for the guest's vfb",
  pvh: "xen-kbdfront (vkb), served by the QEMU libxl starts for the guest's vfb",
};

/**
 * The load-time check of a Xen VM file (ConfigOptions.check, set by main.ts on the Xen backend):
 * its sidecar is read and validated now, not at the first start, and a guest that could not be
 * started or given focus is a ConfigError of its file (InvalidConfig on the bus, the VM not
 * loaded). null when the file is fine.
 */
export function xenDefinitionProblem(
  def: Pick<VmDefinition, 'file' | 'kernel' | 'cdrom' | 'disks'>,
): ConfigError | null {
  let opts: XenGuestOptions;
  try {
    opts = loadXenOptions(def);
  } catch (e) {
    if (e instanceof XenSidecarError) return { file: e.file, field: e.field, reason: e.reason };
    throw e;
  }
  if (!Object.hasOwn(XEN_INPUT_PATH, opts.type))
    return {
      file: sidecarPath(def),
      field: 'type',
      reason: `a ${String(opts.type)} guest cannot be given input focus by this backend`,
    };
  if ((opts.type === 'pv' || opts.type === 'pvh') && !def.kernel)
    return {
      file: def.file,
      field: 'kernel',
      reason: `a ${opts.type.toUpperCase()} guest needs a kernel (no bootloader is run; set "kernel" or use "type": "hvm" in ${basename(sidecarPath(def))})`,
    };
  // An installation medium only an HVM guest's device model can carry (xl-cdrom.ts).
  const cdrom = cdromProblem(def, opts.type);
  if (cdrom) return { file: def.file, field: 'cdrom', reason: cdrom };
  return null;
}
