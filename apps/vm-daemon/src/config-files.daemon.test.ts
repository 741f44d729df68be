/**
 * Hostile files in the config dir, against the real vm-daemon (dist/main.js) on a private bus:
 * the daemon becomes ready, keeps answering, and reports each bad file in ConfigErrors with a
 * short reason that names the file and never quotes what the file (or what it points to) holds.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus, type MessageBus, type PrivateBus } from '@bulkhead/dbus';
import { spawnDaemon, waitFor, type DaemonProcess } from './testing/daemon-process';

const MGR = 'org.bulkhead.VmManager1';
const SECRET = 'root:$y$j9T$TOPSECRETHASH:19000:0:99999:7:::';

let bus: PrivateBus;
let conn: MessageBus;
let client: BusClient;
let root: string;
const daemons: DaemonProcess[] = [];

const good = (id: string, slot: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ id, slot, color: '#2a6fdb', memoryMiB: 32, ...extra });

type ErrorRow = [string, string, string];
const configErrors = async (): Promise<ErrorRow[]> =>
  (await client.get(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1', 'ConfigErrors')) as ErrorRow[];
const errorOf = (rows: ErrorRow[], name: string): ErrorRow | undefined =>
  rows.find(([file]) => file.endsWith(`/${name}`));
const lastError = async (id: string) =>
  (await client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'LastError')) as string;
const reload = () =>
  client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1').Reload() as Promise<number>;

/** A fresh config dir holding a good VM plus `files`, and the daemon started on it. */
async function daemonWith(name: string, files: (configDir: string) => void): Promise<DaemonProcess> {
  // One daemon at a time owns the bus name: stop the previous test's (also when it failed).
  for (const d of daemons) await d.stop();
  const dir = join(root, name);
  const configDir = join(dir, 'vms');
  mkdirSync(configDir, { recursive: true });
  writeFileSync(join(configDir, 'a-good.json'), good('good', 1));
  files(configDir);
  const d = await spawnDaemon({
    bus: bus.address,
    configDir,
    runDir: join(dir, 'run'),
    stateDir: join(dir, 'state'),
    args: ['--no-autostart'],
    readyTimeoutMs: 15_000,
  });
  daemons.push(d);
  return d;
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'vmd-hostile-'));
  bus = await startPrivateBus({ mode: 'open' });
  conn = await connectBus(bus.address);
  client = new BusClient(conn, 10_000);
});

after(async () => {
  for (const d of daemons) await d.stop();
  conn?.disconnect();
  await bus?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

test('a value nested 30,000 levels deep: the daemon starts and ConfigErrors names the file', async () => {
  const d = await daemonWith('deep', (dir) => {
    // Deep enough to overflow any recursive walker, small enough to pass the 64 KiB size limit.
    const depth = 30_000;
    writeFileSync(
      join(dir, 'deep.json'),
      `{"id":"deep","slot":2,"color":"#2a6fdb","memoryMiB":32,"name":${'['.repeat(depth)}${']'.repeat(depth)}}`,
    );
  });
  const row = errorOf(await configErrors(), 'deep.json');
  assert.ok(row, 'deep.json is in ConfigErrors');
  assert.equal(row[1], 'name');
  assert.match(row[2], /^nested deeper than \d+ levels/);
  // The good VM loaded beside it, and the daemon answers.
  assert.equal(await reload(), 1);
  await d.stop();
});

test('a FIFO named *.json at start: the daemon becomes ready and answers', async () => {
  const d = await daemonWith('fifo-start', (dir) => execFileSync('mkfifo', [join(dir, 'pipe.json')]));
  const row = errorOf(await configErrors(), 'pipe.json');
  assert.deepEqual(row?.slice(1), ['(file)', 'not a regular file (fifo)']);
  assert.equal(await reload(), 1);
  await d.stop();
});

test('a FIFO dropped into the config dir at run time: every call still answers', async () => {
  const d = await daemonWith('fifo-late', () => undefined);
  const configDir = join(root, 'fifo-late', 'vms');
  execFileSync('mkfifo', [join(configDir, 'late.json')]);
  // The inotify reload (debounced) reads the directory: it must not block on the FIFO.
  await waitFor(
    'the reload to report late.json',
    async () => errorOf(await configErrors(), 'late.json'),
    5000,
  );
  assert.equal(await reload(), 1);
  assert.equal(await lastError('good'), '');
  await d.stop();
});

test('a 20 MB file, a symlink to a secret, a ../ disk and a bidi name: short reasons, nothing leaked', async () => {
  const d = await daemonWith('hostile', (dir) => {
    const secret = join(root, 'shadow');
    writeFileSync(secret, SECRET, { mode: 0o600 });
    symlinkSync(secret, join(dir, 'link.json'));
    writeFileSync(join(dir, 'big.json'), good('big', 3, { color: 'x'.repeat(20 << 20) }));
    writeFileSync(
      join(dir, 'disk.json'),
      good('escape', 4, { disks: [{ path: '../../../../etc/shadow', format: 'raw' }] }),
    );
    writeFileSync(join(dir, 'bidi.json'), good('bidi', 5, { name: 'Personal\u202e' }));
  });
  const rows = await configErrors();
  for (const row of rows)
    assert.ok(row.join(' ').length < 1000, `long ConfigErrors entry: ${row[2].slice(0, 200)}`);
  const big = errorOf(rows, 'big.json');
  assert.ok(big, 'big.json reported');
  assert.match(big[2], /20971\d\d\d bytes.*65536/);
  // A file read whole would have given its id a placeholder VM with the reason in LastError.
  const link = errorOf(rows, 'link.json');
  assert.deepEqual(link?.slice(1), ['(file)', 'not a regular file (symlink)']);
  assert.ok(!JSON.stringify(rows).includes('root:'), 'no byte of the symlink target is quoted');
  assert.ok(!JSON.stringify(rows).includes('TOPSECRET'));
  assert.deepEqual(errorOf(rows, 'disk.json')?.slice(1, 2), ['disks[0].path']);
  assert.match(errorOf(rows, 'disk.json')![2], /outside/);
  assert.deepEqual(errorOf(rows, 'bidi.json')?.slice(1, 2), ['name']);
  assert.match(errorOf(rows, 'bidi.json')![2], /U\+202E/);
  for (const id of ['escape', 'bidi']) assert.ok((await lastError(id)).length < 1000);
  assert.equal(await reload(), 1);
  await d.stop();
});
