/**
 * Structural sharing for the pushes the renderer applies (issue 17: hotkey to picture).
 *
 * The main process sends a whole new snapshot for any change (a switch sends several: Switching,
 * ActiveVm, LastSwitch, the input daemon's focus). Applied as it came, every VM object, daemon
 * status and list in it is a new object, so every tile, every VM view and the top bar rendered
 * again for each push — on the Control Domain, whose kiosk draws in software, a whole-page render
 * takes hundreds of milliseconds, right while it should paint the VM just switched to (the kiosk's
 * CPU profile in the image: React's work was the largest part of the page's busy seconds).
 *
 * `shareUnchanged(prev, next)` returns `next` with every part that equals the same part of `prev`
 * replaced by `prev`'s object, and `prev` itself when nothing differs. Selectors and memoised
 * components then see the same objects for what did not change and skip their work.
 */

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * An array's items are matched by their `path` (VMs, USB devices) or `id` (prompts) when every
 * item has one, so a list that grew or was reordered still keeps each unchanged item's object;
 * otherwise by index.
 */
function keyOf(item: unknown): string | null {
  if (!isPlainObject(item)) return null;
  if (typeof item.path === 'string') return `p:${item.path}`;
  if (typeof item.id === 'string' || typeof item.id === 'number') return `i:${String(item.id)}`;
  return null;
}

function shareArray(prev: unknown[], next: unknown[]): unknown[] {
  const keys = next.map(keyOf);
  const byKey = keys.every((k) => k !== null) ? new Map(prev.map((p) => [keyOf(p), p] as const)) : null;
  let same = prev.length === next.length;
  let anyShared = false;
  const out = next.map((item, i) => {
    const before = byKey ? byKey.get(keys[i]) : prev[i];
    const shared = before === undefined ? item : shareUnchanged(before, item);
    if (shared !== prev[i]) same = false;
    if (shared !== item) anyShared = true;
    return shared;
  });
  return same ? prev : anyShared ? out : next;
}

function shareObject(prev: Record<string, unknown>, next: Record<string, unknown>): Record<string, unknown> {
  const nextKeys = Object.keys(next);
  let same = nextKeys.length === Object.keys(prev).length;
  const out: Record<string, unknown> = {};
  for (const k of nextKeys) {
    const shared = Object.prototype.hasOwnProperty.call(prev, k) ? shareUnchanged(prev[k], next[k]) : next[k];
    if (!Object.prototype.hasOwnProperty.call(prev, k) || shared !== prev[k]) same = false;
    out[k] = shared;
  }
  return same ? prev : out;
}

/** `next`, sharing every part of it that equals `prev`'s (see above). Plain data only. */
export function shareUnchanged<T>(prev: T, next: T): T {
  if (Object.is(prev, next)) return prev;
  if (Array.isArray(prev) && Array.isArray(next)) return shareArray(prev, next) as T;
  if (isPlainObject(prev) && isPlainObject(next)) return shareObject(prev, next) as T;
  return next;
}
