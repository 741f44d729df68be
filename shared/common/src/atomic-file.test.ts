/**
 * State files are read as hostile: a daemon restarted after anything (a crash, a person with root
 * access, a full disk) must start, report what it found and carry on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  lstatSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_SET_ASIDE_COPIES, readJsonFile, setAsideUnusableFile, writeFileAtomic } from './atomic-file';

const any = (v: unknown) => v;

test('a state file that is a FIFO, a symlink or huge is reported as not readable, at once and without reading it whole', () => {
  const dir = mkdtempSync(join(tmpdir(), 'state-file-'));
  try {
    const good = join(dir, 'good.json');
    writeFileAtomic(good, '{"active":"/"}');
    assert.deepEqual(readJsonFile(good, any), { ok: true, value: { active: '/' } });
    assert.deepEqual(readJsonFile(join(dir, 'absent.json'), any), {
      ok: false,
      missing: true,
      error: `${join(dir, 'absent.json')}: missing`,
    });

    const fifo = join(dir, 'fifo.json');
    execFileSync('mkfifo', [fifo]);
    // No writer: a plain read would block the daemon's start for good.
    const r1 = readJsonFile(fifo, any);
    assert.equal(r1.ok, false);
    assert.match(!r1.ok ? r1.error : '', /not a regular file \(fifo\)/);
    assert.equal(!r1.ok && r1.missing, false, 'refused, not missing: the caller keeps it aside');

    const secret = join(dir, 'secret');
    writeFileSync(secret, '{"active":"/org/bulkhead/VmManager1/vm/x"}');
    const link = join(dir, 'link.json');
    symlinkSync(secret, link);
    const r2 = readJsonFile(link, any);
    assert.match(!r2.ok ? r2.error : '', /not a regular file \(symlink\)/);

    // Valid JSON, but far larger than any state a daemon writes: parsing it would exhaust a
    // daemon's bounded heap (--max-old-space-size=32) on every start.
    const huge = join(dir, 'huge.json');
    writeFileSync(huge, `[${'0,'.repeat(2 << 20)}0]`);
    const r3 = readJsonFile(huge, any);
    assert.match(!r3.ok ? r3.error : '', /larger than the 1048576-byte limit/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an unusable file set aside twice keeps both copies; a symlink is moved, not its target; the copies are bounded', () => {
  const dir = mkdtempSync(join(tmpdir(), 'state-file-'));
  try {
    const f = join(dir, 'state.json');
    writeFileSync(f, 'first bad');
    assert.equal(setAsideUnusableFile(f), `${f}.corrupt`);
    writeFileSync(f, 'second bad');
    assert.equal(setAsideUnusableFile(f), `${f}.corrupt.1`);
    assert.equal(readFileSync(`${f}.corrupt`, 'utf8'), 'first bad', 'the first copy is not overwritten');
    assert.equal(readFileSync(`${f}.corrupt.1`, 'utf8'), 'second bad');

    const target = join(dir, 'target');
    writeFileSync(target, 'not ours to move');
    symlinkSync(target, f);
    assert.equal(setAsideUnusableFile(f), `${f}.corrupt.2`);
    assert.equal(readFileSync(target, 'utf8'), 'not ours to move', 'the target stays');
    assert.ok(lstatSync(`${f}.corrupt.2`).isSymbolicLink());

    for (let i = 0; i < 2 * MAX_SET_ASIDE_COPIES; i++) {
      writeFileSync(f, `bad ${i}`);
      assert.ok(setAsideUnusableFile(f));
    }
    const copies = readdirSync(dir).filter((n) => n.startsWith('state.json.corrupt'));
    assert.equal(copies.length, MAX_SET_ASIDE_COPIES);
    assert.equal(readFileSync(`${f}.corrupt`, 'utf8'), 'first bad', 'the oldest copy is still the first');
    assert.equal(setAsideUnusableFile(join(dir, 'absent.json')), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
