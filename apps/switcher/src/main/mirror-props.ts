/** Turning D-Bus property dicts into the switcher's model, shared by the daemon mirrors. */
export type Props = Record<string, unknown>;

const plain = (v: unknown): unknown => (typeof v === 'bigint' ? Number(v) : v);

/** The model fields named by `fields` that `props` carries; other properties are ignored. */
export function mapFields<T>(fields: Record<string, keyof T>, props: Props): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(props)) {
    const f = fields[k];
    if (f) (out as Record<string, unknown>)[f as string] = plain(v);
  }
  return out;
}
