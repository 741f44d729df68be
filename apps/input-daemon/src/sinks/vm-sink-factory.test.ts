/**
 * Which sink a VM gets, with a fake QMP connector: the fast path where QEMU takes it, else QMP
 * input-send-event on a connection of its own (never the one the refused attempt ran on).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { EV_KEY } from '../input-event';
import type { InputSink } from './sink';
import { QmpSink, type QmpConnection } from './qmp-sink';
import { vmSinkFactory } from './vm-sink-factory';

/** A fake QMP connection: counts input-send-event commands; a closed one answers nothing, as a socket QEMU closed. */
class FakeQmpConnection extends EventEmitter implements QmpConnection {
  closed = false;
  sent = 0;
  send(): void {}
  async execute(cmd: string): Promise<unknown> {
    if (this.closed) return new Promise(() => undefined);
    if (cmd === 'input-send-event') this.sent++;
    return {};
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.emit('close');
  }
}

const KEY_Z = [{ type: EV_KEY, code: 44, value: 1 }];

function fakeConnector() {
  const opened: FakeQmpConnection[] = [];
  return {
    opened,
    connect: async () => {
      const c = new FakeQmpConnection();
      opened.push(c);
      return c;
    },
  };
}

test('a fast path refused after QEMU closed its connection: the QMP fallback sends on a new connection, and the key arrives', async () => {
  const { opened, connect } = fakeConnector();
  const warnings: string[] = [];
  const factory = vmSinkFactory({
    connect,
    fastPath: async (_t, _id, qmp) => {
      // What ci9 saw: QEMU closed the connection in the middle of the fast path's set-up.
      await qmp.close();
      throw new Error("GenericError: attempt to add duplicate property 'bulkhead-input-personal'");
    },
    warn: (m) => warnings.push(m),
  });
  const sink = await factory.forVm('/vm/personal', 'personal', '/run/qmp-input.sock');
  assert.ok(sink instanceof QmpSink);
  assert.equal(sink.alive, true);
  assert.equal(opened.length, 2, 'a second connection for the fallback');
  assert.equal(opened[0].closed, true);
  sink.write(KEY_Z);
  assert.equal(await (sink as QmpSink).delivered(), true, 'the key was answered by QEMU');
  assert.equal(opened[1].sent, 1, 'the key went on the second connection');
  assert.match(
    warnings[0],
    /\/vm\/personal: uinput fast path failed \(GenericError: attempt to add duplicate/,
  );
});

test('a fast path refused on an open connection: that connection is closed, not leaked, and the fallback has its own', async () => {
  const { opened, connect } = fakeConnector();
  const sink = await vmSinkFactory({
    connect,
    fastPath: async () => {
      throw new Error('duplicate id');
    },
    warn: () => undefined,
  }).forVm('/vm/business', 'business', '/s');
  assert.deepEqual(
    opened.map((c) => c.closed),
    [true, false],
  );
  sink.write(KEY_Z);
  assert.equal(await (sink as QmpSink).delivered(), true);
  assert.equal(opened[1].sent, 1);
});

test('the fast path taken: one connection, kept by the fast path; no uinput (a host): QMP on one connection', async () => {
  const fast = fakeConnector();
  const fastSink = { alive: true } as unknown as InputSink;
  const got = await vmSinkFactory({
    connect: fast.connect,
    fastPath: async () => fastSink,
    warn: () => undefined,
  }).forVm('/vm/p', 'p', '/s');
  assert.equal(got, fastSink);
  assert.equal(fast.opened.length, 1);
  assert.equal(fast.opened[0].closed, false);

  const host = fakeConnector();
  const qmpSink = await vmSinkFactory({ connect: host.connect, fastPath: null, warn: () => undefined }).forVm(
    '/vm/p',
    'p',
    '/s',
  );
  assert.ok(qmpSink instanceof QmpSink);
  assert.equal(host.opened.length, 1);
});
