/**
 * vm-daemon's input-daemon client on a real private dbus-daemon: an input-daemon that dies with a
 * Freeze/SetFocus in flight (SIGKILL: its connection drops, no reply) makes the step "skipped",
 * not a failure that would roll the switch back; a new owner of the name is reported as a new
 * instance (which VmManager answers with SetFocus(ActiveVm)).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { BUS_NAMES, INPUT_PATH, type Input1Properties, type Input1Service } from '@bulkhead/contract';
import {
  BusClient,
  ServiceHost,
  connectBus,
  startPrivateBus,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { InputDaemonClient } from './input-daemon-client';
import { waitFor } from './testing/daemon-process';

let bus: PrivateBus | undefined;
const conns: MessageBus[] = [];
after(async () => {
  for (const c of conns) c.disconnect();
  await bus?.stop();
});

/** An input-daemon stand-in whose Freeze never answers: its connection drops mid-call. */
class FakeDyingInputDaemon implements Input1Service {
  calls = 0;
  constructor(private readonly conn: MessageBus) {}
  properties(): Input1Properties {
    return {
      FocusedTarget: '/',
      Frozen: false,
      Locked: false,
      Seat: 'virtual',
      Devices: [],
      Hotkeys: [],
      LastHotkeyError: '',
    };
  }
  Freeze(): Promise<void> {
    this.calls++;
    this.conn.disconnect(); // as a SIGKILL does, between the call and its reply
    return new Promise(() => undefined);
  }
  SetFocus(): void {
    this.calls++;
  }
  Prepare(): void {}
  Lock(): void {}
  Unlock(): void {}
  InjectEvents(): void {}
}

async function startFakeInputDaemon(address: string): Promise<FakeDyingInputDaemon> {
  const conn = await connectBus(address);
  conns.push(conn);
  const d = new FakeDyingInputDaemon(conn);
  const host = new ServiceHost(conn, { log: () => undefined });
  host.export(INPUT_PATH, 'org.bulkhead.Input1', d, () => d.properties());
  await host.requestName(BUS_NAMES.input);
  return d;
}

test('input-daemon dying during Freeze: the step is skipped (no rollback); its successor is reported as a new instance', async () => {
  bus = await startPrivateBus({ mode: 'open' });
  const conn = await connectBus(bus.address);
  conns.push(conn);
  const first = await startFakeInputDaemon(bus.address);
  const client = new InputDaemonClient(new BusClient(conn, 10_000));
  let newInstances = 0;
  client.onNewInstance(() => newInstances++);
  await client.start();
  assert.equal(client.present, true);
  const r = await client.freeze();
  assert.equal(first.calls, 1);
  assert.equal(r.skipped, true, 'a dead input-daemon must not fail the switch');
  await waitFor('the name is free', () => !client.present);
  await startFakeInputDaemon(bus.address);
  await waitFor('the successor is reported', () => newInstances === 1);
  assert.equal(client.instance, 2);
  await client.close();
});
