/**
 * Issue 19 item 3 in the renderer: the battery in the top bar, the low-battery warning, the
 * "Suspending…" card with its step, and the report of a suspend that failed or left a VM behind.
 * Rendered to HTML (react-dom/server), checked for what a person or a screen reader gets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ReactElement } from 'react';
import { renderToString } from 'react-dom/server';
import { emptySnapshot, type PowerModel, type SwitcherSnapshot } from '../common/model';
import type { Actions } from './actions';
import { ActionsContext, StoreContext } from './components/context';
import { LowBatteryWarning, SuspendCard, batteryLabel } from './components/Power';
import { TopBar } from './components/TopBar';
import { createUiStore } from './store';

const actions = new Proxy({}, { get: () => async () => undefined }) as unknown as Actions;

function power(over: Partial<PowerModel> = {}): PowerModel {
  return {
    battery: {
      present: true,
      percentage: 57,
      state: 'discharging',
      timeToEmptySec: 5400,
      onBattery: true,
      level: 'normal',
    },
    suspending: false,
    progress: null,
    lastSuspend: null,
    ...over,
  };
}

function render(el: ReactElement, p: PowerModel | null): string {
  const snapshot: SwitcherSnapshot = { ...emptySnapshot(1), power: p };
  const store = createUiStore({ connection: 'open', snapshot });
  return renderToString(
    <StoreContext.Provider value={store}>
      <ActionsContext.Provider value={actions}>{el}</ActionsContext.Provider>
    </StoreContext.Provider>,
  )
    .replace(/<!-- -->/g, '')
    .replace(/&#x27;/g, "'");
}

test('the top bar shows the battery level, named for a screen reader; no battery, no indicator', () => {
  const html = render(<TopBar />, power());
  assert.match(html, /role="img" aria-label="Battery 57%, about 1 h 30 min left"/);
  assert.match(html, />57%</);
  assert.doesNotMatch(
    render(<TopBar />, power({ battery: { ...power().battery, present: false } })),
    /Battery/,
  );
  assert.doesNotMatch(render(<TopBar />, null), /Battery/);
  assert.equal(
    batteryLabel({ ...power().battery, state: 'charging', onBattery: false }),
    'Battery 57%, charging',
  );
});

test('a low or critical battery is an alert; a normal one none', () => {
  assert.equal(render(<LowBatteryWarning />, power()), '');
  const low = render(
    <LowBatteryWarning />,
    power({ battery: { ...power().battery, percentage: 9, level: 'low', timeToEmptySec: 720 } }),
  );
  assert.match(low, /role="alert"/);
  assert.match(low, /Battery low \(9%, about 12 min left\)/);
  const critical = render(
    <LowBatteryWarning />,
    power({ battery: { ...power().battery, percentage: 4, level: 'critical' } }),
  );
  assert.match(critical, /Battery critical \(4%\): the machine will suspend/);
});

test('while suspending the card says so with the step in progress', () => {
  const html = render(
    <SuspendCard />,
    power({ suspending: true, progress: { step: 'pause-vms', detail: 'pausing business' } }),
  );
  assert.match(html, /role="status"/);
  assert.match(html, /Suspending…/);
  assert.match(html, /Pausing the machines — pausing business/);
});

test('after a failed suspend or an incomplete wake the card says what, until dismissed; a good one shows nothing', () => {
  const base = {
    reason: 'request',
    error: '',
    startedMs: 5,
    steps: [] as Array<[string, string, string]>,
    notBack: [] as Array<[string, string]>,
  };
  assert.equal(render(<SuspendCard />, power({ lastSuspend: { ...base, outcome: 'ok' } })), '');
  const failed = render(
    <SuspendCard />,
    power({
      lastSuspend: {
        ...base,
        outcome: 'failed',
        error: 'pause-vms: pausing business failed: QMP stop timed out',
      },
    }),
  );
  assert.match(failed, /role="alert"/);
  assert.match(failed, /Did not suspend/);
  assert.match(failed, /pause-vms: pausing business failed: QMP stop timed out/);
  assert.match(failed, /Your machines were left running/);
  const incomplete = render(
    <SuspendCard />,
    power({ lastSuspend: { ...base, outcome: 'incomplete', notBack: [['business', 'it is crashed']] } }),
  );
  assert.match(incomplete, /not everything came back/);
  assert.match(incomplete, /<li>business: it is crashed<\/li>/);
});

test('the top bar offers Suspend while vm-daemon has a power component and no suspend runs', () => {
  const button = (html: string) =>
    /<button[^>]*aria-label="Suspend: lock, pause the machines and sleep"[^>]*>/.exec(html)?.[0] ?? '';
  const up = (p: PowerModel | null) => {
    const snapshot: SwitcherSnapshot = { ...emptySnapshot(1), power: p };
    snapshot.daemons.input = { up: true, since: 1, detail: '' };
    const store = createUiStore({ connection: 'open', snapshot });
    return renderToString(
      <StoreContext.Provider value={store}>
        <ActionsContext.Provider value={actions}>
          <TopBar />
        </ActionsContext.Provider>
      </StoreContext.Provider>,
    );
  };
  assert.ok(button(up(power())), 'shown');
  assert.doesNotMatch(button(up(power())), /disabled/);
  assert.match(button(up(power({ suspending: true }))), /disabled/);
  assert.match(button(up(null)), /disabled/);
});
