/**
 * Fuzz target: D-Bus arguments to every method of org.bulkhead.Usb1 and org.bulkhead.UsbDevice1
 * on the REAL usb-daemon (dist/main.js, --enumerator none, no VMs) on a private bus. Replies must
 * be successes or named errors only; the daemon stays up; and SetRules is all or nothing: after
 * each call the Rules property is the old text (rejected) or exactly the new rules (accepted).
 * Fixed seed: usb-service.fuzz.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONTRACT, USB_PATH, usbDevicePath } from '@bulkhead/contract';
import { BusClient, busString, connectBus, startPrivateBus } from '@bulkhead/dbus';
import { fuzzDaemonMethods } from '@bulkhead/dbus/dist/testing/dbus-fuzz';
import type { FuzzRunOptions, FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { formatRules, parseRules } from './policy';

const RULES_MAX_CHARS = CONTRACT['org.bulkhead.Usb1'].properties.Rules.maxLength;

/** Run dist/main.js as its own process; resolves once it serves its bus name. */
export async function spawnUsbDaemon(
  bus: string,
  rules: string,
  stateDir: string,
): Promise<{ child: ChildProcess; log: () => string; stop: () => Promise<void> }> {
  const child = spawn(
    process.execPath,
    [join(__dirname, 'main.js'), '--rules', rules, '--state-dir', stateDir, '--enumerator', 'none'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      // Strict contract checking also under `npm run fuzz` (not only under node's test runner).
      env: { ...process.env, BULKHEAD_BUS: bus, BULKHEAD_STRICT_CONTRACT: '1' },
    },
  );
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`usb-daemon not ready:\n${log}`)), 20_000);
    child.stderr!.on(
      'data',
      () => log.includes('serving org.bulkhead.Usb1') && (clearTimeout(timer), resolve()),
    );
    child.once(
      'exit',
      (code) => (clearTimeout(timer), reject(new Error(`usb-daemon exited with ${code}:\n${log}`))),
    );
  });
  const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
  return {
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function runUsbDaemonDbusFuzz(opts: FuzzRunOptions) {
  const root = mkdtempSync(join(tmpdir(), 'usbd-dbusfuzz-'));
  const bus = await startPrivateBus({ mode: 'open' });
  const conn = await connectBus(bus.address);
  const client = new BusClient(conn, 30_000);
  let daemon: Awaited<ReturnType<typeof spawnUsbDaemon>> | null = null;
  const rulesNow = async () =>
    (await client.get('org.bulkhead.Usb1', USB_PATH, 'org.bulkhead.Usb1', 'Rules')) as string;
  try {
    daemon = await spawnUsbDaemon(bus.address, join(root, 'usb-rules.json'), join(root, 'state'));
    let rules = await rulesNow();
    return await fuzzDaemonMethods(
      {
        client,
        destination: 'org.bulkhead.Usb1',
        objects: [
          { path: USB_PATH, iface: 'org.bulkhead.Usb1' },
          { path: usbDevicePath('0781:5567:4C530001'), iface: 'org.bulkhead.UsbDevice1' },
        ],
        ctx: {
          paths: [
            '/',
            USB_PATH,
            usbDevicePath('nope'),
            '/org/bulkhead/VmManager1/vm/work',
            '/org/bulkhead/VmManager1',
          ],
          strings: [
            formatRules([{ match: { classes: ['storage'] }, action: 'deny' }]),
            '{"rules":[{"action":"always"}]}',
            '{"rules":[{"match":{"vid":"zz"},"action":"allow"}]}',
          ],
        },
        pid: daemon.child.pid!,
        afterCall: async (call, error) => {
          if (call.member !== 'SetRules' || call.iface !== 'org.bulkhead.Usb1') return;
          const now = await rulesNow();
          if (error) {
            if (now !== rules)
              throw new Error(`afterCall: a rejected SetRules changed Rules (${error.message})`);
            return;
          }
          // Rules as the bus shows them: NUL and unpaired surrogates as U+FFFD (the bus boundary).
          const want = busString(formatRules(parseRules(call.body[0] as string)), RULES_MAX_CHARS);
          if (now !== want)
            throw new Error(`afterCall: accepted SetRules shows other rules:\n${now}\nwanted\n${want}`);
          rules = now;
        },
      },
      opts,
    );
  } finally {
    await daemon?.stop();
    conn.disconnect();
    await bus.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

export const fuzzTargets: FuzzTarget[] = [{ name: 'usb-daemon: D-Bus arguments', run: runUsbDaemonDbusFuzz }];
