/**
 * A person makes, installs, changes and removes their own VM, against the real vm-daemon
 * (dist/main.js) on a private bus running the real generated policy, every call made as the
 * switcher's user (bulkhead-ui): CreateVm "Lab" with a 64 MiB disk booting the Linux test guest's
 * ISO from a "USB stick" (a media root); its object appears with slot 3 and Owner person; it boots
 * the ISO under QEMU (TCG) — the guest's own READY line on its serial console — after Ctrl+3,
 * pressed on the real input-daemon's virtual seat, made it the active VM; a key typed then reaches
 * Lab's kernel (its evdev line on the console); Update is refused while it runs and works once stopped
 * (colour, memory, eject); Delete with remove_disks leaves neither file nor disk. The admin's VM
 * answers NotOwner to Update and Delete, and hostile requests answer InvalidArgument and change
 * no file.
 *
 * Skipped, saying why, when not root (the UI user is a real uid) or when the guest ISO cannot be
 * built (guests/linux/build.sh, as linux-guest.qemu.test.ts builds it).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BUS_NAMES, INPUT_PATH, VM_MANAGER_PATH, vmPath, type Vm1Properties } from '@bulkhead/contract';
import {
  BusClient,
  connectBus,
  ensureUiAccount,
  startPrivateBus,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { spawnDaemon, waitFor, type DaemonProcess } from './testing/daemon-process';
import { callWithOptionsAs, type CallOutcome } from './testing/call-with-options';
import { freeBytes } from './disk-manager';

const REPO = resolve(__dirname, '..', '..', '..');
const GUEST_OUT = join(REPO, '.cache', 'linux-guest');
const isRoot = process.getuid?.() === 0;
/** Bounds a hung boot only (a TCG boot of the ISO takes 10-40 s on a loaded 2-core machine). */
const BOOT_LIMIT_MS = 240_000;
const VM1 = 'org.bulkhead.Vm1';
const INPUT_MAIN = join(__dirname, '..', '..', 'input-daemon', 'dist', 'main.js');
const EV_KEY = 1;
const SYN: [number, number, number] = [0, 0, 0];
const KEY_LEFTCTRL = 29;
const KEY_3 = 4;
const KEY_A = 30;
const MGR = 'org.bulkhead.VmManager1';

let skip: string | false = false;
let root: string;
let bus: PrivateBus;
let conn: MessageBus;
let client: BusClient;
let daemon: DaemonProcess | null = null;
let inputDaemon: ChildProcess | null = null;
let ui: { uid: number; gid: number } | null;
let iso: string;
let media: string;
let adminDir: string;
let stateDir: string;
let runDir: string;

function guestIso(): string | { skip: string } {
  const have = join(GUEST_OUT, 'guest.iso');
  if (existsSync(have)) return have;
  const r = spawnSync('bash', [join(REPO, 'guests', 'linux', 'build.sh'), GUEST_OUT], {
    encoding: 'utf8',
    timeout: 15 * 60_000,
  });
  if (r.status === 75)
    return { skip: "the Linux guest ISO cannot be built: Debian's packages cannot be fetched" };
  if (r.status !== 0) throw new Error(`guests/linux/build.sh failed: ${(r.stderr ?? '').slice(-2000)}`);
  return have;
}

before(async () => {
  if (!isRoot) {
    skip = 'not root: the calls are made as the bulkhead-ui user';
    return;
  }
  const built = guestIso();
  if (typeof built !== 'string') {
    skip = built.skip;
    return;
  }
  ui = ensureUiAccount();
  assert.ok(ui, 'the bulkhead-ui account exists or could be made');
  root = mkdtempSync(join(tmpdir(), 'vmd-person-'));
  chmodSync(root, 0o755);
  adminDir = join(root, 'etc-vms');
  media = join(root, 'media');
  stateDir = join(root, 'state');
  runDir = join(root, 'run');
  mkdirSync(adminDir);
  mkdirSync(join(media, 'stick'), { recursive: true });
  // The stick holding the test ISO, as the Control Domain mounts it (read-only, under the root).
  iso = join(media, 'stick', 'guest.iso');
  copyFileSync(built, iso);
  writeFileSync(
    join(adminDir, 'business.json'),
    JSON.stringify({
      id: 'business',
      name: 'Business',
      slot: 2,
      kind: 'business',
      color: '#e07b00',
      memoryMiB: 64,
    }),
  );
  bus = await startPrivateBus({ mode: 'system' });
  conn = await connectBus(bus.address);
  client = new BusClient(conn, 30_000);
  if (existsSync(INPUT_MAIN)) {
    // The real input-daemon on a virtual seat: Ctrl+3 is its hotkey, keys go to the focused VM.
    inputDaemon = spawn(
      process.execPath,
      [INPUT_MAIN, '--seat', 'virtual', '--run-dir', join(root, 'input-run')],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, BULKHEAD_BUS: bus.address, BULKHEAD_LOG_LEVEL: 'info' },
      },
    );
    let log = '';
    inputDaemon.stderr!.on('data', (d) => (log += d));
    await waitFor('input-daemon ready', () => log.includes(' ready: '), 20_000);
  }
  daemon = await spawnDaemon({
    bus: bus.address,
    configDir: adminDir,
    runDir,
    stateDir,
    args: ['--no-autostart', '--stop-vms-on-exit', '--media-root', media],
    env: { BULKHEAD_STRICT_CONTRACT: '1' },
    readyTimeoutMs: 30_000,
  });
});

after(async () => {
  await daemon?.stop();
  if (inputDaemon && inputDaemon.exitCode === null) {
    const exited = new Promise((r) => inputDaemon!.once('exit', r));
    inputDaemon.kill('SIGTERM');
    await exited;
  }
  conn?.disconnect();
  await bus?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** One HMP command on a QEMU's human monitor socket; its output. */
function hmp(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = createConnection(socket);
    let out = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      out += d;
      // The banner's prompt, then the command's output and the next prompt.
      if (out.split('(qemu)').length === 2 && !out.includes(command)) c.write(`${command}\n`);
      else if (out.split('(qemu)').length >= 3) c.end();
    });
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

/** One call as the UI user; a{sv} options as {"key": ["sig", value]}. */
const asUi = (path: string, iface: string, member: string, signature: string, body: unknown[]) =>
  callWithOptionsAs(ui, bus.address, path, iface, member, signature, body);

const prop = (path: string, name: keyof Vm1Properties) => client.get(MGR, path, VM1, name);

/** The object paths the ObjectManager lists. */
async function objectPaths(): Promise<string[]> {
  const [objects] = await client.call(
    MGR,
    VM_MANAGER_PATH,
    'org.freedesktop.DBus.ObjectManager',
    'GetManagedObjects',
    '',
    [],
  );
  return Object.keys(objects as object);
}

function refusedAs(r: CallOutcome, name: string, words: RegExp): void {
  assert.equal(r.ok, false, `refused, got ${JSON.stringify(r)}`);
  assert.equal(r.error, `org.bulkhead.Error.${name}`, r.message);
  assert.match(r.message ?? '', words);
}

/** Every file under the test's root except the daemon's run files: what must not change. */
function files(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d, { withFileTypes: true }))
      if (n.isDirectory()) walk(join(d, n.name));
      else out.push(join(d, n.name));
  };
  for (const d of [adminDir, media, join(stateDir, 'vms'), join(stateDir, 'images')])
    if (existsSync(d)) walk(d);
  return out.map((f) => `${f} ${readFileSync(f).length}`).sort();
}

test('as the UI user: create "Lab" booting the ISO from a stick, switch to it, change it stopped, delete it with its disk', async (t) => {
  if (skip) return t.skip(skip);
  const created = await asUi(VM_MANAGER_PATH, MGR, 'CreateVm', 'sa{sv}', [
    'Lab',
    {
      slot: ['u', 3],
      color: ['s', '#2e7d32'],
      memory_mib: ['u', 256],
      disk_size_mib: ['u', 64],
      cdrom: ['s', iso],
    },
  ]);
  assert.deepEqual(created, { ok: true, body: [vmPath('lab')] });
  const lab = vmPath('lab');
  assert.equal(await prop(lab, 'Slot'), 3);
  assert.equal(await prop(lab, 'Owner'), 'person');
  assert.equal(await prop(lab, 'Cdrom'), iso);
  assert.equal(await prop(vmPath('business'), 'Owner'), 'admin');
  const file = join(stateDir, 'vms', 'lab.json');
  const disk = join(stateDir, 'images', 'lab.qcow2');
  assert.equal(await prop(lab, 'ConfigFile'), file);
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', disk], { encoding: 'utf8' }));
  assert.deepEqual([info.format, info['virtual-size']], ['qcow2', 64 * 1024 * 1024]);
  assert.deepEqual(readdirSync(adminDir), ['business.json'], "nothing written into the admin's directory");

  // Ctrl+3 (input-daemon's hotkey → SwitchToSlot(3)) starts Lab, which boots the ISO (the disk is
  // empty). Without a built input-daemon, the UI user's SwitchToSlot(3) stands in for the chord.
  const keys = (events: Array<[number, number, number]>) =>
    client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1').InjectEvents('keyboard', events);
  if (inputDaemon) {
    await keys([[EV_KEY, KEY_LEFTCTRL, 1], SYN, [EV_KEY, KEY_3, 1], SYN]);
    await keys([[EV_KEY, KEY_3, 0], SYN, [EV_KEY, KEY_LEFTCTRL, 0], SYN]);
  } else {
    const switched = await asUi(VM_MANAGER_PATH, MGR, 'SwitchToSlot', 'ua{sv}', [3, {}]);
    assert.ok(switched.ok, JSON.stringify(switched));
  }
  await waitFor(
    'Lab is the active VM',
    async () => (await client.get(MGR, VM_MANAGER_PATH, MGR, 'ActiveVm')) === lab,
    60_000,
  );
  const serial = join(runDir, 'lab', 'serial.log');
  const guestConsole = () => (existsSync(serial) ? readFileSync(serial, 'utf8') : '');
  await waitFor(
    'the guest booted from the ISO says READY on its console',
    () => /BULKHEAD-LINUX-GUEST READY name=Lab/.test(guestConsole()),
    BOOT_LIMIT_MS,
    250,
  );
  if (inputDaemon) {
    // A key typed now reaches Lab's kernel (its evdev, reported by the guest agent).
    await keys([[EV_KEY, KEY_A, 1], SYN, [EV_KEY, KEY_A, 0], SYN]);
    await waitFor(
      'KEY_A in the guest',
      () => /BULKHEAD-INPUT .*type=1 code=30 value=1/.test(guestConsole()),
      60_000,
      250,
    );
  }

  // Eject from the running VM: QEMU's CD-ROM is empty at once, the file no longer names the ISO.
  const ejected = await asUi(lab, VM1, 'Eject', '', []);
  assert.ok(ejected.ok, JSON.stringify(ejected));
  assert.equal(await prop(lab, 'Cdrom'), '');
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).cdrom, undefined);
  assert.match(await hmp(join(runDir, 'lab', 'monitor.sock'), 'info block'), /cdrom0[^\n]*not inserted/);
  refusedAs(await asUi(lab, VM1, 'Eject', '', []), 'InvalidState', /has no installation medium/);

  refusedAs(
    await asUi(lab, VM1, 'Update', 'a{sv}', [{ memory_mib: ['u', 384] }]),
    'InvalidState',
    /is running; stop it first/,
  );
  const killed = await asUi(lab, VM1, 'Kill', '', []);
  assert.ok(killed.ok, JSON.stringify(killed));
  await waitFor('Lab stopped', async () => (await prop(lab, 'State')) === 'stopped');

  const updated = await asUi(lab, VM1, 'Update', 'a{sv}', [
    { color: ['s', '#aa0000'], memory_mib: ['u', 384], cdrom: ['s', ''] },
  ]);
  assert.ok(updated.ok, JSON.stringify(updated));
  assert.equal(await prop(lab, 'Color'), '#aa0000');
  assert.equal(await prop(lab, 'MemoryMiB'), 384);
  assert.equal(await prop(lab, 'Cdrom'), '', 'ejected: the next start boots the disk');
  const doc = JSON.parse(readFileSync(file, 'utf8'));
  assert.deepEqual([doc.color, doc.memoryMiB, doc.cdrom], ['#aa0000', 384, undefined]);

  const deleted = await asUi(lab, VM1, 'Delete', 'a{sv}', [{ remove_disks: ['b', true] }]);
  assert.ok(deleted.ok, JSON.stringify(deleted));
  assert.ok(!(await objectPaths()).includes(lab), 'the object is gone');
  assert.ok(!existsSync(file), 'the file is gone');
  assert.ok(!existsSync(disk), 'the disk is gone');
  assert.ok(existsSync(iso), "the stick's ISO is the person's, not deleted with the VM");
});

test("as the UI user: the admin's VM answers NotOwner; hostile requests answer InvalidArgument and change no file", async (t) => {
  if (skip) return t.skip(skip);
  const business = vmPath('business');
  const before = files();
  const objectsBefore = await objectPaths();
  refusedAs(
    await asUi(business, VM1, 'Update', 'a{sv}', [{ color: ['s', '#000000'] }]),
    'NotOwner',
    /belongs to the administrator/,
  );
  refusedAs(
    await asUi(business, VM1, 'Delete', 'a{sv}', [{ remove_disks: ['b', true] }]),
    'NotOwner',
    /belongs to the administrator/,
  );
  refusedAs(await asUi(business, VM1, 'CancelDiskJob', '', []), 'NotOwner', /belongs to the administrator/);
  refusedAs(await asUi(business, VM1, 'Eject', '', []), 'NotOwner', /belongs to the administrator/);

  const create = (name: string, options: Record<string, [string, unknown]>) =>
    asUi(VM_MANAGER_PATH, MGR, 'CreateVm', 'sa{sv}', [name, options]);
  refusedAs(await create('../../etc/cron.d/evil', {}), 'InvalidArgument', /^name: must not contain '\/'/);
  refusedAs(await create('Lab', { id: ['s', '../../etc/passwd'] }), 'InvalidArgument', /^id: must match/);
  refusedAs(
    await create('Lab', { cdrom: ['s', '/etc/shadow'] }),
    'InvalidArgument',
    /^cdrom: resolves to \/etc\/shadow, outside/,
  );
  refusedAs(
    await create('Lab', { cdrom: ['s', `${media}/stick/../../../../etc/shadow`] }),
    'InvalidArgument',
    /^cdrom: resolves to \/etc\/shadow/,
  );
  refusedAs(
    await create('Lab', { disk_import: ['s', '/dev/sda'] }),
    'InvalidArgument',
    /^disk_import: resolves to \/dev\/sda, outside/,
  );
  refusedAs(await create('Lab', { slot: ['u', 2] }), 'InvalidArgument', /^slot: slot 2 is already used/);
  refusedAs(
    await create('Lab', { memory_mib: ['s', '512'] }),
    'InvalidArgument',
    /option 'memory_mib' must have type 'u'/,
  );
  const freeMiB = Math.floor(freeBytes(join(stateDir, 'images')) / 1048576);
  if (freeMiB + 1024 <= 1024 * 1024)
    refusedAs(
      await create('Lab', { disk_size_mib: ['u', freeMiB + 1024] }),
      'InvalidArgument',
      /^disk_size_mib: .* more than the .* MiB free/,
    );
  assert.deepEqual(files(), before, 'no refused request wrote or removed a file');
  assert.deepEqual(await objectPaths(), objectsBefore, 'no VM appeared or went');
});
