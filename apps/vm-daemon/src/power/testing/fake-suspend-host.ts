/** An in-memory stand-in for vm-daemon's side of a suspend: VMs with states, a seat, a switch. */
import type { SleepKind } from '@bulkhead/dbus';
import type { SuspendHost } from '../suspend-transaction';

export class FakeSuspendHost implements SuspendHost {
  readonly vms = new Map<string, string>();
  /** Every call, in order: 'lock', 'pause a', 'resume a', 'sleep suspend'. */
  readonly calls: string[] = [];
  locked = false;
  failLock: string | null = null;
  failPause = new Set<string>();
  failResume = new Set<string>();
  private switchDone: (() => void) | null = null;
  private switchIdle: Promise<void> | null = null;

  constructor(
    vms: Record<string, string>,
    private readonly sleeper: (kind: SleepKind) => Promise<void>,
  ) {
    for (const [id, state] of Object.entries(vms)) this.vms.set(id, state);
  }

  /** A switch is running until the returned function is called. */
  beginSwitch(): () => void {
    this.switchIdle = new Promise((r) => (this.switchDone = r));
    return () => {
      this.calls.push('switch done');
      const done = this.switchDone;
      this.switchDone = null;
      this.switchIdle = null;
      done?.();
    };
  }

  async lockSeat(): Promise<void> {
    this.calls.push('lock');
    if (this.failLock) throw new Error(this.failLock);
    this.locked = true;
  }
  switchInProgress(): boolean {
    return this.switchIdle !== null;
  }
  waitSwitchIdle(): Promise<void> {
    return this.switchIdle ?? Promise.resolve();
  }
  runningVms(): string[] {
    return [...this.vms].filter(([, s]) => s === 'running').map(([id]) => id);
  }
  async pauseVm(id: string): Promise<void> {
    this.calls.push(`pause ${id}`);
    if (this.failPause.has(id)) throw new Error(`QMP stop of ${id} failed`);
    this.vms.set(id, 'paused');
  }
  async resumeVm(id: string): Promise<void> {
    this.calls.push(`resume ${id}`);
    if (this.failResume.has(id)) throw new Error(`QMP cont of ${id} failed`);
    this.vms.set(id, 'running');
  }
  vmState(id: string): string | null {
    return this.vms.get(id) ?? null;
  }
  async sleep(kind: SleepKind): Promise<void> {
    this.calls.push(`sleep ${kind}`);
    await this.sleeper(kind);
  }
}
