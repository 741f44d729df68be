/**
 * Did the machine sleep while no input-daemon guarded the seat? The sleep guard locks the seat at
 * logind's PrepareForSleep, but only while a daemon is subscribed: a sleep in the seconds between a
 * crashed daemon and its successor (systemd's restart delay) went unguarded and woke unlocked.
 *
 * The kernel counts the time the machine has spent asleep since boot: CLOCK_BOOTTIME (what
 * /proc/uptime reads) runs on through a suspend or a hibernation, CLOCK_MONOTONIC (node's hrtime)
 * does not; the difference grows by each sleep's length and by nothing else. Each daemon records
 * that difference in its run dir (a tmpfs: gone at a reboot, as is every sleep before it) once it
 * is subscribed and again at every wake; its successor compares the record with the difference
 * now, after subscribing: grown means a sleep nobody saw, and the seat starts locked.
 */
import { readFileSync } from 'node:fs';
import { readJsonFile, writeFileAtomic } from '@bulkhead/common';

/** Growth below this is the two clocks' read jitter (/proc/uptime has 10 ms steps), not a sleep. */
export const UNSEEN_SLEEP_MIN_MS = 1000;

/** The machine's time asleep since boot, in ms; null where /proc/uptime cannot be read. */
export function asleepSinceBootMs(uptimeFile = '/proc/uptime'): number | null {
  try {
    const monotonicMs = Number(process.hrtime.bigint() / 1_000_000n);
    const boottimeS = Number(readFileSync(uptimeFile, 'utf8').split(' ')[0]);
    if (!Number.isFinite(boottimeS)) return null;
    return Math.max(0, Math.round(boottimeS * 1000 - monotonicMs));
  } catch {
    return null;
  }
}

export type UnseenSleepCheck = { slept: false } | { slept: true; why: string } | { slept: null; why: string }; // not known: no clock

export class SleepRecord {
  constructor(
    /** In the daemon's run dir (survives a restart, not a reboot). */
    private readonly file: string,
    private readonly uptimeFile = '/proc/uptime',
  ) {}

  /**
   * Compares the previous daemon's record with now. No record counts as 0 (the first daemon of a
   * boot: a sleep before it ran is a sleep nobody saw; a record deleted or unreadable is the same).
   */
  check(): UnseenSleepCheck {
    const now = asleepSinceBootMs(this.uptimeFile);
    if (now === null) return { slept: null, why: `${this.uptimeFile} cannot be read` };
    const r = readJsonFile(this.file, (v) => {
      const ms = (v as { asleepSinceBootMs?: unknown })?.asleepSinceBootMs;
      if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0)
        throw new Error('expected {asleepSinceBootMs}');
      return ms;
    });
    const before = r.ok ? r.value : 0;
    const grown = now - before;
    if (grown < UNSEEN_SLEEP_MIN_MS) return { slept: false };
    return {
      slept: true,
      why: `the machine slept ${(grown / 1000).toFixed(1)} s while no input-daemon was subscribed to logind (${r.ok ? `${this.file}` : r.missing ? 'no record: the first daemon of this boot' : r.error})`,
    };
  }

  /** Records the time asleep now; never throws (a lost record makes the next daemon lock). */
  record(): void {
    const now = asleepSinceBootMs(this.uptimeFile);
    if (now === null) return;
    try {
      writeFileAtomic(this.file, JSON.stringify({ asleepSinceBootMs: now }) + '\n', 0o600, {
        durable: false,
      });
    } catch {
      /* see above */
    }
  }
}
