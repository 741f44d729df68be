#!/usr/bin/env bash
# Does KVM run guests nested under this QEMU's TCG? A quick check without the Control Domain image
# (dom0-rootfs/README.md, "Nested KVM on the outer TCG"): boots Debian's kernel (the one the Linux
# test guest uses) with a busybox initramfs that carries kvm/kvm_amd/kvm_intel, the host's own
# qemu-system-x86_64 with its libraries and firmware, the toy guest and the Linux test guest, under
# `qemu -accel tcg -cpu CPU`; inside, it loads KVM and runs `qemu -accel kvm` with each guest,
# printing `NESTED <test> READY after N s` or `NESTED <test> TIMEOUT`.
# Usage: guests/linux/nested-kvm-check.sh [CPU] [TESTS] [KVM-MODULE-ARGS]   (run as root)
#   CPU   outer -cpu model, default the image e2e's (e2e/src/image-machine.ts DEFAULT_CPU)
#   TESTS comma-separated from toy (toy kernel, -kernel), linux (test guest, -kernel), iso (test
#         guest's guest.iso through SeaBIOS and GRUB); default toy,linux,iso
#   KVM-MODULE-ARGS e.g. "npt=0" for kvm_amd
# Needs guests/linux/build.sh's output (.cache/linux-guest) and the toy guest (make -C
# apps/vm-daemon/guest). Takes ~2 min with all three tests. Exit 0 when every test reached READY.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CPU=${1:-max,avx=off,avx2=off,fma=off,f16c=off}
TESTS=${2:-toy,linux,iso}
KVMARGS=${3:-}
guest=$repo/.cache/linux-guest
toy=$repo/apps/vm-daemon/guest/build/bulkhead-guest.elf
for f in "$guest/vmlinuz" "$guest/initrd.img" "$guest/guest.iso" "$guest/kernel-version" "$toy"; do
  [ -s "$f" ] || { echo "nested-kvm-check: $f is missing (guests/linux/build.sh; make -C apps/vm-daemon/guest)" >&2; exit 1; }
done
case "$KVMARGS" in *[!a-z0-9_=\ ]*) echo "nested-kvm-check: module arguments: a-z 0-9 _ = only" >&2; exit 2 ;; esac
KVER=$(cat "$guest/kernel-version")
Q=$(command -v qemu-system-x86_64)

cannot_fetch() { echo "nested-kvm-check: cannot fetch from Debian: $*" >&2; exit 75; }
kernel_changed() { echo "nested-kvm-check: kernel $KVER left the archive; rebuild the guest first" >&2; exit 75; }
FETCH_WHO="nested-kvm-check: "
# shellcheck source=../../scripts/lib/debian-fetch.sh
. "$repo/scripts/lib/debian-fetch.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
fetch_kernel_debs "$tmp" busybox-static
dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/kernel"
dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/busybox"
mods=$tmp/kernel/lib/modules/$KVER
depmod -b "$tmp/kernel" "$KVER"

r=$tmp/root
mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp,guest,usr/share,usr/lib/x86_64-linux-gnu,lib64,lib/modules/"$KVER"}
cp "$tmp/busybox/bin/busybox" "$r/bin/"
for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
for a in modprobe insmod lsmod; do ln -sf ../bin/busybox "$r/sbin/$a"; done
files=$(grep -E '^kernel/arch/x86/kvm/kvm(-amd|-intel)?\.ko:' "$mods/modules.dep" | tr -d ':' | tr ' ' '\n' | grep . | sort -u)
# shellcheck disable=SC2086 # a list of module paths, split on purpose
(cd "$mods" && cp --parents $files modules.order modules.builtin modules.builtin.modinfo "$r/lib/modules/$KVER/")
depmod -b "$r" "$KVER"
cp "$Q" "$r/bin/"
for l in $(ldd "$Q" | awk '/=>/ { print $3 }'); do cp -L "$l" "$r/usr/lib/x86_64-linux-gnu/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
cp -rL /usr/share/qemu /usr/share/seabios "$r/usr/share/"
cp "$toy" "$r/guest/toy.elf"
cp "$guest/vmlinuz" "$guest/initrd.img" "$guest/guest.iso" "$r/guest/"
mknod -m 600 "$r/dev/console" c 5 1
cat >"$r/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev; mount -t tmpfs tmpfs /tmp
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tr ',' ' '; }
echo "NESTED cpu flags: $(grep -o -w -E 'svm|vmx|npt|ept' /proc/cpuinfo | sort -u | tr '\n' ' ')"
vendor=amd; grep -q -w vmx /proc/cpuinfo && vendor=intel
modprobe kvm_$vendor $(arg nested.kvmargs) || echo "NESTED modprobe kvm_$vendor failed"
[ -c /dev/kvm ] || { echo "NESTED no /dev/kvm"; echo NESTED-DONE; poweroff -f; }
echo "NESTED kvm_$vendor: $(for p in /sys/module/kvm_$vendor/parameters/*; do printf '%s=%s ' "${p##*/}" "$(cat "$p")"; done)"
run() { # name timeout-s qemu-args...
  n=$1; t=$2; shift 2
  s0=$(cut -d' ' -f1 /proc/uptime)
  qemu-system-x86_64 -accel kvm -machine pc -nodefaults -no-user-config -display none -vga std \
    -L /usr/share/qemu -L /usr/share/seabios -serial file:/tmp/$n.log "$@" 2>/tmp/$n.err &
  pid=$!; i=0; res=TIMEOUT
  while [ $i -lt "$t" ]; do
    if grep -q -E 'BULKHEAD-(LINUX-)?GUEST READY' /tmp/$n.log 2>/dev/null; then res=READY; break; fi
    kill -0 $pid 2>/dev/null || { res="EXITED ($(tail -n 1 /tmp/$n.err))"; break; }
    sleep 1; i=$((i + 1))
  done
  echo "NESTED $n $res after $(awk -v a="$s0" '{ print $1 - a }' /proc/uptime) s"
  kill -9 $pid 2>/dev/null; sleep 1
  dmesg | grep -i -E 'kvm|svm|vmx' | tail -n 3 | sed 's/^/NESTED dmesg: /'
}
for t in $(arg nested.tests); do case $t in
  toy) run toy 120 -m 32 -kernel /guest/toy.elf -append name=toy ;;
  linux) run linux 300 -m 192 -kernel /guest/vmlinuz -initrd /guest/initrd.img -append "console=ttyS0,115200 quiet bulkhead.name=Lab" ;;
  iso) run iso 400 -m 192 -drive file=/guest/guest.iso,format=raw,media=cdrom,readonly=on,if=ide,index=2 -boot order=dc ;;
  *) echo "NESTED unknown test $t" ;;
esac; done
echo NESTED-DONE
poweroff -f
EOF
chmod 755 "$r/init"
(cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$tmp/initramfs.cpio"
echo "nested-kvm-check: outer -cpu $CPU, tests $TESTS${KVMARGS:+, kvm module: $KVMARGS}" >&2
log=$tmp/serial.log
timeout 1200 "$Q" -machine q35 -accel tcg,thread=multi -cpu "$CPU" -smp 2 -m 2048 -display none \
  -nodefaults -no-reboot -kernel "$tmp/kernel/boot/vmlinuz-$KVER" -initrd "$tmp/initramfs.cpio" \
  -append "console=ttyS0,115200 quiet nested.tests=$TESTS nested.kvmargs=${KVMARGS// /,}" \
  -serial "file:$log" || true
grep -a '^NESTED' "$log" | tr -d '\r'
grep -q '^NESTED-DONE' "$log" || { echo "nested-kvm-check: the outer kernel did not finish (serial log above)" >&2; exit 1; }
want=$(echo "$TESTS" | tr ',' '\n' | grep -c .)
got=$(grep -a -c -E '^NESTED [a-z]+ READY after' "$log" || true)
[ "$got" = "$want" ]
