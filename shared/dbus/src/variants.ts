import { Variant } from 'dbus-next';
import { BulkheadError, type VariantDict } from '@bulkhead/contract';

/** Recursively unwraps Variants into plain values (for logging, JSON and clients). */
export function unwrap(v: unknown): unknown {
  if (v instanceof Variant) return unwrap(v.value);
  if (Array.isArray(v)) return v.map(unwrap);
  if (v && typeof v === 'object' && !Buffer.isBuffer(v)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrap(x)]));
  }
  return v;
}

export const variant = (signature: string, value: unknown): Variant => new Variant(signature, value);

type OptionSpec = Record<string, string>;
type OptionValues<S extends OptionSpec> = {
  [K in keyof S]?: S[K] extends 's' | 'o'
    ? string
    : S[K] extends 'b'
      ? boolean
      : S[K] extends 'x' | 't'
        ? bigint
        : number;
};

/**
 * Validates an a{sv} options argument against the keys a method documents (name → D-Bus type).
 * Unknown keys and wrong types are rejected with InvalidArgument naming the key, so that a typo in
 * a caller never silently does nothing.
 */
export function parseOptions<S extends OptionSpec>(
  method: string,
  options: VariantDict,
  spec: S,
): OptionValues<S> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(options ?? {})) {
    const want = spec[key];
    if (!want) throw new BulkheadError('InvalidArgument', `${method}: unknown option '${key}'`);
    if (!(v instanceof Variant) || v.signature !== want)
      throw new BulkheadError(
        'InvalidArgument',
        `${method}: option '${key}' must have type '${want}', got '${v instanceof Variant ? v.signature : typeof v}'`,
      );
    out[key] = v.value;
  }
  return out as OptionValues<S>;
}
