// A small QMP (QEMU Machine Protocol) client over a unix socket, with no dependencies.
//
// QMP is line-delimited JSON: QEMU greets with {"QMP":{...}}, the client negotiates with
// "qmp_capabilities", then sends {"execute", "arguments", "id"} and gets back {"return", "id"} or
// {"error":{"class","desc"}, "id"}, interleaved with asynchronous {"event","data","timestamp"}.
// Every command carries an id, so commands can be pipelined and replies matched in any order.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { StringDecoder } from 'node:string_decoder';

/** QEMU answered a command with {"error":{"class","desc"}}. */
export class QmpError extends Error {
  constructor(
    public readonly qmpClass: string,
    public readonly desc: string,
    public readonly command: string,
  ) {
    super(`QMP command '${command}' failed: ${qmpClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

/** QEMU (or whatever is on the socket) sent something that is not valid QMP. */
export class QmpProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QmpProtocolError';
  }
}

/** The QMP socket is closed (by QEMU, by an error, or by close()). */
export class QmpClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QmpClosedError';
  }
}

/** A command (or the greeting) got no answer in time. */
export class QmpTimeoutError extends Error {
  constructor(
    public readonly command: string,
    public readonly timeoutMs: number,
    socketPath: string,
  ) {
    super(`QMP ${socketPath}: no reply to '${command}' within ${timeoutMs} ms`);
    this.name = 'QmpTimeoutError';
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  QMP: {
    version: { qemu: { major: number; minor: number; micro: number }; package: string };
    capabilities: string[];
  };
}

export interface QmpClientEvents {
  /** An asynchronous QMP event (SHUTDOWN, STOP, RESUME, ...). */
  event: [QmpEvent];
  /** The socket closed: undefined after close(), else the reason. Emitted once. */
  close: [Error | undefined];
  /** A line that could not be understood; the client keeps going. */
  'protocol-error': [QmpProtocolError];
  /** A command sent with send() failed (or could not be sent). */
  'command-error': [QmpError | QmpClosedError];
}

export interface QmpConnectOptions {
  /** Time allowed for the greeting and capabilities negotiation, once connected (default 5000). */
  timeoutMs?: number;
  /**
   * Keep retrying while the socket does not exist yet or refuses connections (QEMU still
   * starting), for this many milliseconds (default 0: no retry). A value above 1e12 is read as an
   * absolute deadline (Date.now()-style epoch milliseconds).
   */
  retryUntilMs?: number;
  /** Default timeout of execute() (default 30000; 0 = none). */
  commandTimeoutMs?: number;
  /** Longest line accepted from QEMU before the connection is dropped (default 16 MiB). */
  maxLineBytes?: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
}

const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);
const MAX_EXPIRED_IDS = 4096;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function preview(line: string): string {
  return line.length > 120 ? `${line.slice(0, 120)}...` : line;
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  private readonly decoder = new StringDecoder('utf8');
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  /** ids of send() commands: their replies are read and dropped (errors reported). */
  private readonly fireAndForget = new Map<string, string>();
  /** ids of commands that timed out: a late reply is dropped quietly. */
  private readonly expired = new Set<string>();
  private greetingWaiter?: { resolve: (g: QmpGreeting) => void; reject: (e: Error) => void };
  private greetingValue?: QmpGreeting;
  private closedError?: Error;
  private closed = false;
  private closingByUs = false;
  private readonly closedPromise: Promise<void>;
  private corked = false;

  private constructor(
    private readonly socket: net.Socket,
    readonly socketPath: string,
    private readonly commandTimeoutMs: number,
    private readonly maxLineBytes: number,
  ) {
    super();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => {
      this.closedError ??= new QmpClosedError(`QMP ${socketPath}: socket error: ${err.message}`);
    });
    this.closedPromise = new Promise((resolve) => {
      socket.on('close', () => {
        this.onClose();
        resolve();
      });
    });
  }

  /**
   * Connects to QEMU's QMP socket, reads the greeting and leaves capabilities negotiation mode.
   * Rejects with QmpProtocolError (not QMP), QmpTimeoutError (no greeting: is another client
   * connected? QEMU serves one at a time), QmpError (qmp_capabilities refused) or the socket error.
   */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const retry = opts.retryUntilMs ?? 0;
    const deadline = retry > 1e12 ? retry : Date.now() + retry;
    let socket: net.Socket;
    for (;;) {
      try {
        socket = await openSocket(socketPath);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (!RETRYABLE.has(code) || Date.now() >= deadline) throw err;
        await sleep(Math.min(25, Math.max(1, deadline - Date.now())));
      }
    }
    const client = new QmpClient(
      socket,
      socketPath,
      opts.commandTimeoutMs ?? 30000,
      opts.maxLineBytes ?? 16 << 20,
    );
    try {
      await client.handshake(timeoutMs);
    } catch (err) {
      client.socket.destroy();
      await client.closedPromise;
      throw err;
    }
    return client;
  }

  /** QEMU's greeting, e.g. greeting.QMP.version.qemu.major. */
  get greeting(): QmpGreeting {
    if (!this.greetingValue) throw new QmpProtocolError(`QMP ${this.socketPath}: no greeting yet`);
    return this.greetingValue;
  }

  /** True once the socket is closed. */
  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Runs a command and resolves with its "return" value. Rejects with QmpError for an error reply,
   * QmpTimeoutError after opts.timeoutMs (0 = wait forever), QmpClosedError if the socket closes.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.closed || this.closingByUs) return Promise.reject(this.closedErrorFor(command));
    const id = `bh-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { command, resolve: resolve as (v: unknown) => void, reject };
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          this.rememberExpired(id);
          reject(new QmpTimeoutError(command, timeoutMs, this.socketPath));
        }, timeoutMs);
      }
      this.pending.set(id, p);
      this.write(id, command, args);
    });
  }

  /**
   * Sends a command without waiting: for the fast input path. Its reply is read and dropped; an
   * error reply, or the socket being closed, is emitted as 'command-error'.
   */
  send(command: string, args?: Record<string, unknown>): void {
    if (this.closed || this.closingByUs) {
      this.emit('command-error', this.closedErrorFor(command));
      return;
    }
    const id = `ff-${this.nextId++}`;
    this.fireAndForget.set(id, command);
    this.write(id, command, args);
  }

  /**
   * Writes what this tick's commands queued now instead of at the end of the tick. Commands
   * written in one tick go out in one socket write, at the next process.nextTick — which runs
   * only after every promise continuation of the current task: in input-daemon that is after the
   * D-Bus reply to InjectEvents was built and sent, ~0.1 ms on the key's path (issue 17).
   */
  flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  /** Closes the connection; pending commands reject with QmpClosedError. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.closingByUs) {
      this.closingByUs = true;
      this.rejectAll(new QmpClosedError(`QMP ${this.socketPath}: closed by the client`));
      this.socket.end();
      const t = setTimeout(() => this.socket.destroy(), 1000);
      t.unref();
      await this.closedPromise;
      clearTimeout(t);
      return;
    }
    await this.closedPromise;
  }

  // --- internals ---------------------------------------------------------------------------------

  private handshake(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => {
        this.greetingWaiter = undefined;
        finish(
          new QmpTimeoutError(
            this.greetingValue ? 'qmp_capabilities' : 'greeting (is another QMP client connected?)',
            timeoutMs,
            this.socketPath,
          ),
        );
      }, timeoutMs);
      const onClose = (err: Error | undefined) =>
        finish(err ?? new QmpClosedError(`QMP ${this.socketPath}: closed during the handshake`));
      this.on('close', onClose);
      this.greetingWaiter = {
        resolve: () => {
          this.execute('qmp_capabilities', undefined, { timeoutMs: 0 }).then(
            () => finish(),
            (err: Error) => finish(err),
          );
        },
        reject: (err) => finish(err),
      };
    });
  }

  private write(id: string, command: string, args?: Record<string, unknown>): void {
    const msg: Record<string, unknown> = { execute: command };
    if (args !== undefined) msg.arguments = args;
    msg.id = id;
    // Coalesce everything written in one tick into one socket write.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => this.flush());
    }
    this.socket.write(JSON.stringify(msg) + '\n');
  }

  private onData(chunk: Buffer): void {
    this.buffer += this.decoder.write(chunk);
    let start = 0;
    for (;;) {
      const nl = this.buffer.indexOf('\n', start);
      if (nl < 0) break;
      const line = this.buffer.slice(start, nl).trim();
      start = nl + 1;
      if (line) this.onLine(line);
      if (this.closed) return;
    }
    this.buffer = this.buffer.slice(start);
    if (this.buffer.length > this.maxLineBytes) {
      const err = new QmpProtocolError(
        `QMP ${this.socketPath}: line longer than ${this.maxLineBytes} bytes without a newline; dropping the connection`,
      );
      this.buffer = '';
      this.emit('protocol-error', err);
      this.closedError ??= err;
      this.socket.destroy();
    }
  }

  private protocolError(what: string, line: string): void {
    this.emit('protocol-error', new QmpProtocolError(`QMP ${this.socketPath}: ${what}: ${preview(line)}`));
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      if (this.greetingWaiter) return this.failGreeting(`invalid JSON instead of the greeting`, line);
      return this.protocolError('invalid JSON', line);
    }
    if (!isObject(msg)) {
      if (this.greetingWaiter) return this.failGreeting('not a JSON object instead of the greeting', line);
      return this.protocolError('not a JSON object', line);
    }
    if (this.greetingWaiter) {
      const waiter = this.greetingWaiter;
      const qmp = msg.QMP;
      if (!isObject(qmp) || !isObject(qmp.version) || !Array.isArray(qmp.capabilities)) {
        return this.failGreeting('expected the {"QMP":{version,capabilities}} greeting, got', line);
      }
      this.greetingWaiter = undefined;
      this.greetingValue = msg as unknown as QmpGreeting;
      waiter.resolve(this.greetingValue);
      return;
    }
    if (typeof msg.event === 'string') {
      const ts = isObject(msg.timestamp) ? msg.timestamp : {};
      this.emit('event', {
        event: msg.event,
        data: isObject(msg.data) ? msg.data : {},
        timestamp: {
          seconds: typeof ts.seconds === 'number' ? ts.seconds : 0,
          microseconds: typeof ts.microseconds === 'number' ? ts.microseconds : 0,
        },
      });
      return;
    }
    const hasReturn = 'return' in msg;
    const error = msg.error;
    if (!hasReturn && !isObject(error)) {
      if ('QMP' in msg) return this.protocolError('unexpected second greeting', line);
      return this.protocolError('unknown message (neither return, error nor event)', line);
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    if (id === undefined) return this.protocolError('reply without our id', line);
    const toError = (command: string) => {
      const e = error as Record<string, unknown>;
      return new QmpError(
        typeof e.class === 'string' ? e.class : 'GenericError',
        typeof e.desc === 'string' ? e.desc : JSON.stringify(e),
        command,
      );
    };
    const p = this.pending.get(id);
    if (p) {
      this.pending.delete(id);
      if (p.timer) clearTimeout(p.timer);
      if (hasReturn) p.resolve(msg.return);
      else p.reject(toError(p.command));
      return;
    }
    const ffCommand = this.fireAndForget.get(id);
    if (ffCommand !== undefined) {
      this.fireAndForget.delete(id);
      if (!hasReturn) this.emit('command-error', toError(ffCommand));
      return;
    }
    if (this.expired.delete(id)) return; // late reply to a command that timed out
    this.protocolError(`reply to unknown id ${JSON.stringify(id)}`, line);
  }

  private failGreeting(what: string, line: string): void {
    const waiter = this.greetingWaiter;
    this.greetingWaiter = undefined;
    waiter?.reject(new QmpProtocolError(`QMP ${this.socketPath}: ${what}: ${preview(line)}`));
  }

  private rememberExpired(id: string): void {
    this.expired.add(id);
    if (this.expired.size > MAX_EXPIRED_IDS) {
      const oldest = this.expired.values().next().value;
      if (oldest !== undefined) this.expired.delete(oldest);
    }
  }

  private closedErrorFor(command: string): QmpClosedError {
    return new QmpClosedError(`QMP ${this.socketPath}: connection closed, cannot run '${command}'`);
  }

  private rejectAll(err: Error): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
    this.fireAndForget.clear();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    const partial = this.buffer.trim().length > 0 || this.decoder.end().length > 0;
    this.buffer = '';
    let reason: Error | undefined;
    if (!this.closingByUs) {
      reason =
        this.closedError ??
        new QmpClosedError(
          `QMP ${this.socketPath}: connection closed by QEMU${partial ? ' in the middle of a reply' : ''}`,
        );
    }
    const forPending =
      reason instanceof QmpClosedError
        ? reason
        : new QmpClosedError(
            `QMP ${this.socketPath}: connection closed${reason ? `: ${reason.message}` : ''}`,
          );
    if (this.greetingWaiter) {
      const w = this.greetingWaiter;
      this.greetingWaiter = undefined;
      w.reject(forPending);
    }
    this.rejectAll(forPending);
    this.expired.clear();
    this.emit('close', reason);
  }
}

function openSocket(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(path);
    const onError = (err: Error) => {
      s.destroy();
      reject(err);
    };
    s.once('error', onError);
    s.once('connect', () => {
      s.off('error', onError);
      resolve(s);
    });
  });
}
