/**
 * Security model item 10: every sleep locks the seat first, also while vm-daemon is down (then
 * only input-daemon's own delay inhibitor holds logind back). fake-logind on a private bus, no
 * vm-daemon. First the real LogindClient subscription and the real InputService, the inhibitor a
 * fake that records, at each take and release, whether the seat was locked then (and its lock
 * file written), so the order is checked exactly, not by timing. Then the real daemon process,
 * its inhibitor a real InhibitorLock running a fake systemd-inhibit (first on its PATH).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@bulkhead/common';
import { isBulkheadError, vmPath, type CallContext } from '@bulkhead/contract';
import {
  BusClient,
  connectBus,
  Message,
  startPrivateBus,
  variant,
  type InhibitorLockOptions,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { FakeLogind } from '@bulkhead/dbus/dist/testing/fake-logind';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { InputService } from './input-service';
import { startSleepGuard, type SleepGuard } from './sleep-guard';
import { SleepRecord } from './sleep-record';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';
import { PasswordlessUnlock } from './unlock/unlock-check';

const ctx = {} as CallContext;
/** dbus-next's MessageType.SIGNAL. */
const SIGNAL = 4;
const log = createLogger('test', 'error');

let bus: PrivateBus;
let conn: MessageBus;
let client: BusClient;
let logind: FakeLogind | null = null;

before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
  conn = await connectBus(bus.address);
  client = new BusClient(conn, 5000);
});
after(async () => {
  logind?.stop();
  conn.disconnect();
  await bus.stop();
});

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

type Event = ['take' | 'release', { locked: boolean; lockFile: boolean }];

/** input-daemon's service (virtual seat, lock file in a run dir) guarded by a fake inhibitor. */
async function guardedSeat(dir: string, sleepRecord?: SleepRecord) {
  const lockFile = join(dir, 'locked');
  const switched: number[] = [];
  const service = new InputService(
    new VirtualSeat(),
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    { forVm: async (target) => new FakeSink(target) },
    { switchToSlot: async (slot) => void switched.push(slot) },
    log,
    { unlock: new PasswordlessUnlock(), lockFile },
  );
  const events: Event[] = [];
  const lockOpts: InhibitorLockOptions[] = [];
  const state = () => ({ locked: service.properties().Locked, lockFile: existsSync(lockFile) });
  const guard: SleepGuard | null = await startSleepGuard({
    client,
    bus: bus.address,
    lockSeat: () => service.lockForSleep(),
    log,
    sleepRecord,
    delayLock: (o) => {
      lockOpts.push(o);
      return {
        take: () => events.push(['take', state()]),
        release: () => events.push(['release', state()]),
      };
    },
  });
  return { service, switched, events, lockOpts, guard };
}

test('fake logind: no logind on the bus, no inhibitor taken', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sleep-guard-'));
  try {
    const { service, events, guard } = await guardedSeat(dir);
    assert.equal(guard, null);
    assert.deepEqual(events, []);
    await service.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fake logind: a sleep while vm-daemon is down locks the seat before input-daemon releases its delay inhibitor, and the inhibitor is taken again on waking', async () => {
  logind = await FakeLogind.start(bus.address);
  const dir = mkdtempSync(join(tmpdir(), 'sleep-guard-'));
  try {
    const { service, switched, events, lockOpts, guard } = await guardedSeat(dir);
    assert.ok(guard, 'logind is on the bus: the guard runs');
    assert.deepEqual(
      lockOpts.map((o) => [o.what, o.mode, o.bus]),
      [['sleep', 'delay', bus.address]],
    );
    assert.deepEqual(events, [['take', { locked: false, lockFile: false }]], 'held while awake, unlocked');

    // `systemctl suspend` with no vm-daemon on the bus: nobody but input-daemon delays it.
    logind.goToSleep();
    await until('the delay inhibitor released', () => events.length >= 2);
    assert.deepEqual(
      events[1],
      ['release', { locked: true, lockFile: true }],
      'the seat was locked (and its lock recorded for a restarted daemon) when the inhibitor let go',
    );
    await service.settled();
    assert.deepEqual(switched, [0], 'the lock screen was called home');
    await assert.rejects(
      service.Freeze(ctx, { target: variant('o', vmPath('personal')) }),
      (e) => isBulkheadError(e, 'Locked'),
      'a switch to a VM is refused while asleep and after',
    );

    logind.wake();
    await until('the delay inhibitor taken again', () => events.length >= 3);
    assert.deepEqual(events[2], ['take', { locked: true, lockFile: true }], 'and the seat stays locked');

    // Already locked: the next sleep keeps it locked, and again holds logind back until then.
    logind.goToSleep();
    await until('released for the second sleep', () => events.length >= 4);
    assert.deepEqual(events[3], ['release', { locked: true, lockFile: true }]);
    logind.wake();
    await until('taken again after the second sleep', () => events.length >= 5);
    assert.deepEqual(events[4], ['take', { locked: true, lockFile: true }]);
    assert.deepEqual(switched, [0], 'a lock already on is not locked again (no second trip home)');

    await guard.close();
    assert.deepEqual(events[5], ['release', { locked: true, lockFile: true }], 'released when stopping');
    await service.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A stand-in /proc/uptime that says the machine has slept `asleepMs` since boot. */
function writeUptime(file: string, asleepMs: number): void {
  const monotonicMs = Number(process.hrtime.bigint() / 1_000_000n);
  writeFileSync(file, `${((monotonicMs + asleepMs) / 1000).toFixed(2)} 0.00\n`);
}

test('fake logind: a sleep while no input-daemon ran (its predecessor crashed, systemd had not started it yet) starts it locked; without one it starts unlocked', async () => {
  assert.ok(logind, 'runs after the test above started fake logind');
  const dir = mkdtempSync(join(tmpdir(), 'sleep-guard-'));
  const uptime = join(dir, 'uptime');
  const recordFile = join(dir, 'asleep-since-boot.json');
  const recorded = () => JSON.parse(readFileSync(recordFile, 'utf8')).asleepSinceBootMs as number;
  try {
    // The previous daemon recorded 5 s asleep; the machine has not slept since: unlocked.
    writeFileSync(recordFile, JSON.stringify({ asleepSinceBootMs: 5000 }));
    writeUptime(uptime, 5000);
    let seat = await guardedSeat(dir, new SleepRecord(recordFile, uptime));
    assert.deepEqual(seat.events, [['take', { locked: false, lockFile: false }]]);
    assert.equal(seat.service.properties().Locked, false, 'no sleep nobody saw: not locked');
    await seat.guard!.close();
    await seat.service.close();

    // Now a 60 s sleep while no daemon was subscribed (the kernel's time asleep grew by it).
    writeUptime(uptime, 65_000);
    seat = await guardedSeat(dir, new SleepRecord(recordFile, uptime));
    assert.equal(seat.service.properties().Locked, true, 'the sleep nobody saw locks the seat');
    assert.ok(existsSync(join(dir, 'locked')), 'and the lock is recorded for a restart');
    await seat.service.settled();
    assert.deepEqual(seat.switched, [0], 'the lock screen was called home');
    assert.ok(Math.abs(recorded() - 65_000) < 1000, `recorded for the next daemon: ${recorded()}`);

    // A sleep it sees: locked at PrepareForSleep as before, recorded at the wake.
    writeUptime(uptime, 125_000);
    logind!.goToSleep();
    logind!.wake();
    await until('the wake recorded', () => recorded() > 100_000);
    await seat.guard!.close();
    await seat.service.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the sleep record: no record or a torn one counts as none taken (asleep since boot = a sleep nobody saw); the real /proc/uptime is read', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sleep-record-'));
  try {
    const uptime = join(dir, 'uptime');
    const file = join(dir, 'asleep-since-boot.json');
    writeUptime(uptime, 200);
    assert.deepEqual(new SleepRecord(file, uptime).check(), { slept: false }, 'a boot without a sleep');
    writeUptime(uptime, 30_000);
    assert.equal(new SleepRecord(file, uptime).check().slept, true, 'no record, 30 s asleep');
    writeFileSync(file, '{"asleepSinceBootMs": 29');
    assert.equal(new SleepRecord(file, uptime).check().slept, true, 'a torn record');
    new SleepRecord(file, uptime).record();
    assert.equal(new SleepRecord(file, uptime).check().slept, false, 'recorded now');
    assert.deepEqual(new SleepRecord(file, join(dir, 'absent')).check().slept, null);
    const real = new SleepRecord(file).check();
    assert.notEqual(real.slept, null, 'this machine has /proc/uptime');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fake logind: PrepareForSleep from a connection that does not own login1 locks nothing', async () => {
  assert.ok(logind, 'runs after the test above started fake logind');
  const dir = mkdtempSync(join(tmpdir(), 'sleep-guard-'));
  const impostor = await connectBus(bus.address);
  try {
    const { service, events, guard } = await guardedSeat(dir);
    impostor.send(
      new Message({
        type: SIGNAL,
        path: '/org/freedesktop/login1',
        interface: 'org.freedesktop.login1.Manager',
        member: 'PrepareForSleep',
        signature: 'b',
        body: [true],
      }),
    );
    // A round trip on the impostor's connection (the bus has routed its signal by the reply), then
    // one on ours (the signal, if delivered, came before this reply).
    const getId = (c: BusClient) =>
      c.call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetId', '', []);
    await getId(new BusClient(impostor, 5000));
    await getId(client);
    await new Promise((r) => setImmediate(r));
    assert.equal(service.properties().Locked, false);
    assert.deepEqual(
      events.map(([e]) => e),
      ['take'],
    );
    await guard?.close();
    await service.close();
  } finally {
    impostor.disconnect();
    rmSync(dir, { recursive: true, force: true });
  }
});

const INPUT_DAEMON_MAIN = join(__dirname, 'main.js');

/**
 * A fake systemd-inhibit: like the real one it holds "the lock" while the command after `--` runs
 * (cat, reading the daemon's pipe); it writes a line when taken, and when let go whether the
 * seat's lock file was there at that moment.
 */
function fakeSystemdInhibit(bin: string, events: string, lockFile: string): void {
  mkdirSync(bin, { recursive: true });
  const file = join(bin, 'systemd-inhibit');
  writeFileSync(
    file,
    `#!/bin/sh
echo "take $*" >> "${events}"
while [ "$1" != "--" ]; do shift; done
shift
"$@"
if [ -e "${lockFile}" ]; then echo "release locked" >> "${events}"; else echo "release unlocked" >> "${events}"; fi
`,
  );
  chmodSync(file, 0o755);
}

function spawnInputDaemon(dir: string, runDir: string, uptimeFile: string) {
  return spawn(process.execPath, [INPUT_DAEMON_MAIN, '--seat', 'virtual', '--run-dir', runDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env,
      BULKHEAD_BUS: bus.address,
      BULKHEAD_LOG_LEVEL: 'info',
      BULKHEAD_PROC_UPTIME: uptimeFile,
      PATH: `${join(dir, 'bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    },
  });
}

const lockedProperty = async () =>
  (
    await client.call(
      'org.bulkhead.Input1',
      '/org/bulkhead/Input1',
      'org.freedesktop.DBus.Properties',
      'Get',
      'ss',
      ['org.bulkhead.Input1', 'Locked'],
    )
  )[0].value as boolean;

test('fake logind: the real input-daemon SIGKILLed while unlocked, and the machine sleeping before systemd starts the next one: that one starts locked', async () => {
  assert.ok(logind, 'runs after the tests above started fake logind');
  const dir = mkdtempSync(join(tmpdir(), 'sleep-guard-daemon-'));
  const runDir = join(dir, 'run');
  const events = join(dir, 'inhibit-events');
  fakeSystemdInhibit(join(dir, 'bin'), events, join(runDir, 'locked'));
  const uptime = join(dir, 'uptime');
  writeUptime(uptime, 0);
  const started: Array<ReturnType<typeof spawnInputDaemon>> = [];
  const start = async () => {
    const d = spawnInputDaemon(dir, runDir, uptime);
    started.push(d);
    let log = '';
    d.stderr!.on('data', (x) => (log += x));
    await until('input-daemon ready', () => log.includes(' ready: '));
    await until('its inhibitor taken', () => log.includes('holding a sleep delay inhibitor'));
    return { daemon: d, log: () => log };
  };
  try {
    const first = await start();
    assert.equal(await lockedProperty(), false);
    const gone = new Promise((r) => first.daemon.once('exit', r));
    first.daemon.kill('SIGKILL');
    await gone;
    writeUptime(uptime, 60_000); // the 60 s sleep nobody saw
    const second = await start();
    assert.equal(await lockedProperty(), true, `starts locked; its log:\n${second.log()}`);
    assert.match(second.log(), /slept (59|60)\.\d s while no input-daemon was subscribed/);
  } finally {
    for (const d of started)
      if (d.exitCode === null && d.signalCode === null) {
        const gone = new Promise((r) => d.once('exit', r));
        d.kill('SIGKILL');
        await gone;
      }
    // Each daemon's systemd-inhibit stand-in outlives it for a moment, to write its release line.
    const released = () =>
      existsSync(events)
        ? readFileSync(events, 'utf8')
            .split('\n')
            .filter((l) => l.startsWith('release')).length
        : 0;
    await until('every inhibitor let go', () => released() >= started.length).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }
});

test('fake logind: the real input-daemon, vm-daemon down, locks the seat at PrepareForSleep(true) before its systemd-inhibit lets go, and takes a new one on waking', async () => {
  assert.ok(logind, 'runs after the tests above started fake logind');
  const dir = mkdtempSync(join(tmpdir(), 'sleep-guard-daemon-'));
  const runDir = join(dir, 'run');
  const events = join(dir, 'inhibit-events');
  const lines = () => (existsSync(events) ? readFileSync(events, 'utf8').trim().split('\n') : []);
  fakeSystemdInhibit(join(dir, 'bin'), events, join(runDir, 'locked'));
  // This host may have slept since its boot; the daemon is told it has not.
  const uptime = join(dir, 'uptime');
  writeUptime(uptime, 0);
  const daemon = spawnInputDaemon(dir, runDir, uptime);
  let log = '';
  daemon.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((r) => daemon.once('exit', () => r()));
  try {
    await until('input-daemon ready', () => log.includes(' ready: '));
    await until('its inhibitor taken', () => lines().length >= 1);
    assert.match(lines()[0], /^take --what=sleep --mode=delay --who=Bulkhead input-daemon .*-- cat$/);
    assert.equal(await lockedProperty(), false);

    logind.goToSleep();
    await until('its inhibitor released', () => lines().length >= 2);
    assert.equal(lines()[1], 'release locked', `the seat was locked first; its log:\n${log}`);
    assert.equal(await lockedProperty(), true);

    logind.wake();
    await until('a new inhibitor taken', () => lines().length >= 3);
    assert.match(lines()[2], /^take --what=sleep --mode=delay /);

    // A SIGKILLed input-daemon leaves no inhibitor behind either (cat's pipe closes).
    daemon.kill('SIGKILL');
    await exited;
    await until('the inhibitor gone with its daemon', () => lines().length >= 4);
    assert.equal(lines()[3], 'release locked');
  } finally {
    if (daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
