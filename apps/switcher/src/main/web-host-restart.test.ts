/**
 * The web host as the image runs it (its CLI, --token-file), SIGKILLed and started again: the
 * kiosk's page keeps the token it was loaded with and reconnects with it, so a restarted web host
 * must accept it (one token per boot, in /run); a token file that is not one of ours is replaced.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startPrivateBus, type PrivateBus } from '@bulkhead/dbus';
import { tokenFromEarlierStart } from './web-host';

let bus: PrivateBus;
let dir: string;
before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
  dir = mkdtempSync(join(tmpdir(), 'web-host-token-'));
});
after(async () => {
  await bus?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Starts the web host's CLI; resolves with the URL it prints, and the process. */
function startCli(tokenFile: string): Promise<{ url: URL; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [join(__dirname, 'web-host.js'), '--port', '0', '--bus', bus.address, '--token-file', tokenFile],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /SWITCHER-URL (\S+)/.exec(out);
      if (m) resolve({ url: new URL(m[1]), child });
    });
    child.once('exit', (code) => reject(new Error(`web host exited (${code}) before printing its URL`)));
  });
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((r) => {
    child.once('exit', () => r());
    child.kill('SIGKILL');
  });
}

/** Whether the page's WebSocket (at `port`, with `token`) is let in. */
function wsOpens(port: string, token: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${encodeURIComponent(token)}`);
    ws.once('open', () => (ws.close(), resolve(true)));
    ws.once('unexpected-response', () => resolve(false));
    ws.once('error', () => resolve(false));
  });
}

test("a web host SIGKILLed and started again lets the kiosk page's token in (the page reconnects with it)", async () => {
  const file = join(dir, 'token');
  const first = await startCli(file);
  const token = readFileSync(file, 'utf8');
  assert.match(token, /^[A-Za-z0-9_-]{32}$/, 'written for the kiosk');
  // Printed to stdout (the journal, in the image): the URL, never the token.
  assert.equal(first.url.search, '', `no token in the printed URL: ${first.url.href}`);
  await kill(first.child);
  const second = await startCli(file);
  try {
    assert.equal(readFileSync(file, 'utf8'), token, 'the same token');
    assert.equal(await wsOpens(second.url.port, token), true, "the page's token is let in");
    assert.equal(
      await wsOpens(
        second.url.port,
        token.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')),
      ),
      false,
    );
  } finally {
    await kill(second.child);
  }
});

test('a token file that is not one of ours (garbage, empty, too short) gets a new random token', async () => {
  for (const junk of ['', 'x', 'a'.repeat(31), `${'a'.repeat(32)}\n`, '../../../../etc/passwd']) {
    const file = join(dir, 'junk');
    writeFileSync(file, junk);
    assert.equal(tokenFromEarlierStart(file), null, JSON.stringify(junk));
  }
  assert.equal(tokenFromEarlierStart(join(dir, 'absent')), null);
  const file = join(dir, 'junk');
  writeFileSync(file, 'not a token');
  const h = await startCli(file);
  try {
    assert.match(readFileSync(file, 'utf8'), /^[A-Za-z0-9_-]{32}$/);
    assert.notEqual(readFileSync(file, 'utf8'), 'not a token');
  } finally {
    await kill(h.child);
  }
});

test("a FIFO or a symlink at the token file's name: no wait, no token read through it, replaced by the web host's own file", async () => {
  const target = join(dir, 'elsewhere');
  writeFileSync(target, 'a'.repeat(32)); // a well-formed token, but not in the token file itself
  const link = join(dir, 'token-link');
  symlinkSync(target, link);
  assert.equal(tokenFromEarlierStart(link), null, 'a symlink is not followed');
  const fifo = join(dir, 'token-fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  // With no writer, a blocking open of a FIFO would hold the web host's start for good.
  assert.equal(tokenFromEarlierStart(fifo), null, 'a FIFO is no token');
  for (const file of [link, fifo]) {
    const h = await startCli(file);
    try {
      assert.ok(lstatSync(file).isFile(), `${file} is now a regular file`);
      const token = readFileSync(file, 'utf8');
      assert.match(token, /^[A-Za-z0-9_-]{32}$/);
      assert.notEqual(token, 'a'.repeat(32));
      assert.equal(await wsOpens(h.url.port, token), true, "the file's token is the web host's");
      assert.equal(readFileSync(target, 'utf8'), 'a'.repeat(32), "the symlink's target is not written");
    } finally {
      await kill(h.child);
    }
  }
});
