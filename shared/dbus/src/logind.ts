/**
 * logind (org.freedesktop.login1) for the daemons: PrepareForSleep, sleeping through logind (so
 * the system's own rules apply: other inhibitors, PrepareForSleep for every service, nothing
 * sleeps behind logind's back) and inhibitor locks. vm-daemon's power component uses all three;
 * input-daemon holds a `sleep` delay lock of its own, so the seat is locked before any sleep even
 * while vm-daemon is down (apps/input-daemon/src/sleep-guard.ts).
 *
 * Inhibitor locks: logind hands a lock out as a file descriptor, which dbus-next cannot receive
 * (it has no fd passing without the optional native `usocket`). A lock is therefore held by a
 * `systemd-inhibit … cat` child, the tool logind ships for exactly this; releasing it
 * is closing its pipe (below). systemd-inhibit talks to the system bus, or to the bus
 * the daemon is on when that is a private address (DBUS_SYSTEM_BUS_ADDRESS).
 *
 * The command run under the lock is `cat` reading a pipe from the daemon: when the daemon dies in
 * any way (SIGKILL included), the pipe closes, cat ends, systemd-inhibit exits and logind drops
 * the lock. vm-daemon's unit has KillMode=process (so QEMUs outlive a restart), which would
 * otherwise leave every crashed instance's lock behind, blocking the keys and delaying every
 * sleep for good.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { BusClient } from './client';

export const LOGIN1_NAME = 'org.freedesktop.login1';
export const LOGIN1_PATH = '/org/freedesktop/login1';
export const LOGIN1_MANAGER = 'org.freedesktop.login1.Manager';

export type SleepKind = 'suspend' | 'hibernate';

/** How long logind may take from our Suspend call to its PrepareForSleep(true). */
export const SLEEP_START_TIMEOUT_MS = 60_000;

export class LogindClient {
  private readonly sleepListeners: Array<(start: boolean) => void> = [];

  constructor(private readonly client: BusClient) {}

  /**
   * Whether logind is on this bus. A demo's or a test's private bus has none; a failed call counts
   * as none (the caller then runs without a sleep inhibitor and says so).
   */
  async isPresent(): Promise<boolean> {
    const [has] = await this.client
      .call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'NameHasOwner', 's', [
        LOGIN1_NAME,
      ])
      .catch(() => [false]);
    return has === true;
  }

  /** Follow PrepareForSleep (true = about to sleep, false = woke up), whoever asked for the sleep. */
  async start(): Promise<void> {
    await this.client.subscribe(
      { sender: LOGIN1_NAME, path: LOGIN1_PATH, interface: LOGIN1_MANAGER, member: 'PrepareForSleep' },
      (msg) => {
        const start = msg.body[0];
        if (typeof start !== 'boolean') return;
        for (const fn of [...this.sleepListeners]) fn(start);
      },
    );
  }

  onPrepareForSleep(fn: (start: boolean) => void): () => void {
    this.sleepListeners.push(fn);
    return () => {
      const i = this.sleepListeners.indexOf(fn);
      if (i >= 0) this.sleepListeners.splice(i, 1);
    };
  }

  /**
   * Ask logind to sleep and resolve once the machine woke up again (PrepareForSleep(false)).
   * Rejects when logind refuses (its error's words), or does not begin sleeping in time; the
   * wake itself has no time limit (a laptop may stay shut overnight).
   */
  async sleep(kind: SleepKind): Promise<void> {
    let started = false;
    let onStarted!: () => void;
    let onWoke!: () => void;
    const startedP = new Promise<void>((r) => (onStarted = r));
    const wokeP = new Promise<void>((r) => (onWoke = r));
    const off = this.onPrepareForSleep((start) => {
      if (start) {
        started = true;
        onStarted();
      } else if (started) onWoke();
    });
    try {
      await this.client.call(
        LOGIN1_NAME,
        LOGIN1_PATH,
        LOGIN1_MANAGER,
        kind === 'suspend' ? 'Suspend' : 'Hibernate',
        'b',
        [false],
        { timeoutMs: 30_000 },
      );
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        startedP,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(
                  `logind accepted ${kind} but did not start sleeping within ${SLEEP_START_TIMEOUT_MS / 1000} s`,
                ),
              ),
            SLEEP_START_TIMEOUT_MS,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      await wokeP;
    } finally {
      off();
    }
  }
}

export interface InhibitorLockOptions {
  what: string;
  mode: 'block' | 'delay';
  /** Who holds it, as systemd-inhibit --list shows ('Bulkhead vm-daemon'). */
  who: string;
  why: string;
  /** The bus the daemon is on: 'system' or a private address handed to systemd-inhibit. */
  bus: string;
  log: { warn(msg: string): void; info(msg: string): void };
  /** Instead of systemd-inhibit (tests). */
  command?: string;
}

/** One logind inhibitor lock, held by a systemd-inhibit child for as long as it runs. */
export class InhibitorLock {
  private child: ChildProcess | null = null;
  private releasing = false;

  constructor(private readonly opts: InhibitorLockOptions) {}

  get held(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  take(): void {
    if (this.held) return;
    this.releasing = false;
    const env = { ...process.env };
    if (this.opts.bus !== 'system' && this.opts.bus !== 'session')
      env.DBUS_SYSTEM_BUS_ADDRESS = this.opts.bus;
    const child = spawn(
      this.opts.command ?? 'systemd-inhibit',
      [
        `--what=${this.opts.what}`,
        `--mode=${this.opts.mode}`,
        `--who=${this.opts.who}`,
        `--why=${this.opts.why}`,
        '--',
        'cat',
      ],
      { env, stdio: ['pipe', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-500)));
    child.on('error', (e) => this.opts.log.warn(`inhibitor ${this.opts.what}: ${e.message}`));
    // Writing nothing: the pipe is only there to close when the daemon goes away.
    child.stdin?.on('error', () => undefined);
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      if (!this.releasing)
        this.opts.log.warn(
          `inhibitor ${this.opts.what} (${this.opts.mode}) ended (${code ?? signal}): ${err.trim() || 'no message'}`,
        );
    });
    this.child = child;
  }

  release(): void {
    const child = this.child;
    this.child = null;
    this.releasing = true;
    // EOF ends cat, so systemd-inhibit exits and the lock is gone; nothing is left running.
    child?.stdin?.end();
  }

  /** The systemd-inhibit process holding the lock (tests). */
  get pid(): number | undefined {
    return this.held ? this.child?.pid : undefined;
  }
}
