import type { Frame } from '../input-event';
import type { InputSink } from './sink';
import { SWITCHER_TARGET } from '../router';

/**
 * The switcher's sink on the host and in the unprivileged demo: there the switcher's window gets
 * its keys from the desktop directly (and forwards them with InjectEvents), so frames routed to
 * the switcher are only COUNTED, not delivered anywhere. In the Control Domain image the daemon
 * uses a UinputWriterSink instead (a uinput device the kiosk compositor reads).
 */
export class CountingSwitcherSink implements InputSink {
  readonly target = SWITCHER_TARGET;
  readonly description = 'switcher (host: counted only)';
  readonly alive = true;
  frames = 0;
  events = 0;
  write(frame: Frame): void {
    this.frames++;
    this.events += frame.length;
  }
  async close(): Promise<void> {}
}
