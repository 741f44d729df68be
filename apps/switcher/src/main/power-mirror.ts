/**
 * The switcher's mirror of vm-daemon's power component (org.bulkhead.Power1 at
 * /org/bulkhead/Power1): battery, whether a suspend runs and its step, the last suspend's report.
 * Followed by vm-daemon's bus name with its own tracker; vm-daemon's up/down status is reported by
 * the VM manager's mirror, not twice.
 */
import { BUS_NAMES, POWER_PATH } from '@bulkhead/contract';
import type { TypedEmitter } from '@bulkhead/common';
import { unwrap, type BusClient, type Unsubscribe } from '@bulkhead/dbus';
import type { PowerModel, SuspendReportModel } from '../common/model';
import type { DaemonStateEvents } from './daemon-state';
import type { Props } from './mirror-props';
import type { DaemonMirror } from './name-owner-tracker';

const POWER1 = 'org.bulkhead.Power1';

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : 0);

export function suspendReport(d: Record<string, unknown>): SuspendReportModel | null {
  if (!d || typeof d.outcome !== 'string') return null;
  return {
    reason: str(d.reason),
    outcome: str(d.outcome),
    error: str(d.error),
    startedMs: Math.round(num(d.started_usec) / 1000),
    steps: Array.isArray(d.steps)
      ? (d.steps as Array<[string, string, string]>).map((s) => [str(s[0]), str(s[1]), str(s[2])])
      : [],
    notBack: Array.isArray(d.not_back)
      ? (d.not_back as Array<[string, string]>).map((s) => [str(s[0]), str(s[1])])
      : [],
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
      battery: {
        present: false,
        percentage: 0,
        state: 'unknown',
        timeToEmptySec: 0,
        onBattery: false,
        level: 'normal',
      },
      suspending: false,
      progress: null,
      lastSuspend: null,
    };
    this.apply(props);
  }

  private apply(p: Props): void {
    const m = this.power as PowerModel;
    if ('Battery' in p) {
      const b = (p.Battery ?? {}) as Record<string, unknown>;
      m.battery = {
        present: b.present === true,
        percentage: num(b.percentage),
        state: str(b.state) || 'unknown',
        timeToEmptySec: num(b.time_to_empty_sec),
        onBattery: b.on_battery === true,
        level: b.level === 'low' || b.level === 'critical' ? b.level : 'normal',
      };
    }
    if ('Suspending' in p) {
      m.suspending = p.Suspending === true;
      if (!m.suspending) m.progress = null;
    }
    if ('LastSuspend' in p) m.lastSuspend = suspendReport((p.LastSuspend ?? {}) as Record<string, unknown>);
  }

  clear(): void {
    this.power = null;
  }
}
