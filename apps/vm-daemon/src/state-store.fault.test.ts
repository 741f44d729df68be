/**
 * State-file faults: a state.json cut short at any length or replaced by garbage is reported and
 * replaced on load, never a crash; and writeFileAtomic is atomic across a crash: a writer
 * SIGKILLed at random moments always leaves either the old or the new whole content.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { Logger } from '@bulkhead/common';
import { STATE_PAGE, StateStore } from './state-store';

const problems: string[] = [];
const log: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: (m) => problems.push(m),
  error: (m) => problems.push(m),
  child: () => log,
};

test('a state.json truncated to any length, or garbage, is reported and replaced by a valid file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-state-'));
  try {
    const good =
      JSON.stringify({ activeVm: 'personal', slots: { personal: 1, business: 2 } }, null, 2) + '\n';
    fc.assert(
      fc.property(
        fc.oneof(
          fc.nat({ max: good.length }).map((n) => good.slice(0, n)),
          fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('latin1')),
          fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
        ),
        (content) => {
          const path = join(dir, 'state.json');
          writeFileSync(path, content);
          const store = new StateStore(dir, log);
          const s = store.load();
          // Whatever was on disk, the answer is a valid state ...
          assert.ok(s.activeVm === null || typeof s.activeVm === 'string');
          assert.equal(typeof s.slots, 'object');
          if (content === good) assert.equal(store.loadProblem, '');
          else if (store.loadProblem) {
            // ... a bad file is named in the report, kept aside, and replaced by a valid one.
            assert.match(store.loadProblem, /state\.json: corrupt/);
            assert.match(problems.at(-1) ?? '', /state file unusable/);
            assert.ok(existsSync(`${path}.corrupt`));
            assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { activeVm: null, slots: {} });
          }
        },
      ),
      { seed: 4242, numRuns: 300 },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writeFileAtomic: a writer SIGKILLed at random moments leaves the old or the new content, never a mix', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'atomic-'));
  const path = join(dir, 'state.json');
  const common = require.resolve('@bulkhead/common');
  // Each version is a whole, self-checking document (128 KiB, so a write takes several syscalls).
  const writer = `
    const { writeFileAtomic } = require(${JSON.stringify(common)});
    for (let i = 1; ; i++) {
      const body = String(i % 10).repeat(128 * 1024);
      writeFileAtomic(${JSON.stringify(path)}, JSON.stringify({ version: i, body, check: body.length }));
      if (i === 1) process.stdout.write('writing\\n');
    }`;
  const versions: number[] = [];
  let child: ReturnType<typeof spawn> | null = null;
  try {
    writeFileSync(path, JSON.stringify({ version: 0, body: '', check: 0 }));
    for (let round = 0; round < 25; round++) {
      child = spawn(process.execPath, ['-e', writer], { stdio: ['ignore', 'pipe', 'ignore'] });
      // Kill it at a varying moment once it is in its write loop (node's start-up time varies).
      const c = child;
      await new Promise((r) => c.stdout!.once('data', r));
      await new Promise((r) => setTimeout(r, (round * 7) % 23));
      c.kill('SIGKILL');
      if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.once('exit', r));
      const doc = JSON.parse(readFileSync(path, 'utf8')) as { version: number; body: string; check: number };
      assert.equal(doc.body.length, doc.check, `round ${round}: torn file`);
      assert.equal(doc.body, doc.version === 0 ? '' : String(doc.version % 10).repeat(128 * 1024));
      versions.push(doc.version);
    }
    // The test really killed writers mid-way (versions advanced), not only between runs.
    assert.ok(
      versions.some((v) => v > 0),
      `versions seen: ${versions.join(',')}`,
    );
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('StateStore.save rewrites one page in place: a daemon SIGKILLed at random moments leaves the old or the new state, never a mix', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'state-page-'));
  const path = join(dir, 'state.json');
  const storeModule = require.resolve('./state-store');
  // Each version names itself in activeVm and in every one of 150 slots (about 2.5 KiB of JSON,
  // under one page): a torn page would mix two versions.
  const writer = `
    const { StateStore } = require(${JSON.stringify(storeModule)});
    const quiet = { debug() {}, info() {}, warn() {}, error(m) { process.stderr.write(m + '\\n'); }, child() { return quiet; } };
    const store = new StateStore(${JSON.stringify(dir)}, quiet);
    for (let i = 1; ; i++) {
      const slots = {};
      for (let k = 0; k < 150; k++) slots['vm' + k] = i;
      store.save({ activeVm: 'v' + i, slots });
      if (i === 2) process.stdout.write('writing\\n');
    }`;
  const versions: number[] = [];
  let child: ReturnType<typeof spawn> | null = null;
  try {
    for (let round = 0; round < 25; round++) {
      child = spawn(process.execPath, ['-e', writer], { stdio: ['ignore', 'pipe', 'ignore'] });
      const c = child;
      await new Promise((r) => c.stdout!.once('data', r));
      await new Promise((r) => setTimeout(r, (round * 7) % 23));
      c.kill('SIGKILL');
      if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.once('exit', r));
      const text = readFileSync(path, 'utf8');
      assert.equal(Buffer.byteLength(text), STATE_PAGE, `round ${round}: not one page`);
      const doc = JSON.parse(text) as { activeVm: string; slots: Record<string, number> };
      const v = Number(doc.activeVm.slice(1));
      assert.equal(Object.keys(doc.slots).length, 150);
      assert.ok(
        Object.values(doc.slots).every((s) => s === v),
        `round ${round}: torn state`,
      );
      // What a restarted daemon reads.
      assert.equal(new StateStore(dir, log).load().activeVm, doc.activeVm);
      versions.push(v);
    }
    assert.ok(
      versions.some((v) => v > 2),
      `versions seen: ${versions.join(',')}`,
    );
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
