import { TypedEmitter } from '@bulkhead/common';
import {
  ABS_X,
  ABS_Y,
  BTN_LEFT,
  BTN_TOOL_FINGER,
  BTN_TOOL_PEN,
  BTN_TOUCH,
  BTN_STYLUS,
  BUS_BLUETOOTH,
  BUS_HOST,
  BUS_I2C,
  BUS_I8042,
  BUS_PCI,
  BUS_RS232,
  BUS_USB,
  BUS_VIRTUAL,
  EV_ABS,
  EV_KEY,
  EV_REL,
  InputEventParser,
  REL_X,
  REL_Y,
  ev,
  type Frame,
  type InputEvent,
} from '../input-event';
import type { LedController } from '../router';

export type DeviceClass = 'keyboard' | 'mouse' | 'touchpad' | 'tablet' | 'other';
export type SeatKind = 'evdev' | 'virtual' | 'replay';

/** One row of the Devices property: (name, class, bus, grabbed, node path). */
export interface DeviceInfo {
  name: string;
  cls: DeviceClass;
  bus: string;
  grabbed: boolean;
  node: string;
}

export interface SourceEvents {
  /** A complete frame from a device, already normalised (abs 0…32767, touchpads relative). */
  frame: [Frame, DeviceInfo];
  /** The device list changed (hotplug, vanish). */
  devices: [];
}

/**
 * Where input comes from. Three implementations share everything downstream (parser, hotkeys,
 * router): EvdevSeat (real /dev/input devices), ReplaySource (recorded struct input_event files),
 * VirtualSeat (events injected over D-Bus).
 */
export interface InputSource extends TypedEmitter<SourceEvents> {
  readonly seat: SeatKind;
  start(): Promise<void>;
  stop(): Promise<void>;
  devices(): DeviceInfo[];
  /** Lights the keyboards' lock LEDs. */
  readonly leds: LedController;
}

export interface Capabilities {
  types: ReadonlySet<number>;
  keys: ReadonlySet<number>;
  rels: ReadonlySet<number>;
  abs: ReadonlySet<number>;
}

const LETTERS = [16, 17, 18, 19, 20, 30, 31, 32, 44, 45, 46]; // Q W E R T A S D Z X C

/**
 * Classifies a device by what it can report, whatever its bus (USB, i8042, Bluetooth, I2C…).
 * A keyboard has letter keys; a mouse relative X/Y and a left button; a touchpad absolute X/Y
 * with finger tools; a tablet absolute X/Y with a pen, a stylus or plain touch/left button
 * (QEMU's and VirtualBox's "tablets" are the latter).
 */
export function classify(c: Capabilities): DeviceClass {
  const hasKey = c.types.has(EV_KEY);
  if (hasKey && LETTERS.filter((k) => c.keys.has(k)).length >= 8) return 'keyboard';
  if (c.types.has(EV_ABS) && c.abs.has(ABS_X) && c.abs.has(ABS_Y)) {
    if (c.keys.has(BTN_TOOL_PEN) || c.keys.has(BTN_STYLUS)) return 'tablet';
    if (c.keys.has(BTN_TOOL_FINGER)) return 'touchpad';
    if (c.keys.has(BTN_TOUCH) || c.keys.has(BTN_LEFT)) return 'tablet';
  }
  if (c.types.has(EV_REL) && c.rels.has(REL_X) && c.rels.has(REL_Y) && c.keys.has(BTN_LEFT)) return 'mouse';
  return 'other';
}

/** Devices the Control Domain takes for itself: every keyboard and pointer. */
export const GRABBED_CLASSES: ReadonlySet<DeviceClass> = new Set(['keyboard', 'mouse', 'touchpad', 'tablet']);

export function busName(bustype: number): string {
  switch (bustype) {
    case BUS_USB:
      return 'usb';
    case BUS_I8042:
      return 'i8042';
    case BUS_BLUETOOTH:
      return 'bluetooth';
    case BUS_VIRTUAL:
      return 'virtual';
    case BUS_I2C:
      return 'i2c';
    case BUS_RS232:
      return 'rs232';
    case BUS_HOST:
      return 'host';
    case BUS_PCI:
      return 'pci';
    default:
      return `bus-0x${bustype.toString(16)}`;
  }
}

export interface AxisRange {
  min: number;
  max: number;
}

/**
 * Per-device framing: bytes (or decoded events) → parser → normalisation → frames. Tracks which
 * keys/buttons the device holds so that when it vanishes or overflows (SYN_DROPPED) the keys it
 * can no longer release are released by a synthetic frame instead of sticking in a VM.
 */
export class DeviceFramer {
  readonly parser: InputEventParser;
  private readonly held = new Set<number>();
  private touchLast: { x?: number; y?: number } = {};
  private touching = false;

  constructor(
    readonly info: DeviceInfo,
    private readonly emit: (frame: Frame) => void,
    private readonly absRange: { x?: AxisRange; y?: AxisRange } = {},
    /** After SYN_DROPPED: which keys the device really holds now (EVIOCGKEY); null = unknown. */
    private readonly queryKeys: () => number[] | null = () => null,
  ) {
    this.parser = new InputEventParser({
      frame: (f) => this.onFrame(f),
      resync: () => this.resync(),
    });
  }

  /** Release everything this device holds (it vanished). */
  releaseAll(): void {
    const out: InputEvent[] = [...this.held].map((c) => ev(EV_KEY, c, 0));
    this.held.clear();
    if (out.length) this.emit(out);
  }

  private resync(): void {
    const now = new Set(this.queryKeys() ?? []);
    const out: InputEvent[] = [];
    for (const c of this.held) if (!now.has(c)) out.push(ev(EV_KEY, c, 0));
    for (const e of out) this.held.delete(e.code);
    if (out.length) this.emit(out);
  }

  private scale(v: number, r: AxisRange | undefined): number {
    if (!r || r.max <= r.min) return Math.max(0, Math.min(32767, v));
    return Math.round(((Math.max(r.min, Math.min(r.max, v)) - r.min) * 32767) / (r.max - r.min));
  }

  private onFrame(frame: Frame): void {
    const out: InputEvent[] = [];
    const touchpad = this.info.cls === 'touchpad';
    let nx: number | undefined;
    let ny: number | undefined;
    for (const e of frame) {
      if (e.type === EV_KEY) {
        if (e.value === 0) this.held.delete(e.code);
        else if (e.value === 1) this.held.add(e.code);
        if (touchpad && e.code === BTN_TOUCH) {
          this.touching = e.value !== 0;
          this.touchLast = {};
          continue; // a touch is not a click; clickpads report BTN_LEFT themselves
        }
        if (touchpad && e.code !== BTN_LEFT && e.code >= 0x140) continue; // finger-count tools
        out.push(e);
      } else if (e.type === EV_ABS) {
        if (e.code !== ABS_X && e.code !== ABS_Y) continue; // MT slots etc.
        if (touchpad) {
          if (e.code === ABS_X) nx = e.value;
          else ny = e.value;
        } else
          out.push(
            ev(EV_ABS, e.code, this.scale(e.value, e.code === ABS_X ? this.absRange.x : this.absRange.y)),
          );
      } else out.push(e);
    }
    // Touchpads drive a relative pointer: the finger's movement between frames while touching.
    if (touchpad && this.touching) {
      if (nx !== undefined && this.touchLast.x !== undefined && nx !== this.touchLast.x)
        out.push(ev(EV_REL, REL_X, nx - this.touchLast.x));
      if (ny !== undefined && this.touchLast.y !== undefined && ny !== this.touchLast.y)
        out.push(ev(EV_REL, REL_Y, ny - this.touchLast.y));
      if (nx !== undefined) this.touchLast.x = nx;
      if (ny !== undefined) this.touchLast.y = ny;
    }
    if (out.length) this.emit(out);
  }
}
