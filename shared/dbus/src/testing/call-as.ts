#!/usr/bin/env node
/**
 * Test helper run as another uid (root, the UI user, nobody): makes one D-Bus call and prints
 * one JSON line {ok, body} or {ok:false, error, message}. Arguments:
 *   call-as.js <bus address> <destination> <path> <interface> <member> <signature> <json body>
 * a{sv} arguments are given as {} (empty options).
 */
import { connectBus } from '../connect';
import { BusClient } from '../client';
import { unwrap } from '../variants';

async function main(): Promise<void> {
  const [address, dest, path, iface, member, signature, json] = process.argv.slice(2);
  const bus = await connectBus(address);
  const client = new BusClient(bus, 10_000);
  try {
    const body = await client.call(dest, path, iface, member, signature, JSON.parse(json ?? '[]'));
    process.stdout.write(
      JSON.stringify({ ok: true, body: unwrap(body) }, (_k, v) => (typeof v === 'bigint' ? String(v) : v)) +
        '\n',
    );
  } catch (e) {
    const err = e as Error & { dbusName?: string; errorName?: string };
    process.stdout.write(JSON.stringify({ ok: false, error: err.name, message: err.message }) + '\n');
  } finally {
    bus.disconnect();
  }
}
void main();
