import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BulkheadError, SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from './testing/fake-backend';
import { StateStore } from './state-store';
import { DONE, skipped, type InputFocus, type StepResult } from './switch-transaction';
import { VmManager } from './vm-manager';
import { waitFor } from './testing/daemon-process';
import { vmProperties } from './dbus-service';

const log = createLogger('test', 'error');

/** In-memory input-daemon: records calls, can be absent or fail SetFocus. */
class FakeInputFocus implements InputFocus {
  present = true;
  failFocusOn: string | null = null;
  focused = SWITCHER_PATH;
  calls: string[] = [];
  async freeze(): Promise<StepResult> {
    if (!this.present) return skipped('absent');
    this.calls.push('freeze');
    return DONE;
  }
  async setFocus(target: string, qmp: string): Promise<StepResult> {
    if (!this.present) return skipped('absent');
    this.calls.push(`focus ${target} ${qmp}`);
    if (target === this.failFocusOn) throw new BulkheadError('BackendFailed', 'fake SetFocus failure');
    this.focused = target;
    return DONE;
  }
}

function setup(files: Record<string, object | string> = {}) {
  const root = mkdtempSync(join(tmpdir(), 'vmd-core-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  const defaults = {
    'a.json': { id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 32 },
    'b.json': { id: 'business', slot: 2, color: '#e07b00', memoryMiB: 32, kind: 'business' },
  };
  for (const [n, c] of Object.entries({ ...defaults, ...files }))
    writeFileSync(join(configDir, n), typeof c === 'string' ? c : JSON.stringify(c));
  const backend = new FakeBackend();
  const input = new FakeInputFocus();
  const state = new StateStore(join(root, 'state'), log);
  const manager = new VmManager({ backend, input, configDir, state, log, watchConfig: false });
  return {
    root,
    configDir,
    backend,
    input,
    state,
    manager,
    done: () => (manager.close(), rmSync(root, { recursive: true })),
  };
}

test('switching to a stopped VM starts it, then freezes, focuses with its input QMP socket and publishes', async () => {
  const t = setup();
  await t.manager.init();
  const rec = await t.manager.switchToSlot(2);
  assert.equal(t.manager.vms.get('business')!.state, 'running');
  assert.equal(t.manager.activeVm, vmPath('business'));
  assert.deepEqual(
    rec.steps.map(([n]) => n),
    ['starting-vm', 'freeze-input', 'move-gpu', 'focus-input', 'move-usb', 'publish'],
  );
  assert.ok(rec.steps.every(([, d]) => typeof d === 'bigint'));
  assert.deepEqual(t.input.calls, [
    `focus ${SWITCHER_PATH} `, // init: no active VM to restore, so input is told the switcher has it
    'freeze',
    `focus ${vmPath('business')} /fake/business/input-qmp.sock`,
  ]);
  assert.deepEqual(rec.skipped, ['move-gpu', 'move-usb']);
  const saved = JSON.parse(readFileSync(t.state.path, 'utf8'));
  assert.equal(saved.activeVm, 'business');
  assert.deepEqual(saved.slots, { business: 2, personal: 1 });
  await t.manager.switchToSlot(0);
  assert.equal(t.manager.activeVm, SWITCHER_PATH);
  t.done();
});

test('without input-daemon the input steps are recorded as skipped, not failed', async () => {
  const t = setup();
  t.input.present = false;
  await t.manager.init();
  const rec = await t.manager.switchTo(vmPath('personal'));
  assert.equal(rec.outcome, 'ok');
  assert.ok(rec.skipped.includes('freeze-input') && rec.skipped.includes('focus-input'));
  t.done();
});

test('the last request wins: a request during a switch waits, a newer one replaces it with Superseded', async () => {
  const t = setup();
  await t.manager.init();
  let release!: () => void;
  t.backend.startGate = new Promise((r) => (release = r));
  const progress: string[] = [];
  t.manager.on('switch-progress', (target, step) => progress.push(`${step} ${target}`));
  const first = t.manager.switchToSlot(1);
  assert.equal(t.manager.transaction.inProgress, true);
  const second = t.manager.switchToSlot(2);
  const third = t.manager.switchTo(SWITCHER_PATH);
  const fourth = t.manager.switchToSlot(1);
  // Each waiting request is replaced by the next one; the replaced callers are told by whom.
  await assert.rejects(
    second,
    (e: unknown) =>
      e instanceof BulkheadError &&
      e.errorName === 'Superseded' &&
      /request #3 to \//.test(e.message) &&
      e.message.includes(vmPath('business')),
  );
  await assert.rejects(
    third,
    (e: unknown) =>
      e instanceof BulkheadError && e.errorName === 'Superseded' && /request #4/.test(e.message),
  );
  assert.equal(t.manager.pendingSwitchTarget, vmPath('personal'));
  release();
  assert.equal((await first).target, vmPath('personal'));
  const last = await fourth;
  assert.equal(last.outcome, 'ok');
  assert.equal(last.from, vmPath('personal'));
  assert.equal(t.manager.activeVm, vmPath('personal'));
  assert.equal(t.input.focused, vmPath('personal'));
  assert.equal(t.manager.vms.get('business')!.state, 'stopped', 'the replaced target was never started');
  assert.equal(t.manager.transaction.inProgress, false);
  assert.ok(progress.includes(`pending ${vmPath('business')}`));
  assert.ok(progress.includes(`superseded ${vmPath('business')}`));
  // Queue drained: the next request runs at once again.
  await t.manager.switchToSlot(0);
  assert.equal(t.manager.activeVm, SWITCHER_PATH);
  t.done();
});

test('a pending request whose VM is removed while it waits gets NoSuchVm; the queue goes on', async () => {
  const t = setup();
  await t.manager.init();
  let release!: () => void;
  t.backend.startGate = new Promise((r) => (release = r));
  const first = t.manager.switchToSlot(1);
  const second = t.manager.switchToSlot(2);
  rmSync(join(t.configDir, 'b.json'));
  t.manager.reload();
  release();
  await first;
  await assert.rejects(second, (e: unknown) => e instanceof BulkheadError && e.errorName === 'NoSuchVm');
  await t.manager.switchToSlot(0);
  assert.equal(t.manager.activeVm, SWITCHER_PATH);
  t.done();
});

test('a failing focus-input rolls back: the previous target gets the focus again, ActiveVm unchanged', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(1);
  t.input.calls = [];
  t.input.failFocusOn = vmPath('business');
  await assert.rejects(
    t.manager.switchToSlot(2),
    (e: unknown) =>
      e instanceof BulkheadError && e.errorName === 'BackendFailed' && /focus-input/.test(e.message),
  );
  assert.equal(t.manager.activeVm, vmPath('personal'));
  assert.equal(t.input.focused, vmPath('personal'));
  assert.deepEqual(t.input.calls.at(-1), `focus ${vmPath('personal')} /fake/personal/input-qmp.sock`);
  const rec = t.manager.lastSwitch!;
  assert.equal(rec.outcome, 'rolled-back');
  assert.equal(rec.error, 'org.bulkhead.Error.BackendFailed');
  assert.deepEqual(
    rec.steps.map(([n]) => n),
    ['starting-vm', 'freeze-input', 'move-gpu', 'focus-input', 'rollback'],
  );
  t.done();
});

test('the active VM crashing or pausing returns the focus to the switcher', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(1);
  t.backend.crash('personal', 'qemu exited with signal SIGKILL');
  const e = t.manager.vms.get('personal')!;
  assert.equal(e.state, 'crashed');
  assert.equal(e.stateReason, 'qemu exited with signal SIGKILL');
  assert.equal(t.manager.activeVm, SWITCHER_PATH);
  await waitFor('focus on the switcher', () => t.input.focused === SWITCHER_PATH);
  await t.manager.switchToSlot(2);
  await t.manager.pause('business');
  assert.equal(t.manager.activeVm, SWITCHER_PATH);
  t.done();
});

test('invalid and inconsistent files: ConfigErrors and LastError; reload applies edits; removed stopped VMs go', async () => {
  const t = setup({
    'c.json': { id: 'broken', slot: 3, color: 'red', memoryMiB: 32 },
    'd.json': { id: 'clash', slot: 1, color: '#000000', memoryMiB: 32 },
  });
  await t.manager.init();
  assert.deepEqual([...t.manager.vms.keys()].sort(), ['broken', 'business', 'clash', 'personal']);
  assert.deepEqual(
    t.manager.configErrors.map((e) => [e.file.split('/').pop(), e.field]),
    [
      ['c.json', 'color'],
      ['d.json', 'slot'],
    ],
  );
  assert.match(vmProperties(t.manager, 'broken').LastError, /c\.json: color: must be #rrggbb/);
  await assert.rejects(
    t.manager.start('broken'),
    (e: unknown) => e instanceof BulkheadError && e.errorName === 'InvalidConfig',
  );
  // Fix one file, break a loaded one, remove another.
  writeFileSync(
    join(t.configDir, 'c.json'),
    JSON.stringify({ id: 'broken', slot: 3, color: '#ff0000', memoryMiB: 32 }),
  );
  writeFileSync(
    join(t.configDir, 'a.json'),
    JSON.stringify({ id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 'lots' }),
  );
  rmSync(join(t.configDir, 'd.json'));
  assert.equal(t.manager.reload(), 2);
  assert.equal(vmProperties(t.manager, 'broken').LastError, '');
  assert.equal(vmProperties(t.manager, 'broken').Color, '#ff0000');
  assert.match(vmProperties(t.manager, 'personal').LastError, /a\.json: memoryMiB: must be an integer/);
  assert.equal(
    vmProperties(t.manager, 'personal').Color,
    '#2a6fdb',
    'the last valid definition stays in force',
  );
  assert.ok(!t.manager.vms.has('clash'));
  t.done();
});

test('a corrupt state file is reported and replaced, never fatal', async () => {
  const t = setup();
  writeFileSync(t.state.path, '{ this is not json');
  await t.manager.init();
  assert.match(t.state.loadProblem, /corrupt/);
  assert.deepEqual(JSON.parse(readFileSync(t.state.path, 'utf8')).activeVm, null);
  assert.equal(readFileSync(`${t.state.path}.corrupt`, 'utf8'), '{ this is not json');
  t.done();
});

test('a restarted manager re-adopts surviving VMs and restores the active one', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(2);
  t.manager.close();
  const backend2 = new FakeBackend();
  backend2.survivors.add('business');
  const input2 = new FakeInputFocus();
  const m2 = new VmManager({
    backend: backend2,
    input: input2,
    configDir: t.configDir,
    state: new StateStore(join(t.root, 'state'), log),
    log,
    watchConfig: false,
  });
  await m2.init();
  assert.equal(m2.vms.get('business')!.state, 'running');
  assert.equal(m2.vms.get('personal')!.state, 'stopped');
  assert.equal(m2.activeVm, vmPath('business'));
  assert.equal(input2.focused, vmPath('business'));
  m2.close();
  t.done();
});

test('a USB port named the sysfs way (bus-port, as usb-daemon names it) reaches the backend as bus + port path', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.start('business');
  const seen: Array<{ bus: number; port?: string }> = [];
  const original = t.backend.attachUsb.bind(t.backend);
  t.backend.attachUsb = async (id, req) => (seen.push({ bus: req.bus, port: req.port }), original(id, req));
  await t.manager.attachUsb('business', { bus: 2, address: 3, port: '2-1.4' });
  assert.deepEqual(seen, [{ bus: 2, port: '1.4' }]);
  await assert.rejects(t.manager.attachUsb('business', { bus: 3, address: 3, port: '2-1' }), /not on bus 3/);
  await assert.rejects(
    t.manager.attachUsb('business', { bus: 2, address: 3, port: '2-x' }),
    /not a host port path/,
  );
  t.done();
});
