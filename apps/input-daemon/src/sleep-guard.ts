/**
 * Every sleep locks the seat first (security model item 10), also while vm-daemon is down.
 *
 * vm-daemon's suspend transaction locks the seat before a sleep behind its own `sleep` delay
 * inhibitor; but while vm-daemon is not running (a crash, a SIGKILL, the second before systemd
 * restarts it) nothing held `systemctl suspend` or UPower's critical-battery action back, and the
 * machine slept, and woke, with a person's VM on the screen and the seat unlocked. input-daemon,
 * which owns the lock, therefore holds a `sleep` delay inhibitor of its own: at logind's
 * PrepareForSleep(true) it locks the seat at once (the secure-attention chord's path: a switch
 * still queued is refused, the lock screen is called home), then releases the inhibitor so the
 * sleep goes on; at PrepareForSleep(false) it takes a new one. A seat already locked stays locked.
 *
 * logind is looked up on the bus the daemon is on, as vm-daemon does: the system bus in the image,
 * fake-logind on a test bus; with no logind there, no inhibitor is taken.
 */
import type { Logger } from '@bulkhead/common';
import {
  InhibitorLock,
  LOGIN1_NAME,
  LogindClient,
  type BusClient,
  type InhibitorLockOptions,
} from '@bulkhead/dbus';
import type { SleepRecord } from './sleep-record';

/** The inhibitor as the guard uses it (an InhibitorLock; a fake in tests). */
export interface DelayLock {
  take(): void;
  release(): void;
}

export interface SleepGuardOptions {
  client: BusClient;
  /** The bus the daemon is on: 'system' or a private address (handed to systemd-inhibit). */
  bus: string;
  /** Locks the seat at once (InputService.lockForSleep). */
  lockSeat(): void;
  log: Logger;
  /** Makes the delay inhibitor; default an InhibitorLock (systemd-inhibit). Tests pass a fake. */
  delayLock?: (opts: InhibitorLockOptions) => DelayLock;
  /**
   * Finds a sleep that no daemon saw (this one's predecessor crashed, systemd had not started this
   * one yet) and records the time asleep for the next daemon (sleep-record.ts); none: not checked.
   */
  sleepRecord?: SleepRecord;
}

export interface SleepGuard {
  close(): Promise<void>;
}

/** Starts guarding the seat against sleeps; null when logind is not on the bus. */
export async function startSleepGuard(opts: SleepGuardOptions): Promise<SleepGuard | null> {
  const log = opts.log.child('sleep');
  const logind = new LogindClient(opts.client);
  if (!(await logind.isPresent())) {
    // Expected on a demo or test bus; on the system bus a sleep would now leave the seat unlocked.
    log[opts.bus === 'system' ? 'warn' : 'info'](
      `${LOGIN1_NAME} is not on the bus: no sleep inhibitor (a sleep would not lock the seat)`,
    );
    return null;
  }
  const lockOpts: InhibitorLockOptions = {
    what: 'sleep',
    mode: 'delay',
    who: 'Bulkhead input-daemon',
    why: 'Lock the seat before sleeping',
    bus: opts.bus,
    log,
  };
  const delayLock = opts.delayLock ? opts.delayLock(lockOpts) : new InhibitorLock(lockOpts);
  logind.onPrepareForSleep((start) => {
    if (start) {
      // Before the release: logind sleeps as soon as the last delay lock is gone.
      opts.lockSeat();
      log.info('PrepareForSleep: seat locked, sleep may go on');
      delayLock.release();
    } else {
      delayLock.take();
      // This sleep was seen (the seat was locked for it): the next daemon counts from here.
      opts.sleepRecord?.record();
      log.info('woke up: sleep inhibitor taken again');
    }
  });
  // Subscribed (through BusClient: only the current owner of login1's signals count) before the
  // lock is taken: no PrepareForSleep falls between the two.
  await logind.start();
  delayLock.take();
  log.info('holding a sleep delay inhibitor: every sleep locks the seat first');
  // From here every sleep is seen; one before (between the previous daemon and this one) is not.
  if (opts.sleepRecord) {
    const unseen = opts.sleepRecord.check();
    if (unseen.slept) {
      opts.lockSeat();
      log.warn(`${unseen.why}: the seat is locked`);
    } else if (unseen.slept === null)
      log.warn(`cannot tell whether the machine slept unguarded: ${unseen.why}`);
    opts.sleepRecord.record();
  }
  return {
    async close() {
      delayLock.release();
    },
  };
}
