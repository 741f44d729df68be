import {
  ABS_X,
  ABS_Y,
  BTN_STYLUS,
  BTN_TOUCH,
  EV_ABS,
  EV_KEY,
  EV_REL,
  REL_HWHEEL,
  REL_WHEEL,
  REL_X,
  REL_Y,
  type Frame,
} from '../input-event';
import { BUTTON_QNAMES, KEY_QCODES } from '../keycodes';
import type { InputSink, SinkStats } from './sink';

/**
 * A QMP connection as the input daemon needs it. Implemented by @bulkhead/qmp's QmpClient (wired
 * in qmp-wiring.ts); kept as an interface so the sinks can be tested with an in-memory fake.
 * execute() may be called again before earlier calls settle (pipelined).
 */
export interface QmpConnection {
  send(cmd: string, args?: Record<string, unknown>): void;
  execute(cmd: string, args?: Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
  on(event: 'close', fn: (err?: Error) => void): unknown;
  /** Sends commands written so far at once (QmpClient otherwise writes them at the end of the tick). */
  flush?(): void;
}

/** Opens a QMP connection to a socket path. */
export type QmpConnector = (socketPath: string) => Promise<QmpConnection>;

type QmpInputEvent =
  | { type: 'key'; data: { down: boolean; key: { type: 'qcode'; data: string } } }
  | { type: 'btn'; data: { down: boolean; button: string } }
  | { type: 'rel' | 'abs'; data: { axis: 'x' | 'y'; value: number } };

const TABLET_BUTTONS = new Map([
  [BTN_TOUCH, 'left'],
  [BTN_STYLUS, 'right'],
]);

/**
 * Translates one frame to the `events` of one QMP input-send-event command. Abs axes arrive
 * normalised to QEMU's 0…32767 by the source. Wheel steps become wheel-button clicks. Codes with
 * no QEMU name are counted in `unmapped` and skipped.
 */
export function frameToQmpEvents(frame: Frame, unmapped?: { count: number }): QmpInputEvent[] {
  const out: QmpInputEvent[] = [];
  const click = (button: string, times: number) => {
    for (let i = 0; i < times; i++) {
      out.push({ type: 'btn', data: { down: true, button } });
      out.push({ type: 'btn', data: { down: false, button } });
    }
  };
  for (const e of frame) {
    if (e.type === EV_KEY) {
      const down = e.value !== 0;
      const q = KEY_QCODES.get(e.code);
      if (q) {
        out.push({ type: 'key', data: { down, key: { type: 'qcode', data: q } } });
        continue;
      }
      const b = BUTTON_QNAMES.get(e.code) ?? TABLET_BUTTONS.get(e.code);
      if (b) out.push({ type: 'btn', data: { down, button: b } });
      else if (unmapped) unmapped.count++;
    } else if (e.type === EV_REL) {
      if (e.code === REL_X) out.push({ type: 'rel', data: { axis: 'x', value: e.value } });
      else if (e.code === REL_Y) out.push({ type: 'rel', data: { axis: 'y', value: e.value } });
      else if (e.code === REL_WHEEL)
        click(e.value > 0 ? 'wheel-up' : 'wheel-down', Math.min(Math.abs(e.value), 16));
      else if (e.code === REL_HWHEEL)
        click(e.value > 0 ? 'wheel-right' : 'wheel-left', Math.min(Math.abs(e.value), 16));
    } else if (e.type === EV_ABS) {
      if (e.code === ABS_X) out.push({ type: 'abs', data: { axis: 'x', value: e.value } });
      else if (e.code === ABS_Y) out.push({ type: 'abs', data: { axis: 'y', value: e.value } });
    }
  }
  return out;
}

/** A frame made only of REL_X/REL_Y: the only kind that may be merged with its neighbour. */
export function isMotionOnly(frame: Frame): boolean {
  return frame.length > 0 && frame.every((e) => e.type === EV_REL && (e.code === REL_X || e.code === REL_Y));
}

function sumMotion(a: Frame, b: Frame): Frame {
  let dx = 0;
  let dy = 0;
  for (const e of [...a, ...b]) {
    if (e.code === REL_X) dx += e.value;
    else dy += e.value;
  }
  const out: Frame = [];
  if (dx) out.push({ type: EV_REL, code: REL_X, value: dx });
  if (dy) out.push({ type: EV_REL, code: REL_Y, value: dy });
  return out.length ? out : [{ type: EV_REL, code: REL_X, value: 0 }];
}

/**
 * An ordered frame queue in front of a slow consumer. Consecutive motion-only frames waiting in
 * the queue are summed into one (the pointer ends where it would have), so under an 8 kHz mouse
 * the queue, and with it latency, stays short. Key and button frames are never merged or dropped.
 */
export class FrameQueue {
  private readonly q: Frame[] = [];
  /** weights[i]: how many pushed frames q[i] stands for (merged motion counts each). */
  private readonly weights: number[] = [];
  /** Pushed frames the last shift() took out of the queue. */
  lastShiftWeight = 0;
  readonly stats: SinkStats = { framesIn: 0, framesOut: 0, coalesced: 0, maxQueue: 0, errors: 0 };

  push(frame: Frame): void {
    this.stats.framesIn++;
    const last = this.q[this.q.length - 1];
    if (last && isMotionOnly(last) && isMotionOnly(frame)) {
      this.q[this.q.length - 1] = sumMotion(last, frame);
      this.weights[this.weights.length - 1]++;
      this.stats.coalesced++;
      return;
    }
    this.q.push(frame);
    this.weights.push(1);
    if (this.q.length > this.stats.maxQueue) this.stats.maxQueue = this.q.length;
  }
  shift(): Frame | undefined {
    const f = this.q.shift();
    this.lastShiftWeight = this.weights.shift() ?? 0;
    if (f) this.stats.framesOut++;
    return f;
  }
  get length(): number {
    return this.q.length;
  }
}

export interface QmpSinkOptions {
  /** input-send-event commands in flight at once; more frames wait (and motion coalesces). */
  maxInFlight?: number;
  onError?: (err: Error) => void;
  /** Called for every command once QEMU answered (bench: latency). */
  onWritten?: () => void;
}

/**
 * Sends each frame as ONE QMP input-send-event command (all of the frame's events batched), with
 * a bounded window of commands in flight. QEMU answers in order, so order is kept.
 */
export class QmpSink implements InputSink {
  readonly description: string;
  private readonly queue = new FrameQueue();
  private inFlight = 0;
  private closed = false;
  private readonly maxInFlight: number;
  readonly unmapped = { count: 0 };
  /** Frames written / answered by QEMU (or with nothing to send), for delivered(). */
  private framesWritten = 0;
  private framesAnswered = 0;
  private waiters: Array<{ upTo: number; resolve: (ok: boolean) => void }> = [];

  constructor(
    readonly target: string,
    private readonly conn: QmpConnection,
    socketPath: string,
    private readonly opts: QmpSinkOptions = {},
  ) {
    this.description = `qmp ${socketPath}`;
    this.maxInFlight = opts.maxInFlight ?? 4;
    conn.on('close', (err) => {
      if (!this.closed) opts.onError?.(new Error(`QMP ${socketPath} closed${err ? `: ${err.message}` : ''}`));
      this.closed = true;
      this.settleWaiters();
    });
  }

  get alive(): boolean {
    return !this.closed;
  }
  get stats(): SinkStats {
    return this.queue.stats;
  }
  /** Frames sent and not yet answered, plus queued. */
  get backlog(): number {
    return this.inFlight + this.queue.length;
  }

  write(frame: Frame): void {
    if (this.closed) return;
    this.framesWritten++;
    this.queue.push(frame);
    this.pump();
  }

  delivered(): Promise<boolean> {
    if (this.framesAnswered >= this.framesWritten) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => this.waiters.push({ upTo: this.framesWritten, resolve }));
  }

  private answered(frames: number): void {
    this.framesAnswered += frames;
    this.settleWaiters();
  }

  private settleWaiters(): void {
    if (!this.waiters.length) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (this.framesAnswered >= w.upTo) w.resolve(true);
      else if (this.closed) w.resolve(false);
      else still.push(w);
    }
    this.waiters = still;
  }

  /** Resolves once every queued frame has been answered by QEMU. */
  async drain(): Promise<void> {
    while (this.backlog > 0 && !this.closed) await new Promise((r) => setTimeout(r, 2));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.drain();
    this.closed = true;
    this.settleWaiters();
    await this.conn.close();
  }

  private pump(): void {
    let wrote = false;
    while (this.inFlight < this.maxInFlight && this.queue.length > 0 && !this.closed) {
      const frame = this.queue.shift()!;
      const weight = this.queue.lastShiftWeight;
      const events = frameToQmpEvents(frame, this.unmapped);
      if (events.length === 0) {
        this.answered(weight);
        continue;
      }
      this.inFlight++;
      wrote = true;
      this.conn.execute('input-send-event', { events }).then(
        () => {
          this.inFlight--;
          this.answered(weight);
          this.opts.onWritten?.();
          this.pump();
        },
        (err: Error) => {
          // QEMU answered (with an error): nothing more will come of this frame.
          this.inFlight--;
          this.queue.stats.errors++;
          this.answered(weight);
          this.opts.onError?.(err);
          this.pump();
        },
      );
    }
    // The key goes to QEMU now, not after the rest of this task (the D-Bus reply, the journal).
    if (wrote) this.conn.flush?.();
  }
}
