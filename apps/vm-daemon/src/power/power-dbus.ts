/** Publishes the power component as org.bulkhead.Power1 at /org/bulkhead/Power1. */
import {
  POWER_PATH,
  type CallContext,
  type Power1Properties,
  type Power1Service,
  type VariantDict,
} from '@bulkhead/contract';
import { parseOptions, variant, type ExportedInterface, type ServiceHost } from '@bulkhead/dbus';
import type { PowerManager } from './power-manager';
import type { SuspendRecord } from './suspend-transaction';

export function lastSuspendDict(r: SuspendRecord | null): VariantDict {
  if (!r) return {};
  return {
    reason: variant('s', r.reason),
    outcome: variant('s', r.outcome),
    error: variant('s', r.error),
    started_usec: variant('t', r.startedUsec),
    duration_usec: variant('t', r.durationUsec),
    steps: variant('a(sss)', r.steps),
    not_back: variant('a(ss)', r.notBack),
  };
}

class PowerObject implements Power1Service {
  constructor(private readonly power: PowerManager) {}
  async Suspend(_ctx: CallContext, options: VariantDict): Promise<void> {
    parseOptions('Suspend', options, {});
    await this.power.suspend('request');
  }
}

export class PowerDbus {
  private iface!: ExportedInterface<'org.bulkhead.Power1'>;

  constructor(
    private readonly host: ServiceHost,
    private readonly power: PowerManager,
  ) {}

  properties(): Power1Properties {
    const p = this.power;
    const b = p.battery;
    return {
      Battery: {
        present: variant('b', b.present),
        percentage: variant('d', b.percentage),
        state: variant('s', b.state),
        time_to_empty_sec: variant('x', BigInt(b.timeToEmptySec)),
        time_to_full_sec: variant('x', BigInt(b.timeToFullSec)),
        on_battery: variant('b', b.onBattery),
        level: variant('s', p.batteryLevel),
      },
      Policy: {
        lid: variant('s', p.policy.lid),
        power_key: variant('s', p.policy.powerKey),
        critical: variant('s', p.policy.critical),
        low_percent: variant('u', p.policy.lowPercent),
        critical_percent: variant('u', p.policy.criticalPercent),
        file: variant('s', p.policyFile),
        error: variant('s', p.policyError ? `${p.policyError.field}: ${p.policyError.reason}` : ''),
      },
      Suspending: p.suspending,
      LastSuspend: lastSuspendDict(p.lastSuspend),
    };
  }

  export(): void {
    this.iface = this.host.export(POWER_PATH, 'org.bulkhead.Power1', new PowerObject(this.power), () =>
      this.properties(),
    );
    this.power.on('battery-changed', () => this.iface.propertiesChanged('Battery'));
    this.power.on('suspend-changed', () => this.iface.propertiesChanged('Suspending', 'LastSuspend'));
    this.power.on('progress', (step, detail) => this.iface.emit('SuspendProgress', step, detail));
  }
}
