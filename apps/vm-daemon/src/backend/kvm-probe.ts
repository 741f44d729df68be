import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '@bulkhead/qmp';

export interface KvmProbeResult {
  accel: 'kvm' | 'tcg';
  reason: string;
}

/**
 * Does KVM actually run guests here? /dev/kvm existing is not enough: on some hosts (nested
 * virtualisation) it opens fine and then hangs or fails with "KVM internal error" at the first
 * interrupt return. So run a real guest for `runMs` and ask QMP whether it still runs: SeaBIOS
 * alone, or `probeKernel` (a kernel that takes interrupts, like the test guest) when given.
 * Everything is bounded by `timeoutMs`; a hung QEMU is SIGKILLed.
 */
export async function probeKvm(
  opts: { qemu?: string; probeKernel?: string | null; runMs?: number; timeoutMs?: number } = {},
): Promise<KvmProbeResult> {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: '/dev/kvm is not accessible' };
  }
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-kvm-probe-'));
  const debugLog = join(dir, 'debugcon.log');
  const qmpSocket = join(dir, 'qmp.sock');
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
  const runMs = opts.runMs ?? 1500;
  const timeoutMs = opts.timeoutMs ?? 6000;
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
  const qemuExited = (): KvmProbeResult => ({
    accel: 'tcg',
    reason: `qemu -accel kvm exited: ${stderr.trim().split('\n').pop()}`,
  });
  try {
    const result = await Promise.race([
      (async (): Promise<KvmProbeResult> => {
        // The same QMP client as everywhere else; retried only while this QEMU still runs, so a
        // QEMU that dies at once (no binary, KVM refused) is reported as such, not as a hang.
        const deadline = Date.now() + timeoutMs;
        while (!qmp) {
          if (gone) return qemuExited();
          try {
            qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 1000, commandTimeoutMs: 1000 });
          } catch {
            if (Date.now() >= deadline) return { accel: 'tcg', reason: 'no QMP from qemu -accel kvm' };
            await new Promise((r) => setTimeout(r, 20));
          }
        }
        await new Promise((r) => setTimeout(r, runMs));
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
        if (opts.probeKernel && status === 'running') {
          // The test guest must also have booted and must react to a key: seen on nested hosts,
          // a guest that QMP calls 'running' had stopped making progress (KVM internal error
          // a moment later). Input is what Bulkhead needs from a VM, so that is what is checked.
          const serial = () => {
            try {
              return readFileSync(join(dir, 'serial.log'), 'utf8');
            } catch {
              return '';
            }
          };
          if (!serial().includes('BULKHEAD-GUEST READY'))
            return { accel: 'tcg', reason: 'the probe guest did not boot under KVM' };
          await qmp
            .execute('input-send-event', {
              events: [{ type: 'key', data: { down: true, key: { type: 'qcode', data: 'a' } } }],
            })
            .catch(() => undefined);
          const keyDeadline = Date.now() + 1000;
          while (!serial().includes('KEY down 1e') && Date.now() < keyDeadline)
            await new Promise((r) => setTimeout(r, 20));
          if (!serial().includes('KEY down 1e'))
            return { accel: 'tcg', reason: 'the probe guest under KVM did not react to a key' };
          await new Promise((r) => setTimeout(r, 300));
        }
        if (/KVM internal error|emulation failure/.test(stderr))
          return { accel: 'tcg', reason: 'KVM internal error while running a probe guest' };
        if (status === null) return { accel: 'tcg', reason: 'QEMU under KVM did not answer query-status' };
        if (status !== 'running')
          return { accel: 'tcg', reason: `probe guest under KVM is '${status}', not running` };
        if (!progressed && !opts.probeKernel)
          return { accel: 'tcg', reason: 'the firmware printed nothing under KVM' };
        return { accel: 'kvm', reason: 'a probe guest ran under KVM' };
      })(),
      new Promise<KvmProbeResult>((r) =>
        setTimeout(
          () => r({ accel: 'tcg', reason: `KVM probe did not finish within ${timeoutMs} ms (hangs)` }),
          timeoutMs,
        ),
      ),
    ]);
    return result;
  } finally {
    gone = true;
    child.kill('SIGKILL');
    await (qmp as QmpClient | null)?.close().catch(() => undefined);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 1000))]);
    rmSync(dir, { recursive: true, force: true });
  }
}
