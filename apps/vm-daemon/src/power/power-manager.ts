/**
 * The power component of vm-daemon: battery level against the policy, the power key and the lid
 * by the policy, and sleeps started by the system. Every way into a sleep goes through the one
 * SuspendTransaction, so a lid close, the power key, a critical battery, a switcher request and
 * `systemctl suspend` all lock the seat, wait for a switch and pause the VMs the same way.
 */
import { TypedEmitter } from '@bulkhead/common';
import type { ConfigError } from '../config';
import type { PowerPolicy } from './policy';
import type { SleepKind } from '@bulkhead/dbus';
import type { BatteryInfo } from './upower';
import type { SuspendReason, SuspendRecord, SuspendStep, SuspendTransaction } from './suspend-transaction';

export type BatteryLevel = 'normal' | 'low' | 'critical';

/** Where the battery stands against the policy; only a battery being drained is low or critical. */
export function batteryLevel(b: BatteryInfo, p: PowerPolicy): BatteryLevel {
  if (!b.present || !b.onBattery) return 'normal';
  if (b.percentage <= p.criticalPercent) return 'critical';
  if (b.percentage <= p.lowPercent) return 'low';
  return 'normal';
}

export interface BatterySource {
  readonly battery: BatteryInfo;
  on(event: 'changed', fn: (b: BatteryInfo) => void): unknown;
}

/** The system's own sleeps (logind's PrepareForSleep) and the delay lock that holds them back. */
export interface SystemSleep {
  onPrepareForSleep(fn: (start: boolean) => void): unknown;
  /** The delay inhibitor: taken while awake, released once ready to sleep. */
  delayLock?: { take(): void; release(): void };
}

export interface PowerManagerOptions {
  transaction: SuspendTransaction;
  battery: BatterySource;
  policy: PowerPolicy;
  policyFile: string;
  policyError: ConfigError | null;
  /** Input1.Lock, for a key whose policy is 'lock'. */
  lockSeat(): Promise<void>;
  system?: SystemSleep;
  log: { info(msg: string): void; warn(msg: string): void; error(msg: string): void };
}

export class PowerManager extends TypedEmitter<{
  'battery-changed': [];
  'suspend-changed': [];
  progress: [SuspendStep, string];
}> {
  private level: BatteryLevel;
  /** A critical battery acts once per descent: re-armed when the level leaves critical. */
  private criticalArmed = true;

  constructor(private readonly opts: PowerManagerOptions) {
    super();
    this.level = batteryLevel(opts.battery.battery, opts.policy);
    opts.transaction.on('progress', (step, detail) => this.emit('progress', step, detail));
    opts.transaction.on('changed', () => this.emit('suspend-changed'));
    opts.battery.on('changed', () => this.onBattery());
    const system = opts.system;
    if (system) {
      system.delayLock?.take();
      system.onPrepareForSleep((start) => void this.onSystemSleep(system, start));
    }
    if (this.level === 'critical') this.onBattery();
  }

  get policy(): PowerPolicy {
    return this.opts.policy;
  }
  get policyFile(): string {
    return this.opts.policyFile;
  }
  get policyError(): ConfigError | null {
    return this.opts.policyError;
  }
  get battery(): BatteryInfo {
    return this.opts.battery.battery;
  }
  get batteryLevel(): BatteryLevel {
    return this.level;
  }
  get suspending(): boolean {
    return this.opts.transaction.inProgress;
  }
  get lastSuspend(): SuspendRecord | null {
    return this.opts.transaction.last;
  }

  /** Suspend with the VMs (the switcher's request, a key, the battery). */
  suspend(reason: SuspendReason, kind: SleepKind = 'suspend'): Promise<SuspendRecord> {
    return this.opts.transaction.run(reason, kind);
  }

  /** The power key was pressed or the lid closed: do what the policy says. */
  async key(which: 'power-key' | 'lid'): Promise<void> {
    const action = which === 'lid' ? this.opts.policy.lid : this.opts.policy.powerKey;
    this.opts.log.info(`${which}: policy says ${action}`);
    try {
      if (action === 'suspend') await this.suspend(which);
      else if (action === 'lock') await this.opts.lockSeat();
    } catch (e) {
      // The record and SuspendProgress carry the failure to the person; the daemon carries on.
      this.opts.log.warn(`${which} → ${action} failed: ${(e as Error).message}`);
    }
  }

  private onBattery(): void {
    const level = batteryLevel(this.opts.battery.battery, this.opts.policy);
    const was = this.level;
    this.level = level;
    this.emit('battery-changed');
    if (level !== 'critical') {
      this.criticalArmed = true;
      return;
    }
    if (!this.criticalArmed) return;
    this.criticalArmed = false;
    const action = this.opts.policy.critical;
    const pct = this.opts.battery.battery.percentage;
    this.opts.log.warn(`battery critical (${pct}%, was ${was}): policy says ${action}`);
    if (action === 'nothing') return;
    this.suspend('critical-battery', action).catch((e) =>
      this.opts.log.error(`critical battery: ${action} failed: ${(e as Error).message}`),
    );
  }

  private async onSystemSleep(system: SystemSleep, start: boolean): Promise<void> {
    if (start) {
      // Ours (run() is at its sleep step: returns at once) or the system's (locks and pauses
      // first); either way logind may go ahead once this returns.
      await this.opts.transaction.prepareExternal();
      system.delayLock?.release();
    } else {
      system.delayLock?.take();
      await this.opts.transaction.wokeExternal();
    }
  }
}
