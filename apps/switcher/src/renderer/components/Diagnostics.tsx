import { DAEMON_LABELS, DAEMON_NAMES } from '../../common/model';
import { stepLabel } from '../../common/messages';
import { useUi } from './context';

const fmtMs = (ms: number) =>
  ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
const fmtTime = (ms: number) => (ms ? new Date(ms).toLocaleTimeString() : '—');

export function Diagnostics() {
  const snap = useUi((s) => s.snapshot);
  const connection = useUi((s) => s.connection);
  const last = snap.lastSwitch;
  const nameOf = (p: string) =>
    p === '/' ? 'Switcher' : (snap.vms.find((v) => v.path === p)?.name ?? p.split('/').pop());
  const total = last ? Math.max(1, ...last.steps.map((s) => s[1])) : 1;
  return (
    <section className="panel diagnostics" aria-labelledby="diag-title">
      <header className="section-head">
        <h1 id="diag-title">Diagnostics</h1>
        <p className="section-sub">Services, the last switch and machine definitions.</p>
      </header>
      <div className="diag-grid">
        <article className="card" aria-labelledby="diag-services">
          <h2 id="diag-services">Services</h2>
          <ul className="service-list">
            <li>
              <span className={`dot ${connection === 'open' ? 'up' : 'down'}`} aria-hidden="true" />
              <span>Switcher host</span>
              <span className="muted">{connection === 'open' ? 'connected' : connection}</span>
            </li>
            {DAEMON_NAMES.map((d) => (
              <li key={d} data-daemon={d}>
                <span className={`dot ${snap.daemons[d].up ? 'up' : 'down'}`} aria-hidden="true" />
                <span>{DAEMON_LABELS[d]}</span>
                <span className="muted">
                  {snap.daemons[d].up ? 'reachable' : snap.daemons[d].detail || 'down'} · since{' '}
                  {fmtTime(snap.daemons[d].since)}
                </span>
              </li>
            ))}
          </ul>
          <dl className="facts">
            <dt>Accelerator</dt>
            <dd>{snap.accelerator || '—'}</dd>
            <dt>Input seat</dt>
            <dd>{snap.input?.seat || '—'}</dd>
            <dt>Input goes to</dt>
            <dd>{snap.input ? nameOf(snap.input.focusedTarget) : '—'}</dd>
            {snap.input?.lastHotkeyError && (
              <>
                <dt>Last hotkey error</dt>
                <dd className="error-text">{snap.input.lastHotkeyError}</dd>
              </>
            )}
          </dl>
        </article>
        <article className="card" aria-labelledby="diag-switch">
          <h2 id="diag-switch">Last switch</h2>
          {!last ? (
            <p className="muted">No switch yet.</p>
          ) : (
            <>
              <p>
                {nameOf(last.from)} → {nameOf(last.target)}:{' '}
                <strong className={last.outcome === 'ok' ? 'ok-text' : 'error-text'}>{last.outcome}</strong>{' '}
                in {fmtMs(last.durationMs)}
                {last.error && <span className="error-text"> ({last.error})</span>}
                <span className="muted"> · {fmtTime(last.startedMs)}</span>
              </p>
              <table className="steps">
                <caption className="visually-hidden">Step timings</caption>
                <tbody>
                  {last.steps.map(([step, ms]) => (
                    <tr key={step}>
                      <th scope="row">{stepLabel(step)}</th>
                      <td className="bar-cell">
                        <span className="bar" style={{ width: `${Math.max(2, (ms / total) * 100)}%` }} />
                      </td>
                      <td className="num">{fmtMs(ms)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
        </article>
        <article className="card wide" aria-labelledby="diag-config">
          <h2 id="diag-config">Machine definitions</h2>
          {snap.configErrors.length === 0 ? (
            <p className="muted">
              {snap.daemons.vmManager.up
                ? 'Every VM file is valid.'
                : 'Unknown while the VM manager is down.'}
            </p>
          ) : (
            <table className="config-errors">
              <thead>
                <tr>
                  <th scope="col">File</th>
                  <th scope="col">Field</th>
                  <th scope="col">Problem</th>
                </tr>
              </thead>
              <tbody>
                {snap.configErrors.map((e) => (
                  <tr key={e.file + e.field}>
                    <td>
                      <code>{e.file}</code>
                    </td>
                    <td>
                      <code>{e.field || '—'}</code>
                    </td>
                    <td>{e.reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </article>
      </div>
    </section>
  );
}
