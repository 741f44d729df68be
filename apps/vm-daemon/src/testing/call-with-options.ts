#!/usr/bin/env node
/**
 * Test helper run as another uid (the UI user): one D-Bus call whose a{sv} arguments carry
 * options, printing one JSON line {ok, body} or {ok:false, error, message}. Arguments:
 *   call-with-options.js <bus address> <destination> <path> <interface> <member> <signature> <json body>
 * An a{sv} argument is written as {"key": ["signature", value], ...}.
 */
import { join } from 'node:path';
import { BusClient, Variant, connectBus, unwrap } from '@bulkhead/dbus';
import { lastJsonLine, runNodeAs } from '@bulkhead/dbus/dist/testing/run-as';

export interface CallOutcome {
  ok: boolean;
  body?: unknown;
  error?: string;
  message?: string;
}

/** Run one call as `ids` (null: as this process) in a child process; options as above. */
export function callWithOptionsAs(
  ids: { uid: number; gid: number } | null,
  address: string,
  path: string,
  iface: string,
  member: string,
  signature: string,
  body: unknown[],
): Promise<CallOutcome> {
  return runNodeAs(
    ids,
    [__filename, address, 'org.bulkhead.VmManager1', path, iface, member, signature, JSON.stringify(body)],
    { cwd: join(__dirname, '..') },
  ).then((run) => lastJsonLine<CallOutcome>(run, 'call-with-options'));
}

async function main(): Promise<void> {
  const [address, dest, path, iface, member, signature, json] = process.argv.slice(2);
  const bus = await connectBus(address);
  const client = new BusClient(bus, 30_000);
  try {
    // a{sv}: {"key": ["sig", value]} → {key: Variant(sig, value)}; everything else as is.
    const body = (JSON.parse(json ?? '[]') as unknown[]).map((a) =>
      a && typeof a === 'object' && !Array.isArray(a)
        ? Object.fromEntries(
            Object.entries(a as Record<string, [string, unknown]>).map(([k, [sig, v]]) => [
              k,
              new Variant(sig, v),
            ]),
          )
        : a,
    );
    const r = await client.call(dest, path, iface, member, signature, body);
    process.stdout.write(
      JSON.stringify({ ok: true, body: unwrap(r) }, (_k, v: unknown) =>
        typeof v === 'bigint' ? String(v) : v,
      ) + '\n',
    );
  } catch (e) {
    const err = e as Error;
    process.stdout.write(JSON.stringify({ ok: false, error: err.name, message: err.message }) + '\n');
  } finally {
    bus.disconnect();
  }
}

if (require.main === module) void main();
