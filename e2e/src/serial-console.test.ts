import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConsoleSilentError, SerialConsole } from './serial-console';

/** A fake serial port on a unix socket; `serve` is given each connection (the console's). */
async function fakeSerialPort(serve: (s: Socket) => void): Promise<{ path: string; close(): void }> {
  const path = join(mkdtempSync(join(tmpdir(), 'serial-')), 'ttyS0');
  const socks: Socket[] = [];
  const server = createServer((s) => {
    socks.push(s);
    serve(s);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    close: () => {
      for (const s of socks) s.destroy();
      server.close();
    },
  };
}

/**
 * Answers each typed command line like the image's shell would (its markers, `reply` between them,
 * exit code 0), and lets the test say what Xen prints on the same port in between.
 */
function fakeXenSerial(reply: (cmd: string) => string) {
  return fakeSerialPort((s) => {
    let typed = '';
    s.on('data', (d) => {
      typed += d.toString();
      let nl: number;
      while ((nl = typed.indexOf('\n')) >= 0) {
        const line = typed.slice(0, nl);
        typed = typed.slice(nl + 1);
        const b = /echo (BM\w+); (.*); echo (EM\w+):\$\?$/.exec(line);
        if (b) s.write(`${b[1]}\r\r\n${reply(b[2])}${b[3]}:0\r\r\n`);
      }
    });
  });
}

test("a command's output leaves out the lines Xen printed on the same serial port meanwhile (a guest's triple-fault dump)", async () => {
  const port = await fakeXenSerial(
    () =>
      [
        '(XEN) d2v0 Triple fault - invoking HVM shutdown action 1',
        '(XEN) *** Dumping Dom2 vcpu#0 state: ***',
        '(XEN) RIP:    0010:[<ffffffff83a592eb>]',
      ]
        .map((l) => `${l}\r\n`)
        .join('') + 'o "/org/bulkhead/VmManager1/vm/personal"\r\r\n',
  );
  const serial = await SerialConsole.connect(port.path);
  try {
    const out = await serial.check('busctl get-property org.bulkhead.VmManager1 / x ActiveVm');
    assert.equal(out.trim(), 'o "/org/bulkhead/VmManager1/vm/personal"');
  } finally {
    serial.close();
    port.close();
  }
});

test("Xen's lines that the command itself prints (xl dmesg, through dom0's console) are kept", async () => {
  const port = await fakeXenSerial(
    () => '(XEN) d2v0 Triple fault - invoking HVM shutdown action 1\r\r\n(XEN) ACPI S3\r\r\n',
  );
  const serial = await SerialConsole.connect(port.path);
  try {
    assert.deepEqual((await serial.check('xl dmesg | tail -n 2')).trim().split('\n'), [
      '(XEN) d2v0 Triple fault - invoking HVM shutdown action 1',
      '(XEN) ACPI S3',
    ]);
  } finally {
    serial.close();
    port.close();
  }
});

/** A machine with no shell: its console prints `noise` every 100 ms, or nothing at all. */
function fakeShelllessSerial(noise: string) {
  return fakeSerialPort((s) => {
    s.on('data', () => undefined);
    if (!noise) return;
    const t = setInterval(() => s.write(noise), 100);
    s.on('close', () => clearInterval(t));
  });
}

test('a boot whose console prints nothing is given up as silent, naming its last line, long before the shell timeout', async () => {
  const port = await fakeShelllessSerial('');
  const serial = await SerialConsole.connect(port.path);
  try {
    const t0 = Date.now();
    await assert.rejects(serial.waitForShell(60_000, { silentMs: 300 }), (e: Error) => {
      assert.ok(e instanceof ConsoleSilentError, `${e.name}: ${e.message}`);
      assert.match(e.message, /printed nothing for \d+ s/);
      return true;
    });
    assert.ok(Date.now() - t0 < 15_000, 'well before the 60 s shell timeout');
  } finally {
    serial.close();
    port.close();
  }
});

test('a boot that keeps printing is not taken as silent: it runs to the shell timeout', async () => {
  const port = await fakeShelllessSerial('[  OK  ] Started something.\r\n');
  const serial = await SerialConsole.connect(port.path);
  try {
    await assert.rejects(serial.waitForShell(1500, { silentMs: 300 }), (e: Error) => {
      assert.ok(!(e instanceof ConsoleSilentError), e.message);
      assert.match(e.message, /no shell on the serial console within 1500 ms/);
      return true;
    });
  } finally {
    serial.close();
    port.close();
  }
});
