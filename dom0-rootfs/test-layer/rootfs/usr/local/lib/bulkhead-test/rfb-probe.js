// Test layer only: an RFB (VNC) client that tries to type into a VM through its display channel, as
// a compromised kiosk page could. The e2e runs it as the kiosk's user (bulkhead-ui) and checks that
// no guest saw anything; run as root straight at a VM's socket it is the control that shows the same
// messages do reach a guest when nothing filters them.
//
//   rfb-probe.js web <vm id>        through the switcher's web host (ws://127.0.0.2:8080/vnc/<id>,
//                                   with the token of /run/bulkhead-ui/token): what the kiosk opens
//   rfb-probe.js socket <path>      straight at a VM's VNC socket (/run/bulkhead/vms/<id>/vnc.sock)
//
// After the handshake it sends three KeyEvents pairs ('q' down/up), PointerEvents (a move, the left
// button down and up), a ClientCutText, then a FramebufferUpdateRequest (the channel must still
// show the VM), and last a message of an unknown type (the filter must close the connection).
// Prints one line: RFB-PROBE <json> — {connected, error?, name?, updateAfterInput?, closedAfterUnknown?}.
'use strict';
const net = require('node:net');
const { readFileSync } = require('node:fs');

const [mode, target] = process.argv.slice(2);
const WAIT_MS = 20000;

/** Bytes as they arrive from the server, read in exact amounts. */
class Incoming {
  constructor() {
    /** @type {Buffer} */
    this.buf = Buffer.alloc(0);
    /** @type {(() => void) | null} */
    this.wake = null;
    this.closed = false;
  }
  /** @param {Buffer} chunk */
  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    this.wake?.();
  }
  close() {
    this.closed = true;
    this.wake?.();
  }
  /** @param {number} n @param {number} ms @returns {Promise<Buffer>} */
  async read(n, ms = WAIT_MS) {
    const end = Date.now() + ms;
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`connection closed (wanted ${n} bytes, had ${this.buf.length})`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve(undefined);
        };
      });
      this.wake = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

/** @returns {Promise<{send: (b: Buffer) => void, incoming: Incoming, end: () => void}>} */
function open() {
  const incoming = new Incoming();
  if (mode === 'socket') {
    return new Promise((resolve, reject) => {
      const s = net.connect(target);
      s.once('error', reject);
      s.on('data', (d) => incoming.push(d));
      s.on('close', () => incoming.close());
      s.once('connect', () => resolve({ send: (b) => s.write(b), incoming, end: () => s.destroy() }));
    });
  }
  if (mode === 'web') {
    const WebSocket = require('/opt/bulkhead/node_modules/ws');
    const token = readFileSync('/run/bulkhead-ui/token', 'utf8').trim();
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(
        `ws://127.0.0.2:8080/vnc/${encodeURIComponent(target)}?token=${token}`,
        'binary',
      );
      ws.once('error', reject);
      ws.on('message', (/** @type {Buffer} */ d) => incoming.push(Buffer.from(d)));
      ws.on('close', () => incoming.close());
      ws.once('open', () => resolve({ send: (b) => ws.send(b), incoming, end: () => ws.terminate() }));
    });
  }
  throw new Error(`usage: rfb-probe.js web <vm id> | socket <path> (got ${mode})`);
}

const u16 = (/** @type {number} */ v) => [(v >> 8) & 255, v & 255];
const u32 = (/** @type {number} */ v) => [(v >>> 24) & 255, (v >> 16) & 255, (v >> 8) & 255, v & 255];
const keyEvent = (/** @type {boolean} */ down, /** @type {number} */ keysym) =>
  Buffer.from([4, down ? 1 : 0, 0, 0, ...u32(keysym)]);
const pointerEvent = (/** @type {number} */ mask, /** @type {number} */ x, /** @type {number} */ y) =>
  Buffer.from([5, mask, ...u16(x), ...u16(y)]);

async function main() {
  /** @type {Record<string, unknown>} */
  const report = { connected: false };
  let conn;
  try {
    conn = await open();
  } catch (e) {
    report.error =
      `${/** @type {NodeJS.ErrnoException} */ (e).code ?? ''} ${/** @type {Error} */ (e).message}`.trim();
    return report;
  }
  report.connected = true;
  const { send, incoming, end } = conn;
  try {
    // RFC 6143 7.1: version, security type None (QEMU's VMs here use none), ClientInit, ServerInit.
    await incoming.read(12);
    send(Buffer.from('RFB 003.008\n'));
    const count = (await incoming.read(1))[0];
    if (count === 0) throw new Error('the server refused the connection');
    const types = [...(await incoming.read(count))];
    if (!types.includes(1)) throw new Error(`no security type None offered: ${types.join(',')}`);
    send(Buffer.from([1]));
    if ((await incoming.read(4)).readUInt32BE(0) !== 0) throw new Error('security handshake failed');
    send(Buffer.from([1])); // ClientInit: shared
    const init = await incoming.read(24);
    const [width, height] = [init.readUInt16BE(0), init.readUInt16BE(2)];
    report.name = String(await incoming.read(init.readUInt32BE(20)));

    // What a person's typing and pointing would be, sent on the display channel.
    const q = 0x71;
    for (let i = 0; i < 3; i++) send(Buffer.concat([keyEvent(true, q), keyEvent(false, q)]));
    send(pointerEvent(0, Math.min(10, width - 1), Math.min(10, height - 1)));
    send(pointerEvent(1, Math.min(20, width - 1), Math.min(20, height - 1)));
    send(pointerEvent(0, Math.min(20, width - 1), Math.min(20, height - 1)));
    const text = Buffer.from('rfb-probe clipboard');
    send(Buffer.concat([Buffer.from([6, 0, 0, 0, ...u32(text.length)]), text]));

    // The channel still shows the VM: a full FramebufferUpdateRequest gets a FramebufferUpdate.
    // (Server messages before it — SetColourMapEntries, Bell, ServerCutText — are not expected from
    // QEMU with the default true-colour format; the first message type read must be 0.)
    send(Buffer.from([3, 0, 0, 0, 0, 0, ...u16(width), ...u16(height)]));
    report.updateAfterInput = (await incoming.read(1))[0] === 0;

    // An unknown message type: the filter cannot know its length and must end the connection.
    send(Buffer.from([200, 0, 0, 0, 0, 0, 0, 0]));
    const deadline = Date.now() + 10000;
    while (!incoming.closed && Date.now() < deadline) {
      incoming.buf = Buffer.alloc(0); // the rest of the framebuffer update, not read
      await new Promise((r) => setTimeout(r, 100));
    }
    report.closedAfterUnknown = incoming.closed;
  } catch (e) {
    report.error = /** @type {Error} */ (e).message;
  } finally {
    // Let the guest print what it may have got before the connection goes.
    await new Promise((r) => setTimeout(r, 500));
    end();
  }
  return report;
}

main().then(
  (r) => console.log(`RFB-PROBE ${JSON.stringify(r)}`),
  (e) => {
    console.log(`RFB-PROBE ${JSON.stringify({ connected: false, error: String(e) })}`);
  },
);
