import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The node flags a daemon's systemd unit runs it with (ExecStart=…/node FLAGS …/main.js), so that
 * tests measure the daemon as the image runs it (e.g. its V8 heap bounds).
 */
export function unitNodeFlags(unit: string): string[] {
  const file = unitFile(unit);
  const exec = /^ExecStart=\S*\/node\s+(.*?)\s*\S+\/main\.js/m.exec(readFileSync(file, 'utf8'));
  if (!exec) throw new Error(`${file}: no ExecStart=…/node … main.js line`);
  return exec[1].split(/\s+/).filter((f) => f.startsWith('--'));
}

/**
 * The unit's Environment= settings of glibc's allocator (MALLOC_*), which shape the daemon's RSS
 * as much as its V8 flags do; the rest of its environment (the bus, …) is the test's to set.
 */
export function unitMallocEnv(unit: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(unitFile(unit), 'utf8').split('\n')) {
    if (!line.startsWith('Environment=')) continue;
    for (const pair of line.slice('Environment='.length).split(/\s+/)) {
      const m = /^(MALLOC_[A-Z_]+)=(\S+)$/.exec(pair);
      if (m) env[m[1]] = m[2];
    }
  }
  return env;
}

function unitFile(unit: string): string {
  return join(__dirname, '..', '..', '..', '..', 'dom0-rootfs', 'overlay', 'etc', 'systemd', 'system', unit);
}

export interface DaemonProcess {
  child: ChildProcess;
  /** Everything the daemon logged (stderr). */
  log(): string;
  /** SIGTERM (VMs keep running unless --stop-vms-on-exit) and wait for the exit. */
  stop(): Promise<void>;
}

/** Run dist/main.js as its own process (as systemd would), wait for "ready on". */
export async function spawnDaemon(opts: {
  bus: string;
  configDir: string;
  runDir: string;
  stateDir: string;
  args?: string[];
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}): Promise<DaemonProcess> {
  const child = spawn(
    process.execPath,
    [
      ...unitNodeFlags('bulkhead-vm-daemon.service'),
      join(__dirname, '..', 'main.js'),
      '--config-dir',
      opts.configDir,
      '--run-dir',
      opts.runDir,
      '--state-dir',
      opts.stateDir,
      ...(opts.args ?? []),
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: {
        ...process.env,
        ...unitMallocEnv('bulkhead-vm-daemon.service'),
        BULKHEAD_BUS: opts.bus,
        BULKHEAD_ACCEL: 'tcg',
        ...opts.env,
      },
    },
  );
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`vm-daemon not ready within ${opts.readyTimeoutMs ?? 20000} ms:\n${log}`)),
      opts.readyTimeoutMs ?? 20000,
    );
    const onData = () => {
      if (log.includes(' ready on ')) {
        clearTimeout(timer);
        child.stderr!.off('data', onData);
        resolve();
      }
    };
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vm-daemon exited with ${code} before ready:\n${log}`));
    });
  });
  return {
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

export async function waitFor<T>(
  what: string,
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  everyMs = 25,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Whether a process with this pid exists (signal 0: nothing is sent). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
