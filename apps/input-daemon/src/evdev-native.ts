import { join } from 'node:path';

/**
 * The native evdev/uinput addon (src/native/evdev.cc, built by `npm run build -w
 * @bulkhead/input-daemon` into build/Release/evdev.node) and its types. Every call either returns
 * or throws an EvdevError carrying errno: the daemon never crashes on a missing or vanished node.
 */

export interface InputId {
  bustype: number;
  vendor: number;
  product: number;
  version: number;
}

export interface AbsInfo {
  value: number;
  minimum: number;
  maximum: number;
  fuzz: number;
  flat: number;
  resolution: number;
}

export interface UinputSpec {
  name: string;
  bustype?: number;
  vendor?: number;
  product?: number;
  keys?: number[];
  rels?: number[];
  abs?: Array<{ axis: number; min: number; max: number }>;
  leds?: number[];
}

export interface PollWatcher {
  stop(): void;
}

interface NativeAddon {
  open(path: string, writable: boolean): number;
  close(fd: number): void;
  grab(fd: number, on: boolean): void;
  getName(fd: number): string;
  getId(fd: number): InputId;
  getBits(fd: number, evType: number): number[];
  getState(fd: number, evType: number): number[];
  getAbsInfo(fd: number, axis: number): AbsInfo;
  read(fd: number, buf: Buffer): number;
  write(fd: number, buf: Buffer): number;
  uinputCreate(path: string, spec: UinputSpec): { fd: number; sysname: string };
  uinputDestroy(fd: number): void;
  Watcher: new (fd: number, cb: (err: Error | null) => void) => PollWatcher;
  sizeofInputEvent: number;
}

/** A failed evdev/uinput system call: which call, on what, and the errno. */
export class EvdevError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly errno: number,
    readonly syscall: string,
    readonly path: string,
  ) {
    super(message);
    this.name = 'EvdevError';
  }
}

/** The addon could not be loaded (not built, or built for another Node). */
export class EvdevUnavailableError extends Error {
  override name = 'EvdevUnavailableError';
}

let addon: NativeAddon | null = null;
let loadError: Error | null = null;

function native(): NativeAddon {
  if (addon) return addon;
  if (loadError) throw loadError;
  const file = join(__dirname, '..', 'build', 'Release', 'evdev.node');
  try {
    // A compiled addon can only be loaded with require().
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as NativeAddon;
    return addon;
  } catch (e) {
    loadError = new EvdevUnavailableError(
      `cannot load the evdev addon ${file} (run 'npm run build -w @bulkhead/input-daemon'): ${(e as Error).message}`,
    );
    throw loadError;
  }
}

/** True when the addon is built and loads. */
export function evdevAvailable(): boolean {
  try {
    native();
    return true;
  } catch {
    return false;
  }
}

/** Runs a native call; a thrown system error becomes an EvdevError (with `path` overriding fd labels). */
function sys<T>(fn: (a: NativeAddon) => T, path?: string): T {
  const a = native();
  try {
    return fn(a);
  } catch (e) {
    const err = e as Error & { code?: string; errno?: number; syscall?: string; path?: string };
    if (typeof err.errno === 'number' && err.code) {
      const where = path ?? err.path ?? '';
      const msg =
        path && err.path && err.path !== path
          ? err.message.replace(err.path, `${path} (${err.path})`)
          : err.message;
      throw new EvdevError(msg, err.code, err.errno, err.syscall ?? '?', where);
    }
    throw e;
  }
}

/** An open evdev node. All methods throw EvdevError; close() is idempotent. */
export class EvdevHandle {
  private closed = false;
  private watcher: PollWatcher | null = null;

  private constructor(
    readonly fd: number,
    readonly path: string,
  ) {}

  static open(path: string, opts: { writable?: boolean } = {}): EvdevHandle {
    const fd = sys((a) => a.open(path, opts.writable ?? true), path);
    return new EvdevHandle(fd, path);
  }

  grab(on: boolean): void {
    sys((a) => a.grab(this.fd, on), this.path);
  }
  name(): string {
    return sys((a) => a.getName(this.fd), this.path);
  }
  id(): InputId {
    return sys((a) => a.getId(this.fd), this.path);
  }
  /** Codes supported for event type `evType` (0 = the supported event types). */
  bits(evType: number): number[] {
    return sys((a) => a.getBits(this.fd, evType), this.path);
  }
  /** Codes currently on (keys down, LEDs lit) for EV_KEY / EV_LED / EV_SW. */
  state(evType: number): number[] {
    return sys((a) => a.getState(this.fd, evType), this.path);
  }
  absInfo(axis: number): AbsInfo {
    return sys((a) => a.getAbsInfo(this.fd, axis), this.path);
  }
  /** Bytes read into `buf`; 0 when nothing is pending. */
  read(buf: Buffer): number {
    return sys((a) => a.read(this.fd, buf), this.path);
  }
  write(buf: Buffer): number {
    return sys((a) => a.write(this.fd, buf), this.path);
  }
  /** Calls `onReadable` on the event loop whenever the node has data or failed. */
  watch(onReadable: (err: EvdevError | null) => void): void {
    if (this.watcher) return;
    const a = native();
    this.watcher = new a.Watcher(this.fd, (err) => {
      if (!err) return onReadable(null);
      const e = err as Error & { code: string; errno: number; syscall: string };
      onReadable(new EvdevError(`${e.message} (${this.path})`, e.code, e.errno, e.syscall, this.path));
    });
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    this.watcher = null;
    try {
      native().close(this.fd);
    } catch {
      // Closing a vanished device can fail; the fd is gone either way.
    }
  }
}

/** A uinput device we created; destroy() removes it from the kernel. */
export class UinputDevice {
  private destroyed = false;
  private constructor(
    readonly fd: number,
    readonly sysname: string,
    readonly uinputPath: string,
  ) {}

  static create(spec: UinputSpec, uinputPath = '/dev/uinput'): UinputDevice {
    const r = sys((a) => a.uinputCreate(uinputPath, spec), uinputPath);
    return new UinputDevice(r.fd, r.sysname, uinputPath);
  }

  write(buf: Buffer): number {
    return sys((a) => a.write(this.fd, buf), this.uinputPath);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      native().uinputDestroy(this.fd);
    } catch {
      // Already gone.
    }
  }
}

/** sizeof(struct input_event) as compiled (24 on x86_64). */
export function nativeInputEventSize(): number {
  return native().sizeofInputEvent;
}
