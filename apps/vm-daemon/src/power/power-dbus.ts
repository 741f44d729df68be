/** Publishes the power component as org.bulkhead.Power1 at /org/bulkhead/Power1. */
import {
  POWER_PATH,
  encodeBattery,
  encodeLastSuspend,
  encodePolicy,
  type CallContext,
  type Power1Properties,
  type Power1Service,
  type VariantDict,
} from '@bulkhead/contract';
import { parseOptions, type ExportedInterface, type ServiceHost } from '@bulkhead/dbus';
import type { PowerManager } from './power-manager';
import type { SuspendRecord } from './suspend-transaction';

/** LastSuspend as the contract's a{sv} (typed by the XML's org.bulkhead.Dict); empty before the first suspend. */
export function lastSuspendDict(r: SuspendRecord | null): VariantDict {
  if (!r) return {};
  return encodeLastSuspend({
    reason: r.reason,
    outcome: r.outcome,
    error: r.error,
    started_usec: r.startedUsec,
    duration_usec: r.durationUsec,
    steps: r.steps,
    not_back: r.notBack,
  });
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
      Battery: encodeBattery({
        present: b.present,
        percentage: b.percentage,
        state: b.state,
        time_to_empty_sec: BigInt(b.timeToEmptySec),
        time_to_full_sec: BigInt(b.timeToFullSec),
        on_battery: b.onBattery,
        level: p.batteryLevel,
      }),
      Policy: encodePolicy({
        lid: p.policy.lid,
        power_key: p.policy.powerKey,
        critical: p.policy.critical,
        low_percent: p.policy.lowPercent,
        critical_percent: p.policy.criticalPercent,
        file: p.policyFile,
        error: p.policyError ? `${p.policyError.field}: ${p.policyError.reason}` : '',
      }),
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
