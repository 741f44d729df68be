import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
    'stdio',
  ];
  if (opts.probeKernel) args.push('-kernel', opts.probeKernel);
  const runMs = opts.runMs ?? 1500;
  const timeoutMs = opts.timeoutMs ?? 6000;
  const child = spawn(opts.qemu ?? 'qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  child.once('error', () => undefined);
  try {
    const result = await Promise.race([
      (async (): Promise<KvmProbeResult> => {
        child.stdin.write('{"execute":"qmp_capabilities"}\n');
        await new Promise((r) => setTimeout(r, runMs));
        if (child.exitCode !== null)
          return { accel: 'tcg', reason: `qemu -accel kvm exited: ${stderr.trim().split('\n').pop()}` };
        child.stdin.write('{"execute":"query-status"}\n');
        const deadline = Date.now() + 1000;
        while (!/"status":/.test(stdout) && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 20));
        const m = /"status":\s*"([a-z-]+)"/.exec(stdout);
        let progressed = false;
        try {
          progressed = readFileSync(debugLog).length > 0;
        } catch {
          /* no output at all */
        }
        if (opts.probeKernel && m?.[1] === 'running') {
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
          child.stdin.write(
            '{"execute":"input-send-event","arguments":{"events":[{"type":"key","data":{"down":true,"key":{"type":"qcode","data":"a"}}}]}}\n',
          );
          const keyDeadline = Date.now() + 1000;
          while (!serial().includes('KEY down 1e') && Date.now() < keyDeadline)
            await new Promise((r) => setTimeout(r, 20));
          if (!serial().includes('KEY down 1e'))
            return { accel: 'tcg', reason: 'the probe guest under KVM did not react to a key' };
          await new Promise((r) => setTimeout(r, 300));
        }
        if (/KVM internal error|emulation failure/.test(stderr))
          return { accel: 'tcg', reason: 'KVM internal error while running a probe guest' };
        if (!m) return { accel: 'tcg', reason: 'QEMU under KVM did not answer query-status' };
        if (m[1] !== 'running')
          return { accel: 'tcg', reason: `probe guest under KVM is '${m[1]}', not running` };
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
    child.kill('SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 1000))]);
    rmSync(dir, { recursive: true, force: true });
  }
}
