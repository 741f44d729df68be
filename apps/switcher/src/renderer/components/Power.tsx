/**
 * The power part of the switcher (issue 19): the battery in the top bar and in a VM's view bar,
 * a low-battery warning, "Suspending…" with the step in progress (above the lock screen, which
 * the suspend's first step brings up), and after waking a report of what did not come back.
 */
import { useState } from 'react';
import type { BatteryModel, PowerModel, SuspendReportModel } from '../../common/model';
import { useUi } from './context';
import { Icon } from './icons';

/** "2 h 05 min", "12 min"; '' when unknown. */
export function timeLeft(sec: number): string {
  if (!(sec > 0)) return '';
  const min = Math.round(sec / 60);
  return min >= 60 ? `${Math.floor(min / 60)} h ${String(min % 60).padStart(2, '0')} min` : `${min} min`;
}

/** The battery in words, as a screen reader says it and a tooltip shows it. */
export function batteryLabel(b: BatteryModel): string {
  const pct = `${Math.round(b.percentage)}%`;
  if (b.state === 'charging') return `Battery ${pct}, charging`;
  if (b.state === 'full') return `Battery full, on mains power`;
  if (!b.onBattery) return `Battery ${pct}, on mains power`;
  const left = timeLeft(b.timeToEmptySec);
  return `Battery ${pct}${left ? `, about ${left} left` : ''}${b.level !== 'normal' ? ` (${b.level})` : ''}`;
}

export const SUSPEND_STEP_LABELS: Record<string, string> = {
  'lock-seat': 'Locking the screen',
  'wait-switch': 'Waiting for a switch to finish',
  'pause-vms': 'Pausing the machines',
  sleep: 'Going to sleep',
  'resume-vms': 'Resuming the machines',
};

const battery = (s: { snapshot: { power: PowerModel | null } }) => s.snapshot.power?.battery ?? null;

/** Battery level and charging state; nothing when there is no battery (a desktop, no UPower). */
export function BatteryIndicator() {
  const b = useUi(battery);
  if (!b || !b.present) return null;
  const label = batteryLabel(b);
  return (
    <span
      className={`battery level-${b.level}${b.state === 'charging' ? ' charging' : ''}`}
      role="img"
      aria-label={label}
      title={label}
    >
      <span className="battery-body" aria-hidden="true">
        <span className="battery-fill" style={{ width: `${Math.max(0, Math.min(100, b.percentage))}%` }} />
      </span>
      <span className="battery-pct" aria-hidden="true">
        {Math.round(b.percentage)}%{b.state === 'charging' ? ' ⚡' : ''}
      </span>
    </span>
  );
}

/** A warning strip while the battery is low or critical and not charging. */
export function LowBatteryWarning() {
  const b = useUi(battery);
  if (!b || !b.present || b.level === 'normal') return null;
  const left = timeLeft(b.timeToEmptySec);
  return (
    <div className={`low-battery level-${b.level}`} role="alert">
      <Icon name="warn" size={18} />
      {b.level === 'critical'
        ? `Battery critical (${Math.round(b.percentage)}%): the machine will suspend to save your work. Plug in now.`
        : `Battery low (${Math.round(b.percentage)}%${left ? `, about ${left} left` : ''}). Plug in soon.`}
    </div>
  );
}

function notBackLines(r: SuspendReportModel): string[] {
  return r.notBack.map(([id, why]) => `${id}: ${why}`);
}

/**
 * While suspending: the step in progress. After a suspend that failed or left something behind:
 * what, until dismissed. A suspend that went fine needs no report (the lock screen is the sign).
 */
export function SuspendCard() {
  const power = useUi((s) => s.snapshot.power);
  const [dismissed, setDismissed] = useState<number | null>(null);
  if (!power) return null;
  if (power.suspending) {
    const step = power.progress?.step ?? '';
    return (
      <div className="progress-card suspend-card status-running" role="status" aria-live="polite">
        <div className="progress-head">
          <span className="spinner" aria-hidden="true" />
          <strong>{step === 'resume-vms' ? 'Waking up…' : 'Suspending…'}</strong>
        </div>
        {step && (
          <div className="progress-step">
            {SUSPEND_STEP_LABELS[step] ?? step}
            {power.progress?.detail && power.progress.detail !== step ? ` — ${power.progress.detail}` : ''}
          </div>
        )}
      </div>
    );
  }
  const r = power.lastSuspend;
  if (!r || r.outcome === 'ok' || dismissed === r.startedMs) return null;
  return (
    <div className="progress-card suspend-card status-failed" role="alert">
      <div className="progress-head">
        <Icon name="warn" size={20} />
        <strong>
          {r.outcome === 'failed' ? 'Did not suspend' : 'Back from sleep, but not everything came back'}
        </strong>
      </div>
      <div className="progress-error">
        {r.outcome === 'failed' && (
          <>
            <div className="error-title">{r.error}</div>
            <div>Your machines were left running.</div>
          </>
        )}
        {r.notBack.length > 0 && (
          <ul className="suspend-not-back" aria-label="Did not come back">
            {notBackLines(r).map((l) => (
              <li key={l}>{l}</li>
            ))}
          </ul>
        )}
        <button type="button" className="ghost small" onClick={() => setDismissed(r.startedMs)}>
          Dismiss
        </button>
      </div>
    </div>
  );
}
