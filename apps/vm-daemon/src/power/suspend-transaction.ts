/**
 * Suspend and resume as one transaction with every VM:
 *
 *   lock-seat → wait-switch → pause-vms → sleep → resume-vms → done
 *
 * Locking the seat first is also what stops new switches: while locked, input-daemon's Freeze
 * refuses any switch to a VM (Locked), in the same queue as Lock, so none slips in after it. A
 * switch already running is waited for before a VM is touched, so nothing sleeps under a switch.
 * If a step before the sleep fails, every VM this transaction paused is resumed and the error
 * names the step: the VMs are left running, never lost. After waking, each VM it paused is
 * resumed; any that does not come back is reported (LastSuspend.not_back), not retried forever.
 * The seat stays locked: the person unlocks on the lock screen.
 *
 * The same steps serve a sleep somebody else started (logind's PrepareForSleep(true), e.g. from
 * `systemctl suspend`): `prepareExternal` runs the steps up to the sleep while vm-daemon's delay
 * inhibitor holds logind back, `wokeExternal` runs the rest.
 */
import { BulkheadError } from '@bulkhead/contract';
import { TypedEmitter } from '@bulkhead/common';
import type { SleepKind } from '@bulkhead/dbus';

export const SUSPEND_STEPS = [
  'lock-seat',
  'wait-switch',
  'pause-vms',
  'sleep',
  'resume-vms',
  'done',
  'failed',
] as const;
export type SuspendStep = (typeof SUSPEND_STEPS)[number];

export type SuspendReason = 'request' | 'power-key' | 'lid' | 'critical-battery' | 'system';

export interface SuspendRecord {
  reason: SuspendReason;
  outcome: 'ok' | 'failed' | 'incomplete';
  error: string;
  startedUsec: bigint;
  durationUsec: bigint;
  steps: Array<[string, string, string]>;
  /** VMs paused for the sleep that did not run again afterwards: (id, why). */
  notBack: Array<[string, string]>;
}

/** What the transaction needs of the rest of vm-daemon (the manager, input-daemon, logind). */
export interface SuspendHost {
  /** Input1.Lock: the seat shows the lock screen and refuses switches to VMs until unlocked. */
  lockSeat(): Promise<void>;
  /** True while a switch transaction runs. */
  switchInProgress(): boolean;
  /** Resolves when no switch runs (at once if none does). */
  waitSwitchIdle(): Promise<void>;
  /** Ids of the VMs running now. */
  runningVms(): string[];
  pauseVm(id: string): Promise<void>;
  resumeVm(id: string): Promise<void>;
  /** The VM's state now ('running', 'paused', 'crashed', …), or null when it no longer exists. */
  vmState(id: string): string | null;
  /** Sleep and resolve after waking; reject when the sleep did not happen. */
  sleep(kind: SleepKind): Promise<void>;
}

/** How long a running switch may take before a suspend gives up waiting for it. */
export const SWITCH_WAIT_MS = 60_000;

interface Running {
  reason: SuspendReason;
  started: bigint;
  startedUsec: bigint;
  steps: Array<[string, string, string]>;
  paused: string[];
}

export class SuspendTransaction extends TypedEmitter<{
  progress: [SuspendStep, string];
  changed: [];
}> {
  private current: Running | null = null;
  last: SuspendRecord | null = null;

  constructor(
    private readonly host: SuspendHost,
    private readonly log: { info(msg: string): void; warn(msg: string): void; error(msg: string): void },
    private readonly switchWaitMs = SWITCH_WAIT_MS,
  ) {
    super();
  }

  get inProgress(): boolean {
    return this.current !== null;
  }

  /** The whole transaction, sleep included; resolves after waking, rejects (VMs running) on failure. */
  async run(reason: SuspendReason, kind: SleepKind = 'suspend'): Promise<SuspendRecord> {
    const t = this.begin(reason);
    try {
      await this.before(t);
    } catch (e) {
      throw await this.fail(t, e);
    }
    try {
      await this.step(t, 'sleep', async () => {
        await this.host.sleep(kind);
        return `woke from ${kind}`;
      });
    } catch (e) {
      throw await this.fail(t, e);
    }
    return this.after(t);
  }

  /**
   * A sleep started elsewhere is imminent: lock, wait for a switch, pause. Never throws: on a
   * failure the VMs are resumed and the record says why (the sleep itself is logind's to make).
   */
  async prepareExternal(): Promise<void> {
    if (this.current) return; // our own run() asked for this sleep
    const t = this.begin('system');
    try {
      await this.before(t);
      t.steps.push(['sleep', 'ok', 'sleep started by the system (logind)']);
      this.emit('progress', 'sleep', 'sleeping');
    } catch (e) {
      await this.fail(t, e).catch(() => undefined);
    }
  }

  /** The machine woke from a sleep started elsewhere: resume what prepareExternal paused. */
  async wokeExternal(): Promise<void> {
    const t = this.current;
    if (!t || t.reason !== 'system') return;
    await this.after(t);
  }

  private begin(reason: SuspendReason): Running {
    if (this.current)
      throw new BulkheadError('InvalidState', `a suspend (${this.current.reason}) is already in progress`);
    const t: Running = {
      reason,
      started: process.hrtime.bigint(),
      startedUsec: BigInt(Date.now()) * 1000n,
      steps: [],
      paused: [],
    };
    this.current = t;
    this.emit('changed');
    this.log.info(`suspend (${reason}): starting`);
    return t;
  }

  private async before(t: Running): Promise<void> {
    await this.step(t, 'lock-seat', async () => {
      await this.host.lockSeat();
      return 'seat locked';
    });
    await this.step(t, 'wait-switch', async () => {
      if (!this.host.switchInProgress()) return 'no switch running';
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.host.waitSwitchIdle(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new BulkheadError(
                  'Timeout',
                  `a switch was still running after ${this.switchWaitMs / 1000} s`,
                ),
              ),
            this.switchWaitMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      return 'waited for the running switch';
    });
    await this.step(t, 'pause-vms', async () => {
      const ids = this.host.runningVms();
      for (const id of ids) {
        this.emit('progress', 'pause-vms', `pausing ${id}`);
        try {
          await this.host.pauseVm(id);
        } catch (e) {
          throw new BulkheadError(
            e instanceof BulkheadError ? e.errorName : 'BackendFailed',
            `pausing ${id} failed: ${(e as Error).message}`,
          );
        }
        t.paused.push(id);
      }
      return ids.length ? `paused ${ids.join(', ')}` : 'no VM running';
    });
  }

  private async after(t: Running): Promise<SuspendRecord> {
    const notBack: Array<[string, string]> = [];
    await this.step(t, 'resume-vms', async () => {
      for (const id of t.paused) {
        this.emit('progress', 'resume-vms', `resuming ${id}`);
        const why = await this.resumeOne(id);
        if (why) notBack.push([id, why]);
      }
      return notBack.length
        ? `${notBack.length} of ${t.paused.length} VM(s) did not come back`
        : t.paused.length
          ? `resumed ${t.paused.join(', ')}`
          : 'no VM to resume';
    }).catch(() => undefined); // resumeOne never throws; kept for symmetry with step()
    const outcome = notBack.length ? 'incomplete' : 'ok';
    const error = notBack.map(([id, why]) => `${id}: ${why}`).join('; ');
    const rec = this.finish(t, outcome, error, notBack);
    this.emit(
      'progress',
      'done',
      outcome === 'ok' ? 'back from sleep' : `back from sleep; not back: ${error}`,
    );
    return rec;
  }

  /** Resume one VM paused for the sleep; the reason it is not back, or '' when it runs. */
  private async resumeOne(id: string): Promise<string> {
    const state = this.host.vmState(id);
    if (state === null) return 'its definition was removed while asleep';
    if (state === 'running') return '';
    if (state !== 'paused') return `it is ${state}`;
    try {
      await this.host.resumeVm(id);
      return '';
    } catch (e) {
      return `resume failed: ${(e as Error).message}`;
    }
  }

  /** A step before waking failed: resume whatever was paused, record, and return the error to throw. */
  private async fail(t: Running, e: unknown): Promise<Error> {
    const err = e instanceof Error ? e : new Error(String(e));
    const failedStep = t.steps[t.steps.length - 1]?.[0] ?? 'lock-seat';
    const notBack: Array<[string, string]> = [];
    for (const id of t.paused) {
      const why = await this.resumeOne(id);
      if (why) notBack.push([id, why]);
    }
    const error = `${failedStep}: ${err.message}`;
    this.log.error(`suspend (${t.reason}) failed at ${error}; ${t.paused.length} paused VM(s) resumed`);
    this.finish(t, 'failed', error, notBack);
    this.emit('progress', 'failed', `did not suspend: ${error}`);
    if (err instanceof BulkheadError) return new BulkheadError(err.errorName, error);
    return new BulkheadError('BackendFailed', error);
  }

  private finish(
    t: Running,
    outcome: SuspendRecord['outcome'],
    error: string,
    notBack: Array<[string, string]>,
  ): SuspendRecord {
    const rec: SuspendRecord = {
      reason: t.reason,
      outcome,
      error,
      startedUsec: t.startedUsec,
      durationUsec: (process.hrtime.bigint() - t.started) / 1000n,
      steps: t.steps,
      notBack,
    };
    this.last = rec;
    this.current = null;
    this.log.info(`suspend (${t.reason}): ${outcome}${error ? ` (${error})` : ''}`);
    this.emit('changed');
    return rec;
  }

  private async step(t: Running, step: SuspendStep, fn: () => Promise<string>): Promise<void> {
    this.emit('progress', step, stepLabel(step));
    t.steps.push([step, 'running', '']);
    const entry = t.steps[t.steps.length - 1];
    try {
      const detail = await fn();
      entry[1] = 'ok';
      entry[2] = detail;
    } catch (e) {
      entry[1] = 'failed';
      entry[2] = (e as Error).message;
      throw e;
    }
  }
}

function stepLabel(step: SuspendStep): string {
  switch (step) {
    case 'lock-seat':
      return 'locking the seat';
    case 'wait-switch':
      return 'waiting for a switch to finish';
    case 'pause-vms':
      return 'pausing the VMs';
    case 'sleep':
      return 'sleeping';
    case 'resume-vms':
      return 'resuming the VMs';
    default:
      return step;
  }
}
