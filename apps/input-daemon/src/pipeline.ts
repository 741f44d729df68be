import { EV_KEY, type Frame, type InputEvent } from './input-event';
import type { Chord, HotkeyMatcher } from './hotkeys';
import type { Router } from './router';

/**
 * The path every frame takes, whatever the source (evdev, replay, virtual seat): the hotkey
 * matcher sees each key event first; a matched chord releases its already-forwarded modifiers in
 * the target, swallows the chord key and is reported; everything else goes to the router.
 */
export class InputPipeline {
  constructor(
    private readonly hotkeys: HotkeyMatcher,
    private readonly router: Router,
    private readonly onChord: (chord: Chord) => void,
  ) {}

  handleFrame(frame: Frame): void {
    let pending: InputEvent[] = [];
    for (const e of frame) {
      if (e.type !== EV_KEY) {
        pending.push(e);
        continue;
      }
      const d = this.hotkeys.onKey(e.code, e.value);
      if (d.kind === 'pass') pending.push(e);
      else if (d.kind === 'match') {
        // Events before the chord key in this frame keep their place; then the release.
        if (pending.length) this.router.route(pending);
        pending = [];
        this.router.releaseHeld(d.release);
        this.onChord(d.chord);
      }
    }
    if (pending.length) this.router.route(pending);
  }
}
