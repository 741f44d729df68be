/**
 * The one boundary every value passes before it goes on the bus (method replies, property values,
 * signal arguments, error messages). Why: a D-Bus string may not contain NUL and must be valid
 * UTF-8, an object path must match the spec's grammar, and containers nest at most 64 deep. A
 * value that breaks these rules either makes dbus-next throw while marshalling (so the call was
 * never answered) or, for an object path, makes dbus-daemon drop the whole connection. Daemons
 * build strings from files, guests and other processes, so none of that is checked here as a
 * promise of theirs: whatever they hand over is made valid here, visibly (U+FFFD, a truncation
 * marker, a placeholder path) rather than silently dropped.
 */
import { Variant } from 'dbus-next';

/** What replaces a NUL character or an unpaired UTF-16 surrogate (invalid UTF-8 once encoded). */
export const REPLACEMENT_CHARACTER = '\uFFFD';
/** Default cap of one string in a property value, a signal argument or an error message. */
export const TEXT_MAX_CHARS = 4096;
/**
 * Cap of one string in a method's reply: the caller asked for it (Introspect's XML, a handle), so
 * it may be longer than free text, but never unbounded.
 */
export const REPLY_MAX_CHARS = 1 << 20;
/**
 * Deepest nesting of containers (arrays, structs, dict entries, variants) accepted: the D-Bus
 * specification allows 32 array levels plus 32 struct levels, 64 in all.
 */
export const MAX_DEPTH = 64;
/** Stands in for an object path that is not valid (a daemon bug), so the message stays valid. */
export const INVALID_OBJECT_PATH = '/org/bulkhead/InvalidPath';

const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const OBJECT_PATH = /^\/$|^(\/[A-Za-z0-9_]+)+$/;

/** Thrown when a value cannot be made valid (too deep, not the declared type's shape). */
export class BusValueError extends Error {}

export interface BusValueOptions {
  /** Longest string kept, in UTF-16 code units; longer ones end with a "… (N more characters)" marker. */
  maxChars: number;
  /** Called once per value that had to be changed, with what and where (for the daemon's log). */
  onChange?: (what: string) => void;
}

export function isValidObjectPath(p: string): boolean {
  return OBJECT_PATH.test(p);
}

/**
 * A valid D-Bus string for `s`: NUL and unpaired surrogates become U+FFFD; a string longer than
 * `maxChars` is cut (never inside a surrogate pair) and ends with "… (N more characters)".
 */
export function busString(s: string, maxChars: number = TEXT_MAX_CHARS): string {
  let out = s;
  if (out.length > maxChars) {
    let cut = Math.max(0, maxChars);
    const c = out.charCodeAt(cut - 1);
    if (cut > 0 && c >= 0xd800 && c <= 0xdbff) cut--;
    out = `${out.slice(0, cut)}… (${s.length - cut} more characters)`;
  }
  return out.replace(/\0/g, REPLACEMENT_CHARACTER).replace(UNPAIRED_SURROGATE, REPLACEMENT_CHARACTER);
}

/** Split a D-Bus signature into its complete types ("sa{sv}" → ["s", "a{sv}"]). */
export function completeTypes(sig: string): string[] {
  const out: string[] = [];
  let i = 0;
  const one = (): void => {
    const c = sig[i++];
    if (c === undefined) throw new BusValueError(`signature '${sig}' ends early`);
    if (c === 'a') return one();
    if (c === '(' || c === '{') {
      const close = c === '(' ? ')' : '}';
      while (sig[i] !== close) {
        if (i >= sig.length) throw new BusValueError(`signature '${sig}' has an unclosed '${c}'`);
        one();
      }
      i++;
      return;
    }
    if (!'ybnqiuxtdsogvh'.includes(c)) throw new BusValueError(`signature '${sig}' has unknown type '${c}'`);
  };
  while (i < sig.length) {
    const start = i;
    one();
    out.push(sig.slice(start, i));
  }
  return out;
}

/**
 * `value` of D-Bus type `type`, made valid for the bus (see busString, isValidObjectPath), recursing
 * into arrays, dicts, structs and variants up to MAX_DEPTH. Values of the wrong shape are left as
 * they are (the marshaller reports them); only nesting beyond MAX_DEPTH throws BusValueError.
 */
export function busValue(type: string, value: unknown, opts: BusValueOptions, depth = 0): unknown {
  if (depth > MAX_DEPTH)
    throw new BusValueError(`value nests deeper than ${MAX_DEPTH} containers (type ${type})`);
  switch (type[0]) {
    case 's': {
      if (typeof value !== 'string') return value;
      const out = busString(value, opts.maxChars);
      if (out !== value)
        opts.onChange?.(`a string of ${value.length} characters (NUL, unpaired surrogate or too long)`);
      return out;
    }
    case 'o': {
      if (typeof value !== 'string' || isValidObjectPath(value)) return value;
      opts.onChange?.(`invalid object path ${JSON.stringify(busString(value, 200))}`);
      return INVALID_OBJECT_PATH;
    }
    case 'v': {
      if (!(value instanceof Variant)) return value;
      const inner = busValue(value.signature, value.value, opts, depth + 1);
      return inner === value.value ? value : new Variant(value.signature, inner);
    }
    case '(': {
      if (!Array.isArray(value)) return value;
      const types = completeTypes(type.slice(1, -1));
      return value.map((x, i) => (i < types.length ? busValue(types[i], x, opts, depth + 1) : x));
    }
    case 'a': {
      const inner = type.slice(1);
      if (inner === 'y') return value; // a Buffer of bytes: any byte is valid
      if (inner[0] === '{') {
        if (!value || typeof value !== 'object' || Array.isArray(value)) return value;
        const [kt, vt] = completeTypes(inner.slice(1, -1));
        const out: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
          const key = kt === 's' || kt === 'o' ? (busValue(kt, k, opts, depth + 1) as string) : k;
          out[key] = busValue(vt, v, opts, depth + 1);
        }
        return out;
      }
      if (!Array.isArray(value)) return value;
      return value.map((x) => busValue(inner, x, opts, depth + 1));
    }
    default:
      return value;
  }
}

/** A message body of `signature`, every argument made valid by busValue. */
export function busBody(signature: string, body: unknown[], opts: BusValueOptions): unknown[] {
  const types = completeTypes(signature);
  return body.map((v, i) => (i < types.length ? busValue(types[i], v, opts) : v));
}
