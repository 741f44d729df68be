/**
 * The held-keys journal (issue 12 item 2): whatever instant input-daemon is SIGKILLed at, every
 * key a VM has seen go down is in the journal file, so the next daemon can release it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@bulkhead/common';
import { buildChords, HotkeyMatcher } from './hotkeys';
import { HeldKeysJournal, HELD_KEYS_FILE, JOURNAL_PAGE, readHeldKeys } from './held-keys';
import type { CallContext } from '@bulkhead/contract';
import { variant } from '@bulkhead/dbus';
import { BTN_LEFT, EV_KEY, EV_SYN, SYN_REPORT, ev, type Frame } from './input-event';
import { InputService } from './input-service';
import { Router } from './router';
import { VirtualSeat } from './sources/virtual-seat';
import { FakeSink } from './testing/fake-sink';

const VM_A = '/org/bulkhead/VmManager1/vm/a';
const VM_B = '/org/bulkhead/VmManager1/vm/b';
const quiet = { info: () => undefined, warn: () => undefined };

/** What the journal file says `target` may hold, read from disk. */
const onDisk = (dir: string, target: string): number[] => {
  const f = join(dir, HELD_KEYS_FILE);
  if (!existsSync(f)) return [];
  return (JSON.parse(readFileSync(f, 'utf8')).vms[target]?.codes ?? []) as number[];
};

/** A QMP-like sink: at every write it looks at the journal on disk; QEMU's answers come on demand. */
class FakeCheckingSink extends FakeSink {
  unrecordedPresses: number[] = [];
  private answers: Array<() => void> = [];
  constructor(
    target: string,
    private readonly dir: string,
  ) {
    super(target);
  }
  override write(frame: Frame): void {
    const recorded = onDisk(this.dir, this.target);
    for (const e of frame)
      if (e.type === EV_KEY && e.value === 1 && !recorded.includes(e.code))
        this.unrecordedPresses.push(e.code);
    super.write(frame);
  }
  delivered(): Promise<boolean> {
    return new Promise((r) => this.answers.push(() => r(true)));
  }
  answerAll(): void {
    for (const a of this.answers.splice(0)) a();
  }
}

test('every press is in the journal file before the sink gets it; a release leaves it only once the VM confirmed it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  const journal = new HeldKeysJournal(dir, quiet);
  const a = new FakeCheckingSink(VM_A, dir);
  const b = new FakeCheckingSink(VM_B, dir);
  const router = new Router(new FakeSink('/'), { setLeds: () => undefined }, quiet, journal);
  journal.setSocket(VM_A, '/run/a.sock');
  journal.setSocket(VM_B, '/run/b.sock');
  router.setFocus(VM_A, a);
  router.route([ev(EV_KEY, 30, 1)]);
  router.route([ev(EV_KEY, BTN_LEFT, 1), ev(EV_KEY, 31, 1)]);
  router.route([ev(EV_KEY, 30, 2)]);
  assert.deepEqual(a.unrecordedPresses, []);
  assert.deepEqual(onDisk(dir, VM_A).sort(), [30, 31, BTN_LEFT].sort());
  router.route([ev(EV_KEY, 30, 0)]);
  assert.deepEqual(onDisk(dir, VM_A).sort(), [30, 31, BTN_LEFT].sort(), 'released before QEMU answered');
  a.answerAll();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(onDisk(dir, VM_A).sort(), [31, BTN_LEFT].sort());
  // A focus change releases the rest in A (synthesised releases follow the same rule).
  router.setFocus(VM_B, b);
  router.route([ev(EV_KEY, 32, 1)]);
  assert.deepEqual(b.unrecordedPresses, []);
  a.answerAll();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(onDisk(dir, VM_A), []);
  assert.deepEqual(onDisk(dir, VM_B), [32]);
  const entries = readHeldKeys(join(dir, HELD_KEYS_FILE), quiet);
  assert.deepEqual(entries, [{ target: VM_B, socket: '/run/b.sock', codes: [32] }]);
  rmSync(dir, { recursive: true });
});

test('a key pressed again before its release was confirmed stays in the journal', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  const journal = new HeldKeysJournal(dir, quiet);
  const a = new FakeCheckingSink(VM_A, dir);
  const router = new Router(new FakeSink('/'), { setLeds: () => undefined }, quiet, journal);
  journal.setSocket(VM_A, '/run/a.sock');
  router.setFocus(VM_A, a);
  router.route([ev(EV_KEY, 30, 1)]);
  router.route([ev(EV_KEY, 30, 0)]);
  router.route([ev(EV_KEY, 30, 1)]);
  a.answerAll();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(onDisk(dir, VM_A), [30]);
  rmSync(dir, { recursive: true });
});

test('a key released and pressed again within one frame stays in the journal: the VM holds it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  const journal = new HeldKeysJournal(dir, quiet);
  const a = new FakeCheckingSink(VM_A, dir);
  const router = new Router(new FakeSink('/'), { setLeds: () => undefined }, quiet, journal);
  journal.setSocket(VM_A, '/run/a.sock');
  router.setFocus(VM_A, a);
  // One frame (an InjectEvents burst, a driver that reports a quick re-press before its SYN).
  router.route([ev(EV_KEY, 30, 1), ev(EV_KEY, 30, 0), ev(EV_KEY, 30, 1)]);
  router.route([ev(EV_KEY, 31, 1)]);
  router.route([ev(EV_KEY, 31, 0), ev(EV_KEY, 31, 1)]);
  a.answerAll();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(router.heldCodes().sort(), [30, 31]);
  assert.deepEqual(onDisk(dir, VM_A).sort(), [30, 31], 'a successor must release what the VM holds');
  rmSync(dir, { recursive: true });
});

test('a key code no keyboard sends (0, beyond KEY_MAX), injected on the virtual seat, reaches no VM and leaves the journal readable for the next daemon', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  const journal = new HeldKeysJournal(dir, quiet);
  const seat = new VirtualSeat();
  const a = new FakeSink(VM_A);
  const service = new InputService(
    seat,
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    { forVm: async () => a },
    { switchToSlot: async () => undefined },
    createLogger('held-keys-test', 'error'),
    { journal },
  );
  await service.SetFocus({} as CallContext, VM_A, { qmp_socket: variant('s', '/fake/a.sock') });
  const press = (code: number) =>
    seat.inject('keyboard', [
      [EV_KEY, code, 1],
      [EV_SYN, SYN_REPORT, 0],
    ]);
  press(30);
  press(0x300);
  press(0);
  assert.deepEqual(a.events(), [ev(EV_KEY, 30, 1)]);
  const warnings: string[] = [];
  const entries = readHeldKeys(join(dir, HELD_KEYS_FILE), {
    info: () => undefined,
    warn: (m) => warnings.push(m),
  });
  assert.deepEqual(warnings, []);
  assert.deepEqual(
    entries,
    [{ target: VM_A, socket: '/fake/a.sock', codes: [30] }],
    'the successor releases A',
  );
  await service.close();
  journal.close();
  rmSync(dir, { recursive: true });
});

test('a corrupt journal is reported with its path, kept aside, and read as empty', () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  const f = join(dir, HELD_KEYS_FILE);
  const warnings: string[] = [];
  const log = { info: () => undefined, warn: (m: string) => warnings.push(m) };
  writeFileSync(f, '{"version":1,"vms":{"/org/bulkhead/VmManager1/vm/a":{"socket":"/s","codes":[30, "x"]}}}');
  assert.deepEqual(readHeldKeys(f, log), []);
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0].startsWith(`${f}: vms['/org/bulkhead/VmManager1/vm/a'].codes`), warnings[0]);
  assert.ok(existsSync(`${f}.corrupt`));
  writeFileSync(f, '{"version":1,"vms":{');
  assert.deepEqual(readHeldKeys(f, log), []);
  assert.match(warnings[1], new RegExp(`^${f}: .*JSON`));
  rmSync(dir, { recursive: true });
});

test('at start the leftovers are released in every VM whose QEMU still runs, focused or not, before any SetFocus', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  const socketB = join(dir, 'b-input.sock'); // stands in for a live QEMU's socket
  writeFileSync(socketB, '');
  writeFileSync(
    join(dir, HELD_KEYS_FILE),
    JSON.stringify({
      version: 1,
      vms: {
        [VM_A]: { socket: join(dir, 'gone.sock'), codes: [30] },
        [VM_B]: { socket: socketB, codes: [31, BTN_LEFT] },
      },
    }),
  );
  const journal = new HeldKeysJournal(dir, quiet);
  const b = new FakeSink(VM_B);
  const opened: string[] = [];
  const service = new InputService(
    new VirtualSeat(),
    new HotkeyMatcher(buildChords()),
    new FakeSink('/'),
    {
      forVm: async (target, _id, socket) => {
        opened.push(`${target} ${socket}`);
        return b;
      },
    },
    { switchToSlot: async () => undefined },
    createLogger('held-keys-test', 'error'),
    { journal },
  );
  await service.releaseLeftovers(readHeldKeys(join(dir, HELD_KEYS_FILE), quiet));
  assert.deepEqual(opened, [`${VM_B} ${socketB}`], 'only the VM whose socket exists is reached');
  assert.deepEqual(b.frames, [[ev(EV_KEY, 31, 0), ev(EV_KEY, BTN_LEFT, 0)]]);
  assert.deepEqual(onDisk(dir, VM_B), []);
  assert.deepEqual(onDisk(dir, VM_A), [], 'the stopped VM is forgotten');
  rmSync(dir, { recursive: true });
});

test("after a SIGKILL the leftovers on the uinput fast path go by the sink's QMP connection (the new device's kernel drops releases of keys it never had down)", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  try {
    const socketB = join(dir, 'b-input.sock');
    writeFileSync(socketB, '');
    writeFileSync(
      join(dir, HELD_KEYS_FILE),
      JSON.stringify({ version: 1, vms: { [VM_B]: { socket: socketB, codes: [31, BTN_LEFT] } } }),
    );
    const journal = new HeldKeysJournal(dir, quiet);
    const released: number[][] = [];
    // Stands in for the fast path: writes go to a new uinput device, releases in the guest by QMP.
    const fastPath = Object.assign(new FakeSink(VM_B), {
      releaseInGuest: async (codes: readonly number[]) => void released.push([...codes]),
    });
    const service = new InputService(
      new VirtualSeat(),
      new HotkeyMatcher(buildChords()),
      new FakeSink('/'),
      { forVm: async () => fastPath },
      { switchToSlot: async () => undefined },
      createLogger('held-keys-test', 'error'),
      { journal },
    );
    await service.releaseLeftovers(readHeldKeys(join(dir, HELD_KEYS_FILE), quiet));
    assert.deepEqual(released, [[31, BTN_LEFT]]);
    assert.deepEqual(fastPath.frames, [], 'not through the new device');
    assert.deepEqual(onDisk(dir, VM_B), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the journal file is one page rewritten in place while it fits, a whole new file when it does not, and always reads back whole', () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-page-'));
  try {
    const journal = new HeldKeysJournal(dir, quiet);
    const a = new FakeSink(VM_A);
    journal.setSocket(VM_A, '/run/a.qmp');
    const file = join(dir, HELD_KEYS_FILE);
    journal.willPress(a, [30]);
    assert.equal(statSync(file).size, JOURNAL_PAGE);
    const ino = statSync(file).ino;
    journal.willPress(a, [31, 32]);
    assert.equal(statSync(file).ino, ino, 'rewritten in place, not replaced');
    assert.deepEqual(onDisk(dir, VM_A), [30, 31, 32]);
    // Longer than a page: two VMs holding ~700 codes each (of 4 characters in the JSON).
    const b = new FakeSink(VM_B);
    journal.setSocket(VM_B, '/run/b.qmp');
    const many = Array.from({ length: 700 }, (_, i) => 0x100 + i);
    journal.willPress(a, many);
    journal.willPress(b, many);
    assert.ok(statSync(file).size > JOURNAL_PAGE);
    assert.equal(onDisk(dir, VM_A).length, 703);
    assert.equal(onDisk(dir, VM_B).length, 700);
    journal.released(b, many);
    journal.released(a, many);
    assert.equal(statSync(file).size, JOURNAL_PAGE, 'back to one page');
    assert.deepEqual(onDisk(dir, VM_A), [30, 31, 32]);
    journal.released(a, [30, 31, 32]);
    assert.deepEqual(readHeldKeys(file, quiet), []);
    journal.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a held-keys journal that is a FIFO or a symlink is kept aside and ignored, without waiting on it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'held-keys-'));
  try {
    const warnings: string[] = [];
    const log = { info: () => undefined, warn: (m: string) => void warnings.push(m) };
    const path = join(dir, HELD_KEYS_FILE);
    execFileSync('mkfifo', [path]);
    assert.deepEqual(readHeldKeys(path, log), []);
    assert.match(warnings.pop() ?? '', /not a regular file \(fifo\); kept aside as .*\.corrupt/);
    assert.equal(existsSync(path), false, 'moved aside');
    writeFileSync(join(dir, 'other.json'), JSON.stringify({ version: 1, vms: {} }));
    symlinkSync(join(dir, 'other.json'), path);
    assert.deepEqual(readHeldKeys(path, log), []);
    assert.match(warnings.pop() ?? '', /not a regular file \(symlink\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
