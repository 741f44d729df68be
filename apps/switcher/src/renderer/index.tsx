/** Renderer entry: picks the transport, feeds pushes into the store, mounts the app. */
import { createRoot } from 'react-dom/client';
import { createActions } from './actions';
import { App } from './components/App';
import { ActionsContext, StoreContext } from './components/context';
import { applyPush, createUiStore } from './store';
import { pickTransport } from './transport';
import { notePush } from './view-timing';

const store = createUiStore();
const transport = pickTransport();
const actions = createActions(store, transport);

transport.onPush((channel, payload) => {
  notePush(channel);
  store.setState(applyPush(store.getState(), channel, payload as never), true);
});
transport.onConnection((connection) => store.setState({ ...store.getState(), connection }, true));

createRoot(document.getElementById('root')!).render(
  <StoreContext.Provider value={store}>
    <ActionsContext.Provider value={actions}>
      <App />
    </ActionsContext.Provider>
  </StoreContext.Provider>,
);
// For tests and the demo's own scripts: read-only access to the state.
(globalThis as { __bulkheadStore?: unknown }).__bulkheadStore = { getState: store.getState };
