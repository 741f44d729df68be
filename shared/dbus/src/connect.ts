import * as dbus from 'dbus-next';

/**
 * Which bus to use: 'system' (production), 'session', or a D-Bus address such as
 * 'unix:path=/run/bulkhead-test/bus'. Defaults to $BULKHEAD_BUS, then 'system'.
 */
export type BusSpec = 'system' | 'session' | string;

export function resolveBusSpec(spec?: BusSpec): BusSpec {
  return spec ?? process.env.BULKHEAD_BUS ?? 'system';
}

/** Connect and wait until the bus said Hello, so `bus.name` (our unique name) is known. */
export async function connectBus(
  spec?: BusSpec,
  opts: { timeoutMs?: number } = {},
): Promise<dbus.MessageBus> {
  const s = resolveBusSpec(spec);
  const bus =
    s === 'system'
      ? dbus.systemBus()
      : s === 'session'
        ? dbus.sessionBus()
        : dbus.sessionBus({ busAddress: s });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      bus.disconnect();
      reject(new Error(`D-Bus: no answer from bus ${s} within ${opts.timeoutMs ?? 5000} ms`));
    }, opts.timeoutMs ?? 5000);
    const onConnect = () => {
      cleanup();
      resolve();
    };
    const onError = (e: unknown) => {
      cleanup();
      try {
        bus.disconnect();
      } catch {
        /* already closed */
      }
      reject(new Error(`D-Bus: cannot connect to bus ${s}: ${(e as Error)?.message ?? e}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      bus.off('connect', onConnect);
      bus.off('error', onError);
    };
    bus.on('connect', onConnect);
    bus.on('error', onError);
  });
  // After connecting, a lost connection must not crash the process with an unhandled 'error'.
  bus.on('error', () => undefined);
  return bus;
}

/** The unique name this connection got from the bus (":1.42"). */
export function uniqueName(bus: dbus.MessageBus): string {
  return (bus as unknown as { name: string }).name;
}
