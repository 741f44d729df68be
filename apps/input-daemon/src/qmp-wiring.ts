import type { QmpConnection, QmpConnector } from './sinks/qmp-sink';

/**
 * Wires the QmpConnector to vm-daemon's QmpClient. TEMPORARY AND UGLY ON PURPOSE: a relative
 * require into another app's build output, until the QMP client moves to a shared package. Only
 * this file knows where it lives; everything else sees the QmpConnection interface.
 */
export function vmDaemonQmpConnector(opts: { retryUntilMs?: number } = {}): QmpConnector {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require('../../vm-daemon/dist/qmp/qmp-client') as {
    QmpClient: { connect(path: string, o: { retryUntilMs?: number }): Promise<QmpConnection> };
  };
  return (socketPath) => mod.QmpClient.connect(socketPath, { retryUntilMs: opts.retryUntilMs ?? 2000 });
}
