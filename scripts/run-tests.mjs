#!/usr/bin/env node
// Runs the whole test suite with node's test runner: every compiled *.test.js under dist/ of
// every workspace package. Suites that boot whole images have their own scripts (see README).
// Usage: node scripts/run-tests.mjs [filter-substring ...]
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const roots = ['shared', 'apps'].flatMap((d) =>
  readdirSync(join(root, d)).map((p) => join(root, d, p, 'dist')),
);
const files = [];
const walk = (dir) => {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p);
    else if (e.endsWith('.test.js')) files.push(p);
  }
};
roots.forEach(walk);
const filters = process.argv.slice(2);
const selected = files.filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
if (selected.length === 0) {
  console.error('run-tests: no test files found (did the build run?)');
  process.exit(1);
}
console.log(`run-tests: ${selected.length} test files`);
for (const f of selected) console.log(`  ${relative(root, f)}`);
const r = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=2', '--test-reporter=spec', ...selected],
  { stdio: 'inherit', env: { ...process.env, BULKHEAD_REPO: root } },
);
process.exit(r.status ?? 1);
