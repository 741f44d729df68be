/**
 * usb-daemon's bus adapter: exports org.bulkhead.Usb1 (with its ObjectManager) and one
 * org.bulkhead.UsbDevice1 object per device, and maps them onto the assignment core
 * (assignment.ts), which decides everything and knows nothing of D-Bus.
 */
import {
  USB_PATH,
  usbDevicePath,
  type CallContext,
  type UsbDevice1Properties,
  type UsbDevice1Service,
  type Usb1Service,
  type VariantDict,
} from '@bulkhead/contract';
import { parseOptions, type ExportedInterface, type ServiceHost } from '@bulkhead/dbus';
import { UsbAssignment, type UsbAssignmentOptions } from './assignment';
import { allClasses, displayName } from './device';
import type { DeviceEntry } from './device-table';

export interface UsbServiceOptions extends UsbAssignmentOptions {
  host: ServiceHost;
}

export class UsbService {
  readonly core: UsbAssignment;
  private readonly host: ServiceHost;
  private usbObject: ExportedInterface<'org.bulkhead.Usb1'> | null = null;
  private readonly deviceObjects = new Map<string, ExportedInterface<'org.bulkhead.UsbDevice1'>>();

  constructor(opts: UsbServiceOptions) {
    this.host = opts.host;
    const core = (this.core = new UsbAssignment(opts));
    core.events.on('deviceAdded', (entry) => this.exportDevice(entry));
    core.events.on('deviceForgotten', (entry) => {
      this.deviceObjects.delete(entry.id);
      this.host.unexport(usbDevicePath(entry.id));
    });
    core.events.on('deviceChanged', (entry, changed) =>
      this.deviceObjects.get(entry.id)?.propertiesChanged(...changed),
    );
    core.events.on('deviceRejected', (entry, reason) =>
      this.usbObject?.emit('DeviceRejected', usbDevicePath(entry.id), reason),
    );
    core.events.on('attachRequested', (id, entry, vm) =>
      this.usbObject?.emit('AttachRequested', id, usbDevicePath(entry.id), vm),
    );
    core.events.on('rulesChanged', () => this.usbObject?.propertiesChanged('Rules'));
    core.events.on('promptsChanged', () => this.usbObject?.propertiesChanged('PendingPrompts'));
  }

  /** Export Usb1, then start the core (which enumerates devices and rebuilds assignments). */
  async start(): Promise<void> {
    const core = this.core;
    this.host.addObjectManager(USB_PATH);
    const service: Usb1Service = {
      AnswerPrompt: (_ctx, id, answer) => core.answerPrompt(id, answer),
      SetRules: (_ctx, text) => core.setRules(text),
      MoveFollowFocus: (_ctx, vm, options) => {
        parseOptions('MoveFollowFocus', options, {});
        return core.moveFollowFocus(vm);
      },
      ReturnDevices: (_ctx, devices) => core.returnDevices(devices),
    };
    this.usbObject = this.host.export(USB_PATH, 'org.bulkhead.Usb1', service, () => ({
      Rules: core.rulesText(),
      PendingPrompts: core
        .pendingPrompts()
        .map(
          (p) =>
            [p.id, core.devices.get(p.deviceId) ? usbDevicePath(p.deviceId) : '/', p.vm] as [
              number,
              string,
              string,
            ],
        ),
    }));
    await core.start();
  }

  stop(): Promise<void> {
    return this.core.stop();
  }

  private exportDevice(entry: DeviceEntry): void {
    const core = this.core;
    const id = entry.id;
    const methods: UsbDevice1Service = {
      Assign: (_ctx: CallContext, vm: string, options: VariantDict) => {
        parseOptions('Assign', options, {});
        return core.assign(id, vm);
      },
      Release: () => core.release(id),
      SetSticky: (_ctx: CallContext, sticky: boolean) => core.setSticky(id, sticky),
      SetFollowFocus: (_ctx: CallContext, follow: boolean) => core.setFollowFocus(id, follow),
    };
    const object = this.host.export(usbDevicePath(id), 'org.bulkhead.UsbDevice1', methods, () =>
      this.deviceProps(entry),
    );
    this.deviceObjects.set(id, object);
  }

  private deviceProps(e: DeviceEntry): UsbDevice1Properties {
    return {
      Name: displayName(e.info),
      Vendor: e.info.vendor,
      Product: e.info.product,
      VendorId: e.info.vendorId,
      ProductId: e.info.productId,
      Serial: e.info.serial,
      Classes: allClasses(e.info),
      Bus: e.info.bus,
      Address: e.info.address,
      Port: e.info.port,
      AssignedVm: e.assignedVm,
      Sticky: this.core.isSticky(e),
      FollowFocus: this.core.followsFocus(e.id),
      State: e.state,
    };
  }
}
