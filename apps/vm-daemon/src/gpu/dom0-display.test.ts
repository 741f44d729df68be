import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BulkheadError } from '@bulkhead/contract';
import { SystemdKioskDisplay } from './dom0-display';

/** A systemctl stand-in (a real program run by the real code path) that logs its arguments. */
function fakeSystemctl(body: string) {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-systemctl-'));
  const bin = join(dir, 'systemctl-fake');
  const log = join(dir, 'log');
  writeFileSync(bin, `#!/bin/sh\necho "$@" >> ${log}\n${body}\n`);
  chmodSync(bin, 0o755);
  return {
    bin,
    calls: () => readFileSync(log, 'utf8').trim().split('\n'),
    done: () => rmSync(dir, { recursive: true }),
  };
}

test('the kiosk display: release stops the unit, reclaim starts it', async () => {
  const s = fakeSystemctl('exit 0');
  try {
    const d = new SystemdKioskDisplay({ systemctl: s.bin });
    await d.release();
    await d.reclaim();
    assert.deepEqual(s.calls(), ['stop bulkhead-kiosk.service', 'start bulkhead-kiosk.service']);
  } finally {
    s.done();
  }
});

test("the kiosk display: systemctl's failure is a named error with its words and the unit", async () => {
  const s = fakeSystemctl('echo "Job for bulkhead-kiosk.service failed." >&2; exit 1');
  try {
    const d = new SystemdKioskDisplay({ systemctl: s.bin });
    await assert.rejects(
      d.reclaim(),
      (e: BulkheadError) =>
        e.errorName === 'BackendFailed' &&
        e.message === 'systemctl start bulkhead-kiosk.service failed: Job for bulkhead-kiosk.service failed.',
    );
  } finally {
    s.done();
  }
});

test('the kiosk display: a systemctl that hangs is cut off as Timeout', async () => {
  const s = fakeSystemctl('sleep 10');
  try {
    const d = new SystemdKioskDisplay({ systemctl: s.bin, timeoutMs: 200 });
    await assert.rejects(
      d.release(),
      (e: BulkheadError) => e.errorName === 'Timeout' && /within 200 ms/.test(e.message),
    );
  } finally {
    s.done();
  }
});

test('the kiosk display: a release not yet followed by a reclaim is marked in the run dir, for the next daemon after a kill', async () => {
  const s = fakeSystemctl('exit 0');
  const run = mkdtempSync(join(tmpdir(), 'vmd-kiosk-mark-'));
  const marker = join(run, 'vms', '.kiosk-stopped-for-gpu');
  try {
    const d = new SystemdKioskDisplay({ systemctl: s.bin, releasedMarker: marker });
    assert.equal(d.releasedEarlier(), false);
    await d.release();
    // The daemon is SIGKILLed here; its successor reads the same run dir.
    const next = new SystemdKioskDisplay({ systemctl: s.bin, releasedMarker: marker });
    assert.equal(next.releasedEarlier(), true);
    await next.reclaim();
    assert.equal(next.releasedEarlier(), false);
    assert.deepEqual(s.calls(), ['stop bulkhead-kiosk.service', 'start bulkhead-kiosk.service']);
  } finally {
    s.done();
    rmSync(run, { recursive: true });
  }
});
