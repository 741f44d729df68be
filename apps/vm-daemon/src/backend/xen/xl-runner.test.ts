import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecXlRunner, xl } from './xl-runner';
import { processAlive } from '../../testing/daemon-process';

// A fake `xl` run for real: `xl list -l` writes its pid and hangs (a slow list under load).
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'xl-runner-test-'));
  writeFileSync(join(dir, 'xl'), `#!/bin/sh\necho $$ > "${dir}/pid"\nexec sleep 30\n`);
  chmodSync(join(dir, 'xl'), 0o755);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('a cancelled command is killed at once and rejected as cancelled; one cancelled before it starts never runs', async () => {
  const runner = new ExecXlRunner(dir);
  const abort = new AbortController();
  const t0 = Date.now();
  const listing = xl(runner, ['list', '-l'], 20_000, abort.signal);
  for (let i = 0; i < 100 && !readFileSafe(join(dir, 'pid')); i++)
    await new Promise((r) => setTimeout(r, 20));
  const pid = Number(readFileSafe(join(dir, 'pid')));
  assert.ok(pid > 0 && processAlive(pid), 'the command runs');
  abort.abort();
  await assert.rejects(listing, /xl list -l cancelled \(killed\)/);
  assert.ok(Date.now() - t0 < 5000);
  for (let i = 0; i < 100 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(processAlive(pid), false, 'the command was killed');
  rmSync(join(dir, 'pid'), { force: true });
  await assert.rejects(runner.run('xl', ['list', '-l'], 20_000, abort.signal), /cancelled/);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(readFileSafe(join(dir, 'pid')), '', 'never started');
});

function readFileSafe(p: string): string {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return '';
  }
}
