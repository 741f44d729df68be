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
import {
  REPLY_MAX_CHARS,
  TEXT_MAX_CHARS,
  busBody,
  busString,
  busValue,
  isValidObjectPath,
} from './bus-values';

const { Message, Variant } = dbus;
const METHOD_CALL = 1;
const NO_REPLY_EXPECTED = 1;
const PROPS = 'org.freedesktop.DBus.Properties';
const OM = 'org.freedesktop.DBus.ObjectManager';
const INTROSPECTABLE = 'org.freedesktop.DBus.Introspectable';
const PEER = 'org.freedesktop.DBus.Peer';

export type Logger = (level: 'debug' | 'info' | 'warn' | 'error', msg: string) => void;

/**
 * Whether a named error that a method's XML does not declare (org.bulkhead.Errors) is a failure.
 * On by default under test: with BULKHEAD_STRICT_CONTRACT=1, and in every process started by
 * node's test runner (it sets NODE_TEST_CONTEXT, which the daemons a test spawns inherit), so the
 * whole test suite, fuzzers and fault tests included, proves the contract's error lists. Off in
 * production, where the error still reaches the caller and is logged.
 */
export function strictContractFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.BULKHEAD_STRICT_CONTRACT !== undefined) return env.BULKHEAD_STRICT_CONTRACT === '1';
  return env.NODE_TEST_CONTEXT !== undefined;
}

export interface ServiceHostOptions {
  roles?: RoleResolver;
  log?: Logger;
  /**
   * true: a method raising a named error its XML does not declare answers
   * org.bulkhead.Error.Failed ("undeclared error ...") and logs an error, so the test that caused
   * it fails. false: the error is answered as raised and a warning is logged. Default:
   * strictContractFromEnv().
   */
  strictContract?: boolean;
}

/** A named error a method raised although its XML does not list it. */
export interface ContractViolation {
  iface: string;
  member: string;
  error: string;
  message: string;
}

/**
 * Errors every method may return without declaring them, because the host itself raises them
 * before or instead of the implementation: AccessDenied (per-uid check), InvalidArgument (argument
 * signature check) and Failed (an internal error). An implementation raising AccessDenied or
 * InvalidArgument itself must still declare it.
 */
const HOST_ERRORS = new Set(['Failed']);

/**
 * The cap for a signal that carries property values: each value was already capped by its own
 * property's limit (org.bulkhead.MaxLength), which must not be cut again to the free-text cap.
 */
const PROPERTIES_CAPPED = REPLY_MAX_CHARS;

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
    this.host.sendSignal(this.path, this.iface, signal, s.signature, args as unknown[]);
  }
}

/**
 * Serves objects on a bus strictly by the contract. Why not dbus-next's Interface classes: their
 * method handlers never learn who called (no sender, so no per-caller authorisation), and their
 * decorators do not compile under current tsc. Here every call is checked against the XML's
 * signature, authorised by the caller's uid as the bus daemon reports it, and answered with a
 * named error on failure. Introspection, Properties, ObjectManager and Peer are served here too.
 * Everything it sends passes one boundary (bus-values.ts), so no value a daemon hands over can
 * make a message invalid or a call go unanswered; errors a method does not declare are caught
 * (strictContract).
 */
export class ServiceHost {
  private readonly objects = new Map<string, Map<string, Exported>>();
  private readonly managers = new Set<string>();
  private readonly identity: CallerIdentity;
  private readonly roles: RoleResolver;
  private readonly log: Logger;
  private readonly handler = (msg: dbus.Message): boolean => this.onMessage(msg);
  private closed = false;
  /**
   * Signals are held back until the host owns its well-known name: the bus policy restricts who
   * receives signals by the sender's well-known name (receive_sender), so a signal sent before
   * would reach every uid with a broad match rule.
   */
  private ownsName = false;
  readonly strictContract: boolean;
  /** Every undeclared named error seen (see ServiceHostOptions.strictContract). */
  readonly contractViolations: ContractViolation[] = [];

  constructor(
    readonly bus: dbus.MessageBus,
    opts: ServiceHostOptions = {},
  ) {
    this.identity = new CallerIdentity(bus);
    this.roles = opts.roles ?? systemRoleResolver();
    this.log =
      opts.log ??
      ((level, msg) => (level === 'debug' ? undefined : console.error(`[dbus] ${level}: ${msg}`)));
    this.strictContract = opts.strictContract ?? strictContractFromEnv();
    bus.addMethodHandler(this.handler);
  }

  /** Ask for a well-known name; fails unless we become its primary owner (no queueing). */
  async requestName(name: string): Promise<void> {
    const reply = await this.bus.requestName(name, dbus.NameFlag.DO_NOT_QUEUE);
    if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER)
      throw new Error(`D-Bus name ${name} is already owned by another process`);
    this.ownsName = true;
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
    // An invalid path (e.g. built from a hostile id without escaping) would make every message
    // about the object invalid; refuse it here, where the bug is.
    if (!isValidObjectPath(path))
      throw new Error(
        `cannot export ${iface}: ${JSON.stringify(busString(path, 200))} is not a valid object path`,
      );
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
      const e = node.get(iface)!;
      this.sendSignal(
        manager,
        OM,
        'InterfacesAdded',
        'oa{sa{sv}}',
        () => [path, { [iface]: this.propertyVariants(e) }],
        PROPERTIES_CAPPED,
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
    if (manager && removed.length) this.sendSignal(manager, OM, 'InterfacesRemoved', 'oas', [path, removed]);
  }

  isExported(path: string): boolean {
    return this.objects.has(path);
  }

  emitPropertiesChanged(path: string, iface: string, names: string[]): void {
    const e = this.objects.get(path)?.get(iface);
    if (!e || this.closed) return;
    this.sendSignal(
      path,
      PROPS,
      'PropertiesChanged',
      'sa{sv}as',
      () => {
        const values = e.properties();
        const changed: Record<string, dbus.Variant> = {};
        for (const n of names) changed[n] = this.propertyVariant(e, n, values[n]);
        return [iface, changed, []];
      },
      PROPERTIES_CAPPED,
    );
  }

  /**
   * Emit a signal: its arguments pass the bus boundary (bus-values.ts) first. `body` may be a
   * function, so that no property is read for a signal that is not sent. `maxChars` caps each
   * string (default: free text). Failures are logged: a signal has nobody to answer.
   */
  sendSignal(
    path: string,
    iface: string,
    member: string,
    signature: string,
    body: unknown[] | (() => unknown[]),
    maxChars = TEXT_MAX_CHARS,
  ): void {
    if (this.closed) return;
    if (!this.ownsName) {
      this.log('debug', `${iface}.${member} on ${path} not sent: no well-known name owned yet`);
      return;
    }
    try {
      const args = busBody(
        signature,
        typeof body === 'function' ? body() : body,
        this.valueOptions(`signal ${iface}.${member} on ${path}`, maxChars),
      );
      this.bus.send(Message.newSignal(path, iface, member, signature, args));
    } catch (e) {
      this.log('error', `cannot send ${iface}.${member} on ${path}: ${(e as Error).message}`);
    }
  }

  /** Send a message built elsewhere as it is (no boundary checks); failures are logged. */
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
    for (const name of Object.keys(e.contract.properties))
      out[name] = this.propertyVariant(e, name, values[name]);
    return out;
  }

  /** One property's value as a Variant, through the bus boundary with the property's own cap. */
  private propertyVariant(e: Exported, name: string, value: unknown): dbus.Variant {
    const p = e.contract.properties[name];
    const where = `property ${e.contract.name}.${name}`;
    return new Variant(
      p.type,
      busValue(p.type, value, this.valueOptions(where, p.maxLength ?? TEXT_MAX_CHARS)),
    );
  }

  private valueOptions(where: string, maxChars: number) {
    return {
      maxChars,
      onChange: (what: string) => this.log('warn', `${where}: ${what} made valid for the bus`),
    };
  }

  private onMessage(msg: dbus.Message): boolean {
    if (msg.type !== METHOD_CALL || this.closed) return false;
    void this.dispatch(msg).catch((e) => {
      // Last resort: whatever failed, the caller gets an answer rather than a timeout.
      this.log('error', `dispatch of ${msg.member} failed: ${(e as Error).stack}`);
      this.replyError(msg, `${ERROR_PREFIX}Failed`, 'internal error (see the daemon log)');
    });
    return true;
  }

  /**
   * Answer a call. The body passes the bus boundary; if it still cannot be marshalled, this throws
   * (the dispatcher then answers org.bulkhead.Error.Failed) instead of leaving the caller waiting.
   */
  private reply(call: dbus.Message, signature: string, body: unknown[], maxChars = REPLY_MAX_CHARS): void {
    if ((call.flags & NO_REPLY_EXPECTED) !== 0 || this.closed) return;
    const safe = busBody(
      signature,
      body,
      this.valueOptions(`reply of ${call.interface}.${call.member}`, maxChars),
    );
    this.bus.send(Message.newMethodReturn(call, signature, safe));
  }

  private replyError(call: dbus.Message, name: string, text: string): void {
    if ((call.flags & NO_REPLY_EXPECTED) !== 0) return;
    this.send(Message.newError(call as unknown as string, name, busString(String(text), TEXT_MAX_CHARS)));
  }

  /**
   * A named error raised by an implementation that its method does not declare: recorded and
   * logged; under strictContract it becomes Failed so that the caller (a test) sees it.
   */
  private checkDeclared(
    iface: string,
    member: string,
    m: { errors: readonly string[] },
    e: unknown,
  ): unknown {
    const r = toReplyError(e);
    if (r.internal || !r.name.startsWith(ERROR_PREFIX)) return e;
    const short = r.name.slice(ERROR_PREFIX.length);
    if (m.errors.includes(short) || HOST_ERRORS.has(short)) return e;
    this.contractViolations.push({ iface, member, error: short, message: r.message });
    const text = `${iface}.${member} raised ${short}, which its org.bulkhead.Errors annotation does not declare (${busString(r.message, 500)})`;
    if (!this.strictContract) {
      this.log('warn', text);
      return e;
    }
    this.log('error', `contract violation: ${text}`);
    return new BulkheadError('Failed', `undeclared error: ${text}`);
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
      // A caller with no role at all (not root, not the UI) gets the same answer for every call,
      // on an object that exists or not, with any interface: it learns nothing (Properties and
      // interfaces outside the contract were looked up first and told UnknownObject apart).
      this.requireAnyRole(ctx, `${iface ?? ''}.${member}`);
      if (iface === INTROSPECTABLE && member === 'Introspect') {
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
      let result: unknown;
      try {
        result = await target.implementation[member].call(target.implementation, ctx, ...msg.body);
      } catch (e) {
        throw this.checkDeclared(target.contract.name, member, m, e);
      }
      const body = m.outArgs.length === 0 ? [] : m.outArgs.length === 1 ? [result] : (result as unknown[]);
      this.reply(msg, m.outSignature, body);
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
      return this.reply(msg, 'v', [this.propertyVariant(e, prop, e.properties()[prop])]);
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
