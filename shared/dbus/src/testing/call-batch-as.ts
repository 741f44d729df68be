#!/usr/bin/env node
/**
 * Test helper run as another uid: makes a batch of D-Bus calls given as JSON on argv[3]
 * ([{destination, path, interface, member, signature, body}]) on the bus at argv[2], and prints
 * one JSON array of outcomes ({ok} or {ok:false, error, message}).
 */
import { connectBus } from '../connect';
import { BusClient } from '../client';

interface Call {
  destination: string;
  path: string;
  interface: string;
  member: string;
  signature: string;
  body: unknown[];
}

async function main(): Promise<void> {
  const [address, json] = process.argv.slice(2);
  const calls = JSON.parse(json) as Call[];
  const bus = await connectBus(address);
  const client = new BusClient(bus, 20_000);
  const out: Array<{ ok: boolean; error?: string; message?: string }> = [];
  for (const c of calls) {
    try {
      await client.call(c.destination, c.path, c.interface, c.member, c.signature, c.body);
      out.push({ ok: true });
    } catch (e) {
      out.push({ ok: false, error: (e as Error).name, message: (e as Error).message });
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  bus.disconnect();
}
void main();
