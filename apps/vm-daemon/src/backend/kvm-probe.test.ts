// The KVM probe's phases against a fake QEMU (a node script standing in for qemu-system-x86_64,
// with a FakeQmpServer as its QMP socket and a file as its serial port): a QEMU slow to start is
// not taken for a hung KVM, and each way KVM can fail here still ends in TCG with a reason.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probeKvm } from './kvm-probe';

const dir = mkdtempSync(join(tmpdir(), 'kvm-probe-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));
/** Stands in for /dev/kvm (readable and writable, which is all the probe checks before QEMU). */
const kvmDevice = join(dir, 'kvm');
writeFileSync(kvmDevice, '');
const fakeQmp = require.resolve('@bulkhead/qmp/dist/testing/fake-qmp-server');

interface FakeQemu {
  /** Opens its QMP socket this long after it starts (null: never, a hung KVM_CREATE_VM). */
  qmpAfterMs: number | null;
  /** Prints the toy guest's READY this long after QMP is up (null: never). */
  readyAfterMs?: number | null;
  /** Prints the KEY line for a key sent with input-send-event. */
  keys?: boolean;
  /** Exits at once with this on stderr, as QEMU does when KVM cannot be opened. */
  failWith?: string;
}

let n = 0;
/** Writes a fake qemu-system-x86_64 that behaves as `f` says; returns its path. */
function fakeQemu(f: FakeQemu): string {
  const file = join(dir, `qemu-${++n}`);
  writeFileSync(
    file,
    `#!${process.execPath}
const fs = require('node:fs');
const { FakeQmpServer } = require(${JSON.stringify(fakeQmp)});
const f = ${JSON.stringify(f)};
const a = process.argv.slice(2);
if (f.failWith) { process.stderr.write(f.failWith + '\\n'); process.exit(1); }
const qmp = a[a.indexOf('-qmp') + 1].replace(/^unix:/, '').split(',')[0];
const serial = a[a.indexOf('-serial') + 1].replace(/^file:/, '');
fs.writeFileSync(serial, '');
setInterval(() => undefined, 60000);
if (f.qmpAfterMs !== null)
  setTimeout(async () => {
    const s = await FakeQmpServer.start({ socketPath: qmp });
    s.handle('query-status', () => ({ return: { status: 'running', running: true } }));
    s.handle('input-send-event', () => {
      if (f.keys) fs.appendFileSync(serial, 'KEY down 1e\\n');
      return { return: {} };
    });
    if (f.readyAfterMs !== null && f.readyAfterMs !== undefined)
      setTimeout(() => fs.appendFileSync(serial, 'BULKHEAD-GUEST READY name=probe\\n'), f.readyAfterMs);
  }, f.qmpAfterMs);
`,
  );
  chmodSync(file, 0o755);
  return file;
}

const probeKernel = join(dir, 'probe-kernel.elf'); // only its name is passed to the fake

test('a QEMU that takes 6.5 s to answer on QMP (a loaded machine) is not taken for a hung KVM: KVM, with each phase timed', async () => {
  // The probe used to give QEMU 6 s for everything, and in the booting image QEMU's start alone
  // took longer; the default bounds now give each phase its own time.
  const r = await probeKvm({
    qemu: fakeQemu({ qmpAfterMs: 6500, readyAfterMs: 400, keys: true }),
    kvmDevice,
    probeKernel,
  });
  assert.equal(r.accel, 'kvm', r.reason);
  assert.match(
    r.reason,
    /^a probe guest ran under KVM \(QMP after \d+ ms, READY after \d+ ms, key after \d+ ms\)$/,
  );
  const qmpAfter = Number(/QMP after (\d+)/.exec(r.reason)![1]);
  assert.ok(qmpAfter >= 6500, `QMP after ${qmpAfter} ms`);
});

test('no QMP within startMs: TCG, "no QMP from qemu -accel kvm within …"', async () => {
  const r = await probeKvm({ qemu: fakeQemu({ qmpAfterMs: null }), kvmDevice, probeKernel, startMs: 800 });
  assert.deepEqual(r, { accel: 'tcg', reason: 'no QMP from qemu -accel kvm within 800 ms' });
});

test('the guest never prints READY under KVM: TCG, saying how long it was given', async () => {
  const r = await probeKvm({
    qemu: fakeQemu({ qmpAfterMs: 0, readyAfterMs: null }),
    kvmDevice,
    probeKernel,
    bootMs: 600,
  });
  assert.equal(r.accel, 'tcg');
  assert.match(r.reason, /^the probe guest did not boot under KVM within 600 ms \(QMP after \d+ ms\)$/);
});

test('the guest boots but does not print a key it is sent: TCG', async () => {
  const r = await probeKvm({
    qemu: fakeQemu({ qmpAfterMs: 0, readyAfterMs: 0, keys: false }),
    kvmDevice,
    probeKernel,
    keyMs: 400,
  });
  assert.equal(r.accel, 'tcg');
  assert.match(r.reason, /^the probe guest under KVM did not react to a key within 400 ms \(QMP after/);
});

test("QEMU refuses KVM at once: TCG with QEMU's own words", async () => {
  const r = await probeKvm({
    qemu: fakeQemu({
      qmpAfterMs: 0,
      failWith: 'Could not access KVM kernel module: No such file or directory',
    }),
    kvmDevice,
    probeKernel,
  });
  assert.deepEqual(r, {
    accel: 'tcg',
    reason: 'qemu -accel kvm exited: Could not access KVM kernel module: No such file or directory',
  });
});

test('no KVM device: TCG without starting QEMU', async () => {
  const r = await probeKvm({ qemu: '/nonexistent/qemu', kvmDevice: join(dir, 'absent') });
  assert.deepEqual(r, { accel: 'tcg', reason: `${join(dir, 'absent')} is not accessible` });
});
