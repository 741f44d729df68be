import {
  closeSync,
  fsyncSync,
  lstatSync,
  openSync,
  renameSync,
  writeSync,
  unlinkSync,
  existsSync,
} from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { defaultFileRules, readDefinitionFile } from './config-file';

/**
 * Write a file so that a reader (or a reboot after power loss) sees either the old or the new
 * content, never a mix: write a temporary file beside it, fsync it, rename over, fsync the dir.
 * `durable: false` leaves out both fsyncs: still old-or-new for every reader and across a crash
 * of the process (the page cache survives it), but a power loss may leave an older or an empty
 * file — only for files whose content is void after a power loss anyway (e.g. which VM was
 * active: no VM survives one), written where an fsync's milliseconds count.
 */
export function writeFileAtomic(
  path: string,
  data: string | Buffer,
  mode = 0o644,
  opts: { durable?: boolean } = {},
): void {
  const durable = opts.durable ?? true;
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off);
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    if (existsSync(tmp)) unlinkSync(tmp);
    throw e;
  }
  if (!durable) return;
  try {
    const dfd = openSync(dirname(path), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic.
  }
}

export type JsonFileResult<T> = { ok: true; value: T } | { ok: false; missing: boolean; error: string };

/** Largest state file read: each daemon's is a few KiB at most. */
export const MAX_STATE_FILE_BYTES = 1 << 20;

/**
 * Read and parse a JSON state file; a missing or corrupt file is reported, never thrown. What is
 * not a regular file of the daemon's own uid (a FIFO would block the daemon's start for good, a
 * symlink would be followed), is writable by others, or is larger than `maxBytes` (a huge valid
 * JSON would exhaust the daemon's bounded heap on every start) counts as corrupt.
 */
export function readJsonFile<T>(
  path: string,
  validate: (v: unknown) => T,
  maxBytes = MAX_STATE_FILE_BYTES,
): JsonFileResult<T> {
  const read = readDefinitionFile(path, { ...defaultFileRules(), maxBytes });
  if (!read.ok)
    return read.missing
      ? { ok: false, missing: true, error: `${path}: missing` }
      : { ok: false, missing: false, error: `${path}: ${read.reason}` };
  const text = read.text;
  try {
    return { ok: true, value: validate(JSON.parse(text)) };
  } catch (e) {
    return { ok: false, missing: false, error: `${path}: corrupt: ${(e as Error).message}` };
  }
}

/** How many earlier unusable copies of one file are kept beside it (bounds the disk they use). */
export const MAX_SET_ASIDE_COPIES = 5;

/**
 * Move an unusable state file out of the way before the daemon replaces it, so that nothing in it
 * is lost: the first goes to `<file>.corrupt`, later ones to `<file>.corrupt.1` … `.N` while the
 * earlier copies are kept (a second bad file must not overwrite the first, which may be the one
 * worth reading); past MAX_SET_ASIDE_COPIES the newest slot is reused. The rename moves whatever
 * is at the path (a symlink itself, not its target; a FIFO without opening it). Returns the new
 * path, or null when the file could not be moved (the caller's next write replaces it then).
 */
export function setAsideUnusableFile(path: string): string | null {
  const candidates = [`${path}.corrupt`];
  for (let i = 1; i <= MAX_SET_ASIDE_COPIES - 1; i++) candidates.push(`${path}.corrupt.${i}`);
  const free = candidates.find((c) => !lexists(c)) ?? candidates[candidates.length - 1];
  try {
    renameSync(path, free);
    return free;
  } catch {
    return null;
  }
}

/** setAsideUnusableFile, then what became of the file, for the caller's log line. */
export function setAsideSaying(path: string): string {
  const aside = setAsideUnusableFile(path);
  return aside ? `kept aside as ${aside}` : 'could not be moved aside';
}

function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
