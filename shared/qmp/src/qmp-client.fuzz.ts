/**
 * Fuzz targets for QmpClient against FakeQmpServer (fixed seed in qmp-client.fuzz.test.ts, random
 * under `npm run fuzz`). While a command is pending, the "QEMU" side answers with a scripted mix
 * of: a good reply, an error reply, unknown events, truncated JSON, random bytes, a reply to an
 * unknown id, a line longer than the client accepts, a socket closed in the middle of a reply,
 * and silence (the command times out, the reply comes late). Properties: every command settles
 * with its value or a QmpError / QmpProtocolError / QmpClosedError / QmpTimeoutError; nothing is
 * thrown uncaught; after each step the client either works (the next command succeeds) or is
 * closed cleanly (isClosed, and commands reject with QmpClosedError).
 * A second target fuzzes the greeting: connect() resolves or rejects with one of those errors.
 */
import fc from 'fast-check';
import { checkProperty, type FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { FakeQmpServer, NO_REPLY } from './testing/fake-qmp-server';
import { QmpClient, QmpClosedError, QmpError, QmpProtocolError, QmpTimeoutError } from './qmp-client';

const MAX_LINE = 4096;
const QMP_ERRORS = [QmpError, QmpProtocolError, QmpClosedError, QmpTimeoutError];

type Action =
  | { kind: 'ok' }
  | { kind: 'error'; cls: string; desc: string }
  | { kind: 'events'; events: Array<{ name: string; data: unknown }> }
  | { kind: 'garbage'; text: string }
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'truncated'; cut: number }
  | { kind: 'unknown-id'; id: unknown }
  | { kind: 'huge' }
  | { kind: 'close-mid-reply'; cut: number }
  | { kind: 'late' };

export const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: 'ok' as const }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('error' as const), cls: fc.string(), desc: fc.string() }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('events' as const),
      events: fc.array(
        fc.record({
          name: fc.oneof(fc.constantFrom('SHUTDOWN', 'STOP', 'RESUME', 'X_UNKNOWN'), fc.string()),
          data: fc.jsonValue({ maxDepth: 2 }),
        }),
        { minLength: 1, maxLength: 3 },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('garbage' as const),
      text: fc.oneof(
        fc.string(),
        fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncated' as const), cut: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('unknown-id' as const),
      id: fc.oneof(fc.constant(null), fc.string(), fc.integer()),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'huge' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('close-mid-reply' as const), cut: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'late' as const }) },
);

const STATUS = { status: 'running', running: true };

function isQmpError(e: unknown): boolean {
  return QMP_ERRORS.some((C) => e instanceof C);
}

/** Collects uncaught exceptions / unhandled rejections while a property runs. */
function trapUncaught(): { problems: unknown[]; release(): void } {
  const problems: unknown[] = [];
  const onErr = (e: unknown) => problems.push(e);
  process.on('uncaughtException', onErr);
  process.on('unhandledRejection', onErr);
  return {
    problems,
    release: () => {
      process.off('uncaughtException', onErr);
      process.off('unhandledRejection', onErr);
    },
  };
}

async function runScript(server: FakeQmpServer, actions: Action[]): Promise<void> {
  const client = await QmpClient.connect(server.socketPath, {
    timeoutMs: 2000,
    maxLineBytes: MAX_LINE,
    commandTimeoutMs: 3000,
  });
  let protocolErrors = 0;
  client.on('protocol-error', () => protocolErrors++);
  client.on('event', () => undefined);
  try {
    for (const a of actions) {
      const pending = client
        .execute('query-status', undefined, { timeoutMs: a.kind === 'late' ? 30 : 3000 })
        .then(
          (v) => ({ ok: true as const, v }),
          (e: unknown) => ({ ok: false as const, e }),
        );
      const cmd = await server.nextCommand('query-status');
      const good = JSON.stringify({ return: STATUS, id: cmd.id });
      const conn = cmd.conn;
      let expect: 'value' | 'QmpError' | 'closed' | 'timeout' = 'value';
      switch (a.kind) {
        case 'ok':
          server.reply(cmd, { return: STATUS });
          break;
        case 'error':
          server.reply(cmd, { error: { class: a.cls, desc: a.desc } });
          expect = 'QmpError';
          break;
        case 'events':
          for (const ev of a.events)
            server.writeRaw(JSON.stringify({ event: ev.name, data: ev.data, timestamp: 'x' }) + '\n', conn);
          server.reply(cmd, { return: STATUS });
          break;
        case 'garbage':
          server.writeRaw(a.text.replace(/\n/g, ' ').slice(0, MAX_LINE - 2) + '\n', conn);
          server.reply(cmd, { return: STATUS });
          break;
        case 'bytes':
          server.writeRaw(Buffer.concat([Buffer.from(a.bytes), Buffer.from('\n')]), conn);
          server.reply(cmd, { return: STATUS });
          break;
        case 'truncated':
          server.writeRaw(good.slice(0, a.cut % good.length) + '\n', conn);
          server.reply(cmd, { return: STATUS });
          break;
        case 'unknown-id':
          server.writeRaw(JSON.stringify({ return: {}, id: a.id }) + '\n', conn);
          server.reply(cmd, { return: STATUS });
          break;
        case 'huge':
          server.writeRaw('{"return":"' + 'A'.repeat(MAX_LINE + 10), conn);
          expect = 'closed';
          break;
        case 'close-mid-reply':
          server.writeRaw(good.slice(0, a.cut % good.length), conn);
          conn.end(() => conn.destroy());
          expect = 'closed';
          break;
        case 'late':
          expect = 'timeout';
          break;
      }
      const r = await pending;
      if (a.kind === 'late') server.reply(cmd, { return: STATUS }); // dropped quietly
      if (r.ok && expect !== 'value') throw new Error(`${a.kind}: resolved, expected ${expect}`);
      if (!r.ok) {
        if (!isQmpError(r.e))
          throw new Error(`${a.kind}: rejected with a non-QMP error: ${(r.e as Error)?.stack ?? r.e}`);
        if (expect === 'value')
          throw new Error(`${a.kind}: rejected (${(r.e as Error).message}), expected the value`);
        if (expect === 'QmpError' && !(r.e instanceof QmpError))
          throw new Error(`${a.kind}: ${(r.e as Error).name}`);
        if (expect === 'closed' && !(r.e instanceof QmpClosedError))
          throw new Error(`${a.kind}: ${(r.e as Error).name}`);
        if (expect === 'timeout' && !(r.e instanceof QmpTimeoutError))
          throw new Error(`${a.kind}: ${(r.e as Error).name}`);
      } else if (JSON.stringify(r.v) !== JSON.stringify(STATUS))
        throw new Error(`${a.kind}: wrong value ${JSON.stringify(r.v)}`);
      if (expect === 'closed') {
        // Closed cleanly: the state says so and every later command fails at once.
        await new Promise((res) => setImmediate(res));
        if (!client.isClosed) throw new Error(`${a.kind}: client not closed`);
        const after = await client.execute('query-status').then(
          () => null,
          (e: unknown) => e,
        );
        if (!(after instanceof QmpClosedError))
          throw new Error(`${a.kind}: command after close: ${String(after)}`);
        return;
      }
      if (client.isClosed) throw new Error(`${a.kind}: client closed unexpectedly`);
    }
    // Still usable at the end.
    const last = client.execute('query-status');
    server.reply(await server.nextCommand('query-status'), { return: STATUS });
    await last;
  } finally {
    await client.close();
  }
}

export async function runQmpRepliesFuzz(opts: Parameters<FuzzTarget['run']>[0]) {
  const server = await FakeQmpServer.start();
  server.handle('query-status', () => NO_REPLY);
  const trap = trapUncaught();
  try {
    const property = fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 6 }), async (actions) => {
      await runScript(server, actions);
      if (trap.problems.length) throw new Error(`uncaught: ${String(trap.problems.splice(0)[0])}`);
    });
    return await checkProperty(property, opts);
  } finally {
    trap.release();
    await server.close();
  }
}

/** connect() against an arbitrary greeting: a client, or a QMP error — within the timeout. */
export const greetingProperty = fc.asyncProperty(
  fc.oneof(
    fc.jsonValue({ maxDepth: 3 }).map((v) => (JSON.stringify(v) ?? '') + '\r\n'),
    fc.string().map((s) => s + '\n'),
    fc
      .record({
        QMP: fc.record({ version: fc.jsonValue(), capabilities: fc.jsonValue() }, { requiredKeys: [] }),
      })
      .map((g) => JSON.stringify(g) + '\n'),
    fc.string(), // no newline: nothing complete ever arrives
  ),
  async (greeting) => {
    const server = await FakeQmpServer.start({ greeting });
    try {
      const r = await QmpClient.connect(server.socketPath, { timeoutMs: 100 }).then(
        async (c) => (await c.close(), null),
        (e: unknown) => e,
      );
      if (r !== null && !isQmpError(r)) throw new Error(`connect rejected with ${(r as Error)?.stack ?? r}`);
    } finally {
      await server.close();
    }
  },
);

export const fuzzTargets: FuzzTarget[] = [
  { name: 'vm-daemon: QMP replies and events', run: runQmpRepliesFuzz },
  { name: 'vm-daemon: QMP greeting', run: (o) => checkProperty(greetingProperty, o) },
];
