import type { ToolResult, XenTool, XenstoreWatch, XlRunner } from '../backend/xen/xl-runner';

/** One scripted answer: a matcher on "tool arg arg..." and the result (or a function making it). */
export interface FakeXlRule {
  match: RegExp | string;
  result: Partial<ToolResult> | ((line: string) => Partial<ToolResult> | Promise<Partial<ToolResult>>);
  /** Answer only this many times (default: always). */
  times?: number;
}

/**
 * A scripted XlRunner for unit tests: answers commands from rules (first match wins, later
 * `on()` calls take precedence), records every command line in `calls`, and fires xenstore
 * watches on demand (`fire`). Unmatched commands fail like xl does for an unknown thing.
 * `delayMs` makes every command take that long (the GPU hand-off benchmark uses it).
 */
export class FakeXlRunner implements XlRunner {
  readonly calls: string[] = [];
  private rules: FakeXlRule[] = [];
  private watches = new Map<string, Set<(p: string) => void>>();
  /** Time spent "inside xl" (the sum of delays), for the benchmark. */
  busyMs = 0;

  constructor(public delayMs = 0) {}

  on(match: RegExp | string, result: FakeXlRule['result'], times?: number): this {
    this.rules.unshift({ match, result, times });
    return this;
  }

  async run(tool: XenTool, args: string[], _timeoutMs: number): Promise<ToolResult> {
    const line = [tool, ...args].join(' ');
    this.calls.push(line);
    if (this.delayMs > 0) {
      const t = performance.now();
      await new Promise((r) => setTimeout(r, this.delayMs));
      this.busyMs += performance.now() - t;
    }
    const rule = this.rules.find((r) =>
      typeof r.match === 'string' ? line === r.match : r.match.test(line),
    );
    if (!rule) return { code: 1, stdout: '', stderr: `FakeXlRunner: no scripted answer for '${line}'` };
    if (rule.times !== undefined && --rule.times <= 0) this.rules = this.rules.filter((r) => r !== rule);
    const res = typeof rule.result === 'function' ? await rule.result(line) : rule.result;
    return { code: res.code ?? 0, stdout: res.stdout ?? '', stderr: res.stderr ?? '' };
  }

  watch(path: string, onFire: (path: string) => void): XenstoreWatch {
    const set = this.watches.get(path) ?? new Set();
    set.add(onFire);
    this.watches.set(path, set);
    return { close: () => set.delete(onFire) };
  }

  /** Fire a watch as xenstored would (e.g. '@releaseDomain' after a domain died). */
  fire(path: string): void {
    for (const f of this.watches.get(path) ?? []) f(path);
  }

  /** Commands run so far that match, e.g. callsMatching(/^xl pci-/). */
  callsMatching(re: RegExp): string[] {
    return this.calls.filter((c) => re.test(c));
  }
}
