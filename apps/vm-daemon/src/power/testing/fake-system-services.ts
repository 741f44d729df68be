/**
 * Stand-ins for the system's power services on a private test bus, speaking their real D-Bus
 * names, paths and members: fake-UPower (DisplayDevice + OnBattery, PropertiesChanged like
 * upowerd) and fake-logind (Suspend/Hibernate, PrepareForSleep true → asleep → false on wake();
 * shared with input-daemon's tests, in @bulkhead/dbus's testing/).
 */
import * as dbus from 'dbus-next';
import { connectBus } from '@bulkhead/dbus';
import { DISPLAY_DEVICE_PATH, UPOWER_DEVICE_IFACE, UPOWER_NAME, UPOWER_PATH } from '../upower';

const { Interface, ACCESS_READ } = dbus.interface;

class DeviceIface extends Interface {
  Percentage = 80;
  State = 2; // discharging
  TimeToEmpty = 3600n;
  TimeToFull = 0n;
  IsPresent = true;
  Type = 2; // battery
}
DeviceIface.configureMembers({
  properties: {
    Percentage: { signature: 'd', access: ACCESS_READ },
    State: { signature: 'u', access: ACCESS_READ },
    TimeToEmpty: { signature: 'x', access: ACCESS_READ },
    TimeToFull: { signature: 'x', access: ACCESS_READ },
    IsPresent: { signature: 'b', access: ACCESS_READ },
    Type: { signature: 'u', access: ACCESS_READ },
  },
});

class UPowerIface extends Interface {
  OnBattery = true;
}
UPowerIface.configureMembers({ properties: { OnBattery: { signature: 'b', access: ACCESS_READ } } });

export interface FakeBattery {
  percentage?: number;
  /** UPower's State number: 1 charging, 2 discharging, 4 full … */
  state?: number;
  timeToEmptySec?: number;
  onBattery?: boolean;
}

export class FakeUPower {
  private constructor(
    private readonly bus: dbus.MessageBus,
    private readonly device: DeviceIface,
    private readonly upower: UPowerIface,
  ) {}

  static async start(address: string, initial: FakeBattery = {}): Promise<FakeUPower> {
    const bus = await connectBus(address);
    const f = new FakeUPower(
      bus,
      new DeviceIface(UPOWER_DEVICE_IFACE),
      new UPowerIface('org.freedesktop.UPower'),
    );
    f.apply(initial, false);
    bus.export(DISPLAY_DEVICE_PATH, f.device);
    bus.export(UPOWER_PATH, f.upower);
    await bus.requestName(UPOWER_NAME, 0);
    return f;
  }

  /** Change the battery as upowerd would: new values, then PropertiesChanged. */
  set(b: FakeBattery): void {
    this.apply(b, true);
  }

  private apply(b: FakeBattery, emit: boolean): void {
    const changed: Record<string, unknown> = {};
    if (b.percentage !== undefined) changed.Percentage = this.device.Percentage = b.percentage;
    if (b.state !== undefined) changed.State = this.device.State = b.state;
    if (b.timeToEmptySec !== undefined)
      changed.TimeToEmpty = this.device.TimeToEmpty = BigInt(b.timeToEmptySec);
    if (emit && Object.keys(changed).length) Interface.emitPropertiesChanged(this.device, changed, []);
    if (b.onBattery !== undefined) {
      this.upower.OnBattery = b.onBattery;
      if (emit) Interface.emitPropertiesChanged(this.upower, { OnBattery: b.onBattery }, []);
    }
  }

  stop(): void {
    this.bus.disconnect();
  }
}

export { FakeLogind } from '@bulkhead/dbus/dist/testing/fake-logind';
