import { BUS_NAMES, INPUT_PATH } from '@bulkhead/contract';
import { BusClient, variant, type Unsubscribe } from '@bulkhead/dbus';
import { DONE, skipped, type InputFocus, type StepResult } from './switch-transaction';

/**
 * org.bulkhead.Input1 over D-Bus. Whether input-daemon is on the bus is followed with
 * NameOwnerChanged, so a switch without it records freeze/focus as skipped instead of waiting
 * for a call timeout.
 */
export class InputDaemonClient implements InputFocus {
  private owner: string | null = null;
  private unsubscribe: Unsubscribe | null = null;

  constructor(
    private readonly client: BusClient,
    private readonly timeoutMs = 5000,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.client.watchNameOwner(BUS_NAMES.input, (owner) => (this.owner = owner));
  }

  async close(): Promise<void> {
    await this.unsubscribe?.();
  }

  get present(): boolean {
    return this.owner !== null;
  }

  async freeze(): Promise<StepResult> {
    if (!this.owner) return skipped('input-daemon is not on the bus');
    await this.client.call(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'Freeze', 'a{sv}', [{}], {
      timeoutMs: this.timeoutMs,
    });
    return DONE;
  }

  async setFocus(target: string, qmpSocket: string): Promise<StepResult> {
    if (!this.owner) return skipped('input-daemon is not on the bus');
    const options = qmpSocket ? { qmp_socket: variant('s', qmpSocket) } : {};
    await this.client.call(
      BUS_NAMES.input,
      INPUT_PATH,
      'org.bulkhead.Input1',
      'SetFocus',
      'oa{sv}',
      [target, options],
      {
        timeoutMs: this.timeoutMs,
      },
    );
    return DONE;
  }
}
