#!/usr/bin/env node
// Runs every fuzz target (each dist/**/*.fuzz.js exports `fuzzTargets`, see
// shared/dbus/src/testing/fuzz-target.ts) with random seeds for FUZZ_SECONDS (default 60) in
// total, split evenly across targets, and prints per target: executions, findings, and for each
// finding the seed + path + counterexample to replay it.
// Usage: FUZZ_SECONDS=60 node scripts/fuzz.mjs [target-name-substring ...]
//   replay: FUZZ_SEED=<seed> FUZZ_RUNS=<n> node scripts/fuzz.mjs <target>
import { relative } from 'node:path';
import { createRequire } from 'node:module';
import { distFiles } from './lib/dist-files.mjs';

const require = createRequire(import.meta.url);
const root = new URL('..', import.meta.url).pathname;
const files = distFiles((name) => name.endsWith('.fuzz.js'));

const filters = process.argv.slice(2);
const targets = [];
for (const f of files) {
  const mod = require(f);
  for (const t of mod.fuzzTargets ?? [])
    if (filters.length === 0 || filters.some((x) => t.name.includes(x)))
      targets.push({ ...t, file: relative(root, f) });
}
if (targets.length === 0) {
  console.error('fuzz: no fuzz targets found (did the build run?)');
  process.exit(1);
}
const totalSeconds = Number(process.env.FUZZ_SECONDS ?? 60);
const shareMs = Math.max(1000, Math.floor((totalSeconds * 1000) / targets.length));
const fixedSeed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : null;
const runs = process.env.FUZZ_RUNS !== undefined ? Number(process.env.FUZZ_RUNS) : undefined;
console.log(`fuzz: ${targets.length} target(s), ${(shareMs / 1000).toFixed(1)} s each`);

const rows = [];
for (const t of targets) {
  const seed = fixedSeed ?? (Math.random() * 2 ** 31) | 0;
  const started = Date.now();
  let result;
  try {
    result = await t.run(runs ? { seed, numRuns: runs } : { seed, timeLimitMs: shareMs });
  } catch (e) {
    // The target itself broke (e.g. a daemon would not start): a finding of its own kind.
    result = {
      executions: 0,
      finding: { seed, path: '', counterexample: '(setup)', error: String(e?.stack ?? e) },
    };
  }
  const secs = (Date.now() - started) / 1000;
  rows.push({ name: t.name, seed, secs, ...result });
  console.log(
    `  ${t.name.padEnd(34)} ${String(result.executions).padStart(8)} execs  ${(result.executions / secs).toFixed(0).padStart(7)}/s  ` +
      `${result.finding ? 'FINDING' : 'ok'}  (seed ${seed})`,
  );
  if (result.finding) {
    const f = result.finding;
    console.log(
      `    replay: FUZZ_SEED=${f.seed} node scripts/fuzz.mjs '${t.name}'  (fast-check path "${f.path}")`,
    );
    console.log(`    counterexample: ${f.counterexample}`);
    console.log(`    ${f.error.split('\n').slice(0, 8).join('\n    ')}`);
  }
}
const findings = rows.filter((r) => r.finding).length;
console.log(`fuzz: ${rows.reduce((n, r) => n + r.executions, 0)} executions, ${findings} finding(s)`);
console.log(
  `FUZZ-JSON ${JSON.stringify(rows.map((r) => ({ target: r.name, executions: r.executions, seconds: r.secs, findings: r.finding ? 1 : 0, seed: r.seed })))}`,
);
process.exit(findings ? 1 : 0);
