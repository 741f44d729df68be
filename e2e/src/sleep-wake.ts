/**
 * A sleep and a wake of the Control Domain image, seen from outside, as power.e2e.ts (KVM entry)
 * and power-xen.e2e.ts (Xen entry) drive them: the outer QEMU (S3 enabled) reports 'suspended',
 * `system_wakeup` opens the lid again, and the outer screen is judged from QMP screendumps alone
 * (nothing inside is asked to paint). Each file keeps its own bounds and names as options.
 */
import assert from 'node:assert/strict';
import { existsSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { ImageMachine } from './image-machine';
import { classify, colorPixels, readPpm, type Rgb, type SeenPicture } from './screen-picture';
import { OWNER_PASSWORD, unlockOnLockScreen } from './kiosk';
import { waitFor } from './wait';

/** The outer QEMU's run state: 'running', 'suspended' (S3), … */
export const runState = async (m: ImageMachine) =>
  ((await m.qmp.execute('query-status', {})) as { status: string }).status;

/** Input1.Locked: the seat is locked. */
export const locked = async (m: ImageMachine) =>
  /true/.test(
    await m.busProperty('org.bulkhead.Input1', '/org/bulkhead/Input1', 'org.bulkhead.Input1', 'Locked'),
  );

/** Power1.LastSuspend as busctl prints it (a{sv}, one line). */
export const lastSuspend = (m: ImageMachine) =>
  m.busProperty('org.bulkhead.VmManager1', '/org/bulkhead/Power1', 'org.bulkhead.Power1', 'LastSuspend');

/** The lock screen is on the outer screen when this much of the Unlock button (~280x44 px) shows. */
export const LOCK_SCREEN_PX = 5000;

/**
 * One sleep and wake, timed from outside: `since` (the power key, or the battery set critical) →
 * the outer QEMU reporting S3 'suspended' → `system_wakeup` → 'running' again → the serial
 * console's shell answering → the lock screen on the outer screen (screendumps alone, polled from
 * the wake on).
 */
export interface SleepTiming {
  what: string;
  toSuspendedMs: number;
  wakeToRunningMs: number;
  wakeToShellMs: number;
  /** system_wakeup → the first screendump showing the lock screen; -1: not within the bound. */
  wakeToLockScreenMs: number;
  lockScreenPx: number;
}

export interface SleepWakeOptions {
  /** Where the polled pictures are written (and removed) and suspend-resume.json is kept. */
  artifactsDir: string;
  /** Keeps the outer screen as a PNG named after `name`, under the file's next step number. */
  keep: (name: string) => Promise<unknown>;
  /** The image's VMs as the screen classification looks for them. */
  vms: ReadonlyArray<{ id: string; color: Rgb }>;
  /** The Unlock button's colour; undefined while not known (then no picture counts as the lock screen). */
  unlockColor: () => Rgb | undefined;
  /** How often the outer screen is asked while polling. */
  pollMs: number;
  /** Bound on the serial console's shell answering after the wake. */
  shellBoundMs: number;
  /** The lock screen's picture after a wake is named `${what}${lockScreenSuffix}`. */
  lockScreenSuffix: string;
  /** sleptAndWoken returns only when Power1.LastSuspend has the transaction's outcome. */
  awaitOutcome: boolean;
  /** Run after each wake, once the lock screen was seen or its bound passed. */
  afterWake?: (what: string) => Promise<void>;
}

const describe = (p: SeenPicture) =>
  p.kind === 'vm' ? `the ${p.id} VM` : p.kind === 'tiles' ? 'the tiles' : p.why;

export class SleepWake {
  /** Every sleep so far (also written to suspend-resume.json after each). */
  readonly timings: SleepTiming[] = [];

  constructor(
    private readonly m: ImageMachine,
    private readonly o: SleepWakeOptions,
  ) {}

  /** Waits until the outer QEMU says the Control Domain sleeps (S3), then wakes it as a lid would. */
  async sleptAndWoken(what: string, since: number): Promise<SleepTiming> {
    const { m, o } = this;
    await waitFor(
      `${what}: the outer QEMU reporting the Control Domain suspended (S3)`,
      async () => (await runState(m)) === 'suspended',
      120_000,
      100,
    );
    const suspendedAt = Date.now();
    await o.keep(`${what}-asleep`).catch(() => undefined);
    // Asleep for a moment, as a laptop with its lid shut.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(await runState(m), 'suspended', 'still asleep until woken');
    const wokeAt = Date.now();
    await m.qmp.execute('system_wakeup', {});
    // The outer screen from the wake on, while the rest is checked: nothing but screendump is
    // asked of it (no DevTools screenshot, which would make Chromium paint).
    const picture = this.lockScreenShown(`${what}${o.lockScreenSuffix}`, wokeAt, 180_000);
    await waitFor(`${what}: running again`, async () => (await runState(m)) === 'running', 60_000, 100);
    const runningAt = Date.now();
    // The serial console's shell is frozen with the rest while asleep; it answers again.
    await m.serial.check('true', { timeoutMs: o.shellBoundMs });
    const shellAt = Date.now();
    if (o.awaitOutcome)
      await waitFor(
        `${what}: the suspend transaction over`,
        async () => /"outcome" s "(ok|incomplete|failed)"/.test(await lastSuspend(m)),
        120_000,
      );
    const shown = await picture;
    const t: SleepTiming = {
      what,
      toSuspendedMs: suspendedAt - since,
      wakeToRunningMs: runningAt - wokeAt,
      wakeToShellMs: shellAt - wokeAt,
      wakeToLockScreenMs: shown.ms,
      lockScreenPx: shown.px,
    };
    this.timings.push(t);
    console.log(`sleep ${JSON.stringify(t)}`);
    writeFileSync(join(o.artifactsDir, 'suspend-resume.json'), JSON.stringify(this.timings, null, 2) + '\n');
    await o.afterWake?.(what);
    return t;
  }

  /**
   * Polls the outer screen until it shows the lock screen (at least LOCK_SCREEN_PX pixels of the
   * Unlock button's colour) or `boundMs` passed: the time from `since` to the first picture
   * showing it (-1 if none did) and the pixels of the last picture, which is kept.
   */
  async lockScreenShown(name: string, since: number, boundMs: number): Promise<{ ms: number; px: number }> {
    const ppm = join(this.o.artifactsDir, `${name}.ppm`);
    for (;;) {
      let px = -1;
      try {
        const rgb = this.o.unlockColor();
        if (!rgb) throw new Error("the Unlock button's colour is not known");
        await this.m.qmp.execute('screendump', { filename: ppm });
        px = colorPixels(readPpm(ppm), rgb, 8);
      } catch {
        px = -1;
      }
      const at = Date.now();
      if (px >= LOCK_SCREEN_PX || at - since > boundMs) {
        await this.o.keep(name).catch(() => undefined);
        if (existsSync(ppm)) unlinkSync(ppm);
        const ms = px >= LOCK_SCREEN_PX ? at - since : -1;
        console.log(
          `screen ${name}: ${ms >= 0 ? `the lock screen after ${ms} ms` : 'no lock screen'} (${px} px of the Unlock button)`,
        );
        return { ms, px };
      }
      await new Promise((r) => setTimeout(r, this.o.pollMs));
    }
  }

  /**
   * Polls the outer screen (screendump only) until it shows `want` or `boundMs` passed: the time
   * from `since` (-1 if it did not), and what the last picture showed, which is kept.
   */
  async pictureShown(
    want: SeenPicture,
    name: string,
    since: number,
    boundMs: number,
  ): Promise<{ ms: number; seen: string }> {
    const ppm = join(this.o.artifactsDir, `${name}.ppm`);
    for (;;) {
      let seen: SeenPicture = { kind: 'other', why: 'no screendump' };
      try {
        await this.m.qmp.execute('screendump', { filename: ppm });
        seen = classify(readPpm(ppm), this.o.vms);
      } catch (e) {
        seen = { kind: 'other', why: (e as Error).message };
      }
      const at = Date.now();
      const ok = seen.kind === want.kind && (seen.kind !== 'vm' || want.kind !== 'vm' || seen.id === want.id);
      if (ok || at - since > boundMs) {
        await this.o.keep(name).catch(() => undefined);
        if (existsSync(ppm)) unlinkSync(ppm);
        console.log(`screen ${name}: ${describe(seen)} after ${at - since} ms`);
        return { ms: ok ? at - since : -1, seen: describe(seen) };
      }
      await new Promise((r) => setTimeout(r, this.o.pollMs));
    }
  }
}

/**
 * Types the password at the outer keyboard until the seat is unlocked (the back-off may delay
 * it). With the kiosk's page attached, each attempt waits for the lock screen's answer and only
 * the back-off may refuse the right password; without (the screen judged from outside alone),
 * Input1.Locked is asked 5 s after each attempt, for at most 120 s.
 */
export async function unlockAtKeyboard(m: ImageMachine, page?: Page): Promise<void> {
  if (!page) {
    await waitFor(
      'unlocked by the password',
      async () => {
        if (!(await locked(m))) return true;
        await m.typeText(`${OWNER_PASSWORD}\n`);
        await new Promise((r) => setTimeout(r, 5000));
        return !(await locked(m));
      },
      120_000,
      0,
    );
    return;
  }
  await unlockOnLockScreen(m, page, OWNER_PASSWORD, 4);
}
