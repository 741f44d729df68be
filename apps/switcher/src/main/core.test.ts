/**
 * The switcher core's thumbnails against the fake daemons on a private bus: a running VM without a
 * screen (Vm1.Display none, console only) is never asked for a Screenshot, while one with a screen
 * is, every round; the decision follows the property when it changes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { vmPath } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus, type MessageBus, type PrivateBus } from '@bulkhead/dbus';
import { fakeVmProps, startFakeDaemons, type FakeDaemons } from '../testing/fake-daemons';
import { SwitcherCore } from './core';

let bus: PrivateBus | undefined;
let fakes: FakeDaemons | undefined;
let conn: MessageBus | undefined;
let core: SwitcherCore | undefined;
after(async () => {
  await core?.stop();
  conn?.disconnect();
  fakes?.close();
  await bus?.stop();
});

async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('thumbnails: a running VM with Display none is never asked for a Screenshot; one with a screen is', async () => {
  bus = await startPrivateBus({ mode: 'open' });
  fakes = await startFakeDaemons(bus.address, {
    vms: [
      fakeVmProps('personal', { Slot: 1, State: 'running', Display: 'vnc' }),
      fakeVmProps('business', { Slot: 2, Kind: 'business', State: 'running', Display: 'none' }),
    ],
  });
  const personal = fakes.vmManager.vms.get(vmPath('personal'))!;
  const business = fakes.vmManager.vms.get(vmPath('business'))!;
  conn = await connectBus(bus.address);
  conn.setMaxListeners(100); // one 'message' listener per signal subscription, as the web host
  const logs: string[] = [];
  const thumbs: string[] = [];
  core = new SwitcherCore(new BusClient(conn, 10_000), {
    injectInput: false,
    vncUrl: () => '',
    thumbnailIntervalMs: 50,
    log: (m) => logs.push(m),
  });
  core.on('push', (channel, payload) => {
    if (channel === 'thumbnail') thumbs.push((payload as { vm: string }).vm);
  });
  await core.start();
  await waitFor('both VMs in the model', () => core!.state.snapshot().vms.length === 2);
  await core.handle('setThumbnailsVisible', { visible: true }, 'renderer-1');

  // Several rounds: personal's screen is asked for in each of them (unchanged, so pushed once).
  await waitFor('rounds of screenshots', () => personal.screenshotCalls >= 4);
  assert.deepEqual(thumbs, [vmPath('personal')]);
  assert.equal(business.screenshotCalls, 0, 'no Screenshot call for a VM without a screen');
  assert.deepEqual(
    logs.filter((l) => l.startsWith('screenshot of')),
    [],
    'no failed screenshot logged, round after round',
  );

  // Its file now gives it a screen: the next rounds ask for it.
  business.set({ Display: 'vnc' });
  await waitFor("business's thumbnail", () => thumbs.includes(vmPath('business')));
  assert.ok(business.screenshotCalls >= 1);
});

test('thumbnails: an unchanged screen is pushed again after the refresh time (a lost push is repaired)', async () => {
  const bus2 = await startPrivateBus({ mode: 'open' });
  const fakes2 = await startFakeDaemons(bus2.address, {
    vms: [fakeVmProps('personal', { Slot: 1, State: 'running', Display: 'vnc' })],
  });
  const conn2 = await connectBus(bus2.address);
  conn2.setMaxListeners(100);
  const pushedAt: number[] = [];
  const core2 = new SwitcherCore(new BusClient(conn2, 10_000), {
    injectInput: false,
    vncUrl: () => '',
    thumbnailIntervalMs: 50,
    thumbnailRefreshMs: 400,
    log: () => undefined,
  });
  core2.on('push', (channel) => {
    if (channel === 'thumbnail') pushedAt.push(Date.now());
  });
  try {
    await core2.start();
    await waitFor('the VM in the model', () => core2.state.snapshot().vms.length === 1);
    await core2.handle('setThumbnailsVisible', { visible: true }, 'renderer-1');
    const personal = fakes2.vmManager.vms.get(vmPath('personal'))!;
    await waitFor('three pushes of the same screen', () => pushedAt.length >= 3, 5000);
    // Pushed about every 400 ms, not every 50 ms round: the screen did not change in between.
    assert.ok(personal.screenshotCalls >= 3 * 6, `rounds ran meanwhile: ${personal.screenshotCalls}`);
    for (let i = 1; i < pushedAt.length; i++)
      assert.ok(pushedAt[i] - pushedAt[i - 1] >= 350, `pushes ${pushedAt[i] - pushedAt[i - 1]} ms apart`);
  } finally {
    await core2.stop();
    conn2.disconnect();
    fakes2.close();
    await bus2.stop();
  }
});
