/**
 * Switch benchmark: vm-daemon and the REAL input-daemon (virtual seat, QMP sinks into the guests),
 * each its own process, with two running test-guest VMs under QEMU/TCG; N switches alternating
 * between the two VMs through VmManager1.Switch. Prints p50/p99 of the whole switch (as the caller
 * sees it, and as LastSwitch reports it) and of each step. Beside it, in turns with the switches,
 * the bare baseline: the same calls a switch makes to the outside, issued by this script with no
 * vm-daemon in between — Input1.Freeze(target) then Input1.SetFocus(target, qmp_socket). (A
 * switch between two running VMs issues no QMP command itself: nothing is held, the QMP sinks are
 * cached, no GPU or USB daemon here.) Orchestration = switch − bare, paired per round.
 *   node apps/vm-daemon/dist/bench/switch.bench.js [switches=500]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { BUS_NAMES, INPUT_PATH, VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus, variant } from '@bulkhead/dbus';
import { spawnDaemon, waitFor } from '../testing/daemon-process';

const MGR = 'org.bulkhead.VmManager1';
const KERNEL = join(__dirname, '..', '..', 'guest', 'build', 'bulkhead-guest.elf');
const INPUT_MAIN = join(__dirname, '..', '..', '..', 'input-daemon', 'dist', 'main.js');

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

async function main(): Promise<void> {
  const n = Math.max(50, Number(process.argv[2] ?? 500));
  const root = mkdtempSync(join(tmpdir(), 'vmd-bench-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  const colors = { personal: '#2a6fdb', business: '#e07b00' };
  Object.entries(colors).forEach(([id, color], i) =>
    writeFileSync(
      join(configDir, `${id}.json`),
      JSON.stringify({
        id,
        slot: i + 1,
        color,
        memoryMiB: 32,
        autostart: true,
        kernel: KERNEL,
        append: `name=${id} color=${color}`,
      }),
    ),
  );
  const bus = await startPrivateBus({ mode: 'open' });
  const conn = await connectBus(bus.address);
  const client = new BusClient(conn, 30_000);
  let inputLog = '';
  const input = spawn(
    process.execPath,
    [INPUT_MAIN, '--seat', 'virtual', '--run-dir', join(root, 'input-run')],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, BULKHEAD_BUS: bus.address },
    },
  );
  input.stderr!.on('data', (d) => (inputLog += d));
  await waitFor('input-daemon ready', () => inputLog.includes(' ready: '), 20_000);
  const runDir = join(root, 'run');
  const daemon = await spawnDaemon({ bus: bus.address, configDir, runDir, stateDir: join(root, 'state') });
  try {
    for (const id of Object.keys(colors))
      await waitFor(
        `${id} running`,
        async () => (await client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'State')) === 'running',
        30_000,
      );
    const mgr = client.proxy(MGR, VM_MANAGER_PATH, 'org.bulkhead.VmManager1');
    const inputApi = client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
    const socketOf = async (id: string) =>
      (await client.get(MGR, vmPath(id), 'org.bulkhead.Vm1', 'InputQmpSocket')) as string;
    const sockets = new Map<string, string>();
    for (const id of Object.keys(colors)) sockets.set(id, await socketOf(id));
    const bare: number[] = [];
    const orchestration: number[] = [];
    const total: number[] = [];
    const reported: number[] = [];
    const steps = new Map<string, number[]>();
    const targets = Object.keys(colors);
    await mgr.Switch(vmPath(targets[0]), {}); // warm-up
    for (let i = 0; i < n; i++) {
      const id = targets[(i + 1) % 2];
      const t0 = process.hrtime.bigint();
      await mgr.Switch(vmPath(id), {});
      const switchMs = Number(process.hrtime.bigint() - t0) / 1e6;
      total.push(switchMs);
      // The bare baseline, right after, to the same target (input-daemon ends where it was).
      const b0 = process.hrtime.bigint();
      await inputApi.Freeze({ target: variant('o', vmPath(id)) });
      await inputApi.SetFocus(vmPath(id), { qmp_socket: variant('s', sockets.get(id)!) });
      const bareMs = Number(process.hrtime.bigint() - b0) / 1e6;
      bare.push(bareMs);
      orchestration.push(switchMs - bareMs);
      const last = (await client.get(
        MGR,
        VM_MANAGER_PATH,
        'org.bulkhead.VmManager1',
        'LastSwitch',
      )) as Record<string, unknown>;
      if (last.outcome !== 'ok') throw new Error(`switch ${i} ended ${last.outcome}: ${last.error}`);
      reported.push(Number(last.duration_usec) / 1000);
      for (const [name, us] of last.steps as Array<[string, bigint]>) {
        if (!steps.has(name)) steps.set(name, []);
        steps.get(name)!.push(Number(us) / 1000);
      }
    }
    const rows: Array<[string, number[]]> = [
      ['switch (caller, D-Bus round trip)', total],
      ['bare: Freeze + SetFocus from a script', bare],
      ['orchestration (switch - bare, paired)', orchestration],
      ['switch (LastSwitch.duration)', reported],
      ...[...steps].map(([k, v]) => [`  step ${k}`, v] as [string, number[]]),
    ];
    console.log(
      `vm-daemon switch benchmark: ${n} switches between 2 running VMs (QEMU TCG), the real input-daemon (virtual seat, QMP sinks)`,
    );
    console.log(
      `${'what'.padEnd(36)} ${'p50 ms'.padStart(9)} ${'p99 ms'.padStart(9)} ${'max ms'.padStart(9)}`,
    );
    const json: Record<string, unknown> = {
      switches: n,
      ratio: {
        p50: +(pct(total, 50) / pct(bare, 50)).toFixed(3),
        p99: +(pct(total, 99) / pct(bare, 99)).toFixed(3),
      },
    };
    for (const [name, v] of rows) {
      console.log(
        `${name.padEnd(36)} ${pct(v, 50).toFixed(3).padStart(9)} ${pct(v, 99).toFixed(3).padStart(9)} ${Math.max(
          ...v,
        )
          .toFixed(3)
          .padStart(9)}`,
      );
      json[
        name
          .trim()
          .replace(/[^a-z0-9]+/gi, '_')
          .replace(/_+$/, '')
      ] = { p50_ms: +pct(v, 50).toFixed(3), p99_ms: +pct(v, 99).toFixed(3) };
    }
    console.log(
      `ratio switch / bare: p50 ${(pct(total, 50) / pct(bare, 50)).toFixed(2)}, p99 ${(pct(total, 99) / pct(bare, 99)).toFixed(2)}; orchestration p99 ${pct(orchestration, 99).toFixed(3)} ms (goal <= 10 ms)`,
    );
    console.log(`BENCH-JSON ${JSON.stringify(json)}`);
  } finally {
    await daemon.stop();
    for (const id of Object.keys(colors)) {
      try {
        process.kill(Number(readFileSync(join(runDir, id, 'qemu.pid'), 'utf8')), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    input.kill('SIGTERM');
    conn.disconnect();
    await bus.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`switch bench failed: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
