import { memo, useEffect } from 'react';
import { useShallow } from 'zustand/react/shallow';
import { HOTKEY_VIEW_BOUND_MS, displayedVms, isLocked, shownVm } from '../store';
import { useActions, useUi } from './context';
import { Diagnostics } from './Diagnostics';
import { LockScreen, NoticeToast, OutageBanner, PromptDialog, SwitchProgressCard } from './Overlays';
import { TileGrid } from './TileGrid';
import { LowBatteryWarning, SuspendCard } from './Power';
import { MachineEditor } from './MachineEditor';
import { TopBar } from './TopBar';
import { UsbPanel } from './UsbPanel';
import { VmView } from './VmView';
import { useViewTiming } from '../view-timing';

/**
 * The app's parts without props, memoised: each renders when what it selects from the store
 * changes, not with every render of App (a switch renders App: which view is shown). On the
 * Control Domain the kiosk draws in software, and the frames right after a hotkey are the ones
 * that show the VM switched to (issue 17: hotkey to picture).
 */
const Parts = {
  TopBar: memo(TopBar),
  OutageBanner: memo(OutageBanner),
  LowBatteryWarning: memo(LowBatteryWarning),
  UsbPanel: memo(UsbPanel),
  Diagnostics: memo(Diagnostics),
  MachineEditor: memo(MachineEditor),
  SwitchProgressCard: memo(SwitchProgressCard),
  NoticeToast: memo(NoticeToast),
  PromptDialog: memo(PromptDialog),
  LockScreen: memo(LockScreen),
  SuspendCard: memo(SuspendCard),
  TileGrid: memo(TileGrid),
};

/** Digits 1-9 on the tiles screen switch to that slot; Ctrl+digit too (the hotkeys' shape). */
function useSlotKeys(enabled: boolean) {
  const actions = useActions();
  const vms = useUi((s) => s.snapshot.vms);
  useEffect(() => {
    if (!enabled) return;
    const onKey = (e: KeyboardEvent) => {
      if (e.altKey || e.metaKey || (e.target as HTMLElement)?.closest?.('input, select, textarea')) return;
      const m = /^Digit([0-9])$/.exec(e.code);
      if (!m) return;
      const slot = Number(m[1]);
      if (slot === 0) return;
      const vm = vms.find((v) => v.slot === slot);
      if (!vm) return;
      e.preventDefault();
      void actions.switchTo(vm.path);
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [actions, enabled, vms]);
}

/** A hotkey's early view (store: hotkeyView) lasts at most HOTKEY_VIEW_BOUND_MS unconfirmed. */
function useHotkeyViewBound() {
  const actions = useActions();
  const at = useUi((s) => s.hotkeyView?.at);
  useEffect(() => {
    if (at === undefined) return;
    const t = setTimeout(() => actions.expireHotkeyView(at), HOTKEY_VIEW_BOUND_MS);
    return () => clearTimeout(t);
  }, [actions, at]);
}

export function App() {
  const vm = useUi(shownVm);
  const panel = useUi((s) => s.panel);
  const locked = useUi(isLocked);
  // A USB prompt or a machine dialog: the tiles behind are inert and digits type, not switch.
  const modal = useUi((s) => s.prompts.length > 0 || s.editor !== null);
  const connected = useUi((s) => s.connection);
  const displayed = useUi(useShallow(displayedVms));
  useSlotKeys(!vm && panel === 'machines' && !locked && !modal);
  useHotkeyViewBound();
  const actions = useActions();
  useViewTiming(vm?.path ?? '/', actions.reportView);

  return (
    <div className={`app${vm ? ' in-vm' : ''}`} aria-busy={connected === 'connecting'}>
      {/* One view per displayed VM, mounted for as long as the VM runs; only the shown one is
          visible (see displayedVms). */}
      {displayed.map((d) => (
        <VmView
          key={d.path}
          vm={d}
          shown={d.path === vm?.path}
          banner={
            d.path === vm?.path ? (
              <>
                <Parts.OutageBanner />
                <Parts.LowBatteryWarning />
              </>
            ) : undefined
          }
        />
      ))}
      {/* The switcher's own screen stays mounted, and painted, under a shown VM (covered: hidden,
          inert): coming back to it (Ctrl+0) only changes which layer is drawn, no new DOM and no
          fresh raster of the whole screen in software (issue 17: hotkey to picture). */}
      <div
        className={`home${vm ? ' home-covered' : ''}`}
        inert={vm ? true : undefined}
        aria-hidden={vm ? true : undefined}
      >
        <Parts.TopBar />
        <Parts.OutageBanner />
        <Parts.LowBatteryWarning />
        <main className="content" inert={locked || modal ? true : undefined}>
          {panel === 'machines' && <Parts.TileGrid shown={!vm} />}
          {panel === 'usb' && <Parts.UsbPanel />}
          {panel === 'diagnostics' && <Parts.Diagnostics />}
        </main>
      </div>
      <Parts.MachineEditor />
      <Parts.SwitchProgressCard />
      <Parts.NoticeToast />
      <Parts.PromptDialog />
      <Parts.LockScreen />
      <Parts.SuspendCard />
    </div>
  );
}
