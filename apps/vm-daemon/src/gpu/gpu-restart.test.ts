/**
 * A restarted vm-daemon (after a SIGKILL) over a fake hypervisor (FakePciPassthrough) and a fake
 * backend whose VMs survived the restart: the screen (who holds the GPU, read from the hypervisor
 * at start) and the keyboard (ActiveVm, restored from state.json, and input-daemon's focus) must
 * agree, and a locked seat must show the lock screen — never a VM's own picture.
 *   - a switch killed after its gpu-attach, before its publish: the GPU is with the VM switched
 *     to, state.json still names the VM being left;
 *   - a Lock while vm-daemon was down (input-daemon's return home found nobody to ask): the seat
 *     is locked, the active VM still holds the GPU.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BulkheadError, SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from '../testing/fake-backend';
import { StateStore } from '../state-store';
import { DONE, type InputFocus, type StepResult } from '../switch-transaction';
import { VmManager } from '../vm-manager';
import { GpuHolder } from './gpu-holder';
import { FakePciPassthrough } from './testing/fake-pci-passthrough';
import { FakeDom0Display } from './testing/fake-dom0-display';

const log = createLogger('test', 'error');
const GPU = '0000:00:02.0';

/** input-daemon as a restarted vm-daemon finds it: maybe locked; records the focus it is told. */
class RecordingInput implements InputFocus {
  focused = '(never told)';
  constructor(public locked: boolean) {}
  async freeze(): Promise<StepResult> {
    return DONE;
  }
  async assertUnlocked(): Promise<void> {
    if (this.locked) throw new BulkheadError('Locked', 'the seat is locked; unlock first');
  }
  async setFocus(target: string): Promise<StepResult> {
    this.focused = target;
    return DONE;
  }
}

/**
 * The laptop (one GPU shared with dom0; personal and business may hold it) as a restarted daemon
 * finds it: both VMs running, `holder`'s domain holding the GPU, state.json naming `active`.
 */
async function restartedLaptop(opts: { holder: string; active: string | null; locked: boolean }) {
  const root = mkdtempSync(join(tmpdir(), 'vmd-gpu-restart-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  for (const [id, slot] of [
    ['personal', 1],
    ['business', 2],
  ] as const)
    writeFileSync(
      join(configDir, `${id}.json`),
      JSON.stringify({
        id,
        slot,
        color: '#2a6fdb',
        memoryMiB: 32,
        gpu: { pci: [GPU], handoff: true },
        backend: 'xen',
      }),
    );
  const stateDir = join(root, 'state');
  mkdirSync(stateDir);
  writeFileSync(
    join(stateDir, 'state.json'),
    JSON.stringify({ activeVm: opts.active, slots: { personal: 1, business: 2 } }),
  );
  const pci = new FakePciPassthrough([GPU]);
  for (const id of ['personal', 'business']) pci.addGuest(id, id === opts.holder ? [GPU] : []);
  const display = new FakeDom0Display(false);
  const holder = new GpuHolder({ pci, display, sharedWithDom0: true, log, watchMs: 0 });
  const backend = new FakeBackend();
  backend.survivors.add('personal').add('business');
  const input = new RecordingInput(opts.locked);
  const manager = new VmManager({
    backend,
    input,
    gpu: holder,
    configDir,
    state: new StateStore(stateDir, log),
    log,
    watchConfig: false,
  });
  // main.ts's order: the hand-off is prepared (the holder read) before the manager's init.
  await holder.prepare([GPU]);
  await manager.init();
  await holder.whenIdle();
  return {
    pci,
    holder,
    manager,
    input,
    done: () => (manager.close(), holder.close(), rmSync(root, { recursive: true })),
  };
}

test('fake GPU holder: a switch killed after its gpu-attach — after the restart the screen and the keyboard name the same VM', async () => {
  const t = await restartedLaptop({ holder: 'personal', active: 'business', locked: false });
  try {
    const screen = t.holder.holder;
    assert.equal(
      t.manager.activeVm,
      screen,
      `the screen shows ${screen}'s picture, ActiveVm is ${t.manager.activeVm}`,
    );
    assert.equal(t.input.focused, screen, `the screen shows ${screen}, input goes to ${t.input.focused}`);
  } finally {
    t.done();
  }
});

test("fake GPU holder: the seat locked while vm-daemon was down — after the restart the lock screen is on the screen, not the active VM's picture", async () => {
  const t = await restartedLaptop({ holder: 'personal', active: 'personal', locked: true });
  try {
    assert.equal(t.holder.holder, SWITCHER_PATH, `locked, and ${t.holder.holder} holds the GPU`);
    assert.equal(t.manager.activeVm, SWITCHER_PATH);
    assert.equal(t.input.focused, SWITCHER_PATH);
  } finally {
    t.done();
  }
});

test('fake GPU holder: a restart with the active VM holding the GPU, unlocked, changes nothing', async () => {
  const t = await restartedLaptop({ holder: 'business', active: 'business', locked: false });
  try {
    assert.equal(t.holder.holder, vmPath('business'));
    assert.equal(t.manager.activeVm, vmPath('business'));
    assert.equal(t.input.focused, vmPath('business'));
    assert.deepEqual(
      t.pci.calls.filter((c) => /^(detach|attach)/.test(c)),
      [],
    );
  } finally {
    t.done();
  }
});

test("fake dom0 display: a daemon killed between the kiosk's stop and pciback taking the GPU — the restarted daemon starts the kiosk again", async () => {
  // The shared rig as the kill leaves it: release-display ran (the kiosk is stopped, by us), the
  // GPU is still bound to dom0's native driver (assignable-add never ran), and no VM holds it.
  const pci = new FakePciPassthrough([GPU]);
  pci.addGuest('personal');
  const before = new FakeDom0Display(true);
  await before.release();
  // The restarted daemon's view of the same kiosk (and of the same run dir).
  const display = new FakeDom0Display(before.drawing, before.releasedMark);
  const holder = new GpuHolder({ pci, display, sharedWithDom0: true, log, watchMs: 0 });
  try {
    await holder.prepare([GPU]);
    assert.equal(display.drawing, true, 'the screen stays dark: nobody starts the kiosk again');
    assert.equal(holder.holder, SWITCHER_PATH);
  } finally {
    holder.close();
  }
});

test('fake dom0 display: at a plain start (the kiosk not stopped by a hand-off) prepare leaves the kiosk alone', async () => {
  const pci = new FakePciPassthrough([GPU]);
  const display = new FakeDom0Display(false);
  const holder = new GpuHolder({ pci, display, sharedWithDom0: true, log, watchMs: 0 });
  try {
    await holder.prepare([GPU]);
    assert.deepEqual(display.calls, []);
  } finally {
    holder.close();
  }
});
