/**
 * D-Bus property dicts as the daemon mirrors receive them. Turning them into the switcher's model is
 * generated from the contract (<Interface>ViewPatch in @bulkhead/contract), one entry per property.
 */
import { ContractValueError } from '@bulkhead/contract';

export type Props = Record<string, unknown>;

/**
 * A typed dict (org.bulkhead.Dict) from a daemon, read with its generated decoder: null when the
 * daemon has published none yet (an empty dict), or when it does not match the contract — then it is
 * reported, naming the key, and shown as nothing rather than as a half-read value.
 */
export function decodeDictOrNull<T>(what: string, decode: (d: unknown) => T, d: unknown): T | null {
  if (!d || typeof d !== 'object' || Object.keys(d).length === 0) return null;
  try {
    return decode(d);
  } catch (e) {
    if (!(e instanceof ContractValueError)) throw e;
    console.error(`switcher: ignoring ${what} from vm-daemon: ${e.message}`);
    return null;
  }
}
