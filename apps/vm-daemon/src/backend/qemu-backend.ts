import { spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  fstatSync,
  rmSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import type { Logger } from '@bulkhead/common';
import type { VmDefinition } from '../config';
import { QmpClient, QmpClosedError, QmpError, QmpTimeoutError } from '@bulkhead/qmp';
import {
  CDROM_DRIVE,
  type QmpAccess,
  type RunningVm,
  type UsbAttachRequest,
  type VmBackend,
} from './backend';
import { SupervisedBackend, type Supervised } from './supervised-backend';
import { prepareDisks } from './disk-images';
import { probeKvm } from './kvm-probe';
import { qemuSandbox } from './qemu-sandbox';

export interface QemuBackendOptions {
  /** Root of the per-VM run dirs (<runRoot>/<id>/qmp.sock ...). */
  runRoot: string;
  log: Logger;
  qemuBinary?: string;
  /** Force an accelerator instead of probing (BULKHEAD_ACCEL). */
  accel?: 'kvm' | 'tcg' | null;
  /** A kernel that takes interrupts, used by the KVM probe (the test guest when built). */
  probeKernel?: string | null;
  /** How long QEMU may take to open its QMP socket. */
  startTimeoutMs?: number;
  /** The host's USB devices in sysfs (tests pass a directory of their own). */
  usbSysfsDir?: string;
}

/** Files of one VM's run dir. */
export function runFiles(runRoot: string, id: string) {
  const dir = join(runRoot, id);
  return {
    dir,
    qmp: join(dir, 'qmp.sock'),
    inputQmp: join(dir, 'input-qmp.sock'),
    /** A human monitor (HMP) for the administrator and the image tests ('info usb'): root only, like the run dir. */
    monitor: join(dir, 'monitor.sock'),
    vnc: join(dir, 'vnc.sock'),
    serial: join(dir, 'serial.log'),
    pid: join(dir, 'qemu.pid'),
    stderr: join(dir, 'qemu.stderr.log'),
  };
}

interface Instance extends Supervised {
  files: ReturnType<typeof runFiles>;
  pid: number;
  child: ChildProcess | null;
  qmp: QmpClient;
  adopted: boolean;
  /** Set before we stop or kill it, so its exit is 'stopped', not 'crashed'. */
  stopRequested: 'powerdown' | 'kill' | null;
  killedAfterTimeout: boolean;
  pollTimer: NodeJS.Timeout | null;
}

const USB_HANDLE_RE = /^usbhost-b(\d{1,3})-(a(\d{1,3})|p([0-9.]{1,32}))$/;

/**
 * The host USB devices one QEMU holds, from its QOM tree (`qom-list /machine/peripheral`): a
 * (handle, bus, address) per usb-host device of ours. Callers (usb-daemon) know a host device by
 * bus and address, so an attachment by port is reported at the address the host's kernel gives
 * the device now at that port (`addressAtPort`: sysfs devnum). QEMU's `hostaddr` of such a device
 * is the property as set, 0: usb-daemon took it for a device not on the host and recorded a stick
 * that business still held as back in the Control Domain (seen after vm-daemon's SIGKILL in the
 * KVM entry's e2e). `hostaddr` stays the answer where the port has no device (it went).
 */
export async function usbAttachments(
  entries: ReadonlyArray<{ name: string; type: string }>,
  hostaddr: (name: string) => Promise<number>,
  addressAtPort: (bus: number, port: string) => number | null,
): Promise<Array<[string, number, number]>> {
  const out: Array<[string, number, number]> = [];
  for (const e of entries) {
    const m = USB_HANDLE_RE.exec(e.name);
    if (!m || e.type !== 'child<usb-host>') continue;
    const bus = Number(m[1]);
    let address = m[3] ? Number(m[3]) : (addressAtPort(bus, m[4]) ?? 0);
    if (address === 0) address = await hostaddr(e.name).catch(() => 0);
    out.push([e.name, bus, address]);
  }
  return out;
}

/**
 * The address the kernel gave the USB device now at `<bus>-<port>` (sysfs `devnum`), or null
 * when nothing is there or it cannot be read. `port` is a port path ("1", "1.4"), checked.
 */
export function usbAddressAtPort(sysfsDir: string, bus: number, port: string): number | null {
  if (!Number.isInteger(bus) || !/^\d{1,3}(\.\d{1,3}){0,6}$/.test(port)) return null;
  try {
    const n = Number(readFileSync(join(sysfsDir, `${bus}-${port}`, 'devnum'), 'utf8').trim());
    return Number.isInteger(n) && n > 0 && n < 256 ? n : null;
  } catch {
    return null;
  }
}

/** The last non-empty line of a (possibly large) log file, or ''. */
export function lastLine(path: string, maxBytes = 4096): string {
  try {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const len = Math.min(size, maxBytes);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      const lines = buf
        .toString('utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean);
      return lines.pop() ?? '';
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** True when `pid` is a live (not zombie) process whose command line mentions `marker`. */
function processAlive(pid: number, marker?: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    if (marker) return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker);
    return true;
  } catch {
    return false;
  }
}

function qmpFailure(what: string, e: unknown): BulkheadError {
  if (e instanceof BulkheadError) return e;
  if (e instanceof QmpTimeoutError) return new BulkheadError('Timeout', `${what}: ${e.message}`);
  if (e instanceof QmpError) return new BulkheadError('BackendFailed', `${what}: QEMU says: ${e.desc}`);
  if (e instanceof QmpClosedError)
    return new BulkheadError('InvalidState', `${what}: QEMU went away (${e.message})`);
  return new BulkheadError('BackendFailed', `${what}: ${(e as Error)?.message ?? e}`);
}

/**
 * The embedded QEMU backend: one qemu-system-x86_64 per VM, supervised through its exit (our
 * children) or its QMP socket and pid (VMs adopted from an earlier daemon process).
 */
export class QemuBackend extends SupervisedBackend<Instance> implements VmBackend {
  readonly name = 'qemu';
  readonly runs = ['qemu'] as const;
  private accelPromise: Promise<string> | null = null;
  private readonly qemu: string;

  constructor(private readonly opts: QemuBackendOptions) {
    super(opts.log);
    this.qemu = opts.qemuBinary ?? 'qemu-system-x86_64';
  }

  accelerator(): Promise<string> {
    this.accelPromise ??= (async () => {
      if (this.opts.accel) {
        this.log.info(`accelerator ${this.opts.accel} (forced)`);
        return this.opts.accel;
      }
      const r = await probeKvm({ qemu: this.qemu, probeKernel: this.opts.probeKernel });
      this.log.info(`accelerator ${r.accel}: ${r.reason}`);
      return r.accel;
    })();
    return this.accelPromise;
  }

  async create(def: VmDefinition): Promise<void> {
    mkdirSync(runFiles(this.opts.runRoot, def.id).dir, { recursive: true, mode: 0o750 });
    await prepareDisks(def.file, def.disks);
  }

  private commandLine(def: VmDefinition, accel: string): string[] {
    const f = runFiles(this.opts.runRoot, def.id);
    const args = [
      '-sandbox',
      qemuSandbox(def.network),
      '-name',
      `${def.id},process=bulkhead-${def.id}`,
      '-machine',
      'pc',
      '-accel',
      accel,
      '-m',
      String(def.memoryMiB),
      '-smp',
      String(def.vcpus),
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-vga',
      'std',
      '-qmp',
      `unix:${f.qmp},server=on,wait=off`,
      '-qmp',
      `unix:${f.inputQmp},server=on,wait=off`,
      '-monitor',
      `unix:${f.monitor},server=on,wait=off`,
      '-serial',
      `file:${f.serial}`,
      '-pidfile',
      f.pid,
      '-device',
      'qemu-xhci,id=xhci',
    ];
    if (def.display === 'vnc') args.push('-vnc', `unix:${f.vnc}`);
    if (def.network.mode === 'none') args.push('-nic', 'none');
    else if (def.network.mode === 'user') args.push('-nic', 'user,model=virtio-net-pci');
    else args.push('-nic', `bridge,br=${def.network.bridge},model=virtio-net-pci`);
    for (const d of def.disks)
      args.push(
        '-drive',
        `file=${d.path},format=${d.format},if=virtio,readonly=${d.readonly ? 'on' : 'off'}`,
      );
    // An installation medium: a read-only CD-ROM booted before the disks (order=dc), so the
    // first start installs and, once it is ejected (the file no longer names it), the disk boots.
    if (def.cdrom)
      args.push(
        '-drive',
        `file=${def.cdrom},format=raw,media=cdrom,readonly=on,if=ide,index=2,id=${CDROM_DRIVE}`,
        '-boot',
        'order=dc',
      );
    for (const p of def.gpu?.pci ?? []) args.push('-device', `vfio-pci,host=${p}`);
    if (def.kernel) args.push('-kernel', def.kernel, '-append', def.append);
    return args;
  }

  async start(def: VmDefinition): Promise<RunningVm> {
    if (this.running.has(def.id)) throw new BulkheadError('InvalidState', `VM ${def.id} already runs`);
    if (def.kernel && !existsSync(def.kernel))
      throw new BulkheadError('InvalidConfig', `${def.file}: kernel: ${def.kernel} does not exist`);
    if (def.cdrom && !existsSync(def.cdrom))
      throw new BulkheadError(
        'InvalidConfig',
        `${def.file}: cdrom: ${def.cdrom} does not exist (was the USB stick removed?)`,
      );
    await this.create(def);
    const accel = await this.accelerator();
    const f = runFiles(this.opts.runRoot, def.id);
    for (const p of [f.qmp, f.inputQmp, f.vnc, f.pid]) rmSync(p, { force: true });
    const args = this.commandLine(def, accel);
    this.log.info(`starting ${def.id}: ${this.qemu} ${args.join(' ')}`);
    // stderr goes to a file, not a pipe: QEMU must outlive this daemon (re-adoption) without
    // dying of SIGPIPE, and the file still gives the last line for a crash reason.
    const errFd = openSync(f.stderr, 'w', 0o640);
    let child: ChildProcess;
    try {
      child = spawn(this.qemu, args, { stdio: ['ignore', 'ignore', errFd], detached: true });
    } finally {
      closeSync(errFd);
    }
    const spawnError = new Promise<never>((_, reject) =>
      child.once('error', (e) =>
        reject(new BulkheadError('BackendFailed', `cannot run ${this.qemu}: ${e.message}`)),
      ),
    );
    const earlyExit = new Promise<never>((_, reject) =>
      child.once('exit', (code, sig) =>
        reject(
          new BulkheadError(
            'BackendFailed',
            `qemu exited at start (${sig ? `signal ${sig}` : `code ${code}`}): ${lastLine(f.stderr)}`,
          ),
        ),
      ),
    );
    spawnError.catch(() => undefined);
    earlyExit.catch(() => undefined);
    let qmp: QmpClient;
    try {
      qmp = await Promise.race([
        QmpClient.connect(f.qmp, {
          retryUntilMs: this.opts.startTimeoutMs ?? 15_000,
          // The greeting comes once QEMU's main loop runs: 5 s was too short for a VM started in
          // the image under TCG on a loaded 2-core machine ("no reply to qmp_capabilities").
          timeoutMs: 15_000,
          commandTimeoutMs: 15_000,
        }),
        spawnError,
        earlyExit,
      ]);
    } catch (e) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      throw e instanceof BulkheadError
        ? e
        : new BulkheadError(
            'BackendFailed',
            `QEMU for ${def.id} did not open QMP: ${(e as Error).message}; stderr: ${lastLine(f.stderr)}`,
          );
    }
    shareDisplayWithGroup(f.dir, f.vnc, this.log);
    const inst = this.track(def, child.pid!, child, qmp, false);
    child.on('exit', (code, sig) => {
      const how = sig ? `signal ${sig}` : `code ${code}`;
      this.exited(inst, code === 0 && !sig, `qemu exited with ${how}`);
    });
    return {
      handle: { kind: 'pid', pid: inst.pid },
      inputQmpSocket: f.inputQmp,
      adopted: false,
      state: 'running',
    };
  }

  async adopt(def: VmDefinition): Promise<RunningVm | null> {
    if (this.running.has(def.id)) return null;
    const f = runFiles(this.opts.runRoot, def.id);
    let pid: number;
    try {
      pid = Number(readFileSync(f.pid, 'utf8').trim());
    } catch {
      return null;
    }
    if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid, f.qmp)) {
      this.log.info(`${def.id}: stale pid file ${f.pid} (pid ${pid} is not its QEMU); removing`);
      rmSync(f.pid, { force: true });
      return null;
    }
    let qmp: QmpClient;
    try {
      // The QEMU of a Start the previous daemon was killed in may not have opened QMP yet, or not
      // reached its main loop (the greeting): it gets as long as a start does (see start()).
      qmp = await QmpClient.connect(f.qmp, {
        retryUntilMs: this.opts.startTimeoutMs ?? 15_000,
        timeoutMs: 15_000,
        commandTimeoutMs: 15_000,
      });
    } catch (e) {
      // Ours (its command line names our QMP socket) but unreachable: it cannot be supervised,
      // and left running while the VM shows stopped, the next Start would run a second QEMU of
      // this VM beside it. It is ended, so that 'stopped' is true.
      let ended = '';
      if (processAlive(pid, f.qmp)) {
        try {
          process.kill(pid, 'SIGKILL');
          ended = '; killed it';
        } catch (k) {
          ended = `; cannot kill it: ${(k as Error).message}`;
        }
      }
      throw new BulkheadError(
        'BackendFailed',
        `QEMU of ${def.id} (pid ${pid}) runs but its QMP socket ${f.qmp} does not answer: ${(e as Error).message}${ended}`,
      );
    }
    const status = await qmp.execute<{ status: string }>('query-status').catch(() => ({ status: 'unknown' }));
    this.track(def, pid, null, qmp, true);
    this.log.info(`${def.id}: re-adopted QEMU pid ${pid} (${status.status})`);
    return {
      handle: { kind: 'pid', pid },
      inputQmpSocket: f.inputQmp,
      adopted: true,
      state: status.status === 'paused' ? 'paused' : 'running',
    };
  }

  private track(
    def: VmDefinition,
    pid: number,
    child: ChildProcess | null,
    qmp: QmpClient,
    adopted: boolean,
  ): Instance {
    const inst: Instance = {
      ...SupervisedBackend.supervision(),
      def,
      files: runFiles(this.opts.runRoot, def.id),
      pid,
      child,
      qmp,
      adopted,
      stopRequested: null,
      killedAfterTimeout: false,
      pollTimer: null,
    };
    this.running.set(def.id, inst);
    qmp.on('event', (ev) => {
      if (this.running.get(def.id) !== inst) return;
      if (ev.event === 'STOP') this.emit('state', def.id, 'paused', 'vCPUs stopped (QMP STOP)');
      else if (ev.event === 'RESUME') this.emit('state', def.id, 'running', 'vCPUs resumed (QMP RESUME)');
    });
    qmp.on('close', () => {
      if (inst.goneHandled || this.running.get(def.id) !== inst || !adopted) return;
      // Not our child: no exit status. The QMP socket closing is the signal; the pid confirms.
      const check = () => {
        if (!processAlive(pid)) {
          this.exited(inst, false, `qemu (pid ${pid}, adopted) is gone; exit status unknown (not our child)`);
        } else inst.pollTimer = setTimeout(check, 100);
      };
      check();
    });
    return inst;
  }

  /** The QEMU process ended (its exit, or for an adopted one its QMP closing and pid gone). */
  private exited(inst: Instance, cleanExit: boolean, how: string): void {
    this.ended(
      inst,
      () => {
        if (inst.pollTimer) clearTimeout(inst.pollTimer);
        void inst.qmp.close().catch(() => undefined);
        for (const p of [inst.files.qmp, inst.files.inputQmp, inst.files.vnc, inst.files.pid])
          rmSync(p, { force: true });
      },
      () => {
        if (inst.stopRequested)
          return {
            state: 'stopped',
            reason:
              inst.stopRequested === 'kill'
                ? inst.killedAfterTimeout
                  ? 'killed: the guest did not power off in time'
                  : 'killed on request'
                : 'powered off on request',
          };
        if (cleanExit) return { state: 'stopped', reason: 'the guest powered off (qemu exited with code 0)' };
        const err = lastLine(inst.files.stderr);
        return { state: 'crashed', reason: how + (err ? `; last stderr: ${err}` : '') };
      },
    );
  }

  private signal(inst: Instance, sig: NodeJS.Signals): void {
    try {
      if (inst.child) inst.child.kill(sig);
      else process.kill(inst.pid, sig);
    } catch {
      /* already gone */
    }
  }

  async stop(vmId: string, timeoutMs: number): Promise<{ killed: boolean }> {
    const inst = this.get(vmId);
    inst.stopRequested = 'powerdown';
    try {
      await inst.qmp.execute('system_powerdown', undefined, { timeoutMs: 5000 });
    } catch (e) {
      this.log.warn(`${vmId}: system_powerdown failed (${(e as Error).message}); killing`);
    }
    if (await this.waitGone(inst, timeoutMs)) return { killed: false };
    inst.stopRequested = 'kill';
    inst.killedAfterTimeout = true;
    this.signal(inst, 'SIGKILL');
    if (!(await this.waitGone(inst, 5000)))
      throw new BulkheadError('BackendFailed', `QEMU of ${vmId} (pid ${inst.pid}) survived SIGKILL`);
    return { killed: true };
  }

  async kill(vmId: string): Promise<void> {
    const inst = this.get(vmId);
    inst.stopRequested = 'kill';
    this.signal(inst, 'SIGKILL');
    if (!(await this.waitGone(inst, 5000)))
      throw new BulkheadError('BackendFailed', `QEMU of ${vmId} (pid ${inst.pid}) survived SIGKILL`);
  }

  async pause(vmId: string): Promise<void> {
    await this.qmpCall(vmId, 'stop');
  }

  async resume(vmId: string): Promise<void> {
    await this.qmpCall(vmId, 'cont');
  }

  private async qmpCall<T>(
    vmId: string,
    cmd: string,
    args?: Record<string, unknown>,
    timeoutMs = 10_000,
  ): Promise<T> {
    const inst = this.get(vmId);
    try {
      return await inst.qmp.execute<T>(cmd, args, { timeoutMs });
    } catch (e) {
      throw qmpFailure(`${vmId}: ${cmd}`, e);
    }
  }

  async screenshot(vmId: string, maxBytes: number): Promise<Buffer> {
    return this.screenshotFile(vmId, this.get(vmId).files.dir, maxBytes, (filename) =>
      this.qmpCall(vmId, 'screendump', { filename, format: 'png' }, 15_000),
    );
  }

  async attachUsb(vmId: string, req: UsbAttachRequest): Promise<string> {
    // The device id carries bus and address (or port), so ListUsbDevices can answer from QEMU
    // alone after a daemon restart.
    const id = req.port ? `usbhost-b${req.bus}-p${req.port}` : `usbhost-b${req.bus}-a${req.address}`;
    const args: Record<string, unknown> = { driver: 'usb-host', id, bus: 'xhci.0', hostbus: req.bus };
    if (req.port) args.hostport = req.port;
    else args.hostaddr = req.address;
    await this.qmpCall(vmId, 'device_add', args);
    return id;
  }

  async detachUsb(vmId: string, handle: string): Promise<void> {
    if (!USB_HANDLE_RE.test(handle))
      throw new BulkheadError('NoSuchDevice', `'${handle}' is not a USB attachment handle of this daemon`);
    try {
      await this.qmpCall(vmId, 'device_del', { id: handle });
    } catch (e) {
      if (e instanceof BulkheadError && /not found|DeviceNotFound/i.test(e.message))
        throw new BulkheadError('NoSuchDevice', `${vmId} has no USB attachment ${handle}`);
      throw e;
    }
  }

  async listUsb(vmId: string): Promise<Array<[string, number, number]>> {
    const entries = await this.qmpCall<Array<{ name: string; type: string }>>(vmId, 'qom-list', {
      path: '/machine/peripheral',
    });
    const sysfs = this.opts.usbSysfsDir ?? '/sys/bus/usb/devices';
    return usbAttachments(
      entries,
      (name) =>
        this.qmpCall<number>(vmId, 'qom-get', { path: `/machine/peripheral/${name}`, property: 'hostaddr' }),
      (bus, port) => usbAddressAtPort(sysfs, bus, port),
    );
  }

  qmp(vmId: string): QmpAccess | null {
    return this.running.get(vmId)?.qmp ?? null;
  }

  /** Let every QEMU run on without us: close QMP, forget the children (next start re-adopts). */
  async detachAll(): Promise<void> {
    for (const inst of this.running.values()) {
      inst.goneHandled = true;
      if (inst.pollTimer) clearTimeout(inst.pollTimer);
      inst.child?.removeAllListeners('exit');
      inst.child?.unref();
      await inst.qmp.close().catch(() => undefined);
    }
    this.running.clear();
  }
}

/** The group whose members (the switcher's web host) may open VMs' VNC displays, and nothing else. */
export const DISPLAY_GROUP = 'bulkhead-vnc';

/**
 * Let the display group reach a VM's VNC socket: the VM's run dir becomes group-traversable and
 * vnc.sock group-writable (connecting to a unix socket needs write permission). The QMP and HMP
 * sockets beside it keep QEMU's mode (no group write), so the group cannot connect to them.
 * Without the group (developer machines, tests) nothing changes.
 */
export function shareDisplayWithGroup(dir: string, vncSocket: string, log: { warn(m: string): void }): void {
  let gid: number | undefined;
  try {
    const line = readFileSync('/etc/group', 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`${DISPLAY_GROUP}:`));
    gid = line ? Number(line.split(':')[2]) : undefined;
  } catch {
    return;
  }
  if (gid === undefined || !existsSync(vncSocket)) return;
  try {
    // The runs root and the VM's own dir: traversable by the group, nothing more.
    for (const d of [dirname(dir), dir]) {
      chownSync(d, process.getuid?.() ?? 0, gid);
      chmodSync(d, 0o750);
    }
    chownSync(vncSocket, process.getuid?.() ?? 0, gid);
    chmodSync(vncSocket, 0o660);
  } catch (e) {
    log.warn(`cannot share ${vncSocket} with group ${DISPLAY_GROUP}: ${(e as Error).message}`);
  }
}
