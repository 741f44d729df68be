/**
 * The switcher's mirror of vm-daemon's power component (org.bulkhead.Power1 at
 * /org/bulkhead/Power1): battery, whether a suspend runs and its step, the last suspend's report.
 * Followed by vm-daemon's bus name with its own tracker; vm-daemon's up/down status is reported by
 * the VM manager's mirror, not twice.
 */
import { BUS_NAMES, POWER_PATH, decodeBattery, decodeLastSuspend } from '@bulkhead/contract';
import type { TypedEmitter } from '@bulkhead/common';
import { unwrap, type BusClient, type Unsubscribe } from '@bulkhead/dbus';
import type { BatteryModel, PowerModel, SuspendReportModel } from '../common/model';
import type { DaemonStateEvents } from './daemon-state';
import { decodeDictOrNull, type Props } from './mirror-props';
import type { DaemonMirror } from './name-owner-tracker';

const POWER1 = 'org.bulkhead.Power1';

/** What the switcher shows with no battery (none, no UPower, or a Battery it could not read). */
const NO_BATTERY: Readonly<BatteryModel> = Object.freeze({
  present: false,
  percentage: 0,
  state: 'unknown',
  timeToEmptySec: 0,
  onBattery: false,
  level: 'normal',
});

/** LastSuspend (a{sv}, typed by the contract) as the switcher's report; null before the first suspend. */
export function suspendReport(d: unknown): SuspendReportModel | null {
  const r = decodeDictOrNull('LastSuspend', decodeLastSuspend, d);
  if (!r) return null;
  return {
    reason: r.reason,
    outcome: r.outcome,
    error: r.error,
    startedMs: Math.round(Number(r.started_usec) / 1000),
    steps: r.steps,
    notBack: r.not_back,
  };
}

/** Battery (a{sv}, typed by the contract) as the switcher's model; no battery when it cannot be read. */
export function batteryModel(d: unknown): BatteryModel {
  const b = decodeDictOrNull('Battery', decodeBattery, d);
  if (!b) return { ...NO_BATTERY };
  return {
    present: b.present,
    percentage: b.percentage,
    state: b.state,
    timeToEmptySec: Number(b.time_to_empty_sec),
    onBattery: b.on_battery,
    level: b.level,
  };
}

export class PowerMirror implements DaemonMirror {
  /** null while vm-daemon is down (or runs without a power component). */
  power: PowerModel | null = null;

  constructor(
    private readonly client: BusClient,
    private readonly events: TypedEmitter<DaemonStateEvents>,
  ) {}

  async connect(subs: Unsubscribe[]): Promise<void> {
    const dest = BUS_NAMES.vmManager;
    subs.push(
      await this.client.onSignal(dest, { path: POWER_PATH }, POWER1, 'SuspendProgress', ([step, detail]) => {
        if (!this.power) return;
        this.power.progress = { step, detail };
        this.events.emit('changed');
      }),
      await this.client.subscribe(
        {
          sender: dest,
          path: POWER_PATH,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'PropertiesChanged',
        },
        (m) => {
          if (m.body[0] !== POWER1 || !this.power) return;
          this.apply(unwrap(m.body[1]) as Props);
          this.events.emit('changed');
        },
      ),
    );
    let props: Props;
    try {
      props = (await this.client.getAll(dest, POWER_PATH, POWER1)) as unknown as Props;
    } catch (e) {
      // A vm-daemon without a power component (an older build, a test double): no battery, no
      // suspend, nothing to retry. Anything else is a failure the tracker retries.
      if (/Unknown(Object|Interface|Method|Property)/.test((e as { dbusName?: string }).dbusName ?? ''))
        return;
      throw e;
    }
    this.power = {
      battery: { ...NO_BATTERY },
      suspending: false,
      progress: null,
      lastSuspend: null,
    };
    this.apply(props);
  }

  private apply(p: Props): void {
    const m = this.power as PowerModel;
    if ('Battery' in p) m.battery = batteryModel(p.Battery);
    if ('Suspending' in p) {
      m.suspending = p.Suspending === true;
      if (!m.suspending) m.progress = null;
    }
    if ('LastSuspend' in p) m.lastSuspend = suspendReport(p.LastSuspend);
  }

  clear(): void {
    this.power = null;
  }
}
