import { existsSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { TypedEmitter, type Logger } from '@bulkhead/common';
import { EvdevError, EvdevHandle } from '../evdev-native';
import {
  ABS_X,
  ABS_Y,
  BUS_VIRTUAL,
  EV_ABS,
  EV_KEY,
  EV_LED,
  EV_REL,
  LED_CAPSL,
  LED_NUML,
  LED_SCROLLL,
  encodeEvents,
  ev,
} from '../input-event';
import type { LedController, LedState } from '../router';
import { OWN_UINPUT_PRODUCT, OWN_UINPUT_VENDOR } from '../sinks/uinput-sink';
import {
  DeviceFramer,
  GRABBED_CLASSES,
  busName,
  classify,
  type AxisRange,
  type DeviceInfo,
  type InputSource,
  type SourceEvents,
} from './source';

interface OpenDevice {
  handle: EvdevHandle;
  framer: DeviceFramer;
  info: DeviceInfo;
}

/**
 * The hardware seat: every /dev/input/event* node, discovered at start and on hotplug (fs.watch
 * = inotify on /dev/input), classified by capabilities on any bus (Bluetooth included), every
 * keyboard and pointer grabbed (EVIOCGRAB) so that nothing else — no console, no compositor —
 * sees them. Reads are non-blocking (libuv poll in the addon). A device vanishing mid-read
 * (ENODEV) is closed, its held keys released, and picked up again when its node comes back.
 */
/** True for the uinput devices input-daemon creates itself (see OWN_UINPUT_VENDOR). */
export function isOwnUinputDevice(id: { bustype: number; vendor: number; product: number }): boolean {
  return id.bustype === BUS_VIRTUAL && id.vendor === OWN_UINPUT_VENDOR && id.product === OWN_UINPUT_PRODUCT;
}

export class EvdevSeat extends TypedEmitter<SourceEvents> implements InputSource {
  readonly seat = 'evdev' as const;
  private readonly open = new Map<string, OpenDevice>();
  /** Nodes we looked at and do not route (other class, or failed): not retried until they change. */
  private readonly ignored = new Map<string, string>();
  private watcher: FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private rescanTimer: NodeJS.Timeout | null = null;
  private readonly readBuf = Buffer.alloc(24 * 256);
  private ledState: LedState = { caps: false, num: false, scroll: false };
  readonly leds: LedController = { setLeds: (s) => this.setLeds(s) };

  constructor(
    private readonly log: Logger,
    private readonly dir = '/dev/input',
  ) {
    super();
  }

  async start(): Promise<void> {
    this.scan();
    this.watchDir();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    for (const path of [...this.open.keys()]) this.drop(path, 'daemon stopping');
  }

  devices(): DeviceInfo[] {
    return [...this.open.values()].map((d) => d.info);
  }

  private watchDir(): void {
    if (!existsSync(this.dir)) {
      // No /dev/input yet (or at all, as on a build host): look again every 2 s.
      this.log.warn(`${this.dir} does not exist; no input devices (checking again every 2 s)`);
      this.poll = setInterval(() => {
        if (existsSync(this.dir)) {
          clearInterval(this.poll!);
          this.poll = null;
          this.scan();
          this.watchDir();
        }
      }, 2000);
      return;
    }
    try {
      this.watcher = watch(this.dir, () => this.scheduleRescan());
      this.watcher.on('error', (e) => this.log.warn(`watching ${this.dir}: ${e.message}`));
    } catch (e) {
      this.log.warn(`cannot watch ${this.dir} (${(e as Error).message}); rescanning every 2 s`);
      this.poll = setInterval(() => this.scan(), 2000);
    }
  }

  /** udev creates the node, then fixes its permissions: rescan shortly after a burst of changes. */
  private scheduleRescan(): void {
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    this.rescanTimer = setTimeout(() => {
      this.rescanTimer = null;
      this.scan();
    }, 100);
  }

  scan(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => /^event\d+$/.test(n));
    } catch {
      names = [];
    }
    const present = new Set(names.map((n) => join(this.dir, n)));
    for (const path of [...this.open.keys()]) if (!present.has(path)) this.drop(path, 'node removed');
    for (const path of [...this.ignored.keys()]) if (!present.has(path)) this.ignored.delete(path);
    let changed = false;
    for (const path of present) {
      if (this.open.has(path) || this.ignored.has(path)) continue;
      changed = this.add(path) || changed;
    }
    if (changed) this.emit('devices');
  }

  private add(path: string): boolean {
    let handle: EvdevHandle | null = null;
    try {
      handle = EvdevHandle.open(path, { writable: true });
      const h = handle;
      const name = h.name();
      const id = h.id();
      const types = new Set(h.bits(0));
      const caps = {
        types,
        keys: new Set(types.has(EV_KEY) ? h.bits(EV_KEY) : []),
        rels: new Set(types.has(EV_REL) ? h.bits(EV_REL) : []),
        abs: new Set(types.has(EV_ABS) ? h.bits(EV_ABS) : []),
      };
      const cls = classify(caps);
      const info: DeviceInfo = { name, cls, bus: busName(id.bustype), grabbed: false, node: path };
      if (isOwnUinputDevice(id)) {
        this.ignored.set(path, 'own');
        h.close();
        this.log.info(`${path} "${name}": one of input-daemon's own uinput devices, not grabbed`);
        return false;
      }
      if (!GRABBED_CLASSES.has(cls)) {
        this.ignored.set(path, cls);
        h.close();
        this.log.info(`${path} "${name}" (${info.bus}): class ${cls}, not ours`);
        return false;
      }
      const range = (axis: number): AxisRange | undefined => {
        if (!caps.abs.has(axis)) return undefined;
        const a = h.absInfo(axis);
        return { min: a.minimum, max: a.maximum };
      };
      const absRange = { x: range(ABS_X), y: range(ABS_Y) };
      h.grab(true);
      info.grabbed = true;
      const framer = new DeviceFramer(
        info,
        (f) => this.emit('frame', f, info),
        absRange,
        () => {
          try {
            return h.state(EV_KEY);
          } catch {
            return null;
          }
        },
      );
      this.open.set(path, { handle: h, framer, info });
      h.watch((err) => (err ? this.onReadError(path, err) : this.drain(path)));
      if (cls === 'keyboard') this.writeLeds(h, this.ledState);
      this.log.info(`${path} "${name}" (${info.bus}): ${cls}, grabbed`);
      return true;
    } catch (e) {
      handle?.close();
      const err = e as EvdevError;
      // EACCES right after hotplug: udev has not set permissions yet; the next change event retries.
      if (!(err instanceof EvdevError && err.code === 'EACCES'))
        this.ignored.set(path, `error ${err.message}`);
      this.log.warn(`cannot use ${path}: ${err.message}`);
      return false;
    }
  }

  private drain(path: string): void {
    const d = this.open.get(path);
    if (!d) return;
    try {
      for (;;) {
        const n = d.handle.read(this.readBuf);
        if (n === 0) break;
        d.framer.parser.push(this.readBuf.subarray(0, n));
      }
    } catch (e) {
      this.onReadError(path, e as Error);
    }
  }

  private onReadError(path: string, err: Error): void {
    const code = (err as EvdevError).code;
    this.drop(path, code === 'ENODEV' ? 'device vanished (ENODEV)' : err.message);
    this.emit('devices');
    this.scheduleRescan(); // if it comes back (re-plugged, or a transient error) it is grabbed again
  }

  private drop(path: string, why: string): void {
    const d = this.open.get(path);
    if (!d) return;
    this.open.delete(path);
    d.framer.releaseAll();
    d.handle.close();
    this.log.info(`${path} "${d.info.name}" dropped: ${why}`);
  }

  private setLeds(state: LedState): void {
    this.ledState = state;
    for (const d of this.open.values()) if (d.info.cls === 'keyboard') this.writeLeds(d.handle, state);
  }

  private writeLeds(h: EvdevHandle, s: LedState): void {
    try {
      h.write(
        encodeEvents([
          ev(EV_LED, LED_NUML, s.num ? 1 : 0),
          ev(EV_LED, LED_CAPSL, s.caps ? 1 : 0),
          ev(EV_LED, LED_SCROLLL, s.scroll ? 1 : 0),
        ]),
      );
    } catch (e) {
      this.log.warn(`setting LEDs on ${h.path}: ${(e as Error).message}`);
    }
  }
}
