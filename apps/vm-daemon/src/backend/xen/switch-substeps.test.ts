import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from '../../testing/fake-backend';
import { StateStore } from '../../state-store';
import { skipped, type InputFocus, type StepResult } from '../../switch-transaction';
import { VmManager } from '../../vm-manager';
import { XenGpuHandoff, type PciSysfs } from './gpu-handoff';
import { FakeXenWorld } from '../../testing/fake-xen-world';

const log = createLogger('test', 'error');
const GPU = '0000:00:05.0';

class AbsentInput implements InputFocus {
  async freeze(): Promise<StepResult> {
    return skipped('input-daemon absent');
  }
  async setFocus(): Promise<StepResult> {
    return skipped('input-daemon absent');
  }
}

class FakePciSysfs implements PciSysfs {
  isAssignable() {
    return true;
  }
  reset(): 'ok' {
    return 'ok';
  }
}

/** Two VMs sharing one GPU for hand-off; the Xen world has both domains, personal holds the GPU. */
function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vmd-substeps-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  const gpu = { pci: [GPU], handoff: true };
  writeFileSync(
    join(configDir, 'a.json'),
    JSON.stringify({ id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 32, gpu, backend: 'xen' }),
  );
  writeFileSync(
    join(configDir, 'b.json'),
    JSON.stringify({ id: 'business', slot: 2, color: '#e07b00', memoryMiB: 32, gpu, backend: 'xen' }),
  );
  const world = new FakeXenWorld();
  const personal = world.add({ name: 'personal', pci: [GPU] });
  const business = world.add({ name: 'business' });
  const manager = new VmManager({
    backend: new FakeBackend(),
    input: new AbsentInput(),
    gpu: new XenGpuHandoff({ runner: world, log, sysfs: new FakePciSysfs() }),
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
  });
  return {
    world,
    personal,
    business,
    manager,
    done: () => (manager.close(), rmSync(root, { recursive: true })),
  };
}

test('LastSwitch lists the GPU hand-off sub-steps (gpu-detach, gpu-reset, gpu-attach) right after move-gpu', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchTo(vmPath('personal')); // personal already holds the GPU: nothing to move
  const rec = await t.manager.switchTo(vmPath('business'));
  assert.equal(rec.outcome, 'ok');
  const names = rec.steps.map(([n]) => n);
  const at = names.indexOf('move-gpu');
  assert.deepEqual(names.slice(at, at + 4), [
    'move-gpu',
    `gpu-detach:personal:${GPU}`,
    `gpu-reset:Domain-0:${GPU}`,
    `gpu-attach:business:${GPU}`,
  ]);
  assert.equal(names[at + 4], 'focus-input');
  assert.ok(rec.steps.every(([, d]) => typeof d === 'bigint' && d >= 0n));
  assert.deepEqual(t.business.pci, [GPU]);
  assert.deepEqual(t.personal.pci, []);
  t.done();
});

test('a failed hand-off still lists its sub-steps, including the rollback re-attach, and the switch rolls back', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchTo(vmPath('personal'));
  t.world.failOn(
    /^xl pci-attach \d+ /,
    'libxl: error: libxl_pci.c:1500:do_pci_add: Domain 2:xc_assign_device failed: No such device',
  );
  await assert.rejects(t.manager.switchTo(vmPath('business')), { name: 'org.bulkhead.Error.BackendFailed' });
  const rec = t.manager.lastSwitch!;
  assert.equal(rec.outcome, 'rolled-back');
  assert.match(rec.message, /move-gpu: GPU hand-off failed at attach 0000:00:05\.0 to business/);
  assert.deepEqual(
    rec.steps.map(([n]) => n).filter((n) => n.startsWith('gpu-') || n === 'move-gpu'),
    [
      'move-gpu',
      `gpu-detach:personal:${GPU}`,
      `gpu-reset:Domain-0:${GPU}`,
      `gpu-attach:business:${GPU}`,
      `gpu-rollback-attach:personal:${GPU}`,
    ],
  );
  assert.deepEqual(t.personal.pci, [GPU], 'the GPU is back on personal');
  assert.equal(t.manager.activeVm, vmPath('personal'));
  t.done();
});
