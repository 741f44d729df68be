import { TypedEmitter } from '@bulkhead/common';
import { BulkheadError } from '@bulkhead/contract';
import type { Frame, InputEvent } from '../input-event';
import type { LedController, LedState } from '../router';
import { DeviceFramer, type DeviceInfo, type InputSource, type SourceEvents } from './source';

const VIRTUAL_CLASSES = ['keyboard', 'mouse', 'tablet'] as const;
type VirtualClass = (typeof VIRTUAL_CLASSES)[number];

/**
 * A seat with no hardware: events arrive through Input1.InjectEvents (the switcher's window in
 * the demo forwards its keys; tests type through it). One virtual device per class, each with its
 * own parser, so injected events follow the evdev framing rules: nothing is routed until a
 * SYN_REPORT (type 0, code 0) ends the frame.
 */
export class VirtualSeat extends TypedEmitter<SourceEvents> implements InputSource {
  readonly seat = 'virtual' as const;
  private readonly framers = new Map<VirtualClass, DeviceFramer>();
  lastLeds: LedState = { caps: false, num: false, scroll: false };
  readonly leds: LedController = { setLeds: (s) => (this.lastLeds = s) };

  constructor() {
    super();
    for (const cls of VIRTUAL_CLASSES) {
      const info: DeviceInfo = { name: `virtual ${cls}`, cls, bus: 'virtual', grabbed: false, node: '' };
      this.framers.set(cls, new DeviceFramer(info, (f: Frame) => this.emit('frame', f, info)));
    }
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}

  devices(): DeviceInfo[] {
    return [...this.framers.values()].map((f) => f.info);
  }

  /** Feed raw (type, code, value) events of the virtual `deviceClass` device. */
  inject(deviceClass: string, events: Array<[number, number, number]>): void {
    const framer = this.framers.get(deviceClass as VirtualClass);
    if (!framer)
      throw new BulkheadError(
        'InvalidArgument',
        `InjectEvents: device_class '${deviceClass}' is not one of ${VIRTUAL_CLASSES.join(', ')}`,
      );
    const decoded: InputEvent[] = [];
    events.forEach(([type, code, value], i) => {
      if (type > 0x1f)
        throw new BulkheadError(
          'InvalidArgument',
          `InjectEvents: event ${i} has type ${type}, beyond EV_MAX (0x1f)`,
        );
      decoded.push({ type, code, value });
    });
    framer.parser.pushEvents(decoded);
  }
}
