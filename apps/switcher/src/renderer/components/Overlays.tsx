import { useEffect, useRef } from 'react';
import { DAEMON_LABELS, DAEMON_NAMES } from '../../common/model';
import { stepLabel } from '../../common/messages';
import { isLocked } from '../store';
import { useActions, useUi } from './context';
import { Icon } from './icons';

/** Lock screen: shown on SecureAttention or Input1.Locked; nothing can be switched until Unlock. */
export function LockScreen() {
  const actions = useActions();
  const locked = useUi(isLocked);
  const inputUp = useUi((s) => s.snapshot.daemons.input.up);
  const ref = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (locked) ref.current?.focus();
  }, [locked]);
  if (!locked) return null;
  return (
    <div className="lock-screen" role="dialog" aria-modal="true" aria-labelledby="lock-title">
      <div className="lock-card">
        <span className="lock-icon">
          <Icon name="lock" size={40} />
        </span>
        <h1 id="lock-title">Locked</h1>
        <p>Keyboard and mouse reach no machine until you unlock.</p>
        <button ref={ref} type="button" className="primary big" onClick={() => void actions.unlock()}>
          Unlock
        </button>
        <p className="fine">
          {inputUp ? '' : 'The input service is not running. '}
          Authentication is not part of this build: Unlock releases the seat without asking for a password.
        </p>
      </div>
    </div>
  );
}

/** An "ask" USB rule matched: allow or deny the device for that machine. */
export function PromptDialog() {
  const actions = useActions();
  const prompt = useUi((s) => s.prompts[0]);
  const dev = useUi((s) => s.snapshot.usbDevices.find((d) => d.path === prompt?.device));
  const vm = useUi((s) => s.snapshot.vms.find((v) => v.path === prompt?.vm));
  const ref = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (prompt) ref.current?.focus();
  }, [prompt?.id]);
  if (!prompt) return null;
  const devName = dev?.name || dev?.product || prompt.device.split('/').pop();
  const vmName = vm?.name || prompt.vm.split('/').pop();
  return (
    <div className="modal-backdrop">
      <div
        className="modal"
        role="alertdialog"
        aria-modal="true"
        aria-labelledby="prompt-title"
        aria-describedby="prompt-desc"
      >
        <h2 id="prompt-title">
          <Icon name="usb" size={20} /> Connect {devName}?
        </h2>
        <p id="prompt-desc">
          <strong>{vmName}</strong> wants the USB device <strong>{devName}</strong>
          {dev && dev.classes.length > 0 && <> ({dev.classes.join(', ')})</>}.
        </p>
        <div className="modal-actions">
          <button
            type="button"
            className="ghost"
            onClick={() => void actions.answerPrompt(prompt.id, 'deny')}
          >
            Deny
          </button>
          <button
            ref={ref}
            type="button"
            className="primary"
            onClick={() => void actions.answerPrompt(prompt.id, 'allow')}
          >
            Allow for {vmName}
          </button>
        </div>
      </div>
    </div>
  );
}

/** Progress of the running switch, then its outcome. */
export function SwitchProgressCard() {
  const actions = useActions();
  const p = useUi((s) => s.progress);
  const vms = useUi((s) => s.snapshot.vms);
  useEffect(() => {
    if (p?.status !== 'done') return;
    const t = setTimeout(() => actions.dismissProgress(), 900);
    return () => clearTimeout(t);
  }, [actions, p?.status]);
  if (!p) return null;
  const vm = vms.find((v) => v.path === p.target);
  const name = p.target === '/' ? 'the switcher' : (vm?.name ?? p.target.split('/').pop());
  const steps = p.steps.filter((s) => s.step !== 'done' && s.step !== 'failed');
  const current = steps[steps.length - 1];
  return (
    <div
      className={`progress-card status-${p.status}`}
      role={p.status === 'failed' ? 'alert' : 'status'}
      aria-live="polite"
      style={vm ? ({ '--vm-color': vm.color } as React.CSSProperties) : undefined}
    >
      <div className="progress-head">
        {p.status === 'running' && <span className="spinner" aria-hidden="true" />}
        {p.status === 'done' && <Icon name="check" size={20} />}
        {p.status === 'failed' && <Icon name="warn" size={20} />}
        <strong>
          {p.status === 'failed'
            ? `Could not switch to ${name}`
            : p.status === 'done'
              ? `Switched to ${name}`
              : `Switching to ${name}…`}
        </strong>
      </div>
      {p.status === 'running' && current && (
        <div className="progress-step">{current.detail || stepLabel(current.step)}</div>
      )}
      {steps.length > 0 && p.status !== 'failed' && (
        <ol className="progress-steps" aria-label="Steps">
          {steps.map((s, i) => (
            <li key={i} className={i === steps.length - 1 && p.status === 'running' ? 'current' : 'done'}>
              {stepLabel(s.step)}
            </li>
          ))}
        </ol>
      )}
      {p.status === 'failed' && p.error && (
        <div className="progress-error">
          <div className="error-title">{p.error.title}</div>
          {p.error.message && <div>{p.error.message}</div>}
          {p.error.detail && <div className="error-detail">{p.error.detail}</div>}
          <button type="button" className="ghost small" onClick={() => actions.dismissProgress()} autoFocus>
            Dismiss
          </button>
        </div>
      )}
    </div>
  );
}

export function NoticeToast() {
  const actions = useActions();
  const n = useUi((s) => s.notice);
  useEffect(() => {
    if (!n) return;
    const t = setTimeout(() => actions.dismissNotice(), 8000);
    return () => clearTimeout(t);
  }, [actions, n?.id]);
  if (!n) return null;
  return (
    <div className={`toast toast-${n.kind}`} role="alert">
      <Icon name={n.kind === 'error' ? 'warn' : 'check'} size={18} />
      <div>
        <div className="error-title">{n.title}</div>
        {n.message && <div>{n.message}</div>}
        {n.detail && <div className="error-detail">{n.detail}</div>}
      </div>
      <button
        type="button"
        className="icon-button"
        aria-label="Dismiss"
        onClick={() => actions.dismissNotice()}
      >
        <Icon name="x" size={16} />
      </button>
    </div>
  );
}

/** Which services are down right now: never show their old state as if it were live. */
export function OutageBanner() {
  const daemons = useUi((s) => s.snapshot.daemons);
  const connection = useUi((s) => s.connection);
  if (connection === 'closed')
    return (
      <div className="outage" role="alert">
        <Icon name="warn" size={16} /> Lost the connection to the Control Domain — reconnecting…
      </div>
    );
  if (connection !== 'open') return null;
  const down = DAEMON_NAMES.filter((d) => !daemons[d].up);
  if (down.length === 0) return null;
  return (
    <div className="outage" role="alert" data-testid="outage">
      <Icon name="warn" size={16} /> {down.map((d) => DAEMON_LABELS[d]).join(', ')}{' '}
      {down.length > 1 ? 'are' : 'is'} not running — reconnecting automatically.
    </div>
  );
}
