/**
 * Key latency as a person feels it (issue 17): from a key entering the Control Domain to the
 * guest printing it. One QEMU (TCG) test guest whose serial console is a unix socket (the guest
 * prints "KEY down <scancode>" when its keyboard interrupt sees the key), and two ways in, taken
 * in turns on the same guest:
 *  - through input-daemon: the real daemon (its own process, virtual seat) on a private bus,
 *    focused on the guest's QMP socket; the key is injected with Input1.InjectEvents (D-Bus) and
 *    goes seat → hotkeys → router → QMP sink → QEMU;
 *  - bare: no daemon, a script sending the same key with QMP input-send-event (@bulkhead/qmp);
 *  - through input-daemon's device path: a second daemon whose seat reads `struct input_event`
 *    records from a FIFO (--seat replay:<fifo>, the same parser and pipeline as /dev/input/event*)
 *    — how a key from the keyboard travels on hardware, with no D-Bus on its way in. The FIFO is
 *    polled on the main loop as the evdev seat polls an event node (replay-source.ts).
 * Prints p50/p99 of each and their ratios to bare (goal ≤ 1.10×), then `BENCH-JSON {...}`.
 *   node apps/input-daemon/dist/bench/key-latency.bench.js [keys=200]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUS_NAMES, INPUT_PATH } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus, variant } from '@bulkhead/dbus';
import { QmpClient } from '@bulkhead/qmp';

const REPO = join(__dirname, '..', '..', '..', '..');
const GUEST = join(REPO, 'apps', 'vm-daemon', 'guest', 'build', 'bulkhead-guest.elf');
const INPUT_MAIN = join(__dirname, '..', 'main.js');
const VM = '/org/bulkhead/VmManager1/vm/bench';
const KEY_A = 30; // evdev code; scancode 1e in the guest
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowUs = () => Number(process.hrtime.bigint()) / 1000;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** The guest's serial console: resolves at the next line that contains `prefix`. */
class SerialLines {
  private buf = '';
  private waiter: { prefix: string; resolve: (at: number) => void } | null = null;
  constructor(sock: Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      const at = nowUs();
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (this.waiter && line.includes(this.waiter.prefix)) {
          const w = this.waiter;
          this.waiter = null;
          w.resolve(at);
        }
      }
    });
  }
  next(prefix: string, timeoutMs = 5000): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no serial line '${prefix}' within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiter = {
        prefix,
        resolve: (at) => {
          clearTimeout(timer);
          resolve(at);
        },
      };
    });
  }
}

async function main(): Promise<void> {
  const n = Math.max(50, Number(process.argv[2] ?? 200));
  if (!existsSync(GUEST) || spawnSync('qemu-system-x86_64', ['--version']).status !== 0) {
    console.log('key latency: skipped (needs qemu-system-x86_64 and the test guest)');
    console.log(`BENCH-JSON ${JSON.stringify({ skipped: 'needs qemu-system-x86_64 and the test guest' })}`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'key-latency-'));
  const serialSock = join(dir, 'serial.sock');
  const daemonQmp = join(dir, 'input-qmp.sock');
  const bareQmp = join(dir, 'bare-qmp.sock');
  const deviceQmp = join(dir, 'device-qmp.sock');
  const fifo = join(dir, 'keyboard.fifo');
  let qemu: ChildProcess | undefined;
  let daemon: ChildProcess | undefined;
  let deviceDaemon: ChildProcess | undefined;
  let fifoFd: number | undefined;
  const bus = await startPrivateBus({ mode: 'open' });
  // The device-path daemon has its own bus (one Input1 name per bus).
  const deviceBus = await startPrivateBus({ mode: 'open' });
  const cleanup = [dir];
  try {
    qemu = spawn(
      'qemu-system-x86_64',
      [
        ...['-accel', 'tcg', '-m', '32', '-display', 'none'],
        ...['-chardev', `socket,id=ser,path=${serialSock},server=on,wait=on`, '-serial', 'chardev:ser'],
        ...['-qmp', `unix:${daemonQmp},server=on,wait=off`, '-qmp', `unix:${bareQmp},server=on,wait=off`],
        ...['-qmp', `unix:${deviceQmp},server=on,wait=off`],
        ...['-kernel', GUEST, '-append', 'name=bench color=#2a6fdb'],
      ],
      { stdio: 'ignore' },
    );
    // wait=on: QEMU starts the guest once this end is connected, so no console line is missed.
    for (let i = 0; i < 100 && !existsSync(serialSock); i++) await sleep(50);
    const serial = new SerialLines(connect(serialSock));
    await serial.next('READY', 30_000);

    let log = '';
    // The held-keys journal lives in /run (tmpfs) on the image: the same here, not on a disk.
    const runDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'key-latency-run-'));
    cleanup.push(runDir);
    daemon = spawn(process.execPath, [INPUT_MAIN, '--seat', 'virtual', '--run-dir', runDir], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, BULKHEAD_BUS: bus.address },
    });
    daemon.stderr!.on('data', (d) => (log += d));
    for (let i = 0; i < 400 && !log.includes(' ready: '); i++) await sleep(50);
    if (!log.includes(' ready: ')) throw new Error(`input-daemon not ready:\n${log}`);
    const client = new BusClient(await connectBus(bus.address), 10_000);
    const input = client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
    await input.SetFocus(VM, { qmp_socket: variant('s', daemonQmp) });
    const bare = await QmpClient.connect(bareQmp, { retryUntilMs: 5000 });

    // The device path: a FIFO opened read-write here (so neither end blocks in open), read by
    // the daemon's replay seat as it reads a keyboard's event node.
    if (spawnSync('mkfifo', [fifo]).status !== 0) throw new Error(`mkfifo ${fifo} failed`);
    fifoFd = openSync(fifo, 'r+');
    let deviceLog = '';
    const deviceRunDir = mkdtempSync(
      join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'key-latency-device-run-'),
    );
    cleanup.push(deviceRunDir);
    deviceDaemon = spawn(
      process.execPath,
      [INPUT_MAIN, '--seat', `replay:${fifo}`, '--run-dir', deviceRunDir, '--unlock-user', 'nobody'],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, BULKHEAD_BUS: deviceBus.address } },
    );
    deviceDaemon.stderr!.on('data', (d) => (deviceLog += d));
    for (let i = 0; i < 400 && !deviceLog.includes(' ready: '); i++) await sleep(50);
    if (!deviceLog.includes(' ready: '))
      throw new Error(`input-daemon (replay seat) not ready:\n${deviceLog}`);
    const deviceClient = new BusClient(await connectBus(deviceBus.address), 10_000);
    await deviceClient
      .proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1')
      .SetFocus(VM, { qmp_socket: variant('s', deviceQmp) });
    /** One key frame as the kernel hands it out: EV_KEY then SYN_REPORT, 24-byte records. */
    const record = Buffer.alloc(48);
    const viaDevice = (value: number) => {
      const now = BigInt(Date.now());
      for (const [i, [type, code, v]] of [
        [1, KEY_A, value],
        [0, 0, 0],
      ].entries()) {
        record.writeBigInt64LE(now / 1000n, i * 24);
        record.writeBigInt64LE((now % 1000n) * 1000n, i * 24 + 8);
        record.writeUInt16LE(type, i * 24 + 16);
        record.writeUInt16LE(code, i * 24 + 18);
        record.writeInt32LE(v, i * 24 + 20);
      }
      writeSync(fifoFd!, record);
    };

    const viaDaemon = async () =>
      input.InjectEvents('keyboard', [
        [1, KEY_A, 1],
        [0, 0, 0],
      ]);
    const releaseViaDaemon = async () =>
      input.InjectEvents('keyboard', [
        [1, KEY_A, 0],
        [0, 0, 0],
      ]);
    const viaBare = async (down: boolean) =>
      bare.execute('input-send-event', {
        events: [{ type: 'key', data: { down, key: { type: 'qcode', data: 'a' } } }],
      });

    const times = { daemon: [] as number[], bare: [] as number[], device: [] as number[] };
    const press = { daemon: viaDaemon, bare: () => viaBare(true), device: async () => viaDevice(1) };
    const release = {
      daemon: releaseViaDaemon,
      bare: () => viaBare(false),
      device: async () => viaDevice(0),
    };
    const once = async (path: keyof typeof times, record: boolean) => {
      const down = serial.next('KEY down 1e');
      const t0 = nowUs();
      void press[path]();
      const at = await down;
      if (record) times[path].push(at - t0);
      const up = serial.next('KEY up 1e');
      void release[path]();
      await up;
      await sleep(5);
    };
    const paths = ['daemon', 'bare', 'device'] as const;
    for (let i = 0; i < 21; i++) await once(paths[i % 3], false); // warm-up
    // In turns, so every path sees the same machine load.
    for (let i = 0; i < n; i++) for (const p of paths) await once(p, true);
    const { daemon: daemonUs, bare: bareUs, device: deviceUs } = times;
    // The D-Bus hop alone (the virtual seat's way in; a hardware seat reads evdev instead).
    const rttUs: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = nowUs();
      await input.InjectEvents('keyboard', []);
      rttUs.push(nowUs() - t0);
    }
    await bare.close();
    client.bus.disconnect();
    deviceClient.bus.disconnect();

    const ms = (us: number) => us / 1000;
    const d50 = ms(pct(daemonUs, 50));
    const d99 = ms(pct(daemonUs, 99));
    const b50 = ms(pct(bareUs, 50));
    const b99 = ms(pct(bareUs, 99));
    console.log(
      `key latency: key injected → the guest prints it (QEMU TCG test guest), ${n} keys per path, in turns`,
    );
    console.log(`${'path'.padEnd(52)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}`);
    console.log(
      `${'through input-daemon (Input1.InjectEvents, QMP sink)'.padEnd(52)} ${d50.toFixed(3).padStart(8)} ${d99.toFixed(3).padStart(8)}`,
    );
    console.log(
      `${'bare: QMP input-send-event from a script'.padEnd(52)} ${b50.toFixed(3).padStart(8)} ${b99.toFixed(3).padStart(8)}`,
    );
    const h50 = ms(pct(rttUs, 50));
    const h99 = ms(pct(rttUs, 99));
    const v50 = ms(pct(deviceUs, 50));
    const v99 = ms(pct(deviceUs, 99));
    console.log(
      `${'  of which the D-Bus hop (InjectEvents, no event)'.padEnd(52)} ${h50.toFixed(3).padStart(8)} ${h99.toFixed(3).padStart(8)}`,
    );
    console.log(
      `${'through input-daemon (device seat: FIFO, no D-Bus)'.padEnd(52)} ${v50.toFixed(3).padStart(8)} ${v99.toFixed(3).padStart(8)}`,
    );
    console.log(
      `${'ratio daemon / bare (goal ≤ 1.10)'.padEnd(52)} ${(d50 / b50).toFixed(2).padStart(8)} ${(d99 / b99).toFixed(2).padStart(8)}`,
    );
    console.log(
      `${'ratio device path / bare (goal ≤ 1.10)'.padEnd(52)} ${(v50 / b50).toFixed(2).padStart(8)} ${(v99 / b99).toFixed(2).padStart(8)}`,
    );
    const r3 = (x: number) => Math.round(x * 1000) / 1000;
    console.log(
      `BENCH-JSON ${JSON.stringify({
        keys: n,
        via_input_daemon: { p50_ms: r3(d50), p99_ms: r3(d99) },
        bare_qmp: { p50_ms: r3(b50), p99_ms: r3(b99) },
        dbus_hop: { p50_ms: r3(h50), p99_ms: r3(h99) },
        ratio: { p50: r3(d50 / b50), p99: r3(d99 / b99) },
        via_device_seat: { p50_ms: r3(v50), p99_ms: r3(v99) },
        device_ratio: { p50: r3(v50 / b50), p99: r3(v99 / b99) },
      })}`,
    );
  } finally {
    daemon?.kill('SIGTERM');
    deviceDaemon?.kill('SIGTERM');
    if (fifoFd !== undefined) closeSync(fifoFd);
    qemu?.kill('SIGKILL');
    await bus.stop();
    await deviceBus.stop();
    for (const d of cleanup) rmSync(d, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`key latency bench failed: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
