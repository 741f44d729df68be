/**
 * Every VM's QEMU runs under QEMU's seccomp sandbox (qemuSandbox in qemu-backend.ts): the real
 * backend starts the toy test guest under TCG with the real qemu-system-x86_64, and the tests look
 * from outside — the command line and seccomp mode in /proc, what still works over QMP, and what
 * a spawn inside QEMU does.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createLogger, type Logger } from '@bulkhead/common';
import { QmpClient } from '@bulkhead/qmp';
import { parseVmDefinition, type VmDefinition } from '../config';
import { decodePng } from '../testing/png';
import { qemuTestSkip, TEST_GUEST_KERNEL } from '../testing/qemu-test-world';
import { waitFor } from '../testing/daemon-process';
import { CDROM_DRIVE } from './backend';
import { QemuBackend, runFiles } from './qemu-backend';

const skip = qemuTestSkip();
const LIBVIRT_SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

let dir: string;
let backend: QemuBackend;
const logged: string[] = [];

function definition(id: string, network: string, extra: Record<string, unknown> = {}): VmDefinition {
  const file = join(dir, 'vms', `${id}.json`);
  const parsed = parseVmDefinition(
    file,
    JSON.stringify({
      id,
      name: id,
      slot: 1,
      kind: 'personal',
      color: '#2a6fdb',
      memoryMiB: 32,
      vcpus: 1,
      network,
      kernel: TEST_GUEST_KERNEL,
      append: `name=${id} color=#2a6fdb`,
      ...extra,
    }),
    { imageDirs: [dir, dirname(TEST_GUEST_KERNEL)] },
  );
  assert.ok(parsed.ok, JSON.stringify(parsed));
  return parsed.def;
}

/** The QEMU of a VM the backend started, as /proc shows it. */
function proc(id: string): { pid: number; argv: string[]; seccomp: string | undefined } {
  const pid = Number(readFileSync(runFiles(join(dir, 'run'), id).pid, 'utf8'));
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const seccomp = /^Seccomp:\t(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { pid, argv, seccomp };
}

const sandboxArg = (argv: string[]): string | undefined => argv[argv.indexOf('-sandbox') + 1];

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'vmd-sandbox-'));
  const log: Logger = createLogger('test', 'info');
  const keep = (m: string) => logged.push(m);
  const recording: Logger = {
    ...log,
    info: (m) => (keep(m), log.info(m)),
    warn: (m) => (keep(m), log.warn(m)),
    child: () => recording,
  };
  backend = new QemuBackend({ runRoot: join(dir, 'run'), log: recording, accel: 'tcg' });
});

after(async () => {
  if (skip) return;
  await backend.stopAll(2000).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

test(
  "a started VM's QEMU carries libvirt's default sandbox on its command line and runs in seccomp filter mode",
  { skip },
  async () => {
    // An installation medium too (an empty ISO-sized file): the CD-ROM drive the eject below empties.
    const iso = join(dir, 'install.iso');
    writeFileSync(iso, Buffer.alloc(1 << 20));
    await backend.start(definition('plain', 'user', { cdrom: iso }));
    const p = proc('plain');
    assert.equal(sandboxArg(p.argv), LIBVIRT_SANDBOX, `QEMU's command line: ${p.argv.join(' ')}`);
    // 2 = SECCOMP_MODE_FILTER: the filter is installed in the running process, not only asked for.
    assert.equal(p.seccomp, '2');
  },
);

test(
  'under the sandbox, what vm-daemon and input-daemon ask of a running QEMU still works, and QEMU keeps running',
  { skip },
  async () => {
    const id = 'plain';
    const qmp = backend.qmp(id)!;
    const png = decodePng(await backend.screenshot(id, 4 << 20));
    assert.ok(png.width > 0 && png.height > 0);
    await backend.pause(id);
    await backend.resume(id);
    // usb-host by port: QEMU starts libusb (its own event thread) and waits for a device at the port.
    const handle = await backend.attachUsb(id, { bus: 1, address: 0, port: '1.4' });
    assert.deepEqual(
      (await backend.listUsb(id)).map(([h]) => h),
      [handle],
    );
    await backend.detachUsb(id, handle);
    // input-daemon's fast path: an input-linux object opens its node (none here: QEMU says so).
    await assert.rejects(
      qmp.execute('object-add', { 'qom-type': 'input-linux', id: 'il0', evdev: join(dir, 'no-such-node') }),
      /Could not open/,
    );
    await qmp.execute('eject', { device: CDROM_DRIVE, force: true });
    await qmp.execute('input-send-event', {
      events: [{ type: 'key', data: { down: true, key: { type: 'qcode', data: 'a' } } }],
    });
    assert.deepEqual(await qmp.execute('query-status'), {
      status: 'running',
      singlestep: false,
      running: true,
    });
    assert.equal(proc(id).seccomp, '2');
  },
);

test(
  'a spawn inside a sandboxed QEMU (migrate to exec:) is refused: SIGSYS ends that QEMU before the command runs, and the backend reports the crash',
  { skip },
  async () => {
    const marker = join(dir, `spawned-${process.pid}`);
    const migrate = { 'command-line': `migrate "exec:touch ${marker}"` };

    // The same command in a QEMU without the sandbox does run `touch`: what the sandbox stops.
    const bareSock = join(dir, 'bare-qmp.sock');
    const bare = spawn(
      'qemu-system-x86_64',
      [
        '-machine',
        'pc',
        '-accel',
        'tcg',
        '-m',
        '32',
        '-nodefaults',
        '-display',
        'none',
        '-kernel',
        TEST_GUEST_KERNEL,
        '-qmp',
        `unix:${bareSock},server=on,wait=off`,
      ],
      { stdio: 'ignore' },
    );
    try {
      const bareQmp = await QmpClient.connect(bareSock, { retryUntilMs: 15_000 });
      await bareQmp.execute('human-monitor-command', migrate).catch(() => undefined);
      await waitFor('touch run by the unsandboxed QEMU', () => existsSync(marker), 10_000);
      await bareQmp.close();
    } finally {
      bare.kill('SIGKILL');
    }
    rmSync(marker);

    await backend.start(definition('escaper', 'user'));
    const { pid, seccomp } = proc('escaper');
    assert.equal(seccomp, '2');
    const ended = new Promise<[string, string]>((resolve) =>
      backend.on('state', (vmId, state, reason) => {
        if (vmId === 'escaper' && state !== 'running' && state !== 'paused') resolve([state, reason]);
      }),
    );
    await assert.rejects(backend.qmp('escaper')!.execute('human-monitor-command', migrate));
    const [state, reason] = await ended;
    assert.equal(state, 'crashed');
    assert.match(reason, /signal SIGSYS/);
    await waitFor(`pid ${pid} gone`, () => !existsSync(`/proc/${pid}`), 5000);
    assert.equal(existsSync(marker), false, 'touch ran: the sandboxed QEMU spawned a process');
  },
);

test(
  'a bridged VM keeps every sub-option but spawn=deny: its QEMU runs qemu-bridge-helper, and is not killed for it',
  { skip },
  async () => {
    // No bridge is set up here: the helper runs and refuses (no ACL file, or no such bridge), and
    // QEMU exits with its words. With spawn=deny QEMU itself died of SIGSYS at the helper's fork.
    const def = definition('bridged', 'bridge:bhsbx0');
    const started = await backend.start(def).then(
      () => null,
      (e: Error) => e.message,
    );
    const line = logged.find((m) => m.startsWith('starting bridged: '));
    assert.ok(line, 'the backend logged no command line for the bridged VM');
    const argv = line.split(' ');
    assert.equal(sandboxArg(argv), 'on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny');
    if (started === null) {
      // This host has a bridge helper set up for such a bridge: the VM runs, sandboxed.
      assert.equal(proc('bridged').seccomp, '2');
      await backend.kill('bridged');
    } else {
      assert.doesNotMatch(started, /SIGSYS/);
      assert.match(started, /bridge helper/);
    }
  },
);
