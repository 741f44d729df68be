import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AfterStepHook } from './switch-transaction';

/**
 * A test hook (never set in production): with BULKHEAD_TEST_SWITCH_GATE=<dir>, a switch stops
 * after step X while the file <dir>/hold-after-X exists, having written <dir>/at-X (its target).
 * Tests use it to press keys or kill a VM at an exact point of a running switch, with no timing.
 */
export function switchGateFromEnv(env: NodeJS.ProcessEnv): AfterStepHook | undefined {
  const dir = env.BULKHEAD_TEST_SWITCH_GATE;
  if (!dir) return undefined;
  return async (step, target) => {
    const hold = join(dir, `hold-after-${step}`);
    if (!existsSync(hold)) return;
    writeFileSync(join(dir, `at-${step}`), target);
    while (existsSync(hold)) await new Promise((r) => setTimeout(r, 10));
  };
}
