import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeFinding } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { fuzzTargets } from './config.fuzz';

// Fixed seeds: the same inputs every run (the random long runs are `npm run fuzz`).
for (const [i, t] of fuzzTargets.entries()) {
  test(`fuzz (fixed seed): ${t.name}`, async () => {
    const runs = t.name.includes('special') ? 200 : t.name.includes('dir') ? 300 : 3000;
    const r = await t.run({ seed: 0x5eed + i, numRuns: runs });
    assert.equal(r.finding, null, r.finding ? describeFinding(t.name, r.finding) : '');
  });
}
