import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeFinding } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { fuzzTargets } from './rfb-filter.fuzz';

for (const [i, t] of fuzzTargets.entries()) {
  test(`fuzz (fixed seed): ${t.name}`, async () => {
    const r = await t.run({ seed: 0x7fb + i, numRuns: 2000 });
    assert.equal(r.finding, null, r.finding ? describeFinding(t.name, r.finding) : '');
  });
}
