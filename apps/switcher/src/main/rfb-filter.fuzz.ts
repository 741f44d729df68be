/**
 * Fuzz target for the VNC relay's client-to-server filter (fixed seed in rfb-filter.fuzz.test.ts,
 * random under `npm run fuzz`): a handshake, then random RFB client messages — display requests,
 * key, pointer and clipboard events — and random garbage, cut into random chunks. Whatever the UI
 * (or a script in its page) sends, the filter either forwards only the handshake and display
 * requests, re-parsed here by an independent reader, or refuses with RfbProtocolError; no key,
 * pointer or clipboard byte ever reaches a VM, and a well-formed stream is never refused.
 */
import fc from 'fast-check';
import { checkProperty, type FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { RfbClientFilter, RfbProtocolError } from './rfb-filter';

const HANDSHAKE = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1]), Buffer.from([1])]);

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

function msg(type: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type]), body]);
}

/** Well-formed client messages: [bytes, isInput]. */
const clientMessage: fc.Arbitrary<[Buffer, boolean]> = fc.oneof(
  fc
    .uint8Array({ minLength: 19, maxLength: 19 })
    .map((b): [Buffer, boolean] => [msg(0, Buffer.from(b)), false]),
  fc
    .array(fc.integer({ min: -2147483648, max: 2147483647 }), { maxLength: 30 })
    .map((encs): [Buffer, boolean] => {
      const b = Buffer.alloc(3 + 4 * encs.length);
      b.writeUInt16BE(encs.length, 1);
      encs.forEach((e, i) => b.writeInt32BE(e, 3 + 4 * i));
      return [msg(2, b), false];
    }),
  fc.tuple(u8, u16, u16, u16, u16).map(([inc, x, y, w, h]): [Buffer, boolean] => {
    const b = Buffer.alloc(9);
    b[0] = inc & 1;
    b.writeUInt16BE(x, 1);
    b.writeUInt16BE(y, 3);
    b.writeUInt16BE(w, 5);
    b.writeUInt16BE(h, 7);
    return [msg(3, b), false];
  }),
  fc.tuple(u8, u32).map(([down, key]): [Buffer, boolean] => {
    const b = Buffer.alloc(7);
    b[0] = down & 1;
    b.writeUInt32BE(key, 3);
    return [msg(4, b), true];
  }),
  fc.tuple(u8, u16, u16).map(([mask, x, y]): [Buffer, boolean] => {
    const b = Buffer.alloc(5);
    b[0] = mask;
    b.writeUInt16BE(x, 1);
    b.writeUInt16BE(y, 3);
    return [msg(5, b), true];
  }),
  fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.boolean()).map(([text, extended]): [Buffer, boolean] => {
    const b = Buffer.alloc(7 + text.length);
    // ExtendedClipboard (noVNC's answer to QEMU's clipboard capabilities): a negative length.
    b.writeInt32BE(extended ? -text.length : text.length, 3);
    Buffer.from(text).copy(b, 7);
    return [msg(6, b), true];
  }),
);

/** An independent reader of client messages (RFC 6143 7.5): the types of what was forwarded. */
function forwardedTypes(stream: Buffer): number[] {
  if (!stream.subarray(0, HANDSHAKE.length).equals(HANDSHAKE)) throw new Error('handshake altered');
  const types: number[] = [];
  let i = HANDSHAKE.length;
  while (i < stream.length) {
    const t = stream[i];
    const len =
      t === 0
        ? 20
        : t === 2
          ? 4 + 4 * stream.readUInt16BE(i + 2)
          : t === 3
            ? 10
            : t === 4
              ? 8
              : t === 5
                ? 6
                : -1;
    if (t === 6) throw new Error('a ClientCutText was forwarded');
    if (len < 0) throw new Error(`forwarded an unknown message type ${t}`);
    types.push(t);
    i += len;
  }
  if (i !== stream.length) throw new Error('forwarded a partial message');
  return types;
}

/** Feeds `bytes` in chunks cut at `cuts`; the concatenated forward, or the protocol error. */
function run(bytes: Buffer, cuts: number[]): Buffer | RfbProtocolError {
  const filter = new RfbClientFilter();
  const out: Buffer[] = [];
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let at = 0;
  try {
    for (const p of [...points, bytes.length]) {
      out.push(filter.push(bytes.subarray(at, p)).forward);
      at = p;
    }
  } catch (e) {
    if (e instanceof RfbProtocolError) return e;
    throw e;
  }
  return Buffer.concat(out);
}

export const fuzzTargets: FuzzTarget[] = [
  {
    name: 'switcher: RFB client stream through the relay filter (well-formed)',
    run: (opts) =>
      checkProperty(
        fc.property(
          fc.array(clientMessage, { maxLength: 40 }),
          fc.array(fc.nat(), { maxLength: 12 }),
          (msgs, cuts) => {
            const r = run(Buffer.concat([HANDSHAKE, ...msgs.map(([b]) => b)]), cuts);
            if (r instanceof RfbProtocolError)
              throw new Error(`a well-formed stream was refused: ${r.message}`);
            const types = forwardedTypes(r);
            const want = msgs.filter(([, input]) => !input).map(([b]) => b[0]);
            if (types.join() !== want.join()) throw new Error(`forwarded ${types} instead of ${want}`);
          },
        ),
        opts,
      ),
  },
  {
    name: 'switcher: RFB client stream through the relay filter (garbage mixed in)',
    run: (opts) =>
      checkProperty(
        fc.property(
          fc.array(
            fc.oneof(
              clientMessage.map(([b]) => b),
              fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b)),
            ),
            {
              maxLength: 30,
            },
          ),
          fc.array(fc.nat(), { maxLength: 12 }),
          (parts, cuts) => {
            const r = run(Buffer.concat([HANDSHAKE, ...parts]), cuts);
            if (r instanceof RfbProtocolError) return; // refused: the relay closes the connection
            for (const t of forwardedTypes(r))
              if (t !== 0 && t !== 2 && t !== 3) throw new Error(`forwarded message type ${t}`);
          },
        ),
        opts,
      ),
  },
];
