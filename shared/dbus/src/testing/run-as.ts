import { spawn } from 'node:child_process';
import { join } from 'node:path';

export interface CallOutcome {
  ok: boolean;
  body?: unknown;
  error?: string;
  message?: string;
}

/** Run one D-Bus call in a child process with the given uid/gid (needs root to switch). */
export function callAs(
  ids: { uid: number; gid: number } | null,
  address: string,
  dest: string,
  path: string,
  iface: string,
  member: string,
  signature: string,
  body: unknown[],
): Promise<CallOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(__dirname, 'call-as.js'), address, dest, path, iface, member, signature, JSON.stringify(body)],
      { stdio: ['ignore', 'pipe', 'pipe'], ...(ids ? { uid: ids.uid, gid: ids.gid } : {}) },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? ''));
      } catch {
        reject(new Error(`call-as printed no result; stderr: ${err}`));
      }
    });
  });
}
