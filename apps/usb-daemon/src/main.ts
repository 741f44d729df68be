#!/usr/bin/env node
/**
 * usb-daemon: owns every USB device of the Control Domain and hands each to at most one VM.
 *   node apps/usb-daemon/dist/main.js [--rules FILE] [--state-dir DIR] [--enumerator node-usb|none]
 * Bus: $BULKHEAD_BUS (default the system bus). State dir: --state-dir, else $BULKHEAD_STATE_DIR,
 * else /var/lib/bulkhead.
 */
import { mkdirSync } from 'node:fs';
import { BUS_NAMES } from '@bulkhead/contract';
import { argsOrExit, createLogger, runDaemonMain, stopOnSignals } from '@bulkhead/common';
import { BusClient, ServiceHost, connectBus } from '@bulkhead/dbus';
import { NoUsbEnumerator, type UsbEnumerator } from './enumerators/enumerator';
import { NodeUsbEnumerator } from './enumerators/node-usb-enumerator';
import { UsbService } from './usb-service';
import { DbusVmControl } from './vm-directory';

export interface Flags {
  rules: string;
  stateDir: string;
  enumerator: 'node-usb' | 'none';
  promptTimeoutMs: number;
}

export function parseFlags(argv: string[], env: NodeJS.ProcessEnv): Flags {
  const flags: Flags = {
    rules: '/etc/bulkhead/usb-rules.json',
    stateDir: env.BULKHEAD_STATE_DIR || '/var/lib/bulkhead',
    enumerator: 'node-usb',
    promptTimeoutMs: 60_000,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [name, inline] = a.includes('=')
      ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
      : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new Error(`${name} needs a value`);
      return v;
    };
    switch (name) {
      case '--rules':
        flags.rules = value();
        break;
      case '--state-dir':
        flags.stateDir = value();
        break;
      case '--enumerator': {
        const v = value();
        if (v !== 'node-usb' && v !== 'none')
          throw new Error(`--enumerator must be node-usb or none, got '${v}'`);
        flags.enumerator = v;
        break;
      }
      case '--prompt-timeout-ms': {
        const v = Number(value());
        if (!Number.isInteger(v) || v <= 0) throw new Error(`--prompt-timeout-ms must be a positive integer`);
        flags.promptTimeoutMs = v;
        break;
      }
      default:
        throw new Error(
          `unknown argument '${a}' (known: --rules, --state-dir, --enumerator, --prompt-timeout-ms)`,
        );
    }
  }
  return flags;
}

async function main(): Promise<void> {
  const log = createLogger('usb-daemon');
  const flags = argsOrExit(
    () => parseFlags(process.argv.slice(2), process.env),
    (m) => log.error(m),
  );
  mkdirSync(flags.stateDir, { recursive: true });
  let enumerator: UsbEnumerator;
  try {
    enumerator = flags.enumerator === 'none' ? new NoUsbEnumerator() : new NodeUsbEnumerator();
  } catch (e) {
    log.error(
      `cannot load node-usb (the 'usb' package): ${(e as Error).message}; use --enumerator none on a host without USB`,
    );
    process.exit(1);
  }
  const bus = await connectBus();
  const host = new ServiceHost(bus, { log: (level, msg) => log[level](msg) });
  const vms = new DbusVmControl(new BusClient(bus), log.child('vms'));
  const service = new UsbService({
    host,
    enumerator,
    vms,
    log,
    rulesFile: flags.rules,
    stateDir: flags.stateDir,
    promptTimeoutMs: flags.promptTimeoutMs,
  });
  await service.start();
  await host.requestName(BUS_NAMES.usb);
  stopOnSignals(async (sig) => {
    log.info(`${sig}: stopping (devices stay where they are)`);
    await service.stop().catch(() => undefined);
    host.close();
    bus.disconnect();
  });
  // Said last, once a stop is handled: whoever waits for this line may send SIGTERM at once.
  log.info(`serving ${BUS_NAMES.usb}`);
  process.on('uncaughtException', (e) => log.error(`uncaught: ${e.stack ?? e}`));
  process.on('unhandledRejection', (e) => log.error(`unhandled rejection: ${(e as Error)?.stack ?? e}`));
}

if (require.main === module) runDaemonMain('usb-daemon', main);
