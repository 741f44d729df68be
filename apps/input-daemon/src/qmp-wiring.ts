import { QmpClient } from '@bulkhead/qmp';
import type { QmpConnector } from './sinks/qmp-sink';

/**
 * The QmpConnector input-daemon uses: @bulkhead/qmp's QmpClient, retried while QEMU is still
 * creating its socket. Everything else in input-daemon sees only the QmpConnection interface.
 */
export function qmpConnector(opts: { retryUntilMs?: number } = {}): QmpConnector {
  return (socketPath) => QmpClient.connect(socketPath, { retryUntilMs: opts.retryUntilMs ?? 2000 });
}
