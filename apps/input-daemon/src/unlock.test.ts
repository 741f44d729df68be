import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mock, test } from 'node:test';
import { createLogger, TypedEmitter } from '@bulkhead/common';
import { BulkheadError, isBulkheadError, vmPath, type CallContext } from '@bulkhead/contract';
import { variant } from '@bulkhead/dbus';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { EV_KEY, EV_SYN, SYN_REPORT } from './input-event';
import { InputService, type InputServiceOptions, type VmManagerLink } from './input-service';
import type { InputSource, SourceEvents } from './sources/source';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';
import type { PamResult, PasswordChecker } from './unlock/pam-native';
import { UnlockGate } from './unlock/unlock-gate';

const ctx = {} as CallContext;
const log = createLogger('test', 'error');

/** A fake PAM that knows one password. */
class FakePam implements PasswordChecker {
  async check(_user: string, password: string): Promise<PamResult> {
    const ok = password === 'hunter2!';
    return { ok, code: ok ? 0 : 7, name: ok ? 'Success' : 'Authentication failure', step: 'authenticate' };
  }
}

function service(opts: InputServiceOptions, vmManager?: VmManagerLink) {
  const seat = new VirtualSeat();
  const switched: number[] = [];
  const svc = new InputService(
    seat,
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    { forVm: async (target) => new FakeSink(target) },
    vmManager ?? {
      switchToSlot: async (slot) => {
        switched.push(slot);
      },
    },
    log,
    opts,
  );
  return { seat, svc, switched };
}

test('Unlock asks for the password: none, a wrong one and a NUL-cut one keep the seat locked; the right one unlocks', async () => {
  const { svc } = service({ unlock: new UnlockGate(new FakePam(), { user: 'owner', firstDelayMs: 0 }, log) });
  await svc.Lock();
  await assert.rejects(svc.Unlock(ctx, {}), (e) => isBulkheadError(e, 'InvalidArgument'));
  await assert.rejects(svc.Unlock(ctx, { password: variant('s', 'hunter2') }), (e) =>
    isBulkheadError(e, 'AuthenticationFailed'),
  );
  await assert.rejects(svc.Unlock(ctx, { password: variant('s', 'hunter2!\0x') }), (e) =>
    isBulkheadError(e, 'InvalidArgument'),
  );
  assert.equal(svc.properties().Locked, true);
  await svc.Unlock(ctx, { password: variant('s', 'hunter2!') });
  assert.equal(svc.properties().Locked, false);
  await svc.close();
});

test('a daemon with no unlock method never unlocks (NotSupported), it does not fall open', async () => {
  const { svc } = service({});
  await svc.Lock();
  await assert.rejects(svc.Unlock(ctx, { password: variant('s', 'anything') }), (e) =>
    isBulkheadError(e, 'NotSupported'),
  );
  assert.equal(svc.properties().Locked, true);
  await svc.close();
});

test('while locked, Freeze for a switch to a VM is refused with Locked; a switch home is allowed', async () => {
  const { svc } = service({ unlock: new UnlockGate(new FakePam(), { user: 'owner' }, log) });
  await svc.Freeze(ctx, { target: variant('o', vmPath('business')) });
  await svc.SetFocus(ctx, '/', {});
  await svc.Lock();
  await assert.rejects(svc.Freeze(ctx, { target: variant('o', vmPath('business')) }), (e) =>
    isBulkheadError(e, 'Locked'),
  );
  assert.equal(svc.properties().Frozen, false, 'a refused Freeze changes nothing');
  await svc.Freeze(ctx, { target: variant('o', '/') });
  await svc.close();
});

test('a lock during a running switch still brings the screen home once that switch is over', async () => {
  let busy = 2;
  const calls: number[] = [];
  const { svc } = service(
    { unlock: null, lockRetry: { attempts: 5, delayMs: 5 } },
    {
      switchToSlot: async (slot) => {
        calls.push(slot);
        if (busy-- > 0) throw new BulkheadError('SwitchInProgress', 'a switch is running');
      },
    },
  );
  await svc.Lock();
  for (let i = 0; i < 100 && calls.length < 3; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(calls, [0, 0, 0], 'SwitchToSlot(0) retried until the running switch was over');
  await svc.close();
});

test('no input for the idle time locks the seat and brings the screen home; typing keeps it unlocked', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    const { svc, seat, switched } = service({ unlock: null, idleLockMs: 300_000 });
    mock.timers.tick(299_000);
    seat.inject('keyboard', [
      [EV_KEY, 30, 1],
      [EV_SYN, SYN_REPORT, 0],
      [EV_KEY, 30, 0],
      [EV_SYN, SYN_REPORT, 0],
    ]);
    mock.timers.tick(299_000);
    assert.equal(svc.properties().Locked, false, 'a key restarted the idle time');
    mock.timers.tick(1_000);
    await svc.settled();
    assert.equal(svc.properties().Locked, true);
    assert.deepEqual(switched, [0]);
    await svc.close();
  } finally {
    mock.timers.reset();
  }
});

test('a restarted input-daemon comes back locked when the seat was locked: killing it is no way around the lock', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'input-lock-'));
  try {
    const lockFile = join(dir, 'locked');
    const unlock = new UnlockGate(new FakePam(), { user: 'owner', firstDelayMs: 0 }, log);
    const first = service({ unlock, lockFile });
    await first.svc.Lock();
    // The first daemon dies here (nothing of it runs on); the next one starts from the run dir.
    const second = service({ unlock, lockFile });
    assert.equal(second.svc.properties().Locked, true, 'the restarted daemon is locked');
    second.svc.resumeLock();
    await second.svc.settled();
    assert.deepEqual(second.switched, [0], 'and brings the screen home to the lock screen');
    await second.svc.Unlock(ctx, { password: variant('s', 'hunter2!') });
    const third = service({ unlock, lockFile });
    assert.equal(third.svc.properties().Locked, false, 'unlocked before the restart: unlocked after it');
    for (const s of [first, second, third]) await s.svc.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A fake hardware seat (what EvdevSeat is to InputService: no InjectEvents). */
class FakeEvdevSeat extends TypedEmitter<SourceEvents> implements InputSource {
  readonly seat = 'evdev' as const;
  readonly leds = { setLeds: () => undefined };
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  devices() {
    return [];
  }
}

test('InjectEvents is refused with NotSupported on a hardware seat (the UI may not type into VMs), and works on the virtual seat', async () => {
  const hardware = new InputService(
    new FakeEvdevSeat(),
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    { forVm: async (target) => new FakeSink(target) },
    { switchToSlot: async () => undefined },
    log,
    { unlock: null },
  );
  assert.throws(
    () =>
      hardware.InjectEvents(ctx, 'keyboard', [
        [EV_KEY, 30, 1],
        [EV_SYN, SYN_REPORT, 0],
      ]),
    (e) => isBulkheadError(e, 'NotSupported'),
  );
  await hardware.close();
  const { svc, switched } = service({ unlock: null });
  // Ctrl+1 through the virtual seat is a real hotkey: the injected events reach the pipeline.
  svc.InjectEvents(ctx, 'keyboard', [
    [EV_KEY, 29, 1],
    [EV_SYN, SYN_REPORT, 0],
    [EV_KEY, 2, 1],
    [EV_SYN, SYN_REPORT, 0],
  ]);
  svc.InjectEvents(ctx, 'keyboard', [
    [EV_KEY, 2, 0],
    [EV_SYN, SYN_REPORT, 0],
    [EV_KEY, 29, 0],
    [EV_SYN, SYN_REPORT, 0],
  ]);
  await svc.settled();
  assert.deepEqual(switched, [1]);
  await svc.close();
});
