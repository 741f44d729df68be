/**
 * How the renderer reaches the main-process core: the Electron preload bridge (window.bulkhead)
 * when there is one, else the web host's WebSocket (token taken from the page URL).
 */
import type { BulkheadBridge } from '../common/bridge';
import type {
  PushChannel,
  RequestArgs,
  RequestChannel,
  RequestOutcome,
  RequestResult,
  ServerFrame,
} from '../common/channels';
import type { ConnectionState } from './store';

export interface Transport {
  request<C extends RequestChannel>(
    channel: C,
    args: RequestArgs<C>,
  ): Promise<RequestOutcome<RequestResult<C>>>;
  onPush(listener: (channel: PushChannel, payload: unknown) => void): () => void;
  onConnection(listener: (s: ConnectionState) => void): void;
  /** Absolute ws: URL for a URL the core gave (relative ones are relative to this host). */
  resolveWs(url: string): string;
}

export class BridgeTransport implements Transport {
  constructor(private readonly bridge: BulkheadBridge) {}
  request<C extends RequestChannel>(channel: C, args: RequestArgs<C>) {
    return this.bridge.request(channel, args) as Promise<RequestOutcome<RequestResult<C>>>;
  }
  onPush(listener: (channel: PushChannel, payload: unknown) => void) {
    return this.bridge.onPush(listener);
  }
  onConnection(listener: (s: ConnectionState) => void) {
    listener('open');
  }
  resolveWs(url: string) {
    return url.startsWith('/') ? this.bridge.vncBase + url : url;
  }
}

/** WebSocket to the web host; reconnects by itself with a capped backoff. */
export class WebSocketTransport implements Transport {
  private ws: WebSocket | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, (o: RequestOutcome<unknown>) => void>();
  private readonly pushListeners = new Set<(channel: PushChannel, payload: unknown) => void>();
  private readonly connListeners = new Set<(s: ConnectionState) => void>();
  private backoff = 250;

  constructor(
    private readonly base: string,
    private readonly token: string,
  ) {
    this.open();
  }

  private setState(s: ConnectionState) {
    for (const l of this.connListeners) l(s);
  }

  private open() {
    const ws = new WebSocket(`${this.base}/ws?token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 250;
      this.setState('open');
    };
    ws.onmessage = (ev) => {
      let f: ServerFrame;
      try {
        f = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      if ('push' in f) for (const l of this.pushListeners) l(f.push, f.payload);
      else {
        const done = this.pending.get(f.id);
        this.pending.delete(f.id);
        done?.(f.ok ? { ok: true, result: f.result } : { ok: false, error: f.error });
      }
    };
    ws.onclose = () => {
      this.ws = null;
      for (const [, done] of this.pending)
        done({
          ok: false,
          error: { name: 'Disconnected', message: 'connection to the Control Domain lost' },
        });
      this.pending.clear();
      this.setState('closed');
      setTimeout(() => this.open(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 4000);
    };
  }

  request<C extends RequestChannel>(
    channel: C,
    args: RequestArgs<C>,
  ): Promise<RequestOutcome<RequestResult<C>>> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN)
      return Promise.resolve({
        ok: false,
        error: { name: 'Disconnected', message: 'not connected to the Control Domain' },
      });
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve as (o: RequestOutcome<unknown>) => void);
      ws.send(JSON.stringify({ id, channel, args }));
    });
  }
  onPush(listener: (channel: PushChannel, payload: unknown) => void) {
    this.pushListeners.add(listener);
    return () => this.pushListeners.delete(listener);
  }
  onConnection(listener: (s: ConnectionState) => void) {
    this.connListeners.add(listener);
  }
  resolveWs(url: string) {
    return url.startsWith('/') ? this.base + url : url;
  }
}

export function pickTransport(): Transport {
  const bridge = (globalThis as { bulkhead?: BulkheadBridge }).bulkhead;
  if (bridge) return new BridgeTransport(bridge);
  const token = new URLSearchParams(location.search).get('token') ?? '';
  return new WebSocketTransport(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`, token);
}
