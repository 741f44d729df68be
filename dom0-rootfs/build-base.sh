#!/usr/bin/env bash
# Builds (or reuses) the base layer of the Control Domain image: a Debian 12 rootfs with the
# packages of packages.txt, as a zstd tarball in the cache, keyed by the hash of its inputs.
# Prints the tarball's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${BULKHEAD_CACHE:-/var/cache/bulkhead}
mkdir -p "$cache"
key=$(cat "$here/packages.txt" "$here/build-base.sh" | sha256sum | cut -c1-16)
out="$cache/dom0-base-$key.tar.zst"
if [ -s "$out" ]; then
  echo "base layer cached: $out" >&2
  echo "$out"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "need mmdebstrap (apt-get install mmdebstrap zstd)" >&2; exit 1; }
pkgs=$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -)
tmp="$out.tmp.$$"
echo "building base layer (mmdebstrap, a few minutes) → $out" >&2
# bookworm-security carries the current Chromium and kernel.
mmdebstrap --mode=root --variant=minbase --include="$pkgs" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  bookworm "$tmp.tar" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >&2
zstd -q -T0 -3 --rm "$tmp.tar" -o "$tmp"
mv "$tmp" "$out"
echo "$out"
