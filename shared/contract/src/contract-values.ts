/**
 * Runtime checks behind the generated typed helpers (generated.ts): encoding and decoding the
 * a{sv} dicts the XML describes with org.bulkhead.Dict, and the plain-JSON views of properties the
 * switcher mirrors. Hand-written once here so the generated code stays declarations and tables.
 */
import { Variant } from 'dbus-next';

/** A value that does not match what the contract says: names the property/key and the problem. */
export class ContractValueError extends Error {
  constructor(
    /** e.g. "org.bulkhead.VmManager1.LastSwitch.outcome" */
    public readonly where: string,
    public readonly problem: string,
  ) {
    super(`${where}: ${problem}`);
    this.name = 'ContractValueError';
  }
}

/** One key of an org.bulkhead.Dict: its D-Bus signature, whether it may be absent, its enum values. */
export interface DictField {
  readonly key: string;
  readonly type: string;
  readonly optional: boolean;
  readonly enum?: readonly string[];
}

const describe = (v: unknown): string => {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
};

/** Split a D-Bus signature into its complete types (the signature is the contract's, so well-formed). */
function splitTypes(sig: string): string[] {
  const out: string[] = [];
  let i = 0;
  const one = (): void => {
    const c = sig[i++];
    if (c === 'a') one();
    else if (c === '(' || c === '{') {
      const close = c === '(' ? ')' : '}';
      while (sig[i] !== close) one();
      i++;
    }
  };
  while (i < sig.length) {
    const start = i;
    one();
    out.push(sig.slice(start, i));
  }
  return out;
}

const INT_RANGES: Record<string, [number, number]> = {
  y: [0, 0xff],
  n: [-0x8000, 0x7fff],
  q: [0, 0xffff],
  i: [-0x80000000, 0x7fffffff],
  u: [0, 0xffffffff],
  h: [0, 0xffffffff],
};
const BIG_RANGES: Record<string, [bigint, bigint]> = {
  x: [-(1n << 63n), (1n << 63n) - 1n],
  t: [0n, (1n << 64n) - 1n],
};

/**
 * Check `v` against the D-Bus type `sig` and return it in the form dbus-next sends and receives
 * (64-bit integers as bigint; a safe-integer number is accepted for them). Throws
 * ContractValueError naming `where` at the first mismatch.
 */
export function checkWireValue(sig: string, v: unknown, where: string): unknown {
  const bad = (what: string): never => {
    throw new ContractValueError(where, `expected ${what} (D-Bus ${sig}), got ${describe(v)}`);
  };
  const c = sig[0];
  if (c in INT_RANGES) {
    const [lo, hi] = INT_RANGES[c];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) bad(`an integer in ${lo}..${hi}`);
    return v;
  }
  if (c in BIG_RANGES) {
    const [lo, hi] = BIG_RANGES[c];
    const b = typeof v === 'bigint' ? v : typeof v === 'number' && Number.isSafeInteger(v) ? BigInt(v) : null;
    if (b === null || b < lo || b > hi) bad(`an integer in ${lo}..${hi}`);
    return b;
  }
  switch (c) {
    case 'd':
      if (typeof v !== 'number') bad('a number');
      return v;
    case 'b':
      if (typeof v !== 'boolean') bad('a boolean');
      return v;
    case 's':
    case 'o':
    case 'g':
      if (typeof v !== 'string') bad('a string');
      if (c === 'o' && !/^\/([A-Za-z0-9_]+(\/[A-Za-z0-9_]+)*)?$/.test(v as string)) bad('an object path');
      return v;
    case 'v':
      if (!(v instanceof Variant)) bad('a Variant');
      return v;
    case '(': {
      const types = splitTypes(sig.slice(1, -1));
      if (!Array.isArray(v) || v.length !== types.length) bad(`a ${types.length}-tuple`);
      return types.map((t, k) => checkWireValue(t, (v as unknown[])[k], `${where}[${k}]`));
    }
    case 'a': {
      const inner = sig.slice(1);
      if (inner === 'y') {
        if (!Buffer.isBuffer(v)) bad('a Buffer');
        return v;
      }
      if (inner[0] === '{') {
        const [kt, vt] = splitTypes(inner.slice(1, -1));
        if (!v || typeof v !== 'object' || Array.isArray(v)) bad('a dict');
        return Object.fromEntries(
          Object.entries(v as Record<string, unknown>).map(([k, x]) => [
            checkWireValue(kt, kt === 's' || kt === 'o' || kt === 'g' ? k : Number(k), `${where} key`),
            checkWireValue(vt, x, `${where}.${k}`),
          ]),
        );
      }
      if (!Array.isArray(v)) bad('an array');
      return (v as unknown[]).map((x, k) => checkWireValue(inner, x, `${where}[${k}]`));
    }
  }
  throw new ContractValueError(where, `unsupported D-Bus type ${sig}`);
}

function checkField(f: DictField, v: unknown, where: string): unknown {
  const out = checkWireValue(f.type, v, `${where}.${f.key}`);
  if (f.enum && !f.enum.includes(out as string))
    throw new ContractValueError(
      `${where}.${f.key}`,
      `expected one of ${f.enum.join(', ')}, got ${describe(v)}`,
    );
  return out;
}

/**
 * Build the a{sv} of a dict the XML describes: every declared key present (unless optional) and of
 * its type, no undeclared key. Throws ContractValueError naming the key.
 */
export function encodeDict(
  value: object,
  fields: readonly DictField[],
  where: string,
): Record<string, Variant> {
  const v = value as Record<string, unknown>;
  const out: Record<string, Variant> = {};
  for (const k of Object.keys(v))
    if (!fields.some((f) => f.key === k))
      throw new ContractValueError(`${where}.${k}`, 'not a key of this dict');
  for (const f of fields) {
    if (v[f.key] === undefined) {
      if (f.optional) continue;
      throw new ContractValueError(`${where}.${f.key}`, 'missing');
    }
    out[f.key] = new Variant(f.type, checkField(f, v[f.key], where));
  }
  return out;
}

/**
 * Read a dict the XML describes from what dbus-next delivers (Variants, or already unwrapped
 * values). Every declared key must be there and of its type; keys the contract does not declare
 * (a newer daemon's) are ignored. Throws ContractValueError naming the key.
 */
export function decodeDict(d: unknown, fields: readonly DictField[], where: string): Record<string, unknown> {
  if (!d || typeof d !== 'object' || Array.isArray(d))
    throw new ContractValueError(where, `expected a dict (a{sv}), got ${describe(d)}`);
  const r = d as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const raw = r[f.key];
    if (raw === undefined) {
      if (f.optional) continue;
      throw new ContractValueError(`${where}.${f.key}`, 'missing');
    }
    const value = raw instanceof Variant ? raw.value : raw;
    if (raw instanceof Variant && raw.signature !== f.type)
      throw new ContractValueError(`${where}.${f.key}`, `expected D-Bus ${f.type}, got ${raw.signature}`);
    out[f.key] = checkField(f, value, where);
  }
  return out;
}

/** A bus value as plain JSON: 64-bit integers as numbers, byte arrays as number arrays, Variants unwrapped. */
export function plainValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Variant) return plainValue(v.value);
  if (Buffer.isBuffer(v)) return [...v];
  if (Array.isArray(v)) return v.map(plainValue);
  if (v && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainValue(x)]));
  return v;
}

/** The type of a bus value as plainValue returns it (64-bit integers as numbers, Variants unwrapped). */
export type PlainValue<T> = T extends bigint
  ? number
  : T extends Buffer
    ? number[]
    : T extends Variant
      ? unknown
      : T extends object
        ? { -readonly [K in keyof T]: PlainValue<T[K]> }
        : T;

/**
 * Every property of an interface (its generated <Interface>Properties) as plain JSON under its
 * camelCase name (MemoryMiB -> memoryMiB), as a UI mirrors it: one field per property by construction.
 */
export type ViewOf<P> = { [K in keyof P & string as Uncapitalize<K>]: PlainValue<P[K]> };

/**
 * The view patch of an interface: from the properties a message carries (GetAll or
 * PropertiesChanged), the fields of ViewOf<its properties>, as plain JSON. Every property of the
 * contract has its field (the same camelCase rule as ViewOf); a property the contract does not know
 * (a newer daemon's) is not mapped.
 */
export function viewPatcher<V>(iface: {
  readonly properties: Readonly<Record<string, unknown>>;
}): (props: Record<string, unknown>) => Partial<V> {
  const fields = new Map(Object.keys(iface.properties).map((p) => [p, p[0].toLowerCase() + p.slice(1)]));
  return (props) => {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(props)) {
      const f = fields.get(k);
      if (f) out[f] = plainValue(v);
    }
    return out as Partial<V>;
  };
}
