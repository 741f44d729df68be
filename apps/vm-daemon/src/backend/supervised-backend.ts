/**
 * The lifecycle tail every real backend shares: the table of running VMs, the one-time "it is
 * gone" (table, listeners, log, the `state` event), waiting for that with a time limit, a
 * screenshot through a screendump file, and stopping them all. A backend supplies how its VMs
 * start, stop and end (QEMU: a child process and its exit status; Xen: a domain and xl's list).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import { TypedEmitter, type Logger } from '@bulkhead/common';
import type { VmDefinition } from '../config';
import type { BackendEvents, EndingDetail } from './backend';

/** What the base keeps of one running VM; a backend's own record extends it. */
export interface Supervised {
  def: VmDefinition;
  /** Set once the end was reported: a VM ends once, whichever of exit/close/poll saw it first. */
  goneHandled: boolean;
  /** Resolves when the end was reported. */
  gone: Promise<void>;
  markGone: () => void;
}

/** How a VM ended, as the `state` event reports it. */
export interface Ending extends EndingDetail {
  state: 'stopped' | 'crashed';
  reason: string;
}

export abstract class SupervisedBackend<V extends Supervised> extends TypedEmitter<BackendEvents> {
  /** Running (or adopted) VMs by id. */
  protected readonly running = new Map<string, V>();

  protected constructor(protected readonly log: Logger) {
    super();
  }

  /** The fields of a new Supervised record (its end not yet seen). */
  protected static supervision(): Pick<Supervised, 'goneHandled' | 'gone' | 'markGone'> {
    let markGone!: () => void;
    const gone = new Promise<void>((r) => (markGone = r));
    return { goneHandled: false, gone, markGone };
  }

  abstract stop(vmId: string, timeoutMs: number): Promise<{ killed: boolean }>;

  protected get(vmId: string): V {
    const v = this.running.get(vmId);
    if (!v) throw new BulkheadError('InvalidState', `VM ${vmId} does not run`);
    return v;
  }

  /**
   * The VM ended: reported once. `release` frees what the backend held for it (sockets, files),
   * then `classify` says how it ended (it may look at what `release` left, e.g. a core dump).
   */
  protected ended(v: V, release: () => void, classify: () => Ending): void {
    if (v.goneHandled) return;
    v.goneHandled = true;
    if (this.running.get(v.def.id) === v) this.running.delete(v.def.id);
    release();
    const { state, reason, ...detail } = classify();
    this.log.info(`${v.def.id}: ${state}: ${reason}`);
    v.markGone();
    this.emit('state', v.def.id, state, reason, detail);
  }

  /** True once `v` ended, false after `ms`; `whileWaiting` runs meanwhile (a poll, say). */
  protected async waitGone(v: V, ms: number, whileWaiting?: () => () => void): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const stopWaiting = whileWaiting?.();
    try {
      return await Promise.race([
        v.gone.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
      ]);
    } finally {
      clearTimeout(timer);
      stopWaiting?.();
    }
  }

  /**
   * PNG bytes of a VM's screen, at most `maxBytes`: `screendump(file)` asks the hypervisor to
   * write it (throwing the backend's named error), into `dir`, the VM's own run dir.
   */
  protected async screenshotFile(
    vmId: string,
    dir: string,
    maxBytes: number,
    screendump: (file: string) => Promise<unknown>,
  ): Promise<Buffer> {
    const file = join(dir, `screendump-${randomBytes(6).toString('hex')}.png`);
    try {
      await screendump(file);
      const size = statSync(file).size;
      if (size > maxBytes)
        throw new BulkheadError(
          'BackendFailed',
          `${vmId}: screenshot is ${size} bytes, more than the ${maxBytes} allowed`,
        );
      return readFileSync(file);
    } finally {
      rmSync(file, { force: true });
    }
  }

  /** Stop every VM (--stop-vms-on-exit); a VM that fails to stop is logged, the others go on. */
  async stopAll(timeoutMs: number): Promise<void> {
    await Promise.all(
      [...this.running.keys()].map((id) =>
        this.stop(id, timeoutMs).catch((e) => this.log.error(`${id}: ${(e as Error).message}`)),
      ),
    );
  }
}
