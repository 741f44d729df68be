import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection, createServer, type Socket } from 'node:net';
import { NOBODY, holdConnectionAs } from '../testing/connect-as';
import { addressFromProcHex, canonicalAddress, parseProcNetTcpLine, peerUid, uidOfUser } from './peer-uid';

// Lines as a little-endian host's kernel prints them (x86, arm64).
const HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const PEER_V4 =
  '   3: 0100007F:A1B2 0200007F:1F90 01 00000000:00000000 00:00000000 00000000   999        0 41234 1 0000000000000000 20 4 30 10 -1';
const OURS_V4 =
  '   4: 0200007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000   998        0 41235 1 0000000000000000 20 4 30 10 -1';
const TIME_WAIT_V4 =
  '   5: 0100007F:A1B2 0200007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000';
const PEER_V6 =
  '   0: 00000000000000000000000001000000:C350 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000 65534        0 5555 1 0000000000000000 20 4 30 10 -1';
const MAPPED_V6 =
  '   1: 0000000000000000FFFF00000100007F:C351 0000000000000000FFFF00000200007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 5556 1 0000000000000000 20 4 30 10 -1';

test('/proc/net/tcp lines: addresses little-endian per 32-bit word, ports, state, uid and inode', () => {
  assert.equal(parseProcNetTcpLine(HEADER, true), null);
  assert.deepEqual(parseProcNetTcpLine(PEER_V4, true), {
    local: { address: '127.0.0.1', port: 41394 },
    remote: { address: '127.0.0.2', port: 8080 },
    state: 1,
    uid: 999,
    inode: 41234,
  });
  assert.deepEqual(parseProcNetTcpLine(TIME_WAIT_V4, true), {
    local: { address: '127.0.0.1', port: 41394 },
    remote: { address: '127.0.0.2', port: 8080 },
    state: 6,
    uid: 0,
    inode: 0,
  });
  assert.deepEqual(parseProcNetTcpLine(PEER_V6, true), {
    local: { address: '::1', port: 50000 },
    remote: { address: '::1', port: 8080 },
    state: 1,
    uid: 65534,
    inode: 5555,
  });
  const mapped = parseProcNetTcpLine(MAPPED_V6, true);
  assert.equal(mapped?.local.address, '::ffff:7f00:1');
  assert.equal(mapped?.remote.address, canonicalAddress('::ffff:127.0.0.2'));
  // Each 32-bit word on its own: fe80::1 is not the whole 16 bytes reversed.
  assert.equal(addressFromProcHex('000080FE000000000000000001000000', true), 'fe80::1');
  // A big-endian host prints the words in network order.
  assert.equal(addressFromProcHex('7F000002', false), '127.0.0.2');
  assert.equal(addressFromProcHex('00000000000000000000000000000001', false), '::1');
  for (const bad of [
    '',
    'garbage',
    PEER_V4.replace('0100007F:A1B2', '100007F:A1B2'), // 7 hex digits
    PEER_V4.replace('0100007F:A1B2', '0100007G:A1B2'),
    PEER_V4.replace(':A1B2', ':A1B'),
    PEER_V4.replace('   999 ', '   -1 '),
    PEER_V4.split(/\s+/).slice(0, 8).join(' '), // cut before the inode
  ])
    assert.equal(parseProcNetTcpLine(bad, true), null, bad);
});

test("peerUid: the peer's own line, not ours; a line no process holds (uid 0) or two disagreeing lines are no answer", (t) => {
  if (parseProcNetTcpLine(PEER_V4)?.local.address !== '127.0.0.1')
    return t.skip("the samples are a little-endian host's");
  const conn = { localAddress: '127.0.0.2', localPort: 8080, remoteAddress: '127.0.0.1', remotePort: 41394 };
  const files: string[] = [];
  const table = (lines: string[]) => (file: string) => {
    files.push(file);
    return [HEADER, ...lines].join('\n');
  };
  assert.equal(peerUid(conn, table([OURS_V4, PEER_V4])), 999);
  assert.deepEqual(files, ['/proc/net/tcp']);
  assert.equal(peerUid(conn, table([OURS_V4])), null, 'only our end listed');
  assert.equal(
    peerUid(conn, table([OURS_V4, TIME_WAIT_V4])),
    null,
    'the peer closed: uid 0 is not its owner',
  );
  assert.equal(peerUid(conn, table([PEER_V4, PEER_V4.replace('   999 ', '  1000 ')])), null);
  assert.equal(peerUid({ ...conn, remotePort: 41395 }, table([OURS_V4, PEER_V4])), null, 'another port');
  assert.equal(peerUid({ ...conn, remoteAddress: undefined }, table([PEER_V4])), null);
  files.length = 0;
  const v6 = { localAddress: '::1', localPort: 8080, remoteAddress: '::1', remotePort: 50000 };
  assert.equal(peerUid(v6, table([PEER_V6])), 65534);
  assert.deepEqual(files, ['/proc/net/tcp6']);
  const mapped = {
    localAddress: '::ffff:127.0.0.2',
    localPort: 8080,
    remoteAddress: '::ffff:127.0.0.1',
    remotePort: 50001,
  };
  assert.equal(peerUid(mapped, table([MAPPED_V6])), 1000);
});

test('uidOfUser: a number as it is, a name from passwd, null for no such user', () => {
  const passwd =
    'root:x:0:0:root:/root:/bin/bash\nbulkhead-ui:x:998:997::/var/lib/bulkhead-ui:/usr/sbin/nologin\n';
  assert.equal(uidOfUser('1234', passwd), 1234);
  assert.equal(uidOfUser('bulkhead-ui', passwd), 998);
  assert.equal(uidOfUser('root', passwd), 0);
  assert.equal(uidOfUser('bulkhead', passwd), null);
  assert.equal(uidOfUser('', passwd), null);
});

/** The uid peerUid finds for a connection to a server on `host` made by us, then by nobody. */
async function uidsSeenOn(host: string): Promise<{ ours: number | null; nobodys: number | null }> {
  const accepted: Socket[] = [];
  const server = createServer((s) => accepted.push(s));
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const port = (server.address() as { port: number }).port;
  const acceptedFrom = async (localPort: number) => {
    const end = Date.now() + 5000;
    for (;;) {
      const s = accepted.find((a) => a.remotePort === localPort);
      if (s) return s;
      if (Date.now() > end) throw new Error(`no connection from port ${localPort}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  try {
    const mine = createConnection(port, host);
    await new Promise((r) => mine.once('connect', r));
    const ours = peerUid(await acceptedFrom(mine.localPort!));
    mine.destroy();
    const theirs = await holdConnectionAs(NOBODY, host, port);
    try {
      return { ours, nobodys: peerUid(await acceptedFrom(theirs.localPort)) };
    } finally {
      theirs.close();
    }
  } finally {
    for (const s of accepted) s.destroy();
    server.close();
  }
}

test("the real /proc/net/tcp: a connection to 127.0.0.2 is ours, or nobody's when nobody's process made it", async () => {
  assert.deepEqual(await uidsSeenOn('127.0.0.2'), { ours: process.getuid!(), nobodys: NOBODY.uid });
});

test('the real /proc/net/tcp6: the same on ::1', async () => {
  assert.deepEqual(await uidsSeenOn('::1'), { ours: process.getuid!(), nobodys: NOBODY.uid });
});
