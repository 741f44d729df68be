/**
 * Key latency as a person feels it (issue 17): from a key entering the Control Domain to the
 * guest printing it. One QEMU (TCG) test guest whose serial console is a unix socket (the guest
 * prints "KEY down <scancode>" when its keyboard interrupt sees the key), and two ways in, taken
 * in turns on the same guest:
 *  - through input-daemon: the real daemon (its own process, virtual seat) on a private bus,
 *    focused on the guest's QMP socket; the key is injected with Input1.InjectEvents (D-Bus) and
 *    goes seat → hotkeys → router → QMP sink → QEMU;
 *  - bare: no daemon, a script sending the same key with QMP input-send-event (@bulkhead/qmp).
 * Prints p50/p99 of both and their ratio (goal ≤ 1.10×), then `BENCH-JSON {...}`.
 *   node apps/input-daemon/dist/bench/key-latency.bench.js [keys=200]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
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
  let qemu: ChildProcess | undefined;
  let daemon: ChildProcess | undefined;
  const bus = await startPrivateBus({ mode: 'open' });
  const cleanup = [dir];
  try {
    qemu = spawn(
      'qemu-system-x86_64',
      [
        ...['-accel', 'tcg', '-m', '32', '-display', 'none'],
        ...['-chardev', `socket,id=ser,path=${serialSock},server=on,wait=on`, '-serial', 'chardev:ser'],
        ...['-qmp', `unix:${daemonQmp},server=on,wait=off`, '-qmp', `unix:${bareQmp},server=on,wait=off`],
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

    const daemonUs: number[] = [];
    const bareUs: number[] = [];
    const once = async (path: 'daemon' | 'bare', record: boolean) => {
      const down = serial.next('KEY down 1e');
      const t0 = nowUs();
      void (path === 'daemon' ? viaDaemon() : viaBare(true));
      const at = await down;
      if (record) (path === 'daemon' ? daemonUs : bareUs).push(at - t0);
      const up = serial.next('KEY up 1e');
      void (path === 'daemon' ? releaseViaDaemon() : viaBare(false));
      await up;
      await sleep(5);
    };
    for (let i = 0; i < 20; i++) await once(i % 2 ? 'bare' : 'daemon', false); // warm-up
    // In turns, so both paths see the same machine load.
    for (let i = 0; i < n; i++) {
      await once('daemon', true);
      await once('bare', true);
    }
    // The D-Bus hop alone (the virtual seat's way in; a hardware seat reads evdev instead).
    const rttUs: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = nowUs();
      await input.InjectEvents('keyboard', []);
      rttUs.push(nowUs() - t0);
    }
    await bare.close();
    client.bus.disconnect();

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
    console.log(
      `${'  of which the D-Bus hop (InjectEvents, no event)'.padEnd(52)} ${h50.toFixed(3).padStart(8)} ${h99.toFixed(3).padStart(8)}`,
    );
    console.log(
      `${'ratio daemon / bare (goal ≤ 1.10)'.padEnd(52)} ${(d50 / b50).toFixed(2).padStart(8)} ${(d99 / b99).toFixed(2).padStart(8)}`,
    );
    const r3 = (x: number) => Math.round(x * 1000) / 1000;
    console.log(
      `BENCH-JSON ${JSON.stringify({
        keys: n,
        via_input_daemon: { p50_ms: r3(d50), p99_ms: r3(d99) },
        bare_qmp: { p50_ms: r3(b50), p99_ms: r3(b99) },
        dbus_hop: { p50_ms: r3(h50), p99_ms: r3(h99) },
        ratio: { p50: r3(d50 / b50), p99: r3(d99 / b99) },
      })}`,
    );
  } finally {
    daemon?.kill('SIGTERM');
    qemu?.kill('SIGKILL');
    await bus.stop();
    for (const d of cleanup) rmSync(d, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`key latency bench failed: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
