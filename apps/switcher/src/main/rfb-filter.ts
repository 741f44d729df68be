/**
 * The client-to-server half of an RFB (VNC) connection, filtered: the switcher only ever looks at a
 * VM's display, so nothing it (or a script in its page) sends may become input in the VM. Input
 * reaches VMs only through input-daemon, which knows which VM has the focus.
 *
 * Passed: the handshake (ProtocolVersion, the security type choice, ClientInit), SetPixelFormat,
 * SetEncodings and FramebufferUpdateRequest. Dropped: KeyEvent, PointerEvent, ClientCutText.
 * Anything else — an unknown message type, an unsupported security type, a malformed length — is a
 * protocol error: the caller closes the connection (the filter cannot know where the next message
 * starts, and a viewer that sends it is not one the switcher runs).
 *
 * RFC 6143, sections 7.1-7.5.
 */

export const RFB_SET_PIXEL_FORMAT = 0;
export const RFB_SET_ENCODINGS = 2;
export const RFB_FRAMEBUFFER_UPDATE_REQUEST = 3;
export const RFB_KEY_EVENT = 4;
export const RFB_POINTER_EVENT = 5;
export const RFB_CLIENT_CUT_TEXT = 6;

/**
 * The ExtendedClipboard pseudo-encoding (0xc0a1e5ce). Taken out of the client's SetEncodings: the
 * view never shares a clipboard with a VM, and a server told of it (QEMU is) starts a clipboard
 * exchange whose client half (a ClientCutText with a negative length, below) would only be dropped.
 */
export const RFB_ENCODING_EXTENDED_CLIPBOARD = -1063131698;

/** SetEncodings may list at most this many encodings (noVNC sends about 20). */
const MAX_ENCODINGS = 1024;
/** A ClientCutText longer than this is not skipped but refused (it would have to be buffered). */
const MAX_CUT_TEXT = 1 << 20;

export class RfbProtocolError extends Error {
  override readonly name = 'RfbProtocolError';
}

type Phase = 'version' | 'security' | 'vnc-auth' | 'client-init' | 'messages';

export interface RfbFilterResult {
  /** Bytes to forward to the server, in order. */
  forward: Buffer;
  /** Messages dropped in this chunk, by type (for the log). */
  dropped: number[];
}

export class RfbClientFilter {
  private phase: Phase = 'version';
  private minor = 8;
  private pending: Buffer = Buffer.alloc(0);
  /** Bytes of a dropped ClientCutText still to skip (its text may span chunks). */
  private skip = 0;

  /** Feeds bytes the client sent; returns what may go on to the server. Throws RfbProtocolError. */
  push(chunk: Buffer): RfbFilterResult {
    const out: Buffer[] = [];
    const dropped: number[] = [];
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    for (;;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, buf.length);
        this.skip -= n;
        buf = buf.subarray(n);
        if (this.skip > 0) break;
      }
      const n = this.nextLength(buf);
      if (n === null || buf.length < n) break;
      const msg = buf.subarray(0, n);
      buf = buf.subarray(n);
      if (this.phase === 'messages') {
        const type = msg[0];
        if (type === RFB_KEY_EVENT || type === RFB_POINTER_EVENT || type === RFB_CLIENT_CUT_TEXT) {
          dropped.push(type);
          // A negative length is the ExtendedClipboard form: |length| bytes follow.
          if (type === RFB_CLIENT_CUT_TEXT) this.skip = Math.abs(msg.readInt32BE(4));
          continue;
        }
        if (type === RFB_SET_ENCODINGS) {
          out.push(withoutExtendedClipboard(msg));
          continue;
        }
      } else {
        this.advanceHandshake(msg);
      }
      out.push(msg);
    }
    // Keep a copy: the chunk's buffer may be reused by the caller.
    this.pending = Buffer.from(buf);
    return { forward: Buffer.concat(out), dropped };
  }

  /** Length of the next unit in `buf` (a handshake step or a whole message), or null if unknown yet. */
  private nextLength(buf: Buffer): number | null {
    switch (this.phase) {
      case 'version':
        return 12;
      case 'security':
        return 1;
      case 'vnc-auth':
        return 16;
      case 'client-init':
        return 1;
      case 'messages':
        break;
    }
    if (buf.length < 1) return null;
    const type = buf[0];
    switch (type) {
      case RFB_SET_PIXEL_FORMAT:
        return 20;
      case RFB_SET_ENCODINGS: {
        if (buf.length < 4) return null;
        const count = buf.readUInt16BE(2);
        if (count > MAX_ENCODINGS)
          throw new RfbProtocolError(`SetEncodings with ${count} encodings (at most ${MAX_ENCODINGS})`);
        return 4 + 4 * count;
      }
      case RFB_FRAMEBUFFER_UPDATE_REQUEST:
        return 10;
      case RFB_KEY_EVENT:
        return 8;
      case RFB_POINTER_EVENT:
        return 6;
      case RFB_CLIENT_CUT_TEXT: {
        if (buf.length < 8) return null;
        // Signed: noVNC answers a server's ExtendedClipboard capabilities with a negative length
        // (RFB community extension). Refusing it closed every view every few seconds.
        const len = Math.abs(buf.readInt32BE(4));
        if (len > MAX_CUT_TEXT) throw new RfbProtocolError(`ClientCutText of ${len} bytes`);
        // The header only; the text is skipped as it arrives (see push).
        return 8;
      }
      default:
        throw new RfbProtocolError(`client message type ${type} is not allowed to reach a VM`);
    }
  }

  private advanceHandshake(msg: Buffer): void {
    switch (this.phase) {
      case 'version': {
        const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(msg.toString('latin1'));
        if (!m || Number(m[1]) !== 3)
          throw new RfbProtocolError(
            `not an RFB 3.x ProtocolVersion: ${JSON.stringify(msg.toString('latin1'))}`,
          );
        this.minor = Number(m[2]);
        // RFB 3.3: the server picks the security type and the client sends no choice.
        // (This relay serves vm-daemon's unix sockets, which have no password: type None.)
        this.phase = this.minor >= 7 ? 'security' : 'client-init';
        return;
      }
      case 'security':
        if (msg[0] === 1) this.phase = 'client-init';
        else if (msg[0] === 2) this.phase = 'vnc-auth';
        else throw new RfbProtocolError(`security type ${msg[0]} is not supported by the relay`);
        return;
      case 'vnc-auth':
        this.phase = 'client-init';
        return;
      case 'client-init':
        this.phase = 'messages';
        return;
      case 'messages':
        return;
    }
  }
}

/** A SetEncodings message with the ExtendedClipboard pseudo-encoding taken out (else unchanged). */
function withoutExtendedClipboard(msg: Buffer): Buffer {
  const count = msg.readUInt16BE(2);
  const kept: number[] = [];
  for (let i = 0; i < count; i++) {
    const enc = msg.readInt32BE(4 + 4 * i);
    if (enc !== RFB_ENCODING_EXTENDED_CLIPBOARD) kept.push(enc);
  }
  if (kept.length === count) return msg;
  const out = Buffer.alloc(4 + 4 * kept.length);
  out[0] = RFB_SET_ENCODINGS;
  out.writeUInt16BE(kept.length, 2);
  kept.forEach((e, i) => out.writeInt32BE(e, 4 + 4 * i));
  return out;
}
