#!/bin/sh
# /init of the harness dom0: bring up the Xen toolstack, then run the scenarios
# (dom0-scenarios.mjs) and print HARNESS lines on the console (hvc0 → Xen → com1 → run.mjs).
# /usr/lib/xen-4.17/bin first: Debian's /usr/sbin/xl is a wrapper that needs /sys/hypervisor.
export PATH=/usr/lib/xen-4.17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# --variant=essential has no util-linux mount: busybox provides it (and poweroff).
mkdir -p /usr/local/bin
for a in mount poweroff; do command -v $a >/dev/null || ln -sf /bin/busybox /usr/local/bin/$a; done
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/run/xen /var/log/xen/console /var/lib/xen/dump
mount -t devpts devpts /dev/pts; mount -t tmpfs run /run; mount -t tmpfs tmp /tmp
mkdir -p /run/xen /var/run/xen
echo "HARNESS-STAGE init $(cut -d' ' -f1 /proc/uptime)"
for m in xen-evtchn xenfs xen-privcmd xen-gntdev xen-gntalloc xen-blkback xen-netback xen-pciback xhci-pci ehci-pci usbhid; do modprobe $m 2>/dev/null; done
mount -t xenfs xenfs /proc/xen
/usr/lib/xen-4.17/bin/xenstored --pid-file /run/xenstored.pid
for i in $(seq 1 50); do xenstore-read -s / >/dev/null 2>&1 && break; sleep 0.2; done
/usr/lib/xen-4.17/bin/xen-init-dom0
/usr/lib/xen-4.17/bin/xenconsoled --log=guest --log-dir=/var/log/xen/console
echo "HARNESS-STAGE toolstack $(cut -d' ' -f1 /proc/uptime)"
cd /opt/bulkhead
/usr/local/bin/node xen-harness/dom0-scenarios.mjs
echo "HARNESS-DONE"
sync
poweroff -f
