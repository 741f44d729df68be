/**
 * Issue 19: an inhibitor lock never outlives the vm-daemon that took it. vm-daemon's unit has
 * KillMode=process (QEMUs outlive a restart), so a lock holder that survived a SIGKILLed daemon
 * would block the power key and delay every sleep for good. Real processes: a stand-in daemon
 * takes the lock through a fake systemd-inhibit (which, like the real one, runs the command after
 * `--` and ends when it ends) and is SIGKILLed by pid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { processAlive, waitFor } from '../testing/daemon-process';
import { InhibitorLock } from '@bulkhead/dbus';

function fakeSystemdInhibit(dir: string): string {
  const file = join(dir, 'fake-systemd-inhibit');
  writeFileSync(
    file,
    `#!/bin/sh\necho "$@" > "${join(dir, 'args')}"\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n`,
  );
  chmodSync(file, 0o755);
  return file;
}

const log = { warn: () => undefined, info: () => undefined };

test('the lock asks logind for what and how, and release() ends its holder', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'inhibit-'));
  try {
    const lock = new InhibitorLock({
      what: 'handle-power-key:handle-lid-switch',
      mode: 'block',
      who: 'test',
      why: 'test',
      bus: 'system',
      log,
      command: fakeSystemdInhibit(dir),
    });
    lock.take();
    const pid = await waitFor('lock holder', () => lock.pid);
    await waitFor('args written', () => readFileSync(join(dir, 'args'), 'utf8').includes('--'));
    assert.match(
      readFileSync(join(dir, 'args'), 'utf8'),
      /--what=handle-power-key:handle-lid-switch --mode=block /,
    );
    lock.release();
    await waitFor('holder gone', () => !processAlive(pid));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a SIGKILLed vm-daemon leaves no inhibitor lock behind', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'inhibit-'));
  try {
    const daemon = spawn(
      process.execPath,
      [
        '-e',
        `const { InhibitorLock } = require(${JSON.stringify(require.resolve('@bulkhead/dbus'))});
         const lock = new InhibitorLock({ what: 'sleep', mode: 'delay', who: 'test', why: 'test', bus: 'system',
           log: { warn() {}, info() {} }, command: ${JSON.stringify(fakeSystemdInhibit(dir))} });
         lock.take();
         const t = setInterval(() => { if (lock.pid) { console.log(lock.pid); clearInterval(t); } }, 10);
         setInterval(() => {}, 60000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const holder = await new Promise<number>((resolve) =>
      createInterface({ input: daemon.stdout! }).once('line', (l) => resolve(Number(l))),
    );
    assert.ok(processAlive(holder));
    process.kill(daemon.pid!, 'SIGKILL');
    await waitFor('the lock holder ended with its daemon', () => !processAlive(holder));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
