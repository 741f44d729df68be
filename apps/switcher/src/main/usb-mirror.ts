/** The switcher's mirror of usb-daemon (org.bulkhead.Usb1 and its UsbDevice1 objects). */
import { BUS_NAMES, USB_DEVICE1_VIEW_DEFAULTS, USB_PATH, usbDevice1ViewPatch } from '@bulkhead/contract';
import type { TypedEmitter } from '@bulkhead/common';
import type { BusClient, Unsubscribe } from '@bulkhead/dbus';
import type { PromptModel, UsbDeviceModel } from '../common/model';
import type { DaemonStateEvents } from './daemon-state';
import type { Props } from './mirror-props';
import type { DaemonMirror } from './name-owner-tracker';

const USB1 = 'org.bulkhead.Usb1';
const USBDEV1 = 'org.bulkhead.UsbDevice1';

/** A device object's model from its properties: every UsbDevice1 property, by the generated table. */
export function usbFromProps(path: string, p: Props): UsbDeviceModel {
  return { path, ...USB_DEVICE1_VIEW_DEFAULTS, ...usbDevice1ViewPatch(p) };
}

function promptsFrom(v: unknown): PromptModel[] {
  return Array.isArray(v) ? v.map((p) => ({ id: Number(p[0]), device: String(p[1]), vm: String(p[2]) })) : [];
}

export class UsbMirror implements DaemonMirror {
  readonly devices = new Map<string, UsbDeviceModel>();
  prompts: PromptModel[] = [];

  constructor(
    private readonly client: BusClient,
    private readonly events: TypedEmitter<DaemonStateEvents>,
  ) {}

  /** The devices in panel order: by port, then object path. */
  sortedDevices(): UsbDeviceModel[] {
    return [...this.devices.values()].sort(
      (a, b) => a.port.localeCompare(b.port) || a.path.localeCompare(b.path),
    );
  }

  async connect(subs: Unsubscribe[]): Promise<void> {
    const dest = BUS_NAMES.usb;
    subs.push(
      await this.client.onSignal(dest, { path: USB_PATH }, USB1, 'AttachRequested', ([id, device, vm]) =>
        this.events.emit('prompt', { id, device, vm }),
      ),
      await this.client.onSignal(dest, { path: USB_PATH }, USB1, 'DeviceRejected', ([device, reason]) =>
        this.events.emit('usbRejected', device, reason),
      ),
    );
    const watch = await this.client.watchObjects(dest, USB_PATH, {
      added: (path, ifaces) => {
        if (!ifaces[USBDEV1]) return;
        this.devices.set(path, usbFromProps(path, ifaces[USBDEV1]));
        this.events.emit('changed');
      },
      removed: (path, ifaces) => {
        if (!ifaces.includes(USBDEV1)) return;
        this.devices.delete(path);
        this.events.emit('changed');
      },
      changed: (path, iface, changed) => {
        if (iface === USB1 && path === USB_PATH) {
          if ('PendingPrompts' in changed) this.prompts = promptsFrom(changed.PendingPrompts);
          this.events.emit('changed');
        } else if (iface === USBDEV1) {
          const dev = this.devices.get(path);
          if (!dev) return;
          Object.assign(dev, usbDevice1ViewPatch(changed));
          this.events.emit('changed');
        }
      },
    });
    subs.push(watch.unsubscribe);
    this.devices.clear();
    for (const [path, ifaces] of Object.entries(watch.objects))
      if (ifaces[USBDEV1]) this.devices.set(path, usbFromProps(path, ifaces[USBDEV1]));
    const props = (await this.client.getAll(dest, USB_PATH, USB1)) as unknown as Props;
    this.prompts = promptsFrom(props.PendingPrompts);
  }

  clear(): void {
    this.devices.clear();
    this.prompts = [];
  }
}
