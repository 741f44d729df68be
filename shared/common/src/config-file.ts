/**
 * Reading a configuration file an administrator put in place (vm-daemon's VM definitions and
 * power.json, usb-daemon's rules, input-daemon's hotkeys). The dir is trusted only as far as its files are what an
 * admin put there: a `*.json` that is a FIFO (a read would block the daemon forever), a socket,
 * a device, a directory or a symlink (to /etc/shadow, say: its first bytes would be quoted in a
 * JSON syntax error) is refused from its lstat, before it is opened, and without a byte of it in
 * the error. A regular file must be owned by root (or, when the daemon does not run as root, by
 * the daemon's own user), must not be writable by group or others, and must fit MAX_FILE_BYTES.
 *
 * The checks are made again on the open descriptor (O_NOFOLLOW | O_NONBLOCK, then fstat): a file
 * swapped for a FIFO or a symlink between lstat and open is refused, not waited on.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from 'node:fs';

/** Largest definition file read by default (a VM definition is well under 1 KiB). */
export const MAX_FILE_BYTES = 64 * 1024;

/** What a file is, by its mode, in the words of an error. */
export function fileKind(st: Stats): string {
  if (st.isFile()) return 'regular file';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isDirectory()) return 'directory';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'unknown file type';
}

export interface FileRules {
  /** The uid that must own every definition file. */
  ownerUid: number;
  /** Largest file read, in bytes. */
  maxBytes: number;
}

/** Root's files when the daemon runs as root; else the daemon's own user's (tests, development). */
export function defaultFileRules(): FileRules {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return { ownerUid: uid, maxBytes: MAX_FILE_BYTES };
}

export type FileRead =
  | { ok: true; text: string }
  /** `missing`: there is no file by that name (ENOENT), as opposed to one that was refused. */
  | { ok: false; reason: string; missing?: true };

/** Why `st` (from lstat or fstat) may not be read as a definition file, or null. */
function refusal(st: Stats, rules: FileRules): string | null {
  if (!st.isFile()) return `not a regular file (${fileKind(st)})`;
  if (st.uid !== rules.ownerUid)
    return `owned by uid ${st.uid}, must be owned by uid ${rules.ownerUid}${rules.ownerUid === 0 ? ' (root)' : ''}`;
  if ((st.mode & 0o022) !== 0) {
    const who = [st.mode & 0o020 ? 'group' : '', st.mode & 0o002 ? 'others' : '']
      .filter(Boolean)
      .join(' and ');
    return `writable by ${who} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}); chmod go-w it`;
  }
  if (st.size > rules.maxBytes)
    return `the file is ${st.size} bytes, larger than the ${rules.maxBytes}-byte limit for this file`;
  return null;
}

/**
 * Open for reading without following a symlink (ELOOP), without waiting for a FIFO's writer and
 * without taking a terminal: the caller then judges what it opened (fstat).
 */
export function openReadOnlyNoWait(path: string): number {
  return openSync(
    path,
    constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY,
  );
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Read one definition file by the rules above. Never blocks on a special file, never follows a
 * symlink, never reads more than `rules.maxBytes + 1` bytes; a refusal's reason quotes nothing of
 * the file's content.
 */
export function readDefinitionFile(file: string, rules: FileRules = defaultFileRules()): FileRead {
  let st: Stats;
  try {
    st = lstatSync(file);
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    return {
      ok: false,
      reason: `cannot read: ${errnoText(e)}`,
      ...(missing ? { missing: true as const } : {}),
    };
  }
  const before = refusal(st, rules);
  if (before) return { ok: false, reason: before };
  let fd: number;
  try {
    fd = openReadOnlyNoWait(file);
  } catch (e) {
    // ELOOP: the name became a symlink after the lstat.
    const code = (e as NodeJS.ErrnoException).code;
    return {
      ok: false,
      reason: code === 'ELOOP' ? 'not a regular file (symlink)' : `cannot open: ${errnoText(e)}`,
    };
  }
  try {
    // The name may have been swapped between lstat and open: judge what was opened.
    const after = refusal(fstatSync(fd), rules);
    if (after) return { ok: false, reason: after };
    // Read one byte past the limit so a file that grew after the fstat is caught.
    const buf = Buffer.alloc(rules.maxBytes + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
      if (n === buf.length)
        return { ok: false, reason: `the file grew past the ${rules.maxBytes}-byte limit while being read` };
    }
    try {
      return { ok: true, text: fatalUtf8.decode(buf.subarray(0, n)) };
    } catch {
      return { ok: false, reason: 'not valid UTF-8 text' };
    }
  } catch (e) {
    return { ok: false, reason: `cannot read: ${errnoText(e)}` };
  } finally {
    closeSync(fd);
  }
}

/** An fs error without the path node puts in its message (the caller names the file). */
function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  // No code: a message of our own making; printable ASCII only, bounded (it may name the path).
  return err.code
    ? `${err.code} (${err.syscall ?? 'fs'})`
    : String(err.message)
        .replace(/[^\x20-\x7e]/g, '?')
        .slice(0, 200);
}
