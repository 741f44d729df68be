// The unit phase reports its groups (fast, qemu, fault, load, fuzz, pw) from the test files'
// names, with counts taken by scripts/lib/file-results-reporter.mjs. Fixture test files are run
// by the real node:test runner with that reporter; the counts must be node's own, per file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const repo = join(__dirname, '../../..');
const reporter = join(repo, 'scripts/lib/file-results-reporter.mjs');
const groups = join(repo, 'scripts/lib/test-groups.mjs');
// A node --test started from inside a test would report to this runner instead of to its own
// reporters (NODE_TEST_CONTEXT): run it as the top-level runner it is in run-tests.mjs.
const topLevelEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT'),
);

test('each test file is put in the group its suffix names; no suffix is a fast test', () => {
  const names = [
    'apps/a/dist/x.test.js',
    'apps/a/dist/x.qemu.test.js',
    'apps/a/dist/x.fault.test.js',
    'apps/a/dist/x.load.test.js',
    'apps/a/dist/x.fuzz.test.js',
    'apps/a/dist/e2e/x.pw.test.js',
    'apps/a/dist/x.property.test.js',
    'apps/a/dist/qemu.test.js',
  ];
  const r = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(groups)}); console.log(JSON.stringify(${JSON.stringify(names)}.map(m.groupOf)));`,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), ['fast', 'qemu', 'fault', 'load', 'fuzz', 'pw', 'fast', 'fast']);
});

test('per-file counts add up to node’s own totals: passes, skips, failing subtests, a file that does not load', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-test-groups-'));
  try {
    const files = {
      'plain.test.js':
        "const { test } = require('node:test');\n" +
        "test('one', () => {});\n" +
        "test('skipped', { skip: 'not here' }, () => {});\n" +
        "test('parent', async (t) => { await t.test('child', () => {}); });\n",
      'guest.qemu.test.js':
        "const { test } = require('node:test');\n" +
        "test('boots', () => {});\n" +
        "test('parent', async (t) => { await t.test('child fails', () => { throw new Error('no'); }); });\n",
      'broken.fuzz.test.js': 'this is not javascript (\n',
    };
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    const out = join(dir, 'per-file.json');
    const r = spawnSync(
      process.execPath,
      [
        '--test',
        '--test-concurrency=2',
        '--test-reporter=spec',
        '--test-reporter-destination=stdout',
        `--test-reporter=${reporter}`,
        `--test-reporter-destination=${out}`,
        ...Object.keys(files).map((f) => join(dir, f)),
      ],
      { encoding: 'utf8', cwd: dir, env: topLevelEnv },
    );
    const total = (what: string) => Number(new RegExp(`^ℹ ${what} (\\d+)$`, 'm').exec(r.stdout)?.[1]);
    const perFile = JSON.parse(readFileSync(out, 'utf8')) as Record<
      string,
      { passed: number; failed: number; skipped: number; ms: number }
    >;
    const at = (name: string) => perFile[join(dir, name)];
    assert.deepEqual(
      { ...at('plain.test.js'), ms: undefined },
      { passed: 3, failed: 0, skipped: 1, ms: undefined },
    );
    assert.deepEqual(
      { ...at('guest.qemu.test.js'), ms: undefined },
      { passed: 1, failed: 2, skipped: 0, ms: undefined },
    );
    assert.deepEqual(
      { ...at('broken.fuzz.test.js'), ms: undefined },
      { passed: 0, failed: 1, skipped: 0, ms: undefined },
    );
    const sum = (k: 'passed' | 'failed' | 'skipped') => Object.values(perFile).reduce((a, f) => a + f[k], 0);
    assert.deepEqual(
      [sum('passed'), sum('failed'), sum('skipped')],
      [total('pass'), total('fail'), total('skipped')],
      r.stdout,
    );
    for (const f of Object.values(perFile))
      assert.ok(f.ms > 0, `each file has its run time: ${JSON.stringify(perFile)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
