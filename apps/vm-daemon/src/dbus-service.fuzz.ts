/**
 * Fuzz target: D-Bus arguments to every method of org.bulkhead.VmManager1 and org.bulkhead.Vm1
 * on the REAL vm-daemon (dist/main.js) on a private bus, with two test-guest VMs (one running).
 * Replies must be successes or named errors only; the daemon stays up (see
 * shared/dbus/src/testing/dbus-fuzz.ts). Fixed seed: dbus-service.fuzz.test.ts.
 *
 * CreateVm, Update and Delete get the real option names (and a media root holding an ISO and a
 * disk image) among their strings, so the fuzzer reaches the person-VM code, not only the
 * unknown-option refusal. After every call: the admin's VM files are byte for byte as they were
 * (no request of the UI role may write, replace or delete them), and nothing was written outside
 * the person's directories.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus, variant, Variant } from '@bulkhead/dbus';
import { fuzzDaemonMethods, type FuzzCall } from '@bulkhead/dbus/dist/testing/dbus-fuzz';
import type { FuzzRunOptions, FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { spawnDaemon, waitFor } from './testing/daemon-process';

const KERNEL = join(__dirname, '..', 'guest', 'build', 'bulkhead-guest.elf');
const IDS = ['guest', 'idle'];
/** The options of CreateVm, Update and Delete, so fuzzed a{sv} keys hit them. */
const PERSON_OPTIONS = [
  'id',
  'name',
  'slot',
  'color',
  'memory_mib',
  'vcpus',
  'network',
  'usb_auto_attach',
  'disk_size_mib',
  'disk_format',
  'disk_import',
  'cdrom',
  'remove_disks',
  'qcow2',
  'vpc',
  'user',
  '#123456',
];

/** Every file under `dir` with its content, in a stable order (what must not change). */
function snapshot(dir: string): string {
  return readdirSync(dir)
    .sort()
    .map((n) => `${n}\n${readFileSync(join(dir, n), 'utf8')}`)
    .join('\n---\n');
}

/** A call may not wait long: Stop's timeout_ms (how long to wait for ACPI) is capped at 300 ms. */
function sanitize(c: FuzzCall): FuzzCall {
  if (c.member !== 'Stop' || c.signature !== 'a{sv}') return c;
  const o = { ...(c.body[0] as Record<string, Variant>) };
  const t = o.timeout_ms;
  if (t instanceof Variant && t.signature === 'u' && (t.value as number) > 300)
    o.timeout_ms = variant('u', 300);
  return { ...c, body: [o] };
}

export async function runVmDaemonDbusFuzz(opts: FuzzRunOptions) {
  if (!existsSync(KERNEL)) throw new Error(`test guest not built: make -C apps/vm-daemon/guest (${KERNEL})`);
  const root = mkdtempSync(join(tmpdir(), 'vmd-dbusfuzz-'));
  const configDir = join(root, 'vms');
  const runDir = join(root, 'run');
  const media = join(root, 'media');
  mkdirSync(configDir);
  mkdirSync(media);
  writeFileSync(join(media, 'install.iso'), Buffer.alloc(64 * 1024));
  writeFileSync(join(media, 'disk.img'), Buffer.alloc(1024 * 1024));
  IDS.forEach((id, i) =>
    writeFileSync(
      join(configDir, `${id}.json`),
      JSON.stringify({
        id,
        slot: i + 1,
        color: '#336699',
        memoryMiB: 32,
        autostart: i === 0,
        kernel: KERNEL,
      }),
    ),
  );
  const bus = await startPrivateBus({ mode: 'open' });
  const conn = await connectBus(bus.address);
  const client = new BusClient(conn, 30_000);
  let daemon: Awaited<ReturnType<typeof spawnDaemon>> | null = null;
  try {
    daemon = await spawnDaemon({
      bus: bus.address,
      configDir,
      runDir,
      stateDir: join(root, 'state'),
      args: ['--media-root', media],
      // Strict contract checking also under `npm run fuzz` (not only under node's test runner).
      env: { BULKHEAD_STRICT_CONTRACT: '1' },
    });
    await waitFor(
      'guest running',
      async () =>
        (await client.get('org.bulkhead.VmManager1', vmPath('guest'), 'org.bulkhead.Vm1', 'State')) ===
        'running',
      20_000,
    );
    const adminFiles = snapshot(configDir);
    const rootEntries = readdirSync(root).sort().join(',');
    return await fuzzDaemonMethods(
      {
        client,
        destination: 'org.bulkhead.VmManager1',
        objects: [
          { path: VM_MANAGER_PATH, iface: 'org.bulkhead.VmManager1' },
          ...IDS.map((id) => ({ path: vmPath(id), iface: 'org.bulkhead.Vm1' as const })),
        ],
        ctx: {
          paths: [
            '/',
            VM_MANAGER_PATH,
            ...IDS.map(vmPath),
            vmPath('nope'),
            '/org/bulkhead/VmManager1/vm',
            '/org/bulkhead/Usb1/device/x',
          ],
          strings: [...IDS, ...PERSON_OPTIONS, join(media, 'install.iso'), join(media, 'disk.img'), media],
        },
        pid: daemon.child.pid!,
        sanitize,
        afterCall: async (c) => {
          if (snapshot(configDir) !== adminFiles)
            throw new Error(`afterCall: ${c.member} changed the admin's VM files`);
          if (readdirSync(root).sort().join(',') !== rootEntries)
            throw new Error(`afterCall: ${c.member} wrote outside the daemon's directories`);
        },
      },
      opts,
    );
  } finally {
    await daemon?.stop();
    for (const id of IDS) {
      try {
        process.kill(Number(readFileSync(join(runDir, id, 'qemu.pid'), 'utf8')), 'SIGKILL');
      } catch {
        /* not running */
      }
    }
    conn.disconnect();
    await bus.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

export const fuzzTargets: FuzzTarget[] = [{ name: 'vm-daemon: D-Bus arguments', run: runVmDaemonDbusFuzz }];
