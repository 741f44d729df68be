import { EV_ABS, EV_KEY, EV_REL, ev, type Frame, type InputEvent } from './input-event';
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
 *  5. `generation` counts destination changes: the pipeline drops modifiers it held back for
 *     the old destination (hotkeys.ts) instead of handing them to the new one.
 *  4. Lock-key LEDs (Caps/Num/Scroll) are tracked per target from the lock-key presses each
 *     target received, and put on the physical keyboards when that target gets the input.
 */

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
}

export class Router {
  private focusTarget: string = SWITCHER_TARGET;
  private focusSink: InputSink;
  private frozen = false;
  private destinationChanges = 0;
  private locked = false;
  /** The sink that received the presses in `held` (always the current destination or null). */
  private heldSink: InputSink | null = null;
  private readonly held = new Set<number>();
  private readonly leds = new Map<string, LedState>();
  private readonly deadSinksLogged = new WeakSet<InputSink>();
  readonly stats: RouterStats = { framesRouted: 0, eventsDropped: 0, releasesSynthesized: 0 };

  constructor(
    private readonly switcherSink: InputSink,
    private readonly ledController: LedController,
    private readonly log: RouterLogger,
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
  /** Codes currently held in the destination (for tests and diagnostics). */
  heldCodes(): number[] {
    return [...this.held];
  }

  /** Where frames go now, or null (frozen). */
  destination(): InputSink | null {
    if (this.locked) return this.switcherSink;
    if (this.frozen) return null;
    return this.focusSink;
  }

  /** Stop routing to the focused target: release everything it holds; drop input until setFocus. */
  freeze(): void {
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
  }

  lock(): void {
    this.changeDestination(() => {
      this.locked = true;
    });
  }

  unlock(): void {
    this.changeDestination(() => {
      this.locked = false;
    });
  }

  /** Route one frame (events without SYN_REPORT) by the rules above. */
  route(frame: Frame): void {
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
      this.deliver(dest, out);
    }
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
    }
    this.held.clear();
    this.heldSink = null;
    this.destinationChanges++;
    apply();
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
