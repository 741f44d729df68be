/**
 * Vm1.Display on a real private dbus-daemon: what each VM's file says about its screen ('vnc' or
 * 'none', default 'vnc') is published, so the switcher neither asks a console-only VM for
 * screenshots nor waits for its picture; an edit of the file changes it with PropertiesChanged.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUS_NAMES, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import {
  BusClient,
  ServiceHost,
  connectBus,
  startPrivateBus,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { VmManagerDbus } from './dbus-service';
import { StateStore } from './state-store';
import { DONE, type InputFocus } from './switch-transaction';
import { FakeBackend } from './testing/fake-backend';
import { waitFor } from './testing/daemon-process';
import { VmManager } from './vm-manager';

const log = createLogger('test', 'error');
/** input-daemon stand-in: every step succeeds (no switch happens here). */
const fakeInput: InputFocus = { freeze: async () => DONE, setFocus: async () => DONE };

let bus: PrivateBus | undefined;
const conns: MessageBus[] = [];
const cleanups: Array<() => void> = [];
after(async () => {
  for (const c of cleanups) c();
  for (const c of conns) c.disconnect();
  await bus?.stop();
});

test('Vm1.Display says which VM has a screen: none for a console-only file, vnc for one with a display or none named', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-display-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  const file = (name: string, doc: object) => writeFileSync(join(configDir, name), JSON.stringify(doc));
  file('a.json', { id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 32 }); // no display: vnc
  file('b.json', { id: 'business', slot: 2, color: '#c0392b', memoryMiB: 32, display: 'none' });
  file('c.json', { id: 'service', slot: 3, color: '#607080', memoryMiB: 32, display: 'vnc' });
  const manager = new VmManager({
    backend: new FakeBackend(),
    input: fakeInput,
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
  });
  cleanups.push(() => (manager.close(), rmSync(root, { recursive: true })));
  await manager.init();

  bus = await startPrivateBus({ mode: 'open' });
  const serviceConn = await connectBus(bus.address);
  const clientConn = await connectBus(bus.address);
  conns.push(serviceConn, clientConn);
  const host = new ServiceHost(serviceConn, { log: () => undefined });
  new VmManagerDbus(host, manager).export();
  await host.requestName(BUS_NAMES.vmManager);
  const client = new BusClient(clientConn, 10_000);

  const display = async (id: string) =>
    (await client.getAll(BUS_NAMES.vmManager, vmPath(id), 'org.bulkhead.Vm1')).Display;
  assert.equal(await display('business'), 'none');
  assert.equal(await display('personal'), 'vnc');
  assert.equal(await display('service'), 'vnc');

  // The ObjectManager's listing (what the switcher reads first) carries it too.
  const changes: Array<[string, unknown]> = [];
  const watch = await client.watchObjects(BUS_NAMES.vmManager, VM_MANAGER_PATH, {
    changed: (path, iface, props) => {
      if (iface === 'org.bulkhead.Vm1' && 'Display' in props) changes.push([path, props.Display]);
    },
  });
  try {
    assert.equal(watch.objects[vmPath('business')]['org.bulkhead.Vm1'].Display, 'none');
    assert.equal(watch.objects[vmPath('personal')]['org.bulkhead.Vm1'].Display, 'vnc');

    // The administrator edits personal's file to console only: the reload announces the change.
    file('a.json', { id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 32, display: 'none' });
    manager.reload();
    await waitFor('PropertiesChanged with Display', () =>
      changes.some(([p, v]) => p === vmPath('personal') && v === 'none'),
    );
    assert.equal(await display('personal'), 'none');
    assert.ok(!changes.some(([p]) => p === vmPath('business')), 'an unchanged file announces nothing');
  } finally {
    await watch.unsubscribe();
  }
});
