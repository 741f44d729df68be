import type { Logger } from '@bulkhead/common';
import {
  BulkheadError,
  isBulkheadError,
  SWITCHER_PATH,
  vmIdFromPath,
  type CallContext,
  type Input1Properties,
  type Input1Service,
  type VariantDict,
} from '@bulkhead/contract';
import { parseOptions, type ExportedInterface } from '@bulkhead/dbus';
import { existsSync, rmSync } from 'node:fs';
import { writeFileAtomic } from '@bulkhead/common';
import type { Chord, HotkeyMatcher } from './hotkeys';
import type { HeldEntry, HeldKeysJournal } from './held-keys';
import { EV_KEY, ev } from './input-event';
import { InputPipeline } from './pipeline';
import { Router } from './router';
import type { InputSink } from './sinks/sink';
import type { InputSource } from './sources/source';
import { VirtualSeat } from './sources/virtual-seat';
import { IdleLock } from './unlock/idle-lock';
import type { UnlockCheck } from './unlock/unlock-check';

/**
 * Default safety bound of a hotkey's hold (InputServiceOptions.holdTimeoutMs): far beyond any
 * switch of two running VMs, GPU hand-off included; a switch that first boots its VM may run
 * longer (vm-daemon gives starting-vm 120 s), and what is typed meanwhile is then dropped rather
 * than kept for minutes.
 */
export const HOLD_SAFETY_BOUND_MS = 60_000;

/**
 * How long input-daemon waits for SwitchToSlot's answer: longer than the hold's bound and than
 * any switch vm-daemon lets run (its step timeouts add up to about 205 s), plus one switch queued
 * ahead of it. A shorter call timeout would end the hold as 'failed' while the switch still runs.
 */
export const SWITCH_CALL_TIMEOUT_MS = 450_000;

/** How long close() waits for hotkey actions still running (a switch vm-daemon has not answered). */
const CLOSE_WAIT_MS = 2000;

/** How a hotkey asks vm-daemon to switch (org.bulkhead.VmManager1.SwitchToSlot). */
export interface VmManagerLink {
  switchToSlot(slot: number): Promise<void>;
}

/** Makes the sink of a VM target (uinput fast path or QMP), given its input QMP socket. */
export interface SinkFactory {
  forVm(target: string, vmId: string, qmpSocket: string): Promise<InputSink>;
}

export interface InputServiceOptions {
  /** Records what each VM may hold, for the next daemon after a crash (held-keys.ts). */
  journal?: HeldKeysJournal | null;
  /**
   * Safety bound: the longest a switch hotkey holds input back when vm-daemon neither switches nor
   * answers (then what was held is dropped and input flows to wherever the focus is). The hold
   * normally ends when the switch resolves — its SetFocus or its answer — however long that takes
   * (a GPU hand-off takes seconds on real hardware: "Ctrl+2 abc" must type abc in VM 2 even when
   * the switch takes 5 s). Default HOLD_SAFETY_BOUND_MS.
   */
  holdTimeoutMs?: number;
  /**
   * What Unlock checks (the PAM gate on a hardware seat). Without one, Unlock fails with
   * NotSupported: a seat never unlocks by default.
   */
  unlock?: UnlockCheck | null;
  /** Lock the seat after this long without any input (0 or absent = never). */
  idleLockMs?: number;
  /**
   * Marks the seat locked across a restart of this daemon (in its run dir, which survives a
   * restart but not a reboot): a crashed or SIGKILLed input-daemon comes back locked when it was
   * locked, so killing it is no way around the lock.
   */
  lockFile?: string | null;
  /** How often, and how far apart, a lock retries pulling the screen home while a switch runs. */
  lockRetry?: { attempts: number; delayMs: number };
}

/**
 * org.bulkhead.Input1: glues a source, the hotkey matcher, the router and the sinks, and serves
 * the contract. Focus operations (Freeze, SetFocus, Lock, Unlock) run one at a time, in call order.
 */
export class InputService implements Input1Service {
  readonly router: Router;
  readonly pipeline: InputPipeline;
  private exported: ExportedInterface<'org.bulkhead.Input1'> | null = null;
  private lastHotkeyError = '';
  private readonly sinks = new Map<string, { sink: InputSink; socket: string }>();
  /** Connections being opened, per target (sinkFor). */
  private readonly connecting = new Map<string, Promise<InputSink>>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly pendingFocusProps = new Set<'FocusedTarget' | 'Frozen'>();
  private focusPropsScheduled = false;
  /** Hotkey actions in progress (tests wait for them). */
  private readonly inflight = new Set<Promise<void>>();
  private readonly idleLock: IdleLock | null;

  constructor(
    private readonly source: InputSource,
    private readonly hotkeys: HotkeyMatcher,
    private readonly switcherSink: InputSink,
    private readonly sinkFactory: SinkFactory,
    private readonly vmManager: VmManagerLink,
    private readonly log: Logger,
    private readonly options: InputServiceOptions = {},
  ) {
    this.router = new Router(switcherSink, source.leds, log.child('router'), options.journal ?? null);
    this.pipeline = new InputPipeline(hotkeys, this.router, (c) => this.onChord(c));
    this.idleLock = options.idleLockMs
      ? new IdleLock(options.idleLockMs, () => {
          if (this.router.isLocked) return;
          this.log.info(`no input for ${options.idleLockMs! / 1000} s: locking the seat`);
          void this.Lock();
        })
      : null;
    this.idleLock?.start();
    if (options.lockFile && existsSync(options.lockFile)) {
      log.warn(`${options.lockFile}: the seat was locked when the previous daemon ended; it stays locked`);
      this.router.lock();
    }
    source.on('frame', (frame, device) => {
      this.idleLock?.activity();
      this.pipeline.handleFrame(frame, device);
    });
    source.on('devices', () => this.exported?.propertiesChanged('Devices'));
  }

  /**
   * PropertiesChanged for Freeze and SetFocus, sent after their reply (setImmediate) and merged
   * when several come in one turn: vm-daemon's switch waits for each reply, and a signal written
   * before it woke the bus daemon first (issue 17's switch tail: ~9 % of input-daemon's samples
   * under the switch bench were these sends). The values are set before the reply, so a Get after
   * it sees them.
   */
  private focusChanged(...props: Array<'FocusedTarget' | 'Frozen'>): void {
    for (const p of props) this.pendingFocusProps.add(p);
    if (this.focusPropsScheduled) return;
    this.focusPropsScheduled = true;
    setImmediate(() => {
      this.focusPropsScheduled = false;
      const changed = [...this.pendingFocusProps];
      this.pendingFocusProps.clear();
      this.exported?.propertiesChanged(...changed);
    });
  }

  attach(exported: ExportedInterface<'org.bulkhead.Input1'>): void {
    this.exported = exported;
  }

  properties(): Input1Properties {
    return {
      FocusedTarget: this.router.focusedTarget,
      Frozen: this.router.isFrozen,
      Locked: this.router.isLocked,
      Seat: this.source.seat,
      Devices: this.source.devices().map((d) => [d.name, d.cls, d.bus, d.grabbed, d.node]),
      Hotkeys: this.hotkeys.list().map((c) => [c.text, c.actionText]),
      LastHotkeyError: this.lastHotkeyError,
    };
  }

  Freeze(_ctx: CallContext, options: VariantDict): Promise<void> {
    const opts = parseOptions('Freeze', options, { target: 'o', slot: 'u' } as const);
    return this.serial(async () => {
      // Decided in the same queue as Lock: a switch cannot slip between the lock and vm-daemon
      // hearing of it. Going home ('/', the lock screen) is always allowed.
      if (this.router.isLocked && opts.target !== undefined && opts.target !== SWITCHER_PATH)
        throw new BulkheadError(
          'Locked',
          `Freeze for a switch to ${opts.target}: the seat is locked; unlock first`,
        );
      // Target and slot tell a hotkey's hold whether this switch is the hotkey's (Router rule 6).
      this.router.freeze(
        opts.target !== undefined && opts.slot !== undefined
          ? { target: opts.target, slot: opts.slot }
          : undefined,
      );
      this.focusChanged('Frozen');
    });
  }

  SetFocus(_ctx: CallContext, target: string, options: VariantDict): Promise<void> {
    const opts = parseOptions('SetFocus', options, { qmp_socket: 's' } as const);
    const vmId = target === SWITCHER_PATH ? null : vmIdFromPath(target);
    if (target !== SWITCHER_PATH && vmId === null)
      throw new BulkheadError('InvalidArgument', `SetFocus: '${target}' is neither '/' nor a VM object path`);
    return this.serial(async () => {
      const sink = vmId === null ? this.switcherSink : await this.sinkFor(target, vmId, opts.qmp_socket);
      this.router.setFocus(target, sink);
      this.focusChanged('FocusedTarget', 'Frozen');
    });
  }

  /**
   * Connects to a VM's QEMU ahead of its first SetFocus (vm-daemon calls it when the VM starts
   * running): under TCG the connect, QMP greeting and capabilities took ~0.3 s of the first switch
   * to each VM. Outside the focus queue, so it never delays a switch's Freeze or SetFocus; a
   * SetFocus that comes while this connects waits for the same connection (sinkFor).
   */
  async Prepare(_ctx: CallContext, target: string, options: VariantDict): Promise<void> {
    const opts = parseOptions('Prepare', options, { qmp_socket: 's' } as const);
    const vmId = vmIdFromPath(target);
    if (vmId === null)
      throw new BulkheadError('InvalidArgument', `Prepare: '${target}' is not a VM object path`);
    if (!opts.qmp_socket) throw new BulkheadError('InvalidArgument', 'Prepare: qmp_socket is required');
    await this.sinkFor(target, vmId, opts.qmp_socket);
  }

  Lock(_ctx?: CallContext): Promise<void> {
    return this.serial(async () => this.lockNow());
  }

  /**
   * Locks the seat at once, outside the focus queue, as the secure-attention chord does: for
   * logind's PrepareForSleep (sleep-guard.ts), whose sleep goes on as soon as this returns. The
   * lock is recorded in the run dir by then; a Freeze still queued refuses a switch to a VM, an
   * Unlock still checking its password does not undo it, and the lock screen is called home.
   */
  lockForSleep(): void {
    this.lockNow();
  }

  async Unlock(_ctx: CallContext, options: VariantDict): Promise<void> {
    const opts = parseOptions('Unlock', options, { password: 's' } as const);
    if (!this.options.unlock)
      throw new BulkheadError(
        'NotSupported',
        'Unlock: this daemon has no unlock method configured (--unlock-user)',
      );
    // Not locked: nothing to do, and no password is checked (no guessing oracle while unlocked).
    if (!this.router.isLocked) return;
    // The check runs outside the focus queue: PAM may sleep seconds after a failure, and
    // Freeze/SetFocus/Lock must not wait for it. A lock that comes meanwhile (a sleep's, the
    // chord) is a new lock: this password, typed for the earlier one, does not undo it.
    const lockedAs = this.lockGeneration;
    await this.options.unlock.attempt(opts.password);
    return this.serial(async () => {
      if (this.lockGeneration !== lockedAs)
        throw new BulkheadError(
          'TryAgainLater',
          'Unlock: the seat was locked again while the password was checked; enter it again',
        );
      this.router.unlock();
      this.persistLocked(false);
      this.exported?.propertiesChanged('Locked');
    });
  }

  InjectEvents(_ctx: CallContext, device_class: string, events: Array<[number, number, number]>): void {
    if (!(this.source instanceof VirtualSeat))
      throw new BulkheadError(
        'NotSupported',
        `InjectEvents: this daemon runs the '${this.source.seat}' seat, not 'virtual'`,
      );
    this.source.inject(device_class, events);
  }

  /**
   * At start: release, in each VM, the keys and buttons an earlier daemon (SIGKILLed, crashed) may
   * have left down there — whether or not that VM gets the focus. Queued before any focus call, so
   * a VM never gets new presses before its leftovers are released. A VM whose socket is gone has
   * stopped: nothing to release.
   */
  releaseLeftovers(entries: HeldEntry[]): Promise<void> {
    const live = entries.filter((e) => {
      if (vmIdFromPath(e.target) === null || !e.codes.length) return false;
      if (existsSync(e.socket)) return true;
      this.log.info(`${e.target}: ${e.socket} is gone (VM stopped): no held keys to release`);
      return false;
    });
    // Kept in this daemon's journal until each VM confirms its releases: dying again before that
    // leaves them for the next one.
    this.options.journal?.adopt(live);
    return this.serial(async () => {
      for (const e of live) {
        const vmId = vmIdFromPath(e.target)!;
        try {
          const sink = await this.sinkFor(e.target, vmId, e.socket);
          if (sink.releaseInGuest) {
            // The uinput fast path: its new device never had these keys down, and the kernel
            // drops releases of keys a device does not hold. QEMU answered: forgotten.
            await sink.releaseInGuest(e.codes);
            this.options.journal?.released(sink, e.codes);
          } else {
            sink.write(e.codes.map((c) => ev(EV_KEY, c, 0)));
            this.options.journal?.released(sink, e.codes);
            await sink.delivered?.();
          }
          this.log.info(
            `${e.target}: released ${e.codes.length} key(s)/button(s) left down by the previous daemon`,
          );
        } catch (err) {
          this.log.warn(`${e.target}: cannot release the keys left down there: ${(err as Error).message}`);
        }
      }
    });
  }

  /** Waits until hotkey actions started so far have finished (tests). */
  async settled(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
    await this.queue.catch(() => undefined);
  }

  async close(): Promise<void> {
    this.idleLock?.stop();
    // A hotkey's SwitchToSlot may wait minutes for its answer (SWITCH_CALL_TIMEOUT_MS): stopping
    // does not wait that long for it.
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([
      // A Prepare still connecting would add its sink after the ones closed below.
      Promise.all([this.settled(), Promise.allSettled([...this.connecting.values()])]),
      new Promise((r) => {
        bound = setTimeout(r, CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(bound);
    for (const { sink } of this.sinks.values()) await sink.close().catch(() => undefined);
    this.sinks.clear();
  }

  /** Records the lock in the run dir (see InputServiceOptions.lockFile); never throws. */
  private persistLocked(locked: boolean): void {
    const file = this.options.lockFile;
    if (!file) return;
    try {
      if (locked) writeFileAtomic(file, 'locked\n', 0o600);
      else rmSync(file, { force: true });
    } catch (e) {
      this.log.error(
        `${file}: cannot record that the seat is ${locked ? 'locked' : 'unlocked'}: ${(e as Error).message}`,
      );
    }
  }

  /** After start: a seat that came back locked shows the lock screen, not a VM. */
  resumeLock(): void {
    if (this.router.isLocked) void this.returnHome();
  }

  /** Counts Lock calls: an Unlock undoes only the lock it was typed for (see Unlock). */
  private lockGeneration = 0;

  private lockNow(): void {
    this.lockGeneration++;
    const was = this.router.isLocked;
    this.router.lock();
    this.persistLocked(true);
    if (!was) this.exported?.propertiesChanged('Locked');
    this.exported?.emit('SecureAttention');
    // Pull the screen back to the switcher, where the lock screen is (as OpenXT does): a VM
    // showing its own display (a passed-through GPU) would otherwise stay visible behind the lock.
    if (!was) void this.returnHome();
  }

  /**
   * SwitchToSlot(0) for a lock. vm-daemon runs it after a switch already running (the last
   * request wins); an older vm-daemon answers SwitchInProgress instead, and a request made after
   * this one (refused at Freeze while locked) makes it Superseded: then try again, or a VM could
   * stay on the screen behind the lock.
   */
  private async returnHome(): Promise<void> {
    const { attempts, delayMs } = this.options.lockRetry ?? { attempts: 20, delayMs: 250 };
    for (let i = 1; ; i++) {
      try {
        await this.vmManager.switchToSlot(0);
        return;
      } catch (e) {
        const busy = isBulkheadError(e, 'SwitchInProgress') || isBulkheadError(e, 'Superseded');
        if (!busy || i >= attempts || !this.router.isLocked) {
          this.log.warn(`lock: cannot return to the switcher: ${(e as Error).message}`);
          return;
        }
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }

  /**
   * The sink of a VM, connected once: a connection in progress (Prepare, outside the focus queue)
   * is waited for, never opened twice, and a live one to the same socket is reused.
   */
  private sinkFor(target: string, vmId: string, socket: string | undefined): Promise<InputSink> {
    const inFlight = this.connecting.get(target);
    if (inFlight)
      return inFlight.then(
        () => this.sinkFor(target, vmId, socket),
        () => this.sinkFor(target, vmId, socket),
      );
    const cached = this.sinks.get(target);
    if (cached && cached.sink.alive && (!socket || socket === cached.socket))
      return Promise.resolve(cached.sink);
    const opening = this.openSink(target, vmId, socket);
    this.connecting.set(target, opening);
    const done = () => {
      if (this.connecting.get(target) === opening) this.connecting.delete(target);
    };
    opening.then(done, done);
    return opening;
  }

  private async openSink(target: string, vmId: string, socket: string | undefined): Promise<InputSink> {
    const cached = this.sinks.get(target);
    const path = socket ?? cached?.socket;
    if (!path)
      throw new BulkheadError(
        'InvalidArgument',
        `SetFocus: no qmp_socket for ${target} and no earlier connection to it`,
      );
    if (cached) {
      this.sinks.delete(target);
      await cached.sink.close().catch(() => undefined);
    }
    let sink: InputSink;
    try {
      sink = await this.sinkFactory.forVm(target, vmId, path);
    } catch (e) {
      throw new BulkheadError(
        'BackendFailed',
        `SetFocus ${target}: cannot reach its QEMU at ${path}: ${(e as Error).message}`,
      );
    }
    this.sinks.set(target, { sink, socket: path });
    this.options.journal?.setSocket(target, path);
    this.log.info(`${target}: input via ${sink.description}`);
    return sink;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private onChord(chord: Chord): void {
    this.log.info(`hotkey ${chord.text} → ${chord.actionText}`);
    this.exported?.emit('HotkeyPressed', chord.text, chord.actionText);
    const action = chord.action;
    const p = (async () => {
      if (action.kind === 'secure-attention') {
        // At once, not in the focus queue: keys read with the chord (one burst from the keyboard)
        // are routed before any queued call runs, and went to the VM being locked away from. A
        // Freeze still queued then finds the seat locked and refuses a switch to a VM.
        this.lockNow();
        this.setHotkeyError('');
        return;
      }
      if (this.router.isLocked) {
        // Locked: no switching until the person unlocks (the chord is still swallowed).
        this.setHotkeyError(`${chord.text}: the seat is locked; unlock first`);
        return;
      }
      // From this instant nothing typed reaches the VM being left (Router rule 6): what follows
      // the chord waits for the switch, then goes to where it lands — or nowhere if it fails.
      // vm-daemon runs the last request after the switch already running (issue 17), which may
      // be a click's that has not frozen input yet: only a Freeze naming this hotkey's slot arms
      // delivery at a SetFocus; otherwise this hotkey's own answer ends the hold.
      const hold = this.router.holdForSwitch({ slot: action.slot });
      const timer = setTimeout(() => {
        this.log.warn(
          `${chord.text}: no switch within ${this.holdTimeout} ms; input held meanwhile is dropped`,
        );
        this.router.endHold(hold, 'timeout');
      }, this.holdTimeout);
      timer.unref?.();
      try {
        await this.vmManager.switchToSlot(action.slot);
        this.router.endHold(hold, 'switched');
        this.setHotkeyError('');
      } catch (e) {
        this.router.endHold(hold, 'failed');
        if (isBulkheadError(e, 'Superseded')) {
          // Not a failure: a newer request (a later hotkey, a click) replaced this one before it
          // ran, and that one decides where input goes. What was typed for this one is dropped.
          this.log.info(`${chord.text} → SwitchToSlot(${action.slot}) superseded: ${e.message}`);
        } else {
          const msg = `${chord.text} → SwitchToSlot(${action.slot}) failed: ${(e as Error).message}`;
          this.log.warn(msg);
          this.setHotkeyError(msg);
        }
      } finally {
        clearTimeout(timer);
      }
    })();
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private get holdTimeout(): number {
    return this.options.holdTimeoutMs ?? HOLD_SAFETY_BOUND_MS;
  }

  private setHotkeyError(msg: string): void {
    if (msg === this.lastHotkeyError) return;
    this.lastHotkeyError = msg;
    this.exported?.propertiesChanged('LastHotkeyError');
  }
}
