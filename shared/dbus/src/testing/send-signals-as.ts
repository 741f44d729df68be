#!/usr/bin/env node
/**
 * Test helper run as another uid (a hostile local process): sends the signals given as JSON on
 * argv[3] ([{destination?, path, interface, member, signature, body}]; a value {"variant": [sig,
 * value]} in a body is sent as a Variant) on the bus at argv[2], each straight to `destination`
 * (a unique name) when one is given, else broadcast. Prints its own unique name, then exits.
 */
import { Message, Variant } from 'dbus-next';
import { connectBus } from '../connect';

import type { SignalToSend } from './run-as';

function revive(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (Array.isArray(o.variant) && Object.keys(o).length === 1)
      return new Variant(o.variant[0] as string, revive(o.variant[1]));
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, revive(x)]));
  }
  return v;
}

async function main(): Promise<void> {
  const [address, json] = process.argv.slice(2);
  const bus = await connectBus(address);
  for (const s of JSON.parse(json) as SignalToSend[])
    bus.send(new Message({ type: 4, ...s, body: revive(s.body) as unknown[] }));
  // A round trip to the bus daemon: everything sent before it has been routed once it answers.
  await bus.call(
    new Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'GetId',
    }),
  );
  process.stdout.write(`${(bus as unknown as { name: string }).name}\n`);
  bus.disconnect();
}
void main();
