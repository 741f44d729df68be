import type { Frame } from '../input-event';
import type { InputSink } from '../sinks/sink';

/** A sink that records every frame it is given (unit and property tests). */
export class FakeSink implements InputSink {
  readonly frames: Frame[] = [];
  alive = true;
  readonly description: string;
  constructor(readonly target: string) {
    this.description = `fake ${target}`;
  }
  write(frame: Frame): void {
    this.frames.push(frame.map((e) => ({ ...e })));
  }
  async close(): Promise<void> {
    this.alive = false;
  }
  /** All events, flattened, in order. */
  events(): Array<{ type: number; code: number; value: number }> {
    return this.frames.flat();
  }
}
