import type { Socket } from 'node:net';
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
  coalesceWrites(bus);
  return bus;
}

/**
 * Messages sent in one turn of the event loop leave in one write to the bus socket. dbus-next
 * writes each message on its own, and each write wakes dbus-daemon: a switch sends a signal, a
 * call, more signals and its reply within a few microtasks, and on two cores every wake-up is a
 * chance to be preempted (issue 17's switch tail). The socket is corked at the first write of a
 * turn and uncorked in that turn's check phase (setImmediate): after the current callback and
 * every promise it resolved, before the loop waits for I/O again, so nothing waits for a later
 * event and the order of messages is kept. A process that exits in the same turn (a signal, then
 * process.exit) still sends them: the 'exit' handler uncorks, and a socket write is attempted at
 * once.
 */
function coalesceWrites(bus: dbus.MessageBus): void {
  const stream = busSocket(bus);
  if (!stream || typeof stream.cork !== 'function') return;
  const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
  let corked = false;
  const flush = () => {
    if (!corked) return;
    corked = false;
    corkedStreams.delete(flush);
    stream.uncork();
  };
  stream.write = ((...args: unknown[]) => {
    if (!corked) {
      corked = true;
      stream.cork();
      corkedStreams.add(flush);
      setImmediate(flush);
    }
    return write(...args);
  }) as Socket['write'];
}

/** Flushes of the sockets corked in this turn, for a process exiting before its check phase. */
const corkedStreams = new Set<() => void>();
process.on('exit', () => {
  for (const flush of [...corkedStreams]) flush();
});

/**
 * The socket under a dbus-next connection (dbus-next keeps it private), or undefined for anything
 * else (a test's fake bus).
 */
export function busSocket(bus: dbus.MessageBus): Socket | undefined {
  return (bus as unknown as { _connection?: { stream?: Socket } })._connection?.stream;
}
