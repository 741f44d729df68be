import { existsSync } from 'node:fs';
import { basename, resolve as resolvePath } from 'node:path';
import {
  BulkheadError,
  isBulkheadError,
  SWITCHER_PATH,
  vmIdFromPath,
  vmPath,
  type Vm1Properties,
  type VmManager1Properties,
} from '@bulkhead/contract';
import { MAX_SLOT, TypedEmitter, type Logger, type SwitchProgressStep, type VmState } from '@bulkhead/common';
import type { ConfigError, ConfigOptions } from './config';
import type { Vm1StateReasonCode } from '@bulkhead/contract';
import { VmRegistry, type VmEntry } from './vm-registry';
import { DiskImport, createDisk, importTargetOf, inspectSource } from './disk-manager';
import type { CreateLeftover, VmOptions, VmStore } from './vm-store';
import {
  CDROM_DRIVE,
  describeHandle,
  type EndingDetail,
  type UsbAttachRequest,
  type VmBackend,
} from './backend/backend';
import type { PersistedState, StateStore } from './state-store';
import { SerialInputFocus, type InputPeerWatch } from './input-daemon-client';
import {
  DONE,
  NoGpuHandoff,
  NoUsbMover,
  SwitchTransaction,
  skipped,
  type AfterStepHook,
  type GpuHandoff,
  type GpuSide,
  type InputFocus,
  type StepResult,
  type SwitchRecord,
  type UsbMover,
} from './switch-transaction';

/** Screenshots larger than this are refused (the contract's bound). */
export const MAX_SCREENSHOT_BYTES = 8 << 20;

export { VmEntry } from './vm-registry';

export interface VmManagerEvents {
  'vm-added': [id: string];
  'vm-removed': [id: string];
  'vm-changed': [id: string, props: Array<keyof Vm1Properties>];
  'manager-changed': [props: Array<keyof VmManager1Properties>];
  'switch-progress': [target: string, step: SwitchProgressStep, detail: string];
}

export interface VmManagerOptions {
  backend: VmBackend;
  /** input-daemon; when it also reports restarts (InputPeerWatch), the focus is re-asserted on each. */
  input: InputFocus & Partial<InputPeerWatch>;
  /** The GPU hand-off; when it is also a holder (gpu/gpu-holder.ts), the GPU comes home on a VM's end. */
  gpu?: GpuHandoff & Partial<GpuHomeHooks>;
  usb?: UsbMover;
  /** Runs after each switch step that succeeded (tests stop or slow a switch with it). */
  afterSwitchStep?: AfterStepHook;
  configDir: string;
  /** Where path fields may point and who must own the files (default: see ConfigOptions). */
  config?: ConfigOptions;
  state: StateStore;
  log: Logger;
  /** Watch the config dir and reload on edits (default true). */
  watchConfig?: boolean;
  /** The person's VM files (CreateVm, Update, Delete); without it those methods fail. */
  person?: VmStore;
}

/** What VmManager tells a GPU holder outside a switch, and asks it (docs/gpu-handoff.md). */
export interface GpuHomeHooks {
  /** The VM's domain ended (stopped, crashed): the GPU it held comes home. */
  vmEnded(vm: string, why: string): Promise<void>;
  /** The person was sent to the switcher outside a switch: the GPU comes home. */
  comeHome(why: string): Promise<void>;
  /** The VM path holding the GPU, or '/' (VmManager1.GpuHolder). */
  readonly holder: string;
  onHolderChanged(fn: () => void): void;
}

/** A guest that reboots this many times within REBOOT_LOOP_MS is left stopped (a boot loop). */
const REBOOT_LOOP_COUNT = 3;
const REBOOT_LOOP_MS = 120_000;
/** Tries of one re-assert of the input focus to a new input-daemon instance (1 s, 2 s apart). */
const REASSERT_ATTEMPTS = 3;

/**
 * The core of vm-daemon: the lifecycle of the registry's VMs through a backend, the active VM,
 * the input focus and the switch transaction. Which VMs exist is the registry's business
 * (vm-registry.ts); D-Bus is dbus-service.ts's.
 */
export class VmManager extends TypedEmitter<VmManagerEvents> {
  readonly registry: VmRegistry;
  activeVm: string = SWITCHER_PATH;
  lastSwitch: SwitchRecord | null = null;
  accelerator = '';
  readonly transaction: SwitchTransaction;
  private readonly backend: VmBackend;
  private readonly log: Logger;
  private closed = false;
  /** VMs whose Kill is under way: their end, when the backend reports it, was asked for. */
  private readonly endRequested = new Set<string>();
  /** The one request waiting for the running switch (switchTo: the last request wins). */
  private pendingSwitch: {
    target: string;
    seq: number;
    resolve: (rec: SwitchRecord) => void;
    reject: (e: unknown) => void;
  } | null = null;
  /** Numbers switch requests, so a Superseded answer names the request that replaced it. */
  private switchRequests = 0;
  /** True from a switch's start until no request is pending any more. */
  private switchQueueBusy = false;
  /** Every Freeze/SetFocus vm-daemon sends, in order (see SerialInputFocus). */
  private readonly focus: SerialInputFocus;

  constructor(private readonly opts: VmManagerOptions) {
    super();
    this.backend = opts.backend;
    this.log = opts.log;
    this.registry = new VmRegistry({
      configDir: opts.configDir,
      config: opts.config,
      person: opts.person ? { dir: opts.person.opts.dir, config: opts.person.configOptions } : undefined,
      runs: opts.backend.runs,
      log: opts.log,
    });
    this.registry.on('vm-added', (id) => this.emit('vm-added', id));
    this.registry.on('vm-removed', (id) => {
      this.reboots.delete(id);
      this.emit('vm-removed', id);
    });
    this.registry.on('vm-changed', (id, props) => this.emit('vm-changed', id, props));
    this.registry.on('config-errors-changed', () => this.emit('manager-changed', ['ConfigErrors']));
    this.focus = new SerialInputFocus(opts.input);
    opts.input.onNewInstance?.(() => {
      this.reassertFocus();
      // A new input-daemon has no connection to any VM: the running ones are prepared again.
      for (const e of this.vms.values()) this.prepareInput(e);
    });
    this.transaction = new SwitchTransaction(
      {
        ensureRunning: (target, progress, beforeStart) => this.ensureRunning(target, progress, beforeStart),
        inputQmpSocket: (target) => this.entryByPath(target)?.inputQmpSocket ?? '',
        slotOf: (target) => (target === SWITCHER_PATH ? 0 : this.entryByPath(target)?.def.slot),
        gpuOf: (target): GpuSide => ({ vm: target, pci: this.entryByPath(target)?.def.gpu?.pci ?? [] }),
        publish: (target) => this.publishSwitch(target),
        progress: (target, step, detail) => this.emit('switch-progress', target, step, detail),
      },
      {
        input: this.focus,
        gpu: opts.gpu ?? new NoGpuHandoff(),
        usb: opts.usb ?? new NoUsbMover(),
        log: opts.log.child('switch'),
        afterStep: opts.afterSwitchStep,
      },
    );
    this.backend.on('state', (id, state, reason, ending) => this.onBackendState(id, state, reason, ending));
    opts.gpu?.onHolderChanged?.(() => this.emit('manager-changed', ['GpuHolder']));
  }

  /** VmManager1.GpuHolder: the VM holding the GPU, or '/' (dom0, or no GPU hand-off here). */
  get gpuHolder(): string {
    return this.opts.gpu?.holder ?? SWITCHER_PATH;
  }

  // ---------------------------------------------------------------- startup

  /** Probe the accelerator, load the definitions, re-adopt running VMs, restore the active VM. */
  async init(): Promise<void> {
    this.accelerator = await this.backend.accelerator();
    const persisted = this.opts.state.load();
    this.reload();
    this.importsCutOff();
    this.createsCutOff();
    const rebootedAway: VmEntry[] = [];
    for (const e of this.sortedEntries()) {
      if (e.placeholder || e.unavailable) continue;
      try {
        const r = await this.backend.adopt(e.def);
        const rebooted = r ? null : (this.backend.rebootedWhileAway?.(e.def.id) ?? null);
        if (rebooted) {
          this.setState(e, 'stopped', 'guest-reboot', rebooted);
          rebootedAway.push(e);
        }
        if (r) {
          this.setState(
            e,
            r.state,
            're-adopted',
            `re-adopted running VM (${describeHandle(r.handle)}) after a daemon restart`,
          );
          e.handle = r.handle;
          e.inputQmpSocket = r.inputQmpSocket;
          this.emit('vm-changed', e.def.id, ['InputQmpSocket']);
          this.prepareInput(e);
        }
      } catch (err) {
        this.setOpError(e, (err as Error).message);
      }
    }
    await this.resumeAfterCutOffSleep(persisted.pausedForSleep ?? []);
    let restored = persisted.activeVm ? this.vms.get(persisted.activeVm) : undefined;
    if (restored && restored.state === 'running') {
      const doubt = await this.restoreDoubt(restored);
      if (doubt) {
        this.log.warn(`${restored.def.id} was active; the switcher is now: ${doubt}`);
        restored = undefined;
      }
    }
    if (restored && restored.state === 'running') {
      this.activeVm = vmPath(restored.def.id);
      this.emit('manager-changed', ['ActiveVm']);
      // input-daemon may have restarted too: tell it where input goes (best effort).
      await this.focus
        .setFocus(this.activeVm, restored.inputQmpSocket)
        .catch((err) =>
          this.log.warn(`cannot restore input focus on ${restored.def.id}: ${(err as Error).message}`),
        );
    } else {
      // Nothing to restore (first start, lost/corrupt state file, active VM gone): input-daemon
      // may still route to the VM it was last told, so tell it the switcher has the focus.
      await this.focus
        .setFocus(SWITCHER_PATH, '')
        .catch((err) => this.log.warn(`cannot focus input on the switcher: ${(err as Error).message}`));
    }
    // What the screen shows is where input goes: a GPU a VM holds that is not the active one
    // (a switch killed between its gpu-attach and its publish, a restore refused above) comes
    // home to the switcher, as after a switch (settleAfterSwitch).
    const gpuHolder = this.opts.gpu?.holder;
    if (gpuHolder !== undefined && gpuHolder !== SWITCHER_PATH && gpuHolder !== this.activeVm)
      void this.opts.gpu
        ?.comeHome?.(`${gpuHolder} holds the GPU but ActiveVm is ${this.activeVm} after a restart`)
        .catch((err) => this.log.error(`bringing the GPU home: ${(err as Error).message}`));
    this.persist();
    if (this.opts.watchConfig !== false) this.registry.watch();
    // A guest that rebooted while no daemon ran is started again, as if this daemon had seen it.
    for (const e of rebootedAway) this.restartAfterReboot(e);
  }

  /**
   * The VMs an earlier daemon paused for a sleep and was killed before it resumed them (SIGKILL,
   * a crash, mid-suspend or asleep): it cannot resume them any more, so this one does, as that
   * transaction would have after waking (the seat is input-daemon's and stays locked). Only those:
   * a VM the person paused stays paused.
   */
  private async resumeAfterCutOffSleep(ids: string[]): Promise<void> {
    for (const id of ids) {
      const e = this.vms.get(id);
      if (!e || e.state !== 'paused') continue;
      try {
        await this.backend.resume(id);
        this.setState(
          e,
          'running',
          'resumed-by-user',
          'resumed after a sleep the previous daemon paused it for',
        );
        this.log.info(
          `${id}: resumed (paused for a sleep by the previous daemon, which ended before waking it)`,
        );
      } catch (err) {
        this.setOpError(e, `resuming after the sleep failed: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Why the VM state.json names as active must not be restored as the active one ('' = it may):
   * the seat was locked while no vm-daemon ran (input-daemon's return home found nobody to ask),
   * or the GPU is not where a finished switch to it would have left it (one killed mid-hand-off).
   * The switcher is then the active one: dom0 when in doubt.
   */
  private async restoreDoubt(e: VmEntry): Promise<string> {
    try {
      await this.opts.input.assertUnlocked?.();
    } catch (err) {
      if (isBulkheadError(err, 'Locked')) return 'the seat is locked: the lock screen comes home';
    }
    const holder = this.opts.gpu?.holder;
    if (holder === undefined) return '';
    const path = vmPath(e.def.id);
    if (holder !== SWITCHER_PATH && holder !== path) return `${holder} holds the GPU`;
    if (holder !== path && e.def.gpu?.pci.length) return 'the GPU is not with it';
    return '';
  }

  /** Start every autostart VM that is stopped, in slot order, one after the other. */
  async autostart(): Promise<void> {
    for (const e of this.sortedEntries()) {
      if (
        !e.def.autostart ||
        e.placeholder ||
        e.unavailable ||
        (e.state !== 'stopped' && e.state !== 'crashed')
      )
        continue;
      try {
        await this.start(e.def.id);
      } catch (err) {
        this.log.error(`autostart of ${e.def.id} failed: ${(err as Error).message}`);
      }
    }
  }

  close(): void {
    this.closed = true;
    this.registry.close();
  }

  /** The registry's VMs, by id. */
  get vms(): ReadonlyMap<string, VmEntry> {
    return this.registry.vms;
  }

  get configErrors(): ConfigError[] {
    return this.registry.configErrors;
  }

  private sortedEntries(): VmEntry[] {
    return this.registry.sorted();
  }

  // ---------------------------------------------------------------- config

  /** Re-read the config dir (see VmRegistry.reload) and save the slots. */
  reload(): number {
    const valid = this.registry.reload();
    this.persist();
    return valid;
  }

  // ---------------------------------------------------------------- lookup

  get(id: string): VmEntry {
    return this.registry.get(id);
  }

  entryByPath(path: string): VmEntry | undefined {
    return this.registry.entryByPath(path);
  }

  bySlot(slot: number): VmEntry | undefined {
    return this.registry.bySlot(slot);
  }

  /** VMs paused by the suspend transaction: their pause does not move the focus away (pause()). */
  private readonly pausedForSleep = new Set<string>();

  // ---------------------------------------------------------------- state

  private setState(e: VmEntry, state: VmState, code: Vm1StateReasonCode, reason: string): void {
    const changed: Array<keyof Vm1Properties> = [];
    if (e.state !== state) changed.push('State', 'InputQmpSocket');
    if (e.stateReason !== reason) changed.push('StateReason');
    if (e.stateReasonCode !== code) changed.push('StateReasonCode');
    e.stateReasonCode = code;
    e.state = state;
    e.stateReason = reason;
    if (state === 'stopped' || state === 'crashed') e.handle = null;
    // Ended while paused for a sleep: not the sleep's to resume any more (nor its next pause).
    if ((state === 'stopped' || state === 'crashed') && this.pausedForSleep.delete(e.def.id)) this.persist();
    if (changed.length) this.emit('vm-changed', e.def.id, changed);
    if ((state === 'stopped' || state === 'crashed') && changed.includes('State'))
      void this.opts.gpu
        ?.vmEnded?.(vmPath(e.def.id), reason)
        .catch((err) =>
          this.log.error(`bringing the GPU home after ${e.def.id}'s end: ${(err as Error).message}`),
        );
    if (
      (state === 'crashed' ||
        state === 'stopped' ||
        (state === 'paused' && !this.pausedForSleep.has(e.def.id))) &&
      this.activeVm === vmPath(e.def.id)
    ) {
      void this.fallBackToSwitcher(`${e.def.id} is ${state}: ${reason}`);
    }
    if (state === 'stopped' || state === 'crashed') this.registry.stopped(e);
  }

  /**
   * A running VM's input path opened ahead of its first switch (Input1.Prepare), in the background:
   * the first switch to each VM then does not wait for input-daemon's connect to its QEMU.
   */
  private prepareInput(e: VmEntry): void {
    if (e.state !== 'running' || !e.inputQmpSocket) return;
    const path = vmPath(e.def.id);
    void this.focus
      .prepare(path, e.inputQmpSocket)
      .catch((err) =>
        this.log.info(`input-daemon did not prepare ${e.def.id}'s input: ${(err as Error).message}`),
      );
  }

  /**
   * A disk import the daemon's last stop (SIGKILL, a crash, power loss) cut off left qemu-img's
   * hidden partial output and a person VM whose disk was never finished: the output is removed
   * and the VM says why it has no disk (LastError), instead of a Start failing on a missing file.
   */
  private importsCutOff(): void {
    if (!this.opts.person) return;
    let removed: string[];
    try {
      removed = this.opts.person.removeImportLeftovers();
    } catch (err) {
      this.log.warn(`cannot look for cut-off disk imports: ${(err as Error).message}`);
      return;
    }
    for (const f of removed) {
      this.log.warn(`removed ${f}: a disk import that was cut off when vm-daemon last stopped`);
      const disk = importTargetOf(f)!;
      for (const e of this.vms.values())
        if (!e.placeholder && e.def.disks.some((d) => d.path === disk) && !existsSync(disk))
          this.setOpError(
            e,
            `its disk import was cut off when vm-daemon stopped (${basename(disk)} was never finished); delete this VM and create it again`,
          );
    }
  }

  /**
   * A CreateVm the daemon's last stop cut off between the new disk and the VM file left a disk no
   * VM names, under the id the person then picks again ("a disk ... already exists; pick another
   * id"): it is removed when CreateVm's marker proves this daemon made it for a VM file that was
   * never written (VmStore.removeCreateLeftovers).
   */
  private createsCutOff(): void {
    if (!this.opts.person) return;
    const inUse = (disk: string) =>
      [...this.vms.values()].some((e) => e.def.disks.some((d) => resolvePath(d.path) === resolvePath(disk)));
    let found: CreateLeftover[];
    try {
      found = this.opts.person.removeCreateLeftovers(inUse);
    } catch (err) {
      this.log.warn(`cannot look for cut-off VM creations: ${(err as Error).message}`);
      return;
    }
    for (const f of found)
      if (f.vmFile === null)
        this.log.warn(
          `${f.marker} cannot be read: ${f.disk} is left as it is (remove both by hand if no VM uses it)`,
        );
      else if (f.diskRemoved)
        this.log.warn(
          `removed ${f.disk}: CreateVm made it and was cut off when vm-daemon last stopped, before ${f.vmFile} was written (no VM names it)`,
        );
      else this.log.info(`removed ${f.marker}: the CreateVm it marked had written ${f.vmFile} or no disk`);
  }

  private setOpError(e: VmEntry, msg: string): void {
    e.opError = msg;
    this.emit('vm-changed', e.def.id, ['LastError']);
  }

  /**
   * The code of a state the backend reported on its own: whether it followed our Stop/Kill (or
   * Pause/Resume) or the guest/device model did it, which the backend's words must not be parsed for.
   */
  private backendReasonCode(e: VmEntry, state: VmState): Vm1StateReasonCode {
    switch (state) {
      case 'crashed':
        return 'crashed';
      case 'stopped':
        return this.endRequested.has(e.def.id) || e.state === 'stopping'
          ? 'stopped-by-user'
          : 'guest-shutdown';
      case 'paused':
        return e.state === 'paused' ? e.stateReasonCode : 'vcpus-stopped';
      case 'running':
        return e.state === 'running' ? e.stateReasonCode : 'vcpus-resumed';
      default:
        return e.stateReasonCode;
    }
  }

  private onBackendState(id: string, state: VmState, reason: string, ending?: EndingDetail): void {
    const e = this.vms.get(id);
    if (!e) return;
    if (state === 'crashed') e.opError = `crashed: ${reason}`;
    const code = this.backendReasonCode(e, state);
    if (state === 'stopped' && ending?.guestReboot && code === 'guest-shutdown') {
      this.setState(e, state, 'guest-reboot', reason);
      this.restartAfterReboot(e);
      return;
    }
    this.setState(e, state, code, reason);
  }

  /** When each VM's guest rebooted lately (ms), for the reboot-loop bound. */
  private readonly reboots = new Map<string, number[]>();

  /**
   * A guest reboot is a reboot, not a stop (QEMU resets in place; Xen destroys the domain, so the
   * core starts it again), unless the guest reboots in a loop: REBOOT_LOOP_COUNT within
   * REBOOT_LOOP_MS leaves it stopped with LastError saying so.
   */
  private restartAfterReboot(e: VmEntry): void {
    const now = Date.now();
    const recent = (this.reboots.get(e.def.id) ?? []).filter((t) => now - t < REBOOT_LOOP_MS);
    recent.push(now);
    this.reboots.set(e.def.id, recent);
    if (recent.length >= REBOOT_LOOP_COUNT) {
      this.setOpError(
        e,
        `rebooted ${recent.length} times within ${REBOOT_LOOP_MS / 1000} s: not started again (start it when the cause is fixed)`,
      );
      this.log.error(`${e.def.id}: ${e.opError}`);
      return;
    }
    this.log.warn(`${e.def.id}: the guest rebooted; starting it again`);
    this.start(e.def.id, { afterReboot: true }).catch((err: Error) =>
      this.log.error(`${e.def.id}: starting again after its reboot failed: ${err.message}`),
    );
  }

  /** The active VM died or was paused: the person gets the switcher (as xenmgr does). */
  private async fallBackToSwitcher(why: string): Promise<void> {
    if (this.transaction.inProgress) {
      // A switch is moving input right now: a SetFocus('/') from here would race with its own
      // Freeze/SetFocus calls. settleAfterSwitch() falls back once it is over, if still needed.
      this.log.warn(`active VM lost during a switch (${why}): settled when the switch ends`);
      return;
    }
    this.log.warn(`focus falls back to the switcher: ${why}`);
    this.setActive(SWITCHER_PATH);
    void this.opts.gpu
      ?.comeHome?.(why)
      .catch((err) => this.log.error(`bringing the GPU home: ${(err as Error).message}`));
    try {
      await this.focus.setFocus(SWITCHER_PATH, '');
    } catch (e) {
      this.log.error(`Input1.SetFocus('/') after a VM loss failed: ${(e as Error).message}`);
    }
  }

  /**
   * The switch's publish step. The target may have died while the earlier steps ran (its crash
   * is seen as a state change, not as a failed step): then the switch fails and rolls back
   * instead of making a dead VM the active one.
   */
  private publishSwitch(target: string): void {
    if (target !== SWITCHER_PATH) {
      const e = this.entryByPath(target);
      if (!e || e.state !== 'running')
        throw new BulkheadError(
          'BackendFailed',
          `${vmIdFromPath(target)} is ${e?.state ?? 'gone'} (${e?.stateReason ?? 'removed'}): it stopped running during the switch`,
        );
    }
    this.setActive(target);
  }

  /**
   * After every switch (ok or not): ActiveVm must be '/' or a running VM, and input-daemon's
   * focus must be ActiveVm. A VM lost during the switch (its fall-back was deferred), a rollback
   * that re-focused a source that died meanwhile, or a rollback that itself failed are repaired
   * here by focusing the switcher (or re-sending the focus).
   */
  private async settleAfterSwitch(
    rec: SwitchRecord,
    inputInstanceAtStart: number | undefined,
  ): Promise<void> {
    const active = this.activeVm;
    const e = this.entryByPath(active);
    // A hand-off that overran move-gpu's bound runs on after the rollback: once it is over, the
    // GPU goes where ActiveVm says — home, when the active one has no GPU (docs/gpu-handoff.md).
    if (rec.outcome !== 'ok' && !e?.def.gpu?.pci.length)
      void this.opts.gpu
        ?.comeHome?.(`the switch to ${rec.target} did not complete; ${active} has no GPU`)
        .catch((err) => this.log.error(`bringing the GPU home: ${(err as Error).message}`));
    if (active !== SWITCHER_PATH && (!e || e.state !== 'running')) {
      await this.fallBackToSwitcher(`${vmIdFromPath(active)} is ${e?.state ?? 'gone'} after the switch`);
      return;
    }
    // A new input-daemon took the name during the switch: its re-assert was held back (it could
    // have named the VM being left), so the focus is told here, once ActiveVm is final.
    const restarted = this.opts.input.instance !== inputInstanceAtStart;
    if (rec.outcome === 'failed' || restarted) {
      await this.focus
        .setFocus(active, e?.inputQmpSocket ?? '')
        .catch((err) =>
          this.log.error(
            `re-focusing ${active} after ${restarted ? 'an input-daemon restart during a switch' : 'a failed switch'}: ${(err as Error).message}`,
          ),
        );
    }
  }

  /**
   * A new input-daemon instance appeared (restart): it routes to nobody's VM until told, so tell
   * it ActiveVm — read when the call's turn comes, so it is never older than a SetFocus before it.
   * During a switch nothing is sent: the switch's own SetFocus, or settleAfterSwitch, does it.
   */
  private reassertFocus(attempt = 1): void {
    if (this.closed) return;
    const instance = this.opts.input.instance;
    if (attempt === 1) this.log.info('input-daemon (re)appeared on the bus: re-asserting the input focus');
    void this.focus
      .setFocusLatest(() => {
        if (this.transaction.inProgress) return null;
        const active = this.activeVm;
        return [active, active === SWITCHER_PATH ? '' : (this.entryByPath(active)?.inputQmpSocket ?? '')];
      })
      .catch((err) => {
        const what = `re-asserting the input focus on ${this.activeVm}: ${(err as Error).message}`;
        // Until a re-assert lands the new instance routes to nobody: the person's keys go nowhere
        // until their next switch. A call that failed (e.g. timed out while the instance was still
        // connecting to the VMs, under load) is sent again, reading ActiveVm afresh; not when yet
        // another instance came meanwhile (it has its own re-assert).
        if (attempt < REASSERT_ATTEMPTS && !this.closed && this.opts.input.instance === instance) {
          this.log.warn(`${what}; trying again in ${attempt} s`);
          setTimeout(() => {
            if (this.opts.input.instance === instance) this.reassertFocus(attempt + 1);
          }, attempt * 1000).unref();
        } else this.log.error(what);
      });
  }

  private setActive(target: string): void {
    if (this.activeVm === target) return;
    this.activeVm = target;
    this.emit('manager-changed', ['ActiveVm']);
    this.persist();
  }

  private persist(): void {
    const slots: Record<string, number> = {};
    for (const e of this.vms.values()) if (!e.placeholder) slots[e.def.id] = e.def.slot;
    const state: PersistedState = { activeVm: vmIdFromPath(this.activeVm), slots };
    if (this.pausedForSleep.size) state.pausedForSleep = [...this.pausedForSleep];
    this.opts.state.save(state);
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Starts VM `id`. Any start but the core's own after a guest's reboot (a person's Start, a switch
   * to a stopped VM, autostart) begins a new count of reboots: after a reboot loop left it stopped,
   * a person who starts it again gets the full REBOOT_LOOP_COUNT, not one reboot before it stops.
   */
  async start(id: string, opts: { afterReboot?: boolean } = {}): Promise<void> {
    const e = this.get(id);
    if (!opts.afterReboot) this.reboots.delete(id);
    if (e.placeholder) throw new BulkheadError('InvalidConfig', e.configError);
    if (e.state === 'starting' && e.starting) return e.starting;
    if (e.diskJob)
      throw new BulkheadError('InvalidState', `${id}'s disk is still being imported (${e.diskJob.percent}%)`);
    this.requireAvailable(e);
    if (!this.backend.runs.includes(e.def.backend))
      throw new BulkheadError(
        'InvalidConfig',
        `${e.def.file}: backend: '${e.def.backend}' is not available in this daemon (it runs '${this.backend.name}')`,
      );
    if (e.state !== 'stopped' && e.state !== 'crashed')
      throw new BulkheadError('InvalidState', `${id} is ${e.state}, not stopped`);
    const medium = this.registry.mediumProblem(e);
    if (medium) throw new BulkheadError('InvalidConfig', medium);
    const previous = e.state;
    this.setState(e, 'starting', 'start-requested', 'start requested');
    e.starting = (async () => {
      try {
        const r = await this.backend.start(e.def);
        e.handle = r.handle;
        e.inputQmpSocket = r.inputQmpSocket;
        e.opError = '';
        this.emit('vm-changed', id, ['LastError']);
        // The backend may already have reported it gone (a guest that exits at once).
        if ((e.state as VmState) === 'starting')
          this.setState(
            e,
            'running',
            'started',
            `started (${describeHandle(r.handle)}, ${this.accelerator})`,
          );
        this.prepareInput(e);
      } catch (err) {
        const be =
          err instanceof BulkheadError ? err : new BulkheadError('BackendFailed', (err as Error).message);
        this.setOpError(e, `start failed: ${be.message}`);
        if ((e.state as VmState) === 'starting')
          this.setState(
            e,
            previous === 'crashed' ? 'crashed' : 'stopped',
            'start-failed',
            `start failed: ${be.message}`,
          );
        throw be;
      } finally {
        e.starting = null;
      }
    })();
    return e.starting;
  }

  async stop(id: string, timeoutMs = 30_000): Promise<void> {
    const e = this.get(id);
    if (e.state !== 'running' && e.state !== 'paused')
      throw new BulkheadError('InvalidState', `${id} is ${e.state}, not running`);
    this.setState(
      e,
      'stopping',
      'stop-requested',
      `stop requested (ACPI power-down, kill after ${timeoutMs} ms)`,
    );
    try {
      await this.backend.stop(id, timeoutMs);
    } catch (err) {
      this.setOpError(e, `stop failed: ${(err as Error).message}`);
      throw err instanceof BulkheadError ? err : new BulkheadError('BackendFailed', (err as Error).message);
    }
    if ((e.state as VmState) === 'stopping')
      this.setState(e, 'stopped', 'stopped-by-user', 'stopped on request');
  }

  async kill(id: string): Promise<void> {
    const e = this.get(id);
    if (e.state !== 'running' && e.state !== 'paused' && e.state !== 'stopping')
      throw new BulkheadError('InvalidState', `${id} is ${e.state}, nothing to kill`);
    // The backend reports the end while kill runs: it must read as ours, not the guest's.
    this.endRequested.add(id);
    try {
      await this.backend.kill(id);
    } finally {
      this.endRequested.delete(id);
    }
    if ((e.state as VmState) !== 'stopped')
      this.setState(e, 'stopped', 'stopped-by-user', 'killed on request');
  }

  /**
   * Pause a running VM. `forSleep`: the suspend transaction (power/) pauses every VM for the sleep
   * with the seat locked; the active VM stays the active one (no fall-back to the switcher), so
   * the person is back in it after waking and unlocking. resume() ends that.
   */
  async pause(id: string, opts: { forSleep?: boolean } = {}): Promise<void> {
    const e = this.get(id);
    if (e.state !== 'running') throw new BulkheadError('InvalidState', `${id} is ${e.state}, not running`);
    if (opts.forSleep) {
      // Recorded before QEMU stops the vCPUs: a daemon killed from here on leaves its successor
      // the list of VMs to resume (resumeAfterCutOffSleep).
      this.pausedForSleep.add(id);
      this.persist();
    }
    try {
      await this.backend.pause(id);
    } catch (err) {
      if (this.pausedForSleep.delete(id)) this.persist();
      throw err;
    }
    this.setState(e, 'paused', 'paused-by-user', 'paused on request');
  }

  async resume(id: string): Promise<void> {
    const e = this.get(id);
    if (e.state !== 'paused') throw new BulkheadError('InvalidState', `${id} is ${e.state}, not paused`);
    try {
      await this.backend.resume(id);
    } catch (err) {
      // Not back after a sleep: the active VM it was cannot keep the focus.
      const forSleep = this.pausedForSleep.delete(id);
      if (forSleep) this.persist();
      if (forSleep && e.state === 'paused' && this.activeVm === vmPath(id))
        void this.fallBackToSwitcher(`${id} did not resume after the sleep: ${(err as Error).message}`);
      throw err;
    }
    if (this.pausedForSleep.delete(id)) this.persist();
    this.setState(e, 'running', 'resumed-by-user', 'resumed on request');
  }

  async screenshot(id: string): Promise<Buffer> {
    const e = this.get(id);
    if (e.state !== 'running' && e.state !== 'paused')
      throw new BulkheadError('InvalidState', `${id} is ${e.state}: no screen`);
    return this.backend.screenshot(id, MAX_SCREENSHOT_BYTES);
  }

  private running(id: string): VmEntry {
    const e = this.get(id);
    if (e.state !== 'running' && e.state !== 'paused')
      throw new BulkheadError('InvalidState', `${id} is ${e.state}, not running`);
    return e;
  }

  async attachUsb(id: string, req: UsbAttachRequest): Promise<string> {
    this.running(id);
    if (!req.port && (req.bus < 1 || req.bus > 255 || req.address < 1 || req.address > 127))
      throw new BulkheadError(
        'InvalidArgument',
        `bus ${req.bus} / address ${req.address} out of range (bus 1-255, address 1-127)`,
      );
    // usb-daemon names ports the sysfs way ("2-1.4": bus 2, port path 1.4); QEMU's usb-host
    // wants the bus and the port path apart.
    const sysfs = req.port !== undefined ? /^(\d{1,3})-(\d{1,3}(?:\.\d{1,3}){0,6})$/.exec(req.port) : null;
    if (sysfs) {
      if (req.bus && req.bus !== Number(sysfs[1]))
        throw new BulkheadError('InvalidArgument', `port '${req.port}' is not on bus ${req.bus}`);
      req = { ...req, bus: Number(sysfs[1]), port: sysfs[2] };
    }
    if (req.port !== undefined && !/^\d{1,3}(\.\d{1,3}){0,6}$/.test(req.port))
      throw new BulkheadError('InvalidArgument', `port '${req.port}' is not a host port path like 1.2`);
    return this.backend.attachUsb(id, req);
  }

  async detachUsb(id: string, handle: string): Promise<void> {
    this.running(id);
    await this.backend.detachUsb(id, handle);
  }

  async listUsb(id: string): Promise<Array<[string, number, number]>> {
    this.running(id);
    return this.backend.listUsb(id);
  }

  // ---------------------------------------------------------------- the person's VMs

  /** One create/update/delete at a time: each decides on ids and slots the one before set. */
  private personQueue: Promise<unknown> = Promise.resolve();

  private serially<T>(f: () => Promise<T> | T): Promise<T> {
    const run = this.personQueue.then(f, f);
    this.personQueue = run.catch(() => undefined);
    return run;
  }

  private personStore(): VmStore {
    if (!this.opts.person) throw new BulkheadError('Failed', 'this vm-daemon has no person VM directory');
    return this.opts.person;
  }

  /** Ids and slots in use (an invalid file's id too: its file name is taken). */
  private taken(except?: VmEntry): { ids: Set<string>; slots: Set<number> } {
    const ids = new Set(this.vms.keys());
    const slots = new Set<number>();
    for (const e of this.vms.values())
      if (e !== except && !e.placeholder && !e.fileRemoved) slots.add(e.def.slot);
    return { ids, slots };
  }

  /**
   * A person VM, stopped, without a running disk job: what Update and Delete need. An admin VM
   * answers NotOwner, whoever asks (the administrator edits the files themselves).
   */
  private personVm(id: string, what: string): VmEntry {
    const e = this.get(id);
    if (e.owner !== 'person' || !this.personStore().owns(e.def.file))
      throw new BulkheadError(
        'NotOwner',
        `${what} ${e.def.name} (${id}): it belongs to the administrator (${e.def.file}); it can be started, stopped and switched to, not changed or deleted`,
      );
    return e;
  }

  /** A person's VM of the other boot entry is kept as it is: nothing here rewrites its file. */
  /**
   * A VM made on the other boot entry answers Unavailable to Start, a switch to it, Update and
   * Eject; `what` ("cannot change") leads the message where the request needs naming.
   */
  private requireAvailable(e: VmEntry, what?: string): void {
    if (e.unavailable)
      throw new BulkheadError('Unavailable', `${what ? `${what} ` : ''}${e.def.id}: ${e.unavailable}`);
  }

  private requireStopped(e: VmEntry, what: string): void {
    if (e.state !== 'stopped' && e.state !== 'crashed')
      throw new BulkheadError('InvalidState', `${what} ${e.def.id}: it is ${e.state}; stop it first`);
  }

  /** Create a person VM (see VmManager1.CreateVm); returns its id once its object exists. */
  createVm(name: string, o: VmOptions): Promise<string> {
    const store = this.personStore();
    return this.serially(async () => {
      store.ensureDirs();
      const plan = store.planCreate(name, o, this.taken());
      if (existsSync(plan.def.file))
        throw new BulkheadError(
          'InvalidArgument',
          `id: ${plan.def.file} already exists (an invalid VM file?)`,
        );
      const source = plan.importDisk ? await inspectSource(plan.importDisk.source) : null;
      if (plan.newDisk) {
        // Marked before the disk exists, unmarked once the VM file is written: a daemon killed in
        // between leaves a disk the next start knows to be its own (removeCreateLeftovers).
        store.beginNewDisk(plan.newDisk.path, plan.def.file);
        try {
          await createDisk(plan.newDisk.path, plan.newDisk.format, plan.newDisk.sizeMiB);
        } catch (err) {
          store.abandonNewDisk(plan.newDisk.path);
          throw err;
        }
      }
      try {
        store.write(plan.def.file, plan.doc);
      } catch (err) {
        if (plan.newDisk) store.abandonNewDisk(plan.newDisk.path);
        throw new BulkheadError('BackendFailed', `writing ${plan.def.file}: ${(err as Error).message}`);
      }
      if (plan.newDisk) store.newDiskDone(plan.newDisk.path);
      this.reload();
      const e = this.vms.get(plan.def.id);
      if (!e || e.placeholder)
        throw new BulkheadError(
          'Failed',
          `${plan.def.file} was written but did not load: ${e?.configError ?? ''}`,
        );
      if (plan.importDisk && source)
        this.runImport(e, plan.importDisk.source, source.format, plan.importDisk);
      this.log.info(`created ${e.def.id} (${e.def.name}) in slot ${e.def.slot}: ${e.def.file}`);
      return e.def.id;
    });
  }

  /**
   * Convert the picked image into the VM's disk in the background (DiskJob, DiskJobProgress). A
   * cancelled import deletes the VM made for it; a failed one leaves the VM with the error.
   */
  private runImport(
    e: VmEntry,
    source: string,
    sourceFormat: string,
    target: { path: string; format: VmEntry['def']['disks'][number]['format'] },
  ): void {
    const job = new DiskImport(source, sourceFormat, target.path, target.format);
    e.diskJob = job;
    this.emit('vm-changed', e.def.id, ['DiskJob', 'DiskJobProgress']);
    job.on('progress', () => this.emit('vm-changed', e.def.id, ['DiskJobProgress']));
    e.diskJobSettled = job.done.then(
      () => {
        e.diskJob = null;
        this.emit('vm-changed', e.def.id, ['DiskJob', 'DiskJobProgress']);
      },
      (err: unknown) => {
        e.diskJob = null;
        if (err instanceof BulkheadError && err.errorName === 'Cancelled') {
          this.personStore().remove(e.def, true);
          this.reload();
          return;
        }
        this.setOpError(e, `disk import failed: ${(err as Error).message}`);
        this.emit('vm-changed', e.def.id, ['DiskJob', 'DiskJobProgress']);
      },
    );
  }

  /** Cancel a VM's disk import: nothing of it is left, nor the VM made for it. */
  async cancelDiskJob(id: string): Promise<void> {
    const e = this.personVm(id, 'cannot cancel the disk job of');
    if (!e.diskJob) throw new BulkheadError('InvalidState', `${id} has no disk job running`);
    e.diskJob.cancel();
    await e.diskJobSettled;
  }

  /** Change a stopped person VM (see Vm1.Update). */
  updateVm(id: string, o: VmOptions): Promise<void> {
    const store = this.personStore();
    return this.serially(() => {
      const e = this.personVm(id, 'cannot change');
      this.requireAvailable(e, 'cannot change');
      this.requireStopped(e, 'cannot change');
      if (e.placeholder)
        throw new BulkheadError(
          'InvalidState',
          `cannot change ${id}: its file is invalid (${e.configError}); delete it`,
        );
      if (e.diskJob)
        throw new BulkheadError('InvalidState', `cannot change ${id}: its disk is being imported`);
      const plan = store.planUpdate(e.def, o, this.taken(e).slots);
      store.write(e.def.file, plan.doc);
      this.reload();
    });
  }

  /**
   * Remove a person VM's installation medium (see Vm1.Eject): from the running QEMU at once, and
   * from its file, so the next start boots the disk.
   */
  ejectVm(id: string): Promise<void> {
    const store = this.personStore();
    return this.serially(async () => {
      const e = this.personVm(id, 'cannot eject the medium of');
      this.requireAvailable(e, 'cannot eject the medium of');
      if (!e.def.cdrom) throw new BulkheadError('InvalidState', `${id} has no installation medium`);
      if (e.state === 'running' || e.state === 'paused') {
        const qmp = this.backend.qmp?.(id);
        // A backend that knows its own way (Xen: xl cd-eject, so libxl's record agrees) goes first.
        if (this.backend.ejectCdrom)
          await this.backend.ejectCdrom(id).catch((err: Error) => {
            throw err instanceof BulkheadError
              ? err
              : new BulkheadError('BackendFailed', `ejecting the medium of ${id}: ${err.message}`);
          });
        else if (qmp)
          await qmp.execute('eject', { device: CDROM_DRIVE, force: true }).catch((err: Error) => {
            throw new BulkheadError('BackendFailed', `ejecting the medium of ${id}: ${err.message}`);
          });
      }
      const plan = store.planUpdate(e.def, { cdrom: '' }, this.taken(e).slots);
      store.write(e.def.file, plan.doc);
      this.reload();
    });
  }

  /** Delete a stopped person VM, and its own disks when asked (see Vm1.Delete). */
  deleteVm(id: string, removeDisks: boolean): Promise<void> {
    const store = this.personStore();
    return this.serially(async () => {
      const e = this.personVm(id, 'cannot delete');
      this.requireStopped(e, 'cannot delete');
      if (e.diskJob) {
        e.diskJob.cancel();
        await e.diskJobSettled;
        if (!this.vms.has(id)) return;
      }
      const removed = store.remove(e.def, removeDisks);
      this.reload();
      this.log.info(`deleted ${id}${removed.length ? ` and its disks ${removed.join(', ')}` : ''}`);
    });
  }

  // ---------------------------------------------------------------- switch

  private async ensureRunning(
    target: string,
    progress: (d: string) => void,
    beforeStart?: () => Promise<void>,
  ): Promise<StepResult> {
    const e = this.entryByPath(target);
    if (!e) throw new BulkheadError('NoSuchVm', `no VM at ${target}`);
    if (e.state === 'running') return skipped('already running');
    await beforeStart?.();
    if (e.state === 'paused') {
      progress(`resuming ${e.def.id}`);
      await this.resume(e.def.id);
      return DONE;
    }
    if (e.state === 'stopping') throw new BulkheadError('InvalidState', `${e.def.id} is stopping`);
    progress(`starting ${e.def.id}`);
    await this.start(e.def.id);
    progress(`${e.def.id} runs`);
    return DONE;
  }

  /**
   * Switch to a VM object path or '/' (the switcher). Throws the named error of a failed switch.
   *
   * The last request wins: while a switch runs, a new request becomes the one pending target and
   * replaces an earlier pending one, whose caller gets Superseded (naming the request that replaced
   * it). When the running switch is over, the pending target runs and its caller gets that result.
   * A person pressing Ctrl+1, Ctrl+2, Ctrl+1 during one slow switch (a GPU moving) ends on VM 1;
   * refusing requests instead (SwitchInProgress, before issue 17) lost the later presses.
   */
  async switchTo(target: string): Promise<SwitchRecord> {
    this.checkSwitchTarget(target);
    const seq = ++this.switchRequests;
    if (this.switchQueueBusy) return this.queueSwitch(target, seq);
    this.switchQueueBusy = true;
    const first = this.runSwitch(target);
    // Pending requests run after the first one's caller has its answer.
    void first.then(
      () => this.runPendingSwitches(),
      () => this.runPendingSwitches(),
    );
    return first;
  }

  /** The target of the request waiting for the running switch, or null. */
  get pendingSwitchTarget(): string | null {
    return this.pendingSwitch?.target ?? null;
  }

  private checkSwitchTarget(target: string): void {
    if (target !== SWITCHER_PATH) {
      const e = this.entryByPath(target);
      if (!e) throw new BulkheadError('NoSuchVm', `no VM at ${target}`);
      if (e.placeholder) throw new BulkheadError('InvalidConfig', e.configError);
      // Refused before any step runs: the tile says so (LastError), a switch never half-happens.
      this.requireAvailable(e);
    }
  }

  private queueSwitch(target: string, seq: number): Promise<SwitchRecord> {
    return new Promise<SwitchRecord>((resolve, reject) => {
      const replaced = this.pendingSwitch;
      this.pendingSwitch = { target, seq, resolve, reject };
      this.emit(
        'switch-progress',
        target,
        'pending',
        `request #${seq} runs when the current switch is over` +
          (replaced ? `; it replaces request #${replaced.seq} to ${replaced.target}` : ''),
      );
      if (replaced) {
        this.log.info(
          `switch request #${replaced.seq} to ${replaced.target} superseded by #${seq} to ${target}`,
        );
        this.emit(
          'switch-progress',
          replaced.target,
          'superseded',
          `replaced by request #${seq} to ${target}`,
        );
        replaced.reject(
          new BulkheadError(
            'Superseded',
            `switch request #${replaced.seq} to ${replaced.target} was replaced by request #${seq} to ${target} before it ran (the last request wins)`,
          ),
        );
      }
    });
  }

  /** Runs the pending request, if any, until none is left; then new requests run at once again. */
  private async runPendingSwitches(): Promise<void> {
    while (this.pendingSwitch && !this.closed) {
      const p = this.pendingSwitch;
      this.pendingSwitch = null;
      try {
        // Checked again: the VM may have been removed while the request waited.
        this.checkSwitchTarget(p.target);
        p.resolve(await this.runSwitch(p.target));
      } catch (e) {
        p.reject(e);
      }
    }
    this.switchQueueBusy = false;
  }

  private async runSwitch(target: string): Promise<SwitchRecord> {
    this.transaction.begin(target);
    const inputInstanceAtStart = this.opts.input.instance;
    this.emit('manager-changed', ['Switching']);
    // run() always resolves (a failure is in the record). Switching=false goes out with the new
    // LastSwitch in one PropertiesChanged: one message less per switch (issue 17's switch tail).
    let rec: SwitchRecord;
    try {
      rec = await this.transaction.run(this.activeVm, target);
    } catch (e) {
      this.emit('manager-changed', ['Switching']);
      throw e;
    }
    this.lastSwitch = rec;
    this.emit('manager-changed', ['Switching', 'LastSwitch']);
    await this.settleAfterSwitch(rec, inputInstanceAtStart);
    if (rec.outcome !== 'ok') {
      const name = rec.error.replace(/^org\.bulkhead\.Error\./, '') as ConstructorParameters<
        typeof BulkheadError
      >[0];
      throw new BulkheadError(name, rec.message);
    }
    return rec;
  }

  async switchToSlot(slot: number): Promise<SwitchRecord> {
    if (!Number.isInteger(slot) || slot < 0 || slot > MAX_SLOT)
      throw new BulkheadError('InvalidArgument', `slot ${slot} is out of range 0-${MAX_SLOT}`);
    if (slot === 0) return this.switchTo(SWITCHER_PATH);
    const e = this.bySlot(slot);
    if (!e) throw new BulkheadError('NoSuchVm', `no VM in slot ${slot}`);
    return this.switchTo(vmPath(e.def.id));
  }
}
