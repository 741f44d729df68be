import {
  BUS_NAMES,
  SWITCHER_PATH,
  USB_PATH,
  type CallContext,
  type Usb1Properties,
  type Usb1Service,
  type VariantDict,
} from '@bulkhead/contract';
import { ServiceHost, connectBus, type MessageBus } from '@bulkhead/dbus';

/**
 * A stand-in for usb-daemon on a test bus (no USB device exists on the test host): follow-focus
 * devices with a holder each ('/' = the Control Domain), moved by MoveFollowFocus and given back
 * by ReturnDevices, every call recorded.
 */
export class FakeUsbDaemon implements Usb1Service {
  /** device id -> holder. */
  readonly holders = new Map<string, string>();
  readonly calls: string[] = [];
  private bus!: MessageBus;

  static async start(address: string, devices: Record<string, string>): Promise<FakeUsbDaemon> {
    const d = new FakeUsbDaemon();
    for (const [id, holder] of Object.entries(devices)) d.holders.set(id, holder);
    d.bus = await connectBus(address);
    const host = new ServiceHost(d.bus, { log: () => undefined });
    host.export(USB_PATH, 'org.bulkhead.Usb1', d, () => d.properties());
    await host.requestName(BUS_NAMES.usb);
    return d;
  }

  properties(): Usb1Properties {
    return { Rules: '{"rules":[]}', PendingPrompts: [] };
  }

  AnswerPrompt(): void {}
  SetRules(): void {}
  MoveFollowFocus(
    _ctx: CallContext,
    vm: string,
    _options: VariantDict,
  ): Array<[string, string, string, bigint]> {
    this.calls.push(`MoveFollowFocus ${vm}`);
    if (vm === SWITCHER_PATH) return [];
    const rows: Array<[string, string, string, bigint]> = [];
    for (const [id, holder] of this.holders) {
      if (holder === vm) continue;
      this.holders.set(id, vm);
      rows.push([id, holder, 'moved', 1000n]);
    }
    return rows;
  }
  ReturnDevices(
    _ctx: CallContext,
    devices: Array<[string, string]>,
  ): Array<[string, string, string, bigint]> {
    this.calls.push(`ReturnDevices ${devices.map(([id, h]) => `${id}->${h}`).join(' ')}`);
    return devices.map(([id, holder]) => {
      const before = this.holders.get(id) ?? SWITCHER_PATH;
      this.holders.set(id, holder);
      return [id, before, 'returned', 1000n];
    });
  }

  stop(): void {
    this.bus.disconnect();
  }
}
