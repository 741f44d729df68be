/**
 * The switcher's preload bridge (sandboxed; bundled by build.mjs since a sandboxed preload cannot
 * require project files). Exposes exactly `window.bulkhead`: request() for the channel map's
 * requests, onPush() for its pushes; unknown channels are refused here before reaching IPC.
 */
import { contextBridge, ipcRenderer } from 'electron';
import {
  isPushChannel,
  isRequestChannel,
  type PushChannel,
  type RequestChannel,
  type RequestOutcome,
} from '../common/channels';
import type { BulkheadBridge } from '../common/bridge';

const IPC_REQUEST = 'bulkhead:request';
const IPC_PUSH = 'bulkhead:push';

const vncBase = (process.argv.find((a) => a.startsWith('--bulkhead-vnc-base=')) ?? '').split('=')[1] ?? '';

const bridge: BulkheadBridge = {
  vncBase,
  request(channel: RequestChannel, args: unknown): Promise<RequestOutcome<unknown>> {
    if (!isRequestChannel(channel))
      return Promise.resolve({
        ok: false,
        error: { name: 'UnknownChannel', message: `unknown channel '${String(channel)}'` },
      });
    return ipcRenderer.invoke(IPC_REQUEST, channel, args);
  },
  onPush(listener: (channel: PushChannel, payload: unknown) => void): () => void {
    const h = (_e: unknown, channel: unknown, payload: unknown) => {
      if (isPushChannel(channel)) listener(channel, payload);
    };
    ipcRenderer.on(IPC_PUSH, h);
    return () => ipcRenderer.off(IPC_PUSH, h);
  },
};

contextBridge.exposeInMainWorld('bulkhead', bridge);
