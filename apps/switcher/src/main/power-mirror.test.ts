/**
 * Issue 19 item 3: the switcher's mirror of Power1 follows a fake vm-daemon (fake-power, exported
 * with the real ServiceHost under vm-daemon's name on a private bus): battery, the suspend's step
 * from SuspendProgress, and the last suspend's report from LastSuspend.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { BUS_NAMES, POWER_PATH, type Power1Properties } from '@bulkhead/contract';
import { TypedEmitter } from '@bulkhead/common';
import {
  BusClient,
  ServiceHost,
  connectBus,
  startPrivateBus,
  variant,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import type { DaemonStateEvents } from './daemon-state';
import { NameOwnerTracker } from './name-owner-tracker';
import { PowerMirror } from './power-mirror';

let bus: PrivateBus;
before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
});
after(async () => {
  await bus.stop();
});

async function until(what: string, fn: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !fn(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(fn(), what);
}

test('the power mirror follows Battery, SuspendProgress, Suspending and LastSuspend', async () => {
  const fakePower: Power1Properties = {
    Battery: {
      present: variant('b', true),
      percentage: variant('d', 42),
      state: variant('s', 'discharging'),
      time_to_empty_sec: variant('x', 3000n),
      time_to_full_sec: variant('x', 0n),
      on_battery: variant('b', true),
      level: variant('s', 'normal'),
    },
    Policy: {},
    Suspending: false,
    LastSuspend: {},
  };
  const daemonConn: MessageBus = await connectBus(bus.address);
  const host = new ServiceHost(daemonConn, { log: () => undefined });
  const iface = host.export(POWER_PATH, 'org.bulkhead.Power1', { Suspend: () => undefined }, () => fakePower);
  await host.requestName(BUS_NAMES.vmManager);

  const conn = await connectBus(bus.address);
  const events = new TypedEmitter<DaemonStateEvents>();
  const mirror = new PowerMirror(new BusClient(conn, 5000), events);
  const tracker = new NameOwnerTracker(new BusClient(conn, 5000), 'power', BUS_NAMES.vmManager, mirror, {
    onStatus: () => undefined,
  });
  try {
    await tracker.start();
    await until('connected', () => mirror.power !== null);
    assert.deepEqual(mirror.power!.battery, {
      present: true,
      percentage: 42,
      state: 'discharging',
      timeToEmptySec: 3000,
      onBattery: true,
      level: 'normal',
    });

    fakePower.Battery = { ...fakePower.Battery, percentage: variant('d', 8), level: variant('s', 'low') };
    iface.propertiesChanged('Battery');
    await until('battery low', () => mirror.power!.battery.level === 'low');
    assert.equal(mirror.power!.battery.percentage, 8);

    fakePower.Suspending = true;
    iface.propertiesChanged('Suspending');
    iface.emit('SuspendProgress', 'pause-vms', 'pausing business');
    await until('progress', () => mirror.power!.progress?.step === 'pause-vms');
    assert.equal(mirror.power!.suspending, true);
    assert.equal(mirror.power!.progress!.detail, 'pausing business');

    fakePower.Suspending = false;
    fakePower.LastSuspend = {
      reason: variant('s', 'lid'),
      outcome: variant('s', 'incomplete'),
      error: variant('s', 'business: it is crashed'),
      started_usec: variant('t', 7_000_000n),
      duration_usec: variant('t', 1n),
      steps: variant('a(sss)', [['lock-seat', 'ok', 'seat locked']]),
      not_back: variant('a(ss)', [['business', 'it is crashed']]),
    };
    iface.propertiesChanged('Suspending', 'LastSuspend');
    await until('report', () => mirror.power!.lastSuspend !== null);
    assert.equal(mirror.power!.suspending, false);
    assert.equal(mirror.power!.progress, null, 'no step shown once the suspend is over');
    assert.deepEqual(mirror.power!.lastSuspend, {
      reason: 'lid',
      outcome: 'incomplete',
      error: 'business: it is crashed',
      startedMs: 7000,
      steps: [['lock-seat', 'ok', 'seat locked']],
      notBack: [['business', 'it is crashed']],
    });

    // vm-daemon gone: nothing stale stays.
    daemonConn.disconnect();
    await until('cleared', () => mirror.power === null);
  } finally {
    await tracker.stopWatching();
    await tracker.teardown();
    conn.disconnect();
  }
});
