/**
 * The web host's VNC relay carries a VM's display to the page, never input to the VM: the bytes a
 * fake VNC server (standing in for QEMU's VNC socket) receives through it are the handshake and the
 * display requests only.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startPrivateBus, type PrivateBus } from '@bulkhead/dbus';
import { startFakeDaemons, type FakeDaemons } from '../testing/fake-daemons';
import { startWebHost, type WebHost } from './web-host';

let bus: PrivateBus;
let fakes: FakeDaemons;
let host: WebHost;
let runDir: string;
let fakeVnc: { server: Server; received: Buffer[]; closed: number };
const logs: string[] = [];

/** A fake VNC server on the VM's socket: records every byte it is sent. */
function startFakeVncServer(path: string): Promise<typeof fakeVnc> {
  const state = { server: createServer(), received: [] as Buffer[], closed: 0 };
  state.server.on('connection', (s: Socket) => {
    s.write('RFB 003.008\n');
    s.on('data', (d) => state.received.push(Buffer.from(d)));
    s.on('close', () => state.closed++);
  });
  return new Promise((resolve) => state.server.listen(path, () => resolve(state)));
}

before(async () => {
  runDir = mkdtempSync(join(tmpdir(), 'bh-vnc-relay-'));
  mkdirSync(join(runDir, 'personal'));
  fakeVnc = await startFakeVncServer(join(runDir, 'personal', 'vnc.sock'));
  bus = await startPrivateBus({ mode: 'open' });
  fakes = await startFakeDaemons(bus.address, {});
  host = await startWebHost({
    busAddress: bus.address,
    vmRunDir: runDir,
    log: (m) => logs.push(m),
    thumbnailIntervalMs: 60_000,
  });
});

after(async () => {
  await host?.close();
  fakes?.close();
  await bus?.stop();
  await new Promise((r) => fakeVnc?.server.close(r));
  rmSync(runDir, { recursive: true, force: true });
});

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function openViewer(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${host.port}/vnc/personal?token=${host.token}`, 'binary');
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const u8 = (...b: number[]) => Buffer.from(b);
const u16 = (n: number) => u8(n >> 8, n & 255);
const u32 = (n: number) => u8((n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);

const handshake = Buffer.concat([Buffer.from('RFB 003.008\n'), u8(1) /* None */, u8(1) /* shared */]);
const setPixelFormat = Buffer.concat([u8(0, 0, 0, 0), u8(32, 24, 0, 1), u16(255), u16(255), u16(255)], 20);
const setEncodings = Buffer.concat([u8(2, 0), u16(3), u32(7), u32(0), u32(0xffffff21)]);
const fbUpdateRequest = (incremental: number) =>
  Buffer.concat([u8(3, incremental), u16(0), u16(0), u16(640), u16(480)]);
const keyEvent = Buffer.concat([u8(4, 1, 0, 0), u32(0x61)]); // 'a' down
const pointerEvent = Buffer.concat([u8(5, 1), u16(100), u16(200)]); // left button at 100,200
const cutText = Buffer.concat([u8(6, 0, 0, 0), u32(11), Buffer.from('hello world')]);

test(
  'key, pointer and clipboard messages never reach the VM; the handshake and display requests do',
  { timeout: 20_000 },
  async () => {
    fakeVnc.received.length = 0;
    const ws = await openViewer();
    try {
      const stream = Buffer.concat([
        handshake,
        setPixelFormat,
        setEncodings,
        fbUpdateRequest(0),
        keyEvent,
        pointerEvent,
        cutText,
        keyEvent,
        fbUpdateRequest(1),
      ]);
      // Cut at every few bytes: messages and the clipboard text span WebSocket frames.
      for (let i = 0; i < stream.length; i += 5) ws.send(stream.subarray(i, i + 5));
      const want = Buffer.concat([
        handshake,
        setPixelFormat,
        setEncodings,
        fbUpdateRequest(0),
        fbUpdateRequest(1),
      ]);
      await waitFor(() => Buffer.concat(fakeVnc.received).length >= want.length, 'the display requests');
      // Give anything that should not come a moment to arrive anyway.
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(Buffer.concat(fakeVnc.received), want);
      assert.equal(ws.readyState, ws.OPEN, 'dropping input does not end the display');
      assert.ok(logs.some((l) => /dropping input messages/.test(l)));
    } finally {
      ws.close();
    }
  },
);

test(
  'an unknown client message closes the connection and nothing of it reaches the VM',
  { timeout: 20_000 },
  async () => {
    fakeVnc.received.length = 0;
    const closedBefore = fakeVnc.closed;
    const ws = await openViewer();
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.send(Buffer.concat([handshake, fbUpdateRequest(0)]));
    await waitFor(() => Buffer.concat(fakeVnc.received).length >= handshake.length + 10, 'the handshake');
    // 255: QEMU's extended messages (e.g. its extended key event): also input, and not a known type.
    ws.send(Buffer.concat([u8(255, 0), u16(1), u32(1), u32(0x1e)]));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const code = await Promise.race([
      closed,
      new Promise((r) => (timer = setTimeout(() => r('still open'), 5000))),
    ]);
    clearTimeout(timer);
    assert.equal(code, 1008);
    await waitFor(() => fakeVnc.closed > closedBefore, 'the VM side closed');
    assert.deepEqual(Buffer.concat(fakeVnc.received), Buffer.concat([handshake, fbUpdateRequest(0)]));
  },
);
