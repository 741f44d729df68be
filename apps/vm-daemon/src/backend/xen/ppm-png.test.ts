import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inflateSync } from 'node:zlib';
import { decodePng } from '../../testing/png';
import { PpmError, ppmToPng } from './ppm-png';

/** A P6 PPM as QEMU's screendump writes it (header, then RGB rows). */
const ppm = (
  w: number,
  h: number,
  px: (x: number, y: number) => [number, number, number],
  header?: string,
) => {
  const body = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) body.set(px(x, y), (y * w + x) * 3);
  return Buffer.concat([Buffer.from(header ?? `P6\n${w} ${h}\n255\n`, 'latin1'), body]);
};

test('a PPM becomes a PNG with the same pixels (decoded by the tests own PNG reader)', () => {
  const px = (x: number, y: number): [number, number, number] => [x * 40, y * 50, (x + y) % 256];
  const png = ppmToPng(ppm(5, 3, px));
  const d = decodePng(png);
  assert.deepEqual([d.width, d.height, d.channels], [5, 3, 3]);
  for (let y = 0; y < 3; y++)
    for (let x = 0; x < 5; x++)
      assert.deepEqual(
        [...d.pixels.subarray((y * 5 + x) * 3, (y * 5 + x) * 3 + 3)],
        px(x, y),
        `pixel ${x},${y}`,
      );
  // Every chunk's CRC is right (a viewer refuses the file otherwise): recompute them independently.
  let off = 8;
  const types: string[] = [];
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    types.push(png.toString('ascii', off + 4, off + 8));
    const crc = png.readUInt32BE(off + 8 + len);
    assert.equal(crc, referenceCrc(png.subarray(off + 4, off + 8 + len)), `CRC of ${types.at(-1)}`);
    off += 12 + len;
  }
  assert.deepEqual(types, ['IHDR', 'IDAT', 'IEND']);
  assert.equal(inflateSync(png.subarray(8 + 25 + 8, png.length - 12 - 4)).length, (5 * 3 + 1) * 3);
});

test('a comment in the header is skipped; a screen-sized PPM converts', () => {
  const d = decodePng(ppmToPng(ppm(2, 1, () => [1, 2, 3], 'P6\n# QEMU\n2 1\n255\n')));
  assert.deepEqual([...d.pixels], [1, 2, 3, 1, 2, 3]);
  const big = decodePng(ppmToPng(ppm(800, 600, () => [0x2a, 0x6f, 0xdb])));
  assert.deepEqual([big.width, big.height, ...big.pixels.subarray(0, 3)], [800, 600, 0x2a, 0x6f, 0xdb]);
});

test('what is not a P6/255 PPM of the size it says is refused by name, never read past its end', () => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ['empty', Buffer.alloc(0), /header is cut short/],
    ['P3 (text)', Buffer.from('P3\n1 1\n255\n0 0 0\n'), /magic 'P3'/],
    ['16-bit', Buffer.from('P6\n1 1\n65535\n\0\0\0\0\0\0'), /maxval '65535'/],
    ['zero width', Buffer.from('P6\n0 1\n255\n'), /width must be an integer/],
    ['huge height', Buffer.from('P6\n1 99999999\n255\n\0\0\0'), /height must be an integer/],
    ['pixels cut short', ppm(4, 4, () => [0, 0, 0]).subarray(0, 30), /bytes of pixels, expected 48/],
  ];
  for (const [what, input, re] of cases)
    assert.throws(
      () => ppmToPng(input),
      (e: PpmError) => e instanceof PpmError && e.errorName === 'BackendFailed' && re.test(e.message),
      what,
    );
});

function referenceCrc(buf: Buffer): number {
  let c = ~0 >>> 0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
