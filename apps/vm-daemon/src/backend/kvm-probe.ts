import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '@bulkhead/qmp';

export interface KvmProbeResult {
  accel: 'kvm' | 'tcg';
  reason: string;
}

export interface KvmProbeOptions {
  qemu?: string;
  /** The KVM device to check first (default /dev/kvm; tests point it at a file of their own). */
  kvmDevice?: string;
  /** A kernel that takes interrupts and prints READY / KEY lines (the toy test guest). */
  probeKernel?: string | null;
  /** Without a probe kernel: how long the firmware runs before QMP is asked whether it still runs. */
  runMs?: number;
  /**
   * How long QEMU may take to answer on QMP (default 30 s). That is QEMU's own start, not KVM's:
   * on a loaded machine (a Control Domain booting its kiosk, itself emulated in the e2e) it took
   * longer than the whole 6 s the probe used to have, and KVM was then wrongly called hung.
   */
  startMs?: number;
  /** How long the probe kernel may take, once QMP answered, to print READY (default 20 s). */
  bootMs?: number;
  /** How long the probe kernel may take to print a key it was sent (default 5 s). */
  keyMs?: number;
  /** A cap on the whole probe (default startMs + bootMs + keyMs + 2 s); a hung QEMU is SIGKILLed. */
  timeoutMs?: number;
}

/**
 * Does KVM actually run guests here? /dev/kvm existing is not enough: on some hosts (nested
 * virtualisation) it opens fine and then hangs or fails with "KVM internal error" at the first
 * interrupt return. So run a real guest and ask QMP whether it still runs: SeaBIOS alone, or
 * `probeKernel` (a kernel that takes interrupts, like the test guest), which must boot to READY and
 * print a key sent through QMP. Each phase has its own bound (QEMU's start, the guest's boot, the
 * key), so a slow machine is not taken for a hung KVM; the reason says how long each phase took.
 */
export async function probeKvm(opts: KvmProbeOptions = {}): Promise<KvmProbeResult> {
  try {
    accessSync(opts.kvmDevice ?? '/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: `${opts.kvmDevice ?? '/dev/kvm'} is not accessible` };
  }
  const startMs = opts.startMs ?? 30_000;
  const bootMs = opts.bootMs ?? 20_000;
  const keyMs = opts.keyMs ?? 5_000;
  const runMs = opts.runMs ?? 1500;
  const timeoutMs = opts.timeoutMs ?? startMs + (opts.probeKernel ? bootMs + keyMs : runMs) + 2000;
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-kvm-probe-'));
  const debugLog = join(dir, 'debugcon.log');
  const qmpSocket = join(dir, 'qmp.sock');
  // No -sandbox here, unlike a VM's QEMU (qemuSandbox in qemu-backend.ts): this QEMU runs only
  // what we ship (SeaBIOS, or the test guest kernel), for seconds, with no disk, network, USB or
  // display, and is SIGKILLed at the end; no person's guest ever runs in it.
  const args = [
    '-accel',
    'kvm',
    '-machine',
    'pc',
    '-m',
    '32',
    '-display',
    'none',
    '-nodefaults',
    '-no-user-config',
    '-serial',
    opts.probeKernel ? `file:${join(dir, 'serial.log')}` : 'none',
    '-chardev',
    `file,id=dbg,path=${debugLog}`,
    '-device',
    'isa-debugcon,iobase=0x402,chardev=dbg',
    '-qmp',
    `unix:${qmpSocket},server=on,wait=off`,
  ];
  if (opts.probeKernel) args.push('-kernel', opts.probeKernel);
  const t0 = Date.now();
  const child = spawn(opts.qemu ?? 'qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  let gone = false;
  const exited = new Promise<void>((r) =>
    child.once('close', () => {
      gone = true;
      r();
    }),
  );
  child.once('error', () => undefined);
  let qmp: QmpClient | null = null;
  const phases: string[] = [];
  const mark = (what: string) => phases.push(`${what} after ${Date.now() - t0} ms`);
  const timed = () => (phases.length ? ` (${phases.join(', ')})` : '');
  const qemuExited = (): KvmProbeResult => ({
    accel: 'tcg',
    reason: `qemu -accel kvm exited: ${stderr.trim().split('\n').pop()}${timed()}`,
  });
  const serial = () => {
    try {
      return readFileSync(join(dir, 'serial.log'), 'utf8');
    } catch {
      return '';
    }
  };
  /** Polls `seen` every 20 ms for `ms`; false when QEMU exits or the time is up. */
  const until = async (seen: () => boolean, ms: number): Promise<boolean> => {
    const deadline = Date.now() + ms;
    while (!seen()) {
      if (gone || Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  };
  let capTimer: NodeJS.Timeout | undefined;
  try {
    const result = await Promise.race([
      (async (): Promise<KvmProbeResult> => {
        // The same QMP client as everywhere else; retried only while this QEMU still runs, so a
        // QEMU that dies at once (no binary, KVM refused) is reported as such, not as a hang.
        const deadline = Date.now() + startMs;
        while (!qmp) {
          if (gone) return qemuExited();
          try {
            qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 1000, commandTimeoutMs: 1000 });
          } catch {
            if (Date.now() >= deadline)
              return { accel: 'tcg', reason: `no QMP from qemu -accel kvm within ${startMs} ms` };
            await new Promise((r) => setTimeout(r, 20));
          }
        }
        mark('QMP');
        if (opts.probeKernel) {
          // The test guest must boot and must react to a key: seen on nested hosts, a guest that
          // QMP calls 'running' had stopped making progress (KVM internal error a moment later).
          // Input is what Bulkhead needs from a VM, so that is what is checked.
          if (!(await until(() => serial().includes('BULKHEAD-GUEST READY'), bootMs))) {
            if (gone) return qemuExited();
            return {
              accel: 'tcg',
              reason: `the probe guest did not boot under KVM within ${bootMs} ms${timed()}`,
            };
          }
          mark('READY');
          await qmp
            .execute('input-send-event', {
              events: [{ type: 'key', data: { down: true, key: { type: 'qcode', data: 'a' } } }],
            })
            .catch(() => undefined);
          if (!(await until(() => serial().includes('KEY down 1e'), keyMs))) {
            if (gone) return qemuExited();
            return {
              accel: 'tcg',
              reason: `the probe guest under KVM did not react to a key within ${keyMs} ms${timed()}`,
            };
          }
          mark('key');
          await new Promise((r) => setTimeout(r, 300));
        } else {
          await new Promise((r) => setTimeout(r, runMs));
        }
        if (gone || child.exitCode !== null) return qemuExited();
        const status = await qmp
          .execute<{ status?: unknown }>('query-status')
          .then((r) => (typeof r?.status === 'string' ? r.status : null))
          .catch(() => null);
        let progressed = false;
        try {
          progressed = readFileSync(debugLog).length > 0;
        } catch {
          /* no output at all */
        }
        if (/KVM internal error|emulation failure/.test(stderr))
          return { accel: 'tcg', reason: `KVM internal error while running a probe guest${timed()}` };
        if (status === null)
          return { accel: 'tcg', reason: `QEMU under KVM did not answer query-status${timed()}` };
        if (status !== 'running')
          return { accel: 'tcg', reason: `probe guest under KVM is '${status}', not running${timed()}` };
        if (!progressed && !opts.probeKernel)
          return { accel: 'tcg', reason: 'the firmware printed nothing under KVM' };
        return { accel: 'kvm', reason: `a probe guest ran under KVM${timed()}` };
      })(),
      new Promise<KvmProbeResult>((r) => {
        capTimer = setTimeout(
          () =>
            r({
              accel: 'tcg',
              reason: `KVM probe did not finish within ${timeoutMs} ms (hangs)${timed()}`,
            }),
          timeoutMs,
        );
      }),
    ]);
    return result;
  } finally {
    clearTimeout(capTimer);
    gone = true;
    child.kill('SIGKILL');
    await (qmp as QmpClient | null)?.close().catch(() => undefined);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 1000))]);
    rmSync(dir, { recursive: true, force: true });
  }
}
