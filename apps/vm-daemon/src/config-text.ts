/**
 * Text that comes from a VM definition file and ends up in front of a person (a tile's name, an
 * error in ConfigErrors or LastError): what may appear in it, and how a value is quoted in an
 * error. Nothing here recurses into a value, so a hostile file (nested 100,000 levels, 20 MB of
 * text) costs a bounded amount of work and yields a bounded amount of text.
 */

/**
 * Characters refused in every text field shown to a person, and escaped whenever a value is
 * quoted in an error:
 *  - Cc: C0/C1 controls and DEL (NUL, newline, escape sequences for a terminal or a log);
 *  - Cf: format characters, among them the bidi overrides/embeddings/isolates/marks
 *    (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) that let a name display as another
 *    (a tile could lie about which VM it is), zero-width characters and the BOM;
 *  - Zl/Zp: line and paragraph separators; Cs: lone surrogates (not text);
 *  - Co/Cn: private-use and unassigned code points (no font shows them the same way);
 *  - blank letters that render as nothing (Hangul fillers, Braille blank, ...).
 */
const UNSAFE_CHAR = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}\u115f\u1160\u3164\uffa0\u2800]/u;
const UNSAFE_CHARS = new RegExp(UNSAFE_CHAR.source, 'gu');

/** Longest excerpt of a value quoted in an error (in code points, before escaping). */
export const MAX_EXCERPT_CHARS = 80;

/** `U+202E` for a code point. */
const codePoint = (c: string): string => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

/** The first unsafe character of `s` as `U+XXXX` and its index (in code points), or null. */
export function firstUnsafeChar(s: string): { char: string; at: number } | null {
  const m = UNSAFE_CHAR.exec(s);
  if (!m) return null;
  return { char: codePoint(m[0]), at: [...s.slice(0, m.index)].length };
}

/** `\u0000` (as JSON writes it) for a BMP character, `\u{e0001}` beyond. */
const escapeChar = (c: string): string => {
  const cp = c.codePointAt(0)!;
  return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, '0')}`;
};

/**
 * `s` cut to `max` code points (never inside a surrogate pair) with every unsafe character
 * escaped (`\u202e`); a cut says how long the whole was.
 */
export function excerpt(s: string, max = MAX_EXCERPT_CHARS): string {
  // Look at no more of a huge string than the excerpt can show.
  const head = s.length > max * 2 + 2 ? s.slice(0, max * 2 + 2) : s;
  const points = [...head];
  const shown = points.slice(0, max).join('');
  const escaped = shown.replace(UNSAFE_CHARS, escapeChar);
  return points.length > max || head.length < s.length ? `${escaped}… (${s.length} characters)` : escaped;
}

/**
 * A JSON value as an error quotes it: short, flat, escaped. Arrays and objects are described,
 * not printed (printing them is what recursed itself to death on a deeply nested value).
 */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return `"${excerpt(v)}"`;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `an array of ${v.length} item${v.length === 1 ? '' : 's'}`;
  if (typeof v === 'object') return 'an object';
  return typeof v;
}

/** A field name (an object key from the file, maybe hostile) as an error names it. */
export function fieldName(k: string): string {
  return k === '' ? '""' : excerpt(k, 40);
}

/** A path (from the file system or the file) as an error names it: escaped, bounded. */
export function pathText(p: string): string {
  return excerpt(p, 512);
}

/** Longest reason of one ConfigError; anything longer is cut (defence in depth). */
export const MAX_REASON_CHARS = 400;

/** A reason cut to MAX_REASON_CHARS with unsafe characters escaped. */
export function boundedReason(reason: string): string {
  return excerpt(reason, MAX_REASON_CHARS);
}
