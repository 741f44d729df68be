#!/usr/bin/env node
// The whole test suite, in phases, each with its own report:
//   unit   every compiled *.test.js under shared/*/dist and apps/*/dist (node's test runner)
//   image  the Control Domain image booted in QEMU (scripts/run-image-tests.mjs; needs root)
//   xen    Xen inside QEMU with vm-daemon's Xen backend (xen-harness/run.mjs; needs root)
// then one closing line "N passed, N failed" over all phases.
// Usage: node scripts/run-tests.mjs [--phase unit|image|xen ...] [path-substring ...]
// BULKHEAD_SKIP_IMAGE=1 / BULKHEAD_SKIP_XEN=1 leave a phase out.
import { existsSync } from 'node:fs';
import { distFiles } from './lib/dist-files.mjs';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const phases = [];
const filters = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--phase') phases.push(args[++i]);
  else filters.push(args[i]);
}
const wanted = phases.length ? phases : ['unit', 'image', 'xen'];

function unitFiles() {
  return distFiles((name) => name.endsWith('.test.js')).filter(
    (f) => filters.length === 0 || filters.some((x) => f.includes(x)),
  );
}

/** Run a command, echo its output, and count what its runner reported. */
function run(cmd, cmdArgs, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, cmdArgs, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, BULKHEAD_REPO: root, ...env },
    });
    let tail = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      tail = (tail + d.toString()).slice(-20_000);
    });
    child.on('exit', (code) => {
      const num = (re) => {
        const all = [...tail.matchAll(re)];
        return all.length ? Number(all[all.length - 1][1]) : 0;
      };
      let passed = num(/^ℹ pass (\d+)$/gm);
      let failed = num(/^ℹ fail (\d+)$/gm);
      let skippedTests = num(/^ℹ skipped (\d+)$/gm);
      const plain = [...tail.matchAll(/^(?:\w+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?/gm)].pop();
      if (plain && passed + failed === 0) {
        passed = Number(plain[1]);
        failed = Number(plain[2]);
        skippedTests = Number(plain[3] ?? 0);
      }
      resolve({
        code: code ?? 1,
        passed,
        failed,
        skippedTests,
        skipped: /skipped/.test(tail) && passed + failed === 0,
      });
    });
  });
}

const results = [];
for (const phase of wanted) {
  const t0 = Date.now();
  console.log(`\n===== test phase: ${phase} =====`);
  let r;
  if (phase === 'unit') {
    const files = unitFiles();
    if (files.length === 0) {
      console.error('run-tests: no test files found (did the build run?)');
      process.exit(1);
    }
    console.log(`${files.length} test files`);
    for (const f of files) console.log(`  ${relative(root, f)}`);
    r = await run(process.execPath, ['--test', '--test-concurrency=2', '--test-reporter=spec', ...files]);
  } else if (phase === 'image') {
    if (process.env.BULKHEAD_SKIP_IMAGE) {
      console.log('image suite: skipped (BULKHEAD_SKIP_IMAGE)');
      continue;
    }
    r = await run(process.execPath, [join(root, 'scripts/run-image-tests.mjs')]);
  } else if (phase === 'xen') {
    if (process.env.BULKHEAD_SKIP_XEN) {
      console.log('xen suite: skipped (BULKHEAD_SKIP_XEN)');
      continue;
    }
    if (!existsSync(join(root, 'xen-harness/run.mjs'))) {
      console.log('xen suite: skipped (no harness)');
      continue;
    }
    r = await run(process.execPath, [join(root, 'xen-harness/run.mjs')]);
  } else {
    console.error(`run-tests: unknown phase ${phase}`);
    process.exit(2);
  }
  results.push({ phase, ...r, seconds: Math.round((Date.now() - t0) / 1000) });
}

console.log('\n===== summary =====');
for (const r of results)
  console.log(
    `${r.phase.padEnd(6)} ${r.code === 0 ? 'ok    ' : 'FAILED'} ${r.passed} passed, ${r.failed} failed, ${r.skippedTests} skipped${r.skipped ? ' (whole phase skipped)' : ''} in ${r.seconds} s`,
  );
const passed = results.reduce((a, r) => a + r.passed, 0);
const failed = results.reduce((a, r) => a + r.failed, 0);
const skipped = results.reduce((a, r) => a + r.skippedTests, 0);
const bad = results.filter((r) => r.code !== 0);
// A phase that exited non-zero without a failing test (a crash, a build error) still fails the run.
console.log(
  `${passed} passed, ${failed + (bad.length && failed === 0 ? bad.length : 0)} failed, ${skipped} skipped`,
);
process.exit(bad.length ? 1 : 0);
