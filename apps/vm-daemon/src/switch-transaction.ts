/**
 * THE SWITCH TRANSACTION: this is where a hotkey becomes a switch.
 *
 *   input-daemon sees Ctrl+N → VmManager1.SwitchToSlot(N) → VmManager.switchTo() → SwitchTransaction.run()
 *
 * One switch runs at a time (begin() throws SwitchInProgress, as xenmgr's `switching` flag does:
 * overlapping switches let the shown VM and the keyboard's VM diverge). VmManager keeps requests
 * made meanwhile: the last one runs next, the ones it replaced get Superseded (issue 17).
 * Steps, in order:
 *   starting-vm   start the target when it is stopped (SwitchProgress while it boots)
 *   freeze-input  Input1.Freeze: held keys/buttons are released in the old VM; skipped when
 *                 input-daemon is not on the bus (demo, unit tests)
 *   move-gpu      GpuHandoff: no-op unless a VM has a GPU; the hand-off's own sub-steps
 *                 (gpu-detach:…, gpu-attach:…, also of a failed or undone hand-off) follow it
 *                 in LastSwitch.steps
 *   focus-input   Input1.SetFocus(target, {qmp_socket})
 *   move-usb      UsbMover: usb-daemon moves the follow-focus USB devices to the target and
 *                 answers when done (Usb1.MoveFollowFocus); one sub-step per device
 *                 (usb-move:<id>); undone with Usb1.ReturnDevices (rollback:usb-return:<id>)
 *   publish       ActiveVm + PropertiesChanged, state file
 * A failing step undoes every earlier step in reverse (input is re-focused on the previous
 * target) and the caller gets the step's named error. Each step's duration goes to LastSwitch.
 */
import { BulkheadError, SWITCHER_PATH, type ErrorName, type LastSwitchOutcome } from '@bulkhead/contract';
import type { Logger, SwitchProgressStep, SwitchStep } from '@bulkhead/common';

/** A step of the transaction: defined once, in @bulkhead/common's SWITCH_STEPS. */
export type StepName = SwitchStep;
/** Parts of a step, (name, duration in µs), e.g. a GPU hand-off's gpu-detach / gpu-attach. */
export type SubSteps = Array<[string, bigint]>;
/**
 * 'done' (with optional sub-steps, appended to LastSwitch.steps right after the step itself), or
 * 'skipped' with why (the step had nothing to do or its peer is absent).
 */
export type StepResult = { skipped: false; substeps?: SubSteps } | { skipped: true; why: string };
/** An error thrown by a step may carry the sub-steps done before it failed (they go to LastSwitch too). */
export type ErrorWithSubSteps = Error & { substeps?: SubSteps };

/** The well-formed (string, bigint) pairs of an untrusted `substeps` value. */
function subStepsOf(v: unknown): SubSteps {
  if (!Array.isArray(v)) return [];
  return v.filter(
    (x): x is [string, bigint] => Array.isArray(x) && typeof x[0] === 'string' && typeof x[1] === 'bigint',
  );
}
export const DONE: StepResult = { skipped: false };
export const skipped = (why: string): StepResult => ({ skipped: true, why });

/** input-daemon as the switch sees it. `target` is a VM object path or '/' (the switcher). */
export interface InputFocus {
  /**
   * Freeze input for a switch to `target` (in `slot`). input-daemon refuses it with Locked when the
   * seat is locked and `target` is a VM: decided there, in the same queue as Lock, so no switch
   * slips in. The slot tells a hotkey's hold whether this is the switch it asked for (what was
   * typed after Ctrl+N goes to slot N's VM, not to a click's switch running before it).
   */
  freeze(target?: string, slot?: number): Promise<StepResult>;
  /**
   * Throws Locked when the seat is locked (one round trip). Asked before a switch starts a
   * stopped VM, so that a refused switch does not boot anything.
   */
  assertUnlocked?(): Promise<void>;
  setFocus(target: string, qmpSocket: string): Promise<StepResult>;
  /**
   * Lets input-daemon connect to a VM's QEMU before its first switch (Input1.Prepare): called when
   * a VM starts running, outside any switch. Best effort: a failure only costs the first switch
   * the connect.
   */
  prepare?(target: string, qmpSocket: string): Promise<void>;
}

/** Who holds a GPU in a switch: a VM path and its PCI functions (empty when it has none). */
export interface GpuSide {
  vm: string;
  pci: string[];
}

/**
 * Moves a passed-through GPU from one VM to another. The real hand-off (unbind, FLR, rebind,
 * seconds of work with its own timeout and rollback) comes in a later issue.
 */
export interface GpuHandoff {
  handOff(from: GpuSide, to: GpuSide): Promise<StepResult>;
}

export class NoGpuHandoff implements GpuHandoff {
  async handOff(from: GpuSide, to: GpuSide): Promise<StepResult> {
    if (from.pci.length === 0 && to.pci.length === 0) return skipped('no VM in this switch has a GPU');
    return skipped('GPU hand-off is not implemented yet: the GPU stays where it is');
  }
}

/** A device a follow-focus move took, and the holder it had ('/' = the Control Domain). */
export type UsbMoved = [device: string, holderBefore: string];

/** move-usb's result: the step's result, and what moved (for the undo). */
export type UsbMoveResult = StepResult & { moved?: UsbMoved[] };

/** Moves follow-focus USB devices to the new target, inside the switch (usb-daemon, issue 17). */
export interface UsbMover {
  moveFollowFocus(from: string, to: string): Promise<UsbMoveResult>;
  /** The undo: each moved device back to the holder it had. */
  returnDevices(moved: UsbMoved[]): Promise<StepResult>;
}

export class NoUsbMover implements UsbMover {
  async moveFollowFocus(): Promise<UsbMoveResult> {
    return skipped('no USB daemon in this setup');
  }
  async returnDevices(): Promise<StepResult> {
    return skipped('no USB daemon in this setup');
  }
}

/**
 * Called after each step that succeeded, before the next one runs. Tests slow a switch down or
 * stop it at a point with it (VmManagerOptions.afterSwitchStep); production has none.
 */
export type AfterStepHook = (step: StepName, target: string) => Promise<void>;

/** What the transaction needs from the VM manager. */
export interface SwitchHost {
  /** Starts `target` when stopped; returns skipped when it already runs. Throws InvalidState when it cannot (crashed/paused?). */
  ensureRunning(
    target: string,
    progress: (detail: string) => void,
    beforeStart?: () => Promise<void>,
  ): Promise<StepResult>;
  inputQmpSocket(target: string): string;
  /** The slot of `target` ('/' is 0), or undefined when unknown. */
  slotOf?(target: string): number | undefined;
  gpuOf(target: string): GpuSide;
  publish(target: string): void;
  progress(target: string, step: SwitchProgressStep, detail: string): void;
}

export interface SwitchRecord {
  from: string;
  target: string;
  outcome: LastSwitchOutcome;
  /** Named error (org.bulkhead.Error.X) or ''. */
  error: string;
  message: string;
  startedUsec: bigint;
  durationUsec: bigint;
  steps: Array<[string, bigint]>;
  skipped: string[];
}

export interface SwitchDeps {
  input: InputFocus;
  gpu: GpuHandoff;
  usb: UsbMover;
  log: Logger;
  afterStep?: AfterStepHook;
  /** Per-step time limits; starting-vm gets longer (a TCG boot). */
  stepTimeoutMs?: Partial<Record<StepName, number>>;
}

const DEFAULT_TIMEOUTS: Record<StepName, number> = {
  'starting-vm': 120_000,
  'freeze-input': 5_000,
  'move-gpu': 60_000,
  'focus-input': 5_000,
  'move-usb': 10_000,
  publish: 5_000,
};

const nowUsec = (): bigint => process.hrtime.bigint() / 1000n;

/** A step still running after this long is announced with SwitchProgress (see step()). */
export const PROGRESS_AFTER_MS = 50;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new BulkheadError('Timeout', `${what} did not finish within ${ms} ms`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

function asNamed(step: string, e: unknown): BulkheadError {
  if (e instanceof BulkheadError) return new BulkheadError(e.errorName, `${step}: ${e.message}`);
  const msg = (e as Error)?.message ?? String(e);
  return new BulkheadError('BackendFailed', `${step}: ${msg}`);
}

export class SwitchTransaction {
  private running = false;
  private readonly timeouts: Record<StepName, number>;

  constructor(
    private readonly host: SwitchHost,
    private readonly deps: SwitchDeps,
  ) {
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...deps.stepTimeoutMs };
  }

  get inProgress(): boolean {
    return this.running;
  }

  /** Claim the single switch slot; throws SwitchInProgress when taken. Call run() right after. */
  begin(target: string): void {
    if (this.running)
      throw new BulkheadError(
        'SwitchInProgress',
        `a switch is already running; cannot switch to ${target} now`,
      );
    this.running = true;
  }

  /**
   * Run a switch from `from` to `target` (both object paths; '/' = switcher). Always resolves
   * with the record; `record.outcome !== 'ok'` carries the named error the caller should throw.
   */
  async run(from: string, target: string): Promise<SwitchRecord> {
    if (!this.running) this.begin(target);
    const { input, gpu, usb, log } = this.deps;
    const host = this.host;
    const startedWall = BigInt(Date.now()) * 1000n;
    const t0 = nowUsec();
    const steps: Array<[string, bigint]> = [];
    const skippedSteps: string[] = [];
    const undo: Array<{ step: StepName; fn: () => Promise<unknown> }> = [];
    let currentStep: StepName = 'starting-vm';

    const fromSocket = from === SWITCHER_PATH ? '' : host.inputQmpSocket(from);
    const step = async (name: StepName, fn: () => Promise<StepResult>, undoFn?: () => Promise<unknown>) => {
      currentStep = name;
      // Announced only once the step has run for PROGRESS_AFTER_MS: a switch between two running
      // VMs is over in a few ms, and a signal per step (plus one per skipped step) woke the bus
      // and every listener ~10 times per switch for a card nobody could read (issue 17).
      let announced = false;
      const announce = setTimeout(() => {
        announced = true;
        host.progress(target, name, '');
      }, PROGRESS_AFTER_MS);
      const s = nowUsec();
      let r: StepResult;
      try {
        r = await withTimeout(fn(), this.timeouts[name], name);
      } catch (e) {
        steps.push([name, nowUsec() - s]);
        steps.push(...subStepsOf((e as ErrorWithSubSteps | null)?.substeps));
        throw e;
      } finally {
        clearTimeout(announce);
      }
      steps.push([name, nowUsec() - s]);
      if (!r.skipped) steps.push(...subStepsOf(r.substeps));
      if (r.skipped) {
        skippedSteps.push(name);
        if (announced) host.progress(target, name, `skipped: ${r.why}`);
        log.debug(`switch ${from} -> ${target}: ${name} skipped (${r.why})`);
      }
      if (undoFn) undo.push({ step: name, fn: undoFn });
      await this.deps.afterStep?.(name, target);
    };

    const record = (outcome: SwitchRecord['outcome'], err: BulkheadError | null): SwitchRecord => ({
      from,
      target,
      outcome,
      error: err ? err.dbusName : '',
      message: err?.message ?? '',
      startedUsec: startedWall,
      durationUsec: nowUsec() - t0,
      steps,
      skipped: skippedSteps,
    });

    try {
      await step('starting-vm', () =>
        target === SWITCHER_PATH
          ? Promise.resolve(skipped('the switcher always runs'))
          : host.ensureRunning(
              target,
              (d) => host.progress(target, 'starting-vm', d),
              () => input.assertUnlocked?.() ?? Promise.resolve(),
            ),
      );
      await step(
        'freeze-input',
        () => input.freeze(target, host.slotOf?.(target)),
        () => input.setFocus(from, fromSocket),
      );
      const gFrom = host.gpuOf(from);
      const gTo = host.gpuOf(target);
      await step(
        'move-gpu',
        () => gpu.handOff(gFrom, gTo),
        () => gpu.handOff(gTo, gFrom),
      );
      await step(
        'focus-input',
        () => input.setFocus(target, target === SWITCHER_PATH ? '' : host.inputQmpSocket(target)),
        () => input.setFocus(from, fromSocket),
      );
      let usbMoved: UsbMoved[] = [];
      await step(
        'move-usb',
        async () => {
          const r = await usb.moveFollowFocus(from, target);
          usbMoved = r.moved ?? [];
          return r;
        },
        () => usb.returnDevices(usbMoved),
      );
      await step('publish', async () => {
        host.publish(target);
        return DONE;
      });
      host.progress(target, 'done', `switched in ${Number(nowUsec() - t0) / 1000} ms`);
      const rec = record('ok', null);
      log.info(
        `switch ${from} -> ${target}: ok in ${rec.durationUsec} us [${steps.map(([n, d]) => `${n}=${d}us`).join(' ')}]` +
          (skippedSteps.length ? ` skipped: ${skippedSteps.join(' ')}` : ''),
      );
      return rec;
    } catch (e) {
      const failedStep = currentStep;
      const err = asNamed(failedStep, e);
      log.warn(
        `switch ${from} -> ${target} failed at ${failedStep}: ${err.message}; rolling back ${undo.length} step(s)`,
      );
      if (undo.length === 0) {
        host.progress(target, 'failed', err.message);
        return record('failed', err);
      }
      host.progress(target, 'rollback', `undoing ${undo.map((u) => u.step).join(', ')}`);
      const rs = nowUsec();
      let rollbackError: string | null = null;
      // Undo in reverse; re-focusing the previous target once is enough for both input steps.
      let refocused = false;
      for (const u of undo.reverse()) {
        if (u.step === 'freeze-input' || u.step === 'focus-input') {
          if (refocused) continue;
          refocused = true;
        }
        try {
          const r = await withTimeout(u.fn(), 10_000, `undo ${u.step}`);
          steps.push(
            ...subStepsOf((r as { substeps?: unknown } | undefined)?.substeps).map(
              ([n, d]): [string, bigint] => [`rollback:${n}`, d],
            ),
          );
        } catch (ue) {
          steps.push(
            ...subStepsOf((ue as ErrorWithSubSteps | null)?.substeps).map(([n, d]): [string, bigint] => [
              `rollback:${n}`,
              d,
            ]),
          );
          rollbackError = `undo ${u.step}: ${(ue as Error).message}`;
          log.error(`switch ${from} -> ${target}: rollback failed: ${rollbackError}`);
        }
      }
      steps.push(['rollback', nowUsec() - rs]);
      if (rollbackError) {
        const failed = new BulkheadError(
          err.errorName as ErrorName,
          `${err.message}; rollback also failed: ${rollbackError}`,
        );
        host.progress(target, 'failed', failed.message);
        return record('failed', failed);
      }
      host.progress(target, 'failed', `${err.message} (rolled back to ${from})`);
      return record('rolled-back', err);
    } finally {
      this.running = false;
    }
  }
}
