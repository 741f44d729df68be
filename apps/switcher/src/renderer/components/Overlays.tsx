import { useEffect, useRef, useState } from 'react';
import { DAEMON_LABELS, DAEMON_NAMES } from '../../common/model';
import { stepLabel } from '../../common/messages';
import { isLocked } from '../store';
import { useActions, useUi } from './context';
import { Icon } from './icons';
import { Modal } from './Modal';

/** Why the last unlock attempt failed, in words, and when the next one is accepted (ms epoch). */
export interface UnlockProblem {
  text: string;
  retryAt: number;
}

/**
 * Words for a failed Unlock. input-daemon says when it accepts the next attempt ("... in N s") on
 * AuthenticationFailed and TryAgainLater alike; `retryAt` is then, else `now`.
 */
export function unlockProblem(
  failure: { name: string; message: string },
  now: number,
  typedNothing: boolean,
): UnlockProblem {
  const wait = /\bin (\d+) s\b/.exec(failure.message);
  const retryAt = wait ? now + Number(wait[1]) * 1000 : now;
  switch (failure.name) {
    case 'AuthenticationFailed':
      return { text: 'Wrong password.', retryAt };
    case 'TryAgainLater':
      // A lock (a sleep, the chord) that came while the password was checked: not a wrong one.
      if (/locked again/.test(failure.message))
        return {
          text: 'The seat was locked again while your password was checked. Enter it again.',
          retryAt: now,
        };
      return { text: 'Too many wrong passwords.', retryAt };
    case 'InvalidArgument':
      return {
        text: typedNothing ? 'Type your password, then Unlock.' : `Password not accepted: ${failure.message}`,
        retryAt: now,
      };
    case 'NotSupported':
      return {
        text: 'This Control Domain has no way to check a password, so it cannot unlock.',
        retryAt: now,
      };
    default:
      return { text: `Could not unlock: ${failure.message}`, retryAt: now };
  }
}

/** Whole seconds until `at`, rounded up (0 when past). */
const secondsUntil = (at: number, now: number) => Math.max(0, Math.ceil((at - now) / 1000));

/** The lock card itself, without state: what the screen shows for a given problem and time. */
export function LockCard(props: {
  inputUp: boolean;
  problem: UnlockProblem | null;
  now: number;
  busy: boolean;
  /** How many attempts input-daemon has answered: tells a new answer from an old identical one. */
  answers?: number;
  field: React.RefObject<HTMLInputElement | null>;
  onSubmit: (e: React.FormEvent) => void;
}) {
  const { inputUp, problem, now, busy, answers = 0, field, onSubmit } = props;
  const wait = problem ? secondsUntil(problem.retryAt, now) : 0;
  return (
    <div className="lock-card">
      <span className="lock-icon">
        <Icon name="lock" size={40} />
      </span>
      <h1 id="lock-title">Locked</h1>
      <p>Keyboard and mouse reach no machine until you unlock.</p>
      <form className="lock-form" onSubmit={onSubmit}>
        <label htmlFor="lock-password">Password</label>
        {/* Uncontrolled: the typed text lives in the field only, never in React state or the store. */}
        <input
          ref={field}
          id="lock-password"
          type="password"
          name="password"
          autoComplete="current-password"
          autoFocus
          // Read-only, not disabled, while input-daemon decides: a disabled field loses the focus,
          // and the next attempt typed at the keyboard would go nowhere.
          readOnly={busy}
        />
        <button type="submit" className="primary big" disabled={busy || wait > 0}>
          Unlock
        </button>
      </form>
      <p className="lock-problem" role="alert" aria-live="assertive" data-answers={answers}>
        {problem ? problem.text : ''}
        {wait > 0 ? ` Try again in ${wait} s.` : ''}
      </p>
      {!inputUp && <p className="fine">The input service is not running.</p>}
    </div>
  );
}

/**
 * Lock screen: shown on SecureAttention or Input1.Locked; nothing can be switched until input-daemon
 * accepts the password (it checks it with PAM; the switcher only carries it, once per attempt).
 */
export function LockScreen() {
  const actions = useActions();
  const locked = useUi(isLocked);
  const inputUp = useUi((s) => s.snapshot.daemons.input.up);
  const field = useRef<HTMLInputElement>(null);
  const [problem, setProblem] = useState<UnlockProblem | null>(null);
  const [busy, setBusy] = useState(false);
  const [answers, setAnswers] = useState(0);
  const [now, setNow] = useState(() => Date.now());
  const dialog = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (locked) field.current?.focus();
    else setProblem(null);
  }, [locked]);
  // A modal lock: the focus never leaves it while locked. Anything else that takes the focus (a
  // card that autofocuses its button, e.g. a refused switch's "Dismiss") hands it back to the
  // password field, or what the person types next would land there instead (seen in the image).
  useEffect(() => {
    if (!locked) return;
    const keep = (e: FocusEvent) => {
      if (e.target instanceof Node && dialog.current && !dialog.current.contains(e.target))
        field.current?.focus();
    };
    document.addEventListener('focusin', keep);
    return () => document.removeEventListener('focusin', keep);
  }, [locked]);
  // Counts the wait down once a second while there is one.
  const waiting = problem !== null && problem.retryAt > now;
  useEffect(() => {
    if (!waiting) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [waiting]);
  if (!locked) return null;
  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    const input = field.current;
    if (!input || busy) return;
    const password = input.value;
    // Cleared at once: each attempt sends what was typed exactly once, and nothing stays on screen.
    input.value = '';
    setBusy(true);
    void actions.unlock(password).then((failure) => {
      const at = Date.now();
      setBusy(false);
      setNow(at);
      setProblem(failure ? unlockProblem(failure, at, password === '') : null);
      setAnswers((n) => n + 1);
      field.current?.focus();
    });
  };
  return (
    <div ref={dialog} className="lock-screen" role="dialog" aria-modal="true" aria-labelledby="lock-title">
      <LockCard
        inputUp={inputUp}
        problem={problem}
        now={now}
        busy={busy}
        answers={answers}
        field={field}
        onSubmit={submit}
      />
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
    <Modal role="alertdialog" titleId="prompt-title" describedBy="prompt-desc">
      <h2 id="prompt-title">
        <Icon name="usb" size={20} /> Connect {devName}?
      </h2>
      <p id="prompt-desc">
        <strong>{vmName}</strong> wants the USB device <strong>{devName}</strong>
        {dev && dev.classes.length > 0 && <> ({dev.classes.join(', ')})</>}.
      </p>
      <div className="modal-actions">
        <button type="button" className="ghost" onClick={() => void actions.answerPrompt(prompt.id, 'deny')}>
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
    </Modal>
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
  const nameOf = (target: string) =>
    target === '/' ? 'the switcher' : (vms.find((v) => v.path === target)?.name ?? target.split('/').pop());
  const name = nameOf(p.target);
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
      {p.status === 'running' && p.pendingTarget !== undefined && (
        <div className="progress-step">Then to {nameOf(p.pendingTarget)}</div>
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
