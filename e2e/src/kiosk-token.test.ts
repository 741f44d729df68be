/**
 * The kiosk (dom0-rootfs/overlay/usr/local/lib/bulkhead/kiosk.js) must never put the web host's
 * token on a command line: /proc/<pid>/cmdline of cage and Chromium is readable by every local
 * uid, and the token is all the web host asks of a WebSocket (the switcher's channels: Switch,
 * Start/Stop, USB; every VM's screen). Run here with a fake cage on PATH that records its argv
 * and answers the DevTools pipe (fds 3 and 4) as Chromium would.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const KIOSK = join(
  __dirname,
  '..',
  '..',
  'dom0-rootfs',
  'overlay',
  'usr',
  'local',
  'lib',
  'bulkhead',
  'kiosk.js',
);

/** A fake cage: records argv, then plays Chromium's browser target on the DevTools pipe. */
const FAKE_CAGE = `#!${process.execPath}
'use strict';
const fs = require('node:fs');
const dir = process.env.FAKE_CAGE_DIR;
fs.writeFileSync(dir + '/argv.json', JSON.stringify(process.argv.slice(2)));
const pages = [{ targetId: 'first', type: 'page', url: process.argv.at(-1), title: '' }];
const out = fs.createWriteStream(null, { fd: 4 });
const log = (m) => fs.appendFileSync(dir + '/devtools.jsonl', JSON.stringify(m) + '\\n');
let buf = '';
fs.createReadStream(null, { fd: 3, encoding: 'utf8' }).on('data', (d) => {
  buf += d;
  let end;
  while ((end = buf.indexOf('\\0')) >= 0) {
    const m = JSON.parse(buf.slice(0, end));
    buf = buf.slice(end + 1);
    log(m);
    let result = {};
    if (m.method === 'Target.getTargets') result = { targetInfos: pages };
    if (m.method === 'Target.createTarget') {
      const targetId = 'page' + pages.length;
      pages.push({ targetId, type: 'page', url: m.params.url, title: 'Bulkhead' });
      result = { targetId };
    }
    if (m.method === 'Target.closeTarget') {
      const i = pages.findIndex((p) => p.targetId === m.params.targetId);
      if (i >= 0) pages.splice(i, 1);
      result = { success: i >= 0 };
    }
    if (m.method === 'Target.attachToTarget') result = { sessionId: 's-' + m.params.targetId };
    out.write(JSON.stringify({ id: m.id, result }) + '\\0');
  }
});
`;

test('the kiosk starts Chromium without the web host token on its command line and hands the URL over the DevTools pipe', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiosk-token-'));
  const token = 'A'.repeat(16) + 'b_-'.repeat(5) + 'z';
  try {
    writeFileSync(join(dir, 'token'), token);
    writeFileSync(join(dir, 'cage'), FAKE_CAGE);
    chmodSync(join(dir, 'cage'), 0o755);
    const kiosk = spawn(process.execPath, [KIOSK], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: {
        ...process.env,
        PATH: `${dir}:${process.env.PATH}`,
        FAKE_CAGE_DIR: dir,
        KIOSK_TOKEN_FILE: join(dir, 'token'),
        KIOSK_MEMORY_DIR: dir,
      },
    });
    let err = '';
    kiosk.stderr.on('data', (d) => (err += d));
    const sent = () =>
      existsSync(join(dir, 'devtools.jsonl'))
        ? readFileSync(join(dir, 'devtools.jsonl'), 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as { method: string; params: { url?: string; targetId?: string } })
        : [];
    const deadline = Date.now() + 10_000;
    while (!sent().some((m) => m.method === 'Target.closeTarget') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    kiosk.kill('SIGTERM');
    const argv = JSON.parse(readFileSync(join(dir, 'argv.json'), 'utf8')) as string[];
    assert.ok(argv.includes('chromium'), `cage was asked to run Chromium: ${argv.join(' ')}`);
    assert.ok(!argv.some((a) => a.includes(token)), `the token is on cage's command line: ${argv.join(' ')}`);
    const opened = sent().filter((m) => m.method === 'Target.createTarget');
    assert.deepEqual(
      opened.map((m) => m.params.url),
      [`http://127.0.0.2:8080/?token=${token}`],
      `the switcher's page, once, over the pipe (kiosk said: ${err})`,
    );
    assert.ok(
      sent().some((m) => m.method === 'Target.closeTarget' && m.params.targetId === 'first'),
      'the blank first page is closed',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
