/**
 * The renderer's state: pure reducers (tested on their own) and a zustand store around them.
 */
import { createStore, type StoreApi } from 'zustand/vanilla';
import type { PushChannel, PushMap, RequestFailure } from '../common/channels';
import { emptySnapshot, type PromptModel, type SwitcherSnapshot, type VmModel } from '../common/model';
import { describeFailure, type HumanError } from '../common/messages';
import { shareUnchanged } from './share-unchanged';

export type Panel = 'machines' | 'usb' | 'diagnostics';
/** The machine dialog on screen: New machine, or one machine's settings (by object path). */
export type EditorView = { kind: 'new' } | { kind: 'settings'; vm: string };
export type ConnectionState = 'connecting' | 'open' | 'closed';

export interface SwitchStepView {
  step: string;
  detail: string;
  at: number;
}

export interface SwitchProgressView {
  target: string;
  steps: SwitchStepView[];
  status: 'running' | 'done' | 'failed';
  startedAt: number;
  error: HumanError | null;
  /** A request that waits for this switch and runs next (the last request wins). */
  pendingTarget?: string;
}

export interface Notice extends HumanError {
  id: number;
  kind: 'error' | 'info';
}

export interface UiState {
  connection: ConnectionState;
  snapshot: SwitcherSnapshot;
  /** VM path -> PNG (base64). Only for VMs known to be running. */
  thumbnails: Record<string, string>;
  progress: SwitchProgressView | null;
  notice: Notice | null;
  panel: Panel;
  /** SecureAttention arrived and the lock has not been lifted since. */
  secureAttention: boolean;
  /** "ask" prompts waiting for the person, oldest first. */
  prompts: PromptModel[];
  /** The New-machine dialog or a machine's settings, when open. */
  editor: EditorView | null;
  /**
   * Where a switch hotkey asked to go, shown at once, before vm-daemon has switched (issue 17:
   * hotkey to picture). Only a running VM without a GPU (its view is mounted and painted) or the
   * tiles ('/'). Cleared when `ActiveVm` names it, when its switch fails or is replaced, on a
   * lock, when vm-daemon or input-daemon goes away, or after HOTKEY_VIEW_BOUND_MS
   * (expireHotkeyView). Safe for input (docs/security-model.md, rule 6): from the chord on,
   * input-daemon holds what is typed and delivers it only where the switch lands, or drops it;
   * the view shows and takes nothing.
   */
  hotkeyView: HotkeyView | null;
}

export interface HotkeyView {
  target: string;
  /** When the renderer heard the hotkey (Date.now()). */
  at: number;
}

/** The longest a hotkey's view is shown without vm-daemon's `ActiveVm` confirming it. */
export const HOTKEY_VIEW_BOUND_MS = 20_000;

export function initialUiState(over: Partial<UiState> = {}): UiState {
  return {
    connection: 'connecting',
    snapshot: emptySnapshot(),
    thumbnails: {},
    progress: null,
    notice: null,
    panel: 'machines',
    secureAttention: false,
    prompts: [],
    editor: null,
    hotkeyView: null,
    ...over,
  };
}

let noticeIds = 0;

/** Thumbnails of VMs that are gone or no longer running are dropped: never show a stale screen. */
function pruneThumbnails(thumbs: Record<string, string>, snap: SwitcherSnapshot): Record<string, string> {
  const out: Record<string, string> = {};
  for (const vm of snap.vms) if (vm.state === 'running' && thumbs[vm.path]) out[vm.path] = thumbs[vm.path];
  // Nothing dropped: the same object, so nothing that reads the thumbnails renders again.
  return Object.keys(out).length === Object.keys(thumbs).length ? thumbs : out;
}

function mergePrompts(known: PromptModel[], incoming: PromptModel[]): PromptModel[] {
  const ids = new Set(known.map((p) => p.id));
  return [...known, ...incoming.filter((p) => !ids.has(p.id))];
}

/** Every field of `next` is `s`'s own object (see share-unchanged.ts). */
function sameState(s: UiState, next: UiState): boolean {
  return (Object.keys(next) as Array<keyof UiState>).every((k) => next[k] === s[k]);
}

/** Applies one push from the main process. */
export function applyPush<C extends PushChannel>(s: UiState, channel: C, payload: PushMap[C]): UiState {
  switch (channel) {
    case 'snapshot': {
      // What did not change keeps its objects (share-unchanged.ts): a switch pushes several
      // snapshots, and each would otherwise render every tile and view again.
      const snap = shareUnchanged(s.snapshot, payload as SwitcherSnapshot);
      // Prompts: the daemon's list is the truth; ones it no longer has were answered or expired.
      const open = new Set(snap.prompts.map((p) => p.id));
      const prompts = shareUnchanged(
        s.prompts,
        snap.daemons.usb.up
          ? mergePrompts(
              s.prompts.filter((p) => open.has(p.id)),
              snap.prompts,
            )
          : [],
      );
      const locked = snap.input?.locked ?? false;
      const next: UiState = {
        ...s,
        hotkeyView: settleHotkeyView(s.hotkeyView, snap),
        snapshot: snap,
        thumbnails: pruneThumbnails(s.thumbnails, snap),
        prompts,
        // Locked=false from the input daemon ends a secure-attention lock screen.
        secureAttention: s.secureAttention && (locked || !snap.daemons.input.up ? s.secureAttention : false),
      };
      // Nothing changed: the same state, so the store tells no component (the push cost nothing).
      return sameState(s, next) ? s : next;
    }
    case 'vmPatch': {
      const { path, patch } = payload as PushMap['vmPatch'];
      const vms = shareUnchanged(
        s.snapshot.vms,
        s.snapshot.vms.map((v) => (v.path === path ? { ...v, ...patch } : v)),
      );
      if (vms === s.snapshot.vms) return s;
      const snapshot = { ...s.snapshot, vms };
      return { ...s, snapshot, thumbnails: pruneThumbnails(s.thumbnails, snapshot) };
    }
    case 'daemon': {
      const { name, status } = payload as PushMap['daemon'];
      let snapshot: SwitcherSnapshot = { ...s.snapshot, daemons: { ...s.snapshot.daemons, [name]: status } };
      if (!status.up) {
        // Whatever that daemon told us is no longer true.
        if (name === 'vmManager')
          snapshot = { ...snapshot, vms: [], activeVm: '/', switching: false, configErrors: [] };
        if (name === 'input') snapshot = { ...snapshot, input: null, features: { injectInput: false } };
        if (name === 'usb') snapshot = { ...snapshot, usbDevices: [], prompts: [] };
      }
      snapshot = shareUnchanged(s.snapshot, snapshot);
      const progress =
        !status.up && name === 'vmManager' && s.progress?.status === 'running'
          ? {
              ...s.progress,
              status: 'failed' as const,
              error: describeFailure({
                name: 'ServiceDown',
                message: 'The VM manager stopped during the switch',
              }),
            }
          : s.progress;
      const next: UiState = {
        ...s,
        snapshot,
        progress,
        hotkeyView: !status.up && (name === 'vmManager' || name === 'input') ? null : s.hotkeyView,
        thumbnails: pruneThumbnails(s.thumbnails, snapshot),
        prompts: name === 'usb' && !status.up && s.prompts.length ? [] : s.prompts,
      };
      return sameState(s, next) ? s : next;
    }
    case 'switchProgress': {
      const p = payload as PushMap['switchProgress'];
      // A switch that ended well outdates an earlier switch's failure card: it stayed up over every
      // VM after it until dismissed (a refusal while locked, then every later hotkey's picture
      // under "Could not switch to Personal", seen in the image's screendumps).
      if (p.step === 'done' && s.progress?.status === 'failed') s = { ...s, progress: null };
      // A hotkey's switch whose target is already on screen (hotkeyView): the picture is the
      // progress; a card over it would be more software-rendered frames while the view is painted.
      // Only a failure is shown, and it takes the view back to where vm-daemon is.
      if (s.hotkeyView?.target === p.target) {
        if (p.step === 'superseded') return { ...s, hotkeyView: null };
        if (p.step !== 'failed') return s;
        s = { ...s, hotkeyView: null };
      }
      // Coming back to the tiles needs no progress card, only a failure does.
      if (p.target === '/' && p.step !== 'failed' && !(s.progress?.target === '/')) return s;
      // A request waiting for the running switch: named on the running switch's card; a request
      // replaced before it ran changes nothing on screen (the newer one is pending instead).
      if (p.step === 'superseded') return s;
      if (p.step === 'pending')
        return s.progress?.status === 'running'
          ? { ...s, progress: { ...s.progress, pendingTarget: p.target } }
          : s;
      const same = s.progress && s.progress.target === p.target && s.progress.status === 'running';
      // A switch nobody watched (a hotkey, over before any step was worth announcing): the new
      // picture says it. A "Switched to" card would be two more software-rendered frames right
      // when the kiosk paints the new VM (issue 17: hotkey to picture).
      if (p.step === 'done' && !same) return s;
      const base: SwitchProgressView = same
        ? s.progress!
        : { target: p.target, steps: [], status: 'running', startedAt: p.at, error: null };
      const status = p.step === 'done' ? 'done' : p.step === 'failed' ? 'failed' : 'running';
      return {
        ...s,
        progress: {
          ...base,
          // A step may be announced more than once (begin, then with details): keep one entry.
          steps:
            base.steps.at(-1)?.step === p.step
              ? [
                  ...base.steps.slice(0, -1),
                  { step: p.step, detail: p.detail || base.steps.at(-1)!.detail, at: p.at },
                ]
              : [...base.steps, { step: p.step, detail: p.detail, at: p.at }],
          status,
          error:
            status === 'failed'
              ? (base.error ?? { title: 'The switch failed', message: p.detail, detail: '' })
              : base.error,
        },
      };
    }
    case 'secureAttention':
      return { ...s, secureAttention: true, hotkeyView: null };
    case 'prompt':
      return { ...s, prompts: mergePrompts(s.prompts, [payload as PromptModel]) };
    case 'thumbnail': {
      const t = payload as PushMap['thumbnail'];
      const vm = s.snapshot.vms.find((v) => v.path === t.vm);
      if (!vm || vm.state !== 'running') return s;
      return { ...s, thumbnails: { ...s.thumbnails, [t.vm]: t.png } };
    }
    case 'usbRejected': {
      const r = payload as PushMap['usbRejected'];
      const dev = s.snapshot.usbDevices.find((d) => d.path === r.device);
      return {
        ...s,
        notice: {
          id: ++noticeIds,
          kind: 'error',
          title: `USB device refused: ${dev?.name || r.device}`,
          message: r.reason,
          detail: '',
        },
      };
    }
    case 'hotkey':
      return hotkeyPressed(s, payload as PushMap['hotkey'], Date.now());
    default:
      return s;
  }
}

/**
 * input-daemon recognised a chord (HotkeyPressed, sent before it asks vm-daemon to switch). A
 * switch chord to the tiles or to a running VM without a GPU shows that view at once; anything
 * else (a stopped VM to boot, a GPU VM, no VM in the slot, locked, a lock chord) shows nothing
 * early and drops an earlier hotkey's view: the newest request is the one vm-daemon carries out.
 */
export function hotkeyPressed(s: UiState, h: PushMap['hotkey'], now: number): UiState {
  const m = /^slot:(\d+)$/.exec(h.action);
  if (!m) return s.hotkeyView ? { ...s, hotkeyView: null } : s;
  const slot = Number(m[1]);
  let target: string | null = null;
  if (!isLocked(s) && s.snapshot.daemons.vmManager.up && s.snapshot.daemons.input.up) {
    if (slot === 0) target = '/';
    else {
      const vm = s.snapshot.vms.find((v) => v.slot === slot);
      if (vm && vm.state === 'running' && !vm.hasGpu) target = vm.path;
    }
  }
  if (target === null || target === s.snapshot.activeVm) return s.hotkeyView ? { ...s, hotkeyView: null } : s;
  return { ...s, hotkeyView: { target, at: now } };
}

/** A hotkey's view once vm-daemon's state is known: kept while its switch may still land there. */
function settleHotkeyView(h: HotkeyView | null, snap: SwitcherSnapshot): HotkeyView | null {
  if (!h) return h;
  if (!snap.daemons.vmManager.up || snap.input?.locked) return null;
  if (snap.activeVm === h.target) return null; // confirmed: ActiveVm shows it from now on
  // Its switch ended elsewhere (failed, rolled back) and nothing newer is running.
  if (!snap.switching && snap.lastSwitch?.target === h.target) return null;
  if (h.target !== '/') {
    const vm = snap.vms.find((v) => v.path === h.target);
    if (!vm || vm.state !== 'running' || vm.hasGpu) return null;
  }
  return h;
}

/** The bound passed without vm-daemon confirming the hotkey's view: back to what `ActiveVm` says. */
export function expireHotkeyView(s: UiState, at: number): UiState {
  return s.hotkeyView?.at === at ? { ...s, hotkeyView: null } : s;
}

/** The renderer asked for a switch: show progress at once, before the first signal arrives. */
export function beginSwitch(s: UiState, target: string, now: number): UiState {
  // A click is the newest request: an earlier hotkey's view gives way to it.
  return {
    ...s,
    hotkeyView: null,
    progress: { target, steps: [], status: 'running', startedAt: now, error: null },
  };
}

/** The Switch call itself failed: the named D-Bus error, in words. */
export function failSwitch(s: UiState, target: string, failure: RequestFailure, now: number): UiState {
  // Not a failure: a newer request (another click, a hotkey) replaced this one; it is shown instead.
  if (failure.name === 'Superseded') return s;
  const error = describeFailure(failure, 'switch');
  const base =
    s.progress && s.progress.target === target
      ? s.progress
      : { target, steps: [], startedAt: now, error: null };
  return { ...s, progress: { ...base, status: 'failed', error } };
}

export function finishSwitch(s: UiState, target: string): UiState {
  if (!s.progress || s.progress.target !== target || s.progress.status === 'failed') return s;
  return { ...s, progress: { ...s.progress, status: 'done' } };
}

export function showFailure(s: UiState, failure: RequestFailure, action: string): UiState {
  return { ...s, notice: { id: ++noticeIds, kind: 'error', ...describeFailure(failure, action) } };
}

export type UiStore = StoreApi<UiState>;

export function createUiStore(initial: Partial<UiState> = {}): UiStore {
  return createStore<UiState>()(() => initialUiState(initial));
}

/** Derived: the VM whose screen the switcher shows full screen, or null for the tiles. */
export function shownVm(s: UiState) {
  const a = s.hotkeyView?.target ?? s.snapshot.activeVm;
  if (a === '/' || !s.snapshot.daemons.vmManager.up) return null;
  const vm = s.snapshot.vms.find((v) => v.path === a);
  return vm && !vm.hasGpu ? vm : null;
}

/**
 * The VMs whose display the shell keeps connected: every running VM without a GPU, and the shown
 * one. Each keeps one VNC connection for as long as it runs, so a switch only changes which view
 * is visible — no reconnect, no fresh noVNC, no first full frame to wait for (issue 12, item 10:
 * under TCG that reconnect took seconds and the new view could stay black). Sorted by path so the
 * list's order, and so each view's place in the page, never changes with a switch.
 */
export function displayedVms(s: UiState): VmModel[] {
  if (!s.snapshot.daemons.vmManager.up) return [];
  const a = s.snapshot.activeVm;
  return s.snapshot.vms
    .filter((v) => !v.hasGpu && (v.state === 'running' || v.path === a))
    .sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

export const isLocked = (s: UiState): boolean => s.secureAttention || !!s.snapshot.input?.locked;
