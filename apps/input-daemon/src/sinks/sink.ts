import type { Frame } from '../input-event';

/**
 * Where the frames of one focus target go: a VM (uinput device read by its QEMU, or QMP
 * input-send-event) or the Control Domain's own UI (the switcher). The router calls write() with
 * whole frames, in order; a sink must deliver them in that order and never drop or duplicate a
 * key or button event (it may merge pure relative-motion frames when backlogged).
 */
export interface InputSink {
  /** Focus target this sink serves: a VM object path, or '/' for the switcher. */
  readonly target: string;
  /** For logs: 'qmp /run/…/input.sock', 'uinput /dev/input/event7', … */
  readonly description: string;
  /** False once the backend went away (QEMU exited); the router then drops and logs. */
  readonly alive: boolean;
  write(frame: Frame): void;
  /**
   * Resolves true once every frame written so far has reached the VM (QEMU answered), false when
   * the sink closed first. Absent: a write() that returned has already reached it (uinput).
   */
  delivered?(): Promise<boolean>;
  /**
   * Releases `codes` in the guest whatever this path's own device believes is down; resolves once
   * QEMU took them. For the uinput fast path, whose new device (after a restart) never had the
   * keys a killed daemon left down: the kernel drops releases of keys a device does not hold, so
   * they go by QMP input-send-event on the sink's QMP connection. Absent: write() releases them.
   */
  releaseInGuest?(codes: readonly number[]): Promise<void>;
  close(): Promise<void>;
}

export interface SinkStats {
  framesIn: number;
  framesOut: number;
  /** Relative-motion frames merged into an earlier queued one. */
  coalesced: number;
  maxQueue: number;
  errors: number;
}
