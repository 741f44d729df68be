/**
 * PPM (P6) to PNG, for screenshots of Xen guests. Debian's qemu-system-xen (the device model of
 * HVM guests and the QEMU serving PV/PVH guests' virtual framebuffer) is built without libpng:
 * its `screendump` answers "Enable PNG support with libpng for screendump" to format 'png' (seen
 * in the image's Xen entry), so the Xen backend asks for QEMU's default PPM and encodes the PNG
 * that Vm1.Screenshot promises itself: 8-bit RGB, no filter, zlib at level 1 (a screen of one
 * colour and some text compresses well at any level; speed matters more, the switcher takes a
 * thumbnail of every running VM each second).
 */
import { deflateSync } from 'node:zlib';
import { BulkheadError } from '@bulkhead/contract';

/** A PPM that cannot be read: BackendFailed on the bus, naming what is wrong. */
export class PpmError extends BulkheadError {
  constructor(reason: string) {
    super('BackendFailed', `screendump: not a P6 PPM QEMU writes: ${reason}`);
  }
}

/** Largest width or height accepted (QEMU's displays are far smaller). */
const MAX_SIDE = 16384;

export function ppmToPng(ppm: Buffer): Buffer {
  const fields: string[] = [];
  let pos = 0;
  const isSpace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
  while (fields.length < 4) {
    if (pos >= ppm.length) throw new PpmError('the header is cut short');
    if (isSpace(ppm[pos])) {
      pos++;
      continue;
    }
    if (ppm[pos] === 0x23) {
      while (pos < ppm.length && ppm[pos] !== 0x0a) pos++;
      continue;
    }
    const start = pos;
    while (pos < ppm.length && !isSpace(ppm[pos]) && pos - start < 16) pos++;
    fields.push(ppm.toString('latin1', start, pos));
  }
  pos++; // the one whitespace byte after maxval
  const [magic, w, h, max] = fields;
  const width = Number(w);
  const height = Number(h);
  if (magic !== 'P6') throw new PpmError(`magic '${magic}', expected 'P6'`);
  if (max !== '255') throw new PpmError(`maxval '${max}', expected 255`);
  for (const [what, v] of [
    ['width', width],
    ['height', height],
  ] as const)
    if (!Number.isInteger(v) || v < 1 || v > MAX_SIDE)
      throw new PpmError(`${what} must be an integer from 1 to ${MAX_SIDE}`);
  const stride = width * 3;
  if (ppm.length - pos < stride * height)
    throw new PpmError(`${ppm.length - pos} bytes of pixels, expected ${stride * height}`);
  // Each row: filter type 0 (none), then its RGB bytes.
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++)
    ppm.copy(raw, y * (stride + 1) + 1, pos + y * stride, pos + (y + 1) * stride);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  // compression, filter method, interlace: 0
  return Buffer.concat([
    Buffer.from('89504e470d0a1a0a', 'hex'),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 1 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

let table: Uint32Array | null = null;

/** CRC-32 (ISO 3309, as PNG uses; node 20's zlib has no crc32). */
function crc32(buf: Buffer): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = table[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
