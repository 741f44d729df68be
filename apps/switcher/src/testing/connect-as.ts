/**
 * TCP clients run as another uid (needs root to switch), for the web host's peer-uid check: a
 * child node process opens the connection, so the kernel lists its socket under that uid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { lastJsonLine, runNodeAs } from '@bulkhead/dbus/dist/testing/run-as';

export const NOBODY = { uid: 65534, gid: 65534 };

/** What the server answered: its status line, or how the connection ended without one. */
export interface RequestOutcome {
  status: string | null;
  /** 'closed' (end without an answer) or the socket error's code (ECONNRESET, ECONNREFUSED). */
  ended?: string;
}

// Run by the child: one raw HTTP request (a WebSocket upgrade when asked), the status line back.
const REQUEST_SCRIPT = `
const [host, port, path, upgrade] = process.argv.slice(1);
const sock = require('node:net').connect(Number(port), host, () => {
  const extra = upgrade === 'ws'
    ? 'Connection: Upgrade\\r\\nUpgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n'
    : 'Connection: close\\r\\n';
  sock.write('GET ' + path + ' HTTP/1.1\\r\\nHost: ' + host + '\\r\\n' + extra + '\\r\\n');
});
let got = '';
let done = false;
const report = (o) => { if (!done) { done = true; console.log(JSON.stringify(o)); sock.destroy(); } };
sock.on('data', (d) => { got += d; if (got.includes('\\r\\n')) report({ status: got.split('\\r\\n')[0] }); });
sock.on('error', (e) => report({ status: null, ended: e.code || e.message }));
sock.on('close', () => report({ status: null, ended: 'closed' }));
`;

/** One HTTP request (`ws`: a WebSocket upgrade) to host:port/path made by a process of `ids`. */
export function requestAs(
  ids: { uid: number; gid: number } | null,
  host: string,
  port: number,
  path: string,
  kind: 'http' | 'ws' = 'http',
): Promise<RequestOutcome> {
  return runNodeAs(ids, ['-e', REQUEST_SCRIPT, host, String(port), path, kind]).then((run) =>
    lastJsonLine<RequestOutcome>(run, `the request as ${ids?.uid ?? 'us'}`),
  );
}

// Run by the child: a connection held open until stdin closes.
const HOLD_SCRIPT = `
const [host, port] = process.argv.slice(1);
const sock = require('node:net').connect(Number(port), host, () => console.log('CONNECTED ' + sock.localPort));
sock.on('error', (e) => { console.log('ERROR ' + e.message); process.exit(1); });
process.stdin.on('end', () => process.exit(0)).resume();
`;

/** A connection to host:port held open by a process of `ids`; `close` ends the process. */
export function holdConnectionAs(
  ids: { uid: number; gid: number },
  host: string,
  port: number,
): Promise<{ localPort: number; close(): void; child: ChildProcess }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', HOLD_SCRIPT, host, String(port)], {
      stdio: ['pipe', 'pipe', 'inherit'],
      ...ids,
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /CONNECTED (\d+)/.exec(out);
      if (m) resolve({ localPort: Number(m[1]), close: () => child.stdin.end(), child });
      else if (out.includes('ERROR')) reject(new Error(out));
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`the connecting process exited (${code}): ${out}`)));
  });
}
