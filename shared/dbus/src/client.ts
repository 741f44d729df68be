import * as dbus from 'dbus-next';
import {
  CONTRACT,
  type InterfaceContract,
  type InterfaceName,
  type InterfaceTypes,
} from '@bulkhead/contract';
import { busSocket } from './connect';
import { fromDBusError } from './errors';
import { unwrap } from './variants';

const { Message } = dbus;
const SIGNAL = 4;

export interface MatchRule {
  /** Well-known or unique name: only signals its current owner sent are delivered. */
  sender?: string;
  path?: string;
  pathNamespace?: string;
  interface?: string;
  member?: string;
  arg0?: string;
}

function ruleString(r: MatchRule): string {
  const parts = ["type='signal'"];
  if (r.sender) parts.push(`sender='${r.sender}'`);
  if (r.path) parts.push(`path='${r.path}'`);
  if (r.pathNamespace) parts.push(`path_namespace='${r.pathNamespace}'`);
  if (r.interface) parts.push(`interface='${r.interface}'`);
  if (r.member) parts.push(`member='${r.member}'`);
  if (r.arg0 !== undefined) parts.push(`arg0='${r.arg0}'`);
  return parts.join(',');
}

/** The bus daemon's own name: the sender of its signals, which no peer can take or forge. */
const BUS_DAEMON = 'org.freedesktop.DBus';

/**
 * Whether a signal is one the rule asked for. `ownerOf` is the current owner of a well-known
 * sender (null while unknown). The sender is checked here, not left to the bus daemon's match:
 * a peer may send a signal straight to this connection (a destination set), which the bus
 * delivers whatever the match rules say, and a broadcast let in by another rule of this
 * connection reaches every listener; the bus daemon sets each message's sender, so it is the
 * only field a peer cannot choose.
 */
function matches(r: MatchRule, msg: dbus.Message, ownerOf: (name: string) => string | null): boolean {
  if (msg.type !== SIGNAL) return false;
  if (r.sender) {
    const from = r.sender === BUS_DAEMON || r.sender.startsWith(':') ? r.sender : ownerOf(r.sender);
    if (!from || msg.sender !== from) return false;
  }
  if (r.path && msg.path !== r.path) return false;
  if (r.pathNamespace && !(msg.path === r.pathNamespace || msg.path.startsWith(r.pathNamespace + '/')))
    return false;
  if (r.interface && msg.interface !== r.interface) return false;
  if (r.member && msg.member !== r.member) return false;
  if (r.arg0 !== undefined && msg.body[0] !== r.arg0) return false;
  return true;
}

/** Who owns one well-known name, as the bus daemon says; shared by the subscriptions naming it. */
interface OwnerTrack {
  owner: string | null;
  users: number;
  /** Settles once the owner is known (the NameOwnerChanged rule in place, GetNameOwner answered). */
  ready: Promise<Unsubscribe>;
}

export type Unsubscribe = () => Promise<void>;

export interface ObjectWatchHandlers {
  added?(path: string, interfaces: Record<string, Record<string, unknown>>): void;
  removed?(path: string, interfaces: string[]): void;
  changed?(path: string, iface: string, changed: Record<string, unknown>, invalidated: string[]): void;
}

/**
 * Client side of the toolkit: calls with named errors, typed proxies built from the contract,
 * signal subscriptions that are in place before the call that could trigger them, ObjectManager
 * and name-owner watching.
 */
export class BusClient {
  constructor(
    readonly bus: dbus.MessageBus,
    private readonly defaultTimeoutMs = 30_000,
  ) {}

  /** Call a method; resolves with the reply body, rejects with BulkheadError or BusCallError. */
  async call(
    destination: string,
    path: string,
    iface: string,
    member: string,
    signature: string,
    body: unknown[],
    opts: { timeoutMs?: number } = {},
  ): Promise<any[]> {
    const what = `${destination} ${path} ${iface}.${member}`;
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const closing = this.connectionClosed(what);
    try {
      const reply = await Promise.race([
        this.bus.call(new Message({ destination, path, interface: iface, member, signature, body })),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${what}: no reply within ${timeoutMs} ms`)), timeoutMs);
        }),
        closing.closed,
      ]);
      return reply?.body ?? [];
    } catch (e) {
      throw fromDBusError(e, what);
    } finally {
      clearTimeout(timer);
      closing.done();
    }
  }

  /** Why the bus connection is closed, once it is; null while open (or not yet watched). */
  private closedWhy: string | null = null;
  private watchingClose = false;
  /** The calls waiting for a reply now: each rejects when the connection closes. */
  private readonly waiting = new Set<(why: string) => void>();

  /**
   * Rejects the call if the bus connection is or becomes closed. dbus-next never settles a call
   * whose connection ended (it writes into the closed stream and emits 'error'), so without this
   * every call made after the bus went away (a daemon's RemoveMatch while it stops, say) waited
   * for its whole timeout, one after the other. One 'close' listener per client; `done` removes
   * the call from the waiting set, so nothing is kept per call once it settled.
   */
  private connectionClosed(what: string): { closed: Promise<never>; done: () => void } {
    const stream = busSocket(this.bus);
    if (stream && !this.watchingClose) {
      this.watchingClose = true;
      if (stream.destroyed || stream.writableEnded) this.closedWhy = 'the bus connection is closed';
      else
        stream.once('close', () => {
          this.closedWhy = 'the bus connection closed';
          for (const reject of [...this.waiting]) reject(this.closedWhy);
          this.waiting.clear();
        });
    }
    let reject!: (why: string) => void;
    const closed = new Promise<never>((_, rej) => {
      reject = (why) => rej(new Error(`${what}: ${why}`));
    });
    closed.catch(() => undefined); // rejected with no call racing it (a call that threw first)
    if (this.closedWhy) reject(this.closedWhy);
    else this.waiting.add(reject);
    return { closed, done: () => this.waiting.delete(reject) };
  }

  /** A typed proxy whose methods are the interface's methods, marshalled by the contract. */
  proxy<I extends InterfaceName>(
    destination: string,
    path: string,
    iface: I,
    opts: { timeoutMs?: number } = {},
  ): InterfaceTypes[I]['client'] {
    const c = CONTRACT[iface] as InterfaceContract;
    const out: Record<string, (...args: unknown[]) => Promise<unknown>> = {};
    for (const [name, m] of Object.entries(c.methods)) {
      out[name] = async (...args: unknown[]) => {
        const body = await this.call(destination, path, iface, name, m.inSignature, args, opts);
        return m.outArgs.length === 0 ? undefined : m.outArgs.length === 1 ? body[0] : body;
      };
    }
    return out as unknown as InterfaceTypes[I]['client'];
  }

  /** All properties of an interface, unwrapped. */
  async getAll<I extends InterfaceName>(
    destination: string,
    path: string,
    iface: I,
  ): Promise<InterfaceTypes[I]['properties']> {
    const [dict] = await this.call(destination, path, 'org.freedesktop.DBus.Properties', 'GetAll', 's', [
      iface,
    ]);
    return unwrap(dict) as InterfaceTypes[I]['properties'];
  }

  async get<I extends InterfaceName, P extends keyof InterfaceTypes[I]['properties'] & string>(
    destination: string,
    path: string,
    iface: I,
    prop: P,
  ): Promise<InterfaceTypes[I]['properties'][P]> {
    const [v] = await this.call(destination, path, 'org.freedesktop.DBus.Properties', 'Get', 'ss', [
      iface,
      prop,
    ]);
    return unwrap(v) as InterfaceTypes[I]['properties'][P];
  }

  /**
   * Subscribe to signals. The match rule is installed on the bus before this resolves, so a
   * caller that subscribes and then calls a method never misses a signal the call causes.
   */
  async subscribe(rule: MatchRule, handler: (msg: dbus.Message) => void): Promise<Unsubscribe> {
    const name =
      rule.sender && rule.sender !== BUS_DAEMON && !rule.sender.startsWith(':') ? rule.sender : null;
    // The owner is known before the rule is added, so no signal of the owner is missed.
    const release = name ? await this.trackOwner(name) : async () => undefined;
    const listener = (msg: dbus.Message) => {
      if (!matches(rule, msg, (n) => this.owners.get(n)?.owner ?? null)) return;
      try {
        handler(msg);
      } catch (e) {
        console.error(
          `[dbus] signal handler for ${msg.interface}.${msg.member} threw: ${(e as Error).stack}`,
        );
      }
    };
    this.bus.on('message', listener);
    const r = ruleString(rule);
    try {
      await this.call(
        'org.freedesktop.DBus',
        '/org/freedesktop/DBus',
        'org.freedesktop.DBus',
        'AddMatch',
        's',
        [r],
      );
    } catch (e) {
      this.bus.off('message', listener);
      await release();
      throw e;
    }
    return async () => {
      this.bus.off('message', listener);
      await this.call(
        'org.freedesktop.DBus',
        '/org/freedesktop/DBus',
        'org.freedesktop.DBus',
        'RemoveMatch',
        's',
        [r],
      ).catch(() => undefined);
      await release();
    };
  }

  /** The owners of the well-known names subscriptions take signals from. */
  private readonly owners = new Map<string, OwnerTrack>();

  /**
   * Follow the owner of `name` (NameOwnerChanged from the bus daemon, then GetNameOwner) for as
   * long as a subscription names it; resolves once the owner is known, with the release.
   */
  private async trackOwner(name: string): Promise<() => Promise<void>> {
    let track = this.owners.get(name);
    if (!track) {
      const t: OwnerTrack = { owner: null, users: 0, ready: null as unknown as Promise<Unsubscribe> };
      t.ready = this.watchNameOwner(name, (owner) => (t.owner = owner));
      track = t;
      this.owners.set(name, track);
    }
    const t = track;
    t.users++;
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      if (--t.users > 0) return;
      if (this.owners.get(name) === t) this.owners.delete(name);
      const unsubscribe = await t.ready.catch(() => null);
      await unsubscribe?.();
    };
    try {
      await t.ready;
    } catch (e) {
      await release();
      throw e;
    }
    return release;
  }

  /** Typed signal subscription on one interface (any object when `path` is a namespace). */
  onSignal<I extends InterfaceName, S extends keyof InterfaceTypes[I]['signals'] & string>(
    sender: string,
    where: { path: string } | { pathNamespace: string },
    iface: I,
    signal: S,
    handler: (args: InterfaceTypes[I]['signals'][S], path: string) => void,
  ): Promise<Unsubscribe> {
    return this.subscribe({ sender, ...where, interface: iface, member: signal }, (msg) =>
      handler(msg.body as InterfaceTypes[I]['signals'][S], msg.path),
    );
  }

  /**
   * Follow an ObjectManager: subscribes to InterfacesAdded/Removed and PropertiesChanged below
   * `managerPath` first, then returns the current objects (so nothing falls between the two).
   */
  async watchObjects(
    destination: string,
    managerPath: string,
    handlers: ObjectWatchHandlers,
  ): Promise<{ objects: Record<string, Record<string, Record<string, unknown>>>; unsubscribe: Unsubscribe }> {
    const om = 'org.freedesktop.DBus.ObjectManager';
    // Signals that arrive before the caller has the snapshot are newer than it (the bus answers
    // GetManagedObjects before it sends them), but dbus-next can deliver them synchronously before
    // the awaited reply resumes us. Hold them back and replay them after the caller has applied
    // the snapshot (setImmediate runs after the caller's await continuation).
    let held: Array<() => void> | null = [];
    const deliver = (fn: () => void) => (held ? held.push(fn) : fn());
    const subs = await Promise.all([
      this.subscribe(
        { sender: destination, path: managerPath, interface: om, member: 'InterfacesAdded' },
        (m) =>
          deliver(() =>
            handlers.added?.(m.body[0], unwrap(m.body[1]) as Record<string, Record<string, unknown>>),
          ),
      ),
      this.subscribe(
        { sender: destination, path: managerPath, interface: om, member: 'InterfacesRemoved' },
        (m) => deliver(() => handlers.removed?.(m.body[0], m.body[1])),
      ),
      this.subscribe(
        {
          sender: destination,
          pathNamespace: managerPath,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'PropertiesChanged',
        },
        (m) =>
          deliver(() =>
            handlers.changed?.(m.path, m.body[0], unwrap(m.body[1]) as Record<string, unknown>, m.body[2]),
          ),
      ),
    ]);
    const unsubscribe = async () => {
      await Promise.all(subs.map((u) => u()));
    };
    try {
      const [objs] = await this.call(destination, managerPath, om, 'GetManagedObjects', '', []);
      setImmediate(() => {
        const pending = held ?? [];
        held = null;
        for (const fn of pending) fn();
      });
      return {
        objects: unwrap(objs) as Record<string, Record<string, Record<string, unknown>>>,
        unsubscribe,
      };
    } catch (e) {
      held = null;
      await unsubscribe();
      throw e;
    }
  }

  /** Calls `cb` with the current owner of `name` (null when none) and on every change. */
  async watchNameOwner(name: string, cb: (owner: string | null) => void): Promise<Unsubscribe> {
    // A NameOwnerChanged seen after subscribing is newer than the GetNameOwner answer, even when
    // dbus-next hands it to us before the awaited reply resumes: then the answer is stale.
    let changed = false;
    const unsubscribe = await this.subscribe(
      {
        sender: 'org.freedesktop.DBus',
        interface: 'org.freedesktop.DBus',
        member: 'NameOwnerChanged',
        arg0: name,
      },
      (m) => {
        changed = true;
        cb(m.body[2] || null);
      },
    );
    let owner: string | null = null;
    try {
      [owner] = await this.call(
        'org.freedesktop.DBus',
        '/org/freedesktop/DBus',
        'org.freedesktop.DBus',
        'GetNameOwner',
        's',
        [name],
      );
    } catch {
      owner = null;
    }
    if (!changed) cb(owner);
    return unsubscribe;
  }
}
