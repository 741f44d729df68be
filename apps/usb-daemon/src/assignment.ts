/**
 * usb-daemon's assignment core: the policy decisions, attach/detach through vm-directory,
 * prompts, follow-focus and the rebuild after a restart. No D-Bus here: the bus adapter
 * (usb-service.ts) calls the public methods and turns `events` into objects, signals and
 * PropertiesChanged. Every device belongs to the Control Domain ('/') unless it is attached to
 * exactly one VM through that VM's Vm1.AttachUsbDevice.
 */
import { join } from 'node:path';
import { BulkheadError, SWITCHER_PATH } from '@bulkhead/contract';
import {
  TypedEmitter,
  defaultFileRules,
  readDefinitionFile,
  readJsonFile,
  setAsideSaying,
  setAsideUnusableFile,
  writeFileAtomic,
  type Logger,
} from '@bulkhead/common';

/** Largest rules file read (a rule is ~100 bytes). */
const MAX_RULES_FILE_BYTES = 256 * 1024;
import { displayName, type UsbDeviceInfo } from './device';
import { CONTROL_DOMAIN, DeviceTable, keyOf, type DeviceChange, type DeviceEntry } from './device-table';
import type { UsbDeviceKey, UsbEnumerator } from './enumerators/enumerator';
import {
  assignRefusal,
  decideNewDevice,
  formatRules,
  isInputDevice,
  isStickyRuleFor,
  parseRules,
  stickyRefusal,
  stickyRule,
  stickyTarget,
  RulesError,
  type Decision,
  type PolicyContext,
  type PolicyVm,
  type Rule,
} from './policy';
import type { VmControl } from './vm-directory';

/** What a follow-focus move did to one device: (device id, holder before, outcome, duration µs). */
export type UsbMoveRow = [id: string, holderBefore: string, outcome: string, durationUsec: bigint];

/** An open 'ask' prompt: may `deviceId` go to `vm`? */
export interface Prompt {
  id: number;
  deviceId: string;
  vm: string;
  timer: NodeJS.Timeout;
}

/** What the core tells its adapter; payloads are the core's own entries (read, never written). */
export interface AssignmentEvents {
  /** A device appeared; emitted before policy places it. */
  deviceAdded: [entry: DeviceEntry];
  /** A vanished device's cleanup finished; it is no longer in the table. */
  deviceForgotten: [entry: DeviceEntry];
  deviceChanged: [entry: DeviceEntry, changed: DeviceChange[]];
  deviceRejected: [entry: DeviceEntry, reason: string];
  attachRequested: [promptId: number, entry: DeviceEntry, vm: string];
  rulesChanged: [];
  promptsChanged: [];
}

export interface UsbAssignmentOptions {
  enumerator: UsbEnumerator;
  vms: VmControl;
  log: Logger;
  /** Rules file (JSON); missing = no rules (the defaults apply). */
  rulesFile: string;
  /** Directory of usb-daemon's state file (follow-focus flags). */
  stateDir: string;
  /** How long an 'ask' prompt waits for an answer before it counts as deny. */
  promptTimeoutMs?: number;
}

interface StateFile {
  version: 1;
  followFocus: string[];
}

export class UsbAssignment {
  readonly events = new TypedEmitter<AssignmentEvents>();
  readonly devices = new DeviceTable((entry, changed) => this.events.emit('deviceChanged', entry, changed));
  private readonly log: Logger;
  private readonly vms: VmControl;
  private readonly prompts = new Map<number, Prompt>();
  private readonly followFocus = new Set<string>();
  private rules: Rule[] = [];
  /** Set when the rules file on disk is invalid: nothing is auto-attached until SetRules. */
  private rulesProblem: string | null = null;
  private nextPromptId = 1;
  private stopWatching: (() => void) | null = null;
  private started = false;
  private stopped = false;
  private readonly promptTimeoutMs: number;
  private readonly stateFile: string;

  constructor(private readonly opts: UsbAssignmentOptions) {
    this.log = opts.log;
    this.vms = opts.vms;
    this.promptTimeoutMs = opts.promptTimeoutMs ?? 60_000;
    this.stateFile = join(opts.stateDir, 'usb-daemon.json');
  }

  // ---------------------------------------------------------------------------------------------
  // What the adapter reads

  /** The rules in force, as the rules file would hold them. */
  rulesText(): string {
    return formatRules(this.rules);
  }

  pendingPrompts(): Prompt[] {
    return [...this.prompts.values()];
  }

  isSticky(entry: DeviceEntry): boolean {
    return stickyTarget(entry.policy, this.rules) !== null;
  }

  followsFocus(id: string): boolean {
    return this.followFocus.has(id);
  }

  // ---------------------------------------------------------------------------------------------
  // Start and stop

  /**
   * Load rules and state, enumerate devices, learn what running VMs already hold (a restarted
   * usb-daemon detaches nothing), then place the remaining devices by policy.
   */
  async start(): Promise<void> {
    this.loadRules();
    this.loadState();

    // Hotplug events that arrive while starting are queued and replayed afterwards.
    const early: Array<() => void> = [];
    const onEvent = (fn: () => void) => (this.started ? fn() : early.push(fn));
    this.stopWatching = this.opts.enumerator.watch({
      added: (info) => onEvent(() => this.deviceAdded(info, true)),
      removed: (key) => onEvent(() => this.deviceRemoved(key)),
      error: (msg) => this.log.warn(msg),
    });
    let initial: UsbDeviceInfo[] = [];
    try {
      initial = await this.opts.enumerator.list();
    } catch (e) {
      this.log.error(`${this.opts.enumerator.name}: cannot list USB devices: ${(e as Error).message}`);
    }
    for (const info of initial) this.deviceAdded(info, false);

    const vms = this.vms;
    vms.events.on('synced', () => void this.reconcileSoon());
    vms.events.on('vmState', (path, state, previous) => this.vmStateChanged(path, state, previous));
    vms.events.on('vmRemoved', (path) => this.vmGone(path, 'was removed'));
    vms.events.on('activeVm', (path) => this.focusChanged(path));
    await vms.start();
    // vm-daemon answered: the reconciliation its list started is the start's (waited for here);
    // it did not: one without VMs (devices recorded on VMs no longer known come back).
    await (this.reconciling ?? this.reconcileSoon());

    this.started = true;
    // Devices present at start are not new: a restart must not move a device the person took
    // back. Only sticky rules, deny rules and the input default apply to them; auto-attach to the
    // focused VM and 'ask' happen on hotplug.
    for (const e of this.devices.values()) if (e.assignedVm === CONTROL_DOMAIN) this.place(e, 'start');
    // A switch made while no usb-daemon ran (killed, restarting: its move-usb was skipped or cut
    // off) left follow-focus devices in the VM it left: they go to the VM in front now, as that
    // switch would have moved them. One in the Control Domain stays: a restart is not a switch.
    this.focusChanged(this.vms.activeVm(), { missedOnly: true });
    for (const fn of early.splice(0)) fn();
    this.log.info(
      `started: ${this.devices.size} device(s), ${this.rules.length} rule(s), enumerator ${this.opts.enumerator.name}`,
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopWatching?.();
    for (const p of this.prompts.values()) clearTimeout(p.timer);
    this.prompts.clear();
    await this.vms.stop();
  }

  // ---------------------------------------------------------------------------------------------
  // Rules and state files

  private loadRules(): void {
    // An administrator's file: a regular file of root's (the daemon's uid), writable by nobody
    // else, bounded, UTF-8; a rules file anyone could write would decide where keyboards go.
    const r = readDefinitionFile(this.opts.rulesFile, {
      ...defaultFileRules(),
      maxBytes: MAX_RULES_FILE_BYTES,
    });
    if (!r.ok) {
      if (r.missing) this.log.info(`no rules file at ${this.opts.rulesFile}: default policy`);
      else this.rulesBroken(`${this.opts.rulesFile}: ${r.reason}`);
      return;
    }
    try {
      this.rules = parseRules(r.text);
    } catch (e) {
      this.rulesBroken(`${this.opts.rulesFile}: ${(e as Error).message}`);
    }
  }

  private rulesBroken(problem: string): void {
    // Running with an unreadable rules file must not hand devices out that a deny rule may have
    // kept: nothing is attached automatically until SetRules installs valid rules.
    this.rulesProblem = problem;
    this.log.error(`invalid rules file, no device is attached automatically until SetRules: ${problem}`);
  }

  private loadState(): void {
    const r = readJsonFile<StateFile>(this.stateFile, (v) => {
      const o = v as Partial<StateFile>;
      if (
        !o ||
        o.version !== 1 ||
        !Array.isArray(o.followFocus) ||
        !o.followFocus.every((x) => typeof x === 'string')
      )
        throw new Error('expected {version: 1, followFocus: [device ids]}');
      return o as StateFile;
    });
    if (r.ok) r.value.followFocus.forEach((id) => this.followFocus.add(id));
    else if (!r.missing) {
      // Kept aside before the next saveState replaces it: the follow-focus choices it held are
      // lost to the daemon (the safe way: devices stay where the rules put them) but not to a
      // person, who can read them there.
      const aside = setAsideSaying(this.stateFile);
      this.log.error(`state file unusable, no device follows focus until chosen again: ${r.error}; ${aside}`);
    }
  }

  private saveState(): void {
    const s: StateFile = { version: 1, followFocus: [...this.followFocus].sort() };
    writeFileAtomic(this.stateFile, JSON.stringify(s, null, 2) + '\n');
  }

  private saveRules(rules: Rule[]): void {
    // SetRules replacing a rules file that could not be used: the administrator's file is kept
    // aside first (it may hold the rules they meant, with one typo), not overwritten.
    if (this.rulesProblem) {
      const aside = setAsideUnusableFile(this.opts.rulesFile);
      if (aside) this.log.warn(`the invalid rules file is kept aside as ${aside}; SetRules writes a new one`);
    }
    try {
      writeFileAtomic(this.opts.rulesFile, formatRules(rules));
    } catch (e) {
      throw new BulkheadError(
        'Failed',
        `cannot write the rules file ${this.opts.rulesFile}: ${(e as Error).message}`,
      );
    }
    this.rules = rules;
    this.rulesProblem = null;
    this.events.emit('rulesChanged');
    for (const e of this.devices.values()) this.events.emit('deviceChanged', e, ['Sticky']);
  }

  // ---------------------------------------------------------------------------------------------
  // Devices appearing and vanishing

  private deviceAdded(info: UsbDeviceInfo, place: boolean): void {
    if (this.stopped) return;
    const entry = this.devices.add(info);
    if (!entry) return;
    this.events.emit('deviceAdded', entry);
    this.log.info(
      `device ${entry.id} (${displayName(info)}) at bus ${info.bus} address ${info.address} port ${info.port}: ${entry.policy.classes.join(',')}`,
    );
    if (place) this.place(entry);
  }

  private deviceRemoved(key: UsbDeviceKey): void {
    const entry = this.devices.vanished(key);
    if (!entry) return;
    this.cancelPromptsFor((p) => p.deviceId === entry.id);
    this.log.info(
      `device ${entry.id} vanished${entry.assignedVm !== CONTROL_DOMAIN ? ` while assigned to ${entry.assignedVm}` : ''}`,
    );
    // After any running attach/detach finished: detach from the VM if it still lists the
    // attachment (QEMU may keep a usb-host device whose host side vanished), then remove it.
    void this.devices
      .enqueue(entry, async () => {
        if (entry.assignedVm !== CONTROL_DOMAIN && entry.handle)
          await this.detachIfListed(entry.assignedVm, entry.handle, entry.id);
        this.devices.forget(entry);
        this.events.emit('deviceForgotten', entry);
      })
      .catch((e) => this.log.error(`cleanup of ${entry.id}: ${(e as Error).message}`));
  }

  private async detachIfListed(vm: string, handle: string, what: string): Promise<void> {
    try {
      const held = await this.vms.list(vm);
      if (!held.some((h) => h.handle === handle)) return;
      await this.vms.detach(vm, handle);
      this.log.info(`detached vanished ${what} (handle ${handle}) from ${vm}`);
    } catch (e) {
      this.log.warn(`cannot detach vanished ${what} (handle ${handle}) from ${vm}: ${(e as Error).message}`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Policy

  private policyContext(): PolicyContext {
    const vms = new Map<string, PolicyVm>();
    for (const vm of this.vms.vms().values())
      vms.set(vm.id, { running: vm.state === 'running', usbAutoAttach: vm.usbAutoAttach });
    const active = this.vms.activeVm();
    return {
      focusedVm: active === SWITCHER_PATH ? null : (this.vms.vms().get(active)?.id ?? null),
      vms,
    };
  }

  private vmPathOf(id: string): string | null {
    for (const vm of this.vms.vms().values()) if (vm.id === id) return vm.path;
    return null;
  }

  /** Place a device that is in the Control Domain by policy (new device, or after start). */
  private place(entry: DeviceEntry, when: 'hotplug' | 'start' = 'hotplug'): void {
    if (entry.gone || this.stopped) return;
    let d: Decision = this.rulesProblem
      ? { kind: 'wait', reason: `the rules file is invalid (${this.rulesProblem})` }
      : decideNewDevice(entry.policy, this.rules, this.policyContext());
    if (when === 'start' && (d.kind === 'ask' || (d.kind === 'attach' && !d.sticky)))
      d = { kind: 'wait', reason: `present at start (${d.reason}): only sticky rules move it` };
    this.log.info(`device ${entry.id}: ${d.kind}: ${d.reason}`);
    switch (d.kind) {
      case 'input':
        return this.devices.setState(entry, 'input');
      case 'wait':
        return;
      case 'reject':
        return this.reject(entry, d.reason);
      case 'ask': {
        const vm = this.vmPathOf(d.vm);
        if (vm) this.openPrompt(entry, vm);
        return;
      }
      case 'attach': {
        const vm = this.vmPathOf(d.vm);
        if (vm) void this.attachTo(entry, vm).catch(() => undefined); // failures are logged and signalled
        return;
      }
    }
  }

  private reject(entry: DeviceEntry, reason: string): void {
    entry.rejected = true;
    if (entry.assignedVm === CONTROL_DOMAIN) this.devices.setState(entry, 'rejected');
    this.events.emit('deviceRejected', entry, reason);
  }

  // ---------------------------------------------------------------------------------------------
  // Attaching and detaching (always through the VM's Vm1 methods)

  /** Give `entry` to `vm`, detaching it from any other VM first. Rejects with a named error. */
  private attachTo(entry: DeviceEntry, vm: string): Promise<void> {
    return this.devices.enqueue(entry, async () => {
      if (entry.gone) throw new BulkheadError('NoSuchDevice', `device ${entry.id} vanished`);
      if (entry.assignedVm === vm && entry.state === 'attached') return;
      if (entry.assignedVm !== CONTROL_DOMAIN) await this.detachNow(entry);
      const view = this.vms.vms().get(vm);
      if (!view || view.state !== 'running')
        throw new BulkheadError('InvalidState', `VM ${vm} is not running`);
      this.devices.setState(entry, 'attaching');
      let handle: string;
      try {
        handle = await this.vms.attach(vm, entry.info.bus, entry.info.address, entry.info.port);
      } catch (e) {
        const reason = `attach to ${vm} failed: ${(e as Error).message}`;
        this.log.warn(`device ${entry.id}: ${reason}`);
        this.devices.setState(entry, this.devices.restingState(entry));
        if (!entry.gone) this.events.emit('deviceRejected', entry, reason);
        throw new BulkheadError(entry.gone ? 'NoSuchDevice' : 'BackendFailed', reason);
      }
      if (entry.gone) {
        // Vanished while attaching: the VM may hold a dead attachment; remove it.
        await this.detachIfListed(vm, handle, entry.id);
        throw new BulkheadError('NoSuchDevice', `device ${entry.id} vanished while attaching to ${vm}`);
      }
      if (this.vms.vms().get(vm)?.state !== 'running') {
        // The VM stopped while attaching: its device model, and the attachment, are gone.
        this.devices.setAssigned(entry, CONTROL_DOMAIN, null, this.devices.restingState(entry));
        throw new BulkheadError('InvalidState', `VM ${vm} stopped while ${entry.id} was being attached`);
      }
      entry.rejected = false;
      this.devices.setAssigned(entry, vm, handle, 'attached');
      this.log.info(`device ${entry.id} attached to ${vm} (handle ${handle})`);
    });
  }

  /** Inside the device's queue: take it back from its VM. */
  private async detachNow(entry: DeviceEntry): Promise<void> {
    const vm = entry.assignedVm;
    const handle = entry.handle;
    if (vm === CONTROL_DOMAIN) return;
    this.devices.setState(entry, 'detaching');
    if (handle) {
      try {
        await this.vms.detach(vm, handle);
      } catch (e) {
        // If the VM no longer holds it, the device is back anyway; otherwise it stays attached.
        const still = await this.vms.list(vm).then(
          (held) => held.some((h) => h.handle === handle),
          () => this.vms.vms().get(vm)?.state === 'running',
        );
        if (still) {
          this.devices.setState(entry, 'attached');
          throw new BulkheadError(
            'BackendFailed',
            `detach of ${entry.id} from ${vm} failed: ${(e as Error).message}`,
          );
        }
      }
    }
    this.devices.setAssigned(entry, CONTROL_DOMAIN, null, this.devices.restingState(entry));
    this.log.info(`device ${entry.id} detached from ${vm}`);
  }

  // ---------------------------------------------------------------------------------------------
  // VMs: restart reconciliation, stop/crash, start, focus

  /**
   * Ask every running VM which host USB devices it holds and take that as the truth: devices it
   * lists are assigned to it (matched by bus/address), devices we thought it held and it does
   * not list return to the Control Domain. Nothing is detached.
   */
  private reconciling: Promise<void> | null = null;
  private reconcileAgain = false;

  /**
   * One reconciliation at a time: a request while one runs (vm-daemon came back mid-way) runs
   * one more after it, on the newer VM list, instead of a second beside it on an older one.
   * Never rejects (a failure is logged).
   */
  private reconcileSoon(): Promise<void> {
    if (this.reconciling) {
      this.reconcileAgain = true;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      try {
        do {
          this.reconcileAgain = false;
          await this.reconcile().catch((e) => this.log.error(`reconcile: ${(e as Error).message}`));
        } while (this.reconcileAgain);
      } finally {
        this.reconciling = null;
      }
    })();
    return this.reconciling;
  }

  private async reconcile(): Promise<void> {
    const holders = new Map<string, { vm: string; handle: string }>();
    const asked = new Set<string>();
    for (const vm of this.vms.vms().values()) {
      if (vm.state !== 'running' && vm.state !== 'paused') continue;
      try {
        for (const a of await this.vms.list(vm.path))
          holders.set(`${a.bus}/${a.address}`, { vm: vm.path, handle: a.handle });
        asked.add(vm.path);
      } catch (e) {
        this.log.warn(`cannot ask ${vm.path} which USB devices it holds: ${(e as Error).message}`);
      }
    }
    this.log.info(
      `asked the running VMs which USB devices they hold: ${[...holders].map(([key, h]) => `${h.vm} ${key} (${h.handle})`).join(', ') || 'none'}`,
    );
    for (const [key, h] of holders) {
      const entry = this.devices.atKey(key);
      if (!entry) {
        this.log.warn(
          `${h.vm} holds USB bus/address ${key} (handle ${h.handle}), which is not present on the host`,
        );
        continue;
      }
      if (entry.state === 'attaching' || entry.state === 'detaching') continue;
      if (entry.assignedVm !== h.vm || entry.handle !== h.handle) {
        this.log.info(`device ${entry.id} is held by ${h.vm} (handle ${h.handle}): recorded`);
        this.devices.setAssigned(entry, h.vm, h.handle, 'attached');
      }
    }
    for (const entry of this.devices.values()) {
      if (entry.state !== 'attached' || !asked.has(entry.assignedVm)) continue;
      if (holders.get(keyOf(entry.info))?.vm !== entry.assignedVm) {
        this.log.info(
          `device ${entry.id}: ${entry.assignedVm} no longer holds it: back to the Control Domain`,
        );
        this.devices.setAssigned(entry, CONTROL_DOMAIN, null, this.devices.restingState(entry));
      }
    }
    for (const entry of this.devices.values())
      if (entry.state === 'attached' && !this.vms.vms().has(entry.assignedVm))
        this.returnToControlDomain(entry, 'its VM is gone');
  }

  private returnToControlDomain(entry: DeviceEntry, why: string): void {
    this.log.info(`device ${entry.id} returns to the Control Domain: ${why}`);
    this.devices.setAssigned(entry, CONTROL_DOMAIN, null, this.devices.restingState(entry));
  }

  private vmGone(path: string, why: string): void {
    this.cancelPromptsFor((p) => p.vm === path);
    for (const entry of this.devices.values())
      if (entry.assignedVm === path && entry.state !== 'attaching')
        this.returnToControlDomain(entry, `${path} ${why}`);
  }

  private vmStateChanged(path: string, state: string, previous: string): void {
    if (state === 'stopped' || state === 'crashed')
      return this.vmGone(path, state === 'crashed' ? 'crashed' : 'stopped');
    if (state === 'running' && previous !== 'paused' && this.started && !this.rulesProblem) {
      // Sticky devices waiting in the Control Domain follow their VM when it starts.
      const id = this.vms.vms().get(path)?.id;
      for (const entry of this.devices.values()) {
        if (entry.gone || entry.assignedVm !== CONTROL_DOMAIN || entry.state === 'attaching') continue;
        if (stickyTarget(entry.policy, this.rules)?.vm === id)
          void this.attachTo(entry, path).catch(() => undefined);
      }
    }
  }

  /**
   * FollowFocus as a switch step (Usb1.MoveFollowFocus, vm-daemon's move-usb): move every
   * follow-focus device the policy allows to `vm` and answer when each move is over, so the
   * switch waits for it and can undo it (returnDevices) when a later step fails. A device that
   * cannot move stays where it is: reported in its row, not thrown (the person still switches).
   */
  async moveFollowFocus(vm: string): Promise<UsbMoveRow[]> {
    if (vm === SWITCHER_PATH || !this.started || this.stopped) return [];
    const view = this.vms.vms().get(vm);
    if (!view) throw new BulkheadError('InvalidArgument', `MoveFollowFocus: no VM at ${vm}`);
    if (view.state !== 'running')
      throw new BulkheadError('InvalidState', `MoveFollowFocus: VM ${view.id} is ${view.state}, not running`);
    const moves: Array<Promise<UsbMoveRow>> = [];
    for (const entry of this.devices.values()) {
      if (!this.followFocus.has(entry.id) || entry.gone || entry.assignedVm === vm) continue;
      const refusal = assignRefusal(entry.policy, view.id, this.rules);
      if (refusal) {
        this.log.info(`follow-focus: ${entry.id} stays: ${refusal}`);
        continue;
      }
      moves.push(this.timedMove(entry, 'moved', () => this.attachTo(entry, vm)));
    }
    return Promise.all(moves);
  }

  /**
   * The undo of moveFollowFocus (Usb1.ReturnDevices): each device goes back to the holder it had
   * ('/' = detached into the Control Domain). Per-device failures are reported in the rows.
   */
  async returnDevices(list: Array<[id: string, holder: string]>): Promise<UsbMoveRow[]> {
    return Promise.all(
      list.map(([id, holder]) => {
        const entry = this.devices.get(id);
        if (!entry || entry.gone)
          return Promise.resolve<UsbMoveRow>([id, holder, `failed: device ${id} is not present`, 0n]);
        return this.timedMove(entry, 'returned', () =>
          holder === CONTROL_DOMAIN
            ? this.devices.enqueue(entry, () => this.detachNow(entry))
            : this.attachTo(entry, holder),
        );
      }),
    );
  }

  private async timedMove(entry: DeviceEntry, done: string, move: () => Promise<void>): Promise<UsbMoveRow> {
    const before = entry.assignedVm;
    const t0 = process.hrtime.bigint();
    let outcome = done;
    try {
      await move();
    } catch (e) {
      outcome = `failed: ${(e as Error).message}`;
      this.log.warn(`follow-focus: ${entry.id}: ${(e as Error).message}`);
    }
    return [entry.id, before, outcome, (process.hrtime.bigint() - t0) / 1000n];
  }

  /**
   * Recovery only: runs when VmManager1.ActiveVm changes. The switch itself moved the devices
   * (moveFollowFocus); what is still elsewhere here was missed — usb-daemon restarted, or was
   * not on the bus, during the switch. Never moves a device to the switcher.
   */
  private focusChanged(active: string, opts: { missedOnly?: boolean } = {}): void {
    if (!this.started || active === SWITCHER_PATH) return;
    const vm = this.vms.vms().get(active);
    if (!vm || vm.state !== 'running') return;
    for (const entry of this.devices.values()) {
      if (!this.followFocus.has(entry.id) || entry.gone || entry.assignedVm === active) continue;
      if (opts.missedOnly && entry.assignedVm === CONTROL_DOMAIN) continue;
      const refusal = assignRefusal(entry.policy, vm.id, this.rules);
      if (refusal) {
        this.log.info(`follow-focus: ${entry.id} stays: ${refusal}`);
        continue;
      }
      void this.attachTo(entry, active).catch((e) =>
        this.log.warn(`follow-focus: ${entry.id}: ${(e as Error).message}`),
      );
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Prompts ('ask' rules)

  private openPrompt(entry: DeviceEntry, vm: string): void {
    const id = this.nextPromptId++;
    const timer = setTimeout(() => {
      if (!this.prompts.delete(id)) return;
      this.events.emit('promptsChanged');
      this.log.info(`prompt ${id} for ${entry.id} timed out: deny`);
      if (!entry.gone)
        this.reject(entry, `nobody answered prompt ${id} within ${this.promptTimeoutMs / 1000} s`);
    }, this.promptTimeoutMs);
    timer.unref();
    this.prompts.set(id, { id, deviceId: entry.id, vm, timer });
    this.events.emit('promptsChanged');
    this.events.emit('attachRequested', id, entry, vm);
  }

  private cancelPromptsFor(pred: (p: Prompt) => boolean): void {
    let any = false;
    for (const p of [...this.prompts.values()])
      if (pred(p)) {
        clearTimeout(p.timer);
        this.prompts.delete(p.id);
        any = true;
      }
    if (any) this.events.emit('promptsChanged');
  }

  async answerPrompt(id: number, answer: string): Promise<void> {
    if (answer !== 'allow' && answer !== 'deny')
      throw new BulkheadError('InvalidArgument', `answer must be 'allow' or 'deny', got '${answer}'`);
    const p = this.prompts.get(id);
    if (!p)
      throw new BulkheadError(
        'InvalidState',
        `prompt ${id} is not open (answered, timed out, or never asked)`,
      );
    this.cancelPromptsFor((x) => x.id === id);
    const entry = this.devices.get(p.deviceId);
    if (!entry || entry.gone) throw new BulkheadError('NoSuchDevice', `the device of prompt ${id} vanished`);
    if (answer === 'deny') return this.reject(entry, `the person denied prompt ${id}`);
    await this.attachTo(entry, p.vm);
  }

  // ---------------------------------------------------------------------------------------------
  // What the adapter calls: the Usb1 and UsbDevice1 methods, by device id

  async setRules(text: string): Promise<void> {
    let rules: Rule[];
    try {
      rules = parseRules(text);
    } catch (e) {
      if (e instanceof RulesError) throw new BulkheadError('InvalidConfig', `SetRules: ${e.message}`);
      throw e;
    }
    this.saveRules(rules);
    this.log.info(`rules replaced: ${rules.length} rule(s)`);
  }

  /** A present device, or NoSuchDevice. */
  private entry(id: string): DeviceEntry {
    const e = this.devices.get(id);
    if (!e || e.gone) throw new BulkheadError('NoSuchDevice', `device ${id} is not present`);
    return e;
  }

  async assign(id: string, vm: string): Promise<void> {
    const entry = this.entry(id);
    if (vm === SWITCHER_PATH) {
      if (entry.assignedVm !== CONTROL_DOMAIN) await this.release(id);
      return;
    }
    const view = this.vms.vms().get(vm);
    if (!view) throw new BulkheadError('NoSuchVm', `no VM at ${vm}`);
    if (view.state !== 'running')
      throw new BulkheadError('InvalidState', `VM ${view.id} is ${view.state}, not running`);
    const refusal = assignRefusal(entry.policy, view.id, this.rules);
    if (refusal) throw new BulkheadError('PolicyDenied', refusal);
    this.cancelPromptsFor((p) => p.deviceId === id);
    await this.attachTo(entry, vm);
  }

  async release(id: string): Promise<void> {
    const entry = this.entry(id);
    if (entry.assignedVm === CONTROL_DOMAIN && entry.state !== 'attaching')
      throw new BulkheadError('InvalidState', `device ${id} is not assigned to a VM`);
    await this.devices.enqueue(entry, () => this.detachNow(entry));
  }

  setSticky(id: string, sticky: boolean): void {
    const entry = this.entry(id);
    const others = this.rules.filter((r) => !isStickyRuleFor(r, entry.policy));
    if (sticky) {
      if (entry.assignedVm === CONTROL_DOMAIN)
        throw new BulkheadError('InvalidState', `device ${id} is not assigned to a VM; assign it first`);
      const present = [...this.devices.values()].filter((e) => !e.gone).map((e) => e.policy);
      const refusal = stickyRefusal(entry.policy, present);
      if (refusal) throw new BulkheadError('PolicyDenied', refusal);
      const vmId = this.vms.vms().get(entry.assignedVm)?.id;
      if (!vmId) throw new BulkheadError('InvalidState', `the VM holding ${id} is unknown`);
      this.saveRules([stickyRule(entry.policy, vmId), ...others]);
    } else {
      if (others.length !== this.rules.length) this.saveRules(others);
      const still = stickyTarget(entry.policy, this.rules);
      if (still)
        throw new BulkheadError(
          'InvalidState',
          `rule ${still.rule} still sends ${id} to ${still.vm}; edit the rules to change it`,
        );
    }
  }

  setFollowFocus(id: string, follow: boolean): void {
    const entry = this.entry(id);
    if (follow && isInputDevice(entry.policy)) {
      const refusal = assignRefusal(entry.policy, '*', this.rules);
      if (refusal) throw new BulkheadError('PolicyDenied', refusal);
    }
    if (follow === this.followFocus.has(id)) return;
    if (follow) this.followFocus.add(id);
    else this.followFocus.delete(id);
    this.saveState();
    this.events.emit('deviceChanged', entry, ['FollowFocus']);
  }
}
