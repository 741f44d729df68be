/** Who called a method: established by the toolkit from the bus, never from the message body. */
export interface CallContext {
  /** Unique bus name of the caller, e.g. ":1.42". */
  sender: string;
  /** Unix uid of the caller's process, as the bus daemon reports it. */
  uid: number;
  /** Roles granted to that uid ('root', 'ui'). */
  roles: ReadonlySet<Role>;
}

/** 'root': the daemons and the administrator. 'ui': the switcher's user (group bulkhead-ui). */
export type Role = 'root' | 'ui';

export interface ArgContract {
  readonly name: string;
  readonly type: string;
}
export interface MethodContract {
  readonly doc: string;
  readonly access: Role;
  readonly errors: readonly string[];
  readonly inArgs: readonly ArgContract[];
  readonly outArgs: readonly ArgContract[];
  readonly inSignature: string;
  readonly outSignature: string;
}
export interface PropertyContract {
  readonly type: string;
  readonly access: string;
  readonly doc: string;
  /**
   * Longest string (UTF-16 code units) of this property's value on the bus, from the XML's
   * org.bulkhead.MaxLength annotation; when absent, the toolkit's cap for free text (4096) applies.
   */
  readonly maxLength?: number;
}
export interface SignalContract {
  readonly doc: string;
  readonly args: readonly ArgContract[];
  readonly signature: string;
}
export interface InterfaceContract {
  readonly name: string;
  readonly doc: string;
  readonly methods: Readonly<Record<string, MethodContract>>;
  readonly properties: Readonly<Record<string, PropertyContract>>;
  readonly signals: Readonly<Record<string, SignalContract>>;
}

/**
 * The client view of a generated <Interface>Service: each method without the CallContext (the bus
 * supplies it), answering a promise. One definition for every interface, so the methods are
 * declared (and documented) once, in the Service.
 */
export type ClientOf<S> = {
  [M in keyof S]: S[M] extends (ctx: CallContext, ...args: infer A) => infer R
    ? (...args: A) => Promise<Awaited<R>>
    : never;
};
