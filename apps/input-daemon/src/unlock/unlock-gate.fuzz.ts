/**
 * Fuzz target for Unlock's password argument (fixed seed in unlock-gate.fuzz.test.ts, random under
 * `npm run fuzz`): any value a UI-role caller can put in the `password` option — any Unicode,
 * NUL anywhere, lone surrogates, very long strings, near misses of the right password, values of
 * other types. The gate opens for exactly the right password, answers everything else with a
 * named error (InvalidArgument or AuthenticationFailed), and never writes a password to the log.
 */
import fc from 'fast-check';
import { checkProperty, type FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import type { Logger } from '@bulkhead/common';
import { BulkheadError } from '@bulkhead/contract';
import type { PamResult, PasswordChecker } from './pam-native';
import { UnlockGate } from './unlock-gate';

const SECRET = 'Tr0ub4dor&3 été';

/** A fake PAM that compares like libpam does: C strings (so it would be fooled by a NUL). */
class FakeCStringPam implements PasswordChecker {
  async check(_user: string, password: string): Promise<PamResult> {
    const ok = password.split('\0')[0] === SECRET;
    return { ok, code: ok ? 0 : 7, name: ok ? 'Success' : 'Authentication failure', step: 'authenticate' };
  }
}

const nearMiss = fc.oneof(
  fc.constant(SECRET),
  fc.constant(`${SECRET}\0`),
  fc.string().map((s) => `${SECRET}\0${s}`),
  fc.string().map((s) => SECRET + s),
  fc.nat({ max: SECRET.length }).map((n) => SECRET.slice(0, n)),
  fc.constant(SECRET.normalize('NFD')),
  fc.constant(SECRET.toUpperCase()),
);
const anyPassword: fc.Arbitrary<unknown> = fc.oneof(
  nearMiss,
  fc.string({ unit: 'binary', maxLength: 64 }),
  fc.string({ unit: 'grapheme', maxLength: 600 }),
  fc.constant('\ud800'),
  fc.nat({ max: 2000 }).map((n) => 'x'.repeat(n)),
  fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.constant(undefined), fc.array(fc.string())),
);

export const fuzzTargets: FuzzTarget[] = [
  {
    name: 'input-daemon: Unlock password argument',
    run: (opts) =>
      checkProperty(
        fc.asyncProperty(fc.array(anyPassword, { minLength: 1, maxLength: 8 }), async (attempts) => {
          let clock = 0;
          const lines: string[] = [];
          const log: Logger = {
            debug: (m) => lines.push(m),
            info: (m) => lines.push(m),
            warn: (m) => lines.push(m),
            error: (m) => lines.push(m),
            child: () => log,
          };
          const gate = new UnlockGate(new FakeCStringPam(), { user: 'owner', now: () => clock }, log);
          for (const p of attempts) {
            clock += 60_000; // past any back-off: each attempt reaches the check
            let opened = false;
            try {
              await gate.attempt(p);
              opened = true;
            } catch (e) {
              if (
                !(e instanceof BulkheadError) ||
                !['InvalidArgument', 'AuthenticationFailed'].includes(e.errorName)
              )
                throw new Error(`unexpected answer: ${(e as Error).name}: ${(e as Error).message}`);
            }
            if (opened !== (p === SECRET))
              throw new Error(`the gate ${opened ? 'opened' : 'stayed shut'} for ${JSON.stringify(p)}`);
            if (typeof p === 'string' && p.length >= 6 && lines.some((l) => l.includes(p)))
              throw new Error('a password reached the log');
          }
        }),
        opts,
      ),
  },
];
