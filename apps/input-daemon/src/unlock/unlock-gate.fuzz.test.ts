import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeFinding } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { fuzzTargets } from './unlock-gate.fuzz';

for (const [i, t] of fuzzTargets.entries()) {
  test(`fuzz (fixed seed): ${t.name}`, async () => {
    const r = await t.run({ seed: 0x10c + i, numRuns: 1000 });
    assert.equal(r.finding, null, r.finding ? describeFinding(t.name, r.finding) : '');
  });
}
