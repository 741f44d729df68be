/**
 * dom0's use of the GPU it shares with the VMs: the kiosk (cage + Chromium showing the switcher).
 * Before the native driver is unbound, everything in dom0 that has the DRM device open must close
 * it; stopping the kiosk's unit does that in one step (why not logind's PauseDevice:
 * docs/gpu-handoff.md).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';

export interface Dom0Display {
  /** Stop drawing and close every descriptor on the GPU (the kiosk stops). */
  release(): Promise<void>;
  /** Draw again on the GPU that came home (the kiosk starts). */
  reclaim(): Promise<void>;
  /**
   * Whether a release has not been followed by a reclaim — by this daemon or by the one before
   * it, killed between the kiosk's stop and the GPU's move: its successor starts the kiosk again.
   */
  releasedEarlier?(): boolean;
}

/** The second-GPU rig: dom0 draws on a display of its own, which a hand-off never touches. */
export class NoDom0Display implements Dom0Display {
  async release(): Promise<void> {}
  async reclaim(): Promise<void> {}
}

export interface SystemdKioskDisplayOptions {
  /** The kiosk's unit (default bulkhead-kiosk.service). */
  unit?: string;
  /** The systemctl program (default systemctl on PATH; tests pass a script). */
  systemctl?: string;
  /** Bound of one systemctl call (default 30 s: Chromium's stop under TCG takes seconds). */
  timeoutMs?: number;
  /**
   * A file (in vm-daemon's run dir, which outlives a restart) that says the kiosk was stopped for
   * a hand-off and not started again since (see Dom0Display.releasedEarlier); none: not kept.
   */
  releasedMarker?: string;
}

/** Releases the display by stopping the kiosk's unit and reclaims it by starting it again. */
export class SystemdKioskDisplay implements Dom0Display {
  private readonly unit: string;
  private readonly systemctl: string;
  private readonly timeoutMs: number;
  private readonly marker: string | null;

  constructor(opts: SystemdKioskDisplayOptions = {}) {
    this.unit = opts.unit ?? 'bulkhead-kiosk.service';
    this.systemctl = opts.systemctl ?? 'systemctl';
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.marker = opts.releasedMarker ?? null;
  }

  release(): Promise<void> {
    // Written before the stop: a daemon killed from here on leaves its successor the marker. Best
    // effort: without it the hand-off still runs (only that recovery is lost).
    if (this.marker)
      try {
        mkdirSync(dirname(this.marker), { recursive: true, mode: 0o750 });
        writeFileSync(this.marker, 'the kiosk was stopped for a GPU hand-off\n', { mode: 0o600 });
      } catch {
        /* see above */
      }
    return this.run('stop');
  }

  async reclaim(): Promise<void> {
    await this.run('start');
    if (this.marker) rmSync(this.marker, { force: true });
  }

  releasedEarlier(): boolean {
    return this.marker !== null && existsSync(this.marker);
  }

  private run(verb: 'stop' | 'start'): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile(
        this.systemctl,
        [verb, this.unit],
        { timeout: this.timeoutMs, killSignal: 'SIGKILL' },
        (err, _stdout, stderr) => {
          if (!err) return resolve();
          const how = err.killed
            ? `did not finish within ${this.timeoutMs} ms`
            : `failed: ${stderr.trim() || err.message}`;
          reject(
            new BulkheadError(
              err.killed ? 'Timeout' : 'BackendFailed',
              `systemctl ${verb} ${this.unit} ${how}`,
            ),
          );
        },
      );
    });
  }
}
