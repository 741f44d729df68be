/**
 * Vm1.StateReasonCode: why a VM is in its State as a code programs can act on (StateReason keeps
 * the words), told apart by who caused the change — a request, the guest, or a crash.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from './testing/fake-backend';
import { StateStore } from './state-store';
import { DONE, type InputFocus } from './switch-transaction';
import { VmManager } from './vm-manager';
import { vmProperties } from './dbus-service';

const log = createLogger('test', 'error');

/** input-daemon stand-in: every step succeeds (no switch happens in these tests). */
const fakeInput: InputFocus = { freeze: async () => DONE, setFocus: async () => DONE };

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vmd-reason-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  writeFileSync(
    join(configDir, 'a.json'),
    JSON.stringify({ id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 32 }),
  );
  const backend = new FakeBackend();
  const manager = new VmManager({
    backend,
    input: fakeInput,
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
  });
  const changed: string[][] = [];
  manager.on('vm-changed', (_id, props) => changed.push(props));
  return { backend, manager, changed, done: () => (manager.close(), rmSync(root, { recursive: true })) };
}

const reason = (m: VmManager) => {
  const p = vmProperties(m, 'personal');
  return [p.State, p.StateReasonCode];
};

test('StateReasonCode says whether a state change was requested, done by the guest or a crash', async () => {
  const { backend, manager, changed, done } = setup();
  try {
    await manager.init();
    assert.deepEqual(reason(manager), ['stopped', 'none']);

    await manager.start('personal');
    assert.deepEqual(reason(manager), ['running', 'started']);
    assert.ok(
      changed.some((c) => c.includes('StateReasonCode')),
      'a code change is announced',
    );

    await manager.pause('personal');
    assert.deepEqual(reason(manager), ['paused', 'paused-by-user']);
    await manager.resume('personal');
    assert.deepEqual(reason(manager), ['running', 'resumed-by-user']);

    await manager.kill('personal');
    assert.deepEqual(reason(manager), ['stopped', 'stopped-by-user']);

    await manager.start('personal');
    // The guest powers off by itself: the backend reports 'stopped' without any request of ours.
    backend.emit('state', 'personal', 'stopped', 'the guest powered off (qemu exited with code 0)');
    assert.deepEqual(reason(manager), ['stopped', 'guest-shutdown']);
    assert.match(vmProperties(manager, 'personal').StateReason, /powered off/, 'the words stay');

    await manager.start('personal');
    backend.crash('personal');
    assert.deepEqual(reason(manager), ['crashed', 'crashed']);
  } finally {
    done();
  }
});

test("a guest's reboot starts it again (guest-reboot), and a reboot loop leaves it stopped with LastError", async () => {
  const { backend, manager, done } = setup();
  const starts = () => backend.calls.filter((c) => c === 'start personal').length;
  const settled = () => new Promise((r) => setTimeout(r, 20));
  try {
    await manager.init();
    await manager.start('personal');
    const rebooted = () =>
      backend.emit('state', 'personal', 'stopped', 'domain 1: the guest rebooted', { guestReboot: true });
    rebooted();
    await settled();
    assert.deepEqual(reason(manager), ['running', 'started'], 'running again after its reboot');
    assert.equal(starts(), 2);
    rebooted();
    await settled();
    assert.equal(starts(), 3);
    // The third reboot within the bound is a loop: not started again, and said so.
    rebooted();
    await settled();
    assert.deepEqual(reason(manager), ['stopped', 'guest-reboot']);
    assert.equal(starts(), 3);
    assert.match(vmProperties(manager, 'personal').LastError, /rebooted 3 times within 120 s/);
    // A person's Start after the loop begins a new count: two reboots are restarts again.
    await manager.start('personal');
    rebooted();
    await settled();
    rebooted();
    await settled();
    assert.deepEqual(reason(manager), ['running', 'started'], 'still restarted after a new Start');
    assert.equal(starts(), 6);
    // A power-off without the reboot detail stays a stop.
    await manager.kill('personal');
    await manager.start('personal');
    backend.emit('state', 'personal', 'stopped', 'domain 1: the guest powered off', {});
    await settled();
    assert.deepEqual(reason(manager), ['stopped', 'guest-shutdown']);
    assert.equal(starts(), 7);
  } finally {
    done();
  }
});

test('a guest that rebooted while no daemon ran (a vm-daemon killed meanwhile) is started again by the next one', async () => {
  const { backend, manager, done } = setup();
  try {
    backend.rebootedAway.set('personal', 'domain 1: the guest rebooted while vm-daemon was not running');
    await manager.init();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      backend.calls.filter((c) => c.startsWith('start')),
      ['start personal'],
    );
    assert.deepEqual(reason(manager), ['running', 'started']);
  } finally {
    done();
  }
});

test('a VM that nothing ended by a reboot stays stopped at init (it is not autostart)', async () => {
  const { backend, manager, done } = setup();
  try {
    await manager.init();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      backend.calls.filter((c) => c.startsWith('start')),
      [],
    );
    assert.equal(reason(manager)[0], 'stopped');
  } finally {
    done();
  }
});
