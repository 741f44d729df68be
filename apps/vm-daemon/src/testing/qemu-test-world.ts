/**
 * The set-up vm-daemon's QEMU tests share, so each test file says only what is its own (its VMs,
 * its daemons' options, its assertions): the toy test guest, a scratch directory, a private bus with
 * a client, the real input-daemon on a virtual seat, and a teardown that leaves no QEMU behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
import { BusClient, connectBus, startPrivateBus, type MessageBus, type PrivateBus } from '@bulkhead/dbus';
import { spawnDaemon, waitFor, type DaemonProcess } from './daemon-process';

/** The toy test guest (apps/vm-daemon/guest, `make -C apps/vm-daemon/guest`). */
export const TEST_GUEST_KERNEL = join(__dirname, '..', '..', 'guest', 'build', 'bulkhead-guest.elf');
/** input-daemon's entry point, run as its own process as systemd runs it. */
export const INPUT_DAEMON_MAIN = join(__dirname, '..', '..', '..', 'input-daemon', 'dist', 'main.js');

/**
 * Why a test that boots the test guest (and, with `inputDaemon`, runs the real input-daemon)
 * cannot run on this machine, or false when it can: for `test(..., { skip })`.
 */
export function qemuTestSkip(opts: { inputDaemon?: boolean } = {}): string | false {
  if (!existsSync(TEST_GUEST_KERNEL)) return 'test guest not built (make -C apps/vm-daemon/guest)';
  if (opts.inputDaemon && !existsSync(INPUT_DAEMON_MAIN))
    return `input-daemon not built (${INPUT_DAEMON_MAIN})`;
  return false;
}

/** A test file's scratch directory: `root` with the VM directory `configDir` made, and where vm-daemon's run and state dirs go. */
export interface ScratchDirs {
  root: string;
  configDir: string;
  runDir: string;
  stateDir: string;
}

export function scratchDirs(prefix: string): ScratchDirs {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  return { root, configDir, runDir: join(root, 'run'), stateDir: join(root, 'state') };
}

/** A private dbus-daemon and one client connection on it. */
export interface TestBus {
  bus: PrivateBus;
  conn: MessageBus;
  client: BusClient;
  /** Disconnect the client and stop the bus daemon. */
  stop(): Promise<void>;
}

export async function startTestBus(
  opts: { mode?: 'open' | 'system'; callTimeoutMs?: number } = {},
): Promise<TestBus> {
  const bus = await startPrivateBus({ mode: opts.mode ?? 'open' });
  const conn = await connectBus(bus.address);
  const client = new BusClient(conn, opts.callTimeoutMs ?? 30_000);
  return {
    bus,
    conn,
    client,
    stop: async () => {
      conn.disconnect();
      await bus.stop();
    },
  };
}

export interface InputDaemonProcess {
  child: ChildProcess;
  /** Everything it logged (stderr). */
  log(): string;
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>;
}

/** Run the real input-daemon on a virtual seat on `bus` and wait until it says it is ready. */
export async function spawnInputDaemon(opts: {
  bus: string;
  /** Its --run-dir (where it keeps its lock mark); none given: its default. */
  runDir?: string;
  env?: Record<string, string>;
  /** Called with each piece of its log as it comes. */
  onLog?: (text: string) => void;
}): Promise<InputDaemonProcess> {
  const child = spawn(
    process.execPath,
    [INPUT_DAEMON_MAIN, '--seat', 'virtual', ...(opts.runDir ? ['--run-dir', opts.runDir] : [])],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, BULKHEAD_BUS: opts.bus, ...opts.env },
    },
  );
  let log = '';
  child.stderr!.on('data', (d) => {
    log += d;
    opts.onLog?.(String(d));
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await waitFor('input-daemon ready', () => log.includes(' ready: '), 20_000);
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${(e as Error).message}; its log:\n${log}`);
  }
  return {
    child,
    log: () => log,
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** The pid of the QEMU running VM `id` (from its pidfile in vm-daemon's run dir). */
export const qemuPid = (runDir: string, id: string): number =>
  Number(readFileSync(join(runDir, id, 'qemu.pid'), 'utf8'));

/**
 * SIGKILL the QEMU of each VM that still runs, by its pidfile: a test that failed half-way (or a
 * daemon that was killed) may have left it running, and a QEMU left behind slows every later test.
 */
export function killQemus(runDir: string, ids: string[]): void {
  for (const id of ids) {
    try {
      process.kill(qemuPid(runDir, id), 'SIGKILL');
    } catch {
      /* not running */
    }
  }
}

/**
 * One test file's world, started in before() and ended by one stop() in after(): the scratch
 * directory with the VM files, a private bus and a client, and the daemons started through it.
 * stop() ends every daemon it started (in reverse order), kills every QEMU whose pidfile is in the
 * run dir (VMs made by the test itself too), stops the bus and removes the directory.
 */
export class QemuTestWorld implements ScratchDirs {
  private readonly stoppers: Array<() => Promise<unknown>> = [];

  private constructor(
    private readonly dirs: ScratchDirs,
    readonly testBus: TestBus,
  ) {}

  /** `vms`: file name (without .json) to definition, written into the VM directory. */
  static async start(prefix: string, vms: Record<string, unknown> = {}): Promise<QemuTestWorld> {
    const dirs = scratchDirs(prefix);
    for (const [name, def] of Object.entries(vms))
      writeFileSync(join(dirs.configDir, `${name}.json`), JSON.stringify(def));
    return new QemuTestWorld(dirs, await startTestBus());
  }

  get root(): string {
    return this.dirs.root;
  }
  get configDir(): string {
    return this.dirs.configDir;
  }
  get runDir(): string {
    return this.dirs.runDir;
  }
  get stateDir(): string {
    return this.dirs.stateDir;
  }
  get bus(): PrivateBus {
    return this.testBus.bus;
  }
  get client(): BusClient {
    return this.testBus.client;
  }

  /** The real input-daemon on this world's bus (see spawnInputDaemon); killed by stop(). */
  async spawnInputDaemon(
    opts: Omit<Parameters<typeof spawnInputDaemon>[0], 'bus'> = {},
  ): Promise<InputDaemonProcess> {
    const d = await spawnInputDaemon({ ...opts, bus: this.bus.address });
    this.stoppers.push(() => d.kill());
    return d;
  }

  /** The real vm-daemon on this world's bus with its dirs (see spawnDaemon); stopped by stop(). */
  async spawnVmDaemon(opts: { args?: string[]; env?: Record<string, string> } = {}): Promise<DaemonProcess> {
    const d = await spawnDaemon({
      bus: this.bus.address,
      configDir: this.configDir,
      runDir: this.runDir,
      stateDir: this.stateDir,
      ...opts,
    });
    this.stoppers.push(() => d.stop());
    return d;
  }

  /** Something else to end at stop() (a fake service on the bus), before the daemons started earlier. */
  onStop(stop: () => unknown): void {
    this.stoppers.push(async () => stop());
  }

  async stop(): Promise<void> {
    for (const stop of this.stoppers.reverse()) await stop().catch(() => undefined);
    this.stoppers.length = 0;
    const ids = existsSync(this.runDir) ? readdirSync(this.runDir) : [];
    killQemus(this.runDir, ids);
    await this.testBus.stop();
    rmSync(this.root, { recursive: true, force: true });
  }
}
