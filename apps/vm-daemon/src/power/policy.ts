/**
 * The power policy file (`/etc/bulkhead/power.json`): what the lid, the power key and a critical
 * battery do. Read with the same rules as a VM definition (regular root-owned file, not writable
 * by others, size-capped, never a FIFO or symlink: config-files.ts) and validated the same way:
 * unknown fields and out-of-range values are errors naming the file and the field, and a bad file
 * applies nothing — the daemon keeps the safe defaults and reports the error.
 */
import { existsSync } from 'node:fs';
import type { ConfigError } from '../config';
import { describeValue, fieldName } from '../config-text';
import { defaultFileRules, readDefinitionFile, type FileRules } from '../config-files';

export const KEY_ACTIONS = ['suspend', 'lock', 'nothing'] as const;
export type KeyAction = (typeof KEY_ACTIONS)[number];
export const CRITICAL_ACTIONS = ['suspend', 'hibernate', 'nothing'] as const;
export type CriticalAction = (typeof CRITICAL_ACTIONS)[number];

export interface PowerPolicy {
  /** Closing the lid. */
  lid: KeyAction;
  /** Pressing the power key. */
  powerKey: KeyAction;
  /** The battery at or under criticalPercent while on battery. */
  critical: CriticalAction;
  /** At or under this, the switcher warns (percent, 1-100). */
  lowPercent: number;
  /** At or under this, `critical` is done (percent, 1-100, below lowPercent). */
  criticalPercent: number;
}

/** What a laptop does with no policy file: suspend on lid and key, suspend on a critical battery. */
export const DEFAULT_POWER_POLICY: Readonly<PowerPolicy> = Object.freeze({
  lid: 'suspend',
  powerKey: 'suspend',
  critical: 'suspend',
  lowPercent: 10,
  criticalPercent: 5,
});

export const DEFAULT_POWER_POLICY_FILE = '/etc/bulkhead/power.json';

export type PolicyParse = { ok: true; policy: PowerPolicy } | { ok: false; error: ConfigError };

/** Validate the text of a power policy file; every field optional, none unknown. */
export function parsePowerPolicy(file: string, text: string): PolicyParse {
  const fail = (field: string, reason: string): PolicyParse => ({
    ok: false,
    error: { file, field, reason },
  });
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return fail('(file)', `not valid JSON: ${(e as Error).message.slice(0, 120)}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return fail('(file)', `must be a JSON object, got ${describeValue(raw)}`);
  const obj = raw as Record<string, unknown>;
  const policy: PowerPolicy = { ...DEFAULT_POWER_POLICY };
  for (const [k, v] of Object.entries(obj)) {
    switch (k) {
      case '$comment':
        break;
      case 'lid':
      case 'powerKey':
        if (!KEY_ACTIONS.includes(v as KeyAction))
          return fail(k, `must be one of ${KEY_ACTIONS.join(' | ')}, got ${describeValue(v)}`);
        policy[k] = v as KeyAction;
        break;
      case 'critical':
        if (!CRITICAL_ACTIONS.includes(v as CriticalAction))
          return fail(k, `must be one of ${CRITICAL_ACTIONS.join(' | ')}, got ${describeValue(v)}`);
        policy.critical = v as CriticalAction;
        break;
      case 'lowPercent':
      case 'criticalPercent':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 100)
          return fail(k, `must be a whole number from 1 to 100, got ${describeValue(v)}`);
        policy[k] = v;
        break;
      default:
        return fail(
          fieldName(k),
          'unknown field (known: lid, powerKey, critical, lowPercent, criticalPercent)',
        );
    }
  }
  if (policy.criticalPercent >= policy.lowPercent)
    return fail(
      'criticalPercent',
      `must be below lowPercent (${policy.lowPercent}), got ${policy.criticalPercent}`,
    );
  return { ok: true, policy };
}

export interface LoadedPowerPolicy {
  policy: PowerPolicy;
  /** Why the file was not applied (the defaults are in force), or null. */
  error: ConfigError | null;
}

/** Read and validate the policy file. A missing file means the defaults; a bad one, the defaults and its error. */
export function loadPowerPolicy(file: string, rules: FileRules = defaultFileRules()): LoadedPowerPolicy {
  if (!existsSync(file)) return { policy: { ...DEFAULT_POWER_POLICY }, error: null };
  const read = readDefinitionFile(file, rules);
  if (!read.ok)
    return { policy: { ...DEFAULT_POWER_POLICY }, error: { file, field: '(file)', reason: read.reason } };
  const parsed = parsePowerPolicy(file, read.text);
  return parsed.ok
    ? { policy: parsed.policy, error: null }
    : { policy: { ...DEFAULT_POWER_POLICY }, error: parsed.error };
}
