import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BulkheadError, SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { XenGpuHandoff, type PciSysfs } from './gpu-handoff';
import { FakeXenWorld } from '../../testing/fake-xen-world';
import { FakeDom0Display } from '../../gpu/testing/fake-dom0-display';

const log = createLogger('test', 'error');
const GPU = ['0000:00:03.0'];

class FakePciSysfs implements PciSysfs {
  assignable = new Set<string>();
  resets: string[] = [];
  isAssignable(bdf: string) {
    return this.assignable.has(bdf);
  }
  reset(bdf: string): 'ok' {
    this.resets.push(bdf);
    return 'ok';
  }
}

function setup() {
  const world = new FakeXenWorld();
  const sysfs = new FakePciSysfs();
  const personal = world.add({ name: 'personal' });
  const business = world.add({ name: 'business' });
  const h = new XenGpuHandoff({ runner: world, log, sysfs });
  return { world, sysfs, personal, business, h };
}
const side = (id: string | null, pci = GPU) => ({ vm: id ? vmPath(id) : SWITCHER_PATH, pci: id ? pci : [] });

test('prepare makes each GPU function assignable once', async () => {
  const { world, sysfs, h } = setup();
  sysfs.assignable.add('0000:00:03.1');
  await h.prepare(['0000:00:03.0', '0000:00:03.0', '0000:00:03.1']);
  assert.deepEqual(world.callsMatching(/assignable/), ['xl pci-assignable-add 0000:00:03.0']);
});

test('switch personal → business: detach from personal, reset, attach to business, in that order', async () => {
  const { world, sysfs, personal, business, h } = setup();
  personal.pci = [...GPU];
  const r = await h.handOff(side('personal'), side('business'));
  assert.equal(r.skipped, false);
  assert.deepEqual(world.callsMatching(/^xl pci-/), [
    `xl pci-detach ${personal.domid} 0000:00:03.0`,
    `xl pci-attach ${business.domid} 0000:00:03.0`,
  ]);
  assert.deepEqual(sysfs.resets, GPU);
  assert.deepEqual(
    h.lastReport.map((s) => `${s.step}:${s.domain}:${s.outcome}`),
    ['detach:personal:ok', 'reset:Domain-0:ok', 'attach:business:ok'],
  );
  assert.deepEqual(
    (r.skipped ? [] : (r.substeps ?? [])).map(([n]) => n),
    [
      'gpu-detach:personal:0000:00:03.0',
      'gpu-reset:Domain-0:0000:00:03.0',
      'gpu-attach:business:0000:00:03.0',
    ],
  );
  assert.deepEqual(business.pci, GPU);
  assert.deepEqual(personal.pci, []);
});

test('switcher active: dom0 holds it; switching to the switcher detaches only', async () => {
  const { world, personal, h } = setup();
  personal.pci = [...GPU];
  await h.handOff(side('personal'), side(null));
  assert.deepEqual(world.callsMatching(/^xl pci-/), [`xl pci-detach ${personal.domid} 0000:00:03.0`]);
  const again = await h.handOff(side(null), side('personal'));
  assert.equal(again.skipped, false);
  assert.deepEqual(personal.pci, GPU);
});

test('nothing to move is skipped with a reason; a target already holding it too', async () => {
  const { business, h } = setup();
  assert.deepEqual(await h.handOff(side(null), { vm: vmPath('x'), pci: [] }), {
    skipped: true,
    why: 'no VM in this switch has a GPU',
  });
  business.pci = [...GPU];
  const r = await h.handOff(side(null), side('business'));
  assert.equal(r.skipped, true);
});

test('a failed attach (target destroyed mid-switch) rolls the GPU back to the old VM and names the error', async () => {
  const { world, personal, business, h } = setup();
  personal.pci = [...GPU];
  world.failOn(
    /^xl pci-attach \d+ /,
    `libxl: error: libxl_domain.c:1640:libxl__get_domid: Domain ${business.domid} does not exist`,
    () => {
      world.domains = world.domains.filter((d) => d.name !== 'business');
    },
  );
  await assert.rejects(
    h.handOff(side('personal'), side('business')),
    (e: BulkheadError) =>
      e.errorName === 'BackendFailed' &&
      /failed at attach 0000:00:03.0 to business: xl pci-attach .* does not exist; 0000:00:03.0 returned to personal/.test(
        e.message,
      ),
  );
  assert.deepEqual(world.callsMatching(/^xl pci-/), [
    `xl pci-detach ${personal.domid} 0000:00:03.0`,
    `xl pci-attach ${business.domid} 0000:00:03.0`,
    `xl pci-attach ${personal.domid} 0000:00:03.0`,
  ]);
  assert.deepEqual(personal.pci, GPU, 'the old VM has its GPU again');
  assert.deepEqual(
    h.lastReport.map((s) => `${s.step}:${s.outcome}`),
    ['detach:ok', 'reset:ok', 'attach:failed', 'rollback-attach:ok'],
  );
});

test('a failed detach leaves everything in place; a failed rollback is said loudly', async () => {
  const { world, personal, h } = setup();
  personal.pci = [...GPU];
  world.failOn(/^xl pci-detach/, 'libxl: error: timed out waiting for pciback');
  await assert.rejects(
    h.handOff(side('personal'), side('business')),
    /failed at detach 0000:00:03.0 from personal: .*timed out waiting for pciback/,
  );
  assert.deepEqual(personal.pci, GPU);
  world.failOn(/^xl pci-attach \d+ /, 'libxl: error: attach failed');
  world.failOn(/^xl pci-attach \d+ /, 'libxl: error: re-attach failed too');
  await assert.rejects(
    h.handOff(side('personal'), side('business')),
    /could NOT be returned to personal \(rollback: .*re-attach failed too\)/,
  );
});

test('the target must be running to receive the GPU', async () => {
  const { h } = setup();
  await assert.rejects(
    h.handOff(side(null), side('ghost')),
    (e: BulkheadError) => e.errorName === 'InvalidState' && /ghost has no running domain/.test(e.message),
  );
});

test('a GPU found on a third VM (stale after a crash or restart) is taken from it', async () => {
  const { world, business, h } = setup();
  const other = world.add({ name: 'other', pci: [...GPU] });
  await h.handOff(side(null), side('business'));
  assert.deepEqual(world.callsMatching(/^xl pci-/), [
    `xl pci-detach ${other.domid} 0000:00:03.0`,
    `xl pci-attach ${business.domid} 0000:00:03.0`,
  ]);
});

/** The laptop on Xen: the GPU starts on dom0's native driver; pciback state follows xl's commands. */
function sharedRig() {
  const world = new FakeXenWorld();
  const sysfs = new FakePciSysfs();
  const display = new FakeDom0Display(true);
  const personal = world.add({ name: 'personal' });
  world.on(/^xl pci-assignable-add /, (line) => (sysfs.assignable.add(line.split(' ')[2]), {}));
  world.on(/^xl pci-assignable-remove -r /, (line) => (sysfs.assignable.delete(line.split(' ')[3]), {}));
  world.on(/^xl pci-detach -f \d+ \S+$/, (line) => {
    const [, , , id, bdf] = line.split(' ');
    const d = world.domains.find((x) => x.domid === Number(id))!;
    d.pci = (d.pci ?? []).filter((p) => p !== bdf);
    return {};
  });
  const h = new XenGpuHandoff({ runner: world, log, sysfs, sharedWithDom0: true, display, watchMs: 0 });
  return { world, sysfs, display, personal, h };
}

test('shared rig on Xen: dom0 → VM → dom0 through xl pci-assignable-add / -remove -r and the kiosk', async () => {
  const { world, sysfs, display, personal, h } = sharedRig();
  await h.handOff(side(null), side('personal'));
  assert.deepEqual(display.calls, ['release']);
  assert.deepEqual(world.callsMatching(/^xl pci-/), [
    'xl pci-assignable-add 0000:00:03.0',
    `xl pci-attach ${personal.domid} 0000:00:03.0`,
  ]);
  assert.deepEqual(sysfs.resets, GPU);
  await h.handOff(side('personal'), side(null));
  assert.deepEqual(world.callsMatching(/^xl pci-/).slice(2), [
    `xl pci-detach ${personal.domid} 0000:00:03.0`,
    'xl pci-assignable-remove -r 0000:00:03.0',
  ]);
  assert.deepEqual(display.calls, ['release', 'reclaim']);
  assert.ok(!sysfs.isAssignable(GPU[0]), "back on dom0's driver");
});

test('shared rig on Xen: going home from a guest that hangs in pci-detach forces it (xl pci-detach -f)', async () => {
  const { world, display, personal, h } = sharedRig();
  await h.handOff(side(null), side('personal'));
  world.on(
    /^xl pci-detach \d+ /,
    () => {
      throw new BulkheadError('Timeout', 'xl pci-detach did not finish within 45000 ms');
    },
    1,
  );
  await h.handOff(side('personal'), side(null));
  assert.deepEqual(world.callsMatching(/^xl pci-detach/), [
    `xl pci-detach ${personal.domid} 0000:00:03.0`,
    `xl pci-detach -f ${personal.domid} 0000:00:03.0`,
  ]);
  assert.deepEqual(personal.pci, []);
  assert.equal(display.calls.at(-1), 'reclaim');
});

test("a detach waits while the holder's PCI back end is still taking the device (xenbus Reconfiguring), then goes ahead", async () => {
  const { world, personal, business, h } = setup();
  personal.pci = [...GPU];
  const state = `/local/domain/0/backend/pci/${personal.domid}/0/state`;
  world.xenstore.set(state, '7');
  const connectedAt = Date.now() + 300;
  setTimeout(() => world.xenstore.set(state, '4'), 300);
  await h.handOff(side('personal'), side('business'));
  const detach = world.calls.indexOf(`xl pci-detach ${personal.domid} 0000:00:03.0`);
  assert.ok(detach > 0);
  assert.ok(Date.now() >= connectedAt, 'the detach came after the back end was Connected');
  assert.ok(world.calls.slice(0, detach).filter((c) => c === `xenstore-read ${state}`).length >= 2);
  assert.deepEqual(business.pci, GPU);
});

test('a back end that never settles delays the detach by the bound only; an HVM guest (no PV back end) is not waited for', async () => {
  const world = new FakeXenWorld();
  const personal = world.add({ name: 'personal' });
  const business = world.add({ name: 'business' });
  const h = new XenGpuHandoff({ runner: world, log, sysfs: new FakePciSysfs(), settleMs: 250 });
  personal.pci = [...GPU];
  world.xenstore.set(`/local/domain/0/backend/pci/${personal.domid}/0/state`, '1');
  const t0 = Date.now();
  await h.handOff(side('personal'), side('business'));
  const waited = Date.now() - t0;
  assert.ok(waited >= 250 && waited < 5000, `waited ${waited} ms`);
  assert.deepEqual(business.pci, GPU);
  // business (HVM here: no back end in xenstore) gives it back at once.
  const t1 = Date.now();
  await h.handOff(side('business'), side('personal'));
  assert.ok(Date.now() - t1 < 250, 'no wait without a PV back end');
  assert.deepEqual(personal.pci, GPU);
});

test("after an attach the guest's back end is confirmed settled in the background: the next detach reads nothing first; a detach during the check waits for it", async () => {
  const { world, personal, business, h } = setup();
  personal.pci = [...GPU];
  const stateOf = (d: { domid: number }) => `/local/domain/0/backend/pci/${d.domid}/0/state`;
  world.xenstore.set(stateOf(personal), '4');
  world.xenstore.set(stateOf(business), '4');
  await h.handOff(side('personal'), side('business'));
  // Read before the first detach (personal got its GPU before this daemon's time).
  assert.ok(world.calls.includes(`xenstore-read ${stateOf(personal)}`));
  await new Promise((r) => setTimeout(r, 50)); // the background check after business's attach
  assert.ok(world.calls.includes(`xenstore-read ${stateOf(business)}`), 'business checked after its attach');
  world.calls.length = 0;
  // personal's back end will still be Reconfiguring after this attach (libxl sets 7 in it).
  world.xenstore.set(stateOf(personal), '7');
  const connectedAt = Date.now() + 400;
  setTimeout(() => world.xenstore.set(stateOf(personal), '4'), 400);
  await h.handOff(side('business'), side('personal'));
  const detach = world.calls.indexOf(`xl pci-detach ${business.domid} 0000:00:03.0`);
  assert.ok(detach >= 0);
  assert.deepEqual(
    world.calls.slice(0, detach).filter((c) => c.startsWith('xenstore-read')),
    [],
    `no read before the detach: ${world.calls.join(', ')}`,
  );
  // personal was just attached, its back end still Reconfiguring: a switch now waits for it.
  await h.handOff(side('personal'), side('business'));
  assert.ok(Date.now() >= connectedAt, 'the detach came after the back end was Connected');
  assert.deepEqual(business.pci, GPU);
});
