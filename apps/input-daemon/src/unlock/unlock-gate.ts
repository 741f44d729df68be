import { rmSync } from 'node:fs';
import { readJsonFile, writeFileAtomic, type Logger } from '@bulkhead/common';
import { BulkheadError } from '@bulkhead/contract';
import type { PasswordChecker } from './pam-native';

/** Longest password accepted (bytes of UTF-8): PAM's own response limit is 512. */
export const MAX_PASSWORD_BYTES = 512;

export interface UnlockGateOptions {
  /** The account whose password unlocks the seat. */
  user: string;
  /** Wait after the first failure; doubled after each further one (1 s, 2 s, 4 s, …). */
  firstDelayMs?: number;
  /** The wait never grows past this. */
  maxDelayMs?: number;
  /** Clock (tests). */
  now?: () => number;
  /**
   * Where the failures are kept across a restart of input-daemon (its run dir): without it a
   * SIGKILLed daemon's successor would start the back-off from nothing.
   */
  stateFile?: string;
}

/**
 * Decides whether a password unlocks the seat: checks it with PAM and slows down guessing.
 * After n consecutive failures the next attempt is refused with TryAgainLater until
 * min(first·2^(n-1), max) has passed since the last failure; a success resets the count.
 * Failures go to the log (the journal) with the account, PAM's verdict and the wait — never the
 * password, its length or any part of it. One attempt runs at a time: a second one arriving while
 * PAM is still deciding is refused, so parallel calls cannot bypass the back-off.
 */
export class UnlockGate {
  private failures = 0;
  private lastFailureAt = 0;
  private busy = false;
  private readonly firstDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly now: () => number;

  constructor(
    private readonly checker: PasswordChecker,
    private readonly opts: UnlockGateOptions,
    private readonly log: Logger,
  ) {
    this.firstDelayMs = opts.firstDelayMs ?? 1000;
    this.maxDelayMs = opts.maxDelayMs ?? 30_000;
    this.now = opts.now ?? Date.now;
    this.loadFailures();
  }

  /** The failures an earlier input-daemon recorded (see UnlockGateOptions.stateFile). */
  private loadFailures(): void {
    const file = this.opts.stateFile;
    if (!file) return;
    const r = readJsonFile(file, (v) => {
      const o = v as { failures?: unknown; lastFailureAt?: unknown };
      if (
        !o ||
        !Number.isSafeInteger(o.failures) ||
        (o.failures as number) < 0 ||
        typeof o.lastFailureAt !== 'number' ||
        !Number.isFinite(o.lastFailureAt)
      )
        throw new Error('expected {failures, lastFailureAt}');
      return { failures: o.failures as number, lastFailureAt: o.lastFailureAt };
    });
    if (r.ok) {
      this.failures = r.value.failures;
      // Never a wait that starts in the future (a clock set back, a forged time).
      this.lastFailureAt = Math.min(r.value.lastFailureAt, this.now());
      if (this.failures)
        this.log.warn(
          `unlock: ${this.failures} consecutive failure(s) recorded by the previous input-daemon; next attempt in ${Math.ceil(this.waitMs() / 1000)} s`,
        );
    } else if (!r.missing) {
      // Ours, written atomically: unreadable means tampered with. The longest wait, not none.
      this.failures = 32;
      this.lastFailureAt = this.now();
      this.log.error(`unlock: ${r.error}; counting the back-off from its longest wait`);
    }
  }

  /** Records `failures` failures, the last at `at`, for the next input-daemon; never throws. */
  private saveFailures(failures: number, at: number): void {
    const file = this.opts.stateFile;
    if (!file) return;
    try {
      if (failures === 0) rmSync(file, { force: true });
      else writeFileAtomic(file, JSON.stringify({ failures, lastFailureAt: at }) + '\n', 0o600);
    } catch (e) {
      this.log.error(`unlock: cannot record the failures in ${file}: ${(e as Error).message}`);
    }
  }

  /** Consecutive failures so far. */
  get failureCount(): number {
    return this.failures;
  }

  /** Milliseconds until the next attempt is accepted (0 = now). */
  waitMs(): number {
    if (this.failures === 0) return 0;
    const delay = Math.min(this.firstDelayMs * 2 ** (this.failures - 1), this.maxDelayMs);
    return Math.max(0, this.lastFailureAt + delay - this.now());
  }

  /** Resolves when `password` is right; otherwise throws a named BulkheadError. */
  async attempt(password: unknown): Promise<void> {
    if (typeof password !== 'string' || password.length === 0)
      throw new BulkheadError(
        'InvalidArgument',
        "Unlock: option 'password' (a non-empty string) is required",
      );
    if (password.includes('\0'))
      throw new BulkheadError('InvalidArgument', "Unlock: option 'password' contains a NUL character");
    if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES)
      throw new BulkheadError(
        'InvalidArgument',
        `Unlock: option 'password' is longer than ${MAX_PASSWORD_BYTES} bytes`,
      );
    const wait = this.waitMs();
    if (wait > 0 || this.busy)
      throw new BulkheadError(
        'TryAgainLater',
        `Unlock: ${this.failures} failed attempt(s); try again in ${Math.max(1, Math.ceil(wait / 1000))} s`,
      );
    this.busy = true;
    // Counted as failed until PAM says otherwise: a daemon killed while PAM decides (pam_unix
    // takes seconds to say no) must not hand its successor a fresh back-off.
    this.saveFailures(this.failures + 1, this.now());
    let verdict: string;
    try {
      const r = await this.checker.check(this.opts.user, password);
      if (r.ok) {
        if (this.failures)
          this.log.info(`unlock: accepted for ${this.opts.user} after ${this.failures} failure(s)`);
        this.failures = 0;
        this.saveFailures(0, 0);
        return;
      }
      verdict = `PAM ${r.step}: ${r.name}`;
    } catch (e) {
      // The addon or PAM itself failed: count it as a failure too, so an error path is no way
      // around the back-off.
      verdict = `PAM unavailable: ${(e as Error).message}`;
    } finally {
      this.busy = false;
    }
    this.failures++;
    this.lastFailureAt = this.now();
    this.saveFailures(this.failures, this.lastFailureAt);
    const next = Math.ceil(this.waitMs() / 1000);
    this.log.warn(
      `unlock: refused for ${this.opts.user} (${verdict}); ${this.failures} consecutive failure(s); next attempt in ${next} s`,
    );
    throw new BulkheadError(
      'AuthenticationFailed',
      `Unlock: wrong password; the next attempt is allowed in ${next} s`,
    );
  }
}
