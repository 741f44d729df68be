import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from './testing/fake-backend';
import { StateStore } from './state-store';
import { DONE, type InputFocus } from './switch-transaction';
import { VmManager } from './vm-manager';

const log = createLogger('test', 'error');
const input: InputFocus = { freeze: async () => DONE, setFocus: async () => DONE };

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vmd-registry-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  const write = (name: string, c: object) => writeFileSync(join(configDir, name), JSON.stringify(c));
  write('a.json', { id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 32 });
  const manager = new VmManager({
    backend: new FakeBackend(),
    input,
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
  });
  return { configDir, write, manager, done: () => (manager.close(), rmSync(root, { recursive: true })) };
}

// The daemon decides what a VM whose file went wrong may still do from what happened to the file
// (a code), not from the wording of the error: an invalid edit whose error text happens to say
// "was removed" (here: the bad value quoted back) must not make the VM act as if its file were gone.
test('a running VM with an invalid edit keeps its slot and stays after it stops, whatever its error text says', async () => {
  const t = setup();
  try {
    await t.manager.init();
    await t.manager.switchToSlot(1);
    t.write('a.json', { id: 'personal', slot: 1, color: 'was removed', memoryMiB: 32 });
    t.manager.reload();
    const e = t.manager.vms.get('personal')!;
    assert.match(e.configError, /color/, 'LastError names the bad field');

    // Ctrl+0 then Ctrl+1: slot 1 is still this VM (its last valid definition applies).
    await t.manager.switchToSlot(0);
    assert.equal(t.manager.activeVm, SWITCHER_PATH);
    await t.manager.switchToSlot(1);
    assert.equal(t.manager.activeVm, vmPath('personal'));

    // Stopped, it is still there (its file exists), with the error to fix.
    await t.manager.stop('personal', 1000);
    assert.ok(t.manager.vms.has('personal'), 'the VM of an invalid (not removed) file stays after it stops');
    assert.match(t.manager.vms.get('personal')!.configError, /color/);
  } finally {
    t.done();
  }
});

test('a running VM whose file is removed keeps running without a slot and goes once it stops', async () => {
  const t = setup();
  try {
    await t.manager.init();
    await t.manager.start('personal');
    unlinkSync(join(t.configDir, 'a.json'));
    t.manager.reload();
    assert.equal(t.manager.vms.get('personal')!.state, 'running');
    assert.match(t.manager.vms.get('personal')!.configError, /removed/);
    await assert.rejects(t.manager.switchToSlot(1), /no VM in slot 1/);
    await t.manager.stop('personal', 1000);
    assert.ok(!t.manager.vms.has('personal'));
  } finally {
    t.done();
  }
});
