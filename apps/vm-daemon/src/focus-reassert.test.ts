/**
 * Issue 12 item 1 in the core: vm-daemon tells every new input-daemon instance where input goes
 * (ActiveVm), also when the instance appears in the middle of a switch, and never sends a new
 * instance a focus older than a SetFocus it already sent. A fake input-daemon that can die and
 * come back, and switch steps held at a gate, make each interleaving exact (no timing).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SWITCHER_PATH, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from './testing/fake-backend';
import type { InputPeerWatch } from './input-daemon-client';
import { StateStore } from './state-store';
import {
  DONE,
  skipped,
  type GpuHandoff,
  type InputFocus,
  type StepResult,
  type UsbMover,
} from './switch-transaction';
import { VmManager } from './vm-manager';
import { waitFor } from './testing/daemon-process';

const log = createLogger('test', 'error');
const B = vmPath('business');

/** A fake input-daemon that can be SIGKILLed (gone) and restarted (a new instance, focus reset). */
class FakeRestartingInput implements InputFocus, InputPeerWatch {
  instance = 1;
  present = true;
  focused = SWITCHER_PATH;
  /** Every call that reached an instance: `<instance> <call>`. */
  calls: string[] = [];
  private readonly listeners: Array<() => void> = [];
  onNewInstance(fn: () => void): void {
    this.listeners.push(fn);
  }
  die(): void {
    this.present = false;
  }
  restart(): void {
    this.present = true;
    this.instance++;
    this.focused = SWITCHER_PATH;
    for (const fn of this.listeners) fn();
  }
  async freeze(): Promise<StepResult> {
    if (!this.present) return skipped('absent');
    this.calls.push(`${this.instance} freeze`);
    return DONE;
  }
  /** SetFocus calls still to fail (as a call timing out does), before any reaches the instance. */
  failFocus = 0;
  async setFocus(target: string): Promise<StepResult> {
    if (!this.present) return skipped('absent');
    if (this.failFocus > 0) {
      this.failFocus--;
      throw new Error('org.bulkhead.Input1.SetFocus: no reply within 5000 ms');
    }
    this.calls.push(`${this.instance} focus ${target}`);
    this.focused = target;
    return DONE;
  }
  /** Input1.Prepare calls, apart from the focus calls: `<instance> <target> <socket>`. */
  prepared: string[] = [];
  async prepare(target: string, socket: string): Promise<void> {
    if (this.present) this.prepared.push(`${this.instance} ${target} ${socket}`);
  }
}

/** Holds a switch step until the test opens the gate. */
class Gate {
  reached = false;
  private open!: () => void;
  private readonly opened = new Promise<void>((r) => (this.open = r));
  async pass(): Promise<void> {
    this.reached = true;
    await this.opened;
  }
  release(): void {
    this.open();
  }
}

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vmd-focus-'));
  const configDir = join(root, 'vms');
  mkdirSync(configDir);
  writeFileSync(
    join(configDir, 'a.json'),
    JSON.stringify({ id: 'personal', slot: 1, color: '#2a6fdb', memoryMiB: 32 }),
  );
  writeFileSync(
    join(configDir, 'b.json'),
    JSON.stringify({ id: 'business', slot: 2, color: '#e07b00', memoryMiB: 32 }),
  );
  const backend = new FakeBackend();
  const input = new FakeRestartingInput();
  const gpuGate = new Gate();
  const usbGate = new Gate();
  let gatesOn = false;
  const gpu: GpuHandoff = {
    handOff: async () => {
      if (gatesOn) await gpuGate.pass();
      return skipped('no GPU');
    },
  };
  const usb: UsbMover = {
    moveFollowFocus: async () => {
      if (gatesOn) await usbGate.pass();
      return skipped('no USB');
    },
    returnDevices: async () => skipped('no USB'),
  };
  const manager = new VmManager({
    backend,
    input,
    gpu,
    usb,
    configDir,
    state: new StateStore(join(root, 'state'), log),
    log,
    watchConfig: false,
  });
  return {
    input,
    manager,
    gpuGate,
    usbGate,
    gatesOn: () => (gatesOn = true),
    done: () => (manager.close(), rmSync(root, { recursive: true })),
  };
}

test('a VM that starts running is prepared in input-daemon, and again in a new input-daemon instance', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(2);
  await waitFor('business prepared', () => t.input.prepared.length === 1);
  assert.deepEqual(t.input.prepared, [`1 ${B} /fake/business/input-qmp.sock`]);
  t.input.die();
  t.input.restart();
  await waitFor('business prepared in the new instance', () => t.input.prepared.length === 2);
  assert.equal(t.input.prepared[1], `2 ${B} /fake/business/input-qmp.sock`);
  t.done();
});

test('a new input-daemon instance is told ActiveVm with its input QMP socket', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(2);
  t.input.die();
  t.input.restart();
  await waitFor('the new instance is focused on business', () => t.input.focused === B);
  assert.deepEqual(
    t.input.calls.filter((c) => c.startsWith('2 ')),
    [`2 focus ${B}`],
  );
  t.done();
});

test('a re-assert the new instance did not answer (a call timeout under load) is sent again: it ends focused on ActiveVm, not on nobody', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(2);
  t.input.die();
  t.input.failFocus = 1;
  t.input.restart();
  await waitFor('the new instance is focused on business', () => t.input.focused === B, 5000);
  assert.deepEqual(
    t.input.calls.filter((c) => c.startsWith('2 ')),
    [`2 focus ${B}`],
  );
  t.done();
});

test('input-daemon killed in a switch before focus-input and back before the switch ends: the new instance ends on the target, never told the VM being left', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(1);
  t.gatesOn();
  const sw = t.manager.switchToSlot(2);
  await waitFor('switch at move-gpu', () => t.gpuGate.reached);
  t.input.die(); // focus-input will be skipped: nobody is there
  t.gpuGate.release();
  await waitFor('switch at move-usb', () => t.usbGate.reached);
  t.input.restart(); // back while the switch has not published yet (ActiveVm still personal)
  await new Promise((r) => setImmediate(r));
  t.usbGate.release();
  const rec = await sw;
  assert.equal(rec.outcome, 'ok');
  assert.equal(t.manager.activeVm, B);
  await waitFor('the new instance is focused on business', () => t.input.focused === B);
  assert.deepEqual(
    t.input.calls.filter((c) => c.startsWith('2 ')),
    [`2 focus ${B}`],
    'the new instance was told only the final ActiveVm',
  );
  t.done();
});

test('input-daemon killed in a switch and back only after it: the new instance is told the new ActiveVm', async () => {
  const t = setup();
  await t.manager.init();
  await t.manager.switchToSlot(1);
  t.gatesOn();
  const sw = t.manager.switchToSlot(2);
  await waitFor('switch at move-gpu', () => t.gpuGate.reached);
  t.input.die();
  t.gpuGate.release();
  t.usbGate.release();
  assert.equal((await sw).outcome, 'ok');
  t.input.restart();
  await waitFor('the new instance is focused on business', () => t.input.focused === B);
  assert.deepEqual(
    t.input.calls.filter((c) => c.startsWith('2 ')),
    [`2 focus ${B}`],
  );
  t.done();
});
