/**
 * Who is at the other end of a loopback TCP connection: the uid owning the peer's socket, as the
 * kernel lists it in /proc/net/tcp (tcp6 for IPv6). The web host uses it to accept connections
 * only from the kiosk's uid: its token alone lets any local uid that learns it act as the switcher.
 *
 * Both ends of a loopback connection are sockets of this network namespace, so both are listed:
 * ours (local = our address, remote = the peer's) and the peer's (local = the peer's address,
 * remote = ours). The peer's line carries its owner's uid.
 */
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { endianness } from 'node:os';

export interface ProcNetTcpEntry {
  local: { address: string; port: number };
  remote: { address: string; port: number };
  /** The TCP state (01 ESTABLISHED, 0A LISTEN, 06 TIME_WAIT, ...). */
  state: number;
  uid: number;
  /**
   * The socket's inode; 0 when no process holds the socket any more (closed, or a TIME_WAIT
   * minisock). Such lines list uid 0 whoever owned the socket.
   */
  inode: number;
}

const HOST_IS_LITTLE_ENDIAN = endianness() === 'LE';

/**
 * An address in the form Node gives a socket's (net.Socket remoteAddress, localAddress): IPv4
 * dotted, IPv6 compressed lowercase (IPv4-mapped ones as `::ffff:7f00:1`, whatever form came in),
 * or null when it is neither (a zone id, garbage).
 */
export function canonicalAddress(address: string): string | null {
  if (isIPv4(address)) return address;
  if (!isIPv6(address)) return null;
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
}

/**
 * /proc/net/tcp's hex address: the in_addr (8 digits) or in6_addr (32 digits) printed as 32-bit
 * words in the host's byte order (`%08X` of each __be32 read as a u32): on a little-endian host
 * 127.0.0.1 is 0100007F and ::1 is 00000000000000000000000001000000.
 */
export function addressFromProcHex(hex: string, littleEndian = HOST_IS_LITTLE_ENDIAN): string | null {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || (hex.length !== 8 && hex.length !== 32)) return null;
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) {
    const word = parseInt(hex.slice(w * 8, w * 8 + 8), 16);
    if (littleEndian) bytes.writeUInt32LE(word, w * 4);
    else bytes.writeUInt32BE(word, w * 4);
  }
  if (bytes.length === 4) return [...bytes].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return canonicalAddress(groups.join(':'));
}

function endpoint(field: string, littleEndian: boolean): { address: string; port: number } | null {
  const m = /^([0-9A-Fa-f]+):([0-9A-Fa-f]{4})$/.exec(field);
  const address = m && addressFromProcHex(m[1], littleEndian);
  return address ? { address, port: parseInt(m[2], 16) } : null;
}

/**
 * One line of /proc/net/tcp or /proc/net/tcp6, or null for the header or anything not shaped
 * like a socket's line:
 *   `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ...`
 *   `   3: 0200007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000   999        0 41234 ...`
 */
export function parseProcNetTcpLine(
  line: string,
  littleEndian = HOST_IS_LITTLE_ENDIAN,
): ProcNetTcpEntry | null {
  const f = line.trim().split(/\s+/);
  if (f.length < 10 || !/^\d+:$/.test(f[0])) return null;
  const local = endpoint(f[1], littleEndian);
  const remote = endpoint(f[2], littleEndian);
  if (!local || !remote || !/^[0-9A-Fa-f]{2}$/.test(f[3]) || !/^\d+$/.test(f[7]) || !/^\d+$/.test(f[9]))
    return null;
  return { local, remote, state: parseInt(f[3], 16), uid: Number(f[7]), inode: Number(f[9]) };
}

/** The two ends of an accepted connection, as net.Socket has them. */
export interface ConnectionEnds {
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
}

/**
 * The uid owning the peer's end of `conn` (an accepted loopback TCP connection), or null when no
 * process of this network namespace holds it: the peer is on another machine or namespace, or it
 * closed its socket already (its line then says uid 0, which is not its owner). Also null when two
 * live lines disagree. Throws when the table cannot be read.
 */
export function peerUid(
  conn: ConnectionEnds,
  readTable: (file: string) => string = (file) => readFileSync(file, 'latin1'),
): number | null {
  const { localAddress, localPort, remoteAddress, remotePort } = conn;
  if (localAddress === undefined || remoteAddress === undefined) return null;
  const ours = canonicalAddress(localAddress);
  const peers = canonicalAddress(remoteAddress);
  if (!ours || !peers) return null;
  // A socket is listed under its own family: an AF_INET listener's connections in tcp, an
  // AF_INET6 one's (IPv4-mapped peers included) in tcp6.
  const table = readTable(isIPv4(localAddress) ? '/proc/net/tcp' : '/proc/net/tcp6');
  const uids = new Set<number>();
  for (const line of table.split('\n')) {
    const e = parseProcNetTcpLine(line);
    if (
      e &&
      e.inode !== 0 &&
      e.local.port === remotePort &&
      e.remote.port === localPort &&
      e.local.address === peers &&
      e.remote.address === ours
    )
      uids.add(e.uid);
  }
  return uids.size === 1 ? [...uids][0] : null;
}

/**
 * The uid of `user`: a number as it is, else the name's entry in `passwdText` (/etc/passwd's
 * content; only local accounts, as the image's are). Null when there is no such user.
 */
export function uidOfUser(user: string, passwdText: string): number | null {
  if (/^\d+$/.test(user)) return Number(user);
  for (const line of passwdText.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && f[0] === user && /^\d+$/.test(f[2])) return Number(f[2]);
  }
  return null;
}
