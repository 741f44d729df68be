#!/bin/sh
# PATH shim used by the harness: when /run/harness/destroy-before-attach exists, the next
# `xl pci-attach <domid> ...` first destroys <domid> (a target VM destroyed mid-switch), then runs
# the real xl, which fails as it would in life.
if [ "$1" = "pci-attach" ] && [ -e /run/harness/destroy-before-attach ]; then
  rm -f /run/harness/destroy-before-attach
  /usr/lib/xen-4.17/bin/xl destroy "$2" >&2
fi
exec /usr/lib/xen-4.17/bin/xl "$@"
