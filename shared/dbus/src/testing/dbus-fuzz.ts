/**
 * D-Bus argument fuzzing of a running daemon, driven by the contract: every method of the given
 * objects is called with arguments generated from its signature (edge values, unknown object
 * paths, 1 MiB strings, odd a{sv} options) or with a wrong signature. Each reply must be a
 * success or a named error (org.bulkhead.Error.* / org.freedesktop.DBus.Error.*), never the
 * internal "Failed" (an exception the daemon did not expect), never silence; at the end the
 * daemon's pid is alive and it still answers. After every sequence of calls each object's
 * properties must still be readable (GetAll answers): a value the calls put into a property
 * (e.g. a NUL from a JSON escape in SetRules) must not make reading it hang.
 *
 * Hostile strings: unpaired surrogates, bidi and control characters, 64 Ki multibyte characters,
 * 1 MiB strings, and NUL / unpaired surrogates as JSON escapes inside documents the daemons parse.
 * A raw NUL is not generated for a string argument: a D-Bus string cannot carry one (dbus-next
 * refuses to marshal it and dbus-daemon drops such a message), so a NUL reaches a daemon only
 * through what it parses or reads, which the escapes cover. Daemons run with
 * BULKHEAD_STRICT_CONTRACT=1 so an undeclared error is answered as Failed, a finding.
 */
import fc from 'fast-check';
import { CONTRACT, type InterfaceContract } from '@bulkhead/contract';
import { Variant } from 'dbus-next';
import type { BusClient } from '../client';
import { BusCallError } from '../errors';
import { checkProperty, type FuzzResult, type FuzzRunOptions } from './fuzz-target';

const MIB_STRING = 'x'.repeat(1 << 20);
/** Strings that break naive handling: each must come back in a valid answer. */
export const HOSTILE_STRINGS = [
  'lone \uD800 high surrogate',
  '\uDC00',
  'bidi \u202Eevil\u202C',
  'control \u0001\u001b[31m\u007f',
  '\uFFFD\uFEFF',
  '€'.repeat(1 << 16),
  // JSON documents with a NUL and an unpaired surrogate as escapes (SetRules and the like).
  '{"rules":[{"match":{"classes":["storage"]},"action":"deny","comment":"nul \\u0000 and \\ud800"}]}',
  '{"rules":[{"match":{"vid":"\\u0000"},"action":"allow"}]}',
  '{"\\u0000":1}',
];

type Sig = { t: string; elems?: Sig[] };

/** Parse a D-Bus signature into complete types. */
export function parseSignature(sig: string): Sig[] {
  let i = 0;
  const one = (): Sig => {
    const c = sig[i++];
    if (c === 'a') {
      if (sig[i] === '{') {
        i++;
        const k = one();
        const v = one();
        i++; // '}'
        return { t: 'a{}', elems: [k, v] };
      }
      return { t: 'a', elems: [one()] };
    }
    if (c === '(') {
      const elems: Sig[] = [];
      while (sig[i] !== ')') elems.push(one());
      i++;
      return { t: '()', elems };
    }
    return { t: c };
  };
  const out: Sig[] = [];
  while (i < sig.length) out.push(one());
  return out;
}

const render = (s: Sig): string =>
  s.t === 'a{}'
    ? `a{${render(s.elems![0])}${render(s.elems![1])}}`
    : s.t === 'a'
      ? `a${render(s.elems![0])}`
      : s.t === '()'
        ? `(${s.elems!.map(render).join('')})`
        : s.t;

export interface DbusFuzzContext {
  /** Object paths to use for 'o' arguments: known ones and unknown ones. */
  paths: string[];
  /** Strings worth trying for 's' arguments (valid ids, rules text, ...). */
  strings?: string[];
}

function valueOf(s: Sig, ctx: DbusFuzzContext, depth = 0): fc.Arbitrary<unknown> {
  switch (s.t) {
    case 's':
      return fc.oneof(
        { weight: 4, arbitrary: fc.string({ maxLength: 40 }) },
        {
          weight: 3,
          arbitrary: fc.constantFrom(
            '',
            'allow',
            'deny',
            '/',
            'usbhost-b1-a5',
            '{}',
            '{"rules":[]}',
            ...(ctx.strings ?? []),
          ),
        },
        { weight: 1, arbitrary: fc.constant(MIB_STRING) },
        { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
        {
          weight: 1,
          // Any code point, unpaired surrogates included; NUL left out (see the header).
          arbitrary: fc.string({ unit: 'binary', maxLength: 40 }).map((x) => x.replace(/\0/g, '')),
        },
      );
    case 'o':
      return fc.constantFrom(...ctx.paths);
    case 'u':
      return fc.oneof(fc.constantFrom(0, 1, 2, 9, 10, 127, 128, 255, 256, 0x7fffffff, 0xffffffff), fc.nat());
    case 'i':
      return fc.oneof(fc.constantFrom(0, -1, 0x7fffffff, -0x80000000), fc.integer());
    case 'q':
      return fc.integer({ min: 0, max: 0xffff });
    case 'y':
      return fc.integer({ min: 0, max: 0xff });
    case 'n':
      return fc.integer({ min: -0x8000, max: 0x7fff });
    case 'b':
      return fc.boolean();
    case 'd':
      return fc.double({ noNaN: true, noDefaultInfinity: true }); // dbus-next cannot marshal NaN/Infinity (a client-side limit)
    case 't':
      return fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    case 'x':
      return fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
    case 'v':
      return variantValue(ctx, depth);
    case 'a':
      return fc.array(valueOf(s.elems![0], ctx, depth + 1), { maxLength: depth > 1 ? 1 : 4 });
    case 'a{}':
      return fc
        .array(fc.tuple(valueOf(s.elems![0], ctx, depth + 1), valueOf(s.elems![1], ctx, depth + 1)), {
          maxLength: 4,
        })
        .map((entries) => Object.fromEntries(entries.map(([k, v]) => [String(k), v])));
    case '()':
      return fc.tuple(...s.elems!.map((e) => valueOf(e, ctx, depth + 1)));
    default:
      throw new Error(`dbus-fuzz: no generator for type '${s.t}'`);
  }
}

/** An a{sv} value: plausible option names with right and wrong types, and nonsense. */
function variantValue(ctx: DbusFuzzContext, depth: number): fc.Arbitrary<Variant> {
  const sigs = depth > 1 ? ['s', 'u', 'b', 'i', 't'] : ['s', 'u', 'b', 'i', 't', 'as', 'a{sv}', 'o', 'd'];
  return fc
    .constantFrom(...sigs)
    .chain((sig) => valueOf(parseSignature(sig)[0], ctx, depth + 1).map((v) => new Variant(sig, v)));
}

export interface FuzzCall {
  path: string;
  iface: string;
  member: string;
  signature: string;
  body: unknown[];
}

export interface DaemonFuzzSpec {
  client: BusClient;
  destination: string;
  /** The daemon's objects: path + interface (methods come from the contract). */
  objects: Array<{ path: string; iface: keyof typeof CONTRACT }>;
  ctx: DbusFuzzContext;
  pid: number;
  /** Adjust a call before sending it (e.g. cap a timeout argument so a call cannot hang long). */
  sanitize?: (call: FuzzCall) => FuzzCall;
  /** Checks after each call (e.g. a rejected SetRules changed nothing); throws to report. */
  afterCall?: (call: FuzzCall, error: Error | null) => Promise<void>;
  /** How long one call may take before it counts as "no reply" (default 20 s). */
  callTimeoutMs?: number;
}

const WRONG_SIGNATURES = [
  '',
  's',
  'u',
  'b',
  'o',
  'a{sv}',
  'oa{sv}',
  'ua{sv}',
  'uua{sv}',
  'sa(qqi)',
  'as',
  'i',
  'us',
  'ss',
];

export function callArbitrary(spec: DaemonFuzzSpec): fc.Arbitrary<FuzzCall> {
  const members: Array<{ path: string; iface: string; member: string; sig: string }> = [];
  for (const o of spec.objects) {
    const c = CONTRACT[o.iface] as InterfaceContract;
    for (const [member, m] of Object.entries(c.methods))
      members.push({ path: o.path, iface: o.iface, member, sig: m.inSignature });
    members.push({ path: o.path, iface: 'org.freedesktop.DBus.Properties', member: 'Get', sig: 'ss' });
    members.push({ path: o.path, iface: 'org.freedesktop.DBus.Properties', member: 'Set', sig: 'ssv' });
    members.push({ path: o.path, iface: o.iface, member: 'NoSuchMethod', sig: '' });
  }
  return fc
    .tuple(
      fc.constantFrom(...members),
      fc.constantFrom(...spec.ctx.paths, ...spec.objects.map((o) => o.path)),
      fc.nat({ max: 9 }),
      fc.constantFrom(...WRONG_SIGNATURES),
    )
    .chain(([m, otherPath, dice, wrongSig]) => {
      // Mostly the right signature; sometimes another object (unknown VM/device) or a wrong one.
      const path = dice === 0 ? otherPath : m.path;
      const sig = dice === 1 ? wrongSig : m.sig;
      const types = parseSignature(sig);
      return (
        types.length ? fc.tuple(...types.map((t) => valueOf(t, spec.ctx))) : fc.constant([] as unknown[])
      ).map((body): FuzzCall => ({
        path,
        iface: m.iface,
        member: m.member,
        signature: types.map(render).join(''),
        body: body as unknown[],
      }));
    });
}

const ALLOWED = /^(org\.bulkhead\.Error\.|org\.freedesktop\.DBus\.Error\.)/;

const describeCall = (c: FuzzCall): string =>
  `${c.iface}.${c.member}(${c.signature}) on ${c.path} ${JSON.stringify(c.body, (_k, v) =>
    typeof v === 'bigint' ? `${v}n` : typeof v === 'string' && v.length > 80 ? `<${v.length} chars>` : v,
  )}`;

/** Send one call; throw when the daemon's answer breaks the rules above. */
export async function checkCall(spec: DaemonFuzzSpec, raw: FuzzCall): Promise<void> {
  const c = spec.sanitize ? spec.sanitize(raw) : raw;
  const verbose = process.env.FUZZ_VERBOSE === '1';
  try {
    await spec.client.call(spec.destination, c.path, c.iface, c.member, c.signature, c.body, {
      timeoutMs: spec.callTimeoutMs ?? 20_000,
    });
    if (verbose) console.log(`ok    ${describeCall(c).slice(0, 200)}`);
    await spec.afterCall?.(c, null);
  } catch (e) {
    if ((e as Error).message.startsWith('afterCall:')) throw e;
    if (verbose)
      console.log(
        `error ${describeCall(c).slice(0, 160)} -> ${(e as { dbusName?: string }).dbusName}: ${(e as Error).message.slice(0, 80)}`,
      );
    const name =
      (e as { dbusName?: string }).dbusName ?? (e instanceof BusCallError ? e.dbusName : undefined);
    if (!name) throw new Error(`${describeCall(c)}: not a D-Bus error reply: ${(e as Error).message}`);
    if (!ALLOWED.test(name)) throw new Error(`${describeCall(c)}: error ${name} is not a named error`);
    if (name === 'org.bulkhead.Error.Failed')
      throw new Error(`${describeCall(c)}: internal error in the daemon: ${(e as Error).message}`);
    await spec.afterCall?.(c, e as Error);
  }
}

/** Is the daemon still up and answering? Throws if not. */
export async function checkAlive(spec: DaemonFuzzSpec): Promise<void> {
  process.kill(spec.pid, 0);
  await spec.client.call(
    spec.destination,
    spec.objects[0].path,
    'org.freedesktop.DBus.Properties',
    'GetAll',
    's',
    [spec.objects[0].iface],
    {
      timeoutMs: 10_000,
    },
  );
}

/** Every object's properties still answer GetAll (a named error is an answer too). Throws if not. */
export async function checkReadable(spec: DaemonFuzzSpec): Promise<void> {
  for (const o of spec.objects) {
    try {
      await spec.client.call(
        spec.destination,
        o.path,
        'org.freedesktop.DBus.Properties',
        'GetAll',
        's',
        [o.iface],
        {
          timeoutMs: spec.callTimeoutMs ?? 20_000,
        },
      );
    } catch (e) {
      const name = (e as { dbusName?: string }).dbusName;
      if (!name || !ALLOWED.test(name) || name === 'org.bulkhead.Error.Failed')
        throw new Error(`GetAll ${o.iface} on ${o.path} after the calls: ${(e as Error).message}`);
    }
  }
}

export async function fuzzDaemonMethods(spec: DaemonFuzzSpec, opts: FuzzRunOptions): Promise<FuzzResult> {
  const property = fc.asyncProperty(
    fc.array(callArbitrary(spec), { minLength: 1, maxLength: 5 }),
    async (calls) => {
      for (const c of calls) await checkCall(spec, c);
      await checkReadable(spec);
    },
  );
  const r = await checkProperty(property, opts);
  if (r.finding) return r;
  try {
    await checkAlive(spec);
  } catch (e) {
    return {
      executions: r.executions,
      finding: {
        seed: opts.seed,
        path: '',
        counterexample: '(whole run)',
        error: `daemon not alive/answering after the run: ${(e as Error).message}`,
      },
    };
  }
  return r;
}
