/**
 * The Xen backend: domains driven through `xl` (JSON output only: `xl list -l`) and watched
 * through xenstore (@releaseDomain fires when a domain shuts down or is destroyed).
 *
 * Domain name = VM id. Per VM run dir <runRoot>/<id>/: <id>.cfg (generated), domain.json (domid,
 * uuid, paused: what a restarted daemon needs to re-adopt), input-qmp.sock (every kind: the QMP
 * monitor of the QEMU that serves the guest's keyboard and pointer, see xl-config.ts; it is the
 * VM's InputQmpSocket), and for HVM qmp.sock and serial.log. A running VM's handle is its domid.
 *
 * How a domain's end is classified (no human output parsed):
 *   stop requested by us                      → stopped
 *   core dump <dumpDir>/<id> written by xl    → crashed (on_crash = "coredump-destroy")
 *   gone otherwise                            → stopped, reason says it was not requested
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import {
  defaultFileRules,
  readDefinitionFile,
  setAsideSaying,
  writeFileAtomic,
  type Logger,
} from '@bulkhead/common';
import type { VmDefinition } from '../../config';
import type { QmpAccess, RunningVm, UsbAttachRequest, VmBackend } from '../backend';
import { SupervisedBackend, type Supervised } from '../supervised-backend';
import { shareDisplayWithGroup } from '../qemu-backend';
import { prepareDisks } from '../disk-images';
import { QmpClient } from '@bulkhead/qmp';
import { generateXlConfig } from './xl-config';
import { XEN_CDROM_VDEV } from './xl-cdrom';
import { ppmToPng } from './ppm-png';
import { parseXlListJson, usbdevsText, type XlDomain, type XlUsbDev } from './xl-list';
import { xenstoreRead, xl, type XenstoreWatch, type XlRunner } from './xl-runner';
import { loadXenOptions, pvUsbUnsupported, type XenGuestOptions } from './xen-options';

export interface XenBackendOptions {
  runRoot: string;
  runner: XlRunner;
  log: Logger;
  /** Where xl writes core dumps (XEN_DUMP_DIR). */
  dumpDir?: string;
  /** Where xl's per-domain logs are (xl-<name>.log: how each domain shut down); default /var/log/xen. */
  xlLogDir?: string;
  /** Time limits of xl commands. */
  createTimeoutMs?: number;
  commandTimeoutMs?: number;
  /** How long a start waits for a dying domain of the same name to be gone (default 30 s). */
  nameFreeTimeoutMs?: number;
  /** Safety-net poll of `xl list -l` besides the xenstore watch (default 10 s; 0 = off). */
  pollMs?: number;
  /** dom0's USB device at a sysfs bus id ("1-1"): its bus number and address (default: sysfs). */
  usbBusAddr?: (busid: string) => { bus: number; address: number } | null;
}

/** Bus number and address of dom0's USB device `busid` from sysfs, as libxl itself does. */
export function sysfsUsbBusAddr(busid: string): { bus: number; address: number } | null {
  if (!/^\d+-[\d.]+$/.test(busid)) return null;
  try {
    const read = (f: string) => Number(readFileSync(`/sys/bus/usb/devices/${busid}/${f}`, 'utf8').trim());
    const bus = read('busnum');
    const address = read('devnum');
    return Number.isInteger(bus) && Number.isInteger(address) ? { bus, address } : null;
  } catch {
    return null;
  }
}

interface Domain extends Supervised {
  opts: XenGuestOptions;
  domid: number;
  uuid: string;
  paused: boolean;
  adopted: boolean;
  stopRequested: 'shutdown' | 'destroy' | null;
  killedAfterTimeout: boolean;
  qmp: LazyQmp | null;
}

interface PersistedDomain {
  domid: number;
  uuid: string;
  paused: boolean;
}

const USB_HANDLE_RE = /^xenusb-c(\d{1,3})-p(\d{1,3})$/;

/** A QMP connection opened on first use and re-opened after QEMU closed it. */
class LazyQmp implements QmpAccess {
  private client: Promise<QmpClient> | null = null;
  constructor(private readonly path: string) {}
  async execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts?: { timeoutMs?: number },
  ): Promise<T> {
    this.client ??= QmpClient.connect(this.path, {
      retryUntilMs: 5000,
      timeoutMs: 5000,
      commandTimeoutMs: 15_000,
    }).then((c) => {
      c.on('close', () => (this.client = null));
      return c;
    });
    let c: QmpClient;
    try {
      c = await this.client;
    } catch (e) {
      this.client = null;
      throw e;
    }
    return c.execute<T>(command, args, opts);
  }
  async close(): Promise<void> {
    const c = this.client;
    this.client = null;
    if (c) await (await c.catch(() => null))?.close().catch(() => undefined);
  }
}

export class XenBackend extends SupervisedBackend<Domain> implements VmBackend {
  readonly name = 'xen';
  readonly runs = ['xen'] as const;
  private readonly runner: XlRunner;
  private readonly dumpDir: string;
  private readonly cmdMs: number;
  private watch: XenstoreWatch | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private reconciling: Promise<void> | null = null;
  private reconcileAgain = false;
  private closed = false;

  constructor(private readonly opts: XenBackendOptions) {
    super(opts.log);
    this.runner = opts.runner;
    this.dumpDir = opts.dumpDir ?? '/var/lib/xen/dump';
    this.cmdMs = opts.commandTimeoutMs ?? 30_000;
  }

  private files(id: string) {
    const dir = join(this.opts.runRoot, id);
    return {
      dir,
      cfg: join(dir, `${id}.cfg`),
      state: join(dir, 'domain.json'),
      qmp: join(dir, 'qmp.sock'),
      inputQmp: join(dir, 'input-qmp.sock'),
      vnc: join(dir, 'vnc.sock'),
      serial: join(dir, 'serial.log'),
    };
  }

  async accelerator(): Promise<string> {
    return 'xen';
  }

  /** All domains xl knows (dom0 included). */
  async listDomains(): Promise<XlDomain[]> {
    return parseXlListJson(await xl(this.runner, ['list', '-l'], this.cmdMs));
  }

  /**
   * The domains this backend runs, as it knows them now (its creates, adoptions and death
   * watch): what GpuHolder compares its last `xl list -l` with before reusing it.
   */
  runningDomains(): Array<{ name: string; domid: number }> {
    return [...this.running.values()]
      .filter((d) => !d.goneHandled)
      .map((d) => ({ name: d.def.id, domid: d.domid }));
  }

  /** Domid of a VM this backend runs, or null. */
  domidOf(vmId: string): number | null {
    const d = this.running.get(vmId);
    return d && !d.goneHandled ? d.domid : null;
  }

  async create(def: VmDefinition): Promise<void> {
    mkdirSync(this.files(def.id).dir, { recursive: true, mode: 0o750 });
    if (def.disks.length) await prepareDisks(def.file, def.disks);
  }

  /** The xl config this backend would write for `def` (also written to <runDir>/<id>.cfg at start). */
  configFor(def: VmDefinition): { text: string; opts: XenGuestOptions } {
    const opts = loadXenOptions(def);
    return { text: generateXlConfig(def, opts, { runDir: this.files(def.id).dir }), opts };
  }

  async start(def: VmDefinition): Promise<RunningVm> {
    if (this.running.has(def.id))
      throw new BulkheadError(
        'InvalidState',
        `VM ${def.id} already runs (domid ${this.running.get(def.id)!.domid})`,
      );
    for (const p of [def.kernel])
      if (p && !existsSync(p))
        throw new BulkheadError('InvalidConfig', `${def.file}: kernel: ${p} does not exist`);
    if (def.cdrom && !existsSync(def.cdrom))
      throw new BulkheadError(
        'InvalidConfig',
        `${def.file}: cdrom: ${def.cdrom} does not exist (was the USB stick removed?)`,
      );
    const { text, opts } = this.configFor(def);
    if (opts.ramdisk && !existsSync(opts.ramdisk))
      throw new BulkheadError('InvalidConfig', `${def.file}: ramdisk: ${opts.ramdisk} does not exist`);
    await this.create(def);
    const f = this.files(def.id);
    const clash = (await this.listDomains()).find((d) => d.name === def.id);
    if (clash)
      throw new BulkheadError(
        'InvalidState',
        `a Xen domain named '${def.id}' already exists (domid ${clash.domid}) but is not tracked; destroy it or restart vm-daemon to adopt it`,
      );
    await this.waitForNameFree(def.id);
    writeFileSync(f.cfg, text, { mode: 0o640 });
    for (const p of [f.qmp, f.inputQmp, f.vnc, join(this.dumpDir, def.id)]) rmSync(p, { force: true });
    this.ensureWatching();
    this.log.info(`starting ${def.id} (${opts.type}): xl create ${f.cfg}`);
    await xl(this.runner, ['create', f.cfg], this.opts.createTimeoutMs ?? 180_000);
    const dom = (await this.listDomains()).find((d) => d.name === def.id);
    if (!dom)
      throw new BulkheadError(
        'BackendFailed',
        `xl create ${f.cfg} succeeded but no domain named '${def.id}' exists afterwards (it died at once?)`,
      );
    this.track(def, opts, dom, false, false);
    // The guest's screen (xl-config.ts; HVM: its emulated VGA, PV/PVH: its vfb): the switcher's
    // web host may open it, nobody else.
    if (def.display === 'vnc') shareDisplayWithGroup(f.dir, f.vnc, this.log);
    this.log.info(`${def.id}: running as domid ${dom.domid}`);
    return {
      handle: { kind: 'domid', domid: dom.domid },
      inputQmpSocket: f.inputQmp,
      adopted: false,
      state: 'running',
    };
  }

  /**
   * Waits until no domain holds the name `id`. A domain gone from `xl list -l` can still hold it
   * while Xen tears it down (xl destroys a rebooted guest's domain, on_reboot = "destroy"), and an
   * `xl create` in that window fails in libxl's rename of the new domain ("cannot make domain: -6",
   * seen in CI when a rebooted HVM guest was started again at once). `xl domid <name>` looks the
   * name up as libxl's rename does, dying domains included.
   */
  private async waitForNameFree(id: string): Promise<void> {
    const bound = this.opts.nameFreeTimeoutMs ?? 30_000;
    const end = Date.now() + bound;
    for (;;) {
      const r = await this.runner.run('xl', ['domid', id], this.cmdMs);
      if (r.code !== 0) return;
      if (Date.now() >= end)
        throw new BulkheadError(
          'BackendFailed',
          `the Xen domain ${r.stdout.trim()} still holds the name '${id}' ${bound / 1000} s after it left xl's list (Xen is still destroying it); start it again later`,
        );
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** VMs whose domain rebooted while no vm-daemon ran (found by adopt), with why. */
  private readonly rebootedAway = new Map<string, string>();

  rebootedWhileAway(vmId: string): string | null {
    const why = this.rebootedAway.get(vmId) ?? null;
    this.rebootedAway.delete(vmId);
    return why;
  }

  async adopt(def: VmDefinition): Promise<RunningVm | null> {
    if (this.running.has(def.id)) return null;
    const dom = (await this.listDomains()).find((d) => d.name === def.id);
    const f = this.files(def.id);
    let persisted: PersistedDomain | null = null;
    // Our own record (a regular file of ours, a few hundred bytes): anything else is no record.
    const record = readDefinitionFile(f.state, { ...defaultFileRules(), maxBytes: 64 * 1024 });
    let unusable: string | null = record.ok || record.missing ? null : record.reason;
    try {
      if (record.ok) persisted = JSON.parse(record.text) as PersistedDomain;
    } catch (e) {
      unusable = `corrupt: ${(e as Error).message}`;
    }
    if (unusable !== null) {
      // No record: adopted with what xl says. The file is kept for a person, not deleted below.
      const aside = setAsideSaying(f.state);
      this.log.warn(`${def.id}: ${f.state}: ${unusable}; adopting from xl alone; ${aside}`);
    }
    if (!dom) {
      // The domain the last daemon ran is gone. If its guest rebooted meanwhile (xl destroyed the
      // domain, on_reboot = "destroy"), nobody started it again: the core asks rebootedWhileAway.
      const domid = persisted?.domid;
      if (Number.isInteger(domid) && this.shutdownReasonCode(def.id, domid!) === 1)
        this.rebootedAway.set(
          def.id,
          `domain ${domid}: the guest rebooted while vm-daemon was not running; xl destroyed the domain (on_reboot = "destroy")`,
        );
      rmSync(f.state, { force: true });
      return null;
    }
    if (persisted && persisted.domid !== dom.domid)
      this.log.warn(
        `${def.id}: domain.json says domid ${persisted.domid}, xl has ${dom.domid}: the domain was re-created outside vm-daemon; adopting ${dom.domid}`,
      );
    let opts: XenGuestOptions;
    try {
      opts = loadXenOptions(def);
    } catch {
      opts = {
        type: dom.type === 'hvm' || dom.type === 'pvh' ? dom.type : 'pv',
        ramdisk: null,
        usbctrl: null,
        pci: [],
        serialLog: false,
        deviceModelArgs: [],
      };
    }
    // Whether it is paused: Xen's own flag (the 'p' of `xl list <domid>`'s State column). The
    // record is the fallback only: a daemon SIGKILLed between `xl pause`/`unpause` and the record's
    // write left it saying the opposite (a paused VM shown running, never resumed).
    const recorded = persisted?.domid === dom.domid ? persisted.paused : false;
    const paused = (await this.pausedInXen(dom.domid)) ?? recorded;
    if (paused !== recorded)
      this.log.warn(
        `${def.id}: domain.json says ${recorded ? 'paused' : 'running'}, Xen has domain ${dom.domid} ${paused ? 'paused' : 'running'} (a daemon ended between xl and the record); adopting it ${paused ? 'paused' : 'running'}`,
      );
    this.ensureWatching();
    this.track(def, opts, dom, true, paused);
    this.log.info(`${def.id}: re-adopted domid ${dom.domid}${paused ? ' (paused)' : ''}`);
    return {
      handle: { kind: 'domid', domid: dom.domid },
      inputQmpSocket: f.inputQmp,
      adopted: true,
      state: paused ? 'paused' : 'running',
    };
  }

  /**
   * Whether the toolstack paused domain `domid`, from `xl list <domid>` (human output: the
   * State column's third flag is 'p'); null when that cannot be read.
   */
  private async pausedInXen(domid: number): Promise<boolean | null> {
    let out: string;
    try {
      out = await xl(this.runner, ['list', String(domid)], this.cmdMs);
    } catch (e) {
      this.log.warn(`xl list ${domid}: ${(e as Error).message}; the paused flag comes from domain.json`);
      return null;
    }
    for (const line of out.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < 6 || f[f.length - 5] !== String(domid)) continue;
      const state = f[f.length - 2];
      // r b p s <shutdown reason letter> d (xl_info.c's list_domains).
      if (/^[-r][-b][-p][-s]\S[-d]$/.test(state)) return state[2] === 'p';
    }
    return null;
  }

  private track(
    def: VmDefinition,
    opts: XenGuestOptions,
    dom: XlDomain,
    adopted: boolean,
    paused: boolean,
  ): Domain {
    const d: Domain = {
      ...SupervisedBackend.supervision(),
      def,
      opts,
      domid: dom.domid,
      uuid: dom.uuid,
      paused,
      adopted,
      stopRequested: null,
      killedAfterTimeout: false,
      // HVM: its device model; PV/PVH: the QEMU serving its vfb/vkb (xl-config.ts).
      qmp: new LazyQmp(this.files(def.id).qmp),
    };
    this.running.set(def.id, d);
    this.persist(d);
    return d;
  }

  private persist(d: Domain): void {
    try {
      writeFileAtomic(
        this.files(d.def.id).state,
        JSON.stringify({ domid: d.domid, uuid: d.uuid, paused: d.paused } satisfies PersistedDomain) + '\n',
        0o640,
      );
    } catch (e) {
      this.log.error(`${d.def.id}: cannot write ${this.files(d.def.id).state}: ${(e as Error).message}`);
    }
  }

  // ------------------------------------------------------------ supervision

  private ensureWatching(): void {
    if (this.closed) return;
    if (!this.watch) {
      this.watch = this.runner.watch(
        '@releaseDomain',
        () => this.reconcileSoon(),
        (why) => {
          this.watch = null;
          if (this.closed) return;
          this.log.warn(`xenstore watch ended (${why}); re-arming in 1 s`);
          setTimeout(() => this.running.size && this.ensureWatching(), 1000).unref();
        },
      );
    }
    const pollMs = this.opts.pollMs ?? 10_000;
    if (!this.pollTimer && pollMs > 0) {
      this.pollTimer = setInterval(() => this.running.size && this.reconcileSoon(), pollMs);
      this.pollTimer.unref();
    }
  }

  /** Compare tracked domains with xl's list; one run at a time, coalescing bursts of watch events. */
  reconcileSoon(): Promise<void> {
    if (this.reconciling) {
      this.reconcileAgain = true;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      do {
        this.reconcileAgain = false;
        try {
          await this.reconcile();
        } catch (e) {
          this.log.warn(`checking domains failed: ${(e as Error).message}`);
        }
      } while (this.reconcileAgain && !this.closed);
    })().finally(() => (this.reconciling = null));
    return this.reconciling;
  }

  private async reconcile(): Promise<void> {
    if (!this.running.size) return;
    const live = await this.listDomains();
    for (const d of [...this.running.values()]) {
      const now = live.find((l) => l.domid === d.domid);
      if (now && now.name === d.def.id) continue;
      this.gone(d);
    }
  }

  /** The domain is no longer in xl's list (or no longer under its name). */
  private gone(d: Domain): void {
    const dump = join(this.dumpDir, d.def.id);
    // How the guest ended by itself, from xl's log, read once by `ended`'s release (which runs
    // before its classify) and used by both.
    let endCode: number | null = null;
    this.ended(
      d,
      () => {
        void d.qmp?.close();
        if (!d.stopRequested) endCode = this.shutdownReasonCode(d.def.id, d.domid);
        // A rebooted guest's record is kept until its next start writes the new one: a daemon
        // killed before that start finds it (adopt → rebootedWhileAway) and starts it again.
        if (endCode !== 1) rmSync(this.files(d.def.id).state, { force: true });
      },
      () => {
        if (d.stopRequested)
          return {
            state: 'stopped',
            reason:
              d.stopRequested === 'destroy'
                ? d.killedAfterTimeout
                  ? 'destroyed: the guest did not shut down in time'
                  : 'destroyed on request'
                : 'shut down on request',
          };
        if (existsSync(dump)) {
          let size = 0;
          try {
            size = statSync(dump).size;
          } catch {
            /* raced with cleanup */
          }
          return {
            state: 'crashed',
            reason: `domain ${d.domid} crashed (xl wrote a core dump: ${dump}, ${size} bytes)`,
          };
        }
        switch (endCode) {
          case 0:
            return { state: 'stopped', reason: `domain ${d.domid}: the guest powered off` };
          case 1:
            return {
              state: 'stopped',
              reason: `domain ${d.domid}: the guest rebooted (it asked to, or an HVM guest triple-faulted); xl destroyed the domain (on_reboot = "destroy")`,
              guestReboot: true,
            };
          case 3:
            return { state: 'crashed', reason: `domain ${d.domid} crashed (no core dump was written)` };
          case 4:
            return { state: 'crashed', reason: `domain ${d.domid}: the guest's watchdog fired` };
          default:
            return {
              state: 'stopped',
              reason: `domain ${d.domid} is gone without a stop request from vm-daemon (the guest powered off or rebooted, or it was destroyed outside vm-daemon)`,
            };
        }
      },
    );
  }

  /**
   * How domain `domid` of VM `id` shut down, as xl's own process for it logged before destroying it
   * (xl-<name>.log: "Domain <domid> has shut down, reason code <n> ..."; libxl's shutdown reasons:
   * 0 poweroff, 1 reboot, 2 suspend, 3 crash, 4 watchdog, 5 soft reset), or null when the log has
   * no such line for this domid (destroyed outside xl's monitor, or the log is unreadable).
   */
  private shutdownReasonCode(id: string, domid: number): number | null {
    let text: string;
    try {
      const file = join(this.opts.xlLogDir ?? '/var/log/xen', `xl-${id}.log`);
      // The log of one domain's life is a few lines; a huge one is not read whole.
      if (statSync(file).size > 1 << 20) return null;
      text = readFileSync(file, 'utf8');
    } catch {
      return null;
    }
    const re = new RegExp(`^Domain ${domid} has shut down, reason code (\\d+)`, 'gm');
    let code: number | null = null;
    for (const m of text.matchAll(re)) code = Number(m[1]);
    return code;
  }

  /** Waits for the end; the watch normally settles it, polling covers a watch lost mid-way. */
  protected override waitGone(d: Domain, ms: number): Promise<boolean> {
    return super.waitGone(d, ms, () => {
      const poll = setInterval(() => void this.reconcileSoon(), 2000);
      return () => clearInterval(poll);
    });
  }

  // ------------------------------------------------------------ lifecycle

  async stop(vmId: string, timeoutMs: number): Promise<{ killed: boolean }> {
    const d = this.get(vmId);
    d.stopRequested = 'shutdown';
    try {
      // -F: fall back to the ACPI power button for HVM guests without PV drivers.
      await xl(this.runner, ['shutdown', '-F', String(d.domid)], this.cmdMs);
    } catch (e) {
      this.log.warn(`${vmId}: xl shutdown failed (${(e as Error).message}); destroying`);
    }
    if (await this.waitGone(d, timeoutMs)) return { killed: false };
    d.stopRequested = 'destroy';
    d.killedAfterTimeout = true;
    await this.destroy(d);
    return { killed: true };
  }

  async kill(vmId: string): Promise<void> {
    const d = this.get(vmId);
    d.stopRequested = 'destroy';
    await this.destroy(d);
  }

  private async destroy(d: Domain): Promise<void> {
    try {
      await xl(this.runner, ['destroy', String(d.domid)], this.cmdMs);
    } catch (e) {
      // Already gone is fine: the reconcile below reports it.
      this.log.warn(`${d.def.id}: ${(e as Error).message}`);
    }
    await this.reconcileSoon();
    if (!(await this.waitGone(d, 10_000)))
      throw new BulkheadError(
        'BackendFailed',
        `domain ${d.domid} (${d.def.id}) is still listed after xl destroy`,
      );
  }

  async pause(vmId: string): Promise<void> {
    const d = this.get(vmId);
    await xl(this.runner, ['pause', String(d.domid)], this.cmdMs);
    d.paused = true;
    this.persist(d);
  }

  async resume(vmId: string): Promise<void> {
    const d = this.get(vmId);
    await xl(this.runner, ['unpause', String(d.domid)], this.cmdMs);
    d.paused = false;
    this.persist(d);
  }

  async screenshot(vmId: string, maxBytes: number): Promise<Buffer> {
    const d = this.get(vmId);
    const qmp = d.qmp;
    if (!qmp)
      throw new BulkheadError(
        'NotSupported',
        `${vmId} is a ${d.opts.type.toUpperCase()} guest: no emulated display to capture`,
      );
    // QEMU's own PPM (Debian's qemu-system-xen has no PNG support: ppm-png.ts), encoded here. The
    // PPM may be up to 4 bytes per PNG byte allowed (a 4K screen's PPM is 25 MB); the PNG is held
    // to maxBytes.
    const ppm = await this.screenshotFile(vmId, this.files(vmId).dir, maxBytes * 4, (filename) =>
      qmp.execute('screendump', { filename }, { timeoutMs: 15_000 }).catch((e) => {
        throw new BulkheadError('BackendFailed', `${vmId}: screendump: ${(e as Error).message}`);
      }),
    );
    const png = ppmToPng(ppm);
    if (png.length > maxBytes)
      throw new BulkheadError(
        'BackendFailed',
        `${vmId}: screenshot is ${png.length} bytes, more than the ${maxBytes} allowed`,
      );
    return png;
  }

  // ------------------------------------------------------------ USB

  async attachUsb(vmId: string, req: UsbAttachRequest): Promise<string> {
    const d = this.get(vmId);
    if (d.opts.type !== 'hvm')
      throw new BulkheadError('NotSupported', `${vmId}: ${pvUsbUnsupported(d.opts.type)}`);
    if (!d.opts.usbctrl)
      throw new BulkheadError(
        'NotSupported',
        `${vmId} has no USB controller (set "usbctrl" in ${d.def.id}.xen; it must exist when the domain is created)`,
      );
    if (req.port && !req.address)
      throw new BulkheadError(
        'NotSupported',
        `xl attaches USB devices by hostbus/hostaddr; port ${req.port} alone is not enough`,
      );
    const before = await this.usbdevs(d);
    await xl(
      this.runner,
      ['usbdev-attach', String(d.domid), `hostbus=${req.bus}`, `hostaddr=${req.address}`],
      this.cmdMs,
    );
    const after = await this.usbdevs(d);
    const added = after.find(
      (u) =>
        u.hostbus === req.bus &&
        u.hostaddr === req.address &&
        !before.some((b) => b.ctrl === u.ctrl && b.port === u.port),
    );
    if (!added)
      throw new BulkheadError(
        'BackendFailed',
        `xl usbdev-attach of ${req.bus}/${req.address} to ${vmId} succeeded but the domain's config does not list it (its USB devices before: ${usbdevsText(before)}; after: ${usbdevsText(after)})`,
      );
    return `xenusb-c${added.ctrl}-p${added.port}`;
  }

  /**
   * The domain's USB devices: `xl list -l` (config.usbdevs) plus libxl's own record in xenstore,
   * /libxl/<domid>/device/vusb/<ctrl>/port/<port> = dom0 bus id ("1-1"; what `xl usb-list` reads).
   * Xen 4.17 leaves a device hot-plugged into a devicemodel controller out of `xl list -l`
   * (seen in the harness: usb-list showed it, usbdevs was empty), so xenstore is the one to trust.
   */
  private async usbdevs(d: Domain): Promise<XlUsbDev[]> {
    const dom = parseXlListJson(await xl(this.runner, ['list', '-l', String(d.domid)], this.cmdMs)).find(
      (x) => x.domid === d.domid,
    );
    if (!dom) throw new BulkheadError('InvalidState', `domain ${d.domid} (${d.def.id}) is gone`);
    const all = [...dom.usbdevs];
    const list = async (path: string) => {
      const r = await this.runner.run('xenstore-list', [path], this.cmdMs);
      return r.code === 0
        ? r.stdout
            .split('\n')
            .map((l) => l.trim())
            .filter((l) => /^\d+$/.test(l))
        : [];
    };
    const base = `/libxl/${d.domid}/device/vusb`;
    const busAddr = this.opts.usbBusAddr ?? sysfsUsbBusAddr;
    for (const ctrl of await list(base)) {
      for (const port of await list(`${base}/${ctrl}/port`)) {
        const busid = (await xenstoreRead(this.runner, `${base}/${ctrl}/port/${port}`, this.cmdMs))?.trim();
        if (!busid) continue; // a free port
        const at = busAddr(busid);
        if (!at) {
          this.log.warn(
            `${d.def.id}: USB port ${ctrl}/${port} holds ${busid}, which dom0's sysfs does not know (unplugged?)`,
          );
          continue;
        }
        const [c, p] = [Number(ctrl), Number(port)];
        if (!all.some((u) => u.ctrl === c && u.port === p))
          all.push({ ctrl: c, port: p, hostbus: at.bus, hostaddr: at.address });
      }
    }
    return all;
  }

  async detachUsb(vmId: string, handle: string): Promise<void> {
    const d = this.get(vmId);
    const m = USB_HANDLE_RE.exec(handle);
    if (!m)
      throw new BulkheadError(
        'NoSuchDevice',
        `'${handle}' is not a USB attachment handle of the Xen backend`,
      );
    const [ctrl, port] = [Number(m[1]), Number(m[2])];
    if (!(await this.usbdevs(d)).some((u) => u.ctrl === ctrl && u.port === port))
      throw new BulkheadError('NoSuchDevice', `${vmId} has no USB attachment ${handle}`);
    await xl(this.runner, ['usbdev-detach', String(d.domid), String(ctrl), String(port)], this.cmdMs);
  }

  async listUsb(vmId: string): Promise<Array<[string, number, number]>> {
    const d = this.get(vmId);
    return (await this.usbdevs(d)).map((u) => [`xenusb-c${u.ctrl}-p${u.port}`, u.hostbus, u.hostaddr]);
  }

  /**
   * The installation medium out of a running HVM domain (xl-cdrom.ts): `xl cd-eject`, so libxl's
   * record of the domain's disks agrees with its device model.
   */
  async ejectCdrom(vmId: string): Promise<void> {
    const d = this.get(vmId);
    if (d.opts.type !== 'hvm')
      throw new BulkheadError(
        'NotSupported',
        `${vmId} is a ${d.opts.type.toUpperCase()} guest: it has no emulated CD-ROM to eject`,
      );
    await xl(this.runner, ['cd-eject', String(d.domid), XEN_CDROM_VDEV], this.cmdMs);
  }

  qmp(vmId: string): QmpAccess | null {
    return this.running.get(vmId)?.qmp ?? null;
  }

  /** Let go of every domain (they keep running; the next daemon re-adopts them from xl). */
  async detachAll(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    this.watch = null;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
    for (const d of this.running.values()) {
      d.goneHandled = true;
      await d.qmp?.close();
    }
    this.running.clear();
  }

  /** Stops every domain, then lets go of xenstore and xl (the daemon exits next). */
  override async stopAll(timeoutMs: number): Promise<void> {
    await super.stopAll(timeoutMs);
    await this.detachAll();
  }
}
