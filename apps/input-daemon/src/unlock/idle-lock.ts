/**
 * Locks the seat after a stretch without input, as a screen saver lock does. Every frame read
 * from the seat calls activity(); when `timeoutMs` passes with none, `lock` runs once, and runs
 * again only after new activity followed by another idle stretch. Arming costs one timer: a
 * frame only stores a timestamp, the timer re-arms itself for the remainder when it fires early.
 */
export class IdleLock {
  private last = 0;
  private timer: NodeJS.Timeout | null = null;
  private fired = false;

  constructor(
    private readonly timeoutMs: number,
    private readonly lock: () => void,
    private readonly now: () => number = Date.now,
  ) {
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
      throw new RangeError(`idle lock: timeout ${timeoutMs} ms`);
  }

  start(): void {
    this.last = this.now();
    this.fired = false;
    this.arm(this.timeoutMs);
  }

  /** The person did something (a key, a move, a click). */
  activity(): void {
    this.last = this.now();
    if (this.fired) {
      this.fired = false;
      this.arm(this.timeoutMs);
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(ms: number): void {
    this.stop();
    this.timer = setTimeout(() => this.check(), ms);
    this.timer.unref?.();
  }

  private check(): void {
    this.timer = null;
    const idle = this.now() - this.last;
    if (idle < this.timeoutMs) return this.arm(this.timeoutMs - idle);
    this.fired = true;
    this.lock();
  }
}
