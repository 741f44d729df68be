#!/usr/bin/env node
/**
 * Test helper run as another uid (root, the UI user, nobody): subscribes to every signal on the
 * bus at argv[2] (one match rule without sender, so that it would also get signals a daemon sends
 * before owning its name) and prints "READY" once the rule is in place, then one JSON line per
 * signal ({sender, path, interface, member, strings}: the string arguments, for assertions). It
 * exits on SIGTERM. Signals of the bus daemon itself (NameAcquired, NameOwnerChanged) are left out.
 */
import { Message } from 'dbus-next';
import { connectBus } from '../connect';
import { unwrap } from '../variants';

const SIGNAL = 4;

function strings(v: unknown): string[] {
  const u = unwrap(v);
  if (typeof u === 'string') return [u];
  if (Array.isArray(u)) return u.flatMap(strings);
  if (u && typeof u === 'object' && !Buffer.isBuffer(u))
    return Object.entries(u).flatMap(([k, x]) => [k, ...strings(x)]);
  return [];
}

async function main(): Promise<void> {
  const [address] = process.argv.slice(2);
  const bus = await connectBus(address);
  bus.on('message', (msg) => {
    if (msg.type !== SIGNAL || msg.sender === 'org.freedesktop.DBus') return;
    process.stdout.write(
      JSON.stringify({
        sender: msg.sender,
        path: msg.path,
        interface: msg.interface,
        member: msg.member,
        strings: strings(msg.body),
      }) + '\n',
    );
  });
  await bus.call(
    new Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'AddMatch',
      signature: 's',
      body: ["type='signal'"],
    }),
  );
  process.stdout.write('READY\n');
  process.on('SIGTERM', () => {
    bus.disconnect();
    process.exit(0);
  });
}
void main().catch((e) => {
  process.stderr.write(`watch-signals-as: ${(e as Error).stack}\n`);
  process.exit(1);
});
