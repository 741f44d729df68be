/**
 * GpuHolder: who holds the GPU — dom0 or one VM — and every move between them
 * (docs/gpu-handoff.md). No D-Bus here: the hypervisor's PCI operations (PciPassthrough) and
 * dom0's display (Dom0Display) come in through the constructor.
 *
 * The holder is read from the hypervisor (`guests()`): a function held by no guest is dom0's. The
 * last list, with this holder's own moves applied to it, is used again only while the backend's
 * running domains are exactly that list's (`runningDomains`: same names, same domids); a move on
 * it that fails before changing anything is tried once more on a fresh list. A hand-off, each step
 * recorded (also when it fails):
 *   release-display, assignable-add   shared rig, dom0 → VM: the kiosk lets go, pciback takes it
 *   detach                            from the VM holding it; going home, a refused or hung detach
 *                                     is forced (`forced-detach`): a lock must never leave a VM's
 *                                     picture on the screen
 *   reset                             every function that changes hands; a reset that fails stops
 *                                     the hand-off (GpuResetFailed): the GPU is never handed on
 *                                     carrying the previous holder's frames
 *   attach                            to the target
 *   assignable-remove, reclaim-display  shared rig, → dom0: the native driver binds, the kiosk starts
 * A failure before the GPU is home undoes the steps done in reverse (rollback-*); when the undo
 * fails too, the shared rig brings the GPU to dom0 (dom0 when in doubt). Going home never rolls
 * back into a VM: its failures are recorded and logged, and the switch to the switcher goes on.
 *
 * Coming home outside a switch: vmEnded (the holder's domain ended), comeHome (the active VM was
 * lost), and a watch of the holder's domain every `watchMs` while a VM holds the GPU. Every move
 * runs in one queue, so a death noticed during a switch is judged after it, on fresh state.
 */
import { BulkheadError, SWITCHER_PATH, vmIdFromPath, vmPath } from '@bulkhead/contract';
import type { Logger } from '@bulkhead/common';
import {
  skipped,
  type ErrorWithSubSteps,
  type GpuHandoff,
  type GpuSide,
  type StepResult,
  type SubSteps,
} from '../switch-transaction';
import type { Dom0Display } from './dom0-display';

/** A running guest domain and the PCI functions passed through to it. */
export interface PciGuest {
  name: string;
  domid: number;
  pci: string[];
}

/** The hypervisor's PCI pass-through operations (Xen: backend/xen/gpu-handoff.ts). */
export interface PciPassthrough {
  /** Every running guest (not dom0) and what it holds; `signal` cancels the listing. */
  guests(signal?: AbortSignal): Promise<PciGuest[]>;
  /** Take a function from a guest; `force` does not wait for the guest to let go. */
  detach(guest: PciGuest, bdf: string, force?: boolean): Promise<void>;
  attach(guest: PciGuest, bdf: string): Promise<void>;
  /** Reset the function; 'unsupported' when it has no reset; throws when the reset failed. */
  reset(bdf: string): Promise<'ok' | 'unsupported'>;
  /** True when the function is bound to the pass-through stub (pciback), not to a dom0 driver. */
  isAssignable(bdf: string): boolean;
  /** Unbind dom0's driver, bind the stub. */
  assignableAdd(bdf: string): Promise<void>;
  /** Unbind the stub, bind dom0's native driver again. */
  assignableRemove(bdf: string): Promise<void>;
}

/** One sub-step of a hand-off: 'detach 0000:00:03.0 from personal', its duration in µs, its outcome. */
export interface GpuStep {
  step:
    | 'release-display'
    | 'assignable-add'
    | 'detach'
    | 'forced-detach'
    | 'reset'
    | 'attach'
    | 'assignable-remove'
    | 'reclaim-display'
    | 'rollback-detach'
    | 'rollback-attach'
    | 'rollback-assignable-remove'
    | 'rollback-reclaim-display';
  /** The function, or '' for a display step. */
  bdf: string;
  /** The domain the step acts on (a VM id, or Domain-0). */
  domain: string;
  durationUsec: bigint;
  outcome: 'ok' | 'failed' | 'unsupported';
  detail: string;
}

export interface GpuHolderOptions {
  pci: PciPassthrough;
  display: Dom0Display;
  /**
   * true: one GPU, shared with dom0 (the laptop): dom0's native driver and kiosk hold it between
   * VMs. false: a second GPU only VMs hold; between them it waits in pciback.
   */
  sharedWithDom0: boolean;
  log: Logger;
  /** How often the holder's domain is checked while a VM holds the GPU (default 2000 ms; 0 = never). */
  watchMs?: number;
  /** The holder changed: a VM path, or '/' for dom0 (or nobody, in the second-GPU rig). */
  onHolderChanged?: (holder: string, why: string) => void;
  /**
   * The hypervisor backend's own record of the running domains (name and domid), kept in memory
   * from its creates and its domain-death watch. With it, a move reuses the last `guests()` list
   * when the backend's domains are exactly that list's (same names, same domids): `xl list -l`
   * was the slowest call of a VM → VM hand-off in the image (0.9-1.8 s of a 3.2 s move-gpu under
   * TCG, outside every timed sub-step), and the bare sequence has no such call. Without it, every
   * move lists afresh.
   */
  runningDomains?: () => Array<{ name: string; domid: number }>;
}

export const DOM0 = 'Domain-0';
const nowUsec = () => process.hrtime.bigint() / 1000n;
const uniq = (xs: string[]) => [...new Set(xs)];

/** The sub-steps as LastSwitch lists them: ["gpu-detach:personal:0000:00:03.0", µs], ... */
export const asSubSteps = (report: GpuStep[]): SubSteps =>
  report.map((r) => [`gpu-${r.step}:${r.domain}:${r.bdf}`, r.durationUsec]);

/** A move on a reused list of guests failed before it changed anything: list afresh, once. */
class RetryOnFreshList extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message);
  }
}

export class GpuHolder implements GpuHandoff {
  /** The sub-steps of the last move (also when it failed). */
  lastReport: GpuStep[] = [];
  /** The VM path holding the GPU, or '/' (dom0, or nobody in the second-GPU rig). */
  holder: string = SWITCHER_PATH;
  /** Every function this holder has been told about (prepare, hand-offs): what comes home. */
  private readonly known = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();
  private watchTimer: NodeJS.Timeout | null = null;
  /** A watch check is queued or running (the next tick skips). */
  private checkQueued = false;
  /**
   * The guests as the last list showed them, with what this holder's own moves changed since
   * (null: unknown, list afresh). `listGen` changes at each move's start and end: a list that
   * was running meanwhile (the watch's) is older than what the move did, and is not kept.
   */
  private lastGuests: PciGuest[] | null = null;
  private listGen = 0;
  /** Moves (or judgements) running in the queue now. */
  private running = 0;
  /** The holder watch's list in flight (outside the queue): a move cancels it (see move()). */
  private watchList: { since: number; abort: AbortController } | null = null;
  private closed = false;
  private readonly holderListeners: Array<(holder: string, why: string) => void> = [];

  constructor(private readonly opts: GpuHolderOptions) {
    if (opts.onHolderChanged) this.holderListeners.push(opts.onHolderChanged);
  }

  /** Calls `fn` whenever the holder changes (VmManager1.GpuHolder's PropertiesChanged). */
  onHolderChanged(fn: (holder: string, why: string) => void): void {
    this.holderListeners.push(fn);
  }

  get sharedWithDom0(): boolean {
    return this.opts.sharedWithDom0;
  }

  /** Runs `fn` after every move queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = async () => {
      this.running++;
      try {
        return await fn();
      } finally {
        this.running--;
      }
    };
    const r = this.queue.then(run, run);
    this.queue = r.catch(() => undefined);
    return r;
  }

  /**
   * Once at boot. Shared rig: a function parked in pciback and held by no guest goes back to
   * dom0's native driver and the kiosk is started. Second-GPU rig: every function is made
   * assignable once (dom0's drivers let go of it before any VM asks). Returns the steps.
   */
  prepare(pciFunctions: string[]): Promise<GpuStep[]> {
    return this.serial(async () => {
      const report: GpuStep[] = [];
      const fns = uniq(pciFunctions);
      for (const f of fns) this.known.add(f);
      const { pci } = this.opts;
      if (!this.opts.sharedWithDom0) {
        for (const bdf of fns) {
          if (pci.isAssignable(bdf)) continue;
          await this.record(report, 'assignable-add', bdf, DOM0, () => pci.assignableAdd(bdf));
          this.opts.log.info(`${bdf} is assignable (pciback)`);
        }
        this.setHolder(await this.readHolder(fns).catch(() => this.holder), 'found at start');
        return report;
      }
      const guests = await this.listGuests();
      const held = (bdf: string) => guests.some((g) => g.pci.includes(bdf));
      const home = fns.filter((bdf) => !held(bdf) && pci.isAssignable(bdf));
      // The daemon before this one stopped the kiosk for a hand-off and was killed before the GPU
      // left dom0's driver (or before it came back): nobody holds it, so the kiosk starts again —
      // else the screen stays dark, with no switcher and no lock screen.
      const dark = !fns.some(held) && (this.opts.display.releasedEarlier?.() ?? false);
      await this.bringHome(report, home, dark);
      this.setHolder(await this.readHolder(fns).catch(() => this.holder), 'found at start');
      return report;
    });
  }

  /** The switch's move-gpu step. */
  handOff(from: GpuSide, to: GpuSide): Promise<StepResult> {
    return this.serial(() => this.move(from, to));
  }

  /** The domain of `vm` (a VM path) ended: the GPU it held comes home. */
  vmEnded(vm: string, why: string): Promise<void> {
    return this.serial(async () => {
      if (this.holder !== vm) return;
      await this.home(`${vmIdFromPath(vm)} ended: ${why}`);
    });
  }

  /** The person is sent to the switcher outside a switch (the active VM was lost): the GPU comes home. */
  comeHome(why: string): Promise<void> {
    return this.serial(async () => {
      if (this.holder === SWITCHER_PATH) return;
      await this.home(why);
    });
  }

  /** Resolves when every move queued so far is over (tests; a clean stop). */
  async whenIdle(): Promise<void> {
    await this.queue;
  }

  close(): void {
    this.closed = true;
    this.stopWatch();
  }

  // ------------------------------------------------------------------ moves

  private async move(from: GpuSide, to: GpuSide, mayReuse = true): Promise<StepResult> {
    const report: GpuStep[] = [];
    this.lastReport = report;
    const fns = uniq([...from.pci, ...to.pci]);
    if (fns.length === 0) return skipped('no VM in this switch has a GPU');
    for (const f of fns) this.known.add(f);
    const toId = to.vm === SWITCHER_PATH ? null : vmIdFromPath(to.vm);
    // The holder watch's `xl list -l`, if one is running, is cancelled: beside the move's own xl
    // pci-detach/attach it slowed them (issue 16); the move's report says where the GPU went, and
    // the watch's next tick lists afresh.
    if (this.watchList) {
      this.opts.log.info(
        `GPU hand-off: cancelling the holder watch's xl list -l (running for ${Date.now() - this.watchList.since} ms) beside this move`,
      );
      this.watchList.abort.abort();
    }
    this.listGen++;
    const reused = mayReuse ? this.reusableGuests() : null;
    const guests = reused ?? (await this.listGuests());
    try {
      return await this.moveWith(report, guests, fns, toId, to, reused !== null);
    } catch (e) {
      this.lastGuests = null;
      // Nothing was done, on a reused list: a domain the backend has not yet seen go (its death
      // watch fires within moments) can make that list wrong. Once more, on a fresh one.
      if (!(e instanceof RetryOnFreshList)) throw e;
      this.opts.log.warn(
        `GPU hand-off on the last list of guests failed (${e.cause.message}); listing afresh and trying once more`,
      );
      const again = await this.move(from, to, false);
      if (!again.skipped) again.substeps = [...asSubSteps(report), ...(again.substeps ?? [])];
      return again;
    } finally {
      this.listGen++;
    }
  }

  /** The last list, when the backend's running domains are exactly its guests; else null. */
  private reusableGuests(): PciGuest[] | null {
    const running = this.opts.runningDomains?.();
    const last = this.lastGuests;
    if (!running || !last || running.length !== last.length) return null;
    for (const d of running) if (!last.some((g) => g.name === d.name && g.domid === d.domid)) return null;
    return last.map((g) => ({ ...g, pci: [...g.pci] }));
  }

  /** `guests()`, kept as the last list unless a move started or ended while it ran. */
  private async listGuests(signal?: AbortSignal): Promise<PciGuest[]> {
    const gen = this.listGen;
    const guests = await this.opts.pci.guests(signal);
    if (gen === this.listGen) this.lastGuests = guests.map((g) => ({ ...g, pci: [...g.pci] }));
    return guests;
  }

  private async moveWith(
    report: GpuStep[],
    guests: PciGuest[],
    fns: string[],
    toId: string | null,
    to: GpuSide,
    onReusedList: boolean,
  ): Promise<StepResult> {
    const { pci, sharedWithDom0: shared } = this.opts;
    const holderOf = (bdf: string) => guests.find((g) => g.pci.includes(bdf)) ?? null;
    const target = toId ? (guests.find((g) => g.name === toId) ?? null) : null;
    if (toId && to.pci.length && !target)
      throw new BulkheadError(
        'InvalidState',
        `GPU hand-off: ${toId} has no running domain to receive ${to.pci.join(', ')}`,
      );

    // What the target ends up with, and what nobody will hold (dom0's, in the shared rig).
    const wanted = target ? to.pci : [];
    const detach = fns
      .map((bdf) => ({ bdf, guest: holderOf(bdf) }))
      .filter((d): d is { bdf: string; guest: PciGuest } => d.guest !== null && d.guest.name !== toId);
    const attach = wanted.filter((bdf) => !target!.pci.includes(bdf));
    const give = shared ? attach.filter((bdf) => !pci.isAssignable(bdf)) : [];
    const home = shared
      ? fns.filter((bdf) => !wanted.includes(bdf) && (holderOf(bdf) !== null || pci.isAssignable(bdf)))
      : [];
    if (!detach.length && !attach.length && !give.length && !home.length)
      return skipped(
        toId && wanted.length
          ? `${toId} already holds its GPU`
          : shared
            ? 'no VM holds the GPU: dom0 has it'
            : 'no VM holds a GPU: dom0 has it',
      );

    const undo: Array<() => Promise<unknown>> = [];
    try {
      if (give.length) {
        await this.record(report, 'release-display', '', DOM0, () => this.opts.display.release());
        undo.push(() =>
          this.record(report, 'rollback-reclaim-display', '', DOM0, () => this.opts.display.reclaim()),
        );
        for (const bdf of give) {
          await this.record(report, 'assignable-add', bdf, DOM0, () => pci.assignableAdd(bdf));
          undo.push(() =>
            this.record(report, 'rollback-assignable-remove', bdf, DOM0, () => pci.assignableRemove(bdf)),
          );
        }
      }
      for (const { bdf, guest } of detach) {
        // Going home (the lock, Ctrl+0) a guest that refuses or hangs loses the GPU anyway.
        await this.detach(report, guest, bdf, !wanted.includes(bdf));
        undo.push(() =>
          this.record(report, 'rollback-attach', bdf, guest.name, () => pci.attach(guest, bdf)),
        );
      }
      // Reset before every new holder. Going home, a failed reset is logged, not fatal: dom0's
      // driver re-initialises the device (shared rig), or the next attach resets it again.
      for (const bdf of uniq([...detach.map((d) => d.bdf), ...give, ...attach])) {
        if (wanted.includes(bdf)) await this.reset(report, bdf);
        else
          await this.reset(report, bdf).catch((e) =>
            this.opts.log.error(`GPU hand-off: ${(e as Error).message}; going on, it is not handed on`),
          );
      }
      for (const bdf of attach) {
        await this.record(report, 'attach', bdf, target!.name, () => pci.attach(target!, bdf));
        undo.push(() =>
          this.record(report, 'rollback-detach', bdf, target!.name, () => pci.detach(target!, bdf)),
        );
      }
    } catch (e) {
      if (onReusedList && undo.length === 0) {
        this.logReport(report);
        throw new RetryOnFreshList(e instanceof Error ? e : new Error(String(e)));
      }
      throw await this.rollback(report, undo, e, detach, fns);
    }
    // The point of no return: what is home stays home (a lock never rolls back into a VM).
    await this.bringHome(report, home);
    this.logReport(report);
    // What this move did, on the list it used: the next move needs no `xl list -l` for it.
    this.lastGuests = guests.map((g) => ({
      ...g,
      pci: [
        ...g.pci.filter((p) => !detach.some((d) => d.bdf === p && d.guest.domid === g.domid)),
        ...(target && g.domid === target.domid ? attach : []),
      ],
    }));
    this.setHolder(target && wanted.length ? to.vm : SWITCHER_PATH, `switch to ${to.vm}`);
    return { skipped: false, substeps: asSubSteps(report) };
  }

  private async rollback(
    report: GpuStep[],
    undo: Array<() => Promise<unknown>>,
    e: unknown,
    detach: Array<{ bdf: string; guest: PciGuest }>,
    fns: string[],
  ): Promise<ErrorWithSubSteps> {
    const failed = report[report.length - 1];
    const rollbackErrors: string[] = [];
    for (const u of undo.reverse()) {
      try {
        await u();
      } catch (ue) {
        rollbackErrors.push((ue as Error).message);
      }
    }
    const named = e instanceof BulkheadError ? e.errorName : null;
    const name =
      named === 'Timeout' || named === 'GpuResetFailed' || named === 'InvalidState' ? named : 'BackendFailed';
    const where = failed
      ? `${failed.step} ${failed.bdf || 'display'} ${failed.step === 'attach' ? 'to' : 'from'} ${failed.domain}`
      : 'GPU hand-off';
    const back = detach.length
      ? `; ${detach.map((d) => d.bdf).join(', ')} ${rollbackErrors.length ? 'could NOT be returned' : 'returned'} to ${uniq(detach.map((d) => d.guest.name)).join(', ')}`
      : '';
    let inDoubt = '';
    if (rollbackErrors.length && this.opts.sharedWithDom0) {
      // Dom0 when in doubt: whatever no guest holds now goes to dom0's driver and the kiosk.
      try {
        const guests = await this.opts.pci.guests();
        await this.bringHome(
          report,
          fns.filter((bdf) => !guests.some((g) => g.pci.includes(bdf)) && this.opts.pci.isAssignable(bdf)),
        );
        inDoubt = '; the GPU was brought to the Control Domain';
      } catch (he) {
        inDoubt = `; bringing the GPU to the Control Domain failed too: ${(he as Error).message}`;
      }
    }
    this.logReport(report);
    this.setHolder(await this.readHolder(fns).catch(() => this.holder), 'hand-off failed');
    const err: ErrorWithSubSteps = new BulkheadError(
      name,
      `GPU hand-off failed at ${where}: ${(e as Error).message}${back}${rollbackErrors.length ? ` (rollback: ${rollbackErrors.join('; ')})` : ''}${inDoubt}`,
    );
    err.substeps = asSubSteps(report);
    return err;
  }

  /** Everything this holder knows about comes home (outside a switch): never refused. */
  private async home(why: string): Promise<void> {
    const report: GpuStep[] = [];
    this.lastReport = report;
    const { pci } = this.opts;
    const fns = [...this.known];
    this.opts.log.warn(`GPU comes home to the Control Domain: ${why}`);
    this.listGen++;
    this.lastGuests = null;
    let guests: PciGuest[] = [];
    try {
      guests = await pci.guests();
    } catch (e) {
      this.opts.log.error(`GPU home: cannot list the guests (${(e as Error).message}); going on`);
    }
    /** Functions a guest still holds after a forced detach failed. */
    const stuck = new Set<string>();
    for (const bdf of fns) {
      const g = guests.find((x) => x.pci.includes(bdf));
      if (!g) continue;
      try {
        await this.detach(report, g, bdf, true);
      } catch (e) {
        stuck.add(bdf);
        this.opts.log.error(`GPU home: ${bdf} stays with ${g.name}: ${(e as Error).message}`);
      }
    }
    // What left a guest now, and a dead holder's functions (libxl put them back in pciback):
    // reset before dom0's driver takes them. A failed reset is logged: dom0's driver
    // re-initialises the device, and dom0 is where it can be used.
    for (const bdf of fns) {
      if (stuck.has(bdf) || !pci.isAssignable(bdf)) continue;
      try {
        await this.reset(report, bdf);
      } catch (e) {
        this.opts.log.error(`GPU home: ${(e as Error).message}; dom0's driver re-initialises it`);
      }
    }
    await this.bringHome(
      report,
      fns.filter((bdf) => !stuck.has(bdf) && pci.isAssignable(bdf)),
    );
    this.logReport(report);
    this.listGen++;
    this.setHolder(await this.readHolder(fns).catch(() => SWITCHER_PATH), why);
  }

  /** Shared rig: the functions go back to dom0's native driver and the kiosk draws again. Never throws. */
  private async bringHome(report: GpuStep[], fns: string[], reclaimAnyway = false): Promise<void> {
    if (!this.opts.sharedWithDom0 || (fns.length === 0 && !reclaimAnyway)) return;
    for (const bdf of fns) {
      try {
        await this.record(report, 'assignable-remove', bdf, DOM0, () => this.opts.pci.assignableRemove(bdf));
      } catch (e) {
        this.opts.log.error(
          `GPU home: ${bdf} stays in pciback, dom0 cannot draw on it: ${(e as Error).message}`,
        );
      }
    }
    try {
      await this.record(report, 'reclaim-display', '', DOM0, () => this.opts.display.reclaim());
    } catch (e) {
      // systemd restarts the kiosk (Restart=always); the hand-off has nothing better to do.
      this.opts.log.error(`GPU home: the kiosk did not start: ${(e as Error).message}`);
    }
  }

  private async detach(
    report: GpuStep[],
    guest: PciGuest,
    bdf: string,
    forceOnFailure: boolean,
  ): Promise<void> {
    const { pci } = this.opts;
    try {
      await this.record(report, 'detach', bdf, guest.name, () => pci.detach(guest, bdf));
    } catch (e) {
      if (!forceOnFailure) throw e;
      this.opts.log.warn(`${guest.name} did not let go of ${bdf} (${(e as Error).message}): forcing`);
      await this.record(report, 'forced-detach', bdf, guest.name, () => pci.detach(guest, bdf, true));
    }
  }

  private async reset(report: GpuStep[], bdf: string): Promise<void> {
    const s = nowUsec();
    let outcome: GpuStep['outcome'];
    try {
      outcome = (await this.opts.pci.reset(bdf)) === 'ok' ? 'ok' : 'unsupported';
    } catch (e) {
      const detail = (e as Error).message;
      report.push({
        step: 'reset',
        bdf,
        domain: DOM0,
        durationUsec: nowUsec() - s,
        outcome: 'failed',
        detail,
      });
      throw new BulkheadError(
        'GpuResetFailed',
        `the reset of ${bdf} failed (${detail}): not handed on with the previous holder's picture`,
      );
    }
    report.push({ step: 'reset', bdf, domain: DOM0, durationUsec: nowUsec() - s, outcome, detail: '' });
  }

  /** Runs one step and records it (also when it fails, then rethrows). */
  private async record(
    report: GpuStep[],
    step: GpuStep['step'],
    bdf: string,
    domain: string,
    fn: () => Promise<unknown>,
  ): Promise<void> {
    const s = nowUsec();
    try {
      await fn();
      report.push({ step, bdf, domain, durationUsec: nowUsec() - s, outcome: 'ok', detail: '' });
    } catch (e) {
      report.push({
        step,
        bdf,
        domain,
        durationUsec: nowUsec() - s,
        outcome: 'failed',
        detail: (e as Error).message,
      });
      throw e;
    }
  }

  private logReport(report: GpuStep[]): void {
    this.opts.log.info(
      `GPU hand-off: ${report.map((r) => `${r.step} ${r.bdf} ${r.domain} ${r.outcome} ${Number(r.durationUsec) / 1000}ms`).join(', ')}`,
    );
  }

  // ------------------------------------------------------------------ holder and watch

  /** The VM path of the guest holding any of `fns`, or '/'. */
  private async readHolder(fns: string[]): Promise<string> {
    const guests = await this.listGuests();
    const g = guests.find((x) => x.pci.some((p) => fns.includes(p)));
    return g ? vmPath(g.name) : SWITCHER_PATH;
  }

  private setHolder(holder: string, why: string): void {
    if (holder === SWITCHER_PATH) this.stopWatch();
    else this.startWatch();
    if (holder === this.holder) return;
    this.holder = holder;
    this.opts.log.info(
      `the GPU is held by ${holder === SWITCHER_PATH ? 'the Control Domain' : vmIdFromPath(holder)} (${why})`,
    );
    for (const fn of this.holderListeners) fn(holder, why);
  }

  private startWatch(): void {
    const ms = this.opts.watchMs ?? 2000;
    if (this.watchTimer || ms <= 0 || this.closed) return;
    this.watchTimer = setInterval(() => {
      // One check at a time: `xl list -l` can take longer than the interval under load, and
      // checks piling up in the queue each delayed the next switch's move (1.1-2.5 s in the image).
      if (this.checkQueued) return;
      // Nor during a move: an `xl list -l` beside its xl pci-detach/attach slowed them (the
      // watch lists outside the queue); the move's own report says where the GPU went.
      if (this.running) return;
      this.checkQueued = true;
      void this.checkHolder().finally(() => (this.checkQueued = false));
    }, ms);
    this.watchTimer.unref?.();
  }

  private stopWatch(): void {
    if (this.watchTimer) clearInterval(this.watchTimer);
    this.watchTimer = null;
  }

  /**
   * The watch: a holder whose domain is gone (or no longer holds the GPU) sends it home. The list
   * is taken outside the move queue, so a switch pressed meanwhile never waits for it; it is
   * judged in the queue, and not at all when a move ran since it was taken (the next tick
   * judges on a fresh list). Its list is the next move's, when nothing changed meanwhile.
   */
  private async checkHolder(): Promise<void> {
    if (this.holder === SWITCHER_PATH || this.closed) return;
    const gen = this.listGen;
    let guests: PciGuest[];
    const watchList = { since: Date.now(), abort: new AbortController() };
    this.watchList = watchList;
    try {
      guests = await this.listGuests(watchList.abort.signal);
    } catch (e) {
      if (!watchList.abort.signal.aborted)
        this.opts.log.warn(`GPU watch: cannot list the guests: ${(e as Error).message}`);
      return;
    } finally {
      if (this.watchList === watchList) this.watchList = null;
    }
    if (watchList.abort.signal.aborted) return;
    await this.serial(async () => {
      if (this.holder === SWITCHER_PATH || this.closed || gen !== this.listGen) return;
      const id = vmIdFromPath(this.holder);
      const g = guests.find((x) => x.name === id);
      if (g && g.pci.some((p) => this.known.has(p))) return;
      await this.home(g ? `${id} no longer holds the GPU` : `${id}'s domain is gone`);
    });
  }
}
