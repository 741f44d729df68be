import { DBusError } from 'dbus-next';
import { BulkheadError, ERRORS, ERROR_PREFIX, type ErrorName } from '@bulkhead/contract';

/** A D-Bus error reply that is not one of ours (policy denial, unknown service, no reply, ...). */
export class BusCallError extends Error {
  constructor(
    public readonly dbusName: string,
    message: string,
  ) {
    super(message);
    this.name = dbusName;
  }
}

/** Turns an error reply received from the bus into a BulkheadError (ours) or a BusCallError. */
export function fromDBusError(e: unknown, what: string): Error {
  if (e instanceof DBusError) {
    if (e.type.startsWith(ERROR_PREFIX)) {
      const short = e.type.slice(ERROR_PREFIX.length);
      if (short in ERRORS) return new BulkheadError(short as ErrorName, e.text);
    }
    return new BusCallError(e.type, `${what}: ${e.text || e.type}`);
  }
  return e instanceof Error ? e : new Error(`${what}: ${String(e)}`);
}

/**
 * What a caller sees when a method throws: our named errors pass through with their message;
 * errors from another daemon of ours keep their name; anything else is an internal failure whose
 * details stay in the log (callers never see stack traces).
 */
export function toReplyError(e: unknown): { name: string; message: string; internal: boolean } {
  if (e instanceof BulkheadError) return { name: e.dbusName, message: e.message, internal: false };
  if (e instanceof DBusError && e.type.startsWith(ERROR_PREFIX))
    return { name: e.type, message: e.text, internal: false };
  return { name: `${ERROR_PREFIX}Failed`, message: 'internal error (see the daemon log)', internal: true };
}
