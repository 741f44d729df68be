import { EV_KEY, EV_REL, REL_X, REL_Y, ev, type Frame, type InputEvent } from './input-event';
import type { Chord, HotkeyMatcher } from './hotkeys';
import { KEY_MAX } from './keycodes';
import type { Router } from './router';

/**
 * The path every frame takes, whatever the source (evdev, replay, virtual seat): the hotkey
 * matcher sees each key event first (see hotkeys.ts for THE RULE: no key of a matched chord,
 * modifiers included, reaches any target); everything it lets through goes to the router, in
 * order, with the presses of held-back modifiers put back just before the event that released
 * them. A matched chord is reported and nothing of it is routed.
 */
export class InputPipeline {
  /** The router's epoch (Router rule 5) the matcher's pending modifiers belong to. */
  private epoch: number;
  /**
   * Per key or button down on some device: the devices holding it. Several keyboards (and mice)
   * are merged into one, as the hotkey matcher and the router see a key by its code only: a key
   * goes down with the first device's press and up with the last device's release. Before this,
   * the same key on two keyboards reached the VM as two presses and one release, and Ctrl held on
   * one keyboard and tapped on the other let Ctrl+2 through as a plain 2.
   */
  private readonly holders = new Map<number, Set<unknown>>();

  constructor(
    private readonly hotkeys: HotkeyMatcher,
    private readonly router: Router,
    private readonly onChord: (chord: Chord) => void,
  ) {
    this.epoch = router.epoch;
  }

  /**
   * `device` names the device the frame comes from (any value that stays the same for it, e.g. its
   * DeviceInfo); frames without one count as one device's.
   */
  handleFrame(frame: Frame, device: unknown = ONE_DEVICE): void {
    let out: InputEvent[] = [];
    for (const e of frame) {
      if (e.type === EV_KEY) {
        // A code no keyboard sends (only InjectEvents or a replay file can): no VM can use it, and
        // the held-keys journal of one would be unreadable for the next daemon (held-keys.ts).
        if (e.code < 1 || e.code > KEY_MAX) continue;
        if (!this.merge(e, device)) continue;
      }
      // The destination changed since the modifiers were held back (Freeze, SetFocus, Lock,
      // Unlock — between frames or by a chord's action): they never reach the new target. Not
      // when a hotkey's hold was delivered there: they were typed for it (Router rule 5).
      if (this.router.epoch !== this.epoch) {
        this.epoch = this.router.epoch;
        this.hotkeys.destinationChanged();
      }
      if (e.type === EV_KEY) {
        const d = this.hotkeys.onKey(e.code, e.value);
        if (d.kind === 'pass') {
          for (const code of d.flushFirst) out.push(ev(EV_KEY, code, 1));
          out.push(e);
        } else if (d.kind === 'match') {
          // Events before the chord key in this frame keep their place; the chord is not routed.
          if (out.length) this.router.route(out);
          out = [];
          this.onChord(d.chord);
        }
      } else {
        // The wheel and other relative axes flush held-back modifiers (Ctrl+wheel zooms); pointer
        // motion and events the router never forwards (EV_MSC scan codes) do not: see hotkeys.ts.
        if (e.type === EV_REL && e.code !== REL_X && e.code !== REL_Y)
          for (const code of this.hotkeys.flushPending()) out.push(ev(EV_KEY, code, 1));
        out.push(e);
      }
    }
    if (out.length) this.router.route(out);
  }

  /** False: the event is another device's view of a key already down (or still held elsewhere). */
  private merge(e: InputEvent, device: unknown): boolean {
    const holding = this.holders.get(e.code);
    if (e.value === 1) {
      if (holding) {
        holding.add(device);
        return false;
      }
      this.holders.set(e.code, new Set([device]));
      return true;
    }
    if (!holding) return true; // a release or repeat nobody pressed: the matcher and router drop it
    if (!holding.has(device)) return false;
    if (e.value !== 0) return true;
    holding.delete(device);
    if (holding.size) return false;
    this.holders.delete(e.code);
    return true;
  }
}

/** The device of frames given without one. */
const ONE_DEVICE = Symbol('one device');
