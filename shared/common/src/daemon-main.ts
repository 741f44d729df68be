/**
 * How every daemon's main.ts starts and ends, in one place: a fatal error while starting is
 * printed with the daemon's name and exits 1 (systemd restarts it); SIGTERM and SIGINT (systemd's
 * stop, Ctrl+C) run the daemon's own stop once — a second signal while it runs does not start it
 * again — and then exit 0.
 */

/** Run `main`; a failure exits 1 after `<name>: fatal: <stack>` on stderr. */
export function runDaemonMain(name: string, main: () => Promise<void>): void {
  main().catch((e) => {
    process.stderr.write(`${name}: fatal: ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  });
}

/**
 * Stop on SIGTERM and SIGINT with `stop(why)`, then exit 0 (also when stop fails: the daemon is
 * going anyway). Returns the same once-only trigger for other reasons to stop (e.g. a lost bus).
 */
export function stopOnSignals(stop: (why: string) => Promise<void>): (why: string) => void {
  let stopping = false;
  const once = (why: string): void => {
    if (stopping) return;
    stopping = true;
    void stop(why)
      .catch(() => undefined)
      .finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => once('SIGTERM'));
  process.on('SIGINT', () => once('SIGINT'));
  return once;
}

/**
 * Read the command line with `parse`: a bad one is said by `report` (stderr by default) in the
 * parser's words, without a stack, and exits 2 (a usage error: systemd does not restart it).
 */
export function argsOrExit<T>(
  parse: () => T,
  report: (message: string) => void = (m) => process.stderr.write(`${m}\n`),
): T {
  try {
    return parse();
  } catch (e) {
    report((e as Error).message);
    process.exit(2);
  }
}
