export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  child(component: string): Logger;
}

/**
 * Line-oriented logs on stderr, which journald captures under systemd. Level from
 * $BULKHEAD_LOG_LEVEL (default info).
 */
export function createLogger(
  component: string,
  level: LogLevel = (process.env.BULKHEAD_LOG_LEVEL as LogLevel) ?? 'info',
): Logger {
  const min = ORDER[level] ?? ORDER.info;
  const line = (l: LogLevel, msg: string) => {
    if (ORDER[l] >= min) process.stderr.write(`${new Date().toISOString()} ${component} ${l}: ${msg}\n`);
  };
  return {
    debug: (m) => line('debug', m),
    info: (m) => line('info', m),
    warn: (m) => line('warn', m),
    error: (m) => line('error', m),
    child: (c) => createLogger(`${component}/${c}`, level),
  };
}
