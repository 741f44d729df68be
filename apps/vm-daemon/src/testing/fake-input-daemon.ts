import {
  BUS_NAMES,
  BulkheadError,
  INPUT_PATH,
  SWITCHER_PATH,
  type CallContext,
  type Input1Properties,
  type Input1Service,
  type VariantDict,
} from '@bulkhead/contract';
import { ServiceHost, connectBus, unwrap, type ExportedInterface, type MessageBus } from '@bulkhead/dbus';

/**
 * A stand-in for input-daemon on a test bus: records Freeze/SetFocus, and fails SetFocus on
 * demand (to test the switch's rollback).
 */
export class FakeInputDaemon implements Input1Service {
  readonly calls: Array<{ method: string; target?: string; options: Record<string, unknown> }> = [];
  focused = SWITCHER_PATH;
  frozen = false;
  /** SetFocus to this target fails with BackendFailed (null = never). */
  failSetFocusTo: string | null = null;
  private bus!: MessageBus;
  private iface!: ExportedInterface<'org.bulkhead.Input1'>;

  static async start(address: string): Promise<FakeInputDaemon> {
    const d = new FakeInputDaemon();
    d.bus = await connectBus(address);
    const host = new ServiceHost(d.bus, { log: () => undefined });
    d.iface = host.export(INPUT_PATH, 'org.bulkhead.Input1', d, () => d.properties());
    await host.requestName(BUS_NAMES.input);
    return d;
  }

  properties(): Input1Properties {
    return {
      FocusedTarget: this.focused,
      Frozen: this.frozen,
      Locked: false,
      Seat: 'virtual',
      Devices: [],
      Hotkeys: [],
      LastHotkeyError: '',
    };
  }

  Freeze(_ctx: CallContext, options: VariantDict): void {
    this.calls.push({ method: 'Freeze', options: unwrap(options) as Record<string, unknown> });
    this.frozen = true;
  }
  SetFocus(_ctx: CallContext, target: string, options: VariantDict): void {
    this.calls.push({ method: 'SetFocus', target, options: unwrap(options) as Record<string, unknown> });
    if (this.failSetFocusTo === target)
      throw new BulkheadError('BackendFailed', `FakeInputDaemon refuses focus on ${target}`);
    this.focused = target;
    this.frozen = false;
    this.iface.propertiesChanged('FocusedTarget', 'Frozen');
  }
  Prepare(_ctx: CallContext, target: string, options: VariantDict): void {
    this.calls.push({ method: 'Prepare', target, options: unwrap(options) as Record<string, unknown> });
  }
  Lock(): void {}
  Unlock(): void {}
  InjectEvents(): void {
    throw new BulkheadError('NotSupported', 'FakeInputDaemon has no seat');
  }

  stop(): void {
    this.bus.disconnect();
  }
}
