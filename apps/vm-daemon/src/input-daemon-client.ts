import { BulkheadError, BUS_NAMES, INPUT_PATH } from '@bulkhead/contract';
import { BusCallError, BusClient, variant, type Unsubscribe } from '@bulkhead/dbus';
import { DONE, skipped, type InputFocus, type StepResult } from './switch-transaction';

/**
 * Tells vm-daemon when a NEW input-daemon instance took the bus name (a restart: systemd's
 * Restart=always after a crash or SIGKILL). A fresh input-daemon knows nothing of the focus, so
 * vm-daemon must tell it again (VmManager re-asserts SetFocus(ActiveVm)).
 */
export interface InputPeerWatch {
  /** Bumped each time a new input-daemon takes the name (0 = none seen yet). */
  readonly instance: number;
  /** `fn` runs on every new instance after the first one seen at start. */
  onNewInstance(fn: () => void): void;
}

/**
 * D-Bus errors that mean input-daemon went away while the call was on the wire (it was SIGKILLed
 * or crashed): the call did nothing that survives, since the next instance starts from scratch
 * and is told the focus when it appears.
 */
const PEER_GONE_ERRORS = new Set([
  'org.freedesktop.DBus.Error.NoReply',
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
  'org.freedesktop.DBus.Error.Disconnected',
]);

/**
 * org.bulkhead.Input1 over D-Bus. Whether input-daemon is on the bus is followed with
 * NameOwnerChanged, so a switch without it records freeze/focus as skipped instead of waiting
 * for a call timeout, and a new owner of the name is reported as a new instance.
 */
export class InputDaemonClient implements InputFocus, InputPeerWatch {
  private owner: string | null = null;
  private unsubscribe: Unsubscribe | null = null;
  private started = false;
  private readonly listeners: Array<() => void> = [];
  instance = 0;

  constructor(
    private readonly client: BusClient,
    private readonly timeoutMs = 5000,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.client.watchNameOwner(BUS_NAMES.input, (owner) => {
      const previous = this.owner;
      this.owner = owner;
      if (owner === null || owner === previous) return;
      this.instance++;
      // The owner found at start is the one VmManager.init() tells the focus to.
      if (this.started) for (const fn of this.listeners) fn();
    });
    this.started = true;
  }

  onNewInstance(fn: () => void): void {
    this.listeners.push(fn);
  }

  async close(): Promise<void> {
    await this.unsubscribe?.();
  }

  get present(): boolean {
    return this.owner !== null;
  }

  async freeze(target?: string, slot?: number): Promise<StepResult> {
    const options: Record<string, unknown> = {};
    if (target) options.target = variant('o', target);
    if (target && slot !== undefined) options.slot = variant('u', slot);
    return this.focusCall('Freeze', 'a{sv}', [options]);
  }

  async assertUnlocked(): Promise<void> {
    if (!this.owner) return;
    const locked = await this.client
      .get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'Locked')
      .catch(() => false); // input-daemon gone: Freeze decides (and is skipped) as usual
    if (locked) throw new BulkheadError('Locked', 'the seat is locked; unlock first');
  }

  async setFocus(target: string, qmpSocket: string): Promise<StepResult> {
    const options = qmpSocket ? { qmp_socket: variant('s', qmpSocket) } : {};
    return this.focusCall('SetFocus', 'oa{sv}', [target, options]);
  }

  async prepare(target: string, qmpSocket: string): Promise<void> {
    if (!this.owner || !qmpSocket) return;
    await this.client.call(
      BUS_NAMES.input,
      INPUT_PATH,
      'org.bulkhead.Input1',
      'Prepare',
      'oa{sv}',
      [target, { qmp_socket: variant('s', qmpSocket) }],
      { timeoutMs: this.timeoutMs },
    );
  }

  private async focusCall(member: string, signature: string, body: unknown[]): Promise<StepResult> {
    if (!this.owner) return skipped('input-daemon is not on the bus');
    try {
      await this.client.call(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', member, signature, body, {
        timeoutMs: this.timeoutMs,
      });
    } catch (e) {
      // input-daemon died with the call in flight: not a failure of the switch (rolling back
      // would move input away from where the person asked). Its next instance gets the focus
      // re-asserted when it takes the name.
      if (e instanceof BusCallError && PEER_GONE_ERRORS.has(e.dbusName))
        return skipped(
          `input-daemon went away during ${member} (${e.dbusName}); re-asserted when it returns`,
        );
      throw e;
    }
    return DONE;
  }
}

/**
 * Runs vm-daemon's focus calls (Freeze, SetFocus) one at a time, in call order, so a re-assert
 * after an input-daemon restart can never overtake — or be overtaken by — a switch's own calls.
 * `setFocusLatest` decides what to send when its turn comes, not when it was queued: a re-assert
 * then always carries the newest ActiveVm, never a stale one.
 */
export class SerialInputFocus implements InputFocus {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(readonly inner: InputFocus) {}

  freeze(target?: string, slot?: number): Promise<StepResult> {
    return this.serial(() => this.inner.freeze(target, slot));
  }

  assertUnlocked(): Promise<void> {
    return this.inner.assertUnlocked?.() ?? Promise.resolve();
  }

  setFocus(target: string, qmpSocket: string): Promise<StepResult> {
    return this.serial(() => this.inner.setFocus(target, qmpSocket));
  }

  /** Not queued: it routes nothing, and a switch's calls must not wait behind a connect. */
  prepare(target: string, qmpSocket: string): Promise<void> {
    return this.inner.prepare?.(target, qmpSocket) ?? Promise.resolve();
  }

  /** SetFocus with the (target, qmp socket) `current()` returns at its turn; null = nothing to send. */
  setFocusLatest(current: () => [string, string] | null): Promise<StepResult> {
    return this.serial(async () => {
      const c = current();
      return c ? this.inner.setFocus(c[0], c[1]) : skipped('nothing to re-assert now');
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
