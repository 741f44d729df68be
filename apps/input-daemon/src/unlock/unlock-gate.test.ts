import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Logger } from '@bulkhead/common';
import { isBulkheadError } from '@bulkhead/contract';
import { PamPasswordChecker, type PamResult, type PasswordChecker } from './pam-native';
import { UnlockGate } from './unlock-gate';

const SECRET = 'correct horse battery';

/** A logger that keeps every line, to prove what the journal would (not) contain. */
function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const l = {
    lines,
    debug: (m: string) => lines.push(m),
    info: (m: string) => lines.push(m),
    warn: (m: string) => lines.push(m),
    error: (m: string) => lines.push(m),
    child: () => l,
  };
  return l;
}

/** A fake PAM: accepts SECRET for user 'person', counts calls. */
class FakePamChecker implements PasswordChecker {
  calls = 0;
  async check(user: string, password: string): Promise<PamResult> {
    this.calls++;
    const ok = user === 'person' && password === SECRET;
    return { ok, code: ok ? 0 : 7, name: ok ? 'Success' : 'Authentication failure', step: 'authenticate' };
  }
}

async function refusedWith(
  p: Promise<unknown>,
  name: 'AuthenticationFailed' | 'TryAgainLater' | 'InvalidArgument',
) {
  await assert.rejects(p, (e) => isBulkheadError(e, name));
}

test('a wrong password is refused by name and the waits double: 1 s, 2 s, 4 s, capped', async () => {
  let clock = 1_000_000;
  const pam = new FakePamChecker();
  const log = recordingLogger();
  const gate = new UnlockGate(pam, { user: 'person', maxDelayMs: 4000, now: () => clock }, log);

  await refusedWith(gate.attempt('guess-1'), 'AuthenticationFailed');
  assert.equal(gate.waitMs(), 1000);
  // Inside the wait: refused before PAM is even asked (no guessing at PAM's speed).
  await refusedWith(gate.attempt(SECRET), 'TryAgainLater');
  assert.equal(pam.calls, 1);

  clock += 1000;
  await refusedWith(gate.attempt('guess-2'), 'AuthenticationFailed');
  assert.equal(gate.waitMs(), 2000);
  clock += 2000;
  await refusedWith(gate.attempt('guess-3'), 'AuthenticationFailed');
  assert.equal(gate.waitMs(), 4000);
  clock += 4000;
  await refusedWith(gate.attempt('guess-4'), 'AuthenticationFailed');
  assert.equal(gate.waitMs(), 4000, 'the wait stops growing at maxDelayMs');

  clock += 4000;
  await gate.attempt(SECRET);
  assert.equal(gate.failureCount, 0);
  assert.equal(gate.waitMs(), 0, 'a success resets the back-off');

  const journal = log.lines.join('\n');
  assert.match(journal, /refused for person .*4 consecutive failure/);
  for (const secret of ['guess-1', 'guess-2', 'guess-3', 'guess-4', SECRET])
    assert.ok(!journal.includes(secret), `the log must not contain a password (${secret})`);
});

test('parallel attempts cannot get around the back-off: one at a time', async () => {
  let release!: () => void;
  const slow: PasswordChecker = {
    check: () =>
      new Promise((r) => {
        release = () => r({ ok: false, code: 7, name: 'Authentication failure', step: 'authenticate' });
      }),
  };
  const gate = new UnlockGate(slow, { user: 'person' }, recordingLogger());
  const first = gate.attempt('a');
  await refusedWith(gate.attempt('b'), 'TryAgainLater');
  release();
  await refusedWith(first, 'AuthenticationFailed');
});

test('malformed passwords are refused before PAM: empty, NUL inside, too long, not a string', async () => {
  const pam = new FakePamChecker();
  const gate = new UnlockGate(pam, { user: 'person' }, recordingLogger());
  await refusedWith(gate.attempt(''), 'InvalidArgument');
  await refusedWith(gate.attempt(`${SECRET}\0tail`), 'InvalidArgument');
  await refusedWith(gate.attempt('x'.repeat(600)), 'InvalidArgument');
  await refusedWith(gate.attempt(42), 'InvalidArgument');
  assert.equal(pam.calls, 0);
});

// ---- the real libpam, with a PAM configuration of the test's own (pam_start_confdir) ----------

const dir = mkdtempSync(join(tmpdir(), 'bulkhead-pam-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A PAM service whose auth stack is pam_exec running a script that compares the password. */
function pamService(): PamPasswordChecker {
  const script = join(dir, 'check.sh');
  // pam_exec hands the password on stdin, NUL-terminated.
  writeFileSync(script, `#!/bin/sh\npw=$(tr -d '\\000')\n[ "$pw" = '${SECRET}' ]\n`);
  chmodSync(script, 0o755);
  writeFileSync(
    join(dir, 'bulkhead-unlock-test'),
    `auth required pam_exec.so expose_authtok quiet ${script}\naccount required pam_permit.so\n`,
  );
  return new PamPasswordChecker('bulkhead-unlock-test', dir);
}

test('real PAM: the right password passes the whole stack, a wrong one does not', async () => {
  const pam = pamService();
  const ok = await pam.check('nobody', SECRET);
  assert.deepEqual([ok.ok, ok.step], [true, 'account']);
  const bad = await pam.check('nobody', 'Correct horse battery');
  assert.equal(bad.ok, false);
  assert.equal(bad.step, 'authenticate');
});

test('real PAM behind the gate: NUL cannot truncate a password into the right one', async () => {
  const gate = new UnlockGate(pamService(), { user: 'nobody', firstDelayMs: 1 }, recordingLogger());
  await refusedWith(gate.attempt(`${SECRET}\0anything`), 'InvalidArgument');
  await gate.attempt(SECRET);
});

test('a PAM service that does not exist refuses, it never lets the person in', async () => {
  const r = await new PamPasswordChecker('no-such-service-here', dir).check('nobody', SECRET);
  assert.equal(r.ok, false);
});

test('fake PAM: a restarted input-daemon (SIGKILL) keeps the back-off — also for an attempt PAM was still deciding', async () => {
  let clock = 5_000_000;
  const dir = mkdtempSync(join(tmpdir(), 'unlock-gate-restart-'));
  const stateFile = join(dir, 'unlock-failures.json');
  const gateOn = (checker: PasswordChecker) =>
    new UnlockGate(checker, { user: 'person', now: () => clock, stateFile }, recordingLogger());
  try {
    const pam = new FakePamChecker();
    const first = gateOn(pam);
    for (let i = 1; i <= 4; i++) {
      await refusedWith(first.attempt(`guess-${i}`), 'AuthenticationFailed');
      clock += first.waitMs();
    }
    await refusedWith(first.attempt('guess-5'), 'AuthenticationFailed');
    assert.equal(first.waitMs(), 16_000);
    // input-daemon is SIGKILLed here; systemd starts the next one a moment later.
    clock += 1500;
    const second = gateOn(pam);
    await refusedWith(second.attempt('guess-6'), 'TryAgainLater');
    assert.equal(pam.calls, 5, 'the guess after the restart reached PAM inside the wait');
    clock += 16_000;
    // Killed while PAM decides (pam_unix takes seconds to say no): that attempt still counts.
    const hung = new (class implements PasswordChecker {
      async check(): Promise<PamResult> {
        return new Promise<PamResult>(() => undefined);
      }
    })();
    void gateOn(hung).attempt('guess-7');
    const third = gateOn(pam);
    await refusedWith(third.attempt('guess-8'), 'TryAgainLater');
    // The right password, once the wait is over, resets it, also for the next daemon.
    clock += 60_000;
    await third.attempt(SECRET);
    assert.equal(gateOn(pam).waitMs(), 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
