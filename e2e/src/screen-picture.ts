/**
 * What the outer QEMU's screen shows, judged from a `screendump` alone (PPM, the format QEMU 7.2
 * writes by default): nothing inside the image is asked, so nothing inside is made to paint.
 */
import { readFileSync } from 'node:fs';

export interface Picture {
  width: number;
  height: number;
  /** RGB, 3 bytes per pixel, rows top to bottom. */
  rgb: Buffer;
}

export type Rgb = readonly [number, number, number];

export function parseHexColor(hex: string): Rgb {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) throw new Error(`not a #rrggbb color: ${hex}`);
  return [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)];
}

/** A binary PPM (P6, maxval 255), as QMP `screendump` writes it. */
export function readPpm(file: string): Picture {
  const b = readFileSync(file);
  const fields: string[] = [];
  let pos = 0;
  const isSpace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
  while (fields.length < 4) {
    if (pos >= b.length) throw new Error(`${file}: PPM header cut short`);
    if (isSpace(b[pos])) {
      pos++;
      continue;
    }
    if (b[pos] === 0x23) {
      while (pos < b.length && b[pos] !== 0x0a) pos++;
      continue;
    }
    const start = pos;
    while (pos < b.length && !isSpace(b[pos])) pos++;
    fields.push(b.subarray(start, pos).toString('latin1'));
  }
  pos++; // the single whitespace after maxval
  const [magic, w, h, max] = fields;
  const width = Number(w);
  const height = Number(h);
  if (magic !== 'P6' || max !== '255' || !(width > 0) || !(height > 0))
    throw new Error(`${file}: not a P6/255 PPM (${fields.join(' ')})`);
  const rgb = b.subarray(pos, pos + width * height * 3);
  if (rgb.length !== width * height * 3)
    throw new Error(`${file}: ${rgb.length} bytes of pixels, expected ${width * height * 3}`);
  return { width, height, rgb };
}

const near = (p: Picture, i: number, c: Rgb, tol: number) =>
  Math.abs(p.rgb[i] - c[0]) <= tol &&
  Math.abs(p.rgb[i + 1] - c[1]) <= tol &&
  Math.abs(p.rgb[i + 2] - c[2]) <= tol;

/** Share (0..1) of a grid of samples in a region (fractions of the screen) that show a color. */
export function colorShare(
  p: Picture,
  color: Rgb,
  region: { x0: number; x1: number; y0: number; y1: number },
  tol = 6,
): number {
  let n = 0;
  let hit = 0;
  const step = 6;
  for (let y = Math.floor(p.height * region.y0); y < p.height * region.y1; y += step)
    for (let x = Math.floor(p.width * region.x0); x < p.width * region.x1; x += step) {
      n++;
      if (near(p, (y * p.width + x) * 3, color, tol)) hit++;
    }
  return n ? hit / n : 0;
}

/** Pixels of exactly (within tol) this color anywhere on the screen. */
export function colorPixels(p: Picture, color: Rgb, tol = 3): number {
  let hit = 0;
  for (let i = 0; i < p.rgb.length; i += 3) if (near(p, i, color, tol)) hit++;
  return hit;
}

/**
 * The middle of the VM view: below the bar and the guest's big name, above the switch-progress
 * card. The test guest paints its whole 640x480 screen in its color, and the VM view scales that
 * to the view's height, so this band is the guest's color when (and only when) the VM's picture
 * is on screen. On the tiles screen it is the page background (the tiles end higher up).
 */
export const VM_VIEW_BAND = { x0: 0.2, x1: 0.8, y0: 0.6, y1: 0.78 } as const;

export type SeenPicture = { kind: 'vm'; id: string } | { kind: 'tiles' } | { kind: 'other'; why: string };

/**
 * What a person sees: a VM's picture (its color fills the VM view band), the tiles (no VM color
 * fills the band, and every VM's color shows on its tile's swatch), or something else — a blank
 * page, a crashed tab, a half-painted frame.
 */
export function classify(p: Picture, vms: ReadonlyArray<{ id: string; color: Rgb }>): SeenPicture {
  const shares = vms.map((v) => ({ id: v.id, share: colorShare(p, v.color, VM_VIEW_BAND) }));
  const full = shares.find((s) => s.share >= 0.7);
  if (full) return { kind: 'vm', id: full.id };
  const counts = vms.map((v) => ({ id: v.id, px: colorPixels(p, v.color) }));
  const partial = shares.some((s) => s.share > 0.05);
  // A tile's swatch and its initial's badge are each dozens of pixels of the VM's exact color.
  if (!partial && counts.every((c) => c.px >= 40)) return { kind: 'tiles' };
  return {
    kind: 'other',
    why: `VM view band ${shares.map((s) => `${s.id} ${(s.share * 100).toFixed(0)}%`).join(', ')}; pixels ${counts
      .map((c) => `${c.id} ${c.px}`)
      .join(', ')}`,
  };
}

export function percentile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/**
 * How many pixels differ between two screendumps of the same size (any channel by more than
 * `tol`): the test of "the screen changed" where no color tells what to expect (a key the toy
 * guest echoes on its own screen). Different sizes (a mode set) count as every pixel changed.
 */
export function pixelsChanged(a: Picture, b: Picture, tol = 8): number {
  if (a.width !== b.width || a.height !== b.height) return Math.max(a.width * a.height, b.width * b.height);
  let n = 0;
  for (let i = 0; i < a.rgb.length; i += 3)
    if (
      Math.abs(a.rgb[i] - b.rgb[i]) > tol ||
      Math.abs(a.rgb[i + 1] - b.rgb[i + 1]) > tol ||
      Math.abs(a.rgb[i + 2] - b.rgb[i + 2]) > tol
    )
      n++;
  return n;
}
