/**
 * Stand-ins for the system's power services on a private test bus, speaking their real D-Bus
 * names, paths and members: fake-UPower (DisplayDevice + OnBattery, PropertiesChanged like
 * upowerd) and fake-logind (Suspend/Hibernate, PrepareForSleep true → asleep → false on wake()).
 */
import * as dbus from 'dbus-next';
import { connectBus } from '@bulkhead/dbus';
import { DISPLAY_DEVICE_PATH, UPOWER_DEVICE_IFACE, UPOWER_NAME, UPOWER_PATH } from '../upower';
import { LOGIN1_MANAGER, LOGIN1_NAME, LOGIN1_PATH } from '../logind';

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

class LogindIface extends Interface {
  owner!: FakeLogind;
  Suspend(interactive: boolean): void {
    this.owner.requested('suspend', interactive);
  }
  Hibernate(interactive: boolean): void {
    this.owner.requested('hibernate', interactive);
  }
  PrepareForSleep(start: boolean): boolean {
    return start;
  }
}
LogindIface.configureMembers({
  methods: { Suspend: { inSignature: 'b' }, Hibernate: { inSignature: 'b' } },
  signals: { PrepareForSleep: { signature: 'b' } },
});

export class FakeLogind {
  /** Every sleep requested over the bus, in order. */
  readonly requests: Array<'suspend' | 'hibernate'> = [];
  /** The next Suspend/Hibernate fails with this D-Bus error message (then cleared). */
  refuseNext: string | null = null;
  asleep = false;
  private sleptListeners: Array<() => void> = [];
  private iface!: LogindIface;
  private bus!: dbus.MessageBus;

  static async start(address: string): Promise<FakeLogind> {
    const f = new FakeLogind();
    f.bus = await connectBus(address);
    f.iface = new LogindIface(LOGIN1_MANAGER);
    f.iface.owner = f;
    f.bus.export(LOGIN1_PATH, f.iface);
    await f.bus.requestName(LOGIN1_NAME, 0);
    return f;
  }

  requested(kind: 'suspend' | 'hibernate', _interactive: boolean): void {
    if (this.refuseNext !== null) {
      const why = this.refuseNext;
      this.refuseNext = null;
      throw new dbus.DBusError('org.freedesktop.login1.OperationInProgress', why);
    }
    this.requests.push(kind);
    // As logind: the reply first, then PrepareForSleep(true) to every listener.
    setImmediate(() => this.goToSleep());
  }

  /** A sleep the system started by itself (logind's own lid/key handling, systemctl suspend). */
  goToSleep(): void {
    this.asleep = true;
    this.iface.PrepareForSleep(true);
    for (const fn of this.sleptListeners.splice(0)) fn();
  }

  /** Resolves once the machine is (or already was) asleep. */
  waitAsleep(): Promise<void> {
    return this.asleep ? Promise.resolve() : new Promise((r) => this.sleptListeners.push(r));
  }

  wake(): void {
    this.asleep = false;
    this.iface.PrepareForSleep(false);
  }

  stop(): void {
    this.bus.disconnect();
  }
}
