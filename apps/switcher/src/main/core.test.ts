/**
 * The switcher core's thumbnails against the fake daemons on a private bus: a running VM without a
 * screen (Vm1.Display none, console only) is never asked for a Screenshot, while one with a screen
 * is, every round; the decision follows the property when it changes. A VM with a passed-through
 * GPU is not asked either. An unchanged screen is pushed again after the refresh time, and captured
 * less often while it stays the same.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { vmPath, type Vm1Properties } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus } from '@bulkhead/dbus';
import { fakeVmProps, startFakeDaemons } from '../testing/fake-daemons';
import { SwitcherCore, type CoreOptions } from './core';

/** What each test started, stopped after all of them. */
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * A SwitcherCore on a private bus with fake daemons holding `vms`, thumbnails every 50 ms, one
 * renderer looking at them: the thumbnails pushed (VM path, time) and the lines logged.
 */
async function startCore(vms: Vm1Properties[], opts: Partial<CoreOptions> = {}) {
  const bus = await startPrivateBus({ mode: 'open' });
  cleanups.push(() => bus.stop());
  const fakes = await startFakeDaemons(bus.address, { vms });
  cleanups.push(() => fakes.close());
  const conn = await connectBus(bus.address);
  cleanups.push(() => conn.disconnect());
  conn.setMaxListeners(100); // one 'message' listener per signal subscription, as the web host
  const logs: string[] = [];
  const pushed: Array<{ vm: string; at: number }> = [];
  const core = new SwitcherCore(new BusClient(conn, 10_000), {
    injectInput: false,
    vncUrl: () => '',
    thumbnailIntervalMs: 50,
    log: (m) => logs.push(m),
    ...opts,
  });
  cleanups.push(() => core.stop());
  core.on('push', (channel, payload) => {
    if (channel === 'thumbnail') pushed.push({ vm: (payload as { vm: string }).vm, at: Date.now() });
  });
  await core.start();
  await waitFor('the VMs in the model', () => core.state.snapshot().vms.length === vms.length);
  await core.handle('setThumbnailsVisible', { visible: true }, 'renderer-1');
  return { fakes, core, logs, pushed, vm: (id: string) => fakes.vmManager.vms.get(vmPath(id))! };
}

test('thumbnails: a running VM with Display none is never asked for a Screenshot; one with a screen is', async () => {
  const { logs, pushed, vm } = await startCore([
    fakeVmProps('personal', { Slot: 1, State: 'running', Display: 'vnc' }),
    fakeVmProps('business', { Slot: 2, Kind: 'business', State: 'running', Display: 'none' }),
  ]);
  const personal = vm('personal');
  const business = vm('business');

  // Several rounds: personal's screen is asked for in each of them (unchanged, so pushed once).
  await waitFor('rounds of screenshots', () => personal.screenshotCalls >= 4);
  assert.deepEqual(
    pushed.map((p) => p.vm),
    [vmPath('personal')],
  );
  assert.equal(business.screenshotCalls, 0, 'no Screenshot call for a VM without a screen');
  assert.deepEqual(
    logs.filter((l) => l.startsWith('screenshot of')),
    [],
    'no failed screenshot logged, round after round',
  );

  // Its file now gives it a screen: the next rounds ask for it.
  business.set({ Display: 'vnc' });
  await waitFor("business's thumbnail", () => pushed.some((p) => p.vm === vmPath('business')));
  assert.ok(business.screenshotCalls >= 1);
});

test("thumbnails: a running VM with a passed-through GPU is never asked for a Screenshot (its device model's screen is not its picture)", async () => {
  const { pushed, vm } = await startCore([
    fakeVmProps('personal', { Slot: 1, State: 'running', Display: 'vnc' }),
    fakeVmProps('gamer', { Slot: 3, State: 'running', Display: 'vnc', HasGpu: true }),
  ]);
  await waitFor('rounds of screenshots', () => vm('personal').screenshotCalls >= 4);
  assert.equal(vm('gamer').screenshotCalls, 0, 'no Screenshot call for the GPU VM');
  assert.ok(pushed.every((p) => p.vm === vmPath('personal')));
});

test('thumbnails: an unchanged screen is pushed again after the refresh time (a lost push is repaired)', async () => {
  const { pushed, vm } = await startCore(
    [fakeVmProps('personal', { Slot: 1, State: 'running', Display: 'vnc' })],
    { thumbnailRefreshMs: 400, log: () => undefined },
  );
  await waitFor('three pushes of the same screen', () => pushed.length >= 3, 5000);
  // Pushed about every 400 ms, not every 50 ms round: the screen did not change in between. (The
  // bound on rounds is loose: on a loaded 2-core machine fewer than 8 rounds fit in 400 ms.)
  assert.ok(
    vm('personal').screenshotCalls > pushed.length,
    `rounds that found the same screen ran meanwhile: ${vm('personal').screenshotCalls} captures`,
  );
  for (let i = 1; i < pushed.length; i++)
    assert.ok(pushed[i].at - pushed[i - 1].at >= 350, `pushes ${pushed[i].at - pushed[i - 1].at} ms apart`);
});

test('thumbnails: a screen that stays the same is captured less often than one that changes, and a change is still seen', async () => {
  const { pushed, vm } = await startCore(
    [
      fakeVmProps('personal', { Slot: 1, State: 'running', Display: 'vnc', Color: '#112233' }),
      fakeVmProps('business', {
        Slot: 2,
        Kind: 'business',
        State: 'running',
        Display: 'vnc',
        Color: '#000000',
      }),
    ],
    { log: () => undefined },
  );
  const still = vm('personal');
  const busy = vm('business');
  // Business's screen changes all the time (its fake paints its color), personal's never.
  let shade = 0;
  const painter = setInterval(() => {
    shade = (shade + 1) % 200;
    busy.props.Color = `#0000${shade.toString(16).padStart(2, '0')}`;
  }, 5);
  try {
    await waitFor('rounds of screenshots', () => busy.screenshotCalls >= 24, 20_000);
    assert.ok(
      still.screenshotCalls * 2 < busy.screenshotCalls,
      `the still screen was captured ${still.screenshotCalls} times, the changing one ${busy.screenshotCalls}`,
    );
    // Personal's screen changes: its new picture is pushed within a few rounds.
    const before = pushed.filter((p) => p.vm === vmPath('personal')).length;
    still.props.Color = '#445566';
    await waitFor(
      "personal's changed screen pushed",
      () => pushed.filter((p) => p.vm === vmPath('personal')).length > before,
      5000,
    );
  } finally {
    clearInterval(painter);
  }
});
