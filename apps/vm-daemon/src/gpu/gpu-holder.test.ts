import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { BulkheadError, SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { GpuHolder } from './gpu-holder';
import type { GpuSide } from '../switch-transaction';
import { FakePciPassthrough } from './testing/fake-pci-passthrough';
import { FakeDom0Display } from './testing/fake-dom0-display';

const log = createLogger('test', 'error');
const GPU = ['0000:00:02.0', '0000:00:02.1'];
const home = { vm: SWITCHER_PATH, pci: [] };
const vm = (id: string, pci = GPU) => ({ vm: vmPath(id), pci });

/** The laptop: one GPU, bound to dom0's native driver, the kiosk drawing; personal and business run. */
function laptop(
  opts: {
    watchMs?: number;
    runningDomains?: (pci: FakePciPassthrough) => Array<{ name: string; domid: number }>;
  } = {},
) {
  const pci = new FakePciPassthrough(GPU);
  const display = new FakeDom0Display(true);
  pci.addGuest('personal');
  pci.addGuest('business');
  const holders: string[] = [];
  const h = new GpuHolder({
    pci,
    display,
    sharedWithDom0: true,
    log,
    watchMs: opts.watchMs ?? 0,
    onHolderChanged: (holder) => holders.push(holder),
    runningDomains: opts.runningDomains && (() => opts.runningDomains!(pci)),
  });
  return { pci, display, h, holders };
}

/** The backend's own record of the running domains, as it is now (its death watch caught up). */
const backendDomains = (pci: FakePciPassthrough) =>
  pci.guestList.map((g) => ({ name: g.name, domid: g.domid }));

/** A second GPU only VMs hold: dom0 draws on its own display. */
function twoGpus() {
  const pci = new FakePciPassthrough(GPU);
  const display = new FakeDom0Display(true);
  pci.addGuest('personal');
  pci.addGuest('business');
  const h = new GpuHolder({ pci, display, sharedWithDom0: false, log, watchMs: 0 });
  return { pci, display, h };
}

/** Never a dark screen: dom0 draws on its native driver, or one running guest holds every function. */
function assertSomebodyDraws(pci: FakePciPassthrough, display: FakeDom0Display) {
  const holders = new Set(GPU.map((b) => pci.holderOf(b)));
  assert.equal(holders.size, 1, `all functions with one holder, got ${[...holders]}`);
  const [holder] = holders;
  if (holder === 'dom0-native') assert.ok(display.drawing, 'the GPU is home and the kiosk draws');
  else assert.notEqual(holder, 'pciback', 'the GPU is parked with nobody: a dark screen');
}

const names = (r: { skipped: boolean; substeps?: Array<[string, bigint]> }) =>
  (r.skipped ? [] : (r.substeps ?? [])).map(([n]) => n);

test('shared rig, dom0 → VM: the kiosk lets go, pciback takes it, reset, attach', async () => {
  const { pci, display, h, holders } = laptop();
  const r = await h.handOff(home, vm('personal'));
  assert.deepEqual(display.calls, ['release']);
  assert.deepEqual(pci.calls, [
    'assignable-add 0000:00:02.0',
    'assignable-add 0000:00:02.1',
    'reset 0000:00:02.0',
    'reset 0000:00:02.1',
    'attach personal 0000:00:02.0',
    'attach personal 0000:00:02.1',
  ]);
  assert.deepEqual(names(r).slice(0, 2), [
    'gpu-release-display:Domain-0:',
    'gpu-assignable-add:Domain-0:0000:00:02.0',
  ]);
  assert.equal(h.holder, vmPath('personal'));
  assert.deepEqual(holders, [vmPath('personal')]);
  assertSomebodyDraws(pci, display);
});

test('shared rig, VM → VM: detach, reset, attach; the kiosk is not touched', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.calls.length = 0;
  display.calls.length = 0;
  await h.handOff(vm('personal'), vm('business'));
  assert.deepEqual(pci.calls, [
    'detach personal 0000:00:02.0',
    'detach personal 0000:00:02.1',
    'reset 0000:00:02.0',
    'reset 0000:00:02.1',
    'attach business 0000:00:02.0',
    'attach business 0000:00:02.1',
  ]);
  assert.deepEqual(display.calls, []);
  assert.equal(h.holder, vmPath('business'));
  assertSomebodyDraws(pci, display);
});

const triggers: Array<[string, GpuSide]> = [
  ['Ctrl+0 (a switch to the switcher)', home],
  ['the lock (input-daemon runs SwitchToSlot(0))', home],
  ['a switch to a VM without the GPU', { vm: vmPath('notes'), pci: [] }],
];
for (const [trigger, to] of triggers) {
  test(`shared rig, VM → dom0 on ${trigger}: detach, reset, native driver, the kiosk starts`, async () => {
    const { pci, display, h, holders } = laptop();
    pci.addGuest('notes');
    await h.handOff(home, vm('personal'));
    pci.calls.length = 0;
    display.calls.length = 0;
    const r = await h.handOff(vm('personal'), to);
    assert.equal(r.skipped, false);
    assert.deepEqual(pci.calls, [
      'detach personal 0000:00:02.0',
      'detach personal 0000:00:02.1',
      'reset 0000:00:02.0',
      'reset 0000:00:02.1',
      'assignable-remove 0000:00:02.0',
      'assignable-remove 0000:00:02.1',
    ]);
    assert.deepEqual(display.calls, ['reclaim']);
    assert.equal(pci.holderOf(GPU[0]), 'dom0-native');
    assert.deepEqual(holders, [vmPath('personal'), SWITCHER_PATH]);
    assertSomebodyDraws(pci, display);
  });
}

test('shared rig: nothing to move when dom0 has it and the switch is between VMs without it', async () => {
  const { pci, h } = laptop();
  const r = await h.handOff({ vm: vmPath('a'), pci: [] }, { vm: vmPath('b'), pci: [] });
  assert.deepEqual(r, { skipped: true, why: 'no VM in this switch has a GPU' });
  const r2 = await h.handOff(vm('personal'), home);
  assert.deepEqual(r2, { skipped: true, why: 'no VM holds the GPU: dom0 has it' });
  assert.deepEqual(pci.calls, []);
});

test('shared rig, failed take-over (attach refused): rolled back to dom0, the kiosk draws, named error', async () => {
  const { pci, display, h } = laptop();
  pci.failOn(/^attach personal 0000:00:02.1/, 'libxl: error: pci-attach failed: IOMMU fault');
  await assert.rejects(
    h.handOff(home, vm('personal')),
    (e: BulkheadError) =>
      e.errorName === 'BackendFailed' &&
      /failed at attach 0000:00:02.1 to personal: .*IOMMU fault/.test(e.message),
  );
  assert.deepEqual(pci.calls.slice(-3), [
    'detach personal 0000:00:02.0',
    'assignable-remove 0000:00:02.1',
    'assignable-remove 0000:00:02.0',
  ]);
  assert.deepEqual(display.calls, ['release', 'reclaim']);
  assert.deepEqual(h.lastReport.map((s) => `${s.step}:${s.outcome}`).slice(-4), [
    'rollback-detach:ok',
    'rollback-assignable-remove:ok',
    'rollback-assignable-remove:ok',
    'rollback-reclaim-display:ok',
  ]);
  assert.equal(h.holder, SWITCHER_PATH);
  assertSomebodyDraws(pci, display);
});

test('VM → VM, failed attach: the GPU goes back to the VM it came from', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.failOn(/^attach business 0000:00:02.0/, 'libxl: error: Domain 2 does not exist');
  await assert.rejects(h.handOff(vm('personal'), vm('business')), /returned to personal/);
  assert.equal(pci.holderOf(GPU[0]), 'personal');
  assert.equal(h.holder, vmPath('personal'));
  assertSomebodyDraws(pci, display);
});

test('a failed reset is named GpuResetFailed; the GPU is not handed on and stays with its holder', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.failOn(/^reset 0000:00:02.0/, 'write /sys/bus/pci/devices/0000:00:02.0/reset: Input/output error');
  await assert.rejects(
    h.handOff(vm('personal'), vm('business')),
    (e: BulkheadError) =>
      e.errorName === 'GpuResetFailed' &&
      /the reset of 0000:00:02.0 failed .*Input\/output error.*returned to personal/.test(e.message),
  );
  assert.ok(!pci.calls.some((c) => c.startsWith('attach business')), 'never attached to business');
  assert.equal(pci.holderOf(GPU[0]), 'personal');
  assert.equal(pci.holderOf(GPU[1]), 'personal');
  assertSomebodyDraws(pci, display);
});

test('a failed reset on the way from dom0 leaves the GPU with dom0, the kiosk drawing', async () => {
  const { pci, display, h } = laptop();
  pci.failOn(/^reset 0000:00:02.1/, 'device did not come back from FLR');
  await assert.rejects(
    h.handOff(home, vm('personal')),
    (e: BulkheadError) => e.errorName === 'GpuResetFailed',
  );
  assert.equal(pci.holderOf(GPU[0]), 'dom0-native');
  assert.equal(pci.holderOf(GPU[1]), 'dom0-native');
  assert.ok(display.drawing);
  assert.equal(h.holder, SWITCHER_PATH);
});

test('going home, a failed reset is logged and dom0 still takes the GPU (dom0 is where it can be used)', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.failOn(/^reset 0000:00:02.0/, 'reset failed');
  await h.handOff(vm('personal'), home);
  assert.equal(pci.holderOf(GPU[0]), 'dom0-native');
  assertSomebodyDraws(pci, display);
});

test('going home, a guest that hangs or refuses loses the GPU anyway (forced detach)', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.failOn(
    /^detach personal 0000:00:02.0/,
    new BulkheadError('Timeout', 'xl pci-detach did not finish within 45000 ms'),
  );
  pci.failOn(/^detach personal 0000:00:02.1/, 'libxl: error: guest refused the unplug');
  await h.handOff(vm('personal'), home);
  assert.deepEqual(
    pci.calls.filter((c) => c.startsWith('detach')),
    [
      'detach personal 0000:00:02.0',
      'detach -f personal 0000:00:02.0',
      'detach personal 0000:00:02.1',
      'detach -f personal 0000:00:02.1',
    ],
  );
  assert.deepEqual(
    h.lastReport.filter((s) => s.step.endsWith('detach')).map((s) => `${s.step}:${s.outcome}`),
    ['detach:failed', 'forced-detach:ok', 'detach:failed', 'forced-detach:ok'],
  );
  assertSomebodyDraws(pci, display);
});

test('VM → VM, a refused detach is not forced: the switch fails and nothing moved', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.failOn(/^detach personal 0000:00:02.0/, 'libxl: error: timed out waiting for pciback');
  await assert.rejects(
    h.handOff(vm('personal'), vm('business')),
    /failed at detach 0000:00:02.0 from personal/,
  );
  assert.ok(!pci.calls.includes('detach -f personal 0000:00:02.0'));
  assert.equal(pci.holderOf(GPU[0]), 'personal');
  assertSomebodyDraws(pci, display);
});

test('shared rig, the undo fails too: dom0 when in doubt', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.failOn(/^attach business 0000:00:02.0/, 'attach failed');
  pci.failOn(/^attach personal 0000:00:02.0/, 're-attach failed');
  pci.failOn(/^attach personal 0000:00:02.1/, 're-attach failed');
  await assert.rejects(
    h.handOff(vm('personal'), vm('business')),
    /could NOT be returned to personal .*the GPU was brought to the Control Domain/,
  );
  assert.equal(pci.holderOf(GPU[0]), 'dom0-native');
  assert.equal(pci.holderOf(GPU[1]), 'dom0-native');
  assert.equal(h.holder, SWITCHER_PATH);
  assertSomebodyDraws(pci, display);
});

test('the holder dies: the watch brings the GPU home within watchMs (fake clock)', async () => {
  mock.timers.enable({ apis: ['setInterval'] });
  try {
    const { pci, display, h, holders } = laptop({ watchMs: 2000 });
    await h.handOff(home, vm('personal'));
    pci.calls.length = 0;
    pci.kill('personal');
    mock.timers.tick(1999);
    await h.handOff({ vm: vmPath('a'), pci: [] }, { vm: vmPath('b'), pci: [] }); // drains the queue
    assert.equal(h.holder, vmPath('personal'), 'not before the bound');
    mock.timers.tick(1);
    await new Promise((r) => setImmediate(r)); // the watch's list (taken outside the queue) answers
    await h.handOff({ vm: vmPath('a'), pci: [] }, { vm: vmPath('b'), pci: [] });
    assert.deepEqual(pci.calls, [
      'reset 0000:00:02.0',
      'reset 0000:00:02.1',
      'assignable-remove 0000:00:02.0',
      'assignable-remove 0000:00:02.1',
    ]);
    assert.deepEqual(holders, [vmPath('personal'), SWITCHER_PATH]);
    assertSomebodyDraws(pci, display);
    h.close();
  } finally {
    mock.timers.reset();
  }
});

test('vmEnded: the holder ended brings the GPU home at once; another VM ending changes nothing', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  pci.kill('business');
  await h.vmEnded(vmPath('business'), 'shut down');
  assert.equal(h.holder, vmPath('personal'));
  pci.kill('personal');
  await h.vmEnded(vmPath('personal'), 'crashed');
  assert.equal(h.holder, SWITCHER_PATH);
  assertSomebodyDraws(pci, display);
});

test('comeHome (the active VM was paused): the GPU is taken from the running holder', async () => {
  const { pci, display, h } = laptop();
  await h.handOff(home, vm('personal'));
  await h.comeHome('personal is paused');
  assert.equal(pci.holderOf(GPU[0]), 'dom0-native');
  assert.equal(h.holder, SWITCHER_PATH);
  assertSomebodyDraws(pci, display);
});

test('shared rig at boot: a GPU parked in pciback with no holder goes back to dom0 and the kiosk', async () => {
  const pci = new FakePciPassthrough();
  for (const f of GPU) pci.stub.add(f);
  const display = new FakeDom0Display(false);
  const h = new GpuHolder({ pci, display, sharedWithDom0: true, log, watchMs: 0 });
  await h.prepare([...GPU, GPU[0]]);
  assert.deepEqual(pci.calls, ['assignable-remove 0000:00:02.0', 'assignable-remove 0000:00:02.1']);
  assert.deepEqual(display.calls, ['reclaim']);
  assertSomebodyDraws(pci, display);
});

test('shared rig at boot: a GPU a re-adopted VM holds stays with it', async () => {
  const pci = new FakePciPassthrough();
  const display = new FakeDom0Display(false);
  pci.addGuest('personal', GPU);
  const h = new GpuHolder({ pci, display, sharedWithDom0: true, log, watchMs: 0 });
  await h.prepare(GPU);
  assert.deepEqual(pci.calls, []);
  assert.equal(h.holder, vmPath('personal'));
});

test('second-GPU rig: assignable once at boot; VMs take it; going home parks it in pciback; the display is never touched', async () => {
  const { pci, display, h } = twoGpus();
  await h.prepare(GPU);
  assert.deepEqual(pci.calls, ['assignable-add 0000:00:02.0', 'assignable-add 0000:00:02.1']);
  pci.calls.length = 0;
  await h.handOff(home, vm('personal'));
  await h.handOff(vm('personal'), vm('business'));
  await h.handOff(vm('business'), home);
  assert.deepEqual(pci.calls, [
    'reset 0000:00:02.0',
    'reset 0000:00:02.1',
    'attach personal 0000:00:02.0',
    'attach personal 0000:00:02.1',
    'detach personal 0000:00:02.0',
    'detach personal 0000:00:02.1',
    'reset 0000:00:02.0',
    'reset 0000:00:02.1',
    'attach business 0000:00:02.0',
    'attach business 0000:00:02.1',
    'detach business 0000:00:02.0',
    'detach business 0000:00:02.1',
    'reset 0000:00:02.0',
    'reset 0000:00:02.1',
  ]);
  assert.deepEqual(display.calls, []);
  assert.equal(pci.holderOf(GPU[0]), 'pciback');
  assert.ok(display.drawing, "dom0's own display draws throughout");
  assert.equal(h.holder, SWITCHER_PATH);
});

test('second-GPU rig: the holder dies: nothing for dom0 to take, the holder is "/" again', async () => {
  const { pci, display, h } = twoGpus();
  await h.prepare(GPU);
  await h.handOff(home, vm('personal'));
  pci.kill('personal');
  await h.vmEnded(vmPath('personal'), 'crashed');
  assert.equal(h.holder, SWITCHER_PATH);
  assert.equal(pci.holderOf(GPU[0]), 'pciback');
  assert.deepEqual(display.calls, []);
});

test("the watch never piles up behind a slow xl list, and a switch cancels the check's list in flight instead of running beside it", async () => {
  mock.timers.enable({ apis: ['setInterval'] });
  try {
    const { pci, h } = laptop({ watchMs: 2000 });
    await h.handOff(home, vm('personal'));
    const before = pci.guestsCalls;
    let open!: () => void;
    pci.guestsGate = new Promise<void>((r) => (open = r));
    // Five ticks while the first check's `xl list -l` hangs: one check, not five queued.
    for (let i = 0; i < 5; i++) mock.timers.tick(2000);
    await new Promise((r) => setImmediate(r));
    assert.equal(pci.guestsCalls - before, 1, 'one check in flight');
    // A switch now: it cancels the check's list (an `xl list -l` beside the move's xl
    // pci-detach/attach slowed them under TCG, issue 16) and lists for itself; the hung list is
    // never answered.
    pci.guestsGate = null;
    await h.handOff(vm('personal'), vm('business'));
    // The one (cancelled) check, then the move's own list: nothing in between.
    assert.equal(pci.guestsCalls - before, 2);
    assert.equal(pci.holderOf(GPU[0]), 'business');
    assert.equal(h.holder, vmPath('business'), 'the cancelled check judged nothing');
    // The next tick lists afresh.
    mock.timers.tick(2000);
    await new Promise((r) => setImmediate(r));
    assert.equal(pci.guestsCalls - before, 3);
    open();
    h.close();
  } finally {
    mock.timers.reset();
  }
});

/** The fake's call lines for one operation on each of the GPU's functions ("reset 0000:00:02.0", ...). */
const onEach = (op: string) => GPU.map((bdf) => `${op} ${bdf}`);

test("with the backend's running domains, VM -> VM and back reuse the last list: no xl list -l, the same steps", async () => {
  const { pci, display, h } = laptop({ runningDomains: backendDomains });
  await h.handOff(home, vm('personal'));
  const lists = pci.guestsCalls;
  pci.calls.length = 0;
  await h.handOff(vm('personal'), vm('business'));
  await h.handOff(vm('business'), vm('personal'));
  assert.equal(pci.guestsCalls, lists, 'no list of the guests for either move');
  assert.deepEqual(pci.calls, [
    ...onEach('detach personal'),
    ...onEach('reset'),
    ...onEach('attach business'),
    ...onEach('detach business'),
    ...onEach('reset'),
    ...onEach('attach personal'),
  ]);
  await h.handOff(vm('personal'), home);
  assert.equal(pci.guestsCalls, lists, 'going home neither');
  assert.equal(pci.holderOf(GPU[0]), 'dom0-native');
  assertSomebodyDraws(pci, display);
});

test('a domain re-created since the last list (a new domid) or a new one started: the move lists afresh', async () => {
  const { pci, h } = laptop({ runningDomains: backendDomains });
  await h.handOff(home, vm('personal'));
  // personal rebooted: libxl left the GPU in pciback, vm-daemon started a new domain.
  pci.kill('personal');
  pci.addGuest('personal');
  let lists = pci.guestsCalls;
  pci.calls.length = 0;
  await h.handOff(vm('personal'), vm('business'));
  assert.equal(pci.guestsCalls, lists + 1);
  assert.deepEqual(pci.calls, [...onEach('reset'), ...onEach('attach business')]);
  pci.addGuest('work');
  lists = pci.guestsCalls;
  await h.handOff(vm('business'), vm('work'));
  assert.equal(pci.guestsCalls, lists + 1, 'work is in no earlier list');
  assert.equal(pci.holderOf(GPU[0]), 'work');
});

test('a holder the backend has not yet seen go: the move on the reused list fails before changing anything, lists afresh and goes on', async () => {
  let stale: Array<{ name: string; domid: number }> | null = null;
  const { pci, h } = laptop({ runningDomains: (p) => stale ?? backendDomains(p) });
  await h.handOff(home, vm('personal'));
  stale = backendDomains(pci); // the backend's death watch has not fired yet
  pci.kill('personal');
  const lists = pci.guestsCalls;
  const r = await h.handOff(vm('personal'), vm('business'));
  assert.equal(pci.guestsCalls, lists + 1, 'one fresh list after the failed try');
  assert.equal(pci.holderOf(GPU[0]), 'business');
  assert.equal(h.holder, vmPath('business'));
  assert.deepEqual(names(r).slice(0, 2), [
    'gpu-detach:personal:0000:00:02.0',
    'gpu-reset:Domain-0:0000:00:02.0',
  ]);
  assert.ok(!r.skipped && r.substeps!.length === 5, 'the failed detach, then reset x2 and attach x2');
});

test("the watch does not list the guests while a move runs (its xl list -l slowed the move's xl steps)", async () => {
  mock.timers.enable({ apis: ['setInterval'] });
  try {
    const { pci, h } = laptop({ watchMs: 2000, runningDomains: backendDomains });
    await h.handOff(home, vm('personal'));
    let open!: () => void;
    pci.attachGate = new Promise<void>((r) => (open = r));
    const moved = h.handOff(vm('personal'), vm('business'));
    await new Promise((r) => setImmediate(r)); // the move is in its attach now
    const before = pci.guestsCalls;
    for (let i = 0; i < 3; i++) mock.timers.tick(2000);
    await new Promise((r) => setImmediate(r));
    assert.equal(pci.guestsCalls, before, 'no list while the move runs');
    pci.attachGate = null;
    open();
    await moved;
    mock.timers.tick(2000);
    await new Promise((r) => setImmediate(r));
    assert.equal(pci.guestsCalls, before + 1, 'the next tick after it lists again');
    h.close();
  } finally {
    mock.timers.reset();
  }
});
