#!/bin/sh
# The test layer's changes that are not files: run by build-image.sh inside the image's root
# (chroot) after test-layer/rootfs/ is copied on top, only for FLAVOUR=test.
set -eu
# The known unlock password of the test flavour (documented in dom0-rootfs/README.md): the e2e
# types it on the lock screen. Production asks for it on first start instead (bulkhead-first-boot).
echo 'owner:bulkhead-test' | chpasswd
# The DevTools forward (the only TCP listener on the management NIC, test flavour only).
systemctl enable bulkhead-cdp-forward.service >/dev/null 2>&1
# Xen entry: xenconsoled logs every guest's console to /var/log/xen/console/guest-<name>.log
# (Debian's /etc/init.d/xen passes XENCONSOLED_ARGS from /etc/default/xen): xen-entry.e2e.ts reads
# the Linux test guests' BULKHEAD-INPUT lines there. Production keeps no guest console logs.
# --timestamp=guest: each line stamped, and "Logfile Opened" written when a new domain's console
# connects, so the e2e tells a READY of the guest's current domain from one of a domain before it
# (a rebooted guest keeps the same log).
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console --timestamp=guest"' >> /etc/default/xen
mkdir -p /var/log/xen/console
