/**
 * Switch benchmark: vm-daemon (its own process) with two running test-guest VMs under QEMU/TCG,
 * a FakeInputDaemon on the bus (so freeze-input and focus-input are real D-Bus round trips),
 * N switches alternating between the two VMs through VmManager1.Switch. Prints p50/p99 of the
 * whole switch (as the caller sees it, and as LastSwitch reports it) and of each step.
 *   node apps/vm-daemon/dist/bench/switch.bench.js [switches=60]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VM_MANAGER_PATH, vmPath } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus } from '@bulkhead/dbus';
import { FakeInputDaemon } from '../testing/fake-input-daemon';
import { spawnDaemon, waitFor } from '../testing/daemon-process';

const MGR = 'org.bulkhead.VmManager1';
const KERNEL = join(__dirname, '..', '..', 'guest', 'build', 'bulkhead-guest.elf');

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

async function main(): Promise<void> {
  const n = Math.max(50, Number(process.argv[2] ?? 60));
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
  const input = await FakeInputDaemon.start(bus.address);
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
    const total: number[] = [];
    const reported: number[] = [];
    const steps = new Map<string, number[]>();
    const targets = Object.keys(colors);
    await mgr.Switch(vmPath(targets[0]), {}); // warm-up
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      await mgr.Switch(vmPath(targets[(i + 1) % 2]), {});
      total.push(Number(process.hrtime.bigint() - t0) / 1e6);
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
      ['switch (LastSwitch.duration)', reported],
      ...[...steps].map(([k, v]) => [`  step ${k}`, v] as [string, number[]]),
    ];
    console.log(
      `vm-daemon switch benchmark: ${n} switches between 2 running VMs (QEMU TCG), input-daemon = FakeInputDaemon`,
    );
    console.log(
      `${'what'.padEnd(36)} ${'p50 ms'.padStart(9)} ${'p99 ms'.padStart(9)} ${'max ms'.padStart(9)}`,
    );
    const json: Record<string, unknown> = { switches: n };
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
    input.stop();
    conn.disconnect();
    await bus.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`switch bench failed: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
