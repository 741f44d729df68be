// FakeQmpServer: a scriptable stand-in for QEMU's QMP socket, for unit tests.
//
// By default it behaves like QEMU: greets every connection, answers qmp_capabilities with
// {"return":{}}, answers commands registered with handle(), and answers anything else with
// CommandNotFound. Tests can also hold replies back (a handler returns NO_REPLY), pick those
// commands up with nextCommand(), and write raw bytes (split, merged, garbled) with writeRaw().
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface FakeQmpCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
  /** The connection it came on (to reply on it). */
  conn: net.Socket;
}

/** What a handler returns: a reply body, or NO_REPLY to answer later (or never). */
export type FakeQmpReply = { return: unknown } | { error: { class: string; desc: string } } | typeof NO_REPLY;
export type FakeQmpHandler = (cmd: FakeQmpCommand) => FakeQmpReply | Promise<FakeQmpReply>;

export const NO_REPLY = Symbol('no-reply');

export const DEFAULT_GREETING = {
  QMP: {
    version: { qemu: { micro: 0, minor: 2, major: 7 }, package: 'fake' },
    capabilities: ['oob'],
  },
};

export interface FakeQmpServerOptions {
  /** Where to listen (default: a fresh temporary directory). */
  socketPath?: string;
  /** Greeting to send, a raw string to send instead, or null to send nothing. */
  greeting?: unknown;
}

export class FakeQmpServer {
  /** Every command received, in order (qmp_capabilities included). */
  readonly commands: FakeQmpCommand[] = [];
  readonly connections = new Set<net.Socket>();
  private readonly handlers = new Map<string, FakeQmpHandler>();
  private readonly waiters: Array<(c: FakeQmpCommand) => boolean> = [];
  private unclaimed: FakeQmpCommand[] = [];
  private readonly tmpDir?: string;

  private constructor(
    private readonly server: net.Server,
    readonly socketPath: string,
    tmpDir: string | undefined,
    private readonly greeting: unknown,
  ) {
    this.tmpDir = tmpDir;
  }

  static async start(opts: FakeQmpServerOptions = {}): Promise<FakeQmpServer> {
    let tmpDir: string | undefined;
    let socketPath = opts.socketPath;
    if (!socketPath) {
      tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-qmp-'));
      socketPath = path.join(tmpDir, 'qmp.sock');
    }
    const server = net.createServer();
    const fake = new FakeQmpServer(
      server,
      socketPath,
      tmpDir,
      opts.greeting === undefined ? DEFAULT_GREETING : opts.greeting,
    );
    server.on('connection', (conn) => fake.onConnection(conn));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return fake;
  }

  /** Answers `command` with the handler's reply (replaces the default for it). */
  handle(command: string, handler: FakeQmpHandler): this {
    this.handlers.set(command, handler);
    return this;
  }

  /**
   * Resolves with the next held-back command (its handler returned NO_REPLY) that nobody has
   * claimed yet, oldest first; only `execute` commands if given.
   */
  nextCommand(execute?: string): Promise<FakeQmpCommand> {
    const i = this.unclaimed.findIndex((c) => execute === undefined || c.execute === execute);
    if (i >= 0) return Promise.resolve(this.unclaimed.splice(i, 1)[0]);
    return new Promise((resolve) => {
      this.waiters.push((c) => {
        if (execute !== undefined && c.execute !== execute) return false;
        resolve(c);
        return true;
      });
    });
  }

  /** Sends a reply to a command (echoing its id, as QEMU does). */
  reply(cmd: FakeQmpCommand, body: { return: unknown } | { error: { class: string; desc: string } }): void {
    const msg: Record<string, unknown> = { ...body };
    if (cmd.id !== undefined) msg.id = cmd.id;
    this.writeRaw(JSON.stringify(msg) + '\r\n', cmd.conn);
  }

  /** Sends an asynchronous event to every connection. */
  sendEvent(event: string, data?: Record<string, unknown>, conn?: net.Socket): void {
    const now = Date.now();
    const msg: Record<string, unknown> = {
      event,
      timestamp: { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 },
    };
    if (data !== undefined) msg.data = data;
    this.writeRaw(JSON.stringify(msg) + '\r\n', conn);
  }

  /** Writes raw text to one connection, or to all of them. */
  writeRaw(text: string | Buffer, conn?: net.Socket): void {
    for (const c of conn ? [conn] : this.connections) if (!c.destroyed) c.write(text);
  }

  /** Abruptly closes every client connection (like QEMU dying). */
  dropConnections(): void {
    for (const c of this.connections) c.destroy();
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.tmpDir) fs.rmSync(this.tmpDir, { recursive: true, force: true });
  }

  private onConnection(conn: net.Socket): void {
    this.connections.add(conn);
    conn.on('close', () => this.connections.delete(conn));
    conn.on('error', () => {});
    if (this.greeting !== null) {
      this.writeRaw(
        typeof this.greeting === 'string' ? this.greeting : JSON.stringify(this.greeting) + '\r\n',
        conn,
      );
    }
    let buf = '';
    conn.setEncoding('utf8');
    conn.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) void this.onLine(line, conn);
      }
    });
  }

  private async onLine(line: string, conn: net.Socket): Promise<void> {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.writeRaw(
        JSON.stringify({ error: { class: 'GenericError', desc: 'JSON parse error' } }) + '\r\n',
        conn,
      );
      return;
    }
    const cmd: FakeQmpCommand = {
      execute: String(msg.execute),
      arguments: msg.arguments as Record<string, unknown> | undefined,
      id: msg.id,
      conn,
    };
    this.commands.push(cmd);
    const handler = this.handlers.get(cmd.execute);
    let reply: FakeQmpReply;
    if (handler) reply = await handler(cmd);
    else if (cmd.execute === 'qmp_capabilities') reply = { return: {} };
    else
      reply = {
        error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` },
      };
    if (reply === NO_REPLY) {
      this.offer(cmd);
      return;
    }
    this.reply(cmd, reply);
  }

  private offer(cmd: FakeQmpCommand): void {
    for (let i = 0; i < this.waiters.length; i++) {
      if (this.waiters[i](cmd)) {
        this.waiters.splice(i, 1);
        return;
      }
    }
    this.unclaimed.push(cmd);
  }
}
