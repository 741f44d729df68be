/**
 * Linux `struct input_event` on x86_64 (24 bytes: struct timeval {s64 sec; s64 usec}, u16 type,
 * u16 code, s32 value), its constants, and a stream parser that copes with structs split across
 * reads and groups events into frames delimited by SYN_REPORT.
 */

export const INPUT_EVENT_SIZE = 24;

export const EV_SYN = 0x00;
export const EV_KEY = 0x01;
export const EV_REL = 0x02;
export const EV_ABS = 0x03;
export const EV_MSC = 0x04;
export const EV_SW = 0x05;
export const EV_LED = 0x11;
export const EV_REP = 0x14;

export const SYN_REPORT = 0;
export const SYN_DROPPED = 3;

export const REL_X = 0x00;
export const REL_Y = 0x01;
export const REL_HWHEEL = 0x06;
export const REL_WHEEL = 0x08;
export const REL_WHEEL_HI_RES = 0x0b;
export const REL_HWHEEL_HI_RES = 0x0c;

export const ABS_X = 0x00;
export const ABS_Y = 0x01;
export const ABS_MT_SLOT = 0x2f;
export const ABS_MT_POSITION_X = 0x35;

export const LED_NUML = 0x00;
export const LED_CAPSL = 0x01;
export const LED_SCROLLL = 0x02;

export const BTN_MISC = 0x100;
export const BTN_MOUSE = 0x110;
export const BTN_LEFT = 0x110;
export const BTN_RIGHT = 0x111;
export const BTN_MIDDLE = 0x112;
export const BTN_SIDE = 0x113;
export const BTN_EXTRA = 0x114;
export const BTN_TOOL_PEN = 0x140;
export const BTN_TOOL_FINGER = 0x145;
export const BTN_TOUCH = 0x14a;
export const BTN_STYLUS = 0x14b;
export const BTN_TOOL_DOUBLETAP = 0x14d;

export const BUS_PCI = 0x01;
export const BUS_USB = 0x03;
export const BUS_HIL = 0x04;
export const BUS_BLUETOOTH = 0x05;
export const BUS_VIRTUAL = 0x06;
export const BUS_I8042 = 0x11;
export const BUS_RS232 = 0x13;
export const BUS_HOST = 0x19;
export const BUS_I2C = 0x18;

/** One evdev event without its timestamp (routing never needs it). */
export interface InputEvent {
  type: number;
  code: number;
  value: number;
}

/** The events between two SYN_REPORTs, in order, without the SYN_REPORT itself. */
export type Frame = InputEvent[];

export const ev = (type: number, code: number, value: number): InputEvent => ({ type, code, value });

/** Encodes events as `struct input_event`s; a SYN_REPORT is appended unless `syn` is false. */
export function encodeEvents(
  events: readonly InputEvent[],
  opts: { syn?: boolean; timeUs?: bigint } = {},
): Buffer {
  const all = opts.syn === false ? events : [...events, ev(EV_SYN, SYN_REPORT, 0)];
  const buf = Buffer.alloc(all.length * INPUT_EVENT_SIZE);
  const t = opts.timeUs ?? 0n;
  all.forEach((e, i) => {
    const o = i * INPUT_EVENT_SIZE;
    buf.writeBigInt64LE(t / 1_000_000n, o);
    buf.writeBigInt64LE(t % 1_000_000n, o + 8);
    buf.writeUInt16LE(e.type, o + 16);
    buf.writeUInt16LE(e.code, o + 18);
    buf.writeInt32LE(e.value, o + 20);
  });
  return buf;
}

export interface ParserHandlers {
  /** A complete frame (SYN_REPORT seen). */
  frame(events: Frame): void;
  /**
   * The kernel's buffer overflowed (SYN_DROPPED): events up to and including the next
   * SYN_REPORT are discarded, then `resync` is called so the owner can query real key state.
   */
  dropped?(): void;
  resync?(): void;
}

/**
 * Turns a byte stream of `struct input_event`s into frames. Bytes may arrive in any split:
 * a partial struct is kept until the rest arrives.
 */
export class InputEventParser {
  private rest: Buffer = Buffer.alloc(0);
  private pending: InputEvent[] = [];
  private dropping = false;
  /** Frames emitted, events seen, SYN_DROPPED seen. */
  readonly stats = { frames: 0, events: 0, dropped: 0 };

  constructor(private readonly handlers: ParserHandlers) {}

  push(chunk: Buffer): void {
    let buf = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    let off = 0;
    while (buf.length - off >= INPUT_EVENT_SIZE) {
      const type = buf.readUInt16LE(off + 16);
      const code = buf.readUInt16LE(off + 18);
      const value = buf.readInt32LE(off + 20);
      off += INPUT_EVENT_SIZE;
      this.stats.events++;
      this.onEvent(type, code, value);
    }
    // Copy the tail: `chunk` may be a reused read buffer.
    this.rest = off < buf.length ? Buffer.from(buf.subarray(off)) : Buffer.alloc(0);
    buf = Buffer.alloc(0);
  }

  /** Bytes of an incomplete struct waiting for the rest. */
  get partialBytes(): number {
    return this.rest.length;
  }

  /** Feeds already-decoded events (virtual seat) through the same framing rules. */
  pushEvents(events: readonly InputEvent[]): void {
    for (const e of events) {
      this.stats.events++;
      this.onEvent(e.type, e.code, e.value);
    }
  }

  private onEvent(type: number, code: number, value: number): void {
    if (type === EV_SYN && code === SYN_DROPPED) {
      this.stats.dropped++;
      this.pending = [];
      this.dropping = true;
      this.handlers.dropped?.();
      return;
    }
    if (type === EV_SYN && code === SYN_REPORT) {
      if (this.dropping) {
        this.dropping = false;
        this.handlers.resync?.();
        return;
      }
      const frame = this.pending;
      this.pending = [];
      this.stats.frames++;
      if (frame.length) this.handlers.frame(frame);
      return;
    }
    if (this.dropping || type === EV_SYN) return;
    this.pending.push({ type, code, value });
  }
}
