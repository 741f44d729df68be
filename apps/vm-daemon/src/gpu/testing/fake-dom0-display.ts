import { BulkheadError } from '@bulkhead/contract';
import type { Dom0Display } from '../dom0-display';

/**
 * A fake of dom0's display (the kiosk): `drawing` says whether the kiosk runs; every call is
 * logged in `calls` ("release", "reclaim"); `failNext` makes the next call of that kind fail.
 */
export class FakeDom0Display implements Dom0Display {
  readonly calls: string[] = [];
  private readonly failing = new Set<string>();

  /**
   * @param releasedMark whether a release (by this daemon or the one before it, killed) is not
   * followed by a reclaim yet: SystemdKioskDisplay's marker file in the run dir.
   */
  constructor(
    public drawing = true,
    public releasedMark = false,
  ) {}

  releasedEarlier(): boolean {
    return this.releasedMark;
  }

  failNext(what: 'release' | 'reclaim'): void {
    this.failing.add(what);
  }

  async release(): Promise<void> {
    this.calls.push('release');
    if (this.failing.delete('release'))
      throw new BulkheadError('BackendFailed', 'systemctl stop bulkhead-kiosk.service failed (fake)');
    this.releasedMark = true;
    this.drawing = false;
  }

  async reclaim(): Promise<void> {
    this.calls.push('reclaim');
    if (this.failing.delete('reclaim'))
      throw new BulkheadError('BackendFailed', 'systemctl start bulkhead-kiosk.service failed (fake)');
    this.drawing = true;
    this.releasedMark = false;
  }
}
