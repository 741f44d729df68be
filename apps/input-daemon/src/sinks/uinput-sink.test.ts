/**
 * The uinput fast path to a VM (QEMU's input-linux reading a per-VM uinput device), with fakes for
 * the kernel's side (this host has no /dev/uinput) and for the VM's QMP connection: the sink dies
 * with the QEMU that reads it; a QEMU that an earlier input-daemon fed takes a new one beside the
 * stale object; an add QEMU refuses fails by name.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { UinputDevice } from '../evdev-native';
import { EV_KEY } from '../input-event';
import { createVmUinputSink, inputObjectId } from './uinput-sink';
import type { QmpConnection } from './qmp-sink';

/** A fake QMP connection: records commands, fails object-add on a duplicate id like QEMU. */
class FakeQmp extends EventEmitter implements QmpConnection {
  readonly commands: string[] = [];
  readonly objects = new Set<string>();
  closed = false;
  send(cmd: string): void {
    this.commands.push(cmd);
  }
  async execute(cmd: string, args: Record<string, unknown> = {}): Promise<unknown> {
    this.commands.push(cmd);
    const id = String(args.id);
    if (cmd === 'object-del') {
      if (!this.objects.delete(id)) throw new Error(`GenericError: object '${id}' not found`);
    } else if (cmd === 'object-add') {
      if (this.objects.has(id))
        throw new Error(
          `GenericError: attempt to add duplicate property '${id}' to object (type 'container')`,
        );
      this.objects.add(id);
    }
    return {};
  }
  async close(): Promise<void> {
    this.closed = true;
    this.emit('close');
  }
}

/** A fake uinput device: what was written, whether it was destroyed. */
function fakeKernel() {
  const device = { sysname: 'input42', writes: [] as Buffer[], destroyed: false };
  const dev = {
    sysname: device.sysname,
    write: (b: Buffer) => (device.writes.push(b), b.length),
    destroy: () => void (device.destroyed = true),
  } as unknown as UinputDevice;
  return { device, kernel: { create: () => dev, nodeOf: async () => '/dev/input/event42' } };
}

const KEY_A = [{ type: EV_KEY, code: 30, value: 1 }];

test("the fast path dies with the QEMU that reads it (a VM's restart, a Xen guest's reboot): writes stop, the next SetFocus builds a new one", async () => {
  const qmp = new FakeQmp();
  const { device, kernel } = fakeKernel();
  const sink = await createVmUinputSink('/vm/business', 'business', qmp, '/dev/uinput', kernel);
  assert.equal(sink.alive, true);
  sink.write(KEY_A);
  assert.equal(device.writes.length, 1);
  // The device model exits: its QMP connection closes. Keys written now would reach nobody.
  qmp.emit('close');
  assert.equal(sink.alive, false, 'not alive: InputService.sinkFor makes a new sink');
  sink.write(KEY_A);
  assert.equal(device.writes.length, 1, 'nothing written to a device nobody reads');
  await sink.close();
  assert.equal(device.destroyed, true, 'its uinput device goes');
});

test("a QEMU still holding an earlier input-daemon's object (killed, restarted) takes this one's under an id of its own: the fast path works again", async () => {
  const qmp = new FakeQmp();
  // What the killed daemon left: its object, under its own process's id.
  qmp.objects.add(inputObjectId('business'));
  const { device, kernel } = fakeKernel();
  const sink = await createVmUinputSink('/vm/business', 'business', qmp, '/dev/uinput', kernel);
  assert.deepEqual(qmp.commands, ['object-add'], 'nothing deleted: the stale object stays, inert');
  assert.equal(qmp.objects.size, 2);
  sink.write(KEY_A);
  assert.equal(device.writes.length, 1, 'keys go to the uinput device QEMU reads');
  await sink.close();
});

test('every sink, of this process too, gets its own id: a VM whose QEMU stays gets a second sink', () => {
  const ids = [inputObjectId('business'), inputObjectId('business'), inputObjectId('a/b c')];
  assert.equal(new Set(ids).size, 3);
  for (const id of ids) assert.match(id, /^bulkhead-input-[A-Za-z0-9_-]+$/, 'a valid QOM id');
  assert.ok(ids[2].startsWith('bulkhead-input-a_b_c-'));
});

test('an object-add QEMU refuses anyway fails by name (the caller falls back to QMP), and the device is not left behind', async () => {
  const qmp = new FakeQmp();
  qmp.objects.add('bulkhead-input-business-x'); // the same id twice: QEMU refuses it
  const { device, kernel } = fakeKernel();
  await assert.rejects(
    createVmUinputSink('/vm/business', 'business', qmp, '/dev/uinput', kernel, 'bulkhead-input-business-x'),
    /duplicate property 'bulkhead-input-business-x'/,
  );
  assert.deepEqual(qmp.commands, ['object-add']);
  assert.equal(device.destroyed, true);
  assert.equal(qmp.closed, false, 'the connection stays open for the QMP fallback');
});

test('closing the fast path closes its QMP connection too', async () => {
  const qmp = new FakeQmp();
  const { kernel } = fakeKernel();
  const sink = await createVmUinputSink('/vm/business', 'business', qmp, '/dev/uinput', kernel);
  await sink.close();
  assert.equal(qmp.closed, true);
});

test("QEMU's grab toggle (Ctrl+ScrollLock, in any order) can never be typed: no ScrollLock reaches the device, so no key is left down either", async () => {
  const { device, kernel } = fakeKernel();
  const sink = await createVmUinputSink('/vm/a', 'a', new FakeQmp(), '/dev/uinput', kernel);
  const SCROLL = 70;
  const CTRL = 29;
  const key = (code: number, value: number) => [{ type: EV_KEY, code, value }];
  // ScrollLock first, then Ctrl, releases in either order; then ScrollLock and Ctrl alone.
  for (const [code, value] of [
    [SCROLL, 1],
    [CTRL, 1],
    [CTRL, 0],
    [SCROLL, 0],
    [SCROLL, 1],
    [CTRL, 1],
    [SCROLL, 0],
    [CTRL, 0],
    [SCROLL, 1],
    [SCROLL, 0],
  ])
    sink.write(key(code, value));
  // Each write is one frame: its events (24 bytes each) and a SYN_REPORT. Read the key codes back.
  const codes = device.writes.flatMap((b) => {
    const out: number[] = [];
    for (let off = 0; off + 24 <= b.length; off += 24)
      if (b.readUInt16LE(off + 16) === EV_KEY) out.push(b.readUInt16LE(off + 18));
    return out;
  });
  assert.deepEqual(codes, [CTRL, CTRL, CTRL, CTRL], 'only the Ctrl presses and releases');
});

test("the fast path releases keys in the guest by QMP (a daemon's leftovers after a SIGKILL), not through its new device", async () => {
  const { device, kernel } = fakeKernel();
  const qmp = new FakeQmp();
  const sent: unknown[] = [];
  const execute = qmp.execute.bind(qmp);
  qmp.execute = async (cmd: string, args: Record<string, unknown> = {}) => {
    if (cmd === 'input-send-event') sent.push(args.events);
    return execute(cmd, args);
  };
  const sink = await createVmUinputSink('/vm/a', 'a', qmp, '/dev/uinput', kernel);
  await sink.releaseInGuest!([30, 0x110]);
  assert.deepEqual(sent, [
    [
      { type: 'key', data: { down: false, key: { type: 'qcode', data: 'a' } } },
      { type: 'btn', data: { down: false, button: 'left' } },
    ],
  ]);
  assert.equal(device.writes.length, 0);
});
