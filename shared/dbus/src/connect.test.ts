import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import * as dbus from 'dbus-next';
import { BusClient, connectBus, startPrivateBus, type PrivateBus } from './index';

let bus: PrivateBus;
before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
});
after(async () => {
  await bus.stop();
});

const PATH = '/org/bulkhead/Test';
const IFACE = 'org.bulkhead.Test1';

/** Collects the body of every Test1.Tick signal this connection hears. */
async function listen(): Promise<{ seen: number[]; close(): void }> {
  const conn = await connectBus(bus.address);
  const seen: number[] = [];
  await new BusClient(conn).subscribe({ interface: IFACE, member: 'Tick' }, (m) =>
    seen.push(m.body[0] as number),
  );
  return { seen, close: () => conn.disconnect() };
}

const tick = (n: number) =>
  new dbus.Message({ type: 4, path: PATH, interface: IFACE, member: 'Tick', signature: 'u', body: [n] });

test('messages sent in one turn leave in one socket write, in the order they were sent', async () => {
  const listener = await listen();
  const conn = await connectBus(bus.address);
  try {
    const stream = (conn as unknown as { _connection: { stream: Socket } })._connection.stream;
    const writes: number[] = [];
    const writev = stream._writev!.bind(stream);
    const write1 = stream._write.bind(stream);
    stream._writev = (chunks, cb) => (writes.push(chunks.length), writev(chunks, cb));
    stream._write = (chunk, enc, cb) => (writes.push(1), write1(chunk, enc, cb));
    for (let n = 1; n <= 5; n++) conn.send(tick(n));
    // The next turn sends on its own.
    await new Promise((r) => setImmediate(r));
    conn.send(tick(6));
    const deadline = Date.now() + 5000;
    while (listener.seen.length < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(listener.seen, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(writes, [5, 1], 'five messages of one turn in one write, the sixth in its own');
  } finally {
    conn.disconnect();
    listener.close();
  }
});

test('a message sent right before process.exit still reaches the bus', async () => {
  const listener = await listen();
  try {
    const script = `
      const dbus = require('dbus-next');
      const { connectBus } = require(${JSON.stringify(join(__dirname, 'index.js'))});
      connectBus(${JSON.stringify(bus.address)}).then((conn) => {
        conn.send(new dbus.Message({ type: 4, path: '${PATH}', interface: '${IFACE}', member: 'Tick', signature: 'u', body: [42] }));
        process.exit(0);
      });`;
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, ['-e', script], { cwd: __dirname, stdio: 'inherit' });
      child.on('exit', resolve);
    });
    assert.equal(code, 0);
    const deadline = Date.now() + 5000;
    while (!listener.seen.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(listener.seen, [42]);
  } finally {
    listener.close();
  }
});

test('calls on a connection whose bus went away fail at once, naming the closed connection, not after their timeout', async () => {
  const own = await startPrivateBus({ mode: 'open' });
  const conn = await connectBus(own.address);
  const client = new BusClient(conn, 10_000);
  try {
    await own.stop();
    await new Promise((r) => setTimeout(r, 100)); // the socket's close reaches this process
    const t0 = Date.now();
    // Made after the connection closed.
    await assert.rejects(
      client.call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetId', '', []),
      /org\.freedesktop\.DBus\.GetId: the bus connection (is )?closed/,
    );
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  } finally {
    conn.disconnect();
    await own.stop().catch(() => undefined);
  }
});
