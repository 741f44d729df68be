import { memo, useEffect, useState } from 'react';
import { DAEMON_NAMES } from '../../common/model';
import type { Panel } from '../store';
import { isLocked } from '../store';
import { useActions, useUi } from './context';
import { Icon } from './icons';
import { BatteryIndicator } from './Power';

/**
 * One formatter for the page's life: `toLocaleTimeString` with options builds a new ICU formatter
 * on every call, and the clock rendered with every render of the top bar (the kiosk's CPU profile
 * in the image: half a second of the page's first seconds, under TCG).
 */
const CLOCK_FORMAT = new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit' });

/** Memoised (no props): renders on its own 10 s tick, not with every render of the top bar. */
const Clock = memo(function Clock() {
  const [now, setNow] = useState(() => new Date());
  useEffect(() => {
    const t = setInterval(() => setNow(new Date()), 10_000);
    return () => clearInterval(t);
  }, []);
  return (
    <time className="clock" dateTime={now.toISOString()}>
      {CLOCK_FORMAT.format(now)}
    </time>
  );
});

const TABS: Array<{ id: Panel; label: string; icon: string }> = [
  { id: 'machines', label: 'Machines', icon: 'grid' },
  { id: 'usb', label: 'USB devices', icon: 'usb' },
  { id: 'diagnostics', label: 'Diagnostics', icon: 'pulse' },
];

export function TopBar() {
  const actions = useActions();
  const panel = useUi((s) => s.panel);
  const usbCount = useUi((s) => s.snapshot.usbDevices.length);
  const healthy = useUi(
    (s) => s.connection === 'open' && DAEMON_NAMES.every((d) => s.snapshot.daemons[d].up),
  );
  const locked = useUi(isLocked);
  const inputUp = useUi((s) => s.snapshot.daemons.input.up);
  const canSuspend = useUi((s) => s.snapshot.power !== null && !s.snapshot.power.suspending);
  return (
    <header className="topbar">
      <div className="brand" aria-label="Bulkhead">
        <span className="brand-mark" aria-hidden="true" />
        Bulkhead
      </div>
      <nav className="tabs" aria-label="Sections">
        {TABS.map((t) => (
          <button
            key={t.id}
            type="button"
            className={`tab${panel === t.id ? ' selected' : ''}`}
            aria-current={panel === t.id ? 'page' : undefined}
            onClick={() => actions.showPanel(t.id)}
          >
            <Icon name={t.icon} size={16} /> {t.label}
            {t.id === 'usb' && usbCount > 0 && <span className="count">{usbCount}</span>}
          </button>
        ))}
      </nav>
      <div className="topbar-right">
        <button
          type="button"
          className={`health ${healthy ? 'ok' : 'bad'}`}
          onClick={() => actions.showPanel('diagnostics')}
          aria-label={healthy ? 'All services running' : 'Some services are not running'}
        >
          <span className={`dot ${healthy ? 'up' : 'down'}`} aria-hidden="true" />{' '}
          {healthy ? 'All services running' : 'Service problem'}
        </button>
        <BatteryIndicator />
        <Clock />
        <button
          type="button"
          className="ghost"
          onClick={() => void actions.lock()}
          disabled={locked || !inputUp}
          aria-label="Lock the screen"
        >
          <Icon name="lock" size={16} /> Lock
        </button>
        <button
          type="button"
          className="ghost"
          onClick={() => void actions.suspend()}
          disabled={!canSuspend || !inputUp}
          aria-label="Suspend: lock, pause the machines and sleep"
        >
          <Icon name="power" size={16} /> Suspend
        </button>
      </div>
    </header>
  );
}
