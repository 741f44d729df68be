import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from '../testing/fake-backend';
import { StateStore } from '../state-store';
import { skipped, type InputFocus, type StepResult } from '../switch-transaction';
import { VmManager } from '../vm-manager';
import { GpuHolder } from './gpu-holder';
import { FakePciPassthrough } from './testing/fake-pci-passthrough';
import { FakeDom0Display } from './testing/fake-dom0-display';

const log = createLogger('test', 'error');
const GPU = '0000:00:02.0';

class AbsentInput implements InputFocus {
  async freeze(): Promise<StepResult> {
    return skipped('input-daemon absent');
  }
  async setFocus(): Promise<StepResult> {
    return skipped('input-daemon absent');
  }
}

/**
 * The laptop through the core: personal and business share the one GPU with dom0; notes has none.
 * The switch transaction's move-gpu runs GpuHolder; vm-manager's hooks bring the GPU home.
 */
async function laptop() {
  const root = mkdtempSync(join(tmpdir(), 'vmd-gpu-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  const gpu = { pci: [GPU], handoff: true };
  const vm = (id: string, slot: number, g: unknown) =>
    writeFileSync(
      join(configDir, `${id}.json`),
      JSON.stringify({ id, slot, color: '#2a6fdb', memoryMiB: 32, gpu: g, backend: 'xen' }),
    );
  vm('personal', 1, gpu);
  vm('business', 2, gpu);
  vm('notes', 3, null);
  const pci = new FakePciPassthrough([GPU]);
  for (const id of ['personal', 'business', 'notes']) pci.addGuest(id);
  const display = new FakeDom0Display(true);
  const holder = new GpuHolder({ pci, display, sharedWithDom0: true, log, watchMs: 0 });
  const backend = new FakeBackend();
  const manager = new VmManager({
    backend,
    input: new AbsentInput(),
    gpu: holder,
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
  });
  const changes: string[] = [];
  manager.on('manager-changed', (props) => {
    if (props.includes('GpuHolder')) changes.push(manager.gpuHolder);
  });
  await manager.init();
  await holder.prepare([GPU]);
  return {
    pci,
    display,
    holder,
    backend,
    manager,
    changes,
    done: () => (manager.close(), holder.close(), rmSync(root, { recursive: true })),
  };
}

test('through the switch: dom0 → personal → business → Ctrl+0; GpuHolder follows; LastSwitch lists the sub-steps', async () => {
  const t = await laptop();
  const r1 = await t.manager.switchTo(vmPath('personal'));
  assert.equal(r1.outcome, 'ok');
  const names = r1.steps.map(([n]) => n);
  const at = names.indexOf('move-gpu');
  assert.deepEqual(names.slice(at, at + 5), [
    'move-gpu',
    'gpu-release-display:Domain-0:',
    `gpu-assignable-add:Domain-0:${GPU}`,
    `gpu-reset:Domain-0:${GPU}`,
    `gpu-attach:personal:${GPU}`,
  ]);
  assert.equal(t.manager.gpuHolder, vmPath('personal'));
  assert.equal(t.display.drawing, false);
  await t.manager.switchTo(vmPath('business'));
  assert.equal(t.pci.holderOf(GPU), 'business');
  await t.manager.switchToSlot(0);
  assert.equal(t.manager.activeVm, SWITCHER_PATH);
  assert.equal(t.pci.holderOf(GPU), 'dom0-native');
  assert.equal(t.display.drawing, true);
  assert.deepEqual(t.changes, [vmPath('personal'), vmPath('business'), SWITCHER_PATH]);
  t.done();
});

test('a switch to a VM without the GPU brings it home: the kiosk shows that VM', async () => {
  const t = await laptop();
  await t.manager.switchTo(vmPath('personal'));
  const r = await t.manager.switchTo(vmPath('notes'));
  assert.equal(r.outcome, 'ok');
  assert.equal(t.manager.activeVm, vmPath('notes'));
  assert.equal(t.pci.holderOf(GPU), 'dom0-native');
  assert.equal(t.display.drawing, true);
  assert.equal(t.manager.gpuHolder, SWITCHER_PATH);
  t.done();
});

test('the holder crashes: ActiveVm and the GPU come home, the kiosk draws, GpuHolder is "/"', async () => {
  const t = await laptop();
  await t.manager.switchTo(vmPath('personal'));
  t.pci.kill('personal');
  t.backend.crash('personal');
  await t.holder.whenIdle();
  assert.equal(t.manager.activeVm, SWITCHER_PATH);
  assert.equal(t.manager.vms.get('personal')!.state, 'crashed');
  assert.equal(t.pci.holderOf(GPU), 'dom0-native');
  assert.equal(t.display.drawing, true);
  assert.equal(t.manager.gpuHolder, SWITCHER_PATH);
  assert.deepEqual(t.changes, [vmPath('personal'), SWITCHER_PATH]);
  t.done();
});

test('a failed reset fails the switch as GpuResetFailed; the person stays where the GPU is', async () => {
  const t = await laptop();
  await t.manager.switchTo(vmPath('personal'));
  t.pci.failOn(/^reset /, 'write /sys/bus/pci/devices/0000:00:02.0/reset: Input/output error');
  await assert.rejects(t.manager.switchTo(vmPath('business')), { name: 'org.bulkhead.Error.GpuResetFailed' });
  assert.equal(t.manager.lastSwitch!.outcome, 'rolled-back');
  assert.equal(t.manager.activeVm, vmPath('personal'));
  assert.equal(t.pci.holderOf(GPU), 'personal');
  assert.equal(t.manager.gpuHolder, vmPath('personal'));
  t.done();
});

test("a hand-off that overruns move-gpu's bound runs on; once over, the GPU goes home, where ActiveVm is", async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const t = await laptop();
    let release = () => {};
    t.pci.attachGate = new Promise<void>((r) => (release = r));
    const sw = t.manager.switchTo(vmPath('personal'));
    for (let i = 0; i < 20 && !t.pci.calls.some((c) => c.startsWith('attach')); i++)
      await new Promise<void>((r) => setImmediate(r));
    mock.timers.tick(60_000); // move-gpu's bound
    await assert.rejects(sw, { name: 'org.bulkhead.Error.Timeout' });
    assert.equal(t.manager.activeVm, SWITCHER_PATH);
    t.pci.attachGate = null;
    release(); // the attach xl was waiting for finishes after all
    await t.holder.whenIdle();
    await t.holder.whenIdle();
    assert.equal(t.pci.holderOf(GPU), 'dom0-native', 'not left with personal while the switcher is active');
    assert.equal(t.display.drawing, true);
    assert.equal(t.manager.gpuHolder, SWITCHER_PATH);
    t.done();
  } finally {
    mock.timers.reset();
  }
});
