import type { PushChannel, RequestChannel, RequestOutcome } from './channels';

/** What the preload script exposes as `window.bulkhead` (Electron only). */
export interface BulkheadBridge {
  /** ws://127.0.0.1:PORT of the local VNC proxy. */
  vncBase: string;
  request(channel: RequestChannel, args: unknown): Promise<RequestOutcome<unknown>>;
  onPush(listener: (channel: PushChannel, payload: unknown) => void): () => void;
}
