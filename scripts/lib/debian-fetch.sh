# Sourced by the builds that take Debian's kernel (guests/linux/build.sh, xen-harness/build-dom0.sh);
# part of their cache keys. Needs from the caller: KVER (the pinned kernel ABI, e.g. 6.1.0-57-amd64),
# cannot_fetch MESSAGE (exits 75: the tests then say "skipped"), and kernel_changed (called when
# KVER was replaced, to recompute the cache key; it may exit when that result is already cached).
# FETCH_WHO prefixes the messages ("linux guest: ").

# fetch_kernel_debs DIR PACKAGE...: apt-get download linux-image-$KVER and PACKAGE... into DIR. When
# that fails, the package lists are refreshed once and it is tried again; when the pinned kernel ABI
# has left the archive, the one linux-image-amd64 points at now is taken (KVER changes).
fetch_kernel_debs() {
  local dir=$1
  shift
  _fetch_debs() { (cd "$dir" && apt-get download -q "linux-image-$KVER" "$@" >&2); }
  _fetch_debs "$@" && return 0
  echo "${FETCH_WHO:-}apt-get download failed; refreshing the package lists once" >&2
  apt-get update -q >&2 || cannot_fetch "apt-get update failed"
  _fetch_debs "$@" && return 0
  KVER=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*-amd64\)$/\1/p' | head -1)
  [ -n "$KVER" ] || cannot_fetch "no linux-image-amd64 in the package lists"
  echo "${FETCH_WHO:-}using kernel $KVER" >&2
  kernel_changed
  _fetch_debs "$@" || cannot_fetch "apt-get download linux-image-$KVER $*"
}
