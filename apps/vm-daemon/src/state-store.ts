import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { readJsonFile, setAsideSaying, writeFileAtomic, type Logger } from '@bulkhead/common';

/** What survives a daemon restart: the active VM and the slot map. */
export interface PersistedState {
  /** Id of the active VM, null = the switcher. */
  activeVm: string | null;
  /** VM id → slot, as last loaded. */
  slots: Record<string, number>;
  /**
   * Ids of the VMs the suspend transaction paused (written before the pause, cleared at the
   * resume): a daemon killed mid-suspend leaves them paused, and its successor resumes them.
   */
  pausedForSleep?: string[];
}

function validateState(v: unknown): PersistedState {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
  const o = v as Record<string, unknown>;
  if (o.activeVm !== null && typeof o.activeVm !== 'string')
    throw new Error('activeVm must be a string or null');
  if (!o.slots || typeof o.slots !== 'object' || Array.isArray(o.slots))
    throw new Error('slots must be an object');
  for (const [k, s] of Object.entries(o.slots))
    if (!Number.isInteger(s)) throw new Error(`slots.${k} must be an integer`);
  const paused = o.pausedForSleep ?? [];
  if (!Array.isArray(paused) || !paused.every((id) => typeof id === 'string'))
    throw new Error('pausedForSleep must be an array of VM ids');
  return {
    activeVm: o.activeVm as string | null,
    slots: o.slots as Record<string, number>,
    pausedForSleep: paused as string[],
  };
}

/** Size of state.json while its JSON fits: one page, rewritten in place (see save()). */
export const STATE_PAGE = 4096;

/** The state file (state.json in the state dir), written atomically. */
export class StateStore {
  readonly path: string;
  /** state.json, open for in-place page writes once a page-sized file is in place. */
  private fd: number | null = null;
  /** Why the file on disk was not usable at load ('' when it was, or did not exist). */
  loadProblem = '';

  constructor(
    dir: string,
    private readonly log: Logger,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    this.path = join(dir, 'state.json');
  }

  /** Read the state; a corrupt file is reported, moved aside (state.json.corrupt) and replaced. */
  load(): PersistedState {
    const r = readJsonFile(this.path, validateState);
    if (r.ok) return r.value;
    const empty: PersistedState = { activeVm: null, slots: {} };
    if (!r.missing) {
      this.loadProblem = r.error;
      // Kept aside, not overwritten: what it held is for a person to read (save() replaces it).
      const aside = setAsideSaying(this.path);
      this.log.error(`state file unusable, starting from an empty state: ${r.error}; ${aside}`);
      this.save(empty);
    }
    return empty;
  }

  /**
   * Written in every switch's publish step, before the switch answers (a SIGKILL right after
   * the answer must find the new ActiveVm). Without fsync (about 4 ms p50, 90 ms p99 on the bench
   * machine): the file is a hint for a restarted daemon while the VMs run on; a power loss stops
   * every VM, and a file it leaves empty, old or torn is reported and replaced at load. While the
   * JSON fits in one page the file is that page, padded with spaces, rewritten in place with ONE
   * pwrite: Linux copies a write page by page and stops for a fatal signal only between pages, so
   * a SIGKILLed daemon leaves the old or the new state. A temp file + rename per switch cost
   * ~2.5 ms of the publish step on the loaded bench machine (rename on a busy disk file system,
   * issue 17's switch tail); the first write, and a state outgrowing the page, still go that way.
   */
  save(state: PersistedState): void {
    const json = JSON.stringify(state, null, 2) + '\n';
    try {
      if (Buffer.byteLength(json) <= STATE_PAGE) {
        const page = Buffer.alloc(STATE_PAGE, 0x20);
        page.write(json);
        if (this.fd === null) {
          writeFileAtomic(this.path, page, 0o640, { durable: false });
          this.fd = openSync(this.path, 'r+');
        } else if (writeSync(this.fd, page, 0, STATE_PAGE, 0) !== STATE_PAGE) {
          throw new Error('short write');
        }
      } else {
        this.closeFile();
        writeFileAtomic(this.path, json, 0o640, { durable: false });
      }
    } catch (e) {
      this.closeFile();
      this.log.error(`cannot write the state file ${this.path}: ${(e as Error).message}`);
    }
  }

  /** Closes the file (it stays on disk); the next save starts a new one. */
  closeFile(): void {
    if (this.fd === null) return;
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
    this.fd = null;
  }
}
