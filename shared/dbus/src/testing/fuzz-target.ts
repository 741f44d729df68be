/**
 * The shape every fuzz target exports (from a `*.fuzz.ts` module, as `fuzzTargets`), so that the
 * fixed-seed test (`*.fuzz.test.ts`, part of `npm test`) and the long random run
 * (`npm run fuzz` → scripts/fuzz.mjs) execute the very same property.
 */
import fc from 'fast-check';

export interface FuzzRunOptions {
  /** fast-check seed: fixed in tests, random under `npm run fuzz`. */
  seed: number;
  /** Stop after this many executions (default: unbounded when timeLimitMs is set, else 100). */
  numRuns?: number;
  /** Stop after this long (the fuzz runner's time share for the target). */
  timeLimitMs?: number;
}

export interface FuzzFinding {
  seed: number;
  /** fast-check's replay path (fc.assert(prop, {seed, path})). */
  path: string;
  counterexample: string;
  error: string;
}

export interface FuzzResult {
  executions: number;
  finding: FuzzFinding | null;
}

export interface FuzzTarget {
  name: string;
  run(opts: FuzzRunOptions): Promise<FuzzResult>;
}

const show = (v: unknown): string => {
  const s = fc.stringify(v);
  return s.length > 2000 ? `${s.slice(0, 2000)}... (${s.length} chars)` : s;
};

/** Run a (sync or async) fast-check property with the runner's options; never throws. */
export async function checkProperty<Ts extends [unknown, ...unknown[]]>(
  property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>,
  opts: FuzzRunOptions,
): Promise<FuzzResult> {
  const params: fc.Parameters<Ts> = {
    seed: opts.seed,
    numRuns: opts.numRuns ?? (opts.timeLimitMs ? 1_000_000_000 : 100),
    ...(opts.timeLimitMs ? { interruptAfterTimeLimit: opts.timeLimitMs, markInterruptAsFailure: false } : {}),
    // Shrinking a slow (process-level) property can take longer than the whole run.
    endOnFailure: opts.timeLimitMs !== undefined && opts.timeLimitMs > 0 ? false : undefined,
  };
  const details = await fc.check(property as fc.IAsyncProperty<Ts>, params);
  const executions = details.numRuns;
  if (!details.failed || (details.interrupted && details.counterexample === null))
    return { executions, finding: null };
  return {
    executions,
    finding: {
      seed: details.seed,
      path: details.counterexamplePath ?? '',
      counterexample: show(details.counterexample),
      error: String((details.errorInstance as Error)?.stack ?? details.errorInstance ?? 'property failed'),
    },
  };
}

/** The message a fixed-seed test fails with: everything needed to replay the finding. */
export function describeFinding(target: string, f: FuzzFinding): string {
  return `${target}: property failed (seed ${f.seed}, path "${f.path}")\ncounterexample: ${f.counterexample}\n${f.error}`;
}
