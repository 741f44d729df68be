/**
 * The held-keys journal: which keys and buttons each VM may have down, kept in input-daemon's run
 * dir so that the NEXT input-daemon — after a SIGKILL or crash and systemd's restart — can release
 * them (issue 12 item 2: a key held while the daemon died stayed down in the VM for good).
 *
 * Why a journal and not "release every key on every sink opened": QEMU's PS/2 keyboard turns each
 * key-up into a break code whether or not the key is down, so ~250 key-ups per VM per (re)start
 * would flood every guest with releases of keys it never saw pressed (and overflow QEMU's small
 * PS/2 queue under TCG, losing real keys). The journal releases exactly what may be down.
 *
 * The one guarantee that matters: a guest can never have seen a press the journal does not hold.
 * So a press is written BEFORE the frame carrying it goes to the sink (Router rule 7), and a code
 * leaves the journal only once the sink confirms its release reached the VM (QMP answered). A
 * SIGKILL in between leaves a code recorded that is already up: the successor sends one spurious
 * release, which is harmless. No fsync: a SIGKILL does not lose the page cache, and the run dir is
 * a tmpfs whose VMs do not survive a power loss either.
 *
 * A reader sees the old or the new journal, never a mix. The file is one page (JOURNAL_PAGE bytes,
 * the JSON padded with spaces): once it exists, each update is ONE pwrite of that page at offset 0
 * on a descriptor kept open. Linux copies a write into the page cache page by page and gives up
 * for a fatal signal only between pages, so a single-page write is all or nothing for a SIGKILLed
 * writer. A journal that outgrows the page (hundreds of keys down at once) is written as a temp
 * file + rename instead, as the first write is. Why not always temp + rename: open, write, close
 * and rename on every key press cost ~180 µs on the loaded 2-core test machine, most of input-
 * daemon's time between a key arriving and its QMP write (issue 17's key latency); one pwrite
 * costs a few µs. The switcher's input is not journaled.
 *
 * File: <run dir>/held-keys.json = { "version": 1, "vms": { "<VM object path>": { "socket":
 * "<input QMP socket>", "codes": [<evdev code>, …] } } }.
 */
import { closeSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { defaultFileRules, readDefinitionFile, setAsideSaying } from '@bulkhead/common';
import { SWITCHER_PATH, vmIdFromPath } from '@bulkhead/contract';
import type { PressRecorder } from './router';
import type { InputSink } from './sinks/sink';

export const HELD_KEYS_FILE = 'held-keys.json';

/** Largest journal read (a page while its JSON fits; a VM holds at most a few dozen keys). */
const MAX_JOURNAL_BYTES = 1 << 20;

/** Size of the journal file while its JSON fits: one page, rewritten in place (see above). */
export const JOURNAL_PAGE = 4096;

/** Keys and buttons a VM may hold, and how to reach it. */
export interface HeldEntry {
  target: string;
  socket: string;
  codes: number[];
}

export interface JournalLogger {
  info(msg: string): void;
  warn(msg: string): void;
}

/**
 * Reads a journal. A missing file is empty; a malformed one is reported (naming the file and
 * what is wrong), kept aside as `<file>.corrupt` and treated as empty — never fatal.
 */
export function readHeldKeys(path: string, log: JournalLogger): HeldEntry[] {
  // A regular file of our own, bounded: a FIFO left there would hold the daemon's start for good.
  const read = readDefinitionFile(path, { ...defaultFileRules(), maxBytes: MAX_JOURNAL_BYTES });
  if (!read.ok && read.missing) return [];
  try {
    if (!read.ok) throw new Error(read.reason);
    const doc = JSON.parse(read.text) as unknown;
    const vms = (doc as { vms?: unknown })?.vms;
    if (
      (doc as { version?: unknown })?.version !== 1 ||
      !vms ||
      typeof vms !== 'object' ||
      Array.isArray(vms)
    )
      throw new Error('expected { "version": 1, "vms": { … } }');
    const out: HeldEntry[] = [];
    for (const [target, v] of Object.entries(vms as Record<string, unknown>)) {
      const { socket, codes } = (v ?? {}) as { socket?: unknown; codes?: unknown };
      if (vmIdFromPath(target) === null) throw new Error(`vms: '${target}' is not a VM object path`);
      if (typeof socket !== 'string' || !socket) throw new Error(`vms['${target}'].socket: expected a path`);
      if (
        !Array.isArray(codes) ||
        !codes.every((c) => Number.isInteger(c) && (c as number) > 0 && (c as number) < 0x300)
      )
        throw new Error(`vms['${target}'].codes: expected key codes 1…0x2ff`);
      out.push({ target, socket, codes: codes as number[] });
    }
    return out;
  } catch (e) {
    const aside = setAsideSaying(path);
    log.warn(`${path}: ${(e as Error).message}; ${aside}, no held keys are released from it`);
    return [];
  }
}

/** The live journal (a PressRecorder for the router). `dir` null = not kept (tests, no run dir). */
export class HeldKeysJournal implements PressRecorder {
  readonly path: string | null;
  /** Per VM target: its socket and code → sequence number of the press that put it there. */
  private readonly vms = new Map<string, { socket: string; codes: Map<number, number> }>();
  private seq = 0;
  private failed = false;
  /** The journal file, open for in-place page writes once a page-sized file is in place. */
  private fd: number | null = null;
  /** Writes done (diagnostics, bench). */
  writes = 0;

  constructor(
    dir: string | null,
    private readonly log: JournalLogger,
  ) {
    this.path = dir ? join(dir, HELD_KEYS_FILE) : null;
    if (dir) {
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
      } catch (e) {
        this.disable(`cannot create ${dir}: ${(e as Error).message}`);
      }
    }
  }

  /** Where `target`'s sink reaches its VM (its QMP socket), for the successor. */
  setSocket(target: string, socket: string): void {
    const v = this.vms.get(target);
    if (v) v.socket = socket;
    else this.vms.set(target, { socket, codes: new Map() });
  }

  /** Takes over entries read at start (kept until their release is confirmed). */
  adopt(entries: HeldEntry[]): void {
    for (const e of entries) {
      this.setSocket(e.target, e.socket);
      for (const c of e.codes) this.vms.get(e.target)!.codes.set(c, ++this.seq);
    }
  }

  willPress(sink: InputSink, codes: readonly number[]): void {
    const v = this.vms.get(sink.target);
    if (!v || sink.target === SWITCHER_PATH) return;
    let added = false;
    for (const c of codes) {
      if (!v.codes.has(c)) added = true;
      v.codes.set(c, ++this.seq);
    }
    if (added) this.write();
  }

  released(sink: InputSink, codes: readonly number[]): void {
    const v = this.vms.get(sink.target);
    if (!v || sink.target === SWITCHER_PATH) return;
    const pressSeq = codes.map((c) => [c, v.codes.get(c)] as const).filter(([, s]) => s !== undefined);
    if (!pressSeq.length) return;
    const forget = () => {
      let removed = false;
      // Pressed again since: that newer press is still (maybe) down.
      for (const [c, s] of pressSeq)
        if (v.codes.get(c) === s) {
          v.codes.delete(c);
          removed = true;
        }
      if (removed) this.write();
    };
    if (!sink.delivered) return forget();
    void sink.delivered().then((ok) => {
      if (ok) forget();
    });
  }

  /** Codes `target` may hold now (tests, diagnostics). */
  codesOf(target: string): number[] {
    return [...(this.vms.get(target)?.codes.keys() ?? [])];
  }

  private write(): void {
    if (!this.path || this.failed) return;
    const vms: Record<string, { socket: string; codes: number[] }> = {};
    for (const [target, v] of this.vms)
      if (v.codes.size) vms[target] = { socket: v.socket, codes: [...v.codes.keys()] };
    const json = JSON.stringify({ version: 1, vms });
    try {
      if (Buffer.byteLength(json) <= JOURNAL_PAGE) {
        const page = Buffer.alloc(JOURNAL_PAGE, 0x20);
        page.write(json);
        if (this.fd === null) {
          this.replaceFile(page);
          this.fd = openSync(this.path, 'r+');
        } else if (writeSync(this.fd, page, 0, JOURNAL_PAGE, 0) !== JOURNAL_PAGE) {
          throw new Error('short write');
        }
      } else {
        // Too big for one atomic page: a whole new file, and the next page-sized journal starts
        // a new page file too.
        this.closeFd();
        this.replaceFile(Buffer.from(json));
      }
      this.writes++;
    } catch (e) {
      this.closeFd();
      this.disable(`writing ${this.path} failed: ${(e as Error).message}`);
    }
  }

  /** Temp file + rename: readers see the old file or the new one. */
  private replaceFile(data: Buffer): void {
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, this.path!);
  }

  private closeFd(): void {
    if (this.fd === null) return;
    try {
      closeSync(this.fd);
    } catch {
      /* already gone */
    }
    this.fd = null;
  }

  /** Closes the journal file (it stays on disk for the next daemon). */
  close(): void {
    this.closeFd();
  }

  private disable(why: string): void {
    this.failed = true;
    this.log.warn(`${why}; keys held in a VM when this daemon dies will not be released by the next one`);
  }
}
