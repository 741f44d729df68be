import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync, copyFileSync, readdirSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** Where the generated bus policy files of the contract are. */
export const POLICY_DIR = join(__dirname, '..', '..', 'contract', 'policy');

export interface PrivateBus {
  /** D-Bus address to give to clients and daemons (BULKHEAD_BUS). */
  address: string;
  dir: string;
  pid: number;
  /** The last 64 KiB the bus daemon logged (rejected messages and the like). */
  log(): string;
  stop(): Promise<void>;
}

export interface PrivateBusOptions {
  /**
   * 'system': the system bus's rules (method calls denied unless a policy file allows them) with
   * Bulkhead's real policy files included — what the image runs. 'open': anyone may own and call
   * anything — for the unprivileged demo and unit tests that are not about access control.
   */
  mode?: 'system' | 'open';
  /** Policy files to include in 'system' mode; defaults to the contract's generated files. */
  policyDir?: string;
}

/**
 * The default policy of a private bus. Both modes let anyone connect, send signals, answer calls
 * that asked for an answer and receive anything; they differ in owning names and calling methods:
 * 'open' allows both, 'system' denies both (as the system bus does, so only the included policy
 * files open them) and keeps the system bus's rules for calls to the bus daemon itself. Rules are
 * applied in order, later ones winning.
 */
function defaultPolicy(mode: 'system' | 'open'): string {
  const open = mode === 'open';
  const rules = [
    '<allow user="*"/>',
    `<${open ? 'allow' : 'deny'} own="*"/>`,
    `<${open ? 'allow' : 'deny'} send_type="method_call"/>`,
    '<allow send_type="signal"/>',
    '<allow send_requested_reply="true" send_type="method_return"/>',
    '<allow send_requested_reply="true" send_type="error"/>',
    '<allow receive_type="method_call"/>',
    '<allow receive_type="method_return"/>',
    '<allow receive_type="error"/>',
    '<allow receive_type="signal"/>',
  ];
  if (!open) {
    const daemon = 'send_destination="org.freedesktop.DBus"';
    rules.push(
      `<allow ${daemon} send_interface="org.freedesktop.DBus"/>`,
      `<allow ${daemon} send_interface="org.freedesktop.DBus.Introspectable"/>`,
      `<allow ${daemon} send_interface="org.freedesktop.DBus.Properties"/>`,
      `<deny ${daemon} send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>`,
      `<deny ${daemon} send_interface="org.freedesktop.DBus.Debug.Stats"/>`,
      `<deny ${daemon} send_interface="org.freedesktop.systemd1.Activator"/>`,
    );
  }
  return `\n  <policy context="default">\n${rules.map((r) => `    ${r}\n`).join('')}  </policy>`;
}

/** Start a private dbus-daemon (never the machine's own buses) and wait for its address. */
export async function startPrivateBus(opts: PrivateBusOptions = {}): Promise<PrivateBus> {
  const mode = opts.mode ?? 'open';
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bus-'));
  // Readable by other uids, so tests can connect as 'nobody' and as the UI user.
  chmodSync(dir, 0o755);
  let include = '';
  if (mode === 'system') {
    const pdir = join(dir, 'system.d');
    mkdirSync(pdir);
    const src = opts.policyDir ?? POLICY_DIR;
    for (const f of readdirSync(src).filter((f) => f.endsWith('.conf')))
      copyFileSync(join(src, f), join(pdir, f));
    include = `  <includedir>${pdir}</includedir>\n`;
  }
  const config = join(dir, 'bus.conf');
  writeFileSync(
    config,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>bulkhead-private</type>
  <listen>unix:path=${join(dir, 'bus')}</listen>
  <auth>EXTERNAL</auth>
${defaultPolicy(mode)}
${include}</busconfig>
`,
  );
  const child: ChildProcess = spawn(
    'dbus-daemon',
    [`--config-file=${config}`, '--nofork', '--print-address=1', '--nopidfile'],
    {
      // The bus's own log (e.g. every rejected message) is kept, not printed: tests that expect
      // denials would otherwise flood the output. BULKHEAD_BUS_LOG=1 prints it.
      stdio: ['ignore', 'pipe', process.env.BULKHEAD_BUS_LOG ? 'inherit' : 'pipe'],
    },
  );
  let busLog = '';
  child.stderr?.on('data', (d: Buffer) => {
    busLog = (busLog + d.toString()).slice(-64 * 1024);
  });
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('dbus-daemon printed no address within 10 s')), 10_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run dbus-daemon (apt-get install dbus): ${e.message}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`dbus-daemon exited with ${code} before printing its address`));
    });
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve(line.trim());
    });
  });
  return {
    address,
    dir,
    pid: child.pid!,
    log: () => busLog,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** uid/gid of a local account, or null when it does not exist. */
export function accountIds(user: string): { uid: number; gid: number } | null {
  const r = spawnSync('id', ['-u', user], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', user], { encoding: 'utf8' });
  if (r.status !== 0 || g.status !== 0) return null;
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/**
 * Make sure the switcher's account exists (system user 'bulkhead-ui' in group 'bulkhead-ui'),
 * as the image creates it. Needs root; returns null when it cannot be created.
 */
export function ensureUiAccount(): { uid: number; gid: number } | null {
  const have = accountIds('bulkhead-ui');
  if (have) return have;
  if (process.getuid?.() !== 0) return null;
  spawnSync('groupadd', ['--system', 'bulkhead-ui']);
  spawnSync('useradd', [
    '--system',
    '--gid',
    'bulkhead-ui',
    '--no-create-home',
    '--shell',
    '/usr/sbin/nologin',
    'bulkhead-ui',
  ]);
  return accountIds('bulkhead-ui');
}
