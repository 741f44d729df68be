import * as dbus from 'dbus-next';
import {
  BulkheadError,
  CONTRACT,
  ERROR_PREFIX,
  type CallContext,
  type InterfaceContract,
  type InterfaceName,
  type InterfaceTypes,
} from '@bulkhead/contract';
import { CallerIdentity, systemRoleResolver, type RoleResolver } from './identity';
import { toReplyError } from './errors';
import { renderInterfaceXml } from './introspect';

const { Message, Variant } = dbus;
const METHOD_CALL = 1;
const NO_REPLY_EXPECTED = 1;
const PROPS = 'org.freedesktop.DBus.Properties';
const OM = 'org.freedesktop.DBus.ObjectManager';
const INTROSPECTABLE = 'org.freedesktop.DBus.Introspectable';
const PEER = 'org.freedesktop.DBus.Peer';

export type Logger = (level: 'debug' | 'info' | 'warn' | 'error', msg: string) => void;

/**
 * Differences between an implementation and its contract: methods the XML has and the code lacks,
 * and public (PascalCase) methods or properties the code has and the XML lacks. Empty = they agree.
 */
export function checkImplementation(
  contract: InterfaceContract,
  implementation: object,
  properties: Record<string, unknown>,
): string[] {
  const problems: string[] = [];
  const implMethods = new Set<string>();
  for (let o: object | null = implementation; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const k of Object.getOwnPropertyNames(o))
      if (/^[A-Z]/.test(k) && typeof (implementation as Record<string, unknown>)[k] === 'function')
        implMethods.add(k);
  }
  for (const m of Object.keys(contract.methods))
    if (!implMethods.has(m)) problems.push(`${contract.name}.${m}: in the XML, missing in the code`);
  for (const m of implMethods)
    if (!(m in contract.methods)) problems.push(`${contract.name}.${m}: in the code, missing in the XML`);
  for (const p of Object.keys(contract.properties))
    if (!(p in properties))
      problems.push(`${contract.name}.${p} (property): in the XML, missing in the code`);
  for (const p of Object.keys(properties))
    if (!(p in contract.properties))
      problems.push(`${contract.name}.${p} (property): in the code, missing in the XML`);
  return problems;
}

interface Exported {
  contract: InterfaceContract;
  implementation: Record<string, (...a: unknown[]) => unknown>;
  properties: () => Record<string, unknown>;
}

/** Handle on one exported interface of one object: emit its signals and property changes. */
export class ExportedInterface<I extends InterfaceName> {
  constructor(
    private readonly host: ServiceHost,
    readonly path: string,
    readonly iface: I,
  ) {}

  /** Emit PropertiesChanged for the named properties with their current values. */
  propertiesChanged(...names: Array<keyof InterfaceTypes[I]['properties'] & string>): void {
    this.host.emitPropertiesChanged(this.path, this.iface, names);
  }

  emit<S extends keyof InterfaceTypes[I]['signals'] & string>(
    signal: S,
    ...args: InterfaceTypes[I]['signals'][S] extends unknown[] ? InterfaceTypes[I]['signals'][S] : never
  ): void {
    const s = (CONTRACT[this.iface] as InterfaceContract).signals[signal];
    this.host.send(Message.newSignal(this.path, this.iface, signal, s.signature, args as unknown[]));
  }
}

/**
 * Serves objects on a bus strictly by the contract. Why not dbus-next's Interface classes: their
 * method handlers never learn who called (no sender, so no per-caller authorisation), and their
 * decorators do not compile under current tsc. Here every call is checked against the XML's
 * signature, authorised by the caller's uid as the bus daemon reports it, and answered with a
 * named error on failure. Introspection, Properties, ObjectManager and Peer are served here too.
 */
export class ServiceHost {
  private readonly objects = new Map<string, Map<string, Exported>>();
  private readonly managers = new Set<string>();
  private readonly identity: CallerIdentity;
  private readonly roles: RoleResolver;
  private readonly log: Logger;
  private readonly handler = (msg: dbus.Message): boolean => this.onMessage(msg);
  private closed = false;

  constructor(
    readonly bus: dbus.MessageBus,
    opts: { roles?: RoleResolver; log?: Logger } = {},
  ) {
    this.identity = new CallerIdentity(bus);
    this.roles = opts.roles ?? systemRoleResolver();
    this.log =
      opts.log ??
      ((level, msg) => (level === 'debug' ? undefined : console.error(`[dbus] ${level}: ${msg}`)));
    bus.addMethodHandler(this.handler);
  }

  /** Ask for a well-known name; fails unless we become its primary owner (no queueing). */
  async requestName(name: string): Promise<void> {
    const reply = await this.bus.requestName(name, dbus.NameFlag.DO_NOT_QUEUE);
    if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER)
      throw new Error(`D-Bus name ${name} is already owned by another process`);
  }

  /** Mark `path` as an ObjectManager for every object exported below it. */
  addObjectManager(path: string): void {
    this.managers.add(path);
  }

  /**
   * Export `iface` at `path`. `properties` returns the current values (read on every Get/GetAll
   * and change). Throws when the implementation and the XML disagree.
   */
  export<I extends InterfaceName>(
    path: string,
    iface: I,
    implementation: InterfaceTypes[I]['service'],
    properties: () => InterfaceTypes[I]['properties'],
  ): ExportedInterface<I> {
    const contract = CONTRACT[iface] as InterfaceContract;
    const problems = checkImplementation(
      contract,
      implementation as object,
      properties() as unknown as Record<string, unknown>,
    );
    if (problems.length)
      throw new Error(`code and contract disagree at ${path}:\n  ${problems.join('\n  ')}`);
    let node = this.objects.get(path);
    if (!node) this.objects.set(path, (node = new Map()));
    node.set(iface, {
      contract,
      implementation: implementation as unknown as Exported['implementation'],
      properties: properties as unknown as () => Record<string, unknown>,
    });
    const manager = this.managerOf(path);
    if (manager) {
      this.send(
        Message.newSignal(manager, OM, 'InterfacesAdded', 'oa{sa{sv}}', [
          path,
          { [iface]: this.propertyVariants(node.get(iface)!) },
        ]),
      );
    }
    return new ExportedInterface(this, path, iface);
  }

  /** Remove one interface (or all) from `path`, announcing InterfacesRemoved. */
  unexport(path: string, iface?: InterfaceName): void {
    const node = this.objects.get(path);
    if (!node) return;
    const removed = iface ? (node.delete(iface) ? [iface] : []) : [...node.keys()];
    if (!iface || node.size === 0) this.objects.delete(path);
    const manager = this.managerOf(path);
    if (manager && removed.length)
      this.send(Message.newSignal(manager, OM, 'InterfacesRemoved', 'oas', [path, removed]));
  }

  isExported(path: string): boolean {
    return this.objects.has(path);
  }

  emitPropertiesChanged(path: string, iface: string, names: string[]): void {
    const e = this.objects.get(path)?.get(iface);
    if (!e || this.closed) return;
    const values = e.properties();
    const changed: Record<string, dbus.Variant> = {};
    for (const n of names) changed[n] = new Variant(e.contract.properties[n].type, values[n]);
    this.send(Message.newSignal(path, PROPS, 'PropertiesChanged', 'sa{sv}as', [iface, changed, []]));
  }

  send(msg: dbus.Message): void {
    if (this.closed) return;
    try {
      this.bus.send(msg);
    } catch (e) {
      this.log('error', `cannot send ${msg.interface}.${msg.member} on ${msg.path}: ${(e as Error).message}`);
    }
  }

  close(): void {
    this.closed = true;
    this.bus.removeMethodHandler(this.handler);
  }

  private managerOf(path: string): string | undefined {
    for (const m of this.managers) if (path !== m && path.startsWith(m === '/' ? '/' : m + '/')) return m;
    return undefined;
  }

  private propertyVariants(e: Exported): Record<string, dbus.Variant> {
    const values = e.properties();
    const out: Record<string, dbus.Variant> = {};
    for (const [name, p] of Object.entries(e.contract.properties))
      out[name] = new Variant(p.type, values[name]);
    return out;
  }

  private onMessage(msg: dbus.Message): boolean {
    if (msg.type !== METHOD_CALL || this.closed) return false;
    void this.dispatch(msg).catch((e) =>
      this.log('error', `dispatch of ${msg.member} failed: ${(e as Error).stack}`),
    );
    return true;
  }

  private reply(call: dbus.Message, signature: string, body: unknown[]): void {
    if ((call.flags & NO_REPLY_EXPECTED) !== 0) return;
    this.send(Message.newMethodReturn(call, signature, body));
  }

  private replyError(call: dbus.Message, name: string, text: string): void {
    if ((call.flags & NO_REPLY_EXPECTED) !== 0) return;
    this.send(Message.newError(call as unknown as string, name, text));
  }

  private async context(msg: dbus.Message): Promise<CallContext> {
    const uid = await this.identity.uidOf(msg.sender);
    return { sender: msg.sender, uid, roles: this.roles(uid) };
  }

  private async dispatch(msg: dbus.Message): Promise<void> {
    const { path, member } = msg;
    const iface = msg.interface;
    const sig = msg.signature ?? '';
    try {
      if (iface === PEER) {
        if (member === 'Ping') return this.reply(msg, '', []);
        throw new DispatchError(
          'org.freedesktop.DBus.Error.UnknownMethod',
          `Peer.${member} is not supported`,
        );
      }
      const ctx = await this.context(msg);
      if (iface === INTROSPECTABLE && member === 'Introspect') {
        this.requireAnyRole(ctx, 'Introspect');
        return this.reply(msg, 's', [this.introspect(path)]);
      }
      // Authorise before looking the object up, so an unauthorised caller learns nothing about
      // which objects exist.
      const declared = iface
        ? (CONTRACT as Record<string, InterfaceContract>)[iface]?.methods[member]
        : undefined;
      if (declared && !ctx.roles.has(declared.access) && !ctx.roles.has('root'))
        throw new BulkheadError('AccessDenied', `uid ${ctx.uid} may not call ${iface}.${member}`);
      const node = this.objects.get(path);
      if (iface === OM && member === 'GetManagedObjects' && this.managers.has(path)) {
        this.requireAnyRole(ctx, 'GetManagedObjects');
        return this.reply(msg, 'a{oa{sa{sv}}}', [this.managedObjects(path)]);
      }
      if (!node) throw new DispatchError('org.freedesktop.DBus.Error.UnknownObject', `no object at ${path}`);
      if (iface === PROPS) return this.properties(msg, node, ctx);
      const target = iface ? node.get(iface) : [...node.values()].find((e) => member in e.contract.methods);
      if (!target)
        throw new DispatchError(
          'org.freedesktop.DBus.Error.UnknownInterface',
          `no interface ${iface} at ${path}`,
        );
      const m = target.contract.methods[member];
      if (!m)
        throw new DispatchError(
          'org.freedesktop.DBus.Error.UnknownMethod',
          `${target.contract.name}.${member} does not exist`,
        );
      if (!ctx.roles.has(m.access) && !ctx.roles.has('root'))
        throw new BulkheadError(
          'AccessDenied',
          `uid ${ctx.uid} may not call ${target.contract.name}.${member}`,
        );
      if (sig !== m.inSignature)
        throw new BulkheadError('InvalidArgument', `${member} takes (${m.inSignature}), got (${sig})`);
      const result = await target.implementation[member].call(target.implementation, ctx, ...msg.body);
      const body = m.outArgs.length === 0 ? [] : m.outArgs.length === 1 ? [result] : (result as unknown[]);
      try {
        this.reply(msg, m.outSignature, body);
      } catch (e) {
        this.log(
          'error',
          `${member} returned a value that does not fit (${m.outSignature}): ${(e as Error).message}`,
        );
        this.replyError(msg, `${ERROR_PREFIX}Failed`, 'internal error (see the daemon log)');
      }
    } catch (e) {
      if (e instanceof DispatchError) return this.replyError(msg, e.dbusName, e.message);
      const r = toReplyError(e);
      if (r.internal) this.log('error', `${iface}.${member} on ${path} failed: ${(e as Error)?.stack ?? e}`);
      else this.log('debug', `${iface}.${member} on ${path}: ${r.name}: ${r.message}`);
      this.replyError(msg, r.name, r.message);
    }
  }

  private requireAnyRole(ctx: CallContext, what: string): void {
    if (ctx.roles.size === 0) throw new BulkheadError('AccessDenied', `uid ${ctx.uid} may not call ${what}`);
  }

  private properties(msg: dbus.Message, node: Map<string, Exported>, ctx: CallContext): void {
    this.requireAnyRole(ctx, `Properties.${msg.member}`);
    const [ifaceName, prop] = msg.body as [string, string];
    const e = node.get(ifaceName);
    if (msg.member === 'GetAll' && msg.signature === 's') {
      if (!e)
        throw new DispatchError('org.freedesktop.DBus.Error.UnknownInterface', `no interface ${ifaceName}`);
      return this.reply(msg, 'a{sv}', [this.propertyVariants(e)]);
    }
    if (msg.member === 'Get' && msg.signature === 'ss') {
      if (!e)
        throw new DispatchError('org.freedesktop.DBus.Error.UnknownInterface', `no interface ${ifaceName}`);
      const p = e.contract.properties[prop];
      if (!p)
        throw new DispatchError(
          'org.freedesktop.DBus.Error.UnknownProperty',
          `no property ${ifaceName}.${prop}`,
        );
      return this.reply(msg, 'v', [new Variant(p.type, e.properties()[prop])]);
    }
    if (msg.member === 'Set')
      throw new DispatchError(
        'org.freedesktop.DBus.Error.PropertyReadOnly',
        'properties are read-only; use the methods',
      );
    throw new DispatchError(
      'org.freedesktop.DBus.Error.InvalidArgs',
      `Properties.${msg.member}(${msg.signature})`,
    );
  }

  private managedObjects(managerPath: string): Record<string, Record<string, Record<string, dbus.Variant>>> {
    const out: Record<string, Record<string, Record<string, dbus.Variant>>> = {};
    for (const [path, node] of this.objects) {
      if (this.managerOf(path) !== managerPath) continue;
      out[path] = {};
      for (const [name, e] of node) out[path][name] = this.propertyVariants(e);
    }
    return out;
  }

  private introspect(path: string): string {
    const node = this.objects.get(path);
    const children = new Set<string>();
    const prefix = path === '/' ? '/' : path + '/';
    for (const p of this.objects.keys())
      if (p.startsWith(prefix) && p !== path) children.add(p.slice(prefix.length).split('/')[0]);
    let xml =
      '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n' +
      ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n<node>\n';
    xml += ` <interface name="${INTROSPECTABLE}"><method name="Introspect"><arg name="xml" type="s" direction="out"/></method></interface>\n`;
    xml += ` <interface name="${PEER}"><method name="Ping"/></interface>\n`;
    if (node) {
      xml += ` <interface name="${PROPS}"><method name="Get"><arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="v" direction="out"/></method><method name="GetAll"><arg type="s" direction="in"/><arg type="a{sv}" direction="out"/></method><signal name="PropertiesChanged"><arg type="s"/><arg type="a{sv}"/><arg type="as"/></signal></interface>\n`;
      for (const e of node.values()) xml += renderInterfaceXml(e.contract);
    }
    if (this.managers.has(path))
      xml += ` <interface name="${OM}"><method name="GetManagedObjects"><arg type="a{oa{sa{sv}}}" direction="out"/></method><signal name="InterfacesAdded"><arg type="o"/><arg type="a{sa{sv}}"/></signal><signal name="InterfacesRemoved"><arg type="o"/><arg type="as"/></signal></interface>\n`;
    for (const c of children) xml += ` <node name="${c}"/>\n`;
    return xml + '</node>\n';
  }
}

/** A standard (org.freedesktop.DBus.Error.*) error raised by the dispatcher itself. */
class DispatchError extends Error {
  constructor(
    readonly dbusName: string,
    message: string,
  ) {
    super(message);
  }
}
