/**
 * Issue 19: who reads the power key and the lid. vm-daemon finds the ACPI "Power Button" and
 * "Lid Switch" evdev nodes in sysfs by their capabilities (the masks below are the ones a QEMU q35
 * machine and a laptop show) and reads them; a keyboard that also has a power key is left to
 * input-daemon (it grabs keyboards; their power key goes to the focused VM like any key).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AcpiButtons,
  EV_KEY,
  EV_SW,
  INPUT_EVENT_BYTES,
  KEY_POWER,
  SW_LID,
  findButtonDevices,
} from './acpi-buttons';

function fakeSysfs(devices: Record<string, { name: string; key?: string; sw?: string }>): string {
  const root = mkdtempSync(join(tmpdir(), 'sys-class-input-'));
  for (const [event, d] of Object.entries(devices)) {
    const caps = join(root, event, 'device', 'capabilities');
    mkdirSync(caps, { recursive: true });
    writeFileSync(join(root, event, 'device', 'name'), `${d.name}\n`);
    writeFileSync(join(caps, 'key'), `${d.key ?? '0'}\n`);
    writeFileSync(join(caps, 'sw'), `${d.sw ?? '0'}\n`);
  }
  // Not an event node: ignored.
  mkdirSync(join(root, 'input3'));
  return root;
}

function event(type: number, code: number, value: number): Buffer {
  const b = Buffer.alloc(INPUT_EVENT_BYTES);
  b.writeUInt16LE(type, 16);
  b.writeUInt16LE(code, 18);
  b.writeInt32LE(value, 20);
  return b;
}

test('the power button and the lid switch are found; a keyboard with a power key is not', () => {
  const root = fakeSysfs({
    // QEMU q35 / a laptop: LNXPWRBN "Power Button" has KEY_POWER (116) only.
    event0: { name: 'Power Button', key: '10000000000000 0' },
    // PNP0C0D "Lid Switch": SW_LID.
    event1: { name: 'Lid Switch', sw: '1' },
    // "AT Translated Set 2 keyboard": letters and KEY_POWER among them.
    event2: {
      name: 'AT Translated Set 2 keyboard',
      key: '402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe',
    },
    // A mouse.
    event3: { name: 'ImExPS/2 Generic Explorer Mouse', key: '1f0000 0 0 0 0' },
  });
  try {
    assert.deepEqual(findButtonDevices(root, '/dev/input'), [
      { node: '/dev/input/event0', name: 'Power Button', power: true, lid: false },
      { node: '/dev/input/event1', name: 'Lid Switch', power: false, lid: true },
    ]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('no sysfs (a container, a test bus): no buttons, no error', () => {
  assert.deepEqual(findButtonDevices('/nonexistent/sys/class/input'), []);
});

test('the reader reports a power key press and a lid closing, not releases or the lid opening', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'acpi-buttons-'));
  try {
    const node = join(dir, 'event0');
    writeFileSync(
      node,
      Buffer.concat([
        event(EV_KEY, KEY_POWER, 1),
        event(0, 0, 0),
        event(EV_KEY, KEY_POWER, 0),
        event(EV_SW, SW_LID, 1),
        event(EV_SW, SW_LID, 0),
        event(EV_KEY, 30, 1),
      ]),
    );
    const seen: string[] = [];
    const warnings: string[] = [];
    const buttons = new AcpiButtons([{ node, name: 'test', power: true, lid: true }], (w) => seen.push(w), {
      info: () => undefined,
      warn: (m) => warnings.push(m),
    });
    buttons.start();
    const deadline = Date.now() + 5000;
    while (seen.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    buttons.close();
    assert.deepEqual(seen, ['power-key', 'lid']);
    assert.deepEqual(warnings, []);

    // A node that cannot be opened is a warning naming it; the daemon carries on.
    const openErrors: string[] = [];
    const broken = new AcpiButtons(
      [{ node: join(dir, 'missing'), name: 'gone', power: true, lid: false }],
      () => undefined,
      { info: () => undefined, warn: (m) => openErrors.push(m) },
    );
    broken.start();
    while (!openErrors.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    broken.close();
    assert.match(openErrors[0] ?? '', /missing "gone": ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
