import { spawn } from 'node:child_process';
import { join } from 'node:path';

export interface CallOutcome {
  ok: boolean;
  body?: unknown;
  error?: string;
  message?: string;
}

/** A uid and gid to run a child process as (switching needs root); null: this process's own. */
export type RunAsIds = { uid: number; gid: number } | null;

/**
 * Run `node <args>` as `ids` and collect what it printed: the one spawn of every test helper that
 * acts as another uid (this folder's scripts; vm-daemon's and the switcher's own).
 */
export function runNodeAs(
  ids: RunAsIds,
  args: string[],
  opts: { cwd?: string } = {},
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

/** The last line a helper printed, as the JSON result it promised; `what` names it in the error. */
export function lastJsonLine<T>(run: { out: string; err: string }, what: string): T {
  try {
    return JSON.parse(run.out.trim().split('\n').pop() ?? '') as T;
  } catch {
    throw new Error(`${what} printed no result: ${run.out} ${run.err}`);
  }
}

/** Run one of this folder's helper scripts as `ids`. */
function runHelperAs(ids: RunAsIds, script: string, args: string[]) {
  return runNodeAs(ids, [join(__dirname, script), ...args]);
}

/** A signal for sendSignalsAs (and send-signals-as.ts). */
export interface SignalToSend {
  destination?: string;
  path: string;
  interface: string;
  member: string;
  signature: string;
  body: unknown[];
}

/** Run one D-Bus call in a child process with the given uid/gid (needs root to switch). */
export function callAs(
  ids: { uid: number; gid: number } | null,
  address: string,
  dest: string,
  path: string,
  iface: string,
  member: string,
  signature: string,
  body: unknown[],
): Promise<CallOutcome> {
  return runHelperAs(ids, 'call-as.js', [
    address,
    dest,
    path,
    iface,
    member,
    signature,
    JSON.stringify(body),
  ]).then((run) => lastJsonLine<CallOutcome>(run, 'call-as'));
}

export interface SeenSignal {
  sender: string;
  path: string;
  interface: string;
  member: string;
  /** The signal's string arguments (nested ones included). */
  strings: string[];
}

export interface SignalWatcher {
  /** Every signal received so far (bus daemon's own signals left out). */
  signals: SeenSignal[];
  /** Resolves once a received signal satisfies `pred`; rejects when the watcher exits first. */
  until(pred: (s: SeenSignal) => boolean): Promise<SeenSignal>;
  stop(): Promise<void>;
}

/**
 * Watch every signal on the bus from a child process with the given uid/gid (needs root to
 * switch; null = this process's uid). Resolves once the child's match rule is installed.
 */
export async function watchSignalsAs(
  ids: { uid: number; gid: number } | null,
  address: string,
): Promise<SignalWatcher> {
  const child = spawn(process.execPath, [join(__dirname, 'watch-signals-as.js'), address], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
  });
  const signals: SeenSignal[] = [];
  const waiters: Array<() => void> = [];
  let err = '';
  let buf = '';
  let ready!: () => void;
  let exited = false;
  const readyP = new Promise<void>((resolve) => (ready = resolve));
  child.stderr.on('data', (d) => (err += d));
  child.stdout.on('data', (d) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === 'READY') ready();
      else if (line) signals.push(JSON.parse(line) as SeenSignal);
    }
    for (const w of waiters.splice(0)) w();
  });
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      for (const w of waiters.splice(0)) w();
      resolve();
    }),
  );
  await Promise.race([
    readyP,
    exit.then(() => {
      throw new Error(`signal watcher exited before it was ready: ${err}`);
    }),
  ]);
  return {
    signals,
    until: (pred) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = signals.find(pred);
          if (hit) return resolve(hit);
          if (exited) return reject(new Error(`signal watcher exited: ${err}`));
          waiters.push(check);
        };
        check();
      }),
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await exit;
    },
  };
}

/**
 * Send signals from a child process with the given uid/gid (see send-signals-as.ts); resolves
 * with the sender's unique name once the bus daemon has routed them.
 */
export function sendSignalsAs(
  ids: { uid: number; gid: number } | null,
  address: string,
  signals: SignalToSend[],
): Promise<string> {
  return runHelperAs(ids, 'send-signals-as.js', [address, JSON.stringify(signals)]).then(
    ({ code, out, err }) => {
      if (code === 0 && out.trim()) return out.trim();
      throw new Error(`send-signals-as: ${err}`);
    },
  );
}
