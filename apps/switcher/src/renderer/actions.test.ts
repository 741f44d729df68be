import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RequestChannel } from '../common/channels';
import { createActions } from './actions';
import { createUiStore, type ConnectionState } from './store';
import type { Transport } from './transport';

/**
 * A fake of the WebSocket transport's contract: a request while the connection is not open is
 * answered "Disconnected" and reaches nobody; the connection's state changes are announced.
 */
function fakeWebSocketTransport() {
  let state: ConnectionState = 'connecting';
  const delivered: Array<[string, unknown]> = [];
  const listeners = new Set<(s: ConnectionState) => void>();
  const t: Transport = {
    request: (async (channel: RequestChannel, args: unknown) => {
      if (state !== 'open')
        return { ok: false, error: { name: 'Disconnected', message: 'not connected to the Control Domain' } };
      delivered.push([channel, args]);
      return { ok: true, result: null };
    }) as Transport['request'],
    onPush: () => () => undefined,
    onConnection: (l) => void listeners.add(l),
    resolveWs: (u) => u,
  };
  const setState = (s: ConnectionState) => {
    state = s;
    for (const l of listeners) l(s);
  };
  const thumbnailRequests = () => delivered.filter(([c]) => c === 'setThumbnailsVisible').map(([, a]) => a);
  return { t, setState, thumbnailRequests };
}

test('tiles shown before the connection opened still get their thumbnails once it opens, and again after a reconnect', () => {
  const f = fakeWebSocketTransport();
  const actions = createActions(createUiStore(), f.t);
  actions.setThumbnailsVisible(true); // the tiles' first render: the WebSocket is still connecting
  assert.deepEqual(f.thumbnailRequests(), [], 'dropped: not connected yet');
  f.setState('open');
  assert.deepEqual(f.thumbnailRequests(), [{ visible: true }]);
  // The core forgets a client whose connection closed; the next connection is a new client.
  f.setState('closed');
  f.setState('open');
  assert.deepEqual(f.thumbnailRequests(), [{ visible: true }, { visible: true }]);
});

test('a connection opening while no view wants thumbnails asks for none', () => {
  const f = fakeWebSocketTransport();
  const actions = createActions(createUiStore(), f.t);
  f.setState('open');
  actions.setThumbnailsVisible(true);
  actions.setThumbnailsVisible(false);
  f.setState('closed');
  f.setState('open');
  assert.deepEqual(f.thumbnailRequests(), [{ visible: true }, { visible: false }]);
});

test('one view giving up thumbnails does not turn them off under another view still showing them', () => {
  const f = fakeWebSocketTransport();
  f.setState('open');
  const actions = createActions(createUiStore(), f.t);
  actions.setThumbnailsVisible(true); // the tiles
  actions.setThumbnailsVisible(true); // a VM's view while its live display connects
  actions.setThumbnailsVisible(false); // that view went live (a later render than the tiles')
  assert.deepEqual(f.thumbnailRequests(), [{ visible: true }], 'the tiles still see them');
  actions.setThumbnailsVisible(false); // the tiles hidden too
  assert.deepEqual(f.thumbnailRequests(), [{ visible: true }, { visible: false }]);
});
