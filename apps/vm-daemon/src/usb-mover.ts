import { BUS_NAMES, USB_PATH, type Usb1Client } from '@bulkhead/contract';
import { BusCallError, type BusClient, type Unsubscribe } from '@bulkhead/dbus';
import {
  skipped,
  type StepResult,
  type SubSteps,
  type UsbMoveResult,
  type UsbMoved,
  type UsbMover,
} from './switch-transaction';

/** D-Bus errors that mean usb-daemon is not there (not started, restarting): nothing moved. */
const PEER_ABSENT_ERRORS = new Set([
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
]);

type Row = [device: string, holderBefore: string, outcome: string, durationUsec: bigint];

/**
 * The switch's move-usb step over D-Bus: usb-daemon moves the follow-focus devices
 * (Usb1.MoveFollowFocus) and answers when they are moved; the rollback gives them back
 * (Usb1.ReturnDevices). Each device is a sub-step in LastSwitch: usb-move:<id> (or
 * usb-move-failed:<id>: a device that could not move does not fail the switch; usb-daemon also
 * signals DeviceRejected for it). Without usb-daemon on the bus the step is skipped; its own
 * reaction to ActiveVm moves the devices once it is back.
 */
export class DbusUsbMover implements UsbMover {
  /** Whether usb-daemon owns its name (null until known): absent = skipped with no round trip. */
  private present: boolean | null = null;
  private unsubscribe: Unsubscribe | null = null;

  constructor(
    private readonly client: BusClient,
    private readonly timeoutMs = 10_000,
  ) {}

  /** Follow usb-daemon's name owner (NameOwnerChanged), so a switch without it asks nobody. */
  async start(): Promise<void> {
    this.unsubscribe = await this.client.watchNameOwner(BUS_NAMES.usb, (owner) => {
      this.present = owner !== null;
    });
  }

  async close(): Promise<void> {
    await this.unsubscribe?.();
  }

  async moveFollowFocus(_from: string, to: string): Promise<UsbMoveResult> {
    const rows = await this.call((usb) => usb.MoveFollowFocus(to, {}));
    if (rows === null) return skipped('usb-daemon is not on the bus');
    if (rows.length === 0) return skipped('no follow-focus USB device to move');
    return {
      skipped: false,
      substeps: subSteps(rows, 'usb-move', 'moved'),
      moved: rows.filter((r) => r[2] === 'moved').map((r): UsbMoved => [r[0], r[1]]),
    };
  }

  async returnDevices(moved: UsbMoved[]): Promise<StepResult> {
    if (moved.length === 0) return skipped('no USB device was moved');
    const rows = await this.call((usb) => usb.ReturnDevices(moved));
    if (rows === null) return skipped('usb-daemon is not on the bus');
    return { skipped: false, substeps: subSteps(rows, 'usb-return', 'returned') };
  }

  private async call(fn: (usb: Usb1Client) => Promise<Row[]>): Promise<Row[] | null> {
    if (this.present === false) return null;
    try {
      return await fn(
        this.client.proxy(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1', { timeoutMs: this.timeoutMs }),
      );
    } catch (e) {
      if (e instanceof BusCallError && PEER_ABSENT_ERRORS.has(e.dbusName)) return null;
      throw e;
    }
  }
}

function subSteps(rows: Row[], name: string, ok: string): SubSteps {
  return rows.map(([device, , outcome, us]): [string, bigint] => [
    outcome === ok ? `${name}:${device}` : `${name}-failed:${device}`,
    us,
  ]);
}
