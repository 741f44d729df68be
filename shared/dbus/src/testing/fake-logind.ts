/**
 * fake-logind: a stand-in for systemd-logind on a private test bus, speaking its real name, path
 * and members (org.freedesktop.login1.Manager: Suspend/Hibernate, PrepareForSleep true → asleep →
 * false on wake()). Used by vm-daemon's power tests and input-daemon's sleep guard test.
 * Inhibitor locks are not modelled: the daemons hold them through systemd-inhibit (logind.ts).
 */
import '@bulkhead/contract';
import * as dbus from 'dbus-next';
import { connectBus } from '../connect';
import { LOGIN1_MANAGER, LOGIN1_NAME, LOGIN1_PATH } from '../logind';

const { Interface } = dbus.interface;

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
