import * as dbus from 'dbus-next';
import { readFileSync } from 'node:fs';
import { UI_GROUP, type Role } from '@bulkhead/contract';

/**
 * Maps a caller's unix uid to roles. Root, and the uid the daemon itself runs as (the same trust
 * domain: a developer running the demo unprivileged), get every role; members of the UI group get
 * 'ui'; everybody else gets none.
 */
export type RoleResolver = (uid: number) => ReadonlySet<Role>;

const ALL: ReadonlySet<Role> = new Set<Role>(['root', 'ui']);
const UI: ReadonlySet<Role> = new Set<Role>(['ui']);
const NONE: ReadonlySet<Role> = new Set<Role>();

/** Reads /etc/passwd and /etc/group (re-read at most every few seconds) to find UI group members. */
export function systemRoleResolver(
  opts: { uiGroup?: string; passwd?: string; group?: string } = {},
): RoleResolver {
  const uiGroup = opts.uiGroup ?? UI_GROUP;
  let cache: { at: number; uiUids: Set<number> } | null = null;
  const load = (): Set<number> => {
    if (cache && Date.now() - cache.at < 5000) return cache.uiUids;
    const uiUids = new Set<number>();
    try {
      const groups = readFileSync(opts.group ?? '/etc/group', 'utf8').split('\n');
      const passwd = readFileSync(opts.passwd ?? '/etc/passwd', 'utf8').split('\n');
      const g = groups.map((l) => l.split(':')).find((f) => f[0] === uiGroup);
      if (g) {
        const gid = Number(g[2]);
        const members = new Set((g[3] ?? '').split(',').filter(Boolean));
        for (const f of passwd.map((l) => l.split(':'))) {
          if (f.length < 4) continue;
          if (members.has(f[0]) || Number(f[3]) === gid) uiUids.add(Number(f[2]));
        }
      }
    } catch {
      // No readable account database: nobody is in the UI group; root still works.
    }
    cache = { at: Date.now(), uiUids };
    return uiUids;
  };
  const self = process.getuid?.() ?? 0;
  return (uid) => (uid === 0 || uid === self ? ALL : load().has(uid) ? UI : NONE);
}

/**
 * Looks up the unix uid behind a unique bus name by asking the bus daemon (the only trustworthy
 * source: a message body can say anything). Unique names are never reused on a bus, so a
 * positive answer can be cached for the life of the connection.
 */
export class CallerIdentity {
  private readonly cache = new Map<string, number>();
  constructor(private readonly bus: dbus.MessageBus) {}

  async uidOf(sender: string): Promise<number> {
    const hit = this.cache.get(sender);
    if (hit !== undefined) return hit;
    const reply = await this.bus.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'GetConnectionUnixUser',
        signature: 's',
        body: [sender],
      }),
    );
    const uid = Number(reply?.body[0]);
    if (!Number.isInteger(uid)) throw new Error(`bus gave no uid for ${sender}`);
    if (this.cache.size > 4096) this.cache.clear();
    this.cache.set(sender, uid);
    return uid;
  }
}
