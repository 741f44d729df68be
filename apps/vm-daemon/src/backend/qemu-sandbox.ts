/** The seccomp filter of every QEMU that vm-daemon starts for a VM (qemu-backend.ts). */
import type { VmDefinition } from '../config';

/**
 * QEMU's seccomp filter (`-sandbox`) for a VM's QEMU. QEMU runs as root in the Control Domain and
 * is where a guest's hostile input lands (its device models); a guest that escapes them must not
 * get root's whole syscall surface. So, as libvirt does by default, every VM's QEMU installs
 * QEMU's deny-list before it creates any device: obsolete syscalls, changing uid/gid
 * (elevateprivileges), starting a process (spawn: fork, vfork, execve, clone of anything but a
 * thread, unshare, setns) and scheduling/priority changes (resourcecontrol, answered EPERM). A
 * denied spawn or id change kills that QEMU with SIGSYS, which the core reports as a crash.
 *
 * Checked against what we ask of QEMU, each under the filter with QEMU 7.2 (qemu-sandbox.qemu.test.ts):
 * QMP screendump, stop/cont, eject, usb-host device_add/device_del (libusb's event thread is a
 * thread, allowed; device nodes are opened), qom-list/qom-get, input-send-event,
 * system_powerdown, input-daemon's `input-linux` objects (open and ioctl of its uinput node), VNC
 * on a unix socket, user networking (slirp runs inside QEMU). None of them spawns. GPU
 * passthrough (vfio-pci: open, ioctl, mmap of its device) needs nothing denied either, but no
 * machine here has a device to try it with.
 *
 * Left out: spawn=deny for a bridged VM. `-nic bridge` has QEMU run qemu-bridge-helper (fork +
 * exec) while it creates the netdev, after the filter is in place: with spawn=deny that QEMU died
 * of SIGSYS at start. Its other sub-options stay. Never add `-daemonize` either: QEMU 7.2 forks
 * for it after installing the filter and died of SIGSYS with spawn=deny (vm-daemon keeps QEMU as
 * its child instead, supervised through its exit).
 *
 * Not Xen's device models (the QEMU libxl starts in dom0 for an HVM guest's emulated devices or a
 * PV guest's framebuffer): Debian 12's xen-qemu-system-i386 is built without seccomp ("-sandbox
 * support is not enabled in this QEMU binary": given through xl's device_model_args, every HVM
 * domain's creation failed in the Xen entry). libxl's own deprivileging (dm_restrict: the device
 * model as an unprivileged user, chrooted) is the Xen way to confine it; not done here.
 */
export function qemuSandbox(network: VmDefinition['network']): string {
  const denied = ['obsolete=deny', 'elevateprivileges=deny'];
  if (network.mode !== 'bridge') denied.push('spawn=deny');
  denied.push('resourcecontrol=deny');
  return ['on', ...denied].join(',');
}
