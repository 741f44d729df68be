import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { UinputDevice, type UinputSpec } from '../evdev-native';
import {
  ABS_X,
  ABS_Y,
  BTN_EXTRA,
  BTN_LEFT,
  BTN_MIDDLE,
  BTN_RIGHT,
  BTN_SIDE,
  BUS_VIRTUAL,
  EV_KEY,
  LED_CAPSL,
  LED_NUML,
  LED_SCROLLL,
  REL_HWHEEL,
  REL_WHEEL,
  REL_X,
  REL_Y,
  encodeEvents,
  ev,
  type Frame,
} from '../input-event';
import { ALL_KEY_CODES, KEY_SCROLLLOCK } from '../keycodes';
import type { InputSink } from './sink';
import { frameToQmpEvents, type QmpConnection } from './qmp-sink';

/**
 * USB ids of the uinput devices input-daemon itself creates (switcher sink, per-VM fast path).
 * The evdev seat must never grab them: they are its outputs, and grabbing the switcher's would
 * starve the kiosk compositor of all input.
 */
export const OWN_UINPUT_VENDOR = 0x1d6b;
export const OWN_UINPUT_PRODUCT = 0x0b01;

/** One uinput device that carries a whole keyboard + mouse + tablet. */
export function seatDeviceSpec(name: string): UinputSpec {
  return {
    name,
    bustype: BUS_VIRTUAL,
    vendor: OWN_UINPUT_VENDOR,
    product: OWN_UINPUT_PRODUCT,
    keys: [...ALL_KEY_CODES, BTN_LEFT, BTN_RIGHT, BTN_MIDDLE, BTN_SIDE, BTN_EXTRA],
    rels: [REL_X, REL_Y, REL_WHEEL, REL_HWHEEL],
    abs: [
      { axis: ABS_X, min: 0, max: 32767 },
      { axis: ABS_Y, min: 0, max: 32767 },
    ],
    leds: [LED_NUML, LED_CAPSL, LED_SCROLLL],
  };
}

/** The /dev/input/eventN node the kernel made for a uinput device (from its sysfs name). */
export async function eventNodeOf(sysname: string, timeoutMs = 2000): Promise<string> {
  const dir = `/sys/devices/virtual/input/${sysname}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ev = existsSync(dir) ? readdirSync(dir).find((e) => /^event\d+$/.test(e)) : undefined;
    if (ev && existsSync(join('/dev/input', ev))) return join('/dev/input', ev);
    if (Date.now() > deadline)
      throw new Error(`uinput device ${sysname}: no /dev/input/event* node after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Writes frames to a uinput device (each frame + SYN_REPORT in one write()). Used for the
 * switcher in the Control Domain image (the kiosk compositor reads it) and, behind
 * createVmUinputSink, as a VM's fast path.
 */
export class UinputWriterSink implements InputSink {
  private dead = false;
  private destroyed = false;
  constructor(
    readonly target: string,
    readonly device: UinputDevice,
    readonly description: string,
    /**
     * Never write ScrollLock: QEMU's grab-toggle below is Ctrl+ScrollLock, and input-linux fires
     * it once all keys are up after both were down in any order (ScrollLock, Ctrl, releases):
     * dropping ScrollLock only while Ctrl was held let that order through, and left a ScrollLock
     * press whose release was dropped. QEMU never passes ScrollLock to the guest with this
     * toggle anyway, so nothing the guest would see is lost.
     */
    private readonly suppressGrabToggle = false,
    /** Run once by close(), after the device: e.g. closing the fast path's QMP connection. */
    private readonly onClose?: () => Promise<void>,
    /** The fast path's QMP connection, for releaseInGuest (see InputSink). */
    qmp?: QmpConnection,
  ) {
    if (qmp)
      this.releaseInGuest = async (codes) => {
        const events = frameToQmpEvents(codes.map((c) => ev(EV_KEY, c, 0)));
        if (events.length) await qmp.execute('input-send-event', { events });
      };
  }
  readonly releaseInGuest?: (codes: readonly number[]) => Promise<void>;
  get alive(): boolean {
    return !this.dead;
  }
  write(frame: Frame): void {
    if (this.dead) return;
    let out = frame;
    if (this.suppressGrabToggle) out = frame.filter((e) => !(e.type === EV_KEY && e.code === KEY_SCROLLLOCK));
    try {
      this.device.write(encodeEvents(out));
    } catch (e) {
      this.dead = true;
      throw e;
    }
  }
  async close(): Promise<void> {
    if (this.destroyed) return;
    this.dead = true;
    this.destroyed = true;
    this.device.destroy();
    await this.onClose?.();
  }

  /**
   * The reader of this device is gone (the VM's QEMU exited: a restart, a Xen guest's reboot):
   * writes would reach nobody, so the sink is dead and the next SetFocus builds a new one.
   */
  readerGone(): void {
    this.dead = true;
  }
}

/** This process's tag in the QOM ids of its input-linux objects (see inputObjectId). */
const INSTANCE_TAG = randomBytes(4).toString('hex');
let objectsMade = 0;

/**
 * The QOM id of a new input-linux object for VM `vmId`: unique to this process and to each sink it
 * makes. A killed input-daemon leaves its object in a QEMU that outlives it (its uinput device is
 * gone, so QEMU's read fails and it stops polling it: inert); with one fixed id per VM the next
 * daemon's `object-add` failed on the duplicate and that VM fell back to QMP input-send-event until
 * it restarted. Deleting the stale object first is no way out (see createVmUinputSink).
 */
export function inputObjectId(vmId: string): string {
  objectsMade += 1;
  return `bulkhead-input-${vmId.replace(/[^A-Za-z0-9_-]/g, '_')}-${INSTANCE_TAG}-${objectsMade}`;
}

/**
 * The fast path for a VM when /dev/uinput exists (Control Domain image; not this host): create a
 * per-VM uinput device and have the VM's QEMU read it with an `input-linux` object added over QMP.
 * QEMU's input-linux grabs/ungrabs its device on a "grab-toggle" chord (default: both Ctrl keys);
 * we pick ctrl-scrolllock and never write ScrollLock at all, so the toggle can never fire. Frames then go kernel → QEMU without a QMP round trip each.
 */
export async function createVmUinputSink(
  target: string,
  vmId: string,
  qmp: QmpConnection,
  uinputPath = '/dev/uinput',
  /** The kernel's side (tests pass fakes: this host has no /dev/uinput). */
  kernel: {
    create: (spec: UinputSpec, path: string) => UinputDevice;
    nodeOf: (sysname: string) => Promise<string>;
  } = { create: (spec, path) => UinputDevice.create(spec, path), nodeOf: (n) => eventNodeOf(n) },
  id = inputObjectId(vmId),
): Promise<UinputWriterSink> {
  const device = kernel.create(seatDeviceSpec(`bulkhead-input ${vmId}`), uinputPath);
  try {
    const node = await kernel.nodeOf(device.sysname);
    // An input-daemon before this one (killed, restarted) may have left its object in this QEMU;
    // ours has an id of its own (inputObjectId), so both live side by side and only ours reads a
    // device. (Deleting the stale object first was tried: in one CI run QEMU 7.2 then closed the
    // QMP connection, and the fallback on that connection lost every key.) An add QEMU refuses
    // anyway throws, and the caller falls back to QMP input-send-event.
    await qmp.execute('object-add', {
      'qom-type': 'input-linux',
      id,
      evdev: node,
      'grab-toggle': 'ctrl-scrolllock',
      repeat: false,
      grab_all: false,
    });
    const sink = new UinputWriterSink(
      target,
      device,
      `uinput ${node} → QEMU input-linux ${id}`,
      true,
      () => qmp.close().catch(() => undefined),
      qmp,
    );
    // QEMU reads the device only while it runs: its QMP connection closing is its end.
    qmp.on('close', () => sink.readerGone());
    return sink;
  } catch (e) {
    device.destroy();
    throw e;
  }
}
