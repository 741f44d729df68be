/**
 * The web host's peer-uid check (allowedUids, --allow-uid): the token alone does not let another
 * local uid in. Tests run as root; `nobody`'s requests come from a child process running as nobody.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startPrivateBus, type PrivateBus } from '@bulkhead/dbus';
import { NOBODY, requestAs } from '../testing/connect-as';
import { startWebHost, type WebHost } from './web-host';

const US = { uid: process.getuid!(), gid: process.getgid!() };
let bus: PrivateBus;

before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
});
after(async () => {
  await bus?.stop();
});

async function withHost(
  allowedUids: number[] | undefined,
  body: (h: WebHost, logs: string[]) => Promise<void>,
): Promise<void> {
  const logs: string[] = [];
  const h = await startWebHost({
    busAddress: bus.address,
    listen: '127.0.0.2',
    allowedUids,
    log: (m) => logs.push(m),
  });
  try {
    await body(h, logs);
  } finally {
    await h.close();
  }
}

const page = (h: WebHost) => `/?token=${h.token}`;
const channel = (h: WebHost) => `/ws?token=${h.token}`;

/** Our own WebSocket to the channel map: resolves once open, rejects when refused. */
function openChannel(h: WebHost): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.2:${h.port}${channel(h)}`);
    ws.once('open', () => {
      ws.close();
      resolve();
    });
    ws.once('error', reject);
  });
}

const refused = (r: { status: string | null; ended?: string }) => r.status === null;

test('without allowedUids (the demo): any local uid with the token gets in; the control for the tests below', async () => {
  await withHost(undefined, async (h, logs) => {
    assert.match((await requestAs(NOBODY, '127.0.0.2', h.port, page(h))).status ?? '', /^HTTP\/1\.1 200/);
    assert.match(
      (await requestAs(NOBODY, '127.0.0.2', h.port, channel(h), 'ws')).status ?? '',
      /^HTTP\/1\.1 101/,
    );
    assert.ok(
      logs.some((l) => /connections from any local uid/.test(l)),
      logs.join('\n'),
    );
  });
});

test('allowing only our uid: our page and channel work; nobody with the right token is refused, HTTP and WebSocket alike, and the log names uid and port, never the token', async () => {
  await withHost([US.uid], async (h, logs) => {
    assert.match((await requestAs(null, '127.0.0.2', h.port, page(h))).status ?? '', /^HTTP\/1\.1 200/);
    assert.equal((await fetch(h.url)).status, 200);
    await openChannel(h);

    const http = await requestAs(NOBODY, '127.0.0.2', h.port, page(h));
    assert.ok(refused(http), `nobody's page request: ${JSON.stringify(http)}`);
    const ws = await requestAs(NOBODY, '127.0.0.2', h.port, channel(h), 'ws');
    assert.ok(refused(ws), `nobody's channel upgrade: ${JSON.stringify(ws)}`);
    // Still serving us after refusing nobody.
    assert.equal((await fetch(h.url)).status, 200);

    const refusals = logs.filter((l) => /^refused a connection/.test(l));
    assert.ok(refusals.length >= 1, logs.join('\n'));
    assert.match(
      refusals[0],
      new RegExp(
        `^refused a connection to port ${h.port} from uid ${NOBODY.uid} \\(127\\.0\\.0\\.1:\\d+\\): not an allowed uid \\(${US.uid}\\)$`,
      ),
    );
    for (const l of logs) assert.ok(!l.includes(h.token), `the token in the log: ${l}`);
  });
});

test('allowing only nobody: our own requests are refused and nobody is let in (the check looks at the peer, not at us)', async () => {
  await withHost([NOBODY.uid], async (h) => {
    assert.ok(refused(await requestAs(null, '127.0.0.2', h.port, page(h))));
    assert.ok(refused(await requestAs(null, '127.0.0.2', h.port, channel(h), 'ws')));
    await assert.rejects(openChannel(h));
    assert.match((await requestAs(NOBODY, '127.0.0.2', h.port, page(h))).status ?? '', /^HTTP\/1\.1 200/);
    assert.match(
      (await requestAs(NOBODY, '127.0.0.2', h.port, channel(h), 'ws')).status ?? '',
      /^HTTP\/1\.1 101/,
    );
  });
});

test('refusals in a burst are one log line a second; the next line counts the ones left out', async () => {
  await withHost([US.uid], async (h, logs) => {
    await Promise.all([1, 2, 3].map(() => requestAs(NOBODY, '127.0.0.2', h.port, page(h))));
    await new Promise((r) => setTimeout(r, 1100));
    await requestAs(NOBODY, '127.0.0.2', h.port, page(h));
    const refusals = logs.filter((l) => /^refused a connection/.test(l));
    // Three processes started together may still land more than a second apart on a busy machine.
    assert.ok(refusals.length >= 2 && refusals.length <= 4, refusals.join('\n'));
    if (refusals.length === 2) assert.match(refusals[1], /\(and 2 more refused since the last such line\)$/);
  });
});

test('allowedUids empty is refused at start: nothing could ever connect', async () => {
  await assert.rejects(
    startWebHost({ busAddress: bus.address, allowedUids: [], log: () => undefined }),
    /allowedUids is empty/,
  );
});

/** The CLI with `args`: its URL once printed, else its exit status and stderr. */
function runCli(args: string[]): Promise<{ url?: URL; code?: number | null; err: string; stop(): void }> {
  const child = spawn(
    process.execPath,
    [join(__dirname, 'web-host.js'), '--port', '0', '--listen', '127.0.0.2', '--bus', bus.address, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const stop = () => child.kill('SIGKILL');
  return new Promise((resolve) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /SWITCHER-URL (\S+)/.exec(out);
      if (m) resolve({ url: new URL(m[1]), err, stop });
    });
    // 'close', not 'exit': its stderr is read to the end by then.
    child.once('close', (code) => resolve({ code, err, stop }));
  });
}

test('--allow-uid takes a user name (from /etc/passwd) or a number, repeatable; an unknown name stops the web host', async () => {
  const cli = await runCli(['--allow-uid', 'nobody', '--allow-uid', '4000000']);
  try {
    assert.ok(cli.url, cli.err);
    const port = Number(cli.url.port);
    const path = `/?token=${cli.url.searchParams.get('token')}`;
    assert.match((await requestAs(NOBODY, '127.0.0.2', port, path)).status ?? '', /^HTTP\/1\.1 200/);
    assert.ok(refused(await requestAs(null, '127.0.0.2', port, path)));
  } finally {
    cli.stop();
  }
  const bad = await runCli(['--allow-uid', 'no-such-user-here']);
  assert.equal(bad.code, 2, bad.err);
  assert.match(bad.err, /--allow-uid no-such-user-here: no such user/);
});
