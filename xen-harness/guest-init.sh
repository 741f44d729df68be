#!/bin/sh
# /init of the harness guests (PV and HVM): mounts, loads the modules that make passed-through
# PCI (xen-pcifront) and USB devices visible, then prints one machine-readable line when what it
# sees changes (checked every second), and every 30 s anyway:
#   BULKHEAD-GUEST name=<n> pci=<vendor:device,...> usb=<vid:pid,...>
# (Not every second: on an HVM guest each console character is a round trip to the device model,
# which under TCG is slow enough to starve the guest.)
# The harness reads these lines from the console log to check what the guest really sees.
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
name=$(sed -n 's/.*guestname=\([^ ]*\).*/\1/p' /proc/cmdline)
for m in xen-pcifront ehci-pci ohci-pci uhci-hcd xhci-pci usb-storage usbhid hid-generic evdev; do modprobe $m 2>/dev/null; done
echo "BULKHEAD-GUEST-BOOTED name=$name"
# Every key event the guest's kernel delivers, one line each (the input scenarios check these):
#   BULKHEAD-GUEST-INPUT dev=event<N> type=1 code=<KEY_*> value=<1 press, 0 release, 2 repeat>
# One struct input_event (24 bytes on x86-64: time 16, type 2, code 2, value 4) per dd read, so
# od's output is flushed per event; value's high half is dropped (key values are 0-2). A read that
# returns nothing (the device went away) ends that device's reader instead of spinning.
for ev in /dev/input/event*; do
  [ -e "$ev" ] || continue
  (while l=$(dd if="$ev" bs=24 count=1 2>/dev/null | od -An -tu2 -w24 -v) && [ -n "$l" ]; do echo "$l"; done |
    while read -r _ _ _ _ _ _ _ _ type code value _; do
      [ "$type" = 1 ] && echo "BULKHEAD-GUEST-INPUT dev=${ev##*/} type=$type code=$code value=$value"
    done) &
done
last=""; n=0
while true; do
  pci=""; for d in /sys/bus/pci/devices/*; do [ -e "$d/vendor" ] || continue
    pci="$pci$(cat $d/vendor | sed s/0x//):$(cat $d/device | sed s/0x//)@${d##*/},"; done
  usb=""; for d in /sys/bus/usb/devices/*; do [ -e "$d/idVendor" ] || continue
    usb="$usb$(cat $d/idVendor):$(cat $d/idProduct),"; done
  line="BULKHEAD-GUEST name=$name pci=$pci usb=$usb"
  if [ "$line" != "$last" ] || [ $n -ge 30 ]; then echo "$line"; last=$line; n=0; fi
  n=$((n + 1))
  sleep 1
done
