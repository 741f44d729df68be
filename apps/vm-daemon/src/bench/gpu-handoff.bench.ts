/**
 * Orchestration overhead of a Xen GPU hand-off: what XenGpuHandoff adds beyond the time xl itself
 * spends. A FakeXenWorld answers every xl command after a fixed delay (standing in for xl); the
 * overhead of one switch = wall time − time spent inside the fake xl. Run:
 *   node apps/vm-daemon/dist/bench/gpu-handoff.bench.js [switches=40] [xlDelayMs=20]
 * Prints a table and a final `BENCH-JSON {...}` line.
 */
import { vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { XenGpuHandoff, type PciSysfs } from '../backend/xen/gpu-handoff';
import { FakeXenWorld } from '../testing/fake-xen-world';

async function main(): Promise<void> {
  const switches = Number(process.argv[2] ?? 40);
  const delayMs = Number(process.argv[3] ?? 20);
  const GPU = ['0000:00:05.0'];
  const world = new FakeXenWorld(delayMs);
  const a = world.add({ name: 'personal', pci: [...GPU] });
  world.add({ name: 'business' });
  void a;
  const sysfs: PciSysfs = { isAssignable: () => true, reset: () => 'ok' };
  const h = new XenGpuHandoff({ runner: world, log: createLogger('bench', 'error'), sysfs });
  const overheads: number[] = [];
  const totals: number[] = [];
  let xlCalls = 0;
  for (let i = 0; i < switches; i++) {
    const [from, to] = i % 2 === 0 ? ['personal', 'business'] : ['business', 'personal'];
    const busy0 = world.busyMs;
    const calls0 = world.calls.length;
    const t = performance.now();
    await h.handOff({ vm: vmPath(from), pci: GPU }, { vm: vmPath(to), pci: GPU });
    const total = performance.now() - t;
    totals.push(total);
    overheads.push(total - (world.busyMs - busy0));
    xlCalls = world.calls.length - calls0;
  }
  const sorted = [...overheads].sort((x, y) => x - y);
  const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  const mean = overheads.reduce((s, x) => s + x, 0) / overheads.length;
  const meanTotal = totals.reduce((s, x) => s + x, 0) / totals.length;
  console.log(
    `GPU hand-off orchestration overhead (FakeXenWorld, ${delayMs} ms per xl call, ${xlCalls} xl calls per switch, ${switches} switches)`,
  );
  console.log('metric                 ms');
  console.log(`mean total        ${meanTotal.toFixed(3).padStart(10)}`);
  console.log(`overhead mean     ${mean.toFixed(3).padStart(10)}`);
  console.log(`overhead p50      ${pct(50).toFixed(3).padStart(10)}`);
  console.log(`overhead p95      ${pct(95).toFixed(3).padStart(10)}`);
  console.log(`overhead max      ${sorted[sorted.length - 1].toFixed(3).padStart(10)}`);
  console.log(
    `BENCH-JSON ${JSON.stringify({ bench: 'gpu-handoff', switches, xlDelayMs: delayMs, xlCallsPerSwitch: xlCalls, meanTotalMs: +meanTotal.toFixed(3), overheadMeanMs: +mean.toFixed(3), overheadP50Ms: +pct(50).toFixed(3), overheadP95Ms: +pct(95).toFixed(3), overheadMaxMs: +sorted[sorted.length - 1].toFixed(3) })}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
