import { BulkheadError } from '@bulkhead/contract';

/** Decides whether an Unlock request may unlock the seat; throws a named BulkheadError if not. */
export interface UnlockCheck {
  attempt(password: unknown): Promise<void>;
}

/**
 * Unlock without a password: only for the virtual seat (the demo and tests on a developer's
 * machine, where the "seat" is a browser window and there is no account to check). main.ts refuses
 * it with any hardware seat.
 */
export class PasswordlessUnlock implements UnlockCheck {
  async attempt(password: unknown): Promise<void> {
    if (password !== undefined && typeof password !== 'string')
      throw new BulkheadError('InvalidArgument', "Unlock: option 'password' must be a string");
  }
}
