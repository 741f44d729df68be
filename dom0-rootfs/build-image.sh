#!/usr/bin/env bash
# Builds the Control Domain image: base layer (cached, see build-base.sh) + the project's build +
# the overlay (systemd units, D-Bus policy, kiosk, VM definitions). Output in $OUT (default
# .cache/image for production, .cache/image-test for the test flavour): vmlinuz, initrd.img, disk.img (ext4, sparse). Re-imaging after a code change
# takes seconds: only the extract + copy + mkfs layer runs again.
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
for f in "$here"/vms/*.json; do install -m 0644 "$f" "$stage/etc/bulkhead/vms/"; done
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
  printf "/dev/vda / ext4 rw,relatime 0 1\n" > /etc/fstab
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

# --- kernel, initrd, disk ------------------------------------------------------------------------
cp "$(ls "$stage"/boot/vmlinuz-* | sort | tail -n 1)" "$out/vmlinuz"
cp "$(ls "$stage"/boot/initrd.img-* | sort | tail -n 1)" "$out/initrd.img"
rm -f "$out/disk.img"
truncate -s 6G "$out/disk.img"
mkfs.ext4 -F -q -L bulkhead-dom0 -d "$stage" "$out/disk.img"
echo "image ($flavour): $out (vmlinuz, initrd.img, disk.img) in $(( $(date +%s) - t0 )) s" >&2
