/**
 * Stopping the real vm-daemon (dist/main.js) while its bus goes away too, as `npm start`'s Ctrl+C
 * does (the terminal's SIGINT reaches the demo, its private bus and every daemon at once): the
 * daemon exits 0, and the bus closing under a stop already running is said as what it is, not as
 * an error ("bus connection lost" at error level sent people looking for a fault).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPrivateBus } from '@bulkhead/dbus';
import { spawnDaemon } from './testing/daemon-process';

test('SIGINT with the bus going away at the same time: exit 0, no error logged for the bus', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-shutdown-'));
  const bus = await startPrivateBus({ mode: 'open' });
  try {
    const configDir = join(root, 'vms');
    mkdirSync(configDir);
    const d = await spawnDaemon({
      bus: bus.address,
      configDir,
      runDir: join(root, 'run'),
      stateDir: join(root, 'state'),
      args: ['--no-autostart'],
    });
    const exited = new Promise<number | null>((resolve) => d.child.once('exit', (code) => resolve(code)));
    d.child.kill('SIGINT');
    await bus.stop();
    // A stop waiting on calls to the dead bus (each until its own timeout) would outlast this.
    const code = await Promise.race([
      exited,
      new Promise<string>((r) => setTimeout(() => r('still running 15 s after SIGINT'), 15_000).unref()),
    ]);
    assert.equal(code, 0, d.log());
    assert.doesNotMatch(d.log(), / error: .*bus/i, d.log());
    assert.match(d.log(), /SIGINT: /);
  } finally {
    await bus.stop().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
});
