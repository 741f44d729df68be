/**
 * Follows one daemon by its bus name for a mirror of that daemon. When the name loses its owner
 * the mirror is cleared and the daemon reported down (never stale state shown as live); when a
 * new owner appears the mirror subscribes and fetches everything again, retrying while that owner
 * stays. A generation counter makes every late answer from an older owner harmless.
 */
import type { BusClient, Unsubscribe } from '@bulkhead/dbus';

/** One daemon's part of the switcher's model. */
export interface DaemonMirror {
  /** Subscribe first, then fetch, so nothing that changes in between is lost. Every subscription
   * made goes into `subs` (also when it throws), so the tracker can undo them. */
  connect(subs: Unsubscribe[]): Promise<void>;
  /** Forget everything learnt from the daemon: it is gone, or about to be read afresh. */
  clear(): void;
}

export interface NameOwnerTrackerOptions {
  /** Called whenever the daemon goes up or down, with why it is down. */
  onStatus: (up: boolean, detail: string) => void;
  retryMs?: number;
  log?: (msg: string) => void;
}

export class NameOwnerTracker {
  private generation = 0;
  private owner: string | null = null;
  private subs: Unsubscribe[] = [];
  private retry: NodeJS.Timeout | undefined;
  private unwatch: Unsubscribe | null = null;
  private stopped = false;

  constructor(
    private readonly client: BusClient,
    /** For log lines: which daemon this is. */
    private readonly label: string,
    private readonly busName: string,
    private readonly mirror: DaemonMirror,
    private readonly opts: NameOwnerTrackerOptions,
  ) {}

  async start(): Promise<void> {
    this.unwatch = await this.client.watchNameOwner(this.busName, (owner) => this.onOwner(owner));
  }

  /** Stop watching the name; unsubscribes everything. The mirror keeps what it has. */
  async stopWatching(): Promise<void> {
    this.stopped = true;
    await this.unwatch?.();
  }

  private onOwner(owner: string | null): void {
    if (this.stopped) return;
    if (owner === this.owner && owner !== null) return;
    this.owner = owner;
    const gen = ++this.generation;
    void this.teardown().then(() => {
      if (gen !== this.generation) return;
      this.mirror.clear();
      if (owner === null) this.opts.onStatus(false, 'not running (its bus name has no owner)');
      else this.opts.onStatus(false, 'connecting…');
      if (owner !== null) void this.connect(gen);
    });
  }

  /** Undo the current owner's subscriptions (and a pending retry). */
  async teardown(): Promise<void> {
    clearTimeout(this.retry);
    const subs = this.subs.splice(0);
    await Promise.all(subs.map((u) => u().catch(() => undefined)));
  }

  private async connect(gen: number): Promise<void> {
    const subs: Unsubscribe[] = [];
    try {
      await this.mirror.connect(subs);
      if (gen !== this.generation || this.stopped) {
        await Promise.all(subs.map((u) => u().catch(() => undefined)));
        return;
      }
      this.subs.push(...subs);
      this.opts.onStatus(true, '');
    } catch (e) {
      await Promise.all(subs.map((u) => u().catch(() => undefined)));
      if (gen !== this.generation || this.stopped) return;
      this.mirror.clear();
      this.opts.onStatus(false, `not answering: ${(e as Error).message}`);
      this.opts.log?.(`${this.label}: ${(e as Error).message}; retrying`);
      this.retry = setTimeout(
        () => gen === this.generation && void this.connect(gen),
        this.opts.retryMs ?? 1000,
      );
    }
  }
}
