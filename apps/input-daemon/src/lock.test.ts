import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@bulkhead/common';
import { BulkheadError, type CallContext } from '@bulkhead/contract';
import { variant } from '@bulkhead/dbus';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { EV_KEY, EV_SYN, SYN_REPORT } from './input-event';
import { InputService } from './input-service';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';
import { PasswordlessUnlock, type UnlockCheck } from './unlock/unlock-check';

const ctx = {} as CallContext;
const KEY_LEFTCTRL = 29;
const KEY_LEFTALT = 56;
const KEY_BACKSPACE = 14;
const KEY_1 = 2;

function press(seat: VirtualSeat, ...keys: number[]): void {
  for (const k of keys)
    seat.inject('keyboard', [
      [EV_KEY, k, 1],
      [EV_SYN, SYN_REPORT, 0],
    ]);
  for (const k of [...keys].reverse())
    seat.inject('keyboard', [
      [EV_KEY, k, 0],
      [EV_SYN, SYN_REPORT, 0],
    ]);
}

/** input-daemon's service on a virtual seat, no VMs, the switcher's sink only. */
function seatService(
  seat: VirtualSeat,
  unlock: UnlockCheck,
  switchToSlot: (slot: number) => Promise<void>,
): InputService {
  return new InputService(
    seat,
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    {
      forVm: async () => {
        throw new Error('no VMs in this test');
      },
    },
    { switchToSlot },
    createLogger('test', 'error'),
    { unlock },
  );
}

test('the secure-attention chord locks, pulls the screen back to the switcher, and slot hotkeys do not switch until Unlock', async () => {
  const seat = new VirtualSeat();
  const switched: number[] = [];
  const service = seatService(seat, new PasswordlessUnlock(), async (slot) => {
    switched.push(slot);
  });
  press(seat, KEY_LEFTCTRL, KEY_LEFTALT, KEY_BACKSPACE);
  await service.settled();
  assert.equal(service.properties().Locked, true);
  assert.deepEqual(switched, [0], 'locking returns the screen to the switcher');
  press(seat, KEY_LEFTCTRL, KEY_1);
  await service.settled();
  assert.deepEqual(switched, [0], 'Ctrl+1 did not switch while locked');
  assert.match(service.properties().LastHotkeyError, /locked/);
  await service.Unlock(ctx, {});
  press(seat, KEY_LEFTCTRL, KEY_1);
  await service.settled();
  assert.deepEqual(switched, [0, 1], 'Ctrl+1 switches again after Unlock');
  await service.close();
});

test('a lock that comes while the password is being checked (a sleep, the chord) is not undone by that password', async () => {
  const seat = new VirtualSeat();
  let release!: () => void;
  // PAM checking: takes a while (seconds after a failure, on hardware).
  const slowUnlock = {
    attempt: () => new Promise<void>((r) => (release = r)),
  };
  const service = seatService(seat, slowUnlock, async () => undefined);
  await service.Lock(ctx);
  const unlocking = service.Unlock(ctx, { password: variant('s', 'right') });
  await new Promise((r) => setImmediate(r));
  await service.Lock(ctx); // the suspend transaction's lock, before the machine sleeps
  release();
  await assert.rejects(
    unlocking,
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'TryAgainLater',
  );
  assert.equal(service.properties().Locked, true, 'still locked: the password was for the earlier lock');
  // The next attempt, started after that lock, unlocks.
  const again = service.Unlock(ctx, { password: variant('s', 'right') });
  await new Promise((r) => setImmediate(r));
  release();
  await again;
  assert.equal(service.properties().Locked, false);
  await service.close();
});

test('keys typed right after the secure-attention chord, in the same read of the keyboard, go to the lock screen, never to the VM that had the focus', async () => {
  const VM_A = '/org/bulkhead/VmManager1/vm/a';
  const seat = new VirtualSeat();
  const switcher = new FakeSink('/');
  const vmA = new FakeSink(VM_A);
  const service = new InputService(
    seat,
    new HotkeyMatcher(buildChords()),
    switcher,
    { forVm: async () => vmA },
    { switchToSlot: async () => undefined },
    createLogger('test', 'error'),
    { unlock: new PasswordlessUnlock() },
  );
  await service.SetFocus(ctx, VM_A, { qmp_socket: variant('s', '/fake/a.sock') });
  // One burst of events (the daemon was busy; a read returns them all): the chord, then a password.
  press(seat, KEY_LEFTCTRL, KEY_LEFTALT, KEY_BACKSPACE);
  const KEY_P = 25;
  press(seat, KEY_P);
  assert.deepEqual(vmA.events(), [], 'the VM got nothing: neither the chord nor what followed it');
  assert.deepEqual(
    switcher.events().map((e) => [e.code, e.value]),
    [
      [KEY_P, 1],
      [KEY_P, 0],
    ],
  );
  await service.settled();
  assert.equal(service.properties().Locked, true);
  await service.close();
});
