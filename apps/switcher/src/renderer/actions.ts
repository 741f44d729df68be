/** What the UI can do: requests on the transport, with their outcome folded into the store. */
import type {
  EvdevEvent,
  InputDeviceClass,
  MachineOptions,
  RequestFailure,
  ViewTiming,
} from '../common/channels';
import type { Transport } from './transport';
import {
  beginSwitch,
  expireHotkeyView,
  failSwitch,
  finishSwitch,
  isLocked,
  showFailure,
  type EditorView,
  type Panel,
  type UiStore,
} from './store';

export interface Actions {
  switchTo(vm: string): Promise<void>;
  startVm(vm: string): Promise<void>;
  stopVm(vm: string): Promise<void>;
  assignUsb(device: string, vm: string): Promise<void>;
  releaseUsb(device: string): Promise<void>;
  setSticky(device: string, sticky: boolean): Promise<void>;
  setFollowFocus(device: string, follow: boolean): Promise<void>;
  answerPrompt(promptId: number, answer: 'allow' | 'deny'): Promise<void>;
  lock(): Promise<void>;
  /** Suspend the machine with its VMs (Power1.Suspend). */
  suspend(): Promise<void>;
  /**
   * Sends the password once. Resolves to null when unlocked, else to why not (the lock screen shows
   * it in words). The password goes into the request only: never into the store.
   */
  unlock(password: string): Promise<RequestFailure | null>;
  injectInput(deviceClass: InputDeviceClass, events: EvdevEvent[]): void;
  setThumbnailsVisible(visible: boolean): void;
  vncUrl(vm: string): Promise<string>;
  /**
   * The machine dialogs' requests: each resolves to null when done, else to the failure, which the
   * dialog shows in place (next to what the person typed) instead of a toast.
   */
  createVm(name: string, options: MachineOptions): Promise<RequestFailure | null>;
  updateVm(vm: string, options: MachineOptions): Promise<RequestFailure | null>;
  deleteVm(vm: string, removeDisks: boolean): Promise<RequestFailure | null>;
  cancelDiskJob(vm: string): Promise<void>;
  /** Remove the installation medium (at once from a running machine); the dialog stays open. */
  ejectVm(vm: string): Promise<RequestFailure | null>;
  /** Open the New-machine dialog or a machine's settings; null closes it. */
  showEditor(editor: EditorView | null): void;
  showPanel(p: Panel): void;
  dismissProgress(): void;
  dismissNotice(): void;
  /** The hotkey's view heard at `at` was not confirmed in time: show what ActiveVm says. */
  expireHotkeyView(at: number): void;
  /** The timing of a change of the view on screen, for the journal (view-timing.ts). */
  reportView(t: ViewTiming): void;
}

export function createActions(store: UiStore, transport: Transport): Actions {
  const set = (f: (s: ReturnType<UiStore['getState']>) => ReturnType<UiStore['getState']>) =>
    store.setState(f(store.getState()), true);
  const simple = async (
    what: string,
    p: Promise<{ ok: boolean; error?: { name: string; message: string } }>,
  ) => {
    const r = await p;
    if (!r.ok && r.error) set((s) => showFailure(s, r.error!, what));
  };
  // Thumbnails are wanted while any view asks for them (the tiles; a VM's view while its live
  // display is not up). The core keeps one flag per connection, so the views are counted here: two
  // views turning it on and off in separate renders must not turn it off under each other. And a
  // request made before the connection opened was dropped ("not connected"), and a connection
  // opened again is a new client to the core: each time it opens, it is told again. Without this
  // the tiles of a kiosk whose first render came before its WebSocket opened never got a thumbnail
  // (xen-entry.e2e scenario 4: no Screenshot call in 180 s, while vm-daemon answered one at once).
  let thumbnailViews = 0;
  const sendThumbnailsVisible = () =>
    void transport.request('setThumbnailsVisible', { visible: thumbnailViews > 0 });
  transport.onConnection((c) => {
    if (c === 'open' && thumbnailViews > 0) sendThumbnailsVisible();
  });
  return {
    async switchTo(vm) {
      if (isLocked(store.getState())) return;
      if (vm !== '/') set((s) => beginSwitch(s, vm, Date.now()));
      const r = await transport.request('switchTo', { vm });
      if (!r.ok) set((s) => failSwitch(s, vm, r.error, Date.now()));
      else set((s) => finishSwitch(s, vm));
    },
    startVm: (vm) => simple('start the machine', transport.request('startVm', { vm })),
    stopVm: (vm) => simple('shut the machine down', transport.request('stopVm', { vm })),
    assignUsb: (device, vm) => simple('attach the device', transport.request('assignUsb', { device, vm })),
    releaseUsb: (device) => simple('release the device', transport.request('releaseUsb', { device })),
    setSticky: (device, sticky) =>
      simple('change the device rule', transport.request('setSticky', { device, sticky })),
    setFollowFocus: (device, follow) =>
      simple('change the device rule', transport.request('setFollowFocus', { device, follow })),
    async answerPrompt(promptId, answer) {
      set((s) => ({ ...s, prompts: s.prompts.filter((p) => p.id !== promptId) }));
      await simple('answer the request', transport.request('answerPrompt', { promptId, answer }));
    },
    lock: () => simple('lock', transport.request('lock', {})),
    suspend: () => simple('suspend', transport.request('suspend', {})),
    async unlock(password) {
      const r = await transport.request('unlock', { password });
      if (r.ok || r.error.name === 'ServiceDown') set((s) => ({ ...s, secureAttention: false }));
      if (r.ok) return null;
      // Input-daemon gone: nothing holds the seat, so the lock screen closes and the toast says why.
      if (r.error.name === 'ServiceDown') set((s) => showFailure(s, r.error, 'unlock'));
      return r.error;
    },
    injectInput(deviceClass, events) {
      void transport.request('injectInput', { deviceClass, events });
    },
    setThumbnailsVisible(visible) {
      const before = thumbnailViews > 0;
      thumbnailViews = Math.max(0, thumbnailViews + (visible ? 1 : -1));
      if (thumbnailViews > 0 !== before) sendThumbnailsVisible();
    },
    async vncUrl(vm) {
      const r = await transport.request('vncUrl', { vm });
      return r.ok && r.result.url ? transport.resolveWs(r.result.url) : '';
    },
    async createVm(name, options) {
      const r = await transport.request('createVm', { name, options });
      if (!r.ok) return r.error;
      set((s) => ({ ...s, editor: null }));
      return null;
    },
    async updateVm(vm, options) {
      const r = await transport.request('updateVm', { vm, options });
      if (!r.ok) return r.error;
      set((s) => ({ ...s, editor: null }));
      return null;
    },
    async deleteVm(vm, removeDisks) {
      const r = await transport.request('deleteVm', { vm, removeDisks });
      if (!r.ok) return r.error;
      set((s) => ({ ...s, editor: null }));
      return null;
    },
    cancelDiskJob: (vm) => simple('cancel the import', transport.request('cancelDiskJob', { vm })),
    async ejectVm(vm) {
      const r = await transport.request('ejectVm', { vm });
      return r.ok ? null : r.error;
    },
    showEditor: (editor) => set((s) => ({ ...s, editor })),
    showPanel: (panel) => set((s) => ({ ...s, panel })),
    dismissProgress: () => set((s) => ({ ...s, progress: null })),
    dismissNotice: () => set((s) => ({ ...s, notice: null })),
    expireHotkeyView: (at) => set((s) => expireHotkeyView(s, at)),
    reportView(t) {
      void transport.request('reportView', t);
    },
  };
}
