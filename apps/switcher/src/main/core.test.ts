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
