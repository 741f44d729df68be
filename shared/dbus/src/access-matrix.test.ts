/**
 * Checks the access table in shared/contract/ACCESS.md against the real daemons: every method of
 * every interface is called as root, as the switcher's user (group bulkhead-ui) and as nobody,
 * first on a bus running the real generated policy files, then on a permissive bus (so each
 * daemon's own per-uid check is proven without the policy).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BUS_NAMES,
  CONTRACT,
  INPUT_PATH,
  POWER_PATH,
  USB_PATH,
  VM_MANAGER_PATH,
  usbDevicePath,
  vmPath,
} from '@bulkhead/contract';
import {
  accountIds,
  connectBus,
  ensureUiAccount,
  startPrivateBus,
  BusClient,
  Message,
  type PrivateBus,
} from './index';
import { watchSignalsAs } from './testing/run-as';

const repo = join(__dirname, '..', '..', '..');
const isRoot = process.getuid?.() === 0;

interface Row {
  iface: string;
  member: string;
  expect: Record<'root' | 'ui' | 'nobody', 'allow' | 'deny'>;
}

function readTable(): Row[] {
  const text = readFileSync(join(repo, 'shared/contract/ACCESS.md'), 'utf8');
  const rows: Row[] = [];
  for (const line of text.split('\n')) {
    const m = /^\| (org\.bulkhead\.\w+) \| (\w+) \| (allow|deny) \| (allow|deny) \| (allow|deny) \|$/.exec(
      line.trim(),
    );
    if (m)
      rows.push({
        iface: m[1],
        member: m[2],
        expect: { root: m[3], ui: m[4], nobody: m[5] } as Row['expect'],
      });
  }
  return rows;
}

/** A harmless value of each D-Bus type, so that a call reaches the access check. */
function defaults(signature: string): unknown[] {
  const out: unknown[] = [];
  for (let i = 0; i < signature.length; i++) {
    const c = signature[i];
    if (c === 'a') {
      // Skip the element type: arrays and dicts are sent empty.
      let depth = 0;
      let j = i + 1;
      do {
        if (signature[j] === '(' || signature[j] === '{') depth++;
        if (signature[j] === ')' || signature[j] === '}') depth--;
        j++;
      } while (depth > 0);
      out.push(signature[i + 1] === '{' ? {} : []);
      i = j - 1;
    } else out.push(c === 's' ? '' : c === 'o' ? '/' : c === 'b' ? false : 0);
  }
  return out;
}

const destination: Record<string, [string, string]> = {
  'org.bulkhead.VmManager1': [BUS_NAMES.vmManager, VM_MANAGER_PATH],
  'org.bulkhead.Vm1': [BUS_NAMES.vmManager, vmPath('personal')],
  'org.bulkhead.Power1': [BUS_NAMES.vmManager, POWER_PATH],
  'org.bulkhead.Input1': [BUS_NAMES.input, INPUT_PATH],
  'org.bulkhead.Usb1': [BUS_NAMES.usb, USB_PATH],
  'org.bulkhead.UsbDevice1': [BUS_NAMES.usb, usbDevicePath('1234:5678:SERIAL')],
};

function runBatchAs(
  ids: { uid: number; gid: number } | null,
  address: string,
  calls: unknown[],
): Promise<Array<{ ok: boolean; error?: string; message?: string }>> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(__dirname, 'testing', 'call-batch-as.js'), address, JSON.stringify(calls)],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new Error(`batch printed no result: ${err}`));
      }
    });
  });
}

async function startDaemons(bus: PrivateBus, dir: string): Promise<ChildProcess[]> {
  mkdirSync(join(dir, 'vms'), { recursive: true });
  const env = { ...process.env, BULKHEAD_BUS: bus.address, BULKHEAD_ACCEL: 'tcg' };
  const start = (args: string[]) =>
    spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const children = [
    start([
      join(repo, 'apps/vm-daemon/dist/main.js'),
      '--config-dir',
      join(dir, 'vms'),
      '--run-dir',
      join(dir, 'run'),
      '--state-dir',
      join(dir, 'vmstate'),
      '--no-autostart',
    ]),
    start([join(repo, 'apps/input-daemon/dist/main.js'), '--seat', 'virtual']),
    start([
      join(repo, 'apps/usb-daemon/dist/main.js'),
      '--enumerator',
      'none',
      '--rules',
      join(dir, 'rules.json'),
      '--state-dir',
      join(dir, 'usbstate'),
    ]),
  ];
  for (const c of children) c.stderr!.on('data', () => undefined);
  const conn = await connectBus(bus.address);
  const client = new BusClient(conn, 5000);
  const deadline = Date.now() + 30_000;
  for (const name of Object.values(BUS_NAMES)) {
    for (;;) {
      const [has] = await client.call(
        'org.freedesktop.DBus',
        '/org/freedesktop/DBus',
        'org.freedesktop.DBus',
        'NameHasOwner',
        's',
        [name],
      );
      if (has) break;
      if (Date.now() > deadline) throw new Error(`${name} did not appear on the bus`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  conn.disconnect();
  return children;
}

const rows = readTable();
let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), 'bulkhead-access-'));
  chmodSync(work, 0o755);
});
after(() => rmSync(work, { recursive: true, force: true }));

test('ACCESS.md lists every method of the contract exactly once', () => {
  const want = Object.entries(CONTRACT)
    .flatMap(([i, c]) => Object.keys(c.methods).map((m) => `${i}.${m}`))
    .sort();
  assert.deepEqual(rows.map((r) => `${r.iface}.${r.member}`).sort(), want);
});

for (const mode of ['system', 'open'] as const) {
  test(
    `every method as root, ui and nobody matches ACCESS.md (${mode === 'system' ? 'real bus policy' : 'permissive bus: the daemons alone'})`,
    { skip: !isRoot && 'needs root to act as other users' },
    async () => {
      const ui = ensureUiAccount();
      const nobody = accountIds('nobody');
      assert.ok(ui && nobody);
      const bus = await startPrivateBus({ mode });
      const daemons = await startDaemons(bus, join(work, mode));
      try {
        const calls = rows.map((r) => {
          const [dest, path] = destination[r.iface];
          const sig = (CONTRACT as any)[r.iface].methods[r.member].inSignature as string;
          return {
            destination: dest,
            path,
            interface: r.iface,
            member: r.member,
            signature: sig,
            body: defaults(sig),
          };
        });
        // Reading state: allowed to root and ui, denied to nobody.
        calls.push({
          destination: BUS_NAMES.vmManager,
          path: VM_MANAGER_PATH,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'GetAll',
          signature: 's',
          body: ['org.bulkhead.VmManager1'],
        });
        calls.push({
          destination: BUS_NAMES.usb,
          path: USB_PATH,
          interface: 'org.freedesktop.DBus.ObjectManager',
          member: 'GetManagedObjects',
          signature: '',
          body: [],
        });
        const who = { root: null, ui, nobody } as const;
        const mismatches: string[] = [];
        for (const [caller, ids] of Object.entries(who) as Array<
          ['root' | 'ui' | 'nobody', { uid: number; gid: number } | null]
        >) {
          const results = await runBatchAs(ids, bus.address, calls);
          results.forEach((r, i) => {
            const denied = !r.ok && /AccessDenied/.test(r.error ?? '');
            const expected =
              i < rows.length ? rows[i].expect[caller] : caller === 'nobody' ? 'deny' : 'allow';
            const what =
              i < rows.length
                ? `${rows[i].iface}.${rows[i].member}`
                : `${calls[i].interface}.${calls[i].member}`;
            if ((expected === 'deny') !== denied)
              mismatches.push(`${caller} ${what}: expected ${expected}, got ${r.ok ? 'ok' : r.error}`);
            // The daemons run with strict contract checking (node's test runner): an error a
            // method does not declare comes back as Failed, and so does an internal error.
            else if (r.error === 'org.bulkhead.Error.Failed')
              mismatches.push(`${caller} ${what}: Failed: ${r.message}`);
          });
        }
        assert.deepEqual(mismatches, []);
        // Every daemon survived the whole matrix.
        for (const d of daemons) assert.equal(d.exitCode, null, 'a daemon exited during the matrix');
        // Signals of usb-daemon (vm-daemon's and input-daemon's: apps/vm-daemon/src/
        // bus-boundary.qemu.test.ts) reach root and ui, never nobody, on the real policy.
        if (mode === 'system') {
          const watchers = [
            await watchSignalsAs(null, bus.address),
            await watchSignalsAs(ui, bus.address),
            await watchSignalsAs(nobody, bus.address),
          ];
          try {
            const [r] = await runBatchAs(null, bus.address, [
              {
                destination: BUS_NAMES.usb,
                path: USB_PATH,
                interface: 'org.bulkhead.Usb1',
                member: 'SetRules',
                signature: 's',
                body: [
                  '{"rules":[{"match":{"classes":["storage"]},"action":"deny","comment":"signal test"}]}',
                ],
              },
            ]);
            assert.ok(r.ok, `SetRules as root: ${r.error}`);
            const conn = await connectBus(bus.address);
            // A marker from a connection without a Bulkhead name, which everyone receives; each
            // receiver's queue is in order, so a watcher with the marker has everything before.
            conn.send(
              Message.newSignal('/org/bulkhead/TestMarker', 'org.bulkhead.TestMarker', 'Marker', '', []),
            );
            for (const w of watchers) await w.until((x) => x.member === 'Marker');
            conn.disconnect();
            const rulesChanged = (x: { path: string; member: string; strings: string[] }) =>
              x.path === USB_PATH && x.member === 'PropertiesChanged' && x.strings.includes('Rules');
            assert.ok(watchers[0].signals.some(rulesChanged), 'root received Usb1 PropertiesChanged');
            assert.ok(watchers[1].signals.some(rulesChanged), 'ui received Usb1 PropertiesChanged');
            assert.deepEqual(
              watchers[2].signals.filter((x) => x.interface !== 'org.bulkhead.TestMarker'),
              [],
              'nobody received signals of the daemons',
            );
          } finally {
            for (const w of watchers) await w.stop();
          }
        }
        // Nobody may take over a daemon's name on the real policy.
        if (mode === 'system') {
          const [r] = await runBatchAs(nobody, bus.address, [
            {
              destination: 'org.freedesktop.DBus',
              path: '/org/freedesktop/DBus',
              interface: 'org.freedesktop.DBus',
              member: 'RequestName',
              signature: 'su',
              body: ['org.bulkhead.Input1', 2],
            },
          ]);
          assert.equal(r.ok, false);
        }
      } finally {
        for (const d of daemons) d.kill('SIGTERM');
        await Promise.all(
          daemons.map((d) => (d.exitCode === null ? new Promise((r) => d.once('exit', r)) : null)),
        );
        await bus.stop();
      }
    },
  );
}
