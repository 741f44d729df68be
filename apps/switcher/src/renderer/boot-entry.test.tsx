/**
 * What the switcher shows differently on the Xen boot entry (issue 18), rendered without a DOM
 * (react-dom/server): a person's machine made on the other boot entry (Vm1.Unavailable) is a tile
 * that says so and offers no start, and its settings offer only Delete; with Accelerator xen the
 * dialogs offer no shared Internet (vm-daemon refuses 'user' networking there by name).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderToString } from 'react-dom/server';
import { VM1_VIEW_DEFAULTS } from '@bulkhead/contract';
import { emptySnapshot, type SwitcherSnapshot, type VmModel } from '../common/model';
import type { Actions } from './actions';
import { App } from './components/App';
import { ActionsContext, StoreContext } from './components/context';
import { tileLabel } from './components/TileGrid';
import { createUiStore, type EditorView } from './store';

const noop = async () => undefined;
/** Actions that do nothing: these tests only read what is rendered. */
const fakeActions = new Proxy({} as Actions, {
  get: () => noop,
});

const REASON =
  "made on the Bulkhead (KVM) boot entry (backend 'qemu'): it runs only there, not on Bulkhead (Xen). It is kept unchanged; restart into Bulkhead (KVM) to use it";

function vm(id: string, over: Partial<VmModel> = {}): VmModel {
  return {
    ...VM1_VIEW_DEFAULTS,
    path: `/org/bulkhead/VmManager1/vm/${id}`,
    id,
    name: id[0].toUpperCase() + id.slice(1),
    slot: 1,
    kind: 'personal',
    color: '#2a6fdb',
    state: 'stopped',
    memoryMiB: 512,
    vcpus: 1,
    owner: 'person',
    network: 'none',
    backend: 'xen',
    ...over,
  };
}

function snap(accelerator: string, vms: VmModel[]): SwitcherSnapshot {
  const s = emptySnapshot(1);
  for (const d of ['vmManager', 'input', 'usb'] as const) s.daemons[d] = { up: true, since: 1, detail: '' };
  return { ...s, accelerator, vms };
}

function render(snapshot: SwitcherSnapshot, editor: EditorView | null = null): string {
  const store = createUiStore({ connection: 'open', snapshot, editor });
  return renderToString(
    <StoreContext.Provider value={store}>
      <ActionsContext.Provider value={fakeActions}>
        <App />
      </ActionsContext.Provider>
    </StoreContext.Provider>,
  )
    .replace(/<!-- -->/g, '')
    .replace(/&amp;/g, '&')
    .replace(/&#x27;/g, "'")
    .replace(/&quot;/g, '"');
}

const vms = [
  vm('lab', { slot: 3 }),
  vm('old', { slot: 4, backend: 'qemu', network: 'user', unavailable: REASON }),
];

test("a person's machine of the other boot entry: its tile says so with the reason, is disabled and offers no start", () => {
  const html = render(snap('xen', vms));
  const old = /<li class="tile-cell">(?:(?!<li ).)*data-vm="old"(?:(?!<li ).)*/s.exec(html)?.[0] ?? '';
  assert.ok(old, html);
  assert.match(old, /class="tile state-stopped unavailable"/);
  assert.match(old, /aria-disabled="true"/);
  assert.match(old, /Not on this boot entry/);
  assert.ok(old.includes(REASON), 'the reason is on the tile');
  assert.doesNotMatch(old, /Start Old in the background/);
  assert.match(old, /aria-label="Settings of Old"/);
  // The machine of this entry next to it is a normal tile.
  const lab = /<li class="tile-cell">(?:(?!<li ).)*data-vm="lab"(?:(?!<li ).)*/s.exec(html)?.[0] ?? '';
  assert.match(lab, /aria-label="Start Lab in the background"/);
  assert.doesNotMatch(lab, /Not on this boot entry|aria-disabled/);
  assert.equal(tileLabel(vms[1], false, 0), 'Old, slot 4 (Ctrl+4), not on this boot entry');
});

test('its settings say why, change nothing and still offer Delete', () => {
  const html = render(snap('xen', vms), { kind: 'settings', vm: vms[1].path });
  assert.ok(html.includes(`Old cannot run or be changed on this boot entry: ${REASON}.`), html);
  assert.match(html, /<fieldset disabled="">/);
  assert.match(html, />Delete…</);
  assert.doesNotMatch(html, />Save</);
});

test('on the Xen entry the dialogs offer no shared Internet and New machine starts with none; on KVM they do', () => {
  const xen = render(snap('xen', vms), { kind: 'new' });
  assert.doesNotMatch(xen, /Internet \(shared\)/);
  assert.match(
    xen,
    /<option value="none" selected="">None \(no shared Internet on the Xen boot entry\)<\/option>/,
  );
  const kvm = render(snap('kvm', [vm('lab', { backend: 'qemu' })]), { kind: 'new' });
  assert.match(kvm, /<option value="user" selected="">Internet \(shared\)<\/option>/);
  assert.match(kvm, /<option value="none">None<\/option>/);
});
