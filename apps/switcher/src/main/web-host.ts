#!/usr/bin/env node
/**
 * The switcher's web host: the same core as under Electron, run by plain Node. Serves the renderer
 * bundle over HTTP on 127.0.0.1 and carries the channel map over a WebSocket protected by a
 * random token (with --token-file, one per boot: a restarted web host keeps it, see
 * tokenFromEarlierStart); also proxies each VM's VNC display (a unix socket in vm-daemon's run
 * directory) to the renderer's noVNC. Used by tests, the demo and the Control Domain image.
 *
 *   node apps/switcher/dist/main/web-host.js --port 0 --bus <address> [--vm-run-dir /run/bulkhead/vms]
 *
 * Prints `SWITCHER-URL http://<listen>:PORT/?token=...` once it listens (127.0.0.1 unless --listen);
 * with --token-file, the URL without the token (the token is in the file only).
 * With `--allow-uid <uid or user name>` (repeatable) it accepts TCP connections only from
 * processes of those uids (the image: the kiosk's, bulkhead-ui); without it, from any local uid.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  existsSync,
  fstatSync,
  readFileSync,
  readSync,
  statSync,
} from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { extname, join, normalize, sep } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { openReadOnlyNoWait, writeFileAtomic } from '@bulkhead/common';
import { vmIdFromPath, vmPath } from '@bulkhead/contract';
import { BusClient, connectBus, type MessageBus } from '@bulkhead/dbus';
import { validateRequest, ChannelError, type PushChannel, type ServerFrame } from '../common/channels';
import { SwitcherCore, toFailure } from './core';
import { peerUid, uidOfUser } from './peer-uid';
import { RfbClientFilter, RfbProtocolError } from './rfb-filter';

export interface WebHostOptions {
  /** D-Bus address (or 'system'); ignored when `bus` is given. */
  busAddress?: string;
  bus?: MessageBus;
  port?: number;
  /**
   * The loopback address to listen on (default 127.0.0.1). The image uses another one: a guest
   * on QEMU's user-mode network reaches the host's 127.0.0.1 (slirp maps 10.0.2.2 there), and
   * only that address of 127/8.
   */
  listen?: string;
  /** vm-daemon's run directory: each VM's VNC socket is <vmRunDir>/<id>/vnc.sock. */
  vmRunDir?: string;
  /** Where index.html, app.js and app.css are (the esbuild output). */
  staticDir?: string;
  injectInput?: boolean;
  token?: string;
  /**
   * When set, every TCP connection (page, channel WebSocket, VNC relay) is accepted only when the
   * process at its other end runs as one of these uids (looked up in /proc/net/tcp as it is
   * accepted; a connection whose owner is not found is refused too), before any byte of it is
   * read. Defence in depth beside the token: a local uid that learns the token still cannot use
   * it. Unset: any local uid may connect (the demo, tests).
   */
  allowedUids?: readonly number[];
  thumbnailIntervalMs?: number;
  log?: (msg: string) => void;
}

export interface WebHost {
  url: string;
  port: number;
  token: string;
  core: SwitcherCore;
  close(): Promise<void>;
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.woff2': 'font/woff2',
};

export const DEFAULT_STATIC_DIR = join(__dirname, '..', 'web');
export const DEFAULT_VM_RUN_DIR = '/run/bulkhead/vms';

function tokenMatches(given: string | null, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The shape of the tokens startWebHost makes: 24 random bytes, base64url. */
const TOKEN_RE = /^[A-Za-z0-9_-]{32}$/;

/**
 * The token in `file` when a web host before this one (same boot: the file is in /run) wrote one,
 * else null (no file, unreadable, or not a token of ours). A restarted web host (a crash, SIGKILL)
 * keeps it: the kiosk's page holds the token in its URL, reconnects by itself, and would be
 * refused for good with a new one (the kiosk reads the file only when it starts).
 */
export function tokenFromEarlierStart(file: string): string | null {
  let fd: number;
  try {
    // Never follows a symlink, never waits on a FIFO put there: such a file is no token of ours.
    fd = openReadOnlyNoWait(file);
  } catch {
    return null;
  }
  try {
    if (!fstatSync(fd).isFile()) return null;
    const buf = Buffer.alloc(33); // a token and one byte more: anything longer is not one
    const n = readSync(fd, buf, 0, buf.length, 0);
    const t = buf.subarray(0, n).toString('latin1');
    return TOKEN_RE.test(t) ? t : null;
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

export async function startWebHost(opts: WebHostOptions = {}): Promise<WebHost> {
  const log = opts.log ?? ((m: string) => console.error(`[switcher] ${m}`));
  const listen = opts.listen ?? '127.0.0.1';
  if (!LOOPBACK_RE.test(listen)) throw new Error(`listen: ${listen} is not a loopback address (127.x.y.z)`);
  if (opts.allowedUids && opts.allowedUids.length === 0)
    throw new Error('allowedUids is empty: no connection could ever be accepted');
  const allowedUids = opts.allowedUids ? new Set(opts.allowedUids) : null;
  const token = opts.token ?? randomBytes(24).toString('base64url');
  const staticDir = opts.staticDir ?? DEFAULT_STATIC_DIR;
  const vmRunDir = opts.vmRunDir ?? DEFAULT_VM_RUN_DIR;
  const ownBus = !opts.bus;
  const bus = opts.bus ?? (await connectBus(opts.busAddress));
  // One 'message' listener per signal subscription: more than Node's default warning limit.
  bus.setMaxListeners(100);
  const client = new BusClient(bus, 30_000);
  const core = new SwitcherCore(client, {
    injectInput: opts.injectInput ?? true,
    vncUrl: (vm) => {
      const id = vmIdFromPath(vm);
      return id !== null ? `/vnc/${encodeURIComponent(id)}?token=${token}` : '';
    },
    thumbnailIntervalMs: opts.thumbnailIntervalMs,
    log,
  });
  await core.start();

  const server: Server = createServer((req, res) => {
    // Whatever a local process (or a guest on user networking, through the host's loopback)
    // sends, the web host answers it and stays up: the kiosk's screen depends on it.
    try {
      serveStatic(req, res, staticDir, listen);
    } catch (e) {
      log(`HTTP ${String(req.method).slice(0, 16)}: ${(e as Error).message}`);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('bad request');
    }
  });
  if (allowedUids) {
    const refusals = refusalLog(log);
    // At 'connection' the socket is established and nothing of it has been read yet: the HTTP
    // parser (attached by the listener before this one) sees data only on a later turn of the
    // event loop, so a socket destroyed here has had no request and no upgrade handled.
    server.on('connection', (socket: Socket) => {
      const why = refusal(socket, allowedUids);
      if (why === null) return;
      // Read before destroy(): a destroyed socket no longer has its ports.
      const line = `refused a connection to port ${socket.localPort ?? '?'} ${why}`;
      socket.destroy();
      refusals(line);
    });
  }
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
  const vncWss = new WebSocketServer({
    noServer: true,
    // noVNC may offer 'binary'; answer it when offered, plain otherwise.
    handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : false),
  });
  let nextClient = 1;

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = requestUrl(req);
    if (!url) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    if (!tokenMatches(url.searchParams.get('token'), token)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    if (url.pathname === '/ws') {
      wss.handleUpgrade(req, socket, head, (ws) => serveChannels(ws, `ws-${nextClient++}`));
      return;
    }
    const vnc = /^\/vnc\/([^/]+)$/.exec(url.pathname);
    if (vnc) {
      const id = decodedOrNull(vnc[1]);
      // The id becomes a file name: only what vm-daemon could have made a VM object of.
      if (!id || id.includes('/') || id === '.' || id === '..' || !core.state.vm(vmPath(id))) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      vncWss.handleUpgrade(req, socket, head, (ws) => proxyVnc(ws, join(vmRunDir, id, 'vnc.sock'), log));
      return;
    }
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });

  function serveChannels(ws: WebSocket, clientId: string): void {
    const send = (f: ServerFrame) => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(f));
    };
    const onPush = (channel: PushChannel, payload: unknown) => send({ push: channel, payload });
    core.on('push', onPush);
    send({ push: 'snapshot', payload: core.state.snapshot() });
    ws.on('message', async (data) => {
      let id = -1;
      try {
        const frame = JSON.parse(String(data)) as { id?: unknown; channel?: unknown; args?: unknown };
        if (!Number.isInteger(frame.id))
          throw new ChannelError('InvalidArgument', 'a request needs an integer id');
        id = frame.id as number;
        const { channel, args } = validateRequest(frame.channel, frame.args);
        const result = await core.handle(channel, args, clientId);
        send({ id, ok: true, result });
      } catch (e) {
        if (e instanceof SyntaxError)
          send({ id, ok: false, error: { name: 'InvalidArgument', message: 'not JSON' } });
        else send({ id, ok: false, error: toFailure(e) });
      }
    });
    ws.on('close', () => {
      core.off('push', onPush);
      core.forgetClient(clientId);
    });
    ws.on('error', () => undefined);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, listen, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const url = `http://${listen}:${port}/?token=${token}`;
  log(
    allowedUids
      ? `listening on ${listen}:${port}: connections only from uid ${[...allowedUids].join(', ')}`
      : `listening on ${listen}:${port}: connections from any local uid (no --allow-uid)`,
  );
  return {
    url,
    port,
    token,
    core,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      for (const c of vncWss.clients) c.terminate();
      wss.close();
      vncWss.close();
      await new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections?.();
      await core.stop();
      if (ownBus) bus.disconnect();
    },
  };
}

/** Why `socket` may not connect (null: it may), for the log: who it is and what is wrong. */
function refusal(socket: Socket, allowedUids: ReadonlySet<number>): string | null {
  const from = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
  let uid: number | null;
  try {
    uid = peerUid(socket);
  } catch (e) {
    return `from ${from}: its owner cannot be looked up (${(e as Error).message})`;
  }
  if (uid === null) return `from ${from}: no process here holds its socket (not in /proc/net/tcp)`;
  if (allowedUids.has(uid)) return null;
  return `from uid ${uid} (${from}): not an allowed uid (${[...allowedUids].join(', ')})`;
}

/**
 * A log for refused connections that a local uid opening connections in a loop cannot flood: at
 * most one line a second; the lines left out are counted in the next one.
 */
function refusalLog(log: (m: string) => void): (line: string) => void {
  let last = 0;
  let unlogged = 0;
  return (line) => {
    const now = Date.now();
    if (now - last < 1000) {
      unlogged++;
      return;
    }
    last = now;
    log(unlogged ? `${line} (and ${unlogged} more refused since the last such line)` : line);
    unlogged = 0;
  };
}

/**
 * 127.x.y.z: the web host is never reachable from another machine. Also what lets allowedUids
 * work: only a loopback connection has its peer's socket, and its owner, in this machine's
 * /proc/net/tcp.
 */
const LOOPBACK_RE =
  /^127\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)$/;

function serveStatic(req: IncomingMessage, res: ServerResponse, dir: string, listen: string): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405).end();
    return;
  }
  const url = requestUrl(req);
  const pathname = url && decodedOrNull(url.pathname);
  if (pathname === null) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('bad request');
    return;
  }
  const rel = pathname === '/' ? 'index.html' : pathname.slice(1);
  const file = normalize(join(dir, rel));
  if (!file.startsWith(normalize(dir) + sep) || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    return;
  }
  res.writeHead(200, {
    'content-type': MIME[extname(file)] ?? 'application/octet-stream',
    'cache-control': 'no-store',
    // The renderer only talks to its own origin.
    'content-security-policy': `default-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws://${listen}:*; style-src 'self' 'unsafe-inline'`,
    'x-content-type-options': 'nosniff',
  });
  if (req.method === 'HEAD') res.end();
  else
    createReadStream(file)
      .on('error', () => res.destroy()) // gone or unreadable since the stat: no crash, no half answer
      .pipe(res);
}

/** The request's URL, or null when it is not one (`//[`: an invalid host). */
function requestUrl(req: IncomingMessage): URL | null {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return null;
  }
}

/** A percent-decoded URL part, or null when its escapes are malformed (`%E0%A4%A`). */
function decodedOrNull(part: string): string | null {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

/**
 * A noVNC WebSocket relayed to the VM's VNC unix socket. The server's bytes pass as they are; the
 * client's pass through RfbClientFilter: the display only, never input (no key, pointer or
 * clipboard message reaches the VM this way), and a connection that sends anything else is closed.
 */
function proxyVnc(ws: WebSocket, socketPath: string, log: (m: string) => void): void {
  const sock = netConnect(socketPath);
  const filter = new RfbClientFilter();
  let dropLogged = false; // once per connection: a page spamming input must not flood the log
  sock.on('data', (d) => ws.readyState === ws.OPEN && ws.send(d));
  sock.on('error', (e) => {
    log(`VNC ${socketPath}: ${e.message}`);
    ws.close(1011, 'VNC display unavailable');
  });
  sock.on('close', () => ws.readyState === ws.OPEN && ws.close(1000, 'VNC display closed'));
  ws.on('message', (d: Buffer | ArrayBuffer | Buffer[]) => {
    const chunk = Buffer.isBuffer(d) ? d : Array.isArray(d) ? Buffer.concat(d) : Buffer.from(d);
    try {
      const { forward, dropped } = filter.push(chunk);
      if (dropped.length && !dropLogged) {
        dropLogged = true;
        log(`VNC ${socketPath}: dropping input messages from the viewer (types ${dropped.join(', ')})`);
      }
      if (forward.length) sock.write(forward);
    } catch (e) {
      // A protocol error, or a bug in the filter: either way this connection ends, not the host.
      const what = e instanceof RfbProtocolError ? e.message : `relay error: ${(e as Error).message}`;
      log(`VNC ${socketPath}: ${what}; closing the connection`);
      sock.destroy();
      ws.close(1008, 'RFB message not allowed');
    }
  });
  ws.on('close', () => sock.destroy());
  ws.on('error', () => sock.destroy());
}

function parseArgs(argv: string[]): WebHostOptions & { help?: boolean; tokenFile?: string } {
  const o: WebHostOptions & { help?: boolean; tokenFile?: string } = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--port') o.port = Number(val());
    else if (a === '--listen') o.listen = val();
    else if (a === '--bus') o.busAddress = val();
    else if (a === '--vm-run-dir') o.vmRunDir = val();
    else if (a === '--static-dir') o.staticDir = val();
    else if (a === '--no-inject-input') o.injectInput = false;
    else if (a === '--token-file') o.tokenFile = val();
    else if (a === '--allow-uid') {
      const user = val();
      const uid = uidOfUser(user, /^\d+$/.test(user) ? '' : readFileSync('/etc/passwd', 'utf8'));
      if (uid === null) throw new Error(`--allow-uid ${user}: no such user in /etc/passwd`);
      if (uid > 0xfffffffe) throw new Error(`--allow-uid ${user}: not a uid`);
      o.allowedUids = [...(o.allowedUids ?? []), uid];
    } else if (a === '--help' || a === '-h') o.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (o.port !== undefined && !(Number.isInteger(o.port) && o.port >= 0 && o.port < 65536))
    throw new Error(`--port must be 0-65535`);
  return o;
}

if (require.main === module) {
  let o: ReturnType<typeof parseArgs>;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`web-host: ${(e as Error).message}`);
    process.exit(2);
  }
  if (o.help) {
    console.log(
      'usage: web-host.js [--port N] [--listen 127.x.y.z] [--bus ADDRESS] [--vm-run-dir DIR] [--static-dir DIR] [--no-inject-input] [--token-file FILE] [--allow-uid UID|USER ...]',
    );
    process.exit(0);
  }
  if (o.tokenFile) o.token = tokenFromEarlierStart(o.tokenFile) ?? undefined;
  startWebHost(o).then(
    (h) => {
      // The kiosk reads the per-boot token from this file. In the image the kiosk runs as another
      // user of our group (bulkhead-ui), without our VNC access: readable by the group, by no one else.
      // Temp file and rename: a symlink or FIFO left at that name is replaced, not written through.
      if (o.tokenFile) writeFileAtomic(o.tokenFile, h.token, 0o640, { durable: false });
      // With a token file, the token's readers read it there; stdout goes to the journal in the
      // image, which is not the kiosk's to read and must not carry the key to the switcher.
      console.log(
        o.tokenFile
          ? `SWITCHER-URL ${h.url.replace(/\?token=.*$/, '')} (token in ${o.tokenFile})`
          : `SWITCHER-URL ${h.url}`,
      );
      const stop = () => void h.close().finally(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    },
    (e) => {
      console.error(`web-host: ${(e as Error).message}`);
      process.exit(1);
    },
  );
}
