#!/usr/bin/env bash
# Builds the Bulkhead Linux test guest (README.md beside this file) into an output directory:
#   vmlinuz      Debian 12's kernel
#   initrd.img   cpio.gz: busybox, /init, bin/bulkhead-guest (src/), and only the kernel modules of
#                modules.txt with what they depend on
#   guest.iso    bootable CD-ROM image (BIOS and UEFI, GRUB) of the two, with bulkhead.name=Lab
# Usage: guests/linux/build.sh [output-dir]   (default: <repo>/.cache/linux-guest). Run as root.
# The result is cached in ${BULKHEAD_CACHE:-/var/cache/bulkhead}/linux-guest-<hash of the inputs>,
# so a second run only copies it. Prints the output directory on its last line.
# Exit 75 (EX_TEMPFAIL): Debian's packages cannot be fetched (tests then say "skipped").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# The bitmap font is the toy guest's (one font for both test guests).
font_dir="$repo/apps/vm-daemon/guest"
out_dir=${1:-$repo/.cache/linux-guest}
cache=${BULKHEAD_CACHE:-/var/cache/bulkhead}
# The kernel ABI is pinned so the cache key says which kernel is inside; when Debian has dropped
# it, the one linux-image-amd64 points at is taken (scripts/lib/debian-fetch.sh, shared with
# xen-harness/build-dom0.sh).
KVER=${BULKHEAD_LINUX_GUEST_KVER:-6.1.0-57-amd64}

fetch_lib="$repo/scripts/lib/debian-fetch.sh"
# shellcheck source=../../scripts/lib/debian-fetch.sh
. "$fetch_lib"
FETCH_WHO="linux guest: "

cannot_fetch() { echo "linux guest: cannot fetch from Debian: $*" >&2; exit 75; }
cache_dir() {
  echo "$cache/linux-guest-$( (cd "$here" && cat build.sh init grub.cfg modules.txt src/* "$font_dir/font8x8.h" "$fetch_lib"; echo "$KVER") | sha256sum | cut -c1-16)"
}
deliver() { # cache-dir: copy the result to the output directory
  mkdir -p "$out_dir"
  for f in vmlinuz initrd.img guest.iso kernel-version; do
    cp -f "$1/$f" "$out_dir/$f.tmp.$$" && mv -f "$out_dir/$f.tmp.$$" "$out_dir/$f"
  done
  echo "$out_dir"
}

cached() { [ -s "$1/guest.iso" ] && [ -s "$1/initrd.img" ] && [ -s "$1/vmlinuz" ]; }
out=$(cache_dir)
if cached "$out"; then
  echo "linux guest cached: $out" >&2
  deliver "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "linux guest: build.sh needs root (apt-get, device nodes in the initrd)" >&2; exit 1; }

# Host tools, installed when missing. grub-mkrescue takes its BIOS and UEFI images from
# /usr/lib/grub/<platform>; grub-pc-bin and grub-efi-amd64-bin only ship those files (they do not
# touch the host's boot loader).
missing=()
need() { [ -e "$1" ] || command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need cpio cpio
need depmod kmod
need gcc gcc
need /usr/lib/x86_64-linux-gnu/libc.a libc6-dev
need xorriso xorriso
need mformat mtools
need grub-mkrescue grub-common
need /usr/lib/grub/i386-pc/boot.img grub-pc-bin
need /usr/lib/grub/x86_64-efi/linux.mod grub-efi-amd64-bin
need /usr/share/OVMF/OVMF_CODE_4M.fd ovmf # UEFI firmware: what the ISO's UEFI boot is tested with
if [ ${#missing[@]} -gt 0 ]; then
  echo "linux guest: installing ${missing[*]}" >&2
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
  apt_install || { apt-get update -q >&2 || cannot_fetch "apt-get update failed"; apt_install; } ||
    cannot_fetch "apt-get install ${missing[*]}"
fi

t0=$(date +%s)
dl=$(mktemp -d)
chmod 755 "$dl" # apt-get download writes as the _apt user when it can
tmp=""
trap 'rm -rf "$dl" "$tmp"' EXIT
kernel_changed() { # the kernel the archive has now may be built already
  out=$(cache_dir)
  if cached "$out"; then
    echo "linux guest cached: $out" >&2
    deliver "$out"
    exit 0
  fi
}
fetch_kernel_debs "$dl" busybox-static
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
dpkg-deb -x "$dl"/linux-image-*.deb "$tmp/kernel"
dpkg-deb -x "$dl"/busybox-static_*.deb "$tmp/busybox"
cp "$tmp/kernel/boot/vmlinuz-$KVER" "$tmp/vmlinuz"

# --- the initramfs tree
root="$tmp/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,lib/modules}
cp "$tmp/busybox/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
for applet in modprobe insmod rmmod lsmod depmod; do ln -sf ../bin/busybox "$root/sbin/$applet"; done
# The kernel opens /dev/console for /init before anything is mounted.
mknod -m 600 "$root/dev/console" c 5 1
install -m 755 "$here/init" "$root/init"
# -Wno-format-truncation: every truncating snprintf in the helper truncates on purpose.
gcc -static -Os -Wall -Wextra -Werror -Wno-format-truncation -I"$font_dir" -o "$root/bin/bulkhead-guest" "$here"/src/*.c
strip "$root/bin/bulkhead-guest"

# --- kernel modules: modules.txt and everything each one depends on, nothing else
mods="$tmp/kernel/lib/modules/$KVER"
depmod -b "$tmp/kernel" "$KVER" # Debian's package ships no modules.dep
wanted=$(sed 's/#.*//' "$here/modules.txt" | tr -s ' \t' '\n' | grep . || true)
files=$(
  for name in $wanted; do
    # modules.dep names files with '-' or '_' as the source tree has them; modprobe treats both alike
    key=$(echo "$name" | tr - _)
    line=$(awk -v key="$key" -F: '{ n = $1; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n); if (n == key) { print; exit } }' "$mods/modules.dep")
    [ -n "$line" ] || { echo "linux guest: kernel $KVER has no module $name (modules.txt); is it built in?" >&2; exit 1; }
    echo "$line" | tr -d ':' | tr ' ' '\n'
  done | grep . | sort -u
)
mkdir -p "$root/lib/modules/$KVER"
# shellcheck disable=SC2086 # $files is a list of module paths (no spaces), split on purpose
(cd "$mods" && cp --parents $files modules.order modules.builtin modules.builtin.modinfo "$root/lib/modules/$KVER/")
depmod -b "$root" "$KVER"
echo "$wanted" >"$root/lib/modules/bulkhead-modules"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$tmp/initrd.img"

# --- the ISO: GRUB for BIOS (El Torito) and UEFI (an EFI system partition image), same menu
iso="$tmp/iso"
mkdir -p "$iso/boot/grub"
cp "$tmp/vmlinuz" "$tmp/initrd.img" "$iso/boot/"
cp "$here/grub.cfg" "$iso/boot/grub/grub.cfg"
# All of GRUB's modules (2 MB): a trimmed set saved little, and GRUB's UEFI build then failed to
# load the partition maps and video drivers it probes for on every boot.
grub-mkrescue -o "$tmp/guest.iso" --compress=xz --fonts= --locales= --themes= "$iso" >"$tmp/grub-mkrescue.log" 2>&1 ||
  { cat "$tmp/grub-mkrescue.log" >&2; echo "linux guest: grub-mkrescue failed" >&2; exit 1; }

echo "$KVER" >"$tmp/kernel-version"
mkdir -p "$out"
mv "$tmp/vmlinuz" "$tmp/initrd.img" "$tmp/guest.iso" "$tmp/kernel-version" "$out/"
# Results of older inputs are never used again.
for old in "$cache"/linux-guest-*; do [ "$old" = "$out" ] || case "$old" in *.tmp.*) ;; *) rm -rf "$old" ;; esac; done
echo "linux guest built in $(($(date +%s) - t0)) s: initrd $(du -h "$out/initrd.img" | cut -f1), ISO $(du -h "$out/guest.iso" | cut -f1)" >&2
deliver "$out"
