import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { QmpClient } from '@bulkhead/qmp';
import { classify, parseHexColor, readPpm, type Picture, type Rgb } from './screen-picture';
import { ConsoleSilentError, SerialConsole } from './serial-console';
import { waitFor } from './wait';

/** The GRUB entries of the image's boot menu (dom0-rootfs/boot/grub.cfg.in). */
export type BootEntry = 'kvm' | 'xen';

export interface ImageMachineOptions {
  /** Directory with disk.img, the UEFI disk (dom0-rootfs/build-image.sh). */
  imageDir: string;
  /** Where the serial log and screendumps go. */
  artifactsDir: string;
  memoryMiB?: number;
  /** QEMU -cpu model (default: DEFAULT_CPU, or $BULKHEAD_E2E_CPU). */
  cpu?: string;
  /**
   * Wait for the root shell on the serial console (the test flavour's autologin). false for the
   * production flavour, which has none: the console then only asks for a login.
   */
  rootShell?: boolean;
  /**
   * The display device (`-device …`) instead of the entry's own (ENTRY_ARGS below). power.e2e.ts
   * asks for `qxl-vga`: an S3 wake in QEMU 7.2 resets every device, and of the displays tried
   * (virtio-vga, VGA, qxl-vga; bochs-display and ramfb ruled out) only qxl's Linux 6.1 driver
   * restores it on resume in a way cage can use (power.e2e.ts has the details).
   */
  display?: string;
  /**
   * The outer machine's emulated VT-d with interrupt remapping (`-device intel-iommu,intremap=on`),
   * which Xen needs to pass a PCI device through to a guest (gpu-xen.e2e.ts; xen-harness does the
   * same). It goes before every PCI device, not with `extraQemuArgs`: QEMU gives a device its DMA
   * address space (and so its MSI path) when the device is made, and a device made before the IOMMU
   * bypasses it, so its MSIs would not go through the remapping Xen sets up for it.
   */
  iommu?: boolean;
  /** More QEMU arguments, appended last (e.g. `-global ICH9-LPC.disable_s3=0` for S3). */
  extraQemuArgs?: string[];
  /**
   * The boot menu's entry to boot (default 'kvm', the plain kernel; 'xen' is the menu's default
   * on a laptop). Chosen by the machine, not typed at the menu: see `bootChoice`.
   */
  entry?: BootEntry;
  /**
   * Watch the screen from QEMU's start until the kiosk shows the tiles, and record that time
   * (boot-to-tiles: artifacts/boot-to-tiles-<entry>.json and bench-results.json). Default: on
   * when `rootShell` is (the test flavour shows the tiles by itself; production first asks for the
   * owner's password on the screen).
   */
  recordBootToTiles?: boolean;
  /**
   * KVM entry: let the image load KVM (kvm_amd, on the AMD-V that the outer TCG emulates with
   * -cpu max), so its vm-daemon's probe finds KVM working and runs the VMs nested under it instead
   * of under TCG inside TCG. Default off: the modules are blacklisted (see ENTRY_ARGS).
   */
  kvmInside?: boolean;
}

/** UEFI firmware (Debian's ovmf): the code read-only, a fresh copy of the variable store per boot. */
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/**
 * A boot whose console printed nothing for this long before its shell came is taken as hung (see
 * ImageMachine.boot). dom0's kernel boots `quiet`, so a normal boot is silent from Xen's last line
 * (or GRUB's) until the autologin shell: about a minute under TCG, a few at a loaded CI's worst.
 */
const BOOT_SILENT_MS = 360_000;

/**
 * What each entry needs here and a laptop does not: the e2e's QEMU is the only place these live
 * (the disk's boot menu has none of them).
 * - kvm: `console=ttyS0,115200`: the kernel's messages go to the serial log the e2e keeps, and
 *   tty1 stays free of them (the production test reads the first-start prompt off the screen).
 *   `modprobe.blacklist=kvm_amd,kvm_intel`: no KVM inside the image. With -cpu max the image's KVM
 *   probe passes and the VMs run nested under TCG, and in that set-up the kiosk's renderer crashed
 *   once. Without it the image's vm-daemon runs its VMs under TCG, as on any host without
 *   VT-x/AMD-V. (Chromium's GPU process still dies now and then under TCG either way; the kiosk
 *   lifts Chromium's GPU crash limit. Hiding svm from the CPU model broke systemd.)
 *   `kvmInside` leaves the blacklist out: vm-lifecycle.e2e.ts boots so, as its Linux guest from
 *   the ISO does not boot under TCG inside TCG within its budget. Since the AVX2 cause of
 *   Chromium's crashes was found (DEFAULT_CPU), that file passed whole with nested KVM and the
 *   kiosk served it throughout (2026-12-01); the other e2e files keep the blacklist (not tried).
 * - xen: Xen's console on the serial port (`console=com1 com1=115200,8n1`) and dom0's on Xen's
 *   (`console=hvc0`), so the serial log has both and the test layer's root shell is on hvc0.
 *   `spec-ctrl=eager-fpu`: Xen switches FPU state lazily (CR0.TS + #NM) on this AMD-looking TCG
 *   CPU by default, and under TCG that corrupts the FPU/SSE registers of dom0's processes as soon
 *   as another domain runs (node SIGSEGVs, xl aborts; xen-harness/README.md has the measurements).
 *   The display is `virtio-vga,iommu_platform=on`: dom0 is a PV guest, whose "physical" addresses
 *   are not the machine's; virtio-gpu hands the device its framebuffer pages by physical address
 *   unless the device asks for the DMA API (VIRTIO_F_ACCESS_PLATFORM), which under Xen translates
 *   them (xen-swiotlb). Plain virtio-vga showed garbage under PV dom0 in an earlier try (issue
 *   15); with this the kiosk is drawn right (xen-entry.e2e.ts). A laptop's GPU is not virtio.
 */
const ENTRY_ARGS: Record<BootEntry, { xen: string; linux: string; cpu: string; display: string }> = {
  kvm: {
    xen: '',
    linux: 'console=ttyS0,115200 modprobe.blacklist=kvm_amd,kvm_intel',
    cpu: '',
    display: 'virtio-vga',
  },
  xen: {
    xen: 'console=com1 com1=115200,8n1 spec-ctrl=eager-fpu',
    linux: 'console=hvc0',
    // -smap: Xen 4.17's PV dom0 crashes under TCG with SMAP on (xen-harness/README.md).
    cpu: ',-smap',
    display: 'virtio-vga,iommu_platform=on',
  },
};

/**
 * The entry choice as QEMU's SMBIOS OEM string (type 11), which the boot menu reads
 * (`bulkhead.boot=<entry>;<Xen args>;<kernel args>`, dom0-rootfs/boot/grub.cfg.in): no key is
 * typed at the menu and the disk stays the same for every entry. A ',' in a QEMU option is ',,'.
 */
export function bootChoice(entry: BootEntry, opts: { kvmInside?: boolean } = {}): string[] {
  const a = ENTRY_ARGS[entry];
  const linux =
    entry === 'kvm' && opts.kvmInside ? a.linux.replace(/ ?modprobe\.blacklist=\S*/, '') : a.linux;
  const value = `bulkhead.boot=${entry};${a.xen};${linux}`;
  return ['-smbios', `type=11,value=${value.replaceAll(',', ',,')}`];
}

/**
 * The CPU model of the Control Domain machine under TCG: `max` without AVX/AVX2 (and the features
 * that come with them). With them, Chromium's GPU process in the image died of SIGSEGV in 3 of 3
 * boots by the 7th hotkey switch, always at the same instruction — an AVX2 `vpgatherdd` (Skia's
 * image sampling; chromium 156, text offset 0x4db7f1, vaddr 0x326f7f1) reading at the start of an
 * unmapped page — and the kiosk showed "Aw, Snap!" for good. QEMU 7.2 is the first QEMU that
 * emulates AVX2 under TCG; the same code runs on real CPUs everywhere. Without AVX Chromium takes
 * its SSE paths and did not crash in any boot since.
 */
export const DEFAULT_CPU = 'max,avx=off,avx2=off,fma=off,f16c=off';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/**
 * The Control Domain image booted in QEMU (TCG here, KVM where it works), as a person's laptop:
 * UEFI firmware (OVMF) boots the disk's GRUB, which boots the chosen entry (`entry`); keyboard and
 * tablet are QEMU's virtio devices driven through QMP, USB devices are hot-plugged into an
 * emulated xHCI controller, the screen is a virtio-vga display read with screendump.
 * The disk is used with -snapshot: every boot starts from the built image.
 */
export class ImageMachine {
  qmp!: QmpClient;
  serial!: SerialConsole;
  /** Host ports forwarded to the image's TCP 9223 (the test layer's DevTools forward), 8080 (the
   * web host, loopback-only inside) and 9222 (Chromium's DevTools port, loopback-only when on). */
  cdpPort = 0;
  switcherPort = 0;
  devtoolsPort = 0;
  /** When QEMU was started (Date.now()): boot-to-tiles counts from here. */
  startedAt = 0;
  /** Boot-to-tiles in ms once the watcher saw the tiles (see `recordBootToTiles`). */
  bootToTilesMs?: number;
  private proc?: ChildProcess;
  private watching = false;
  /** Which boot a boot-to-tiles watcher belongs to (a silent boot's watcher stops at the next). */
  private bootNumber = 0;
  private stderr = '';
  readonly runDir: string;

  constructor(readonly opts: ImageMachineOptions) {
    this.runDir = join(opts.artifactsDir, 'machine');
  }

  get entry(): BootEntry {
    return this.opts.entry ?? 'kvm';
  }

  /**
   * Boots, and boots once more if the console falls silent before the shell (BOOT_SILENT_MS). A
   * fresh clone's CI run (2026-12-02 07:44) hung inside the Xen entry's dom0 kernel: the serial
   * log ended at Xen's "about to get started...", QEMU spun at 189 % CPU, and nothing came for the
   * 600 s the shell is given, so all ten scenarios of the file failed; the same image's next boot
   * was fine. No Bulkhead code had run yet: a hang of TCG, not of the product, so a second boot,
   * said in the output, is the right answer. Only silence counts: a slow boot that prints goes on.
   */
  async boot(): Promise<void> {
    try {
      await this.bootOnce();
    } catch (e) {
      if (!(e instanceof ConsoleSilentError)) throw e;
      console.log(
        `image (${this.entry} entry): ${e.message}: booting once more (the silent boot's console: serial-silent.log)`,
      );
      await this.shutdown();
      const log = join(this.runDir, 'serial.log');
      if (existsSync(log)) renameSync(log, join(this.runDir, 'serial-silent.log'));
      await this.bootOnce();
    }
  }

  private async bootOnce(): Promise<void> {
    const { imageDir } = this.opts;
    for (const f of [join(imageDir, 'disk.img'), OVMF_CODE, OVMF_VARS])
      if (!existsSync(f))
        throw new Error(
          `image: ${f} is missing (${f.startsWith(imageDir) ? 'npm run image' : 'apt-get install ovmf'})`,
        );
    mkdirSync(this.runDir, { recursive: true });
    this.cdpPort = await freePort();
    this.switcherPort = await freePort();
    this.devtoolsPort = await freePort();
    const stick = join(this.runDir, 'usb-stick.img');
    writeFileSync(stick, Buffer.alloc(16 * 1024 * 1024));
    // The firmware's variable store is written by OVMF at boot: a fresh copy each time, as the
    // disk (snapshot=on) starts from the built image each time.
    const vars = join(this.runDir, 'OVMF_VARS.fd');
    copyFileSync(OVMF_VARS, vars);
    const entry = this.entry;
    const args = [
      '-machine',
      'q35',
      '-accel',
      'tcg,thread=multi',
      '-cpu',
      (this.opts.cpu ?? process.env.BULKHEAD_E2E_CPU ?? DEFAULT_CPU) + ENTRY_ARGS[entry].cpu,
      '-smp',
      '2',
      '-m',
      String(this.opts.memoryMiB ?? 3072),
      ...(this.opts.iommu ? ['-device', 'intel-iommu,intremap=on'] : []),
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${vars}`,
      ...bootChoice(entry, { kvmInside: this.opts.kvmInside }),
      '-drive',
      `file=${join(imageDir, 'disk.img')},if=virtio,format=raw,snapshot=on`,
      '-drive',
      `if=none,id=stick,file=${stick},format=raw`,
      '-vga',
      'none',
      '-device',
      this.opts.display ?? ENTRY_ARGS[entry].display,
      '-display',
      'none',
      '-device',
      'virtio-keyboard-pci,id=kbd',
      '-device',
      'virtio-tablet-pci,id=tablet',
      '-device',
      'virtio-mouse-pci,id=mouse',
      '-device',
      'qemu-xhci,id=xhci',
      '-netdev',
      `user,id=n,hostfwd=tcp:127.0.0.1:${this.cdpPort}-:9223,hostfwd=tcp:127.0.0.1:${this.switcherPort}-:8080,hostfwd=tcp:127.0.0.1:${this.devtoolsPort}-:9222`,
      '-device',
      'virtio-net-pci,netdev=n',
      '-qmp',
      `unix:${join(this.runDir, 'qmp.sock')},server=on,wait=off`,
      '-chardev',
      `socket,id=s0,path=${join(this.runDir, 'serial.sock')},server=on,wait=off,logfile=${join(this.runDir, 'serial.log')}`,
      '-serial',
      'chardev:s0',
      ...(this.opts.extraQemuArgs ?? []),
    ];
    this.startedAt = Date.now();
    this.proc = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.on('data', (d) => (this.stderr += d));
    this.qmp = await QmpClient.connect(join(this.runDir, 'qmp.sock'), { retryUntilMs: 15_000 });
    this.serial = await SerialConsole.connect(join(this.runDir, 'serial.sock'));
    // Xen entry: dom0's console input passes Xen's 128-byte serial ring (SerialConsole.typingChunk).
    if (entry === 'xen') this.serial.typingChunk = 32;
    this.bootNumber++;
    if (this.opts.recordBootToTiles ?? this.opts.rootShell !== false)
      void this.watchBootToTiles(this.bootNumber);
    if (this.opts.rootShell === false) return;
    // Xen, then a PV dom0 under TCG (every page-table update a hypercall): slower to its shell.
    await this.serial
      .waitForShell(entry === 'xen' ? 600_000 : 240_000, { silentMs: BOOT_SILENT_MS })
      .catch((e) => {
        if (e instanceof ConsoleSilentError) throw e;
        throw new Error(`${(e as Error).message}; qemu stderr: ${this.stderr}`);
      });
  }

  /** Press and release keys (QEMU qcodes) at the outer keyboard, one frame per event. */
  async keys(...qcodes: string[][]): Promise<void> {
    for (const chord of qcodes) {
      for (const k of chord) await this.key(k, true);
      for (const k of [...chord].reverse()) await this.key(k, false);
    }
  }

  /**
   * Types text at the outer keyboard, one key per character (lower-case letters, digits, '-', ' ',
   * '\n' for Enter): what a person types, e.g. a password on the lock screen.
   */
  async typeText(text: string): Promise<void> {
    const qcodes: Record<string, string> = { '-': 'minus', ' ': 'spc', '\n': 'ret', '.': 'dot' };
    for (const ch of text) {
      const q = /^[a-z0-9]$/.test(ch) ? ch : qcodes[ch];
      if (!q) throw new Error(`typeText: no key for ${JSON.stringify(ch)} (a-z, 0-9, '-', '.', ' ', '\\n')`);
      await this.keys([q]);
    }
  }

  async key(qcode: string, down: boolean): Promise<void> {
    // No 'device': QEMU delivers to the keyboard the guest uses (naming one needs it bound to a
    // console). Every keyboard is grabbed by input-daemon anyway.
    await this.qmp.execute('input-send-event', {
      events: [{ type: 'key', data: { down, key: { type: 'qcode', data: qcode } } }],
    });
    await new Promise((r) => setTimeout(r, 30));
  }

  async button(button: 'left' | 'right' | 'middle', down: boolean): Promise<void> {
    await this.qmp.execute('input-send-event', { events: [{ type: 'btn', data: { down, button } }] });
  }

  /**
   * Plugs the machine's USB stick (the 16 MiB `stick` drive made at boot) into the outer xHCI, as
   * a person plugs one in: QEMU's usb-storage, vendor 46f4, product 0001, serial BULKHEAD0001.
   */
  async plugUsbStick(): Promise<void> {
    await this.qmp.execute('device_add', {
      driver: 'usb-storage',
      drive: 'stick',
      bus: 'xhci.0',
      id: 'stick0',
      serial: 'BULKHEAD0001',
    });
  }

  /** A property of a daemon, read inside the image with busctl (e.g. 's "running"'). */
  async busProperty(dest: string, path: string, iface: string, name: string): Promise<string> {
    return (await this.serial.check(`busctl get-property ${dest} ${path} ${iface} ${name}`)).trim();
  }

  /** Wait until systemd has every Bulkhead service of the image active (the kiosk included). */
  async waitForServices(timeoutMs: number, pollMs?: number): Promise<void> {
    await waitFor(
      'the Bulkhead services',
      async () =>
        (
          await this.serial.run(
            'systemctl is-active bulkhead-vm-daemon bulkhead-input-daemon bulkhead-usb-daemon bulkhead-switcher bulkhead-kiosk',
          )
        ).code === 0,
      timeoutMs,
      pollMs,
    );
  }

  /** VmManager1.ActiveVm: a VM's object path, or '/' for the switcher. */
  /**
   * A person's switch by hotkey: Ctrl+<slot> at the outer keyboard, then ActiveVm (read over the
   * serial shell) is `path` ('/' for the switcher) within `timeoutMs`; `what` names it in a timeout.
   */
  async hotkeyTo(slot: number, path: string, what: string, timeoutMs = 60_000): Promise<void> {
    await this.keys(['ctrl', String(slot)]);
    await waitFor(what, async () => (await this.activeVm()) === path, timeoutMs);
  }

  async activeVm(): Promise<string> {
    const out = await this.busProperty(
      'org.bulkhead.VmManager1',
      '/org/bulkhead/VmManager1',
      'org.bulkhead.VmManager1',
      'ActiveVm',
    );
    return out.replace(/^o "|"$/g, '');
  }

  /** A Vm1 property of the VM `id`, read inside the image with busctl, without its type ('s "x"' → 'x'). */
  async vmProperty(id: string, name: string): Promise<string> {
    const out = await this.busProperty(
      'org.bulkhead.VmManager1',
      `/org/bulkhead/VmManager1/vm/${id}`,
      'org.bulkhead.Vm1',
      name,
    );
    return out.replace(/^[a-z]+ "?|"$/g, '');
  }

  /** Vm1.State of the VM `id` ('running', 'stopped', …). */
  vmState(id: string): Promise<string> {
    return this.vmProperty(id, 'State');
  }

  /** The input lines (KEY/BTN/REL) a nested test VM has printed on its serial port so far. */
  async guestInput(id: string): Promise<string[]> {
    const out = await this.serial.check(
      `grep -E '^(KEY|BTN|REL) ' /run/bulkhead/vms/${id}/serial.log || true`,
    );
    // grep's lines only: the image's kernel prints on the same serial console (e.g. KVM's
    // 'Unhandled WRMSR' when a nested guest starts), and such a line is no input.
    return out
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^(KEY|BTN|REL) /.test(l));
  }

  /**
   * Xen entry: the input events a Linux test guest's own kernel delivered, as `type code value`
   * ('1 30 1' is KEY_A pressed), from its `BULKHEAD-INPUT dev=… type=… code=… value=…` console
   * lines (guests/linux/README.md), which xenconsoled logs in the test layer.
   */
  async xenGuestInput(id: string): Promise<string[]> {
    const out = await this.serial.check(
      `grep -a 'BULKHEAD-INPUT dev=' /var/log/xen/console/guest-${id}.log || true`,
    );
    return out
      .split('\n')
      .map((l) => /BULKHEAD-INPUT dev="[^"]*" type=(\d+) code=(\d+) value=(-?\d+)/.exec(l))
      .filter((x): x is RegExpExecArray => x !== null)
      .map((x) => `${x[1]} ${x[2]} ${x[3]}`);
  }

  /**
   * How the running input-daemon (its current systemd invocation only, so after a restart not its
   * predecessor's lines) reaches VM `id`: 'uinput' (the fast path: QEMU's input-linux reads a
   * uinput device), 'qmp' (input-send-event per frame: the fallback), or 'none' when it has not
   * opened one yet; with the lines it logged about it, for a failure's message.
   */
  async inputPathOf(id: string): Promise<{ path: 'uinput' | 'qmp' | 'none'; lines: string }> {
    const lines = await this.serial.check(
      `journalctl -b --no-pager -o cat _SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value bulkhead-input-daemon) | grep -E 'vm/${id}: (input via|uinput fast path failed)' || true`,
    );
    const last =
      lines
        .trim()
        .split('\n')
        .filter((l) => / input via /.test(l))
        .pop() ?? '';
    return {
      path: / input via uinput /.test(last) ? 'uinput' : / input via qmp /.test(last) ? 'qmp' : 'none',
      lines: lines.trim(),
    };
  }

  /** Xen entry: each domain's name and domid, from `xl list` in dom0 (Domain-0 included). */
  async xlDomids(): Promise<Record<string, number>> {
    const out = await this.serial.check('xl list');
    const domids: Record<string, number> = {};
    for (const line of out.split('\n')) {
      const x = /^(\S+)\s+(\d+)\s+\d+\s+\d+\s/.exec(line.trim());
      if (x) domids[x[1]] = Number(x[2]);
    }
    return domids;
  }

  /**
   * Runs `cmd` in the root shell on the serial console (30 s bound) and keeps its output in the
   * artifacts dir as `file`: what the files' after() hooks save. A console that is gone or does not
   * answer leaves no file and no error.
   */
  async saveOutput(cmd: string, file: string): Promise<void> {
    await this.serial
      ?.run(cmd, { timeoutMs: 30_000 })
      .then((r) => writeFileSync(join(this.opts.artifactsDir, file), r.output))
      .catch(() => undefined);
  }

  /**
   * The Xen entry's after() artifacts: the daemons' and Xen's journal, Xen's and dom0's kernel
   * logs, the domains and the tails of their console logs.
   */
  async saveXenState(): Promise<void> {
    await this.saveOutput(
      'journalctl -b --no-pager -u "bulkhead-*" -u xen | tail -n 400',
      'journal-tail.txt',
    );
    await this.saveOutput('xl dmesg | tail -n 200', 'xl-dmesg-tail.txt');
    await this.saveOutput('dmesg | tail -n 200', 'dmesg-tail.txt');
    await this.saveOutput('xl list; tail -n 60 /var/log/xen/console/guest-*.log', 'xen-guests-tail.txt');
  }

  /**
   * The output of `cmd` in the root shell on the serial console (30 s bound), for a test's own
   * report (CI keeps no artifacts); words saying why when the console is gone or does not answer.
   */
  async outputOf(cmd: string): Promise<string> {
    if (!this.serial) return '(not read: no console)';
    return this.serial
      .run(cmd, { timeoutMs: 30_000 })
      .then((r) => r.output)
      .catch((e: Error) => `(not read: ${e.message})`);
  }

  /**
   * A PNG screendump in the artifacts dir. `device`: the qdev id of one display when the machine
   * has more than one (QMP screendump's `device`; the two-GPU rig, gpu-xen-two.e2e.ts); none: the
   * first display.
   */
  async screendump(name: string, device?: string): Promise<string> {
    const file = join(this.opts.artifactsDir, `${name}.png`);
    await this.qmp.execute('screendump', { filename: file, format: 'png', ...(device ? { device } : {}) });
    return file;
  }

  /** The picture on one display now (a PPM screendump to `file`, read back); `device` as in screendump. */
  async screenPicture(file: string, device?: string): Promise<Picture> {
    await this.qmp.execute('screendump', { filename: file, ...(device ? { device } : {}) });
    return readPpm(file);
  }

  /**
   * Polls the screen (QMP screendump, nothing else) from boot until it shows the tiles, for at most
   * 15 minutes, then records the time from QEMU's start. A measurement, not a check: a boot that
   * never shows the tiles fails in the scenario that waits for them.
   */
  private async watchBootToTiles(boot: number): Promise<void> {
    const vms = readImageVms();
    const ppm = join(this.runDir, `boot-to-tiles-${boot}.ppm`);
    this.watching = true;
    while (this.watching && boot === this.bootNumber && Date.now() - this.startedAt < 15 * 60_000) {
      try {
        await this.qmp.execute('screendump', { filename: ppm });
        const at = Date.now();
        if (classify(readPpm(ppm), vms).kind === 'tiles') {
          this.bootToTilesMs = at - this.startedAt;
          recordBootToTiles(this.opts.artifactsDir, this.entry, this.bootToTilesMs);
          break;
        }
      } catch {
        // QEMU not ready yet, or gone (shutdown): try again, or stop below.
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (boot === this.bootNumber) this.watching = false;
    if (existsSync(ppm)) unlinkSync(ppm);
  }

  async shutdown(): Promise<void> {
    this.watching = false;
    this.serial?.close();
    await this.qmp?.close().catch(() => undefined);
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc!.once('exit', r));
      this.proc.kill('SIGKILL');
      await exited;
    }
  }
}

const repo = join(__dirname, '..', '..');

/** One of the image's VM files (dom0-rootfs/vms/*.json), as the screen checks need it. */
export interface ImageVm {
  id: string;
  slot: number;
  /** The color its test guest paints: what `classify` looks for on the screen. */
  color: Rgb;
  /** The file's `backend` ('qemu' where it names none, as vm-daemon reads it). */
  backend: string;
}

/**
 * The image's VMs and the color each test guest paints (dom0-rootfs/vms/*.json): every file, or
 * only those of one backend ('qemu': the KVM entry's, 'xen': the Xen entry's).
 */
export function readImageVms(backend?: string): ImageVm[] {
  const dir = join(repo, 'dom0-rootfs', 'vms');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as Record<string, unknown>)
    .map((v) => ({
      id: String(v.id),
      slot: Number(v.slot),
      color: parseHexColor(String(v.color)),
      backend: String(v.backend ?? 'qemu'),
    }))
    .filter((v) => backend === undefined || v.backend === backend);
}

/**
 * Writes boot-to-tiles of one boot to artifacts/…/boot-to-tiles-<entry>.json and into
 * bench-results.json as `e2e/boot-to-tiles/<entry>` (the last boot of that entry wins, next to
 * what `npm run bench` wrote).
 */
function recordBootToTiles(artifactsDir: string, entry: BootEntry, ms: number): void {
  const numbers = { bootToTilesMs: ms, at: new Date().toISOString(), run: process.argv[1] ?? '' };
  writeFileSync(join(artifactsDir, `boot-to-tiles-${entry}.json`), JSON.stringify(numbers, null, 2) + '\n');
  recordBench(`e2e/boot-to-tiles/${entry}`, numbers);
}

/**
 * Puts one entry into bench-results.json (written by `npm run bench`) under `name`, keeping what
 * is there; the last run of an entry wins, so `npm run bench`'s numbers and the image's sit in one
 * file.
 */
export function recordBench(name: string, entry: Record<string, unknown>): void {
  const file = join(repo, 'bench-results.json');
  let results: { date?: string; benchmarks: Record<string, unknown> };
  try {
    results = JSON.parse(readFileSync(file, 'utf8')) as typeof results;
    results.benchmarks ??= {};
  } catch {
    // No bench run yet (or an unreadable file): start a fresh one.
    results = { date: new Date().toISOString(), benchmarks: {} };
  }
  results.benchmarks[name] = entry;
  writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
}
