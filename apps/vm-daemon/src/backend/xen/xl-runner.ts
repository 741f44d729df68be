/**
 * Everything the Xen backend runs goes through an XlRunner: `xl` and the xenstore tools
 * (xenstore-read, xenstore-list, xenstore-write, xenstore-rm) as one-shot commands, and
 * `xenstore-watch` as a long-lived watch. Unit tests pass a FakeXlRunner with recorded outputs;
 * ExecXlRunner runs the real programs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { BulkheadError } from '@bulkhead/contract';

export type XenTool =
  'xl' | 'xenstore-read' | 'xenstore-list' | 'xenstore-write' | 'xenstore-rm' | 'xenstore-exists';

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface XenstoreWatch {
  close(): void;
}

export interface XlRunner {
  /**
   * Run one tool to completion. Rejects only when the program cannot run, overruns `timeoutMs`,
   * or `signal` aborts it (then it is killed: for read-only commands such as `xl list -l`).
   */
  run(tool: XenTool, args: string[], timeoutMs: number, signal?: AbortSignal): Promise<ToolResult>;
  /**
   * Watch a xenstore path (or a special path such as @releaseDomain): `onFire` gets the path that
   * fired (the watch also fires once when registered); `onEnd` when the watcher exits.
   */
  watch(path: string, onFire: (path: string) => void, onEnd: (why: string) => void): XenstoreWatch;
}

/** Longest output kept from one command (`xl list -l` of many domains is a few hundred KiB). */
const MAX_OUTPUT = 8 << 20;

/** Runs the real programs (found on PATH, or under `binDir` when given). */
export class ExecXlRunner implements XlRunner {
  constructor(private readonly binDir: string | null = null) {}

  private path(tool: string): string {
    return this.binDir ? `${this.binDir}/${tool}` : tool;
  }

  run(tool: XenTool, args: string[], timeoutMs: number, signal?: AbortSignal): Promise<ToolResult> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new BulkheadError('BackendFailed', `${tool} ${args.join(' ')} cancelled`));
        return;
      }
      let child: ChildProcess;
      try {
        child = spawn(this.path(tool), args, { stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        reject(new BulkheadError('BackendFailed', `cannot run ${tool}: ${(e as Error).message}`));
        return;
      }
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outLen = 0;
      let errLen = 0;
      child.stdout!.on('data', (b: Buffer) => {
        if ((outLen += b.length) <= MAX_OUTPUT) out.push(b);
      });
      child.stderr!.on('data', (b: Buffer) => {
        if ((errLen += b.length) <= MAX_OUTPUT) err.push(b);
      });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(
          new BulkheadError(
            'Timeout',
            `${tool} ${args.join(' ')} did not finish within ${timeoutMs} ms (killed)`,
          ),
        );
      }, timeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new BulkheadError('BackendFailed', `${tool} ${args.join(' ')} cancelled (killed)`));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      child.once('close', () => signal?.removeEventListener('abort', onAbort));
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new BulkheadError('BackendFailed', `cannot run ${tool}: ${e.message}`));
      });
      child.once('close', (code, sig) => {
        clearTimeout(timer);
        resolve({
          code: code ?? (sig ? 128 : 1),
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8') + (sig ? `\n(killed by ${sig})` : ''),
        });
      });
    });
  }

  watch(path: string, onFire: (path: string) => void, onEnd: (why: string) => void): XenstoreWatch {
    let closed = false;
    const child = spawn(this.path('xenstore-watch'), [path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let lastErr = '';
    child.stderr!.on('data', (b: Buffer) => (lastErr = b.toString('utf8').trim().split('\n').pop() ?? ''));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      // xenstore-watch prints "<path>" or "<path> <token>" per event.
      if (!closed && l.trim()) onFire(l.trim().split(/\s+/)[0]);
    });
    child.once('error', (e) => !closed && onEnd(`cannot run xenstore-watch: ${e.message}`));
    child.once(
      'exit',
      (code, sig) =>
        !closed && onEnd(`xenstore-watch ${path} exited (${sig ?? code})${lastErr ? `: ${lastErr}` : ''}`),
    );
    return {
      close: () => {
        closed = true;
        child.kill('SIGTERM');
      },
    };
  }
}

/** The lines xl prints that carry its reason (libxl errors), or its whole stderr when none match. */
export function xlMessage(stderr: string, stdout = ''): string {
  const lines = (stderr + '\n' + stdout)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const meaningful = lines.filter(
    (l) => !/^(Parsing config from|libxl: debug|xl: debug|Waiting for domain)/.test(l),
  );
  const errors = meaningful.filter((l) => /error|fail|cannot|can't|invalid|not |unable|no such/i.test(l));
  const chosen = (errors.length ? errors : meaningful).slice(-6);
  const text = chosen.join(' | ');
  return text.length > 1500 ? text.slice(0, 1500) + '…' : text || '(xl printed nothing)';
}

/**
 * Run `xl <args>`; a non-zero exit becomes BulkheadError('BackendFailed') with xl's own message.
 * Timeouts stay 'Timeout'; a missing xl stays BackendFailed ("cannot run xl").
 */
export async function xl(
  runner: XlRunner,
  args: string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<string> {
  const r = await runner.run('xl', args, timeoutMs, signal);
  if (r.code !== 0)
    throw new BulkheadError(
      'BackendFailed',
      `xl ${args.join(' ')} failed (exit ${r.code}): ${xlMessage(r.stderr, r.stdout)}`,
    );
  return r.stdout;
}

/** xenstore-read of one path; null when the path does not exist. */
export async function xenstoreRead(runner: XlRunner, path: string, timeoutMs = 5000): Promise<string | null> {
  const r = await runner.run('xenstore-read', [path], timeoutMs);
  if (r.code !== 0) {
    if (/not found|No such file|ENOENT/i.test(r.stderr) || r.stderr.trim() === '') return null;
    throw new BulkheadError(
      'BackendFailed',
      `xenstore-read ${path} failed (exit ${r.code}): ${r.stderr.trim()}`,
    );
  }
  return r.stdout.replace(/\n$/, '');
}

/** xenstore-list of one directory; [] when it does not exist. */
export async function xenstoreList(runner: XlRunner, path: string, timeoutMs = 5000): Promise<string[]> {
  const r = await runner.run('xenstore-list', [path], timeoutMs);
  if (r.code !== 0) {
    if (/not found|No such file|ENOENT/i.test(r.stderr) || r.stderr.trim() === '') return [];
    throw new BulkheadError(
      'BackendFailed',
      `xenstore-list ${path} failed (exit ${r.code}): ${r.stderr.trim()}`,
    );
  }
  return r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}
