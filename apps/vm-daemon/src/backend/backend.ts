import type { TypedEmitter, VmState } from '@bulkhead/common';
import type { VmDefinition } from '../config';

/** How the hypervisor names a running VM: a QEMU process, or a Xen domain. */
export type VmHandle = { kind: 'pid'; pid: number } | { kind: 'domid'; domid: number };

/** 'pid 1234' / 'domid 7', for StateReason and logs. */
export function describeHandle(h: VmHandle): string {
  return h.kind === 'pid' ? `pid ${h.pid}` : `domid ${h.domid}`;
}

/** What a running VM exposes to the rest of the daemon. */
export interface RunningVm {
  handle: VmHandle;
  /** QMP socket reserved for input-daemon (published as Vm1.InputQmpSocket); '' when none. */
  inputQmpSocket: string;
  /** True when this VM was found running (re-adopted) rather than started by us. */
  adopted: boolean;
  /** 'running' or 'paused' (an adopted VM may have been paused before the daemon restarted). */
  state: 'running' | 'paused';
}

/**
 * State changes the backend noticed by itself (a QEMU that died, a guest that powered off), with a
 * human reason: 'qemu exited with signal SIGKILL; last stderr: ...'.
 */
export interface BackendEvents {
  /** `ending` says more about a VM that ended (stopped or crashed) when the backend knows it. */
  state: [vmId: string, state: VmState, reason: string, ending?: EndingDetail];
}

/** What a backend knows of how a VM ended beyond its state and words. */
export interface EndingDetail {
  /**
   * The guest rebooted (it asked to, or an HVM guest triple-faulted) and the backend ended the VM
   * for it (Xen's on_reboot = "destroy"): the core starts it again, as QEMU's reset does in place.
   */
  guestReboot?: boolean;
}

export interface UsbAttachRequest {
  bus: number;
  address: number;
  /** Host port path ('1.2'); preferred over bus/address when given. */
  port?: string;
}

/** The drive name of a VM's installation medium (`cdrom`), what QMP's eject names. */
export const CDROM_DRIVE = 'cdrom0';

/** The minimum of QMP a caller of `qmp()` can use (the QEMU backend returns its QmpClient). */
export interface QmpAccess {
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts?: { timeoutMs?: number },
  ): Promise<T>;
}

/**
 * A hypervisor backend: how VMs are created and driven. The core (VmManager) only talks to this;
 * main.ts picks the implementation from the config ('qemu' now, 'xen' later). Methods throw
 * BulkheadError (BackendFailed, Timeout, InvalidState, InvalidConfig, NotSupported, NoSuchDevice)
 * with the backend's own words in the message.
 */
export interface VmBackend extends Pick<TypedEmitter<BackendEvents>, 'on' | 'off' | 'once'> {
  readonly name: string;
  /** The `backend` values of the VM definitions it runs (a definition for another is refused). */
  readonly runs: ReadonlyArray<VmDefinition['backend']>;
  /** kvm | tcg | xen: how VMs run; may probe the host once. */
  accelerator(): Promise<string>;
  /** Prepare what a VM needs before its first start (run dir, disk images); idempotent. */
  create(def: VmDefinition): Promise<void>;
  /** Start the VM; resolves once it runs. */
  start(def: VmDefinition): Promise<RunningVm>;
  /** Find a VM that still runs from an earlier daemon process and take it over; null when none. */
  adopt(def: VmDefinition): Promise<RunningVm | null>;
  /**
   * After `adopt` found nothing to take over: why, when the VM's guest rebooted while no daemon
   * ran (a backend whose reboot ends the VM, Xen's on_reboot = "destroy"), else null. Asked once.
   */
  rebootedWhileAway?(vmId: string): string | null;
  /** Ask the guest to power off; kill it after `timeoutMs`. Resolves when it is gone. */
  stop(vmId: string, timeoutMs: number): Promise<{ killed: boolean }>;
  kill(vmId: string): Promise<void>;
  pause(vmId: string): Promise<void>;
  resume(vmId: string): Promise<void>;
  /** PNG bytes of the screen, at most `maxBytes`. */
  screenshot(vmId: string, maxBytes: number): Promise<Buffer>;
  attachUsb(vmId: string, req: UsbAttachRequest): Promise<string>;
  detachUsb(vmId: string, handle: string): Promise<void>;
  listUsb(vmId: string): Promise<Array<[string, number, number]>>;
  /**
   * Direct QMP access to a running VM (null when it does not run or has no QMP monitor). A
   * capability: only backends whose VMs can have a QEMU monitor offer it (not a Xen PV domain).
   */
  qmp?(vmId: string): QmpAccess | null;
  /**
   * Take the installation medium (`cdrom`) out of a running VM. Optional: without it the core
   * sends QMP `eject` of CDROM_DRIVE through `qmp()` (the QEMU backend). The Xen backend runs
   * `xl cd-eject`, so libxl's own record of the domain's disks agrees.
   */
  ejectCdrom?(vmId: string): Promise<void>;
  /** Let go of every VM without stopping them (daemon exit); they are re-adopted next start. */
  detachAll(): Promise<void>;
  /** Stop every VM (--stop-vms-on-exit). */
  stopAll(timeoutMs: number): Promise<void>;
}
