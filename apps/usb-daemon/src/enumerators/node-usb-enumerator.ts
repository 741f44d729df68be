import type * as NodeUsb from 'usb';
import type { UsbDeviceInfo, UsbInterfaceCodes } from '../device';
import type { UsbEnumerator, UsbHotplugHandlers } from './enumerator';
import { SYSFS_USB_DEVICES, findSysfsPort, readSysfsInterfaces, readSysfsUsbDevice } from './sysfs';

type UsbModule = typeof NodeUsb;
type UsbDevice = NodeUsb.Device;

/**
 * Enumeration through node-usb (usb 2.x, the classic libusb binding) plus Linux sysfs.
 *
 * Where each field comes from:
 *   bus, address            node-usb  Device.busNumber / deviceAddress (libusb)
 *   port path               node-usb  `${bus}-${portNumbers.join('.')}` (libusb_get_port_numbers);
 *                           sysfs scan of busnum/devnum when libusb gives no port numbers
 *   VID, PID, device class  node-usb  deviceDescriptor (libusb's cached copy; the device is not opened)
 *   interface classes       node-usb  configDescriptor (active configuration, read from sysfs by
 *                           libusb without opening); sysfs '<port>:<c>.<i>/bInterface*' if that fails
 *   serial, vendor, product sysfs     /sys/bus/usb/devices/<port>/{serial,manufacturer,product}: the
 *                           kernel read these strings at enumeration. node-usb could only get them by
 *                           opening the device and sending control transfers, which needs write
 *                           access to /dev/bus/usb and disturbs a device that a VM may own.
 *   hotplug                 node-usb  'attach' / 'detach' events (libusb hotplug over udev/netlink)
 * Root hubs (no port numbers) are not listed: they cannot be given to a VM.
 */
export class NodeUsbEnumerator implements UsbEnumerator {
  readonly name = 'node-usb';
  private readonly usb: UsbModule;
  private readonly sysfsRoot: string;

  constructor(opts: { usb?: UsbModule; sysfsRoot?: string } = {}) {
    // Loaded here, not at import, so `--enumerator none` never loads the native binding.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    this.usb = opts.usb ?? (require('usb') as UsbModule);
    this.sysfsRoot = opts.sysfsRoot ?? SYSFS_USB_DEVICES;
  }

  async list(): Promise<UsbDeviceInfo[]> {
    const out: UsbDeviceInfo[] = [];
    for (const d of this.usb.getDeviceList()) {
      const info = this.describe(d);
      if (info) out.push(info);
    }
    return out;
  }

  watch(handlers: UsbHotplugHandlers): () => void {
    const onAttach = (d: UsbDevice) => {
      try {
        const info = this.describe(d);
        if (info) handlers.added(info);
      } catch (e) {
        handlers.error?.(
          `cannot read new device at bus ${d.busNumber} address ${d.deviceAddress}: ${(e as Error).message}`,
        );
      }
    };
    const onDetach = (d: UsbDevice) => handlers.removed({ bus: d.busNumber, address: d.deviceAddress });
    this.usb.usb.on('attach', onAttach);
    this.usb.usb.on('detach', onDetach);
    return () => {
      this.usb.usb.off('attach', onAttach);
      this.usb.usb.off('detach', onDetach);
    };
  }

  /** null for root hubs and for devices that vanished while being read. */
  describe(d: UsbDevice): UsbDeviceInfo | null {
    const bus = d.busNumber;
    const address = d.deviceAddress;
    const ports = d.portNumbers;
    if (Array.isArray(ports) && ports.length === 0) return null; // root hub
    const port = ports?.length ? `${bus}-${ports.join('.')}` : findSysfsPort(this.sysfsRoot, bus, address);
    if (!port) return null;
    const desc = d.deviceDescriptor;
    const sys = readSysfsUsbDevice(this.sysfsRoot, port);
    return {
      bus,
      address,
      port,
      vendorId: desc.idVendor,
      productId: desc.idProduct,
      deviceCodes: {
        classCode: desc.bDeviceClass,
        subclass: desc.bDeviceSubClass,
        protocol: desc.bDeviceProtocol,
      },
      interfaces: this.interfaces(d, port),
      serial: sys?.serial ?? '',
      vendor: sys?.vendor ?? '',
      product: sys?.product ?? '',
    };
  }

  private interfaces(d: UsbDevice, port: string): UsbInterfaceCodes[] {
    try {
      const cfg = d.configDescriptor;
      if (cfg) {
        return cfg.interfaces
          .filter((alts) => alts.length > 0)
          .map((alts) => ({
            classCode: alts[0].bInterfaceClass,
            subclass: alts[0].bInterfaceSubClass,
            protocol: alts[0].bInterfaceProtocol,
          }));
      }
    } catch {
      // libusb could not read the active configuration (unconfigured device): ask sysfs.
    }
    return readSysfsInterfaces(this.sysfsRoot, port);
  }
}
