/** The outer screendump's judges, on pictures made here (no image boots in this file). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pixelsChanged, type Picture } from './screen-picture';

function picture(width: number, height: number, rgb: [number, number, number]): Picture {
  const buf = Buffer.alloc(width * height * 3);
  for (let i = 0; i < buf.length; i += 3) buf.set(rgb, i);
  return { width, height, rgb: buf };
}

test('pixelsChanged counts the pixels a key echo drew, and ignores a difference within the tolerance', () => {
  const before = picture(40, 30, [0x2a, 0x6f, 0xdb]);
  const after = picture(40, 30, [0x2a, 0x6f, 0xdb]);
  assert.equal(pixelsChanged(before, after), 0);
  // A 5x2 run of light text pixels in the middle, and one pixel off by 3 (scaling noise).
  for (let y = 10; y < 12; y++)
    for (let x = 10; x < 15; x++) after.rgb.set([0xee, 0xee, 0xee], (y * 40 + x) * 3);
  after.rgb[0] = 0x2d;
  assert.equal(pixelsChanged(before, after), 10);
  assert.equal(pixelsChanged(before, after, 2), 11);
});

test('pixelsChanged: a screen whose size changed (a mode set) changed everywhere', () => {
  assert.equal(pixelsChanged(picture(40, 30, [0, 0, 0]), picture(80, 60, [0, 0, 0])), 80 * 60);
});
