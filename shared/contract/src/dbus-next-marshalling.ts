/**
 * Two changes to how dbus-next builds the bytes of a message, made before any of its modules loads
 * (this file is the first import of @bulkhead/contract and @bulkhead/dbus, the only packages that
 * load dbus-next). Neither changes a byte on the wire; dbus-next 0.10 has no option for either.
 *
 * Why (issue 17, the switch's tail): an allocation profile of vm-daemon over 300 switches between
 * two running VMs (2026-12-02) had it allocate ~500 KB per switch, nearly all of it dbus-next
 * marshalling its ~10 messages: each message parsed its signature, and every variant's, into a
 * new tree (~90 KB per switch), and each struct, array and message built a `@nornagon/put` writer
 * whose constructor makes ten closures and whose every byte written is an object (~80 KB). With the
 * unit's 1 MiB semi-space that was a scavenge every other switch (154 in 300). With both changes:
 * ~285 KB per switch and 91 scavenges in 300; the garbage collector's share of the daemon's CPU
 * per switch fell from 0.63 to 0.25 ms (CPU profile, same machine, another image booting beside).
 *
 * 1. `parseSignature` answers from a cache (the daemons send the same few dozen signatures again
 *    and again). The cached trees are frozen, so a caller cannot change what the next one gets;
 *    dbus-next only reads them. A peer's signatures are cached too, in a bounded map that is
 *    emptied when full: a hostile peer sending endless new signatures costs a parse each, as before.
 * 2. `@nornagon/put`, the byte writer dbus-next's marshaller requires, is replaced by
 *    `GrowableBufferWriter`: the same calls (`put`, `word8`, `word16le`, `word32le`, `length`,
 *    `buffer`) and the same bytes, written into one growing Buffer.
 *
 * Both are checked in dbus-next-marshalling.test.ts: the writer against the original over random
 * call sequences, and the wiring (dbus-next's modules really got these) after loading the packages.
 */
import { createRequire } from 'node:module';

/** The byte writer dbus-next's marshaller uses (the subset of @nornagon/put's API it calls). */
export class GrowableBufferWriter {
  private buf = Buffer.allocUnsafe(64);
  private len = 0;
  /** dbus-next keeps its own write offset on the writer (alignment); the writer never reads it. */
  _offset = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const grown = Buffer.allocUnsafe(size);
    this.buf.copy(grown, 0, 0, this.len);
    this.buf = grown;
  }

  put(bytes: Buffer): this {
    this.reserve(bytes.length);
    bytes.copy(this.buf, this.len);
    this.len += bytes.length;
    return this;
  }

  // As @nornagon/put: the value's low bytes after ToInt32 (`x >> 0`), little-endian.
  word8(x: number): this {
    this.reserve(1);
    this.buf[this.len++] = (x >> 0) & 0xff;
    return this;
  }

  word16le(x: number): this {
    this.reserve(2);
    this.buf.writeUInt16LE((x >> 0) & 0xffff, this.len);
    this.len += 2;
    return this;
  }

  word32le(x: number): this {
    this.reserve(4);
    this.buf.writeUInt32LE((x >> 0) >>> 0, this.len);
    this.len += 4;
    return this;
  }

  length(): number {
    return this.len;
  }

  /** A new Buffer of what was written (callers keep it while this writer is reused). */
  buffer(): Buffer {
    const out = Buffer.alloc(this.len);
    this.buf.copy(out, 0, 0, this.len);
    return out;
  }
}

let writersMade = 0;

/** Called as `put()` (no `new`), as dbus-next does. */
function newWriter(): GrowableBufferWriter {
  writersMade++;
  return new GrowableBufferWriter();
}

/** Signatures kept at most; the map is emptied when it is full (see 1. above). */
export const SIGNATURE_CACHE_MAX = 512;

interface SignatureNode {
  type: string;
  child: SignatureNode[];
}

function deepFreeze(nodes: SignatureNode[]): SignatureNode[] {
  for (const n of nodes) {
    deepFreeze(n.child);
    Object.freeze(n.child);
    Object.freeze(n);
  }
  return Object.freeze(nodes) as SignatureNode[];
}

export function cachingParser(parse: (signature: string) => SignatureNode[]) {
  const cache = new Map<string, SignatureNode[]>();
  const cached = (signature: string): SignatureNode[] => {
    let tree = cache.get(signature);
    if (tree) return tree;
    tree = deepFreeze(parse(signature)); // a bad signature throws here, as before, and is not kept
    if (cache.size >= SIGNATURE_CACHE_MAX) cache.clear();
    cache.set(signature, tree);
    return tree;
  };
  return Object.assign(cached, { cacheSize: () => cache.size });
}

const fromDbusNext = createRequire(require.resolve('dbus-next'));
/** Loaded before this file (then the changes come too late for it): see marshallingChanges(). */
const marshallerLoadedFirst = fromDbusNext.resolve('./lib/marshall') in fromDbusNext.cache;

const signatureModule = fromDbusNext('./lib/signature') as {
  parseSignature: ((s: string) => SignatureNode[]) & { cacheSize?: () => number };
};
if (!signatureModule.parseSignature.cacheSize)
  signatureModule.parseSignature = cachingParser(signatureModule.parseSignature);

const putPath = fromDbusNext.resolve('@nornagon/put');
/** The original writer, for the equivalence test. */
export const originalPut = fromDbusNext('@nornagon/put') as () => unknown;
{
  const entry = fromDbusNext.cache[putPath];
  if (entry) entry.exports = newWriter;
}

/**
 * What the changes did so far: writers dbus-next's marshaller made, signatures in the cache, and
 * whether its marshaller loaded before this file (then it kept the originals).
 */
export function marshallingChanges(): { writersMade: number; signaturesCached: number; tooLate: boolean } {
  return {
    writersMade,
    signaturesCached: signatureModule.parseSignature.cacheSize?.() ?? 0,
    tooLate: marshallerLoadedFirst,
  };
}
