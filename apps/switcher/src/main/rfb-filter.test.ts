import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RFB_ENCODING_EXTENDED_CLIPBOARD,
  RFB_FRAMEBUFFER_UPDATE_REQUEST,
  RFB_CLIENT_CUT_TEXT,
  RfbClientFilter,
} from './rfb-filter';

const HANDSHAKE = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1]), Buffer.from([1])]);
const FBUR = Buffer.from([RFB_FRAMEBUFFER_UPDATE_REQUEST, 1, 0, 0, 0, 0, 0, 64, 0, 48]);

function setEncodings(encs: number[]): Buffer {
  const b = Buffer.alloc(4 + 4 * encs.length);
  b[0] = 2;
  b.writeUInt16BE(encs.length, 2);
  encs.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
  return b;
}

function open(): RfbClientFilter {
  const f = new RfbClientFilter();
  assert.deepEqual(f.push(HANDSHAKE).forward, HANDSHAKE);
  return f;
}

test("noVNC's ExtendedClipboard answer (a ClientCutText with a negative length) is dropped, and the view goes on", () => {
  const f = open();
  // What noVNC sent in the image after QEMU offered its clipboard: length -8, 8 bytes of caps.
  const caps = Buffer.concat([
    Buffer.from([RFB_CLIENT_CUT_TEXT, 0, 0, 0]),
    Buffer.from([0xff, 0xff, 0xff, 0xf8]),
  ]);
  const r1 = f.push(Buffer.concat([caps, Buffer.from([0x01, 0, 0, 0x01, 0, 0])]));
  assert.deepEqual(r1.dropped, [RFB_CLIENT_CUT_TEXT]);
  assert.equal(r1.forward.length, 0);
  // The rest of its 8 bytes arrives in the next chunk, then a display request.
  const r2 = f.push(Buffer.concat([Buffer.from([0, 0x10]), FBUR]));
  assert.deepEqual(r2.forward, FBUR);
});

test('SetEncodings reaches the VM without the ExtendedClipboard pseudo-encoding, in order otherwise', () => {
  const f = open();
  const r = f.push(setEncodings([7, RFB_ENCODING_EXTENDED_CLIPBOARD, 0, -223]));
  assert.deepEqual(r.forward, setEncodings([7, 0, -223]));
  const same = setEncodings([7, 0, -223]);
  assert.deepEqual(f.push(same).forward, same);
});

test('a clipboard longer than the bound is refused either way round', () => {
  for (const len of [(1 << 20) + 1, -((1 << 20) + 1), -2147483648]) {
    const f = open();
    const m = Buffer.alloc(8);
    m[0] = RFB_CLIENT_CUT_TEXT;
    m.writeInt32BE(len, 4);
    assert.throws(() => f.push(m), /ClientCutText of \d+ bytes/);
  }
});
