/**
 * The named errors of the contract. A method's XML lists which of these it may return
 * (org.bulkhead.Errors); a test fails when the XML names an error that is not here.
 * Callers see `org.bulkhead.Error.<Name>` with a human message, never a stack trace.
 */
export const ERRORS = {
  NoSuchVm: 'No VM with that object path, id or slot exists.',
  NoSuchDevice: 'No device or attachment with that id exists (or it vanished).',
  InvalidState: 'The entity is not in a state that allows the operation (e.g. Start on a running VM).',
  InvalidConfig:
    'A definition or rules file is invalid; the message names the file, the field and the reason.',
  SwitchInProgress: 'Another switch is running; only one switch runs at a time.',
  Superseded: 'A newer switch request replaced this one before it ran (the last request wins).',
  Locked: 'The seat is locked; unlock first.',
  AuthenticationFailed: 'The password was not accepted; the message says when the next try is allowed.',
  TryAgainLater: 'Too many failed attempts: the message says how many seconds to wait before the next one.',
  PolicyDenied: 'The USB policy refuses this.',
  AccessDenied: 'The caller may not call this method.',
  BackendFailed: 'The hypervisor backend (QEMU, xl) failed; the message carries its own words.',
  InvalidArgument: 'An argument has the wrong type, range or value; the message names it.',
  Timeout: 'The operation did not finish in time.',
  GpuResetFailed:
    "The GPU could not be reset between two holders: it was not handed on (it would carry the previous holder's picture) and stays with the holder it came from, or with the Control Domain.",
  NotSupported: 'This backend or seat does not support the operation.',
  NotOwner:
    "The VM belongs to the administrator (its file is in the admin's VM directory): the UI may start, stop and switch to it, never edit or delete it.",
  Cancelled: 'The operation was cancelled on request; it left nothing behind.',
  Unavailable:
    'The VM was made on the other boot entry (its file is for the other hypervisor backend): it is listed and kept, but it cannot start, be switched to or change here (Vm1.Unavailable says why).',
  Failed: 'An unexpected internal error; details are in the daemon log.',
} as const;

export type ErrorName = keyof typeof ERRORS;
export const ERROR_PREFIX = 'org.bulkhead.Error.';

/** An error that reaches D-Bus callers as org.bulkhead.Error.<name> with its message. */
export class BulkheadError extends Error {
  constructor(
    public readonly errorName: ErrorName,
    message: string,
  ) {
    super(message);
    this.name = `${ERROR_PREFIX}${errorName}`;
  }
  get dbusName(): string {
    return `${ERROR_PREFIX}${this.errorName}`;
  }
}

/** True when `e` is a BulkheadError with the given name (also for errors received over D-Bus). */
export function isBulkheadError(e: unknown, name?: ErrorName): e is BulkheadError {
  return e instanceof BulkheadError && (name === undefined || e.errorName === name);
}
