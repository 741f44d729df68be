/**
 * The D-Bus boundary of the real daemons (issue 12, items 5, 8 and 9):
 *  - hostile VM files (a NUL in a name, a binary file whose bytes end up in an error text) never
 *    stop GetManagedObjects / ConfigErrors from answering, and no NUL reaches the bus;
 *  - on a 'system'-mode bus with the real generated policy, a process running as `nobody`
 *    receives none of the daemons' signals during a real switch (SwitchProgress, PropertiesChanged
 *    of vm-daemon and input-daemon, InterfacesAdded), while root and the UI user receive them;
 *  - Switch / SwitchToSlot to a VM whose file is invalid or whose kernel is missing answer
 *    InvalidConfig, and the contract declares it.
 * The daemons are the real dist/main.js processes; they run with strict contract checking
 * (an undeclared error would come back as Failed).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUS_NAMES, BulkheadError, CONTRACT, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import {
  BusClient,
  Message,
  accountIds,
  connectBus,
  ensureUiAccount,
  startPrivateBus,
  unwrap,
  type MessageBus,
  type PrivateBus,
} from '@bulkhead/dbus';
import { watchSignalsAs } from '@bulkhead/dbus/dist/testing/run-as';
import { spawnDaemon, waitFor, type DaemonProcess } from './testing/daemon-process';
import {
  INPUT_DAEMON_MAIN as INPUT_MAIN,
  TEST_GUEST_KERNEL as KERNEL,
  killQemus,
  startTestBus,
} from './testing/qemu-test-world';

const isRoot = process.getuid?.() === 0;
const STRICT = { BULKHEAD_STRICT_CONTRACT: '1' };

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), 'vmd-boundary-'));
  chmodSync(work, 0o755);
});
after(() => rmSync(work, { recursive: true, force: true }));

const vmFile = (dir: string, name: string, body: unknown) =>
  writeFileSync(
    join(dir, name),
    typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  );

/** Every string anywhere in a value. */
function strings(v: unknown): string[] {
  const u = unwrap(v);
  if (typeof u === 'string') return [u];
  if (Array.isArray(u)) return u.flatMap(strings);
  if (u && typeof u === 'object' && !Buffer.isBuffer(u))
    return Object.entries(u).flatMap(([k, x]) => [k, ...strings(x)]);
  return [];
}
const UNPAIRED = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

test('hostile VM files: GetManagedObjects and ConfigErrors answer, with U+FFFD where the daemon handed over NUL or an unpaired surrogate', async () => {
  const dir = join(work, 'hostile');
  const configDir = join(dir, 'vms');
  mkdirSync(configDir, { recursive: true });
  vmFile(configDir, 'nulname.json', {
    id: 'nulname',
    name: 'a\u0000b',
    color: '#336699',
    slot: 1,
    memoryMiB: 32,
    kernel: KERNEL,
  });
  // A binary file: NUL bytes and invalid UTF-8.
  vmFile(configDir, 'junk.json', Buffer.from([0x7b, 0x00, 0xff, 0xfe, 0x00, 0xc3, 0x28, 0x0a, 0x00]));
  // Binary bytes that end up in an error text: an unknown field whose name has a NUL, an unpaired
  // surrogate (valid JSON escapes) and invalid UTF-8 (raw bytes).
  vmFile(
    configDir,
    'badkey.json',
    Buffer.concat([
      Buffer.from('{"id":"badkey","color":"#336699","slot":4,"memoryMiB":32,"\\u0000x\\ud800'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('":1}'),
    ]),
  );
  const { bus, client, stop: stopBus } = await startTestBus({ callTimeoutMs: 20_000 });
  let daemon: DaemonProcess | null = null;
  try {
    daemon = await spawnDaemon({
      bus: bus.address,
      configDir,
      runDir: join(dir, 'run'),
      stateDir: join(dir, 'state'),
      args: ['--no-autostart'],
      env: STRICT,
    });
    const [objects] = await client.call(
      BUS_NAMES.vmManager,
      VM_MANAGER_PATH,
      'org.freedesktop.DBus.ObjectManager',
      'GetManagedObjects',
      '',
      [],
    );
    const configErrors = await client.get(
      BUS_NAMES.vmManager,
      VM_MANAGER_PATH,
      'org.bulkhead.VmManager1',
      'ConfigErrors',
    );
    const every = [...strings(objects), ...strings(configErrors)];
    assert.deepEqual(
      every.filter((s) => s.includes('\0') || UNPAIRED.test(s)),
      [],
    );
    assert.ok(
      configErrors.some(([file]) => file.endsWith('junk.json')),
      'the binary file is reported',
    );
    // The unknown field's name arrives with U+FFFD for the NUL and for the unpaired surrogate, or
    // the loader got there first: it refuses a file that is not UTF-8 and escapes such characters
    // in what it quotes (config-files.ts, config-text.ts).
    const badkey = configErrors.find(([file]) => file.endsWith('badkey.json'));
    assert.ok(badkey, 'badkey.json is reported');
    assert.match(badkey.join(' '), /\uFFFDx\uFFFD|\\u0000x\\ud800|not valid UTF-8 text/);
    // The NUL the daemon handed over is visible as U+FFFD, whether as the VM's Name or (once the
    // loader refuses such names) quoted in a ConfigErrors reason.
    const nulVm = (unwrap(objects) as Record<string, Record<string, Record<string, unknown>>>)[
      vmPath('nulname')
    ];
    const shown =
      nulVm?.['org.bulkhead.Vm1']?.Name === 'a\uFFFDb' ||
      configErrors.some(([file, , reason]) => file.endsWith('nulname.json') && /\uFFFD|\\u0000/.test(reason));
    assert.ok(
      shown,
      `the NUL in nulname.json's name is shown: ${JSON.stringify(nulVm?.['org.bulkhead.Vm1']?.Name)}`,
    );

    assert.equal(daemon.child.exitCode, null, 'vm-daemon is still running');
    assert.doesNotMatch(daemon.log(), /contract violation|String contains null byte/);
  } finally {
    await daemon?.stop();
    killQemus(join(dir, 'run'), ['nulname']);
    await stopBus();
  }
});

test('Switch and SwitchToSlot to a VM whose file is invalid or whose kernel is missing answer InvalidConfig, which the contract declares', async () => {
  const dir = join(work, 'invalid');
  const configDir = join(dir, 'vms');
  mkdirSync(configDir, { recursive: true });
  vmFile(configDir, 'broken.json', {
    id: 'broken',
    color: '#336699',
    slot: 3,
    memoryMiB: 'lots',
    kernel: KERNEL,
  });
  vmFile(configDir, 'nokernel.json', {
    id: 'nokernel',
    color: '#336699',
    slot: 2,
    memoryMiB: 32,
    // Inside an image directory (the config dir), so the file is valid and only the start fails.
    kernel: join(configDir, 'missing-kernel'),
  });
  const { bus, client, stop: stopBus } = await startTestBus({ callTimeoutMs: 20_000 });
  let daemon: DaemonProcess | null = null;
  try {
    daemon = await spawnDaemon({
      bus: bus.address,
      configDir,
      runDir: join(dir, 'run'),
      stateDir: join(dir, 'state'),
      args: ['--no-autostart'],
      env: STRICT,
    });
    // Strict contract checking is on in the daemon: an undeclared InvalidConfig would be Failed.
    const proxy = client.proxy(BUS_NAMES.vmManager, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
    const invalidConfig = (e: unknown) =>
      e instanceof BulkheadError && e.errorName === 'InvalidConfig' ? true : assert.fail(String(e));
    await assert.rejects(proxy.Switch(vmPath('broken'), {}), invalidConfig);
    await assert.rejects(proxy.Switch(vmPath('nokernel'), {}), invalidConfig);
    await assert.rejects(proxy.SwitchToSlot(2, {}), invalidConfig);
    assert.ok(CONTRACT['org.bulkhead.VmManager1'].methods.Switch.errors.includes('InvalidConfig'));
    assert.ok(CONTRACT['org.bulkhead.VmManager1'].methods.SwitchToSlot.errors.includes('InvalidConfig'));
    assert.equal(daemon.child.exitCode, null, 'vm-daemon is still running');
    assert.doesNotMatch(daemon.log(), /contract violation/);
  } finally {
    await daemon?.stop();
    killQemus(join(dir, 'run'), ['nokernel']);
    await stopBus();
  }
});

test(
  "with the real policy, nobody receives none of the daemons' signals during a real switch; root and the UI user do",
  { skip: !isRoot && 'needs root to act as other users' },
  async () => {
    assert.ok(existsSync(KERNEL), `test guest not built: make -C apps/vm-daemon/guest (${KERNEL})`);
    const ui = ensureUiAccount();
    const nobody = accountIds('nobody');
    assert.ok(ui && nobody);
    const dir = join(work, 'policy');
    const configDir = join(dir, 'vms');
    mkdirSync(configDir, { recursive: true });
    vmFile(configDir, 'guest.json', {
      id: 'guest',
      color: '#336699',
      slot: 1,
      memoryMiB: 32,
      kernel: KERNEL,
    });
    const bus: PrivateBus = await startPrivateBus({ mode: 'system' });
    let conn: MessageBus | null = null;
    let input: ChildProcess | null = null;
    let daemon: DaemonProcess | null = null;
    const watchers: Array<Awaited<ReturnType<typeof watchSignalsAs>>> = [];
    try {
      input = spawn(process.execPath, [INPUT_MAIN, '--seat', 'virtual'], {
        env: { ...process.env, ...STRICT, BULKHEAD_BUS: bus.address },
        stdio: ['ignore', 'ignore', 'ignore'],
      });
      conn = await connectBus(bus.address);
      const client = new BusClient(conn, 30_000);
      const hasOwner = async (name: string) =>
        (
          await client.call(
            'org.freedesktop.DBus',
            '/org/freedesktop/DBus',
            'org.freedesktop.DBus',
            'NameHasOwner',
            's',
            [name],
          )
        )[0] as boolean;
      await waitFor('input-daemon on the bus', () => hasOwner(BUS_NAMES.input), 20_000);
      daemon = await spawnDaemon({
        bus: bus.address,
        configDir,
        runDir: join(dir, 'run'),
        stateDir: join(dir, 'state'),
        args: ['--no-autostart'],
        env: STRICT,
      });
      const root = await watchSignalsAs(null, bus.address);
      const uiWatch = await watchSignalsAs(ui, bus.address);
      const nobodyWatch = await watchSignalsAs(nobody, bus.address);
      watchers.push(root, uiWatch, nobodyWatch);

      const proxy = client.proxy(BUS_NAMES.vmManager, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
      await proxy.Switch(vmPath('guest'), {}); // starts the guest, then switches to it
      await proxy.Switch('/', {});
      vmFile(configDir, 'second.json', {
        id: 'second',
        color: '#336699',
        slot: 2,
        memoryMiB: 32,
        kernel: KERNEL,
      });
      await proxy.Reload(); // InterfacesAdded for the second VM
      // A marker signal from this test's own connection (no bulkhead name: everyone may receive
      // it). The bus queues messages to each receiver in order, so once a watcher has the marker,
      // it has every earlier signal the bus was going to give it.
      conn.send(Message.newSignal('/org/bulkhead/TestMarker', 'org.bulkhead.TestMarker', 'Marker', '', []));
      for (const w of watchers) await w.until((s) => s.member === 'Marker');

      const ours = (w: typeof root) =>
        w.signals
          .filter((s) => s.interface !== 'org.bulkhead.TestMarker')
          .map((s) => `${s.interface}.${s.member} ${s.path}`);
      for (const [who, w] of [
        ['root', root],
        ['ui', uiWatch],
      ] as const) {
        const seen = ours(w);
        for (const want of [
          `org.bulkhead.VmManager1.SwitchProgress ${VM_MANAGER_PATH}`,
          `org.freedesktop.DBus.Properties.PropertiesChanged ${VM_MANAGER_PATH}`,
          `org.freedesktop.DBus.Properties.PropertiesChanged /org/bulkhead/Input1`,
          `org.freedesktop.DBus.ObjectManager.InterfacesAdded ${VM_MANAGER_PATH}`,
        ])
          assert.ok(
            seen.includes(want),
            `${who} did not receive ${want}; got ${JSON.stringify([...new Set(seen)])}`,
          );
        // The values themselves arrived (ActiveVm, FocusedTarget → the guest).
        assert.ok(
          w.signals.some((s) => s.strings.includes('ActiveVm') && s.strings.includes(vmPath('guest'))),
        );
      }
      assert.deepEqual(ours(nobodyWatch), [], 'nobody received signals of the daemons');
    } finally {
      for (const w of watchers) await w.stop();
      await daemon?.stop();
      killQemus(join(dir, 'run'), ['guest', 'second']);
      if (input && input.exitCode === null) {
        const exited = new Promise((r) => input!.once('exit', r));
        input.kill('SIGTERM');
        await exited;
      }
      conn?.disconnect();
      await bus.stop();
    }
  },
);
