/** The switcher's mirror of input-daemon (org.bulkhead.Input1). */
import { BUS_NAMES, INPUT_PATH } from '@bulkhead/contract';
import type { TypedEmitter } from '@bulkhead/common';
import { unwrap, type BusClient, type Unsubscribe } from '@bulkhead/dbus';
import type { InputModel } from '../common/model';
import type { DaemonStateEvents } from './daemon-state';
import type { Props } from './mirror-props';
import type { DaemonMirror } from './name-owner-tracker';

const INPUT1 = 'org.bulkhead.Input1';

export class InputMirror implements DaemonMirror {
  /** null while input-daemon is down. */
  input: InputModel | null = null;

  constructor(
    private readonly client: BusClient,
    private readonly events: TypedEmitter<DaemonStateEvents>,
  ) {}

  async connect(subs: Unsubscribe[]): Promise<void> {
    const dest = BUS_NAMES.input;
    subs.push(
      await this.client.onSignal(dest, { path: INPUT_PATH }, INPUT1, 'SecureAttention', () =>
        this.events.emit('secureAttention'),
      ),
      await this.client.onSignal(dest, { path: INPUT_PATH }, INPUT1, 'HotkeyPressed', ([chord, action]) =>
        this.events.emit('hotkey', chord, action),
      ),
      await this.client.subscribe(
        {
          sender: dest,
          path: INPUT_PATH,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'PropertiesChanged',
        },
        (m) => {
          if (m.body[0] !== INPUT1 || !this.input) return;
          this.applyInputProps(unwrap(m.body[1]) as Props);
          this.events.emit('changed');
        },
      ),
    );
    const props = (await this.client.getAll(dest, INPUT_PATH, INPUT1)) as unknown as Props;
    this.input = {
      focusedTarget: '/',
      locked: false,
      frozen: false,
      seat: '',
      hotkeys: [],
      lastHotkeyError: '',
    };
    this.applyInputProps(props);
  }

  private applyInputProps(p: Props): void {
    const i = this.input as InputModel;
    if ('FocusedTarget' in p) i.focusedTarget = String(p.FocusedTarget);
    if ('Locked' in p) i.locked = !!p.Locked;
    if ('Frozen' in p) i.frozen = !!p.Frozen;
    if ('Seat' in p) i.seat = String(p.Seat);
    if ('Hotkeys' in p) i.hotkeys = (p.Hotkeys as Array<[string, string]>) ?? [];
    if ('LastHotkeyError' in p) i.lastHotkeyError = String(p.LastHotkeyError);
  }

  clear(): void {
    this.input = null;
  }
}
