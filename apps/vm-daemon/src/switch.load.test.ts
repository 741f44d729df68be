/**
 * Load: 10,000 switch requests fired as fast as possible from 4 bus connections at the real
 * vm-daemon with 2 running test-guest VMs and a FakeInputDaemon. No deadlock (every request is
 * answered), every answer is a switch result or Superseded (the last request wins, issue 17), the
 * final state is the last request's: ActiveVm = LastSwitch's target = the target of the last
 * answered switch = input-daemon's focus. vm-daemon (run with its systemd unit's V8 flags) is at
 * most 60 MiB RSS idle, and its RSS stays flat: at most 5 % above what it was after a warm-up of
 * 1,000 requests (the heap's working size under this load; all figures printed).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BulkheadError, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import {
  BusClient,
  connectBus,
  startPrivateBus,
  unwrap,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { FakeInputDaemon } from './testing/fake-input-daemon';
import { spawnDaemon, waitFor, type DaemonProcess } from './testing/daemon-process';

const KERNEL = join(__dirname, '..', 'guest', 'build', 'bulkhead-guest.elf');
const MGR = 'org.bulkhead.VmManager1';
const IDS = ['alpha', 'beta'];
const REQUESTS = 10_000;
const CONNECTIONS = 4;
const IN_FLIGHT = 24;

let bus: PrivateBus;
const conns: MessageBus[] = [];
const clients: BusClient[] = [];
let input: FakeInputDaemon;
let daemon: DaemonProcess;
let root: string;
let runDir: string;

const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

before(async () => {
  assert.ok(existsSync(KERNEL), `test guest not built: make -C apps/vm-daemon/guest (${KERNEL})`);
  root = mkdtempSync(join(tmpdir(), 'vmd-load-'));
  const configDir = join(root, 'vms');
  runDir = join(root, 'run');
  mkdirSync(configDir);
  IDS.forEach((id, i) =>
    writeFileSync(
      join(configDir, `${id}.json`),
      JSON.stringify({ id, slot: i + 1, color: '#2a6fdb', memoryMiB: 32, autostart: true, kernel: KERNEL }),
    ),
  );
  bus = await startPrivateBus({ mode: 'open' });
  for (let i = 0; i < CONNECTIONS; i++) {
    const c = await connectBus(bus.address);
    conns.push(c);
    clients.push(new BusClient(c, 60_000));
  }
  input = await FakeInputDaemon.start(bus.address);
  daemon = await spawnDaemon({ bus: bus.address, configDir, runDir, stateDir: join(root, 'state') });
  await waitFor(
    'both running',
    async () =>
      (await clients[0].get(MGR, vmPath('alpha'), 'org.bulkhead.Vm1', 'State')) === 'running' &&
      (await clients[0].get(MGR, vmPath('beta'), 'org.bulkhead.Vm1', 'State')) === 'running',
    20_000,
  );
});

after(async () => {
  await daemon?.stop();
  for (const id of IDS) {
    try {
      process.kill(Number(readFileSync(join(runDir, id, 'qemu.pid'), 'utf8')), 'SIGKILL');
    } catch {
      /* not running */
    }
  }
  input?.stop();
  conns.forEach((c) => c.disconnect());
  await bus?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** Fires `total` switch requests from every connection, IN_FLIGHT at a time on each. */
async function flood(total: number) {
  let next = 0;
  const counts = { ok: 0, superseded: 0 };
  let lastAnswered = '';
  const worker = async (client: BusClient, w: number) => {
    const proxy = client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
    while (next < total) {
      const n = next++;
      const target = vmPath(IDS[(n + w) % 2]);
      try {
        // Both ways in: by object path and by slot.
        if (n % 2) await proxy.Switch(target, {});
        else await proxy.SwitchToSlot(IDS.indexOf(target.split('/').pop()!) + 1, {});
        counts.ok++;
        lastAnswered = target;
      } catch (e) {
        assert.ok(
          e instanceof BulkheadError && e.errorName === 'Superseded',
          `request ${n}: ${(e as Error).message}`,
        );
        counts.superseded++;
      }
    }
  };
  await Promise.all(clients.flatMap((c, w) => Array.from({ length: IN_FLIGHT }, () => worker(c, w))));
  return { counts, lastAnswered };
}

test(`${REQUESTS} switch requests from ${CONNECTIONS} connections: all answered, the last one wins, RSS flat`, async () => {
  const pid = daemon.child.pid!;
  const rssIdle = rssKiB(pid);
  // Warm-up: code paths compiled, pools and caches at their working size.
  await flood(1000);
  const rssBefore = rssKiB(pid);
  const t0 = Date.now();
  const { counts, lastAnswered } = await flood(REQUESTS);
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(counts.ok + counts.superseded, REQUESTS, 'every request answered');
  assert.ok(counts.ok > 0, 'some switches succeeded');

  const props = clients[0];
  assert.equal(await props.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'Switching'), false);
  const active = (await props.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm')) as string;
  const last = unwrap(
    await props.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'LastSwitch'),
  ) as Record<string, unknown>;
  assert.equal(last.outcome, 'ok');
  assert.equal(active, last.target, 'ActiveVm is the last switch target');
  assert.equal(active, lastAnswered, "ActiveVm is the last request's target");
  assert.equal(input.focused, active, 'input-daemon focus is the active VM');
  assert.equal(input.calls.filter((c) => c.method === 'SetFocus').at(-1)?.target, active);
  // Still works, and the answer is the expected one.
  const other = active === vmPath('alpha') ? vmPath('beta') : vmPath('alpha');
  await props.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').Switch(other, {});
  assert.equal(await props.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm'), other);

  const rssAfter = rssKiB(pid);
  const mib = (k: number) => (k / 1024).toFixed(1);
  console.log(
    `load: ${REQUESTS} requests in ${seconds.toFixed(1)} s: ${counts.ok} switched, ${counts.superseded} Superseded; ` +
      `vm-daemon VmRSS idle ${mib(rssIdle)} MiB, after warm-up ${mib(rssBefore)} MiB, after ${REQUESTS} ${mib(rssAfter)} MiB`,
  );
  assert.ok(rssAfter <= rssBefore * 1.05, `RSS grew more than 5 %: ${rssBefore} KiB -> ${rssAfter} KiB`);
  assert.ok(rssIdle <= 60 * 1024, `idle RSS above 60 MiB: ${rssIdle} KiB`);
});
