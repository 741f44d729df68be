import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QmpClient } from '@bulkhead/qmp';
import { SerialConsole } from './serial-console';

export interface ImageMachineOptions {
  /** Directory with vmlinuz, initrd.img and disk.img (dom0-rootfs/build-image.sh). */
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
  /** More QEMU arguments, appended last (e.g. `-global ICH9-LPC.disable_s3=0` for S3). */
  extraQemuArgs?: string[];
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
 * keyboard and tablet are QEMU's virtio devices driven through QMP, USB devices are hot-plugged
 * into an emulated xHCI controller, the screen is a virtio-vga display read with screendump.
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
  private proc?: ChildProcess;
  private stderr = '';
  readonly runDir: string;

  constructor(readonly opts: ImageMachineOptions) {
    this.runDir = join(opts.artifactsDir, 'machine');
  }

  async boot(): Promise<void> {
    const { imageDir } = this.opts;
    for (const f of ['vmlinuz', 'initrd.img', 'disk.img'])
      if (!existsSync(join(imageDir, f)))
        throw new Error(`image: ${join(imageDir, f)} is missing (npm run image)`);
    mkdirSync(this.runDir, { recursive: true });
    this.cdpPort = await freePort();
    this.switcherPort = await freePort();
    this.devtoolsPort = await freePort();
    const stick = join(this.runDir, 'usb-stick.img');
    writeFileSync(stick, Buffer.alloc(16 * 1024 * 1024));
    const args = [
      '-machine',
      'q35',
      '-accel',
      'tcg,thread=multi',
      '-cpu',
      this.opts.cpu ?? process.env.BULKHEAD_E2E_CPU ?? DEFAULT_CPU,
      '-smp',
      '2',
      '-m',
      String(this.opts.memoryMiB ?? 3072),
      '-kernel',
      join(imageDir, 'vmlinuz'),
      '-initrd',
      join(imageDir, 'initrd.img'),
      // No KVM inside the image (its modules are blacklisted): with -cpu max the image's KVM probe
      // passes and the VMs run nested under TCG, and in that set-up the kiosk's renderer crashed
      // once. Without it the image's vm-daemon runs its VMs under TCG, as on any host without
      // VT-x/AMD-V. (Chromium's GPU process still dies now and then under TCG either way; the
      // kiosk lifts Chromium's GPU crash limit. Hiding svm from the CPU model broke systemd.)
      '-append',
      'root=/dev/vda rw console=ttyS0,115200 quiet systemd.show_status=false modprobe.blacklist=kvm_amd,kvm_intel',
      '-drive',
      `file=${join(imageDir, 'disk.img')},if=virtio,format=raw,snapshot=on`,
      '-drive',
      `if=none,id=stick,file=${stick},format=raw`,
      '-vga',
      'none',
      '-device',
      'virtio-vga',
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
    this.proc = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.on('data', (d) => (this.stderr += d));
    this.qmp = await QmpClient.connect(join(this.runDir, 'qmp.sock'), { retryUntilMs: 15_000 });
    this.serial = await SerialConsole.connect(join(this.runDir, 'serial.sock'));
    if (this.opts.rootShell === false) return;
    await this.serial.waitForShell(240_000).catch((e) => {
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

  async screendump(name: string): Promise<string> {
    const file = join(this.opts.artifactsDir, `${name}.png`);
    await this.qmp.execute('screendump', { filename: file, format: 'png' });
    return file;
  }

  async shutdown(): Promise<void> {
    this.serial?.close();
    await this.qmp?.close().catch(() => undefined);
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc!.once('exit', r));
      this.proc.kill('SIGKILL');
      await exited;
    }
  }
}
