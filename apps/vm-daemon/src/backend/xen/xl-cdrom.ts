/**
 * The installation medium (a definition's `cdrom`) of a Xen domain: an HVM guest's emulated IDE
 * CD-ROM, served by its device model (qemu-xen) from the ISO file, booted before the disk
 * (`boot = "dc"`, as the QEMU backend's `-boot order=dc`). It sits at `hdc` (secondary master, where
 * QEMU's `-cdrom` puts it too), so the disks keep hda/hdb: with a medium at most two disks fit the
 * emulated IDE bus beside it.
 *
 * Ejecting it from a running domain is `xl cd-eject <domid> hdc` (xen-backend.ts): libxl tells its
 * device model over its own QMP socket and updates its record of the domain's disks, which a QMP
 * `eject` on our socket would leave saying the ISO is still in.
 *
 * PV and PVH guests boot their kernel directly and have no emulated IDE: a medium there is refused
 * with the reason, where the file is turned into a domain (and never silently dropped).
 */
import { BulkheadError } from '@bulkhead/contract';
import type { VmDefinition } from '../../config';
import type { XenGuestType } from './xen-options';

/** The virtual device of the CD-ROM (what `xl cd-eject` names). */
export const XEN_CDROM_VDEV = 'hdc';

/** Disks an HVM domain with a medium may have (hda, hdb: the medium takes hdc). */
export const MAX_DISKS_WITH_CDROM = 2;

/** Why `def`'s medium cannot be given to a `type` domain, or null when it can (or there is none). */
export function cdromProblem(def: Pick<VmDefinition, 'cdrom' | 'disks'>, type: XenGuestType): string | null {
  if (!def.cdrom) return null;
  if (type !== 'hvm')
    return `a ${type.toUpperCase()} guest boots its kernel directly and has no emulated CD-ROM; an installation medium needs an HVM guest (no kernel, or "type": "hvm" in the .xen sidecar)`;
  if (def.disks.length > MAX_DISKS_WITH_CDROM)
    return `the CD-ROM is ${XEN_CDROM_VDEV} on the emulated IDE bus: at most ${MAX_DISKS_WITH_CDROM} disks fit beside it, the file has ${def.disks.length}`;
  return null;
}

/**
 * xl's disk spec of the medium (read-only, raw: an ISO is a raw image; target last, it may
 * contain anything but a comma, which the definition's validation already refused), or null.
 */
export function cdromSpec(
  def: Pick<VmDefinition, 'cdrom' | 'disks' | 'file'>,
  type: XenGuestType,
): string | null {
  if (!def.cdrom) return null;
  const problem = cdromProblem(def, type);
  if (problem) throw new BulkheadError('InvalidConfig', `${def.file}: cdrom: ${problem}`);
  if (def.cdrom.includes(','))
    throw new BulkheadError('InvalidConfig', `${def.file}: cdrom: xl cannot take a ',' in a path`);
  return `format=raw,vdev=${XEN_CDROM_VDEV},access=ro,devtype=cdrom,target=${def.cdrom}`;
}
