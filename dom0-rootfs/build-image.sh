#!/usr/bin/env bash
# Builds the Control Domain image: base layer (cached, see build-base.sh) + the project's build +
# the overlay (systemd units, D-Bus policy, kiosk, VM definitions). Output in $OUT (default
# .cache/image for production, .cache/image-test for the test flavour): disk.img, a UEFI disk as a
# laptop boots it (GPT: an EFI system partition with Debian's signed shim and GRUB, then the ext4
# root file system; sparse).
# No loop device and no mount: the FAT partition is made with mkfs.fat + mtools, the ext4 one with
# mkfs.ext4 -d straight into the disk file at its offset, the table with sgdisk. Re-imaging after a
# code change takes seconds: only the extract + copy + mkfs layer runs again.
set -euo pipefail
# FLAVOUR=production (the default): what ships. FLAVOUR=test: production plus the test layer
# (dom0-rootfs/test-layer/: rootfs/ copied on top, then setup-in-chroot.sh), what the e2e boots.
flavour=${FLAVOUR:-production}
case "$flavour" in production | test) ;; *)
  echo "build-image: FLAVOUR='$flavour': expected production or test" >&2
  exit 2
  ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${BULKHEAD_CACHE:-/var/cache/bulkhead}
default_out=$repo/.cache/image
[ "$flavour" = production ] || default_out=$repo/.cache/image-$flavour
out=${OUT:-$default_out}
mkdir -p "$out"
[ "$(id -u)" = 0 ] || { echo "build-image: needs root (mmdebstrap, chroot, file ownership)" >&2; exit 1; }
# Host tools for the disk (scripts/setup.sh installs them when run as root).
need=()
for t in sgdisk:gdisk mkfs.fat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs apt-get:apt dpkg-deb:dpkg; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[ ${#need[@]} = 0 ] || { echo "build-image: missing host packages: ${need[*]} (apt-get install ${need[*]})" >&2; exit 1; }

# Debian's Secure Boot chain: shim signed by Microsoft's UEFI CA (shim-signed), GRUB signed by
# Debian (grub-efi-amd64-signed), and the GRUB modules of the same build (grub-efi-amd64-bin) for
# what the signed image does not have built in (multiboot2, for Xen). Fetched once per version
# with apt-get download, unpacked into the cache; nothing is installed on the host.
efi_boot() {
  local v_grub v_bin v_shim dir tmp
  v_grub=$(apt-cache show --no-all-versions grub-efi-amd64-signed 2>/dev/null | sed -n 's/^Version: //p')
  # The GRUB build the signed image was made from: its modules must be of that same build.
  v_bin=$(apt-cache show --no-all-versions grub-efi-amd64-signed 2>/dev/null | sed -n 's/^Built-Using: grub2 (= \(.*\))$/\1/p')
  v_shim=$(apt-cache show --no-all-versions shim-signed 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$v_grub" ] && [ -n "$v_bin" ] && [ -n "$v_shim" ] || { echo "build-image: apt knows no grub-efi-amd64-signed / shim-signed (apt-get update?)" >&2; return 1; }
  dir="$cache/efi-boot-$(printf '%s_%s' "$v_grub" "$v_shim" | tr -c 'A-Za-z0-9._+\n-' _)"
  if [ ! -s "$dir/shimx64.efi" ]; then
    # On a fresh machine the cache does not exist yet (build-base.sh makes it later): without it
    # mktemp failed, and the download and copies ran in the current directory and /.
    mkdir -p "$cache" && tmp=$(mktemp -d "$cache/efi-boot.tmp.XXXXXX") || return 1
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "grub-efi-amd64-signed=$v_grub" "shim-signed=$v_shim" "grub-efi-amd64-bin=$v_bin" >&2) || { rm -rf "$tmp"; return 1; }
    for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$tmp/x"; done
    mkdir -p "$tmp/out"
    cp "$tmp/x/usr/lib/shim/shimx64.efi.signed" "$tmp/out/shimx64.efi"
    cp "$tmp/x/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" "$tmp/out/grubx64.efi"
    cp -r "$tmp/x/usr/lib/grub/x86_64-efi" "$tmp/out/x86_64-efi"
    rm -rf "$tmp/out/x86_64-efi/monolithic"
    rm -rf "$dir"
    mv "$tmp/out" "$dir"
    rm -rf "$tmp"
  fi
  echo "$dir"
}
efi=$(efi_boot) || { echo "build-image: cannot fetch Debian's signed shim and GRUB" >&2; exit 1; }

base=$("$here/build-base.sh" | tail -n 1)
stage="$cache/stage.$$"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"
t0=$(date +%s)
tar -I zstd -xpf "$base" -C "$stage"

# --- the project ---------------------------------------------------------------------------------
dest="$stage/opt/bulkhead"
mkdir -p "$dest"
install -m 0755 "$(command -v node)" "$stage/usr/local/bin/node"
# Runtime files only: each package's package.json, dist, and what it loads at run time.
rsync -a --prune-empty-dirs \
  --include='/package.json' \
  --include='/shared/' --include='/shared/*/' --include='/shared/*/package.json' \
  --include='/shared/*/dist/***' --include='/shared/contract/policy/***' --include='/shared/contract/xml/***' \
  --include='/apps/' --include='/apps/*/' --include='/apps/*/package.json' --include='/apps/*/dist/***' \
  --include='/apps/input-daemon/build/' --include='/apps/input-daemon/build/Release/' --include='/apps/input-daemon/build/Release/*.node' \
  --include='/apps/vm-daemon/guest/' --include='/apps/vm-daemon/guest/build/' --include='/apps/vm-daemon/guest/build/*.elf' \
  --include='/apps/*/node_modules/***' \
  --exclude='*' "$repo/" "$dest/"
# Production dependencies: the workspace's node_modules without the build and test tooling.
rsync -a "$repo/node_modules/" "$dest/node_modules/" \
  --exclude='/typescript' --exclude='/electron' --exclude='/esbuild' --exclude='/@esbuild' \
  --exclude='/playwright-core' --exclude='/eslint*' --exclude='/@eslint*' --exclude='/prettier' \
  --exclude='/@typescript-eslint' --exclude='/typescript-eslint' --exclude='/@types' --exclude='/fast-check' \
  --exclude='/.cache'
# Test, fuzz and benchmark files, and every dist/**/testing/ (fakes, test helpers), stay out of the
# image (apps/vm-daemon/src/image-files.test.ts runs these find lines and checks what is left).
find "$dest" -path '*/dist/*' \( -name '*.test.js' -o -name '*.test.js.map' -o -name '*.test.d.ts' \) -delete
find "$dest/shared" "$dest/apps" -path '*/dist/*' \( -name '*.fuzz.*' -o -name '*.bench.*' \) -delete
find "$dest/shared" "$dest/apps" -type d -path '*/dist/*' -name testing -prune -exec rm -rf {} +

# --- D-Bus policy, overlay, accounts, services ---------------------------------------------------
install -m 0644 "$repo"/shared/contract/policy/*.conf "$stage/usr/share/dbus-1/system.d/"
cp -a "$here/overlay/." "$stage/"
install -d -m 0755 "$stage/etc/bulkhead/vms"
# The VM files of both boot entries: vm-daemon loads those of the backend it runs (QEMU on the KVM
# entry, Xen on the Xen entry) and sets the others aside; *.xen are the Xen files' sidecars.
for f in "$here"/vms/*.json "$here"/vms/*.xen; do install -m 0644 "$f" "$stage/etc/bulkhead/vms/"; done
# The Xen entry's VMs boot the Linux test guest (guests/linux: Debian's kernel + a busybox
# initramfs, cached in $cache/linux-guest-<hash>) as PV domains; it goes next to the toy kernel, in
# a directory vm-daemon's VM files may name (config.ts, TEST_GUEST_DIR).
guest_out="$stage/tmp/linux-guest"
"$repo/guests/linux/build.sh" "$guest_out" >&2 || { echo "build-image: guests/linux/build.sh failed" >&2; exit 1; }
install -d -m 0755 "$dest/apps/vm-daemon/guest/build/linux"
install -m 0644 "$guest_out/vmlinuz" "$guest_out/initrd.img" "$dest/apps/vm-daemon/guest/build/linux/"
rm -rf "$guest_out"
# Accounts (the chroot script below is in single quotes: no apostrophes in it).
# - owner: the person. Their password unlocks the seat (PAM service bulkhead-unlock). No shell and
#   no home: the account exists for its password only and never logs in. Created without a
#   password (locked, "!"); bulkhead-first-boot asks for it on the first start.
# - Two users for the UI. bulkhead-switcher runs the web host: group bulkhead-ui gives it the UI
#   role on the bus, bulkhead-vnc lets it open the VNC sockets of the VMs, which it relays through
#   its RFB filter. bulkhead-ui runs cage and Chromium (the kiosk): it reads the token of the web
#   host (/run/bulkhead-ui, group bulkhead-ui) but is not in bulkhead-vnc, so a compromised browser
#   cannot open the VNC socket of a VM around the filter.
# - root: password locked; no login as root anywhere (the serial console asks for a login).
chroot "$stage" sh -eu -c '
  getent group bulkhead-ui >/dev/null || groupadd --system bulkhead-ui
  getent group bulkhead-vnc >/dev/null || groupadd --system bulkhead-vnc
  id owner >/dev/null 2>&1 || useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --comment "Bulkhead owner" owner
  id bulkhead-ui >/dev/null 2>&1 || useradd --system --gid bulkhead-ui --groups video,input,render --create-home --home-dir /var/lib/bulkhead-ui --shell /usr/sbin/nologin bulkhead-ui
  id bulkhead-switcher >/dev/null 2>&1 || useradd --system --gid bulkhead-ui --groups bulkhead-vnc --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bulkhead-switcher
  echo bulkhead-dom0 > /etc/hostname
  passwd -l root >/dev/null
  systemctl enable systemd-networkd.service bulkhead-vm-daemon.service bulkhead-input-daemon.service bulkhead-usb-daemon.service \
    bulkhead-switcher.service bulkhead-first-boot.service bulkhead-kiosk.service serial-getty@ttyS0.service >/dev/null 2>&1
  systemctl mask getty@tty1.service systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
'

# --- the test layer (FLAVOUR=test only) -----------------------------------------------------------
if [ "$flavour" = test ]; then
  cp -a "$here/test-layer/rootfs/." "$stage/"
  install -m 0755 "$here/test-layer/setup-in-chroot.sh" "$stage/tmp/bulkhead-test-layer.sh"
  chroot "$stage" /tmp/bulkhead-test-layer.sh
  rm -f "$stage/tmp/bulkhead-test-layer.sh"
fi
echo "$flavour" > "$stage/etc/bulkhead/flavour"

# --- boot: the GRUB menu in the root file system ------------------------------------------------
# The root partition's GPT id, new for every build: the kernel finds its root by it (root=PARTUUID=,
# resolved by the initramfs) and so does /etc/fstab, whatever the disk is called on the machine.
root_partuuid=$(cat /proc/sys/kernel/random/uuid)
printf "PARTUUID=%s / ext4 rw,relatime 0 1\n" "$root_partuuid" > "$stage/etc/fstab"
kernel=$(cd "$stage" && ls boot/vmlinuz-* | sort -V | tail -n 1)
initrd=boot/initrd.img-${kernel#boot/vmlinuz-}
xen=$(cd "$stage" && ls boot/xen-*.gz 2>/dev/null | sort -V | tail -n 1)
for f in "$kernel" "$initrd" "$xen"; do
  [ -n "$f" ] && [ -f "$stage/$f" ] || { echo "build-image: the base layer has no kernel, initrd or Xen (/boot: $(ls "$stage/boot"))" >&2; exit 1; }
done
install -d -m 0755 "$stage/boot/grub"
# GRUB's modules next to the menu ($prefix, set by the ESP's grub.cfg): loaded only with Secure
# Boot off (the locked-down signed GRUB refuses them).
cp -r "$efi/x86_64-efi" "$stage/boot/grub/x86_64-efi"
sed -e "s|@KERNEL@|/$kernel|g" -e "s|@INITRD@|/$initrd|g" -e "s|@XEN@|/$xen|g" -e "s|@ROOT@|PARTUUID=$root_partuuid|g" \
  "$here/boot/grub.cfg.in" > "$stage/boot/grub/grub.cfg"

# --- the disk: GPT, EFI system partition, root file system ---------------------------------------
# Layout (MiB): 0-1 protective MBR + GPT, 1-129 ESP (FAT32), 129-end root (ext4, label
# bulkhead-dom0, GPT type "Linux x86-64 root"), last MiB for the backup GPT.
disk_mib=6144 esp_start=1 esp_mib=128
root_start=$((esp_start + esp_mib)) root_mib=$((disk_mib - esp_start - esp_mib - 1))
rm -f "$out/disk.img" "$out/vmlinuz" "$out/initrd.img"
work="$out/disk.img.tmp"
rm -f "$work" "$work.esp"
truncate -s "${disk_mib}M" "$work"
sgdisk --clear \
  --new=1:${esp_start}M:+${esp_mib}M --typecode=1:EF00 --change-name=1:"EFI system partition" \
  --new=2:${root_start}M:+${root_mib}M --typecode=2:8304 --change-name=2:bulkhead-dom0 --partition-guid=2:"$root_partuuid" \
  "$work" >/dev/null 2>&1 || { sgdisk --print "$work" >&2; echo "build-image: sgdisk failed" >&2; exit 1; }
# ext4 straight into the disk file at the partition's offset (nodiscard: no hole punching near the
# partition table).
mkfs.ext4 -F -q -L bulkhead-dom0 -E offset=$((root_start * 1024 * 1024)),nodiscard -d "$stage" "$work" "${root_mib}M"
# The removable-media path EFI/BOOT/BOOTX64.EFI (firmware boots it with no boot entry in NVRAM: a
# USB stick, a fresh disk) is shim; shim starts grubx64.efi next to it (Debian's signed GRUB),
# which reads EFI/debian/grub.cfg (its built-in $prefix; dom0-rootfs/boot/esp-grub.cfg).
mkfs.fat -C -F 32 -S 512 -s 1 -n BULKHEADESP "$work.esp" $((esp_mib * 1024)) >/dev/null
mmd -i "$work.esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$work.esp" "$efi/shimx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work.esp" "$efi/grubx64.efi" ::/EFI/BOOT/grubx64.efi
mcopy -i "$work.esp" "$here/boot/esp-grub.cfg" ::/EFI/debian/grub.cfg
dd if="$work.esp" of="$work" bs=1M seek=$esp_start conv=notrunc,sparse status=none
rm -f "$work.esp"
sgdisk --verify "$work" | grep -q 'No problems found' || { sgdisk --verify "$work" >&2; exit 1; }
mv "$work" "$out/disk.img"
echo "image ($flavour): $out/disk.img (GPT: ESP + root PARTUUID=$root_partuuid; /$kernel, /$xen) in $(( $(date +%s) - t0 )) s" >&2
