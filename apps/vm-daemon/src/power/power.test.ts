/**
 * Issue 19 item 1: the power component against fake-UPower and fake-logind on a private bus
 * (their real names, paths and members), through the real UPower and logind clients. The VMs,
 * the seat and the switch are an in-memory fake host; the order of calls it records is what is
 * asserted (no timing).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@bulkhead/common';
import {
  BusClient,
  connectBus,
  LogindClient,
  startPrivateBus,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { waitFor } from '../testing/daemon-process';
import { DEFAULT_POWER_POLICY, type PowerPolicy } from './policy';
import { PowerManager } from './power-manager';
import { SuspendTransaction, type SuspendStep } from './suspend-transaction';
import { FakeSuspendHost } from './testing/fake-suspend-host';
import { FakeLogind, FakeUPower } from './testing/fake-system-services';
import { UPowerClient } from './upower';

const log = createLogger('test', 'error');
let bus: PrivateBus;

before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
});
after(async () => {
  await bus.stop();
});

interface World {
  upower: FakeUPower;
  logind: FakeLogind;
  host: FakeSuspendHost;
  power: PowerManager;
  progress: Array<[SuspendStep, string]>;
  close(): Promise<void>;
}

async function world(
  opts: { policy?: Partial<PowerPolicy>; vms?: Record<string, string> } = {},
): Promise<World> {
  const upower = await FakeUPower.start(bus.address, { percentage: 80, onBattery: true });
  const logind = await FakeLogind.start(bus.address);
  const conn: MessageBus = await connectBus(bus.address);
  const client = new BusClient(conn, 5000);
  const battery = new UPowerClient(client, log);
  await battery.start();
  const login = new LogindClient(client);
  await login.start();
  const host = new FakeSuspendHost(
    opts.vms ?? { personal: 'running', business: 'running', spare: 'stopped' },
    (k) => login.sleep(k),
  );
  const tx = new SuspendTransaction(host, log);
  const power = new PowerManager({
    transaction: tx,
    battery,
    policy: { ...DEFAULT_POWER_POLICY, ...opts.policy },
    policyFile: '/etc/bulkhead/power.json',
    policyError: null,
    lockSeat: () => host.lockSeat(),
    system: login,
    log,
  });
  const progress: Array<[SuspendStep, string]> = [];
  power.on('progress', (s, d) => progress.push([s, d]));
  return {
    upower,
    logind,
    host,
    power,
    progress,
    async close() {
      await battery.close();
      conn.disconnect();
      upower.stop();
      logind.stop();
    },
  };
}

test('the battery comes from UPower and follows its PropertiesChanged', async () => {
  const w = await world();
  try {
    assert.deepEqual(
      { ...w.power.battery },
      {
        present: true,
        percentage: 80,
        state: 'discharging',
        timeToEmptySec: 3600,
        timeToFullSec: 0,
        onBattery: true,
      },
    );
    w.upower.set({ percentage: 9 });
    await waitFor('level low', () => w.power.batteryLevel === 'low');
    w.upower.set({ onBattery: false, state: 1 });
    await waitFor('charging', () => w.power.battery.state === 'charging');
    assert.equal(w.power.batteryLevel, 'normal', 'on AC nothing is low');
    assert.equal(w.logind.requests.length, 0);
  } finally {
    await w.close();
  }
});

test('a critical battery locks the seat, pauses the VMs and suspends; waking resumes them', async () => {
  const w = await world();
  try {
    w.upower.set({ percentage: 4 });
    await w.logind.waitAsleep();
    assert.deepEqual(w.logind.requests, ['suspend']);
    assert.deepEqual(w.host.calls, ['lock', 'pause personal', 'pause business', 'sleep suspend']);
    assert.equal(w.power.suspending, true);
    w.logind.wake();
    await waitFor('suspend over', () => !w.power.suspending);
    assert.deepEqual(w.host.calls.slice(4), ['resume personal', 'resume business']);
    assert.equal(w.host.vms.get('spare'), 'stopped', 'a stopped VM is left alone');
    const last = w.power.lastSuspend!;
    assert.equal(last.reason, 'critical-battery');
    assert.equal(last.outcome, 'ok');
    assert.deepEqual(
      last.steps.map(([s, r]) => `${s} ${r}`),
      ['lock-seat ok', 'wait-switch ok', 'pause-vms ok', 'sleep ok', 'resume-vms ok'],
    );
    assert.equal(w.host.locked, true, 'the seat stays locked after waking: the lock screen is shown');
    // Still critical after waking: it does not suspend again until the level left critical once.
    w.upower.set({ percentage: 3 });
    await waitFor('percentage read', () => w.power.battery.percentage === 3);
    assert.deepEqual(w.logind.requests, ['suspend']);
  } finally {
    await w.close();
  }
});

test('critical: hibernate where the policy says so; nothing means nothing', async () => {
  const w = await world({ policy: { critical: 'hibernate' } });
  try {
    w.upower.set({ percentage: 5 });
    await w.logind.waitAsleep();
    assert.deepEqual(w.logind.requests, ['hibernate']);
    w.logind.wake();
    await waitFor('suspend over', () => !w.power.suspending);
  } finally {
    await w.close();
  }
  const n = await world({ policy: { critical: 'nothing' } });
  try {
    n.upower.set({ percentage: 2 });
    await waitFor('critical seen', () => n.power.batteryLevel === 'critical');
    assert.deepEqual(n.logind.requests, []);
    assert.deepEqual(n.host.calls, []);
  } finally {
    await n.close();
  }
});

test('power key and lid do what the policy says: suspend, lock only, nothing', async () => {
  const w = await world({ policy: { powerKey: 'suspend', lid: 'lock' } });
  try {
    const done = w.power.key('power-key');
    await w.logind.waitAsleep();
    w.logind.wake();
    await done;
    assert.equal(w.power.lastSuspend?.reason, 'power-key');
    assert.deepEqual(w.logind.requests, ['suspend']);
    w.host.calls.length = 0;
    await w.power.key('lid');
    assert.deepEqual(w.host.calls, ['lock'], 'lid → lock: the seat is locked, nothing paused');
    assert.deepEqual(w.logind.requests, ['suspend']);
  } finally {
    await w.close();
  }
  const n = await world({ policy: { powerKey: 'nothing', lid: 'nothing' } });
  try {
    await n.power.key('power-key');
    await n.power.key('lid');
    assert.deepEqual(n.host.calls, []);
    assert.deepEqual(n.logind.requests, []);
  } finally {
    await n.close();
  }
});

test('a suspend requested during a switch waits for the switch before touching a VM', async () => {
  const w = await world();
  try {
    const finishSwitch = w.host.beginSwitch();
    const suspended = w.power.suspend('request');
    await waitFor('waiting for the switch', () => w.progress.some(([s]) => s === 'wait-switch'));
    // Another request meanwhile is refused, not queued behind.
    await assert.rejects(w.power.suspend('request'), /InvalidState|already in progress/);
    assert.deepEqual(w.host.calls, ['lock'], 'nothing paused while the switch runs');
    assert.deepEqual(w.logind.requests, [], 'logind not asked to sleep while the switch runs');
    finishSwitch();
    await w.logind.waitAsleep();
    assert.deepEqual(w.host.calls, [
      'lock',
      'switch done',
      'pause personal',
      'pause business',
      'sleep suspend',
    ]);
    w.logind.wake();
    const rec = await suspended;
    assert.equal(rec.outcome, 'ok');
  } finally {
    await w.close();
  }
});

test('logind refusing to sleep: the paused VMs are resumed and the failure names the step', async () => {
  const w = await world();
  try {
    w.logind.refuseNext = 'There is already a shutdown or sleep operation in progress';
    await assert.rejects(w.power.suspend('request'), (e: Error) => {
      assert.match(e.message, /^sleep: .*already a shutdown or sleep operation in progress/);
      return true;
    });
    assert.deepEqual(w.host.calls, [
      'lock',
      'pause personal',
      'pause business',
      'sleep suspend',
      'resume personal',
      'resume business',
    ]);
    assert.equal(w.host.vms.get('personal'), 'running');
    assert.equal(w.host.vms.get('business'), 'running');
    const last = w.power.lastSuspend!;
    assert.equal(last.outcome, 'failed');
    assert.match(last.error, /^sleep: /);
    assert.deepEqual(w.progress.at(-1)?.[0], 'failed');
    assert.equal(w.power.suspending, false);
  } finally {
    await w.close();
  }
});

test('a VM that cannot be paused stops the suspend; the VMs paused before it run again', async () => {
  const w = await world({ vms: { a: 'running', b: 'running', c: 'running' } });
  try {
    w.host.failPause.add('b');
    await assert.rejects(w.power.suspend('request'), /pause-vms: pausing b failed/);
    assert.deepEqual(w.host.calls, ['lock', 'pause a', 'pause b', 'resume a']);
    assert.deepEqual([...w.host.vms.values()], ['running', 'running', 'running']);
    assert.deepEqual(w.logind.requests, []);
  } finally {
    await w.close();
  }
});

test('the seat cannot be locked: no VM is paused and nothing sleeps', async () => {
  const w = await world();
  try {
    w.host.failLock = 'org.freedesktop.DBus.Error.ServiceUnknown: input-daemon is not on the bus';
    await assert.rejects(w.power.suspend('request'), /^.*lock-seat: .*input-daemon is not on the bus/);
    assert.deepEqual(w.host.calls, ['lock']);
    assert.deepEqual(w.logind.requests, []);
  } finally {
    await w.close();
  }
});

test('after waking, a VM that did not come back is reported, the others run', async () => {
  const w = await world();
  try {
    w.host.failResume.add('business');
    const p = w.power.suspend('request');
    await w.logind.waitAsleep();
    w.logind.wake();
    const rec = await p;
    assert.equal(rec.outcome, 'incomplete');
    assert.deepEqual(rec.notBack, [['business', 'resume failed: QMP cont of business failed']]);
    assert.equal(w.host.vms.get('personal'), 'running');
    assert.match(w.progress.at(-1)![1], /not back: business/);
  } finally {
    await w.close();
  }
});

test('a sleep the system starts (logind PrepareForSleep) pauses the VMs first and resumes them on wake', async () => {
  const w = await world();
  try {
    w.logind.goToSleep();
    await waitFor('paused', () => w.host.calls.includes('pause business'));
    assert.deepEqual(w.host.calls, ['lock', 'pause personal', 'pause business']);
    w.logind.wake();
    await waitFor('resumed', () => w.host.calls.includes('resume business'));
    await waitFor('over', () => !w.power.suspending);
    assert.equal(w.power.lastSuspend?.reason, 'system');
    assert.equal(w.power.lastSuspend?.outcome, 'ok');
    assert.deepEqual(w.logind.requests, []);
  } finally {
    await w.close();
  }
});
