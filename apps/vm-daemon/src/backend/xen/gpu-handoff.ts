/**
 * The Xen side of the GPU hand-off: the hypervisor's PCI operations (XenPciPassthrough, over
 * `xl` and sysfs) under gpu/gpu-holder.ts's GpuHolder, which decides who holds the GPU — dom0 or
 * one VM — and moves it (docs/gpu-handoff.md). XenGpuHandoff is a GpuHolder on Xen.
 *
 *   detach             xl pci-detach <domid> <bdf>      (forced: xl pci-detach -f, no guest co-operation)
 *   reset              /sys/bus/pci/devices/<bdf>/reset  where the device offers one (libxl also asks
 *                                                        pciback for an FLR on detach)
 *   attach             xl pci-attach <domid> <bdf>
 *   assignable-add     xl pci-assignable-add <bdf>       dom0's driver unbound, pciback bound
 *   assignable-remove  xl pci-assignable-remove -r <bdf> pciback unbound, the driver libxl
 *                                                        remembered at assignable-add bound again
 * Each xl call is bounded by `stepTimeoutMs` (a hung guest that does not ack the hot-unplug makes
 * pci-detach overrun it: Timeout). Who holds a function is read from `xl list -l`
 * (config.pcidevs, which libxl updates on hot-plug), never from human output. Step durations go to
 * `lastReport` and, as `substeps` of the StepResult (or of the thrown error), into
 * LastSwitch.steps right after move-gpu.
 */
import { existsSync, writeFileSync } from 'node:fs';
import type { Logger } from '@bulkhead/common';
import { NoDom0Display, type Dom0Display } from '../../gpu/dom0-display';
import { GpuHolder, type PciGuest, type PciPassthrough } from '../../gpu/gpu-holder';
import { parseXlListJson } from './xl-list';
import { xl, type XlRunner } from './xl-runner';

export type { GpuStep } from '../../gpu/gpu-holder';

/** sysfs access (a fake in unit tests). */
export interface PciSysfs {
  /** True when the function is bound to pciback (assignable to guests). */
  isAssignable(bdf: string): boolean;
  /** Reset the function; 'unsupported' when the kernel offers no reset for it; throws when it fails. */
  reset(bdf: string): 'ok' | 'unsupported';
}

export class RealPciSysfs implements PciSysfs {
  isAssignable(bdf: string): boolean {
    return existsSync(`/sys/bus/pci/drivers/pciback/${bdf}`);
  }
  reset(bdf: string): 'ok' | 'unsupported' {
    const f = `/sys/bus/pci/devices/${bdf}/reset`;
    if (!existsSync(f)) return 'unsupported';
    writeFileSync(f, '1');
    return 'ok';
  }
}

/** PCI pass-through on Xen: `xl` for the assignments, sysfs for the state of a function and its reset. */
/**
 * xenbus states of a PV guest's PCI back end (xen/include/public/io/xenbus.h) while a device is
 * still being handed over: being set up (Initialising, InitWait, Initialised) or hot-plugged
 * (Reconfiguring, Reconfigured). 4 is Connected, 5/6 Closing/Closed.
 */
const PCI_BACKEND_BUSY = new Set([1, 2, 3, 7, 8]);

export class XenPciPassthrough implements PciPassthrough {
  constructor(
    private readonly runner: XlRunner,
    private readonly sysfs: PciSysfs,
    private readonly stepMs: number,
    /** Longest wait for a guest's PCI back end to settle before a detach (see settled()). */
    private readonly settleMs = 10_000,
    private readonly log?: Logger,
  ) {}

  /**
   * Waits until `guest`'s PCI back end is no longer in the middle of a hand-over. A detach while
   * the guest's pcifront still takes the device (a switch pressed within a second of the one that
   * gave it the GPU) took 12.6 s in the image and left the back end broken: every later attach to
   * that domain failed with "Backend /local/domain/0/backend/pci/<domid>/0 not ready". An HVM
   * guest has no such back end (its device model holds the device): nothing to wait for. Past
   * the bound the detach goes ahead anyway: a guest that never connects must still lose the GPU.
   */
  private async settled(guest: PciGuest, pollMs = 100, quiet = false): Promise<boolean> {
    const path = `/local/domain/0/backend/pci/${guest.domid}/0/state`;
    const deadline = Date.now() + this.settleMs;
    for (;;) {
      const r = await this.runner.run('xenstore-read', [path], this.stepMs);
      const state = Number(r.stdout.trim());
      if (r.code !== 0 || !PCI_BACKEND_BUSY.has(state)) return true;
      if (Date.now() >= deadline) {
        if (!quiet)
          this.log?.warn(
            `${guest.name}: its PCI back end is still in state ${state} after ${this.settleMs} ms; detaching anyway`,
          );
        return false;
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  /**
   * Domains (domid) whose PCI back end was seen settled after this daemon's last hot-plug into
   * them: nothing but a hot-plug (ours) moves a back end out of Connected, so their next detach
   * needs no xenstore-read first (issue 16: under TCG each read, a spawn of the daemon, took
   * 0.1-0.2 s inside the detach sub-step).
   */
  private readonly settledAfterAttach = new Set<number>();
  /** The background check after an attach, per domid, until it ends. */
  private readonly settling = new Map<number, Promise<void>>();

  /** After an attach: confirms, outside any move, that the guest's back end settles. */
  private confirmSettled(guest: PciGuest): void {
    const domid = guest.domid;
    const check: Promise<void> = this.settled(guest, 250, true)
      .then((ok) => {
        if (ok && this.settling.get(domid) === check) this.settledAfterAttach.add(domid);
      })
      .catch(() => undefined)
      .finally(() => {
        if (this.settling.get(domid) === check) this.settling.delete(domid);
      });
    this.settling.set(domid, check);
  }

  async guests(signal?: AbortSignal): Promise<PciGuest[]> {
    return parseXlListJson(await xl(this.runner, ['list', '-l'], this.stepMs, signal))
      .filter((d) => d.domid !== 0)
      .map((d) => ({ name: d.name, domid: d.domid, pci: d.pci }));
  }
  async detach(guest: PciGuest, bdf: string, force = false): Promise<void> {
    // A forced detach is for a guest that hangs: it is not waited for.
    if (!force) {
      await this.settling.get(guest.domid);
      if (!this.settledAfterAttach.has(guest.domid)) await this.settled(guest);
    }
    this.settledAfterAttach.delete(guest.domid);
    this.settling.delete(guest.domid);
    await xl(this.runner, ['pci-detach', ...(force ? ['-f'] : []), String(guest.domid), bdf], this.stepMs);
  }
  async attach(guest: PciGuest, bdf: string): Promise<void> {
    this.settledAfterAttach.delete(guest.domid);
    this.settling.delete(guest.domid);
    await xl(this.runner, ['pci-attach', String(guest.domid), bdf], this.stepMs);
    this.confirmSettled(guest);
  }
  async reset(bdf: string): Promise<'ok' | 'unsupported'> {
    return this.sysfs.reset(bdf);
  }
  isAssignable(bdf: string): boolean {
    return this.sysfs.isAssignable(bdf);
  }
  async assignableAdd(bdf: string): Promise<void> {
    await xl(this.runner, ['pci-assignable-add', bdf], this.stepMs);
  }
  async assignableRemove(bdf: string): Promise<void> {
    await xl(this.runner, ['pci-assignable-remove', '-r', bdf], this.stepMs);
  }
}

export interface XenGpuHandoffOptions {
  runner: XlRunner;
  log: Logger;
  sysfs?: PciSysfs;
  /** Bound of each xl step (default 45 s: one pci-attach took 26 s under TCG). */
  stepTimeoutMs?: number;
  /** One GPU shared with dom0 (the laptop); default false: a GPU only VMs hold. */
  sharedWithDom0?: boolean;
  /** dom0's display (shared rig; default: none to release). */
  display?: Dom0Display;
  /** How often the holder's domain is checked (default 2000 ms; 0 = never). */
  watchMs?: number;
  /** Longest wait for a PV guest's PCI back end to settle before a detach (default 10 s). */
  settleMs?: number;
  onHolderChanged?: (holder: string, why: string) => void;
  /** The Xen backend's running domains (XenBackend.runningDomains): see GpuHolderOptions. */
  runningDomains?: () => Array<{ name: string; domid: number }>;
}

/** The GPU hand-off on Xen (implements switch-transaction.ts's GpuHandoff through GpuHolder). */
export class XenGpuHandoff extends GpuHolder {
  constructor(opts: XenGpuHandoffOptions) {
    super({
      pci: new XenPciPassthrough(
        opts.runner,
        opts.sysfs ?? new RealPciSysfs(),
        opts.stepTimeoutMs ?? 45_000,
        opts.settleMs,
        opts.log,
      ),
      display: opts.display ?? new NoDom0Display(),
      sharedWithDom0: opts.sharedWithDom0 ?? false,
      log: opts.log,
      watchMs: opts.watchMs,
      onHolderChanged: opts.onHolderChanged,
      runningDomains: opts.runningDomains,
    });
  }
}
