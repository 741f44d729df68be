import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, test } from 'node:test';

import { FakeQmpServer, NO_REPLY } from './testing/fake-qmp-server';
import {
  QmpClient,
  QmpClosedError,
  QmpError,
  QmpEvent,
  QmpProtocolError,
  QmpTimeoutError,
} from './qmp-client';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves with the next `name` event of an emitter-like object. */
function once<T>(
  client: QmpClient,
  name: 'event' | 'protocol-error' | 'command-error' | 'close',
): Promise<T> {
  return new Promise((resolve) => client.once(name, ((v: T) => resolve(v)) as never));
}

const servers: FakeQmpServer[] = [];
const clients: QmpClient[] = [];

async function setup(
  configure?: (s: FakeQmpServer) => void,
): Promise<{ server: FakeQmpServer; client: QmpClient }> {
  const server = await FakeQmpServer.start();
  servers.push(server);
  configure?.(server);
  const client = await QmpClient.connect(server.socketPath, { timeoutMs: 2000 });
  clients.push(client);
  return { server, client };
}

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
});

describe('QmpClient: connecting', () => {
  test('reads the greeting and negotiates capabilities before anything else', async () => {
    const { server, client } = await setup();
    assert.equal(client.greeting.QMP.version.qemu.major, 7);
    assert.deepEqual(client.greeting.QMP.capabilities, ['oob']);
    assert.equal(server.commands.length, 1);
    assert.equal(server.commands[0].execute, 'qmp_capabilities');
    assert.equal(typeof server.commands[0].id, 'string');
  });

  test('rejects a greeting that is not QMP, naming the socket', async () => {
    const server = await FakeQmpServer.start({ greeting: '{"hello": "world"}\n' });
    servers.push(server);
    await assert.rejects(QmpClient.connect(server.socketPath), (err: Error) => {
      assert.ok(err instanceof QmpProtocolError);
      assert.match(err.message, new RegExp(server.socketPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
      assert.match(err.message, /greeting/);
      return true;
    });
  });

  test('rejects garbage instead of a greeting', async () => {
    const server = await FakeQmpServer.start({ greeting: 'SSH-2.0-OpenSSH\r\n' });
    servers.push(server);
    await assert.rejects(QmpClient.connect(server.socketPath), QmpProtocolError);
  });

  test('times out when no greeting comes (QEMU serves one client at a time)', async () => {
    const server = await FakeQmpServer.start({ greeting: null });
    servers.push(server);
    const t0 = Date.now();
    await assert.rejects(QmpClient.connect(server.socketPath, { timeoutMs: 100 }), (err: Error) => {
      assert.ok(err instanceof QmpTimeoutError);
      assert.match(err.message, /another QMP client/);
      return true;
    });
    assert.ok(Date.now() - t0 < 1000);
  });

  test('reports a refused qmp_capabilities as QmpError', async () => {
    const server = await FakeQmpServer.start();
    servers.push(server);
    server.handle('qmp_capabilities', () => ({
      error: { class: 'CommandNotFound', desc: 'Capabilities negotiation is already complete' },
    }));
    await assert.rejects(QmpClient.connect(server.socketPath), (err: Error) => {
      assert.ok(err instanceof QmpError);
      assert.equal(err.qmpClass, 'CommandNotFound');
      assert.equal(err.command, 'qmp_capabilities');
      return true;
    });
  });

  test('fails at once without retryUntilMs when the socket does not exist', async () => {
    const missing = path.join(os.tmpdir(), `no-such-qmp-${process.pid}.sock`);
    await assert.rejects(QmpClient.connect(missing), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
  });

  test('retryUntilMs waits for QEMU to create the socket', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-retry-'));
    const sock = path.join(dir, 'qmp.sock');
    try {
      const connecting = QmpClient.connect(sock, { retryUntilMs: 3000 });
      await sleep(150);
      const server = await FakeQmpServer.start({ socketPath: sock });
      servers.push(server);
      const client = await connecting;
      clients.push(client);
      assert.deepEqual(await client.execute('qmp_capabilities'), {});
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('retryUntilMs gives up after its deadline', async () => {
    const missing = path.join(os.tmpdir(), `no-such-qmp-${process.pid}-2.sock`);
    const t0 = Date.now();
    await assert.rejects(QmpClient.connect(missing, { retryUntilMs: 120 }), /ENOENT/);
    const took = Date.now() - t0;
    assert.ok(took >= 100 && took < 1000, `took ${took} ms`);
  });
});

describe('QmpClient: commands', () => {
  test('execute sends arguments and resolves with "return"', async () => {
    const { server, client } = await setup((s) =>
      s.handle('query-status', () => ({ return: { status: 'running', running: true } })),
    );
    const status = await client.execute<{ status: string }>('query-status');
    assert.equal(status.status, 'running');
    await assert.rejects(client.execute('screendump', { filename: '/x.png', format: 'png' }), QmpError);
    const sd = server.commands.find((c) => c.execute === 'screendump');
    assert.deepEqual(sd?.arguments, { filename: '/x.png', format: 'png' });
    const ids = server.commands.map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length, 'ids are unique');
  });

  test('commands without arguments send no "arguments" member', async () => {
    const { server, client } = await setup((s) => s.handle('stop', () => ({ return: {} })));
    await client.execute('stop');
    assert.equal(server.commands[1].arguments, undefined);
  });

  test('error replies reject with QmpError and the client stays usable', async () => {
    const { client } = await setup((s) => {
      s.handle('cont', () => ({
        error: { class: 'GenericError', desc: 'Resetting the Virtual Machine is required' },
      }));
      s.handle('query-name', () => ({ return: { name: 'vm1' } }));
    });
    await assert.rejects(client.execute('cont'), (err: Error) => {
      assert.ok(err instanceof QmpError);
      assert.equal(err.qmpClass, 'GenericError');
      assert.equal(err.desc, 'Resetting the Virtual Machine is required');
      assert.equal(err.command, 'cont');
      assert.match(err.message, /cont.*GenericError.*Resetting/);
      return true;
    });
    await assert.rejects(
      client.execute('no-such-command'),
      (err: QmpError) => err.qmpClass === 'CommandNotFound',
    );
    assert.deepEqual(await client.execute('query-name'), { name: 'vm1' });
  });

  test('replies are matched by id, in whatever order they come', async () => {
    const { server, client } = await setup((s) => s.handle('slow', () => NO_REPLY));
    const a = client.execute('slow', { n: 1 });
    const b = client.execute('slow', { n: 2 });
    const c = client.execute('slow', { n: 3 });
    const ca = await server.nextCommand('slow');
    const cb = await server.nextCommand('slow');
    const cc = await server.nextCommand('slow');
    server.reply(cc, { return: 'third' });
    server.reply(ca, { return: 'first' });
    server.reply(cb, { error: { class: 'GenericError', desc: 'second failed' } });
    assert.equal(await a, 'first');
    await assert.rejects(b, /second failed/);
    assert.equal(await c, 'third');
  });

  test('many pipelined commands are all answered correctly', async () => {
    const { server, client } = await setup((s) => s.handle('echo', (cmd) => ({ return: cmd.arguments })));
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => client.execute('echo', { i })));
    results.forEach((r, i) => assert.deepEqual(r, { i }));
    assert.equal(server.commands.length, 201);
  });

  test('per-command timeout rejects, and a late reply is dropped quietly', async () => {
    const { server, client } = await setup((s) => {
      s.handle('hang', () => NO_REPLY);
      s.handle('ping', () => ({ return: 'pong' }));
    });
    const protocolErrors: Error[] = [];
    client.on('protocol-error', (e) => protocolErrors.push(e));
    const t0 = Date.now();
    await assert.rejects(client.execute('hang', undefined, { timeoutMs: 60 }), (err: Error) => {
      assert.ok(err instanceof QmpTimeoutError);
      assert.equal(err.command, 'hang');
      assert.match(err.message, /hang.*60 ms/);
      return true;
    });
    assert.ok(Date.now() - t0 >= 55);
    server.reply(await server.nextCommand('hang'), { return: 'too late' });
    assert.equal(await client.execute('ping'), 'pong');
    assert.deepEqual(protocolErrors, []);
  });

  test('timeoutMs: 0 waits as long as it takes', async () => {
    const { server, client } = await setup((s) => s.handle('slow', () => NO_REPLY));
    const p = client.execute('slow', undefined, { timeoutMs: 0 });
    const cmd = await server.nextCommand('slow');
    await sleep(50);
    server.reply(cmd, { return: 42 });
    assert.equal(await p, 42);
  });
});

describe('QmpClient: events and framing', () => {
  test('asynchronous events interleaved with replies are emitted', async () => {
    const { server, client } = await setup((s) => s.handle('stop', () => NO_REPLY));
    const events: QmpEvent[] = [];
    client.on('event', (e) => events.push(e));
    const p = client.execute('stop');
    const cmd = await server.nextCommand('stop');
    server.sendEvent('STOP');
    server.sendEvent('RTC_CHANGE', { offset: 3 });
    server.reply(cmd, { return: {} });
    server.sendEvent('RESUME');
    assert.deepEqual(await p, {});
    await client.execute('qmp_capabilities'); // a round trip: every earlier line has been read
    assert.deepEqual(
      events.map((e) => e.event),
      ['STOP', 'RTC_CHANGE', 'RESUME'],
    );
    assert.deepEqual(events[0].data, {}, 'an event without data gets {}');
    assert.deepEqual(events[1].data, { offset: 3 });
    assert.equal(typeof events[1].timestamp.seconds, 'number');
    assert.equal(typeof events[1].timestamp.microseconds, 'number');
  });

  test('a reply split across many chunks (even inside a UTF-8 character) is reassembled', async () => {
    const { server, client } = await setup((s) => s.handle('query-name', () => NO_REPLY));
    const p = client.execute('query-name');
    const cmd = await server.nextCommand('query-name');
    const bytes = Buffer.from(JSON.stringify({ return: { name: 'vm-é→😀' }, id: cmd.id }) + '\r\n', 'utf8');
    for (let i = 0; i < bytes.length; i++) {
      server.writeRaw(bytes.subarray(i, i + 1));
      if (i % 7 === 0) await sleep(1);
    }
    assert.deepEqual(await p, { name: 'vm-é→😀' });
  });

  test('several replies and events in a single chunk are all handled', async () => {
    const { server, client } = await setup((s) => s.handle('q', () => NO_REPLY));
    const events: string[] = [];
    client.on('event', (e) => events.push(e.event));
    const ps = [client.execute('q'), client.execute('q'), client.execute('q')];
    const cmds = [
      await server.nextCommand('q'),
      await server.nextCommand('q'),
      await server.nextCommand('q'),
    ];
    const ts = { seconds: 1, microseconds: 2 };
    const text =
      JSON.stringify({ event: 'A', timestamp: ts }) +
      '\r\n' +
      cmds.map((c, i) => JSON.stringify({ return: i, id: c.id })).join('\r\n') +
      '\r\n' +
      JSON.stringify({ event: 'B', data: { x: 1 }, timestamp: ts }) +
      '\n';
    server.writeRaw(text);
    assert.deepEqual(await Promise.all(ps), [0, 1, 2]);
    assert.deepEqual(events, ['A', 'B']);
  });

  test('invalid JSON is reported as protocol-error and the client stays usable', async () => {
    const { server, client } = await setup((s) => s.handle('ping', () => ({ return: 'pong' })));
    const errors: QmpProtocolError[] = [];
    client.on('protocol-error', (e) => errors.push(e));
    server.writeRaw('{"return": {}, "id": \r\n');
    server.writeRaw('[1, 2, 3]\n');
    server.writeRaw('{"something": "else"}\n');
    server.writeRaw('{"return": {}, "id": "not-ours"}\n');
    server.writeRaw('{"return": {}}\n');
    assert.equal(await client.execute('ping'), 'pong');
    assert.equal(errors.length, 5);
    for (const e of errors) {
      assert.ok(e instanceof QmpProtocolError);
      assert.ok(e.message.includes(server.socketPath), e.message);
    }
    assert.match(errors[0].message, /invalid JSON/);
    assert.match(errors[1].message, /not a JSON object/);
    assert.match(errors[2].message, /unknown message/);
    assert.match(errors[3].message, /unknown id "not-ours"/);
    assert.match(errors[4].message, /without our id/);
  });

  test('protocol errors without a listener never throw', async () => {
    const { server, client } = await setup((s) => s.handle('ping', () => ({ return: 'pong' })));
    server.writeRaw('this is not json\n');
    assert.equal(await client.execute('ping'), 'pong');
  });

  test('an endless line is refused and the connection dropped', async () => {
    const server = await FakeQmpServer.start();
    servers.push(server);
    const client = await QmpClient.connect(server.socketPath, { maxLineBytes: 1024 });
    clients.push(client);
    const errors: Error[] = [];
    client.on('protocol-error', (e) => errors.push(e));
    const closed = once<Error | undefined>(client, 'close');
    server.writeRaw('{"return": "' + 'x'.repeat(4096));
    const reason = await closed;
    assert.ok(reason instanceof QmpProtocolError);
    assert.equal(errors.length, 1);
    await assert.rejects(client.execute('ping'), QmpClosedError);
  });
});

describe('QmpClient: send() (fire and forget)', () => {
  test('sends pipelined commands, drops their replies and reports errors as command-error', async () => {
    const { server, client } = await setup((s) => {
      s.handle('input-send-event', (cmd) =>
        (cmd.arguments?.events as unknown[]).length
          ? { return: {} }
          : { error: { class: 'GenericError', desc: 'no events' } },
      );
      s.handle('ping', () => ({ return: 'pong' }));
    });
    const cmdErrors: Error[] = [];
    const protoErrors: Error[] = [];
    client.on('command-error', (e) => cmdErrors.push(e));
    client.on('protocol-error', (e) => protoErrors.push(e));
    for (let i = 0; i < 50; i++) {
      client.send('input-send-event', { events: [{ type: 'rel', data: { axis: 'x', value: i } }] });
    }
    client.send('input-send-event', { events: [] });
    assert.equal(await client.execute('ping'), 'pong');
    assert.equal(server.commands.filter((c) => c.execute === 'input-send-event').length, 51);
    assert.equal(cmdErrors.length, 1);
    const e = cmdErrors[0] as QmpError;
    assert.ok(e instanceof QmpError);
    assert.equal(e.command, 'input-send-event');
    assert.equal(e.desc, 'no events');
    assert.deepEqual(protoErrors, []);
  });

  test('send() after close emits command-error instead of throwing', async () => {
    const { client } = await setup();
    await client.close();
    const err = once<Error>(client, 'command-error');
    client.send('input-send-event', { events: [] });
    assert.ok((await err) instanceof QmpClosedError);
  });
});

describe('QmpClient: closing', () => {
  test('the socket closing mid-reply rejects pending commands with QmpClosedError', async () => {
    const { server, client } = await setup((s) => s.handle('query-status', () => NO_REPLY));
    const closed = once<Error | undefined>(client, 'close');
    const p1 = client.execute('query-status');
    const p2 = client.execute('query-status');
    const cmd = await server.nextCommand('query-status');
    server.writeRaw(`{"return": {"status": "runn`);
    await sleep(20);
    server.dropConnections();
    await assert.rejects(p1, (err: Error) => {
      assert.ok(err instanceof QmpClosedError);
      assert.match(err.message, /middle of a reply/);
      assert.ok(err.message.includes(server.socketPath));
      return true;
    });
    await assert.rejects(p2, QmpClosedError);
    const reason = await closed;
    assert.ok(reason instanceof QmpClosedError);
    assert.ok(client.isClosed);
    await assert.rejects(client.execute('query-status'), QmpClosedError);
    assert.ok(cmd.id);
  });

  test('QEMU going away between commands emits close with a reason', async () => {
    const { server, client } = await setup();
    const closed = once<Error | undefined>(client, 'close');
    server.dropConnections();
    const reason = await closed;
    assert.ok(reason instanceof QmpClosedError);
    assert.doesNotMatch(reason.message, /middle of a reply/);
  });

  test('close() rejects pending commands, emits close(undefined) and is idempotent', async () => {
    const { client } = await setup((s) => s.handle('hang', () => NO_REPLY));
    const closeEvents: Array<Error | undefined> = [];
    client.on('close', (e) => closeEvents.push(e));
    const p = client.execute('hang');
    const c1 = client.close();
    const c2 = client.close();
    await assert.rejects(p, QmpClosedError);
    await Promise.all([c1, c2]);
    await client.close();
    assert.deepEqual(closeEvents, [undefined]);
    await assert.rejects(client.execute('hang'), QmpClosedError);
  });
});
