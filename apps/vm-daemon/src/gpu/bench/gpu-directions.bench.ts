/**
 * Orchestration overhead of the GPU hand-off per direction on the one-GPU rig (dom0 → VM, VM → VM,
 * VM → dom0; docs/gpu-handoff.md): what GpuHolder adds beyond the time spent in xl and in the
 * kiosk's systemctl. A FakeXenWorld answers every xl command after a fixed delay and a stand-in
 * display sleeps as long for stop/start; overhead of one hand-off = wall time − time inside them
 * (the "bare sequence"). The real times on hardware are for the issue-16 e2e rig. Run:
 *   node apps/vm-daemon/dist/gpu/bench/gpu-directions.bench.js [rounds=30] [delayMs=20]
 * Prints a table and a final `BENCH-JSON {...}` line.
 */
import { SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { XenGpuHandoff, type PciSysfs } from '../../backend/xen/gpu-handoff';
import { FakeXenWorld } from '../../testing/fake-xen-world';
import type { Dom0Display } from '../dom0-display';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 30);
  const delayMs = Number(process.argv[3] ?? 20);
  const GPU = ['0000:00:02.0'];
  const world = new FakeXenWorld(delayMs);
  world.add({ name: 'personal' });
  world.add({ name: 'business' });
  const assignable = new Set<string>();
  world.on(/^xl pci-assignable-add /, (l) => (assignable.add(l.split(' ')[2]), {}));
  world.on(/^xl pci-assignable-remove -r /, (l) => (assignable.delete(l.split(' ')[3]), {}));
  const sysfs: PciSysfs = { isAssignable: (b) => assignable.has(b), reset: () => 'ok' };
  let displayBusy = 0;
  const timed = async () => {
    const t = performance.now();
    await sleep(delayMs);
    displayBusy += performance.now() - t;
  };
  const display: Dom0Display = { release: timed, reclaim: timed };
  const h = new XenGpuHandoff({
    runner: world,
    log: createLogger('bench', 'error'),
    sysfs,
    sharedWithDom0: true,
    display,
    watchMs: 0,
  });
  const side = (id: string | null) => ({ vm: id ? vmPath(id) : SWITCHER_PATH, pci: id ? GPU : [] });
  const moves = [
    ['dom0->vm', null, 'personal'],
    ['vm->vm', 'personal', 'business'],
    ['vm->dom0', 'business', null],
  ] as const;
  const data: Record<string, { total: number[]; bare: number[]; overhead: number[]; calls: number }> = {};
  for (const [name] of moves) data[name] = { total: [], bare: [], overhead: [], calls: 0 };
  for (let i = 0; i < rounds; i++) {
    for (const [name, from, to] of moves) {
      const busy0 = world.busyMs + displayBusy;
      const calls0 = world.calls.length;
      const t = performance.now();
      await h.handOff(side(from), side(to));
      const total = performance.now() - t;
      const bare = world.busyMs + displayBusy - busy0;
      data[name].total.push(total);
      data[name].bare.push(bare);
      data[name].overhead.push(total - bare);
      data[name].calls = world.calls.length - calls0;
    }
  }
  const pct = (xs: number[], p: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return +s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(3);
  };
  const out: Record<string, unknown> = { bench: 'gpu-directions', rounds, delayMs };
  console.log(
    `GPU hand-off per direction, one GPU shared with dom0 (FakeXenWorld and display at ${delayMs} ms per call, ${rounds} rounds)`,
  );
  console.log(
    'direction   calls  total p50  total p95   bare p50  overhead p50  overhead p95  overhead/bare p50',
  );
  for (const [name] of moves) {
    const d = data[name];
    const ratio = +(pct(d.overhead, 50) / pct(d.bare, 50)).toFixed(4);
    console.log(
      `${name.padEnd(10)} ${String(d.calls).padStart(6)} ${pct(d.total, 50).toFixed(3).padStart(10)} ${pct(d.total, 95).toFixed(3).padStart(10)} ${pct(d.bare, 50).toFixed(3).padStart(10)} ${pct(d.overhead, 50).toFixed(3).padStart(13)} ${pct(d.overhead, 95).toFixed(3).padStart(13)} ${ratio.toFixed(4).padStart(18)}`,
    );
    out[name] = {
      callsPerHandOff: d.calls,
      totalP50Ms: pct(d.total, 50),
      totalP95Ms: pct(d.total, 95),
      bareP50Ms: pct(d.bare, 50),
      overheadP50Ms: pct(d.overhead, 50),
      overheadP95Ms: pct(d.overhead, 95),
      overheadRatioP50: ratio,
    };
  }
  console.log(`BENCH-JSON ${JSON.stringify(out)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
