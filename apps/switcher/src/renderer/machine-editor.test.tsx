/**
 * The person's machines in the switcher, without a DOM (react-dom/server) and with a fake
 * transport: the first-boot welcome, the New-machine dialog's fields, settings of an admin VM
 * (read only, said why) and of a person VM (Save, Delete behind a confirmation), the disk import's
 * progress bar, errors in words naming the form field, the requests the dialogs send, and what
 * the channel map lets through to the main process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderToString } from 'react-dom/server';
import type { ReactElement } from 'react';
import { VM1_VIEW_DEFAULTS } from '@bulkhead/contract';
import { ChannelError, validateRequest, type RequestChannel } from '../common/channels';
import { emptySnapshot, type SwitcherSnapshot, type VmModel } from '../common/model';
import { createActions } from './actions';
import { App } from './components/App';
import { ActionsContext, StoreContext } from './components/context';
import { DiskJobBar, MachineSettings, machineProblem } from './components/MachineEditor';
import { createUiStore, type UiState } from './store';
import type { Transport } from './transport';

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
    backend: 'qemu',
    owner: 'person',
    ...over,
  };
}

function snap(vms: VmModel[]): SwitcherSnapshot {
  const s = emptySnapshot(1);
  for (const d of ['vmManager', 'input', 'usb'] as const) s.daemons[d] = { up: true, since: 1, detail: '' };
  return { ...s, vms };
}

/** A transport that records requests and answers them with `answer`. */
function fakeTransport(answer: (channel: string, args: unknown) => unknown) {
  const sent: Array<[string, unknown]> = [];
  const t: Transport = {
    request: (async (channel: RequestChannel, args: unknown) => {
      sent.push([channel, args]);
      return answer(channel, args);
    }) as Transport['request'],
    onPush: () => () => undefined,
    onConnection: () => undefined,
    resolveWs: (u) => u,
  };
  return { t, sent };
}

function render(state: Partial<UiState>, node: ReactElement = <App />): string {
  const store = createUiStore({ connection: 'open', ...state });
  const actions = createActions(store, fakeTransport(() => ({ ok: true, result: null })).t);
  return renderToString(
    <StoreContext.Provider value={store}>
      <ActionsContext.Provider value={actions}>{node}</ActionsContext.Provider>
    </StoreContext.Provider>,
  )
    .replace(/<!-- -->/g, '')
    .replace(/&#x27;/g, "'")
    .replace(/&quot;/g, '"');
}

test('first boot with no machines: a welcome that leads to New machine; with machines, New machine above the tiles and Settings on each', () => {
  const empty = render({ snapshot: snap([]) });
  assert.match(empty, /role="region" aria-labelledby="welcome-title"/);
  assert.match(empty, /<h2 id="welcome-title">Welcome<\/h2>/);
  assert.match(empty, /<button type="button" class="primary">New machine<\/button>/);
  const some = render({ snapshot: snap([vm('lab', { slot: 3 })]) });
  assert.doesNotMatch(some, /welcome-title/);
  assert.match(some, /<button type="button" class="primary">New machine<\/button>/);
  assert.match(some, /aria-label="Settings of Lab"/);
});

test('the New machine dialog: name, colour, the free slots only, memory, processors, disk new/import/none, install medium, network', () => {
  const html = render({
    snapshot: snap([vm('personal', { slot: 1 }), vm('business', { slot: 2, owner: 'admin' })]),
    editor: { kind: 'new' },
  });
  assert.match(html, /role="dialog" aria-modal="true" aria-labelledby="new-machine-title"/);
  for (const field of ['name', 'color', 'slot', 'memory', 'vcpus', 'disk-size', 'cdrom', 'network'])
    assert.match(html, new RegExp(`name="${field}"`), field);
  const slots = [...html.matchAll(/<option value="(\d)"/g)].map((m) => Number(m[1]));
  assert.deepEqual(slots, [3, 4, 5, 6, 7, 8, 9], 'slots 1 and 2 are taken');
  assert.match(html, /name="disk" checked="" value="new"/);
  assert.match(html, /value="import"/);
  assert.match(html, /Create machine<\/button>/);
  // The tiles behind the dialog are inert (digits type into the form, they do not switch).
  assert.match(html, /<main class="content" inert=""/);
});

test("settings of the administrator's machine are read-only and say why; a running machine of the person's asks to be shut down", () => {
  const admin = render({}, <MachineSettings vm={vm('business', { owner: 'admin', slot: 2 })} />);
  assert.match(admin, /managed by your administrator/);
  assert.match(admin, /<fieldset disabled="">/);
  assert.doesNotMatch(admin, />Save</);
  assert.doesNotMatch(admin, /Delete…/);
  const running = render({}, <MachineSettings vm={vm('lab', { state: 'running' })} />);
  assert.match(running, /Shut Lab down to change or delete it/);
  assert.doesNotMatch(running, /Eject/, 'no medium, nothing to eject');
  const installing = render(
    {},
    <MachineSettings vm={vm('lab', { state: 'running', cdrom: '/media/bulkhead/stick/guest.iso' })} />,
  );
  assert.match(
    installing,
    /<button type="button" class="ghost small">Eject guest\.iso<\/button>/,
    'eject works while it runs',
  );
  assert.doesNotMatch(running, />Save</);
  const stopped = render(
    {},
    <MachineSettings vm={vm('lab', { cdrom: '/media/bulkhead/stick/guest.iso' })} />,
  );
  assert.match(stopped, />Save</);
  assert.match(stopped, /Delete…/);
  assert.match(stopped, /Eject guest\.iso/);
  assert.doesNotMatch(stopped, /<fieldset disabled/);
});

test("Settings show the machine's network (Vm1.Network): none or user to pick; an administrator's bridge shown, not offered", () => {
  const lab = render({}, <MachineSettings vm={vm('lab', { network: 'user' })} />);
  const select = /<select name="network">([\s\S]*?)<\/select>/.exec(lab);
  assert.ok(select, 'a network field');
  assert.match(select[1], /<option value="user" selected="">Internet \(shared\)<\/option>/);
  assert.match(select[1], /<option value="none">None<\/option>/);
  assert.doesNotMatch(select[1], /bridge/);
  const bridged = render(
    {},
    <MachineSettings vm={vm('business', { owner: 'admin', slot: 2, network: 'bridge:br0' })} />,
  );
  assert.match(
    bridged,
    /<option value="bridge:br0" selected="">Bridge br0 \(set by the administrator\)<\/option>/,
  );
  assert.match(bridged, /<fieldset disabled="">/);
});

test('a disk import shows a progress bar with its percentage and Cancel', () => {
  const html = render({}, <DiskJobBar vm={vm('lab', { diskJob: 'import', diskJobProgress: 42 })} />);
  assert.match(html, /role="progressbar" aria-label="Importing the disk of Lab"[^>]*aria-valuenow="42"/);
  assert.match(html, /Importing disk… 42%/);
  assert.match(html, /Cancel import<\/button>/);
  assert.equal(render({}, <DiskJobBar vm={vm('lab')} />), '');
});

test("errors in words: the daemon's option becomes the form field's label; NotOwner and ServiceDown as sentences", () => {
  assert.equal(
    machineProblem({
      name: 'InvalidArgument',
      message: 'memory_mib: must be an integer from 16 to 1048576, got 8',
    }),
    'Memory: must be an integer from 16 to 1048576, got 8',
  );
  assert.equal(
    machineProblem({
      name: 'InvalidArgument',
      message: 'cdrom: resolves to /etc/shadow, outside /media/bulkhead',
    }),
    'Install from: resolves to /etc/shadow, outside /media/bulkhead',
  );
  assert.equal(
    machineProblem({
      name: 'InvalidArgument',
      message: 'disk_size_mib: 99999 MiB is more than the 100 MiB free',
    }),
    'Disk size: 99999 MiB is more than the 100 MiB free',
  );
  assert.match(
    machineProblem({ name: 'NotOwner', message: 'x' }),
    /^This machine is managed by your administrator/,
  );
  assert.match(
    machineProblem({ name: 'InvalidState', message: 'cannot change lab: it is running; stop it first' }),
    /^Lab: it is running/i,
  );
  assert.match(machineProblem({ name: 'ServiceDown', message: 'x' }), /VM manager is not running/);
});

test('the dialogs send createVm/updateVm/deleteVm; success closes the dialog, a failure keeps it open and is returned', async () => {
  const store = createUiStore({ connection: 'open', editor: { kind: 'new' } });
  let fail = false;
  const { t, sent } = fakeTransport(() =>
    fail
      ? {
          ok: false,
          error: { name: 'InvalidArgument', message: 'slot: slot 2 is already used by another VM' },
        }
      : { ok: true, result: { vm: '/org/bulkhead/VmManager1/vm/lab' } },
  );
  const actions = createActions(store, t);
  assert.equal(
    await actions.createVm('Lab', { slot: 3, diskSizeMiB: 64, cdrom: '/media/bulkhead/s/guest.iso' }),
    null,
  );
  assert.equal(store.getState().editor, null);
  assert.deepEqual(sent[0], [
    'createVm',
    { name: 'Lab', options: { slot: 3, diskSizeMiB: 64, cdrom: '/media/bulkhead/s/guest.iso' } },
  ]);
  actions.showEditor({ kind: 'settings', vm: '/org/bulkhead/VmManager1/vm/lab' });
  fail = true;
  const failure = await actions.updateVm('/org/bulkhead/VmManager1/vm/lab', { slot: 2 });
  assert.equal(failure?.name, 'InvalidArgument');
  assert.deepEqual(store.getState().editor, { kind: 'settings', vm: '/org/bulkhead/VmManager1/vm/lab' });
  fail = false;
  assert.equal(await actions.deleteVm('/org/bulkhead/VmManager1/vm/lab', true), null);
  assert.deepEqual(sent.at(-1), ['deleteVm', { vm: '/org/bulkhead/VmManager1/vm/lab', removeDisks: true }]);
  assert.equal(store.getState().editor, null);
});

test('the channel map checks the machine requests: known options with their types, bounded text, object paths', () => {
  const ok = validateRequest('createVm', {
    name: 'Lab',
    options: { slot: 3, diskSizeMiB: 64, cdrom: '/media/x.iso' },
  });
  assert.equal(ok.channel, 'createVm');
  const refused = (channel: string, args: unknown, words: RegExp) =>
    assert.throws(
      () => validateRequest(channel, args),
      (e: unknown) => e instanceof ChannelError && e.errorName === 'InvalidArgument' && words.test(e.message),
    );
  refused('createVm', { name: 'Lab', options: { path: '/etc/shadow' } }, /argument 'options'/);
  refused('createVm', { name: 'Lab', options: { slot: -1 } }, /argument 'options'/);
  refused('createVm', { name: 'Lab', options: { cdrom: 'x'.repeat(2000) } }, /argument 'options'/);
  refused('createVm', { name: 'x'.repeat(1000), options: {} }, /argument 'name'/);
  refused('updateVm', { vm: '../../etc', options: {} }, /argument 'vm'/);
  refused(
    'deleteVm',
    { vm: '/org/bulkhead/VmManager1/vm/lab', removeDisks: 'yes' },
    /argument 'removeDisks'/,
  );
});
