import { EV_ABS, EV_KEY, EV_REL, REL_X, REL_Y, ev, type Frame, type InputEvent } from './input-event';
import { KEY_CAPSLOCK, KEY_NUMLOCK, KEY_SCROLLLOCK } from './keycodes';
import type { InputSink } from './sinks/sink';

/**
 * THE ROUTER — the one place that decides which target sees an event.
 *
 * Rules (each one is a test in router.test.ts and the property test):
 *  1. A frame goes to exactly one sink: the switcher while Locked; nothing while Frozen; else the
 *     focused target's sink. Never to two targets, never to a target that is not the destination.
 *  2. `held` is the set of keys/buttons (every EV_KEY code: keys < 0x100 AND BTN_* ≥ 0x100) whose
 *     press the CURRENT destination received. Before the destination changes (Freeze, SetFocus,
 *     Lock, Unlock) every held code is released in the old destination, so nothing stays stuck.
 *  3. A release or autorepeat whose press the destination did not receive is dropped: a target is
 *     never handed half a key stroke (keys held across a switch).
 *  5. `generation` counts destination changes; `epoch` counts those the pipeline drops modifiers
 *     it held back for the old destination at (hotkeys.ts) instead of handing them to the new one:
 *     every one, except the Freezes and SetFocuses inside a hotkey's hold that goes on. What is
 *     typed during a hold goes with it — a Ctrl still held back when the hold is delivered goes on
 *     to where the hold went (Ctrl+2, Ctrl, [switch lands], C types Ctrl+C in VM 2); a dropped
 *     hold bumps the epoch, dropping it too.
 *  4. Lock-key LEDs (Caps/Num/Scroll) are tracked per target from the lock-key presses each
 *     target received, and put on the physical keyboards when that target gets the input.
 *  6. A switch hotkey HOLDS input (holdForSwitch) from the instant it is recognised until the switch
 *     resolves: nothing typed after Ctrl+N reaches the VM being left. The target the hold began on
 *     is its `origin`. Held frames go, in order and by the rules above, to the new destination when
 *     the hotkey's own switch focuses it — a Freeze naming the hotkey's slot (vm-daemon's `slot`
 *     option) arms the hold with that Freeze's target, and the SetFocus naming that target (not
 *     the origin) delivers — or when the switch is reported done (endHold 'switched': the person
 *     asked for where input now goes, e.g. Ctrl+1 while in VM 1). A Freeze of another slot (a
 *     click's switch still running, an earlier hotkey's) disarms it: that switch's SetFocus is not
 *     where this hotkey goes. Held frames are DROPPED when the switch fails or times out (the focus
 *     stays on — or returns to — the origin, which must not get them), on Lock, on a newer hotkey,
 *     and all of them when they exceed MAX_HELD_EVENTS (never half of what was typed). Pure
 *     pointer motion is not held.
 *  7. `recorder` (HeldKeysJournal) is told of every press BEFORE the frame carrying it is handed to
 *     a sink, and of releases after: a SIGKILLed daemon's successor can release what a VM holds.
 */

/** Bound on events held back during one switch (about 250 keystrokes); beyond it all are dropped. */
export const MAX_HELD_EVENTS = 512;

/** How a switch hotkey's hold ended (see rule 6). */
export type HoldOutcome = 'switched' | 'failed' | 'timeout';

/** Told of the key/button presses and releases each sink gets (rule 7). */
export interface PressRecorder {
  /** Called before `codes` are pressed in `sink`: must be recorded when it returns. */
  willPress(sink: InputSink, codes: readonly number[]): void;
  /** Called once releases of `codes` were handed to `sink`. */
  released(sink: InputSink, codes: readonly number[]): void;
}

interface Hold {
  token: number;
  /** Focus target when the hotkey was recognised: never gets what is held. */
  origin: string;
  frames: Frame[];
  events: number;
  overflowed: boolean;
  /** The slot the hotkey asked for (matched against a Freeze's `slot`), or null (unknown). */
  slot: number | null;
  /**
   * Set by a Freeze for `slot`: the target that switch focuses, where a SetFocus delivers what is
   * held. Null until then, and after a Freeze for another switch.
   */
  deliverTo: string | null;
}

/** What a Freeze says of the switch it starts (Input1.Freeze options target and slot). */
export interface SwitchIntent {
  target: string;
  slot: number;
}

export interface LedState {
  caps: boolean;
  num: boolean;
  scroll: boolean;
}

/** Sets the physical keyboards' LEDs (evdev seat: EV_LED writes; virtual seats: remembers). */
export interface LedController {
  setLeds(state: LedState): void;
}

export interface RouterLogger {
  info(msg: string): void;
  warn(msg: string): void;
}

export const SWITCHER_TARGET = '/';

export interface RouterStats {
  framesRouted: number;
  eventsDropped: number;
  releasesSynthesized: number;
  /** Frames held back after a switch hotkey and then delivered / dropped. */
  heldDelivered: number;
  heldDropped: number;
  /** Holds delivered, with frames or not (modifiers held back during one go on with it). */
  holdsDelivered: number;
}

export class Router {
  private focusTarget: string = SWITCHER_TARGET;
  private focusSink: InputSink;
  private frozen = false;
  private destinationChanges = 0;
  private epochs = 0;
  private locked = false;
  /** The sink that received the presses in `held` (always the current destination or null). */
  private heldSink: InputSink | null = null;
  private readonly held = new Set<number>();
  private readonly leds = new Map<string, LedState>();
  private readonly deadSinksLogged = new WeakSet<InputSink>();
  private hold: Hold | null = null;
  private holdTokens = 0;
  readonly stats: RouterStats = {
    framesRouted: 0,
    eventsDropped: 0,
    releasesSynthesized: 0,
    heldDelivered: 0,
    heldDropped: 0,
    holdsDelivered: 0,
  };

  constructor(
    private readonly switcherSink: InputSink,
    private readonly ledController: LedController,
    private readonly log: RouterLogger,
    private readonly recorder: PressRecorder | null = null,
  ) {
    this.focusSink = switcherSink;
  }

  get focusedTarget(): string {
    return this.focusTarget;
  }
  get isFrozen(): boolean {
    return this.frozen;
  }
  get isLocked(): boolean {
    return this.locked;
  }
  /** Bumped by every Freeze, SetFocus, Lock and Unlock. */
  get generation(): number {
    return this.destinationChanges;
  }
  /** Bumped by every destination change modifiers held back in the pipeline must not survive (rule 5). */
  get epoch(): number {
    return this.epochs;
  }
  /** True while a switch hotkey holds input back (rule 6). */
  get isHolding(): boolean {
    return this.hold !== null;
  }
  /** Codes currently held in the destination (for tests and diagnostics). */
  heldCodes(): number[] {
    return [...this.held];
  }

  /** Where frames go now, or null (frozen). */
  destination(): InputSink | null {
    if (this.locked) return this.switcherSink;
    if (this.frozen || this.hold) return null;
    return this.focusSink;
  }

  /**
   * Stop routing to the focused target: release everything it holds; drop input until setFocus.
   * `intent` (vm-daemon's Freeze options) tells a hold whether this switch is its hotkey's (rule 6).
   */
  freeze(intent?: SwitchIntent): void {
    if (this.hold)
      this.hold.deliverTo =
        intent && this.hold.slot !== null && intent.slot === this.hold.slot ? intent.target : null;
    this.changeDestination(() => {
      this.frozen = true;
    });
  }

  /** Route to `target` via `sink` from now on and unfreeze. */
  setFocus(target: string, sink: InputSink): void {
    if (sink.target !== target) throw new Error(`sink for ${sink.target} given for target ${target}`);
    this.changeDestination(() => {
      this.focusTarget = target;
      this.focusSink = sink;
      this.frozen = false;
    });
    // The hotkey's own switch moved the focus away from where the hotkey was pressed: what was
    // typed since goes here. A SetFocus naming the origin (a re-assert, a rollback) or any other
    // target (a rollback to where that switch began) keeps holding.
    if (this.hold?.deliverTo === target && target !== this.hold.origin)
      this.releaseHold('deliver', `focus moved to ${target}`);
  }

  lock(): void {
    if (this.hold) this.releaseHold('drop', 'the seat was locked');
    this.changeDestination(() => {
      this.locked = true;
    });
  }

  /**
   * A switch hotkey was recognised: from now on nothing reaches the focused target (its held keys
   * and buttons are released in it now) until the switch resolves (rule 6). A hold still pending
   * from an earlier hotkey is dropped. Returns the token to pass to endHold. `slot` is the slot
   * the hotkey asked for: a Freeze naming it arms delivery at that switch's SetFocus. Without it
   * (or with Freezes that do not name a slot) only endHold ends the hold.
   */
  holdForSwitch(opts: { slot?: number } = {}): number {
    if (this.hold) this.releaseHold('drop', 'a newer hotkey');
    const token = ++this.holdTokens;
    const origin = this.focusTarget;
    this.changeDestination(() => {
      this.hold = {
        token,
        origin,
        frames: [],
        events: 0,
        overflowed: false,
        slot: opts.slot ?? null,
        deliverTo: null,
      };
    });
    return token;
  }

  /** The switch of hotkey `token` resolved (ignored when its hold already ended). */
  endHold(token: number, outcome: HoldOutcome): void {
    if (this.hold?.token !== token) return;
    this.releaseHold(outcome === 'switched' ? 'deliver' : 'drop', `switch ${outcome}`);
  }

  unlock(): void {
    this.changeDestination(() => {
      this.locked = false;
    });
  }

  /** Route one frame (events without SYN_REPORT) by the rules above. */
  route(frame: Frame): void {
    if (this.hold && !this.locked) {
      this.holdBack(frame);
      return;
    }
    const dest = this.destination();
    const out: InputEvent[] = [];
    for (const e of frame) {
      if (e.type === EV_KEY) {
        if (e.value === 1) {
          if (!dest) continue;
          this.held.add(e.code);
          this.heldSink = dest;
          this.trackLockKey(dest.target, e.code);
          out.push(e);
        } else if (this.held.has(e.code)) {
          if (e.value === 0) this.held.delete(e.code);
          out.push(e);
        }
      } else if (dest && (e.type === EV_REL || e.type === EV_ABS)) {
        out.push(e);
      }
    }
    this.stats.eventsDropped += frame.length - out.length;
    if (dest && out.length) {
      this.stats.framesRouted++;
      if (this.recorder) {
        const pressed = out.filter((e) => e.type === EV_KEY && e.value === 1).map((e) => e.code);
        if (pressed.length) this.recorder.willPress(dest, pressed);
      }
      this.deliver(dest, out);
      if (this.recorder) {
        // Released = up at the end of the frame: a key released and pressed again within it is down.
        const last = new Map<number, number>();
        for (const e of out) if (e.type === EV_KEY && e.value !== 2) last.set(e.code, e.value);
        const released = [...last].filter(([, v]) => v === 0).map(([c]) => c);
        if (released.length) this.recorder.released(dest, released);
      }
    }
  }

  private holdBack(frame: Frame): void {
    const hold = this.hold!;
    // Pointer motion is not worth holding (the pointer moves on from wherever it is); clicks,
    // wheel and keys are, with the positions of their own frame.
    const worthHolding = frame.some(
      (e) => e.type === EV_KEY || (e.type === EV_REL && e.code !== REL_X && e.code !== REL_Y),
    );
    if (!worthHolding || hold.overflowed) {
      this.stats.eventsDropped += frame.length;
      return;
    }
    if (hold.events + frame.length > MAX_HELD_EVENTS) {
      // Never deliver half of what was typed: all of it goes.
      this.log.warn(
        `more than ${MAX_HELD_EVENTS} input events during a switch: dropping all of them (${hold.frames.length} frames held)`,
      );
      this.stats.heldDropped += hold.frames.length + 1;
      this.stats.eventsDropped += hold.events + frame.length;
      hold.frames = [];
      hold.events = 0;
      hold.overflowed = true;
      return;
    }
    hold.frames.push(frame.slice());
    hold.events += frame.length;
  }

  private releaseHold(how: 'deliver' | 'drop', why: string): void {
    const hold = this.hold!;
    this.hold = null;
    // An overflowed hold was dropped whole already: the modifiers held back with it go too.
    if (how === 'drop' || !this.destination() || hold.overflowed) {
      // Modifiers the pipeline holds back were typed during the hold too (Ctrl+2, then Ctrl while
      // the switch runs): a new epoch drops them with the frames, instead of their press
      // reaching the VM being left with the next key.
      this.destinationChanges++;
      this.epochs++;
      if (hold.frames.length)
        this.log.info(`dropping ${hold.frames.length} frame(s) held in a switch: ${why}`);
      this.stats.heldDropped += hold.frames.length;
      this.stats.eventsDropped += hold.events;
      return;
    }
    this.stats.heldDelivered += hold.frames.length;
    this.stats.holdsDelivered++;
    for (const f of hold.frames) this.route(f);
  }

  /** The LED state the router believes `target` has. */
  ledsOf(target: string): LedState {
    let s = this.leds.get(target);
    if (!s) this.leds.set(target, (s = { caps: false, num: false, scroll: false }));
    return s;
  }

  private changeDestination(apply: () => void): void {
    const before = this.destination();
    if (this.heldSink && this.held.size) {
      const releases = [...this.held].map((c) => ev(EV_KEY, c, 0));
      this.stats.releasesSynthesized += releases.length;
      this.deliver(this.heldSink, releases);
      this.recorder?.released(this.heldSink, [...this.held]);
    }
    this.held.clear();
    this.heldSink = null;
    this.destinationChanges++;
    const holdBefore = this.hold;
    apply();
    // Inside a hold that goes on, what is typed belongs to the hold, wherever the focus moves.
    if (!holdBefore || this.hold !== holdBefore) this.epochs++;
    const after = this.destination();
    if (after && after !== before) this.ledController.setLeds({ ...this.ledsOf(after.target) });
    if (before?.target !== after?.target)
      this.log.info(
        `input now goes to ${after ? `${after.target} (${after.description})` : 'nobody (frozen)'}`,
      );
  }

  private trackLockKey(target: string, code: number): void {
    const s = this.ledsOf(target);
    if (code === KEY_CAPSLOCK) s.caps = !s.caps;
    else if (code === KEY_NUMLOCK) s.num = !s.num;
    else if (code === KEY_SCROLLLOCK) s.scroll = !s.scroll;
    else return;
    this.ledController.setLeds({ ...s });
  }

  private deliver(sink: InputSink, frame: Frame): void {
    if (!sink.alive) {
      if (!this.deadSinksLogged.has(sink)) {
        this.deadSinksLogged.add(sink);
        this.log.warn(`${sink.target} (${sink.description}) is gone; its input is dropped`);
      }
      return;
    }
    try {
      sink.write(frame);
    } catch (e) {
      this.log.warn(`writing to ${sink.target} (${sink.description}) failed: ${(e as Error).message}`);
    }
  }
}
