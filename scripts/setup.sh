#!/usr/bin/env bash
# One-time (and idempotent) set-up for a fresh Debian 12 machine with Node 20 and npm:
# Debian packages, npm dependencies, TypeScript build, the native addon and the test guest.
# Called by `npm start`, `npm test` and `npm run bench`; cheap when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Debian packages ------------------------------------------------------------------------------
# command → package that provides it
declare -A NEED=(
  [dbus-daemon]=dbus
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [chromium]=chromium
  [socat]=socat
  [gcc]=gcc
  [make]=make
  [mmdebstrap]=mmdebstrap
  [zstd]=zstd
  [rsync]=rsync
  [mkfs.ext4]=e2fsprogs
  [busctl]=systemd
  # The image's UEFI disk (dom0-rootfs/build-image.sh): GPT, the FAT EFI system partition (the
  # signed shim and GRUB it holds are fetched by the build with apt-get download, not installed).
  [sgdisk]=gdisk
  [mkfs.fat]=dosfstools
  [mcopy]=mtools
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# Headers the native addons compile against (input-daemon's PAM check for Unlock).
[ -f /usr/include/security/pam_appl.h ] || missing+=(libpam0g-dev)
# The UEFI firmware the image's e2e boots the disk with.
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing+=(ovmf)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# --- npm dependencies (skipped when package-lock.json has not changed) ---------------------------
export ELECTRON_SKIP_BINARY_DOWNLOAD=1
stamp=node_modules/.bulkhead-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

# --- build -----------------------------------------------------------------------------------------
echo "setup: build"
# The generated contract files are committed: stale ones are an error to fix, never regenerated
# here behind the back of the test that checks them (service-host.test.ts).
if ! node shared/contract/scripts/codegen.mjs --check; then
  echo "setup: the generated contract files listed above are stale: run 'npm run codegen' and commit the result" >&2
  exit 1
fi
npx tsc -b
npm run build --workspaces --if-present --silent
make -s -C apps/vm-daemon/guest
