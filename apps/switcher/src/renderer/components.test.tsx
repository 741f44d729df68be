/**
 * Component tests without a DOM: render to HTML with react-dom/server and check what a person
 * (or a screen reader) gets: accessible names, roles, structure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderToString } from 'react-dom/server';
import { USB_DEVICE1_VIEW_DEFAULTS, VM1_VIEW_DEFAULTS } from '@bulkhead/contract';
import { emptySnapshot, type SwitcherSnapshot, type VmModel } from '../common/model';
import { createActions, type Actions } from './actions';
import { App } from './components/App';
import { ActionsContext, StoreContext } from './components/context';
import { LockCard, unlockProblem } from './components/Overlays';
import { tileLabel } from './components/TileGrid';
import { createUiStore, isLocked, type UiState } from './store';
import type { Transport } from './transport';

const noop = async () => undefined;
const actions: Actions = {
  switchTo: noop,
  startVm: noop,
  stopVm: noop,
  assignUsb: noop,
  releaseUsb: noop,
  setSticky: noop,
  setFollowFocus: noop,
  answerPrompt: noop,
  lock: noop,
  suspend: noop,
  unlock: async () => null,
  injectInput: () => undefined,
  setThumbnailsVisible: () => undefined,
  vncUrl: async () => '',
  createVm: async () => null,
  updateVm: async () => null,
  deleteVm: async () => null,
  cancelDiskJob: noop,
  ejectVm: async () => null,
  showEditor: () => undefined,
  showPanel: () => undefined,
  dismissProgress: () => undefined,
  dismissNotice: () => undefined,
  expireHotkeyView: () => undefined,
  reportView: () => undefined,
};

function vm(id: string, over: Partial<VmModel> = {}): VmModel {
  return {
    ...VM1_VIEW_DEFAULTS,
    path: `/org/bulkhead/VmManager1/vm/${id}`,
    id,
    name: id[0].toUpperCase() + id.slice(1),
    slot: 1,
    kind: 'personal',
    color: '#2a6fdb',
    icon: '',
    state: 'running',
    stateReason: '',
    lastError: '',
    hasGpu: false,
    autostart: false,
    memoryMiB: 64,
    vcpus: 1,
    backend: 'qemu',
    configFile: '',
    ...over,
  };
}

function snap(over: Partial<SwitcherSnapshot> = {}): SwitcherSnapshot {
  const s = emptySnapshot(1);
  for (const d of ['vmManager', 'input', 'usb'] as const) s.daemons[d] = { up: true, since: 1, detail: '' };
  return {
    ...s,
    vms: [
      vm('personal'),
      vm('business', { slot: 2, kind: 'business', color: '#d9822b', state: 'stopped', hasGpu: true }),
    ],
    input: {
      focusedTarget: '/',
      locked: false,
      frozen: false,
      seat: 'virtual',
      hotkeys: [],
      lastHotkeyError: '',
    },
    ...over,
  };
}

function render(state: Partial<UiState>): string {
  const store = createUiStore({ connection: 'open', ...state });
  return renderToString(
    <StoreContext.Provider value={store}>
      <ActionsContext.Provider value={actions}>
        <App />
      </ActionsContext.Provider>
    </StoreContext.Provider>,
  );
}

const decode = (html: string) =>
  html
    .replace(/<!-- -->/g, '')
    .replace(/&amp;/g, '&')
    .replace(/&#x27;/g, "'")
    .replace(/&quot;/g, '"');

test('every VM is a button named by its name, slot hotkey and state; the active one is marked', () => {
  const html = decode(render({ snapshot: snap({ activeVm: '/' }) }));
  assert.match(
    html,
    /<button[^>]*class="tile state-running"[^>]*aria-label="Personal, slot 1 \(Ctrl\+1\), Running"/,
  );
  assert.match(html, /aria-label="Business, slot 2 \(Ctrl\+2\), Stopped, graphics card"/);
  assert.match(html, /<kbd class="tile-hotkey">Ctrl\+2<\/kbd>/);
  // The GPU VM is active: it is on its own display, so the tiles stay, Business marked active.
  const active = decode(render({ snapshot: snap({ activeVm: '/org/bulkhead/VmManager1/vm/business' }) }));
  assert.match(
    active,
    /aria-label="Business, slot 2 \(Ctrl\+2\), Stopped, active, graphics card"[^>]*aria-current="true"/,
  );
});

test('the tile of the VM holding the GPU says it owns the screen; no other tile does', () => {
  const none = decode(render({ snapshot: snap({ gpuHolder: '/' }) }));
  assert.doesNotMatch(none, /owns the screen|Owns the screen/);
  const held = decode(render({ snapshot: snap({ gpuHolder: '/org/bulkhead/VmManager1/vm/business' }) }));
  assert.match(held, /aria-label="Business, slot 2 \(Ctrl\+2\), Stopped, graphics card, owns the screen"/);
  assert.equal(held.match(/class="badge badge-screen"[^>]*>Owns the screen</g)?.length, 1);
});

test('tile labels count attached USB devices', () => {
  assert.equal(tileLabel(vm('personal'), false, 2), 'Personal, slot 1 (Ctrl+1), Running, 2 USB devices');
});

test('an invalid VM file is shown with its file, field and reason', () => {
  const html = decode(
    render({
      snapshot: snap({
        configErrors: [
          { file: '/etc/bulkhead/vms/broken.json', field: 'memory_mib', reason: 'must be a number' },
        ],
      }),
    }),
  );
  assert.match(html, /role="group" aria-label="Invalid VM file broken.json"/);
  assert.match(html, /Field <code>memory_mib<\/code>: must be a number/);
});

test('a daemon that is down is announced, and no machines are shown from memory', () => {
  const s = snap({ vms: [] });
  s.daemons.vmManager = { up: false, since: 1, detail: 'not running' };
  const html = decode(render({ snapshot: s }));
  assert.match(html, /role="alert"[^>]*>.*VM manager.*is not\s*(<!-- -->)?\s*running/s);
  assert.match(html, /The VM manager is not running/);
  assert.doesNotMatch(html, /class="tile state-/);
});

test('the active VM without GPU is shown full screen with a way back', () => {
  const html = decode(render({ snapshot: snap({ activeVm: '/org/bulkhead/VmManager1/vm/personal' }) }));
  assert.match(html, /<section class="vm-view"[^>]*aria-label="Personal display"/);
  assert.match(html, /aria-label="Back to machines \(Ctrl\+0\)"/);
  // The tiles stay mounted under it (Ctrl+0 only changes which layer is drawn), covered: hidden
  // from assistive technology and inert, so nothing reaches them.
  const home = /<div class="home home-covered"[^>]*>/.exec(html)?.[0] ?? '';
  assert.match(home, /inert=""/);
  assert.match(home, /aria-hidden="true"/);
  assert.match(html, /<div class="home home-covered"[^>]*>.*class="tile /s);
});

test('a running VM keeps its (hidden) display while the tiles or another VM are shown, so a switch shows it at once', () => {
  const vms = [vm('personal'), vm('business', { slot: 2, kind: 'business', color: '#d9822b' })];
  const tiles = decode(render({ snapshot: snap({ vms }) }));
  assert.match(tiles, /class="tile /, 'the tiles are shown');
  for (const name of ['Personal', 'Business'])
    assert.match(
      tiles,
      new RegExp(
        `<section class="vm-view vm-view-hidden"[^>]*aria-label="${name} display"[^>]*aria-hidden="true"`,
      ),
    );
  const inBusiness = decode(
    render({ snapshot: snap({ vms, activeVm: '/org/bulkhead/VmManager1/vm/business' }) }),
  );
  assert.match(inBusiness, /<section class="vm-view"[^>]*aria-label="Business display"/);
  assert.match(inBusiness, /<section class="vm-view vm-view-hidden"[^>]*aria-label="Personal display"/);
  // The order of the views does not depend on which one is shown (React keeps each one mounted).
  const order = (html: string) => [...html.matchAll(/aria-label="(\w+) display"/g)].map((m) => m[1]);
  assert.deepEqual(order(tiles), order(inBusiness));
});

test('a running VM without a screen (Display none) says so on its tile instead of waiting for one', () => {
  const vms = [
    vm('personal'),
    vm('business', { slot: 2, kind: 'business', color: '#c0392b', display: 'none' }),
  ];
  const html = decode(render({ snapshot: snap({ vms }) }));
  const tile = (id: string) =>
    new RegExp(`<button[^>]*data-vm="${id}".*?</button>`, 's').exec(html)?.[0] ?? '';
  assert.match(tile('business'), /<span class="tile-placeholder-text">No screen — console only<\/span>/);
  assert.doesNotMatch(tile('business'), /Waiting for the screen/);
  assert.match(
    tile('business'),
    /aria-label="Business, slot 2 \(Ctrl\+2\), Running, no screen, console only"/,
  );
  // A VM with a screen whose first thumbnail has not come yet still waits for it.
  assert.match(tile('personal'), /<span class="tile-placeholder-text">Waiting for the screen…<\/span>/);
  // Stopped, it is started like any other.
  const stopped = decode(
    render({ snapshot: snap({ vms: [vm('business', { slot: 2, display: 'none', state: 'stopped' })] }) }),
  );
  assert.match(stopped, /<span class="tile-placeholder-text">Select to start<\/span>/);
});

test("a running GPU VM's tile says where its picture is instead of a thumbnail, and when it is on the screen", () => {
  const gamer = vm('gamer', { slot: 3, hasGpu: true });
  const tileOf = (html: string) => /<button[^>]*data-vm="gamer".*?<\/button>/s.exec(html)?.[0] ?? '';
  const away = tileOf(
    decode(
      render({ snapshot: snap({ vms: [gamer], gpuHolder: '/' }), thumbnails: { [gamer.path]: 'iVBORw0K' } }),
    ),
  );
  assert.doesNotMatch(away, /tile-thumb/, 'no thumbnail even if one came: it would not be its picture');
  assert.match(away, /<span class="tile-placeholder-text">Its picture is on its graphics card<\/span>/);
  const holding = tileOf(decode(render({ snapshot: snap({ vms: [gamer], gpuHolder: gamer.path }) })));
  assert.match(holding, /<span class="tile-placeholder-text">On the screen now<\/span>/);
  assert.match(holding, /Owns the screen/);
});

test('the view of a VM without a screen shows a card saying so and the way back, not a wait for its picture', () => {
  const vms = [
    vm('personal'),
    vm('business', { slot: 2, kind: 'business', color: '#c0392b', display: 'none' }),
  ];
  const html = decode(render({ snapshot: snap({ vms, activeVm: '/org/bulkhead/VmManager1/vm/business' }) }));
  const view =
    /<section class="vm-view"[^>]*aria-label="Business display".*?<\/section>/s.exec(html)?.[0] ?? '';
  assert.ok(view, 'business is shown full screen');
  assert.match(view, /<div class="vm-no-screen" role="note" aria-labelledby="no-screen-business">/);
  assert.match(view, /<h2 id="no-screen-business">Business has no screen<\/h2>/);
  assert.match(view, /console only/);
  assert.match(
    view,
    /Press <kbd>Ctrl\+0<\/kbd> or choose <strong>Machines<\/strong> above to go back to the tiles/,
  );
  assert.match(view, /<span class="vm-bar-status" role="status">No screen — console only<\/span>/);
  assert.doesNotMatch(view, /Waiting for Business’s screen|Connecting to the display|showing screenshots/);
  assert.match(view, /aria-label="Back to machines \(Ctrl\+0\)"/);
  // A VM with a screen keeps waiting for its picture (its hidden view here).
  const personal =
    /<section class="vm-view vm-view-hidden"[^>]*aria-label="Personal display".*?<\/section>/s.exec(
      html,
    )?.[0] ?? '';
  assert.match(personal, /Waiting for Personal’s screen…/);
  assert.doesNotMatch(personal, /vm-no-screen/);
});

test('the lock screen is a modal dialog asking for the password: a focused password field and Unlock', () => {
  const html = decode(render({ snapshot: snap(), secureAttention: true }));
  assert.match(html, /role="dialog" aria-modal="true" aria-labelledby="lock-title"/);
  assert.match(html, /<label for="lock-password">Password<\/label>/);
  const field = /<input[^>]*id="lock-password"[^>]*>/.exec(html)?.[0] ?? '';
  assert.match(field, /type="password"/);
  assert.match(field, /autofocus=""/i);
  assert.match(html, /<button type="submit"[^>]*>Unlock<\/button>/);
  assert.doesNotMatch(html, /Authentication is not part of this build/);
  assert.match(html, /<main class="content" inert=""/);
});

test('a failed unlock is said in words, with the wait input-daemon asked for counting down', () => {
  const t0 = 1_000_000;
  const wrong = unlockProblem(
    { name: 'AuthenticationFailed', message: 'Unlock: wrong password; the next attempt is allowed in 4 s' },
    t0,
    false,
  );
  const later = unlockProblem(
    { name: 'TryAgainLater', message: 'Unlock: 3 failed attempt(s); try again in 8 s' },
    t0,
    false,
  );
  assert.deepEqual(wrong, { text: 'Wrong password.', retryAt: t0 + 4000 });
  assert.deepEqual(later, { text: 'Too many wrong passwords.', retryAt: t0 + 8000 });
  assert.deepEqual(
    unlockProblem(
      {
        name: 'TryAgainLater',
        message: 'Unlock: the seat was locked again while the password was checked; enter it again',
      },
      t0,
      false,
    ),
    { text: 'The seat was locked again while your password was checked. Enter it again.', retryAt: t0 },
  );
  assert.equal(
    unlockProblem({ name: 'InvalidArgument', message: "option 'password' is required" }, t0, true).text,
    'Type your password, then Unlock.',
  );
  const card = (now: number) =>
    decode(
      renderToString(
        <LockCard
          inputUp
          problem={later}
          now={now}
          busy={false}
          field={{ current: null }}
          onSubmit={() => undefined}
        />,
      ),
    );
  assert.match(card(t0), /role="alert"[^>]*>Too many wrong passwords\. Try again in 8 s\.</);
  assert.match(card(t0 + 3_500), /Try again in 5 s\./, 'counts down');
  assert.match(card(t0), /<button type="submit"[^>]*disabled=""[^>]*>Unlock</, 'no attempt while waiting');
  const busy = decode(
    renderToString(
      <LockCard inputUp problem={null} now={t0} busy field={{ current: null }} onSubmit={() => undefined} />,
    ),
  );
  const busyField = /<input[^>]*id="lock-password"[^>]*>/.exec(busy)?.[0] ?? '';
  assert.match(busyField, /readOnly=""/i, 'read-only while input-daemon decides');
  assert.doesNotMatch(
    busyField,
    /disabled/,
    'never disabled: it would lose the focus the next attempt is typed into',
  );
  const after = card(t0 + 8_000);
  assert.doesNotMatch(after, /Try again/);
  assert.doesNotMatch(after, /<button type="submit"[^>]*disabled/);
});

test('unlock sends the password once and keeps it nowhere in the UI store', async () => {
  const secret = 'correct horse battery staple';
  const sent: unknown[] = [];
  const store = createUiStore({ connection: 'open', snapshot: snap(), secureAttention: true });
  const fakeTransport = {
    request: async (channel: string, args: unknown) => {
      sent.push([channel, args]);
      return {
        ok: false,
        error: {
          name: 'AuthenticationFailed',
          message: 'Unlock: wrong password; the next attempt is allowed in 1 s',
        },
      };
    },
    onConnection: () => undefined,
  } as unknown as Transport;
  const real = createActions(store, fakeTransport);
  const failure = await real.unlock(secret);
  assert.deepEqual(sent, [['unlock', { password: secret }]]);
  assert.equal(failure?.name, 'AuthenticationFailed');
  assert.equal(
    JSON.stringify(store.getState()).includes(secret),
    false,
    'the store never holds the password',
  );
  assert.equal(isLocked(store.getState()), true, 'still locked');
});

test('an "ask" USB prompt is an alert dialog with Allow and Deny', () => {
  const s = snap({
    usbDevices: [
      {
        ...USB_DEVICE1_VIEW_DEFAULTS,
        path: '/org/bulkhead/Usb1/device/cam',
        name: 'Webcam',
        vendor: '',
        product: '',
        vendorId: 1,
        productId: 2,
        serial: '',
        classes: ['video'],
        port: '1-2',
        assignedVm: '/',
        sticky: false,
        followFocus: false,
        state: 'available',
      },
    ],
  });
  const html = decode(
    render({
      snapshot: s,
      prompts: [
        { id: 1, device: '/org/bulkhead/Usb1/device/cam', vm: '/org/bulkhead/VmManager1/vm/personal' },
      ],
    }),
  );
  assert.match(html, /role="alertdialog"/);
  assert.match(html, /Connect Webcam\?/);
  assert.match(html, />Deny<\/button>/);
  assert.match(html, />Allow for (<!-- -->)?Personal<\/button>/);
});

test('the USB panel lists every device with its holder and switch-role toggles', () => {
  const s = snap({
    usbDevices: [
      {
        ...USB_DEVICE1_VIEW_DEFAULTS,
        path: '/org/bulkhead/Usb1/device/stick',
        name: 'Stick',
        vendor: '',
        product: '',
        vendorId: 0x781,
        productId: 0x5581,
        serial: 'S1',
        classes: ['storage'],
        port: '1-2',
        assignedVm: '/org/bulkhead/VmManager1/vm/personal',
        sticky: true,
        followFocus: false,
        state: 'attached',
      },
    ],
  });
  const html = decode(render({ snapshot: s, panel: 'usb' }));
  assert.match(html, /aria-label="Stick, held by Personal"/);
  assert.match(html, /role="switch" aria-checked="true"[^>]*aria-label="Always give Stick to Personal"/);
  assert.match(html, /role="switch" aria-checked="false"[^>]*aria-label="Stick follows the active machine"/);
  assert.match(html, /0781:5581/);
});

test('diagnostics show the last switch steps and every service', () => {
  const html = decode(
    render({
      panel: 'diagnostics',
      snapshot: snap({
        lastSwitch: {
          from: '/',
          target: '/org/bulkhead/VmManager1/vm/personal',
          outcome: 'ok',
          error: '',
          startedMs: 1,
          durationMs: 42,
          steps: [
            ['freeze-input', 2],
            ['focus-input', 30],
          ],
        },
      }),
    }),
  );
  assert.match(html, /Holding keyboard and mouse/);
  assert.match(html, /Moving keyboard and mouse/);
  assert.match(html, /30 ms/);
  for (const name of ['VM manager', 'Input service', 'USB service']) assert.match(html, new RegExp(name));
});

test('a failed switch shows the error title, advice and the daemon words', () => {
  const html = decode(
    render({
      snapshot: snap(),
      progress: {
        target: '/org/bulkhead/VmManager1/vm/business',
        steps: [],
        status: 'failed',
        startedAt: 1,
        error: { title: 'It took too long', message: 'Try again', detail: 'Timeout: qemu' },
      },
    }),
  );
  assert.match(html, /role="alert"/);
  assert.match(html, /Could not switch to (<!-- -->)?Business/);
  assert.match(html, /It took too long/);
  assert.match(html, /Timeout: qemu/);
});
