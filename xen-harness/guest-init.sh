#!/bin/sh
# /init of the harness guests (PV and HVM): mounts, loads the modules that make passed-through
# PCI (xen-pcifront) and USB devices visible, then prints one machine-readable line per second:
#   BULKHEAD-GUEST name=<n> pci=<vendor:device,...> usb=<vid:pid,...>
# The harness reads these lines from the console log to check what the guest really sees.
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
name=$(sed -n 's/.*guestname=\([^ ]*\).*/\1/p' /proc/cmdline)
for m in xen-pcifront ehci-pci ohci-pci uhci-hcd xhci-pci usb-storage usbhid hid-generic; do modprobe $m 2>/dev/null; done
echo "BULKHEAD-GUEST-BOOTED name=$name"
while true; do
  pci=""; for d in /sys/bus/pci/devices/*; do [ -e "$d/vendor" ] || continue
    pci="$pci$(cat $d/vendor | sed s/0x//):$(cat $d/device | sed s/0x//)@${d##*/},"; done
  usb=""; for d in /sys/bus/usb/devices/*; do [ -e "$d/idVendor" ] || continue
    usb="$usb$(cat $d/idVendor):$(cat $d/idProduct),"; done
  echo "BULKHEAD-GUEST name=$name pci=$pci usb=$usb"
  sleep 2
done
