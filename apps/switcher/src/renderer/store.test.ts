import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VM1_VIEW_DEFAULTS } from '@bulkhead/contract';
import { emptySnapshot, type SwitcherSnapshot, type VmModel } from '../common/model';
import {
  applyPush,
  beginSwitch,
  expireHotkeyView,
  failSwitch,
  initialUiState,
  isLocked,
  shownVm,
  type UiState,
} from './store';

const P = '/org/bulkhead/VmManager1/vm/personal';
const B = '/org/bulkhead/VmManager1/vm/business';

function vm(id: string, over: Partial<VmModel> = {}): VmModel {
  return {
    ...VM1_VIEW_DEFAULTS,
    path: `/org/bulkhead/VmManager1/vm/${id}`,
    id,
    name: id,
    slot: 1,
    kind: 'personal',
    color: '#112233',
    icon: '',
    state: 'running',
    stateReason: '',
    lastError: '',
    hasGpu: false,
    autostart: false,
    memoryMiB: 64,
    vcpus: 1,
    backend: 'qemu',
    configFile: '',
    ...over,
  };
}

function liveSnapshot(over: Partial<SwitcherSnapshot> = {}): SwitcherSnapshot {
  const s = emptySnapshot(1);
  for (const d of ['vmManager', 'input', 'usb'] as const) s.daemons[d] = { up: true, since: 1, detail: '' };
  return {
    ...s,
    vms: [vm('personal'), vm('business', { slot: 2 })],
    input: {
      focusedTarget: '/',
      locked: false,
      frozen: false,
      seat: 'virtual',
      hotkeys: [],
      lastHotkeyError: '',
    },
    ...over,
  };
}

const withSnap = (over: Partial<SwitcherSnapshot> = {}): UiState =>
  applyPush(initialUiState(), 'snapshot', liveSnapshot(over));

test('a snapshot replaces the model; the active VM is shown full screen', () => {
  const s = withSnap({ activeVm: B });
  assert.equal(s.snapshot.vms.length, 2);
  assert.equal(shownVm(s)?.id, 'business');
  assert.equal(shownVm(withSnap({ activeVm: '/' })), null);
});

test('a VM with a passed-through GPU is not shown inside the shell', () => {
  const s = withSnap({ activeVm: B, vms: [vm('business', { hasGpu: true })] });
  assert.equal(shownVm(s), null);
});

test('vmPatch changes one VM only; a VM that stops loses its thumbnail', () => {
  let s = withSnap();
  s = applyPush(s, 'thumbnail', { vm: P, png: 'AAAA', at: 1 });
  s = applyPush(s, 'thumbnail', { vm: B, png: 'BBBB', at: 1 });
  s = applyPush(s, 'vmPatch', { path: P, patch: { state: 'stopped' } });
  assert.equal(s.snapshot.vms.find((v) => v.path === P)?.state, 'stopped');
  assert.equal(s.snapshot.vms.find((v) => v.path === B)?.state, 'running');
  assert.equal(s.thumbnails[P], undefined);
  assert.equal(s.thumbnails[B], 'BBBB');
});

test('a thumbnail of a VM that is not running is ignored', () => {
  const s = applyPush(withSnap({ vms: [vm('personal', { state: 'stopped' })] }), 'thumbnail', {
    vm: P,
    png: 'AAAA',
    at: 1,
  });
  assert.deepEqual(s.thumbnails, {});
});

test('vm-daemon going down drops its VMs and the active VM at once (no stale state shown as live)', () => {
  let s = applyPush(withSnap({ activeVm: B }), 'thumbnail', { vm: B, png: 'BBBB', at: 1 });
  s = applyPush(s, 'daemon', { name: 'vmManager', status: { up: false, since: 2, detail: 'not running' } });
  assert.equal(s.snapshot.daemons.vmManager.up, false);
  assert.deepEqual(s.snapshot.vms, []);
  assert.equal(s.snapshot.activeVm, '/');
  assert.equal(shownVm(s), null);
  assert.deepEqual(s.thumbnails, {});
  // ...and comes back with the next snapshot.
  s = applyPush(s, 'snapshot', liveSnapshot({ activeVm: P }));
  assert.equal(s.snapshot.daemons.vmManager.up, true);
  assert.equal(shownVm(s)?.id, 'personal');
});

test('a switch running when vm-daemon dies is shown as failed', () => {
  let s = beginSwitch(withSnap(), B, 10);
  s = applyPush(s, 'daemon', { name: 'vmManager', status: { up: false, since: 2, detail: '' } });
  assert.equal(s.progress?.status, 'failed');
  assert.match(s.progress?.error?.title ?? '', /not running/);
});

test('switch progress accumulates steps and ends with done', () => {
  let s = beginSwitch(withSnap(), B, 10);
  for (const step of ['starting-vm', 'freeze-input', 'focus-input', 'publish'])
    s = applyPush(s, 'switchProgress', { target: B, step, detail: '', at: 11 });
  assert.equal(s.progress?.status, 'running');
  assert.deepEqual(
    s.progress?.steps.map((x) => x.step),
    ['starting-vm', 'freeze-input', 'focus-input', 'publish'],
  );
  s = applyPush(s, 'switchProgress', { target: B, step: 'done', detail: '', at: 12 });
  assert.equal(s.progress?.status, 'done');
});

test('a hotkey switch over before any step was announced shows no card: the picture says it', () => {
  let s = applyPush(withSnap(), 'switchProgress', {
    target: B,
    step: 'done',
    detail: 'switched in 4 ms',
    at: 12,
  });
  assert.equal(s.progress, null);
  // One whose steps were announced (a VM booting) ends with its card saying so.
  s = applyPush(s, 'switchProgress', { target: B, step: 'starting-vm', detail: 'starting business', at: 13 });
  s = applyPush(s, 'switchProgress', { target: B, step: 'done', detail: '', at: 14 });
  assert.equal(s.progress?.status, 'done');
});

test('a failed Switch call shows the named error in words, InvalidConfig naming the file and field', () => {
  let s = failSwitch(withSnap(), B, { name: 'NoSuchVm', message: 'no VM at /x' }, 1);
  assert.equal(s.progress?.status, 'failed');
  assert.equal(s.progress?.error?.title, 'That virtual machine no longer exists');
  assert.equal(s.progress?.error?.detail, 'no VM at /x');
  s = failSwitch(
    withSnap(),
    B,
    { name: 'InvalidConfig', message: '/etc/bulkhead/vms/business.json: memory_mib: must be a number' },
    1,
  );
  assert.equal(s.progress?.error?.title, 'The VM definition is invalid');
  assert.match(s.progress?.error?.message ?? '', /business\.json.*memory_mib.*must be a number/);
});

test('secure attention locks until the input daemon reports Locked=false', () => {
  let s = applyPush(withSnap(), 'secureAttention', { at: 1 });
  assert.equal(isLocked(s), true);
  const locked = liveSnapshot();
  locked.input!.locked = true;
  s = applyPush(s, 'snapshot', locked);
  assert.equal(isLocked(s), true);
  s = applyPush(s, 'snapshot', liveSnapshot());
  assert.equal(isLocked(s), false);
});

test('prompts queue once each and disappear when the daemon no longer lists them', () => {
  let s = withSnap();
  const p = { id: 4, device: '/org/bulkhead/Usb1/device/x', vm: P };
  s = applyPush(s, 'prompt', p);
  s = applyPush(s, 'prompt', p);
  assert.equal(s.prompts.length, 1);
  s = applyPush(s, 'snapshot', liveSnapshot({ prompts: [p] }));
  assert.equal(s.prompts.length, 1);
  s = applyPush(s, 'snapshot', liveSnapshot({ prompts: [] }));
  assert.equal(s.prompts.length, 0);
});

// Issue 17 (hotkey to picture): a switch hotkey shows its view at once, before vm-daemon switched.
const hotkey = (s: UiState, slot: number) =>
  applyPush(s, 'hotkey', { chord: `Ctrl+${slot}`, action: `slot:${slot}` });

test("a switch hotkey shows the target's view at once; ActiveVm then confirms it", () => {
  let s = withSnap({ activeVm: P });
  s = hotkey(s, 2);
  assert.equal(shownVm(s)?.id, 'business', 'shown before vm-daemon switched');
  assert.equal(s.snapshot.activeVm, P, 'the model still says where vm-daemon is');
  s = applyPush(s, 'snapshot', liveSnapshot({ activeVm: P, switching: true }));
  assert.equal(shownVm(s)?.id, 'business', 'kept while the switch runs');
  s = applyPush(s, 'snapshot', liveSnapshot({ activeVm: B }));
  assert.equal(s.hotkeyView, null);
  assert.equal(shownVm(s)?.id, 'business');
  // Ctrl+0: the tiles at once.
  s = hotkey(s, 0);
  assert.equal(shownVm(s), null);
});

test("a hotkey's own switch shows no progress card while it runs; a failure takes the view back and says why", () => {
  let s = hotkey(withSnap({ activeVm: P }), 2);
  for (const step of ['freeze-input', 'focus-input'])
    s = applyPush(s, 'switchProgress', { target: B, step, detail: '', at: 11 });
  assert.equal(s.progress, null, 'the picture is the progress');
  s = applyPush(s, 'switchProgress', { target: B, step: 'failed', detail: 'focus-input: timed out', at: 12 });
  assert.equal(s.hotkeyView, null);
  assert.equal(shownVm(s)?.id, 'personal', 'back to where vm-daemon is');
  assert.equal(s.progress?.status, 'failed');
});

test("a failed switch's card goes when a later switch ends well (a hotkey's, a click's, the tiles')", () => {
  for (const [later, how] of [
    [B, 'hotkey'],
    [B, 'click'],
    ['/', 'hotkey'],
  ] as const) {
    let s = applyPush(withSnap({ activeVm: P }), 'switchProgress', {
      target: P,
      step: 'failed',
      detail: 'freeze-input: the seat is locked; unlock first',
      at: 1,
    });
    assert.equal(s.progress?.status, 'failed');
    if (how === 'hotkey') s = hotkey(s, later === '/' ? 0 : 2);
    s = applyPush(s, 'switchProgress', { target: later, step: 'freeze-input', detail: '', at: 2 });
    s = applyPush(s, 'switchProgress', { target: later, step: 'done', detail: '', at: 3 });
    if (how === 'click')
      // A watched switch: its own card says "Switched to" (and goes by itself), not the failure.
      assert.deepEqual([s.progress?.target, s.progress?.status], [later, 'done']);
    else assert.equal(s.progress, null, `no card after a ${how} switch to ${later} that ended well`);
  }
  // Its own failure stays until dismissed, also when other pushes come.
  let s = applyPush(withSnap({ activeVm: P }), 'switchProgress', {
    target: B,
    step: 'failed',
    detail: 'x',
    at: 1,
  });
  s = applyPush(s, 'snapshot', liveSnapshot({ activeVm: P }));
  assert.equal(s.progress?.status, 'failed');
});

test("a hotkey's view is dropped when its switch ends elsewhere, is superseded, on a lock, or when it expires", () => {
  const base = withSnap({ activeVm: P });
  // The switch ended (not running) with ActiveVm elsewhere: rolled back.
  let s = hotkey(base, 2);
  s = applyPush(
    s,
    'snapshot',
    liveSnapshot({
      activeVm: P,
      switching: false,
      lastSwitch: {
        from: P,
        target: B,
        outcome: 'failed',
        error: 'x',
        startedMs: 1,
        durationMs: 1,
        steps: [],
      },
    }),
  );
  assert.equal(shownVm(s)?.id, 'personal');
  // Replaced by a newer request before it ran.
  s = applyPush(hotkey(base, 2), 'switchProgress', { target: B, step: 'superseded', detail: '', at: 1 });
  assert.equal(shownVm(s)?.id, 'personal');
  // The secure-attention chord, or the seat locked.
  s = applyPush(hotkey(base, 2), 'secureAttention', { at: 1 });
  assert.equal(s.hotkeyView, null);
  const locked = liveSnapshot({ activeVm: P });
  locked.input!.locked = true;
  assert.equal(applyPush(hotkey(base, 2), 'snapshot', locked).hotkeyView, null);
  // vm-daemon gone.
  s = applyPush(hotkey(base, 2), 'daemon', {
    name: 'vmManager',
    status: { up: false, since: 2, detail: '' },
  });
  assert.equal(s.hotkeyView, null);
  // Not confirmed within the bound.
  s = hotkey(base, 2);
  assert.equal(expireHotkeyView(s, s.hotkeyView!.at + 1).hotkeyView, s.hotkeyView, 'another hotkey’s expiry');
  assert.equal(expireHotkeyView(s, s.hotkeyView!.at).hotkeyView, null);
  // A click is the newest request.
  assert.equal(beginSwitch(hotkey(base, 2), P, 1).hotkeyView, null);
});

test('no early view for a stopped VM, a GPU VM, an empty slot, or while locked; a newer such hotkey drops an older view', () => {
  const stopped = withSnap({
    activeVm: P,
    vms: [vm('personal'), vm('business', { slot: 2, state: 'stopped' })],
  });
  assert.equal(hotkey(stopped, 2).hotkeyView, null, 'booting it takes the switch itself');
  const gpu = withSnap({ activeVm: P, vms: [vm('personal'), vm('business', { slot: 2, hasGpu: true })] });
  assert.equal(hotkey(gpu, 2).hotkeyView, null);
  assert.equal(hotkey(withSnap({ activeVm: P }), 7).hotkeyView, null);
  const locked = applyPush(withSnap({ activeVm: P }), 'secureAttention', { at: 1 });
  assert.equal(hotkey(locked, 2).hotkeyView, null);
  // Ctrl+2 (running) then Ctrl+3 (nothing to show early): vm-daemon ends on 3's request.
  const three = withSnap({
    activeVm: P,
    vms: [vm('personal'), vm('business', { slot: 2 }), vm('lab', { slot: 3, state: 'stopped' })],
  });
  let s = hotkey(three, 2);
  assert.ok(s.hotkeyView);
  s = hotkey(s, 3);
  assert.equal(s.hotkeyView, null);
  assert.equal(shownVm(s)?.id, 'personal');
});

test('a snapshot equal to the one shown changes nothing: the same state, no component told', () => {
  const s = applyPush(withSnap({ activeVm: B }), 'thumbnail', { vm: P, png: 'AAAA', at: 1 });
  // A fresh copy, as each push arrives (JSON over the bridge).
  const again = applyPush(s, 'snapshot', JSON.parse(JSON.stringify(liveSnapshot({ activeVm: B }))));
  assert.equal(again, s);
  assert.equal(applyPush(s, 'vmPatch', { path: P, patch: { state: 'running' } }), s);
  assert.equal(applyPush(s, 'daemon', { name: 'usb', status: { up: true, since: 1, detail: '' } }), s);
});

test("a switch's snapshot keeps every VM object and list it did not change", () => {
  const s = withSnap({ activeVm: '/' });
  const next = applyPush(
    s,
    'snapshot',
    JSON.parse(JSON.stringify(liveSnapshot({ activeVm: B, switching: true }))),
  );
  assert.notEqual(next, s);
  assert.equal(next.snapshot.activeVm, B);
  assert.equal(next.snapshot.switching, true);
  assert.equal(next.snapshot.vms, s.snapshot.vms, 'the VM list, unchanged, is the same array');
  assert.equal(next.snapshot.daemons, s.snapshot.daemons);
  assert.equal(next.thumbnails, s.thumbnails);
  assert.equal(shownVm(next), s.snapshot.vms[1], "the shown VM is the store's own object");
  // One VM changes: the other keeps its object.
  const vms = JSON.parse(JSON.stringify(next.snapshot.vms)) as VmModel[];
  vms[0].state = 'stopping';
  const third = applyPush(next, 'snapshot', { ...JSON.parse(JSON.stringify(next.snapshot)), vms });
  assert.equal(third.snapshot.vms[1], next.snapshot.vms[1]);
  assert.equal(third.snapshot.vms[0].state, 'stopping');
});
