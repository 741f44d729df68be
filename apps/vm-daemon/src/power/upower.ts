/**
 * The battery as the system's own service sees it: UPower's DisplayDevice (the composite of every
 * battery) and its OnBattery flag, read over the bus vm-daemon is on. UPower is followed by its
 * name owner and PropertiesChanged: every change re-reads the whole state, so a missed or partial
 * signal can never leave a stale mix. No UPower on the bus = no battery (a desktop, or tests).
 */
import { TypedEmitter } from '@bulkhead/common';
import type { BusClient, Unsubscribe } from '@bulkhead/dbus';
import { unwrap } from '@bulkhead/dbus';

export const UPOWER_NAME = 'org.freedesktop.UPower';
export const UPOWER_PATH = '/org/freedesktop/UPower';
export const DISPLAY_DEVICE_PATH = '/org/freedesktop/UPower/devices/DisplayDevice';
export const UPOWER_DEVICE_IFACE = 'org.freedesktop.UPower.Device';

/** UPower's Device.State numbers, in the words of Power1.Battery. */
const STATES = [
  'unknown',
  'charging',
  'discharging',
  'empty',
  'full',
  'pending-charge',
  'pending-discharge',
] as const;
export type BatteryState = (typeof STATES)[number];

export interface BatteryInfo {
  present: boolean;
  percentage: number;
  state: BatteryState;
  timeToEmptySec: number;
  timeToFullSec: number;
  onBattery: boolean;
}

export const NO_BATTERY: Readonly<BatteryInfo> = Object.freeze({
  present: false,
  percentage: 0,
  state: 'unknown',
  timeToEmptySec: 0,
  timeToFullSec: 0,
  onBattery: false,
});

/** A finite number within [lo, hi], else `fallback` (UPower is trusted, but a NaN never reaches the UI). */
function bounded(v: unknown, lo: number, hi: number, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
}

function asNumber(v: unknown): unknown {
  return typeof v === 'bigint' ? Number(v) : v;
}

export function batteryFrom(device: Record<string, unknown>, onBattery: unknown): BatteryInfo {
  const stateNo = asNumber(device.State);
  return {
    present: device.IsPresent === true,
    percentage: bounded(asNumber(device.Percentage), 0, 100, 0),
    state: typeof stateNo === 'number' && STATES[stateNo] ? STATES[stateNo] : 'unknown',
    timeToEmptySec: Math.round(bounded(asNumber(device.TimeToEmpty), 0, 1e9, 0)),
    timeToFullSec: Math.round(bounded(asNumber(device.TimeToFull), 0, 1e9, 0)),
    onBattery: onBattery === true,
  };
}

export class UPowerClient extends TypedEmitter<{ changed: [BatteryInfo] }> {
  private info: BatteryInfo = { ...NO_BATTERY };
  private readonly unsubscribes: Unsubscribe[] = [];
  private refreshing: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly client: BusClient,
    private readonly log: { warn(msg: string): void },
  ) {
    super();
  }

  get battery(): BatteryInfo {
    return this.info;
  }

  async start(): Promise<void> {
    const changed = () => void this.refresh();
    this.unsubscribes.push(
      await this.client.subscribe(
        { sender: UPOWER_NAME, interface: 'org.freedesktop.DBus.Properties', member: 'PropertiesChanged' },
        changed,
      ),
    );
    this.unsubscribes.push(await this.client.watchNameOwner(UPOWER_NAME, changed));
    await this.refresh();
  }

  async close(): Promise<void> {
    for (const u of this.unsubscribes.splice(0)) await u().catch(() => undefined);
  }

  /** Re-read everything; calls that arrive while one runs coalesce into one more read. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.again = false;
        const next = await this.read();
        if (JSON.stringify(next) !== JSON.stringify(this.info)) {
          this.info = next;
          this.emit('changed', next);
        }
      } while (this.again);
    })().finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private async read(): Promise<BatteryInfo> {
    const getAll = async (path: string, iface: string) => {
      const [dict] = await this.client.call(
        UPOWER_NAME,
        path,
        'org.freedesktop.DBus.Properties',
        'GetAll',
        's',
        [iface],
        { timeoutMs: 5000 },
      );
      return unwrap(dict) as Record<string, unknown>;
    };
    try {
      const device = await getAll(DISPLAY_DEVICE_PATH, UPOWER_DEVICE_IFACE);
      const upower = await getAll(UPOWER_PATH, 'org.freedesktop.UPower');
      return batteryFrom(device, upower.OnBattery);
    } catch (e) {
      const name = (e as { dbusName?: string }).dbusName ?? '';
      // No UPower on this bus is the normal case on a desktop or in a test; anything else is said.
      if (!/ServiceUnknown|NameHasNoOwner/.test(name))
        this.log.warn(`UPower: reading the battery failed: ${(e as Error).message}`);
      return { ...NO_BATTERY };
    }
  }
}
