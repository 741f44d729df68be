#!/usr/bin/env bash
# Builds (or reuses) the cached inputs of the Xen harness, keyed by the hash of this script:
#   xen            Xen 4.17 hypervisor (Debian xen-hypervisor-4.17-amd64, gunzipped: a multiboot ELF)
#   vmlinuz        Debian's kernel: dom0 and every guest boot it
#   dom0.cpio.gz   dom0 userspace (mmdebstrap --variant=essential + xl, xenstore, qemu-system-xen,
#                  dbus-daemon, busybox) with the kernel modules dom0 needs
#   guest.cpio.gz  the guests' initrd: busybox + the modules for xen-pcifront, USB (HID) and evdev, and
#                  /init (xen-harness/guest-init.sh) that reports PCI and USB devices and key events
#                  on the console
# Prints the cache directory on its last line. Everything of the project itself (node, vm-daemon)
# goes into a second, per-run cpio (run.mjs) so a code change never rebuilds this layer.
# Exit 75 (EX_TEMPFAIL): Debian's packages cannot be fetched (run.mjs then reports "skipped").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${BULKHEAD_CACHE:-/var/cache/bulkhead}
KVER=${BULKHEAD_XEN_KVER:-6.1.0-56-amd64}
PKGS=xen-utils-4.17,xen-utils-common,xenstore-utils,qemu-system-xen,busybox-static,kmod,pciutils,usbutils,iproute2,procps,udev,dbus-daemon,libstdc++6
fetch_lib="$here/../scripts/lib/debian-fetch.sh"
# shellcheck source=../scripts/lib/debian-fetch.sh
. "$fetch_lib"
cache_dir() { echo "$cache/xen-dom0-$( (cat "$here/build-dom0.sh" "$here/guest-init.sh" "$fetch_lib"; echo "$KVER $PKGS") | sha256sum | cut -c1-16)"; }
out=$(cache_dir)
if [ -s "$out/dom0.cpio.gz" ] && [ -s "$out/guest.cpio.gz" ] && [ -s "$out/xen" ] && [ -s "$out/vmlinuz" ]; then
  echo "xen harness inputs cached: $out" >&2
  echo "$out"
  exit 0
fi
for t in mmdebstrap cpio apt-get dpkg-deb depmod; do command -v $t >/dev/null || { echo "need $t" >&2; exit 1; }; done
cannot_fetch() { echo "cannot fetch from Debian: $*" >&2; exit 75; }
t0=$(date +%s)
dl=$(mktemp -d)
trap 'rm -rf "$dl" "${tmp:-}"' EXIT
kernel_changed() { out=$(cache_dir); }
fetch_kernel_debs "$dl" xen-hypervisor-4.17-amd64
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
mv "$dl" "$tmp/dl"
dpkg-deb -x "$tmp"/dl/linux-image-*.deb "$tmp/kernel"
dpkg-deb -x "$tmp"/dl/xen-hypervisor-*.deb "$tmp/xenpkg"
gunzip -c "$tmp"/xenpkg/boot/xen-4.17-amd64.gz > "$tmp/xen"
cp "$tmp/kernel/boot/vmlinuz-$KVER" "$tmp/vmlinuz"

echo "mmdebstrap dom0 (about 1-3 minutes)" >&2
if ! mmdebstrap --mode=root --variant=essential --include="$PKGS" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$tmp/root" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" 2>&1 | tee "$tmp/mmdebstrap.log" >&2; then
  grep -qiE 'Failed to fetch|Could not resolve|Temporary failure|Unable to connect|Connection (refused|timed out)|Network is unreachable' "$tmp/mmdebstrap.log" \
    && cannot_fetch "mmdebstrap could not download the dom0 packages"
  echo "mmdebstrap failed" >&2; exit 1
fi

# Kernel modules: drivers only (xen backends, pciback, USB host/HID/storage, block), not the 400 MB tree.
mods="$tmp/kernel/lib/modules/$KVER"
copy_mods() { # dest-root subdir...
  local dest=$1; shift
  mkdir -p "$dest/lib/modules/$KVER"
  (cd "$mods" && cp --parents -r "$@" modules.order modules.builtin modules.builtin.modinfo "$dest/lib/modules/$KVER/")
  depmod -b "$dest" "$KVER"
}
copy_mods "$tmp/root" kernel/drivers/xen kernel/drivers/usb kernel/drivers/hid kernel/drivers/block kernel/drivers/net/xen-netback \
  kernel/drivers/scsi kernel/drivers/input kernel/drivers/pci kernel/drivers/gpu/drm/tiny kernel/lib kernel/fs/fuse
rm -rf "$tmp/root/var/cache/apt" "$tmp/root/var/lib/apt/lists"
(cd "$tmp/root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$tmp/dom0.cpio.gz"

# Guest initrd: busybox + pcifront + USB host controllers/HID.
g="$tmp/guest"
mkdir -p "$g/bin" "$g/sbin" "$g/proc" "$g/sys" "$g/dev" "$g/tmp"
cp "$tmp/root/bin/busybox" "$g/bin/busybox"
for a in sh mount cat ls sleep echo mkdir modprobe insmod poweroff grep sed head find readlink dd od; do ln -s busybox "$g/bin/$a"; done
# (No usb-storage/SCSI: the scenarios pass a keyboard, and an HVM guest loads its initrd through
# fw_cfg port I/O, where every MiB counts.)
copy_mods "$g" kernel/drivers/pci/xen-pcifront.ko kernel/drivers/usb/core kernel/drivers/usb/common kernel/drivers/usb/host \
  kernel/drivers/hid kernel/drivers/input/input-leds.ko kernel/drivers/input/evdev.ko 2>/dev/null || true
ls "$g/lib/modules/$KVER" >/dev/null
cp "$here/guest-init.sh" "$g/init"; chmod 755 "$g/init"
(cd "$g" && find . | cpio -o -H newc --quiet) | gzip -1 > "$tmp/guest.cpio.gz"

mkdir -p "$out"
mv "$tmp/xen" "$tmp/vmlinuz" "$tmp/dom0.cpio.gz" "$tmp/guest.cpio.gz" "$out/"
echo "$KVER" > "$out/kernel-version"
# Inputs of older versions of this script are never used again.
for old in "$cache"/xen-dom0-*; do [ "$old" = "$out" ] || case "$old" in *.tmp.*) ;; *) rm -rf "$old" ;; esac; done
echo "built xen harness inputs in $(( $(date +%s) - t0 )) s: $(du -sh "$out" | cut -f1)" >&2
echo "$out"
