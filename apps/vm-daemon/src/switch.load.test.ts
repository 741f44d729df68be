/**
 * Load: 10,000 switch requests fired as fast as possible from 4 bus connections at the real
 * vm-daemon with 2 running test-guest VMs, the real input-daemon (virtual seat) and the real
 * usb-daemon (no USB devices on the test host), each its own process run with its unit's V8 flags
 * and malloc settings. No deadlock (every request is
 * answered), every answer is a switch result or Superseded (the last request wins, issue 17), the
 * final state is the last request's: ActiveVm = LastSwitch's target = the target of the last
 * answered switch = input-daemon's focus. Each daemon is at most 60 MiB RSS idle, and its RSS
 * stays flat: at most 5 % above what it was after a warm-up of as many requests (the heaps' working
 * size under this load; all figures printed).
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
import { spawn, type ChildProcess } from 'node:child_process';
import { BUS_NAMES, INPUT_PATH } from '@bulkhead/contract';
import {
  spawnDaemon,
  unitMallocEnv,
  unitNodeFlags,
  waitFor,
  type DaemonProcess,
} from './testing/daemon-process';

const KERNEL = join(__dirname, '..', 'guest', 'build', 'bulkhead-guest.elf');
const MGR = 'org.bulkhead.VmManager1';
const IDS = ['alpha', 'beta'];
const APPS = join(__dirname, '..', '..');
const REQUESTS = 10_000;
const CONNECTIONS = 4;
const IN_FLIGHT = 24;

let bus: PrivateBus;
const conns: MessageBus[] = [];
const clients: BusClient[] = [];
let daemon: DaemonProcess;
const peers: Array<{ name: string; child: ChildProcess }> = [];

/** input-daemon or usb-daemon as its own process, as its systemd unit runs it (V8 flags, malloc). */
async function spawnPeer(name: 'input-daemon' | 'usb-daemon', args: string[], ready: string): Promise<void> {
  let log = '';
  const child = spawn(
    process.execPath,
    [...unitNodeFlags(`bulkhead-${name}.service`), join(APPS, name, 'dist', 'main.js'), ...args],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...unitMallocEnv(`bulkhead-${name}.service`), BULKHEAD_BUS: bus.address },
    },
  );
  child.stderr!.on('data', (d) => (log += d));
  peers.push({ name, child });
  await waitFor(`${name} ready`, () => log.includes(ready), 20_000);
}
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
  writeFileSync(join(root, 'usb-rules.json'), '{"rules":[]}');
  await spawnPeer('input-daemon', ['--seat', 'virtual', '--run-dir', join(root, 'input-run')], ' ready: ');
  await spawnPeer(
    'usb-daemon',
    ['--enumerator', 'none', '--rules', join(root, 'usb-rules.json'), '--state-dir', join(root, 'usb')],
    'serving org.bulkhead.Usb1',
  );
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
  for (const p of peers) p.child.kill('SIGTERM');
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
  const daemons = [
    { name: 'vm-daemon', pid: daemon.child.pid! },
    ...peers.map((p) => ({ name: p.name, pid: p.child.pid! })),
  ];
  const rssIdle = daemons.map((d) => rssKiB(d.pid));
  // Warm-up twice as long as the run measured: code compiled, heaps and malloc arenas at their
  // working size. (Measured with forced GCs over 50,000 requests: every daemon's live heap stays
  // flat, 5.5-7 MiB; what RSS gains before that is the heap growing to its working size.) One
  // flood of warm-up was not always enough on a loaded machine: usb-daemon 55.4 -> 59.7 MiB
  // (5.2 %) beside an image boot, 1.6-3.2 % alone; a leak still shows in the measured flood.
  await flood(REQUESTS);
  await flood(REQUESTS);
  const rssBefore = daemons.map((d) => rssKiB(d.pid));
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
  assert.equal(
    await props.get(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'FocusedTarget'),
    active,
    'input-daemon focus is the active VM',
  );
  // Still works, and the answer is the expected one.
  const other = active === vmPath('alpha') ? vmPath('beta') : vmPath('alpha');
  await props.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').Switch(other, {});
  assert.equal(await props.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ActiveVm'), other);

  const rssAfter = daemons.map((d) => rssKiB(d.pid));
  const mib = (k: number) => (k / 1024).toFixed(1);
  console.log(
    `load: ${REQUESTS} requests in ${seconds.toFixed(1)} s: ${counts.ok} switched, ${counts.superseded} Superseded; VmRSS idle / after warm-up / after ${REQUESTS}: ` +
      daemons
        .map((d, i) => `${d.name} ${mib(rssIdle[i])} / ${mib(rssBefore[i])} / ${mib(rssAfter[i])} MiB`)
        .join(', '),
  );
  daemons.forEach((d, i) => {
    assert.ok(rssIdle[i] <= 60 * 1024, `${d.name}: idle RSS above 60 MiB: ${rssIdle[i]} KiB`);
    assert.ok(
      rssAfter[i] <= rssBefore[i] * 1.05,
      `${d.name}: RSS grew more than 5 %: ${rssBefore[i]} KiB -> ${rssAfter[i]} KiB`,
    );
  });
});
