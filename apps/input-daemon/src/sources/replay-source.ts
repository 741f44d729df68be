import { constants, openSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Socket } from 'node:net';
import { TypedEmitter } from '@bulkhead/common';
import type { LedController, LedState } from '../router';
import {
  DeviceFramer,
  type DeviceClass,
  type DeviceInfo,
  type InputSource,
  type SourceEvents,
} from './source';

export class ReplayError extends Error {
  override name = 'ReplayError';
}

/**
 * Replays a recorded stream of `struct input_event` (24-byte records, as read from
 * /dev/input/eventN, e.g. `cat /dev/input/event3 > rec.bin`) through the same parser and pipeline
 * as live devices. Reads in odd-sized chunks on purpose: structs split across reads are the norm.
 * A trailing partial struct is reported (not silently lost).
 *
 * A FIFO is read as a live device instead: on the main loop as its data comes (libuv polls it, as
 * the evdev seat polls an event node), never ending by itself (it is opened for writing too, so a
 * writer that comes and goes is no end of input). A file read through the thread pool would add a
 * hop per key that a keyboard's keys do not take (key-latency.bench's device path).
 */
export class ReplaySource extends TypedEmitter<SourceEvents> implements InputSource {
  readonly seat = 'replay' as const;
  private readonly info: DeviceInfo;
  private stopped = false;
  /** Resolves when the whole file was fed (or the source stopped). */
  done: Promise<void> = Promise.resolve();
  lastLeds: LedState = { caps: false, num: false, scroll: false };
  readonly leds: LedController = { setLeds: (s) => (this.lastLeds = s) };

  constructor(
    readonly file: string,
    cls: DeviceClass = 'keyboard',
    private readonly opts: { chunkBytes?: number; onWarning?: (msg: string) => void } = {},
  ) {
    super();
    this.info = { name: `replay ${file}`, cls, bus: 'virtual', grabbed: false, node: file };
  }

  devices(): DeviceInfo[] {
    return [this.info];
  }

  async start(): Promise<void> {
    let fifo = false;
    try {
      fifo = statSync(this.file).isFIFO();
    } catch {
      /* open() below says what is wrong */
    }
    if (fifo) return this.startLive();
    let fh;
    try {
      fh = await open(this.file, 'r');
    } catch (e) {
      throw new ReplayError(`replay ${this.file}: ${(e as Error).message}`);
    }
    const framer = new DeviceFramer(this.info, (f) => this.emit('frame', f, this.info));
    this.done = (async () => {
      try {
        const buf = Buffer.alloc(this.opts.chunkBytes ?? 4093);
        for (;;) {
          if (this.stopped) return;
          const { bytesRead } = await fh.read(buf, 0, buf.length, null);
          if (bytesRead === 0) break;
          framer.parser.push(buf.subarray(0, bytesRead));
        }
        if (framer.parser.partialBytes)
          this.opts.onWarning?.(
            `replay ${this.file}: ${framer.parser.partialBytes} trailing bytes are not a whole input_event (24 bytes); ignored`,
          );
      } finally {
        await fh.close();
      }
    })();
  }

  private live: Socket | null = null;

  private startLive(): void {
    let fd: number;
    try {
      fd = openSync(this.file, constants.O_RDWR | constants.O_NONBLOCK);
    } catch (e) {
      throw new ReplayError(`replay ${this.file}: ${(e as Error).message}`);
    }
    const framer = new DeviceFramer(this.info, (f) => this.emit('frame', f, this.info));
    const sock = new Socket({ fd, readable: true, writable: false });
    this.live = sock;
    sock.on('data', (chunk: Buffer) => framer.parser.push(chunk));
    this.done = new Promise<void>((resolve) => {
      sock.once('close', () => resolve());
      sock.once('error', (e) => {
        this.opts.onWarning?.(`replay ${this.file}: ${e.message}`);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.live?.destroy();
    await this.done.catch(() => undefined);
  }
}
