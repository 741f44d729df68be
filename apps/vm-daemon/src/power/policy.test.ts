/** Issue 19: the power policy file is validated like a VM file — named errors, nothing half-applied. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_POWER_POLICY, loadPowerPolicy, parsePowerPolicy } from './policy';
import { buttonEvents, hasCapability, INPUT_EVENT_BYTES } from './acpi-buttons';

const F = '/etc/bulkhead/power.json';

test('a valid policy file is applied; fields left out keep their defaults', () => {
  const r = parsePowerPolicy(F, JSON.stringify({ lid: 'lock', critical: 'hibernate', lowPercent: 25 }));
  assert.ok(r.ok);
  assert.deepEqual(r.policy, { ...DEFAULT_POWER_POLICY, lid: 'lock', critical: 'hibernate', lowPercent: 25 });
});

test('every bad field is an error naming the file and the field', () => {
  const cases: Array<[unknown, string, RegExp]> = [
    [{ lid: 'sleep' }, 'lid', /one of suspend \| lock \| nothing, got "sleep"/],
    [{ powerKey: 1 }, 'powerKey', /one of suspend \| lock \| nothing, got 1/],
    [{ critical: 'lock' }, 'critical', /one of suspend \| hibernate \| nothing/],
    [{ lowPercent: 0 }, 'lowPercent', /whole number from 1 to 100, got 0/],
    [{ criticalPercent: 7.5 }, 'criticalPercent', /whole number/],
    [{ lowPercent: 5, criticalPercent: 5 }, 'criticalPercent', /below lowPercent \(5\)/],
    [{ lidd: 'lock' }, 'lidd', /unknown field/],
    [[], '(file)', /must be a JSON object, got an array/],
  ];
  for (const [value, field, reason] of cases) {
    const r = parsePowerPolicy(F, JSON.stringify(value));
    assert.ok(!r.ok, JSON.stringify(value));
    assert.equal(r.error.file, F);
    assert.equal(r.error.field, field);
    assert.match(r.error.reason, reason);
  }
  const bad = parsePowerPolicy(F, '{"lid": ');
  assert.ok(!bad.ok);
  assert.match(bad.error.reason, /not valid JSON/);
});

test('loading: no file = defaults; a bad or unsafe file = defaults and its error, nothing half-applied', () => {
  const dir = mkdtempSync(join(tmpdir(), 'power-policy-'));
  try {
    assert.deepEqual(loadPowerPolicy(join(dir, 'none.json')), {
      policy: { ...DEFAULT_POWER_POLICY },
      error: null,
    });
    const file = join(dir, 'power.json');
    writeFileSync(file, JSON.stringify({ lid: 'nothing', powerKey: 'sleep' }));
    chmodSync(file, 0o644);
    const r = loadPowerPolicy(file);
    assert.deepEqual(r.policy, DEFAULT_POWER_POLICY, 'lid: nothing is not applied either');
    assert.equal(r.error?.field, 'powerKey');
    chmodSync(file, 0o666);
    assert.match(loadPowerPolicy(file).error!.reason, /writable by group and others/);
    const link = join(dir, 'link.json');
    symlinkSync('/etc/passwd', link);
    assert.match(loadPowerPolicy(link).error!.reason, /not a regular file \(symlink\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ACPI buttons: capability masks and input events (power key press, lid closing) are read right', () => {
  // "Power Button": KEY_POWER (116) only: bit 52 of the second 64-bit word (words print most significant first).
  assert.equal(hasCapability('10000000000000 0', 116), true);
  assert.equal(hasCapability('10000000000000 0', 30), false);
  assert.equal(hasCapability('1', 0), true); // SW_LID
  assert.equal(hasCapability('', 0), false);
  const seen: string[] = [];
  const feed = buttonEvents((w) => seen.push(w));
  const ev = (type: number, code: number, value: number) => {
    const b = Buffer.alloc(INPUT_EVENT_BYTES);
    b.writeUInt16LE(type, 16);
    b.writeUInt16LE(code, 18);
    b.writeInt32LE(value, 20);
    return b;
  };
  const stream = Buffer.concat([ev(1, 116, 1), ev(0, 0, 0), ev(1, 116, 0), ev(5, 0, 1), ev(5, 0, 0)]);
  // Split mid-event: a read may end anywhere.
  feed(stream.subarray(0, 30));
  feed(stream.subarray(30));
  assert.deepEqual(seen, ['power-key', 'lid']);
});
