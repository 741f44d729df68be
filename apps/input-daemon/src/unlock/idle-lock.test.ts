import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { IdleLock } from './idle-lock';

test('the seat locks after the idle time, not before, and once per idle stretch', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    let locks = 0;
    const idle = new IdleLock(60_000, () => locks++);
    idle.start();
    mock.timers.tick(59_000);
    idle.activity(); // a key at 59 s pushes the lock out to 119 s
    mock.timers.tick(59_000);
    assert.equal(locks, 0, 'activity restarts the idle time');
    mock.timers.tick(1_000);
    assert.equal(locks, 1, 'locked 60 s after the last input');
    mock.timers.tick(600_000);
    assert.equal(locks, 1, 'no repeated locks while still idle');
    idle.activity(); // the person comes back (types the password on the lock screen)
    mock.timers.tick(60_000);
    assert.equal(locks, 2, 'another idle stretch locks again');
    idle.stop();
    mock.timers.tick(600_000);
    assert.equal(locks, 2, 'stopped: never locks');
  } finally {
    mock.timers.reset();
  }
});

test('a nonsensical idle time is refused, not treated as "lock at once"', () => {
  assert.throws(() => new IdleLock(0, () => undefined), RangeError);
  assert.throws(() => new IdleLock(Number.NaN, () => undefined), RangeError);
});
