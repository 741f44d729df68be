import { memo, useEffect, useRef, useState, type CSSProperties, type ReactNode } from 'react';
import type { VmModel } from '../../common/model';
import { hotkeyForSlot } from '../../common/model';
import { NO_SCREEN_LABEL } from '../../common/messages';
import {
  EV_KEY,
  EV_REL,
  EV_SYN,
  REL_WHEEL,
  REL_X,
  REL_Y,
  SYN_REPORT,
  keyFrame,
  mouseButton,
} from '../keymap';
import { useActions, useUi } from './context';
import { Icon } from './icons';
import { BatteryIndicator } from './Power';

type DisplayState = 'connecting' | 'live' | 'unavailable';

/**
 * How long a lost display waits before connecting again (a VM restarting, a relay hiccup):
 * doubling from the first delay up to the last, back to the first once connected. A VM without a
 * VNC display is kept trying, but rarely (each try is a line in the web host's log).
 */
const RECONNECT_FIRST_MS = 2000;
const RECONNECT_MAX_MS = 60_000;

/**
 * A VM without a passed-through GPU, full screen inside the shell: its VNC display through noVNC,
 * view-only (input reaches VMs only through input-daemon). In the demo, keyboard and mouse are
 * forwarded to Input1.InjectEvents so hotkeys behave exactly as on hardware.
 *
 * The view stays mounted, and its display connected, while the VM runs, also when another VM or
 * the tiles are shown (`shown` false: hidden, inert, no input, no thumbnails): a switch makes an
 * already painted view visible instead of connecting a new noVNC and waiting for a first frame.
 *
 * A VM without a screen (Vm1.Display none: console only) has no display to connect to and no
 * screenshot to stand in: its view says so, and how to get back, instead of waiting for a picture.
 * Input is routed as for any other VM (input-daemon, or the demo's forwarding below).
 */
export const VmView = memo(function VmView({
  vm,
  shown = true,
  banner,
}: {
  vm: VmModel;
  shown?: boolean;
  banner?: ReactNode;
}) {
  const actions = useActions();
  const inject = useUi((s) => s.snapshot.features.injectInput);
  const inputUp = useUi((s) => s.snapshot.daemons.input.up);
  const thumb = useUi((s) => s.thumbnails[vm.path]);
  const screenRef = useRef<HTMLDivElement>(null);
  const vncRef = useRef<HTMLDivElement>(null);
  const [display, setDisplay] = useState<DisplayState>('connecting');
  // Bumped to connect again after the display was lost: a view now lives as long as its VM.
  const [attempt, setAttempt] = useState(0);
  const failures = useRef(0);
  const noScreen = vm.display === 'none';

  // The VNC display.
  useEffect(() => {
    if (noScreen) return; // nothing to connect to (and no reconnect loop in the web host's log)
    let rfb: { disconnect(): void } | null = null;
    let cancelled = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const lost = () => {
      if (cancelled) return;
      setDisplay('unavailable');
      const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** failures.current);
      failures.current++;
      retry = setTimeout(() => setAttempt((n) => n + 1), delay);
    };
    setDisplay('connecting');
    (async () => {
      const url = await actions.vncUrl(vm.path);
      if (cancelled || !vncRef.current) return;
      if (!url) return setDisplay('unavailable');
      try {
        const { default: RFB } = await import('@novnc/novnc');
        if (cancelled || !vncRef.current) return;
        const r = new RFB(vncRef.current, url, { shared: true });
        r.viewOnly = true;
        r.scaleViewport = true;
        r.focusOnClick = false;
        r.background = '#05070a';
        r.addEventListener('connect', () => {
          failures.current = 0;
          if (!cancelled) setDisplay('live');
        });
        r.addEventListener('disconnect', lost);
        rfb = r;
      } catch {
        lost();
      }
    })();
    return () => {
      cancelled = true;
      clearTimeout(retry);
      rfb?.disconnect();
    };
  }, [actions, vm.path, attempt, noScreen]);

  // The web host came back (a restart took its VNC relays with it): a view waiting out its backoff
  // (up to a minute) connects now. Only on the connection's reopening, not at mount.
  const connection = useUi((s) => s.connection);
  const lastConnection = useRef(connection);
  useEffect(() => {
    const was = lastConnection.current;
    lastConnection.current = connection;
    if (connection !== 'open' || was === 'open' || display === 'live' || noScreen) return;
    failures.current = 0;
    setAttempt((n) => n + 1);
  }, [connection, display, noScreen]);

  // Screenshots stand in while the shown view has no live display.
  useEffect(() => {
    if (!shown || display === 'live' || noScreen) return;
    actions.setThumbnailsVisible(true);
    return () => actions.setThumbnailsVisible(false);
  }, [actions, display, shown, noScreen]);

  // Keyboard: forwarded as evdev events (demo), or only Ctrl+0 handled here when input is elsewhere.
  useEffect(() => {
    if (!shown) return; // a hidden view's VM is not the one being talked to
    const forward = inject && inputUp;
    const onKey = (e: KeyboardEvent) => {
      if ((e.target as HTMLElement)?.closest?.('.vm-bar')) return; // the bar's own buttons
      if (!forward) {
        if (e.type === 'keydown' && e.ctrlKey && e.code === 'Digit0') {
          e.preventDefault();
          void actions.switchTo('/');
        }
        return;
      }
      const frame = keyFrame(e.code, e.type === 'keyup' ? 0 : e.repeat ? 2 : 1);
      if (!frame) return;
      e.preventDefault();
      e.stopPropagation();
      actions.injectInput('keyboard', frame);
    };
    window.addEventListener('keydown', onKey, true);
    window.addEventListener('keyup', onKey, true);
    return () => {
      window.removeEventListener('keydown', onKey, true);
      window.removeEventListener('keyup', onKey, true);
    };
  }, [actions, inject, inputUp, shown]);

  // Mouse: relative motion batched per frame, buttons and wheel at once.
  useEffect(() => {
    const el = screenRef.current;
    if (!el || !shown || !inject || !inputUp) return;
    let dx = 0;
    let dy = 0;
    let raf = 0;
    const flush = () => {
      raf = 0;
      if (!dx && !dy) return;
      const ev: Array<[number, number, number]> = [];
      if (dx) ev.push([EV_REL, REL_X, dx]);
      if (dy) ev.push([EV_REL, REL_Y, dy]);
      ev.push([EV_SYN, SYN_REPORT, 0]);
      dx = dy = 0;
      actions.injectInput('mouse', ev);
    };
    const onMove = (e: MouseEvent) => {
      dx += Math.round(e.movementX);
      dy += Math.round(e.movementY);
      if (!raf) raf = requestAnimationFrame(flush);
    };
    const onButton = (e: MouseEvent) => {
      const b = mouseButton(e.button);
      if (b === null) return;
      e.preventDefault();
      actions.injectInput('mouse', [
        [EV_KEY, b, e.type === 'mousedown' ? 1 : 0],
        [EV_SYN, SYN_REPORT, 0],
      ]);
    };
    const onWheel = (e: WheelEvent) => {
      e.preventDefault();
      actions.injectInput('mouse', [
        [EV_REL, REL_WHEEL, e.deltaY > 0 ? -1 : 1],
        [EV_SYN, SYN_REPORT, 0],
      ]);
    };
    const noMenu = (e: Event) => e.preventDefault();
    el.addEventListener('mousemove', onMove);
    el.addEventListener('mousedown', onButton);
    el.addEventListener('mouseup', onButton);
    el.addEventListener('wheel', onWheel, { passive: false });
    el.addEventListener('contextmenu', noMenu);
    return () => {
      cancelAnimationFrame(raf);
      el.removeEventListener('mousemove', onMove);
      el.removeEventListener('mousedown', onButton);
      el.removeEventListener('mouseup', onButton);
      el.removeEventListener('wheel', onWheel);
      el.removeEventListener('contextmenu', noMenu);
    };
  }, [actions, inject, inputUp, shown]);

  const style = { '--vm-color': vm.color || '#6e7781' } as CSSProperties;
  return (
    <section
      className={`vm-view${shown ? '' : ' vm-view-hidden'}`}
      style={style}
      aria-label={`${vm.name} display`}
      aria-hidden={shown ? undefined : true}
      inert={shown ? undefined : true}
      data-vm={vm.id}
    >
      <div className="vm-bar">
        <button
          type="button"
          className="ghost"
          onClick={() => void actions.switchTo('/')}
          aria-label="Back to machines (Ctrl+0)"
        >
          <Icon name="back" size={16} /> Machines <kbd>Ctrl+0</kbd>
        </button>
        <span className="vm-bar-title">
          <span className="tile-swatch" aria-hidden="true" />
          {vm.name}
          {vm.slot > 0 && <kbd>{hotkeyForSlot(vm.slot)}</kbd>}
        </span>
        <BatteryIndicator />
        <span className="vm-bar-status" role="status">
          {noScreen
            ? NO_SCREEN_LABEL
            : display === 'live'
              ? inject
                ? 'Keyboard and mouse go to this machine'
                : 'Live'
              : display === 'connecting'
                ? 'Connecting to the display…'
                : 'Live display unavailable — showing screenshots'}
        </span>
      </div>
      {banner}
      <div
        className={`vm-screen ${noScreen ? 'no-screen' : `display-${display}`}`}
        ref={screenRef}
        tabIndex={-1}
      >
        <div className="vm-vnc" ref={vncRef} />
        {noScreen && <NoScreenCard vm={vm} />}
        {!noScreen &&
          display !== 'live' &&
          (thumb ? (
            <img
              className="vm-fallback"
              alt={`${vm.name} screen`}
              src={`data:image/png;base64,${thumb}`}
              draggable={false}
            />
          ) : (
            <div className="vm-fallback-empty">Waiting for {vm.name}’s screen…</div>
          ))}
      </div>
    </section>
  );
});

/** What the view of a VM without a screen (Vm1.Display none) shows instead of a picture. */
function NoScreenCard({ vm }: { vm: VmModel }) {
  return (
    <div className="vm-no-screen" role="note" aria-labelledby={`no-screen-${vm.id}`}>
      <div className="card">
        <h2 id={`no-screen-${vm.id}`}>{vm.name} has no screen</h2>
        <p>
          It runs console only: it has no emulated display, so there is no picture to show here. What you type
          still goes to {vm.name}.
        </p>
        <p>
          Press <kbd>Ctrl+0</kbd> or choose <strong>Machines</strong> above to go back to the tiles
          {vm.slot > 0 ? (
            <>
              ; <kbd>{hotkeyForSlot(vm.slot)}</kbd> comes back here
            </>
          ) : null}
          .
        </p>
      </div>
    </div>
  );
}
