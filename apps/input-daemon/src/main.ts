#!/usr/bin/env node
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, runDaemonMain, stopOnSignals } from '@bulkhead/common';
import { BUS_NAMES, INPUT_PATH, VM_MANAGER_PATH } from '@bulkhead/contract';
import { BusClient, ServiceHost, connectBus } from '@bulkhead/dbus';
import { evdevAvailable, UinputDevice } from './evdev-native';
import { HeldKeysJournal, HELD_KEYS_FILE, readHeldKeys } from './held-keys';
import { buildChords, HotkeyMatcher, loadHotkeysFile } from './hotkeys';
import { InputService, SWITCH_CALL_TIMEOUT_MS, type VmManagerLink } from './input-service';
import { qmpConnector } from './qmp-wiring';
import type { InputSink } from './sinks/sink';
import { CountingSwitcherSink } from './sinks/switcher-sink';
import { createVmUinputSink, seatDeviceSpec, UinputWriterSink } from './sinks/uinput-sink';
import { vmSinkFactory } from './sinks/vm-sink-factory';
import { EvdevSeat } from './sources/evdev-seat';
import { ReplaySource } from './sources/replay-source';
import type { InputSource } from './sources/source';
import { VirtualSeat } from './sources/virtual-seat';
import { SWITCHER_TARGET } from './router';
import { startSleepGuard } from './sleep-guard';
import { SleepRecord } from './sleep-record';
import { PamPasswordChecker } from './unlock/pam-native';
import { PasswordlessUnlock, type UnlockCheck } from './unlock/unlock-check';
import { UnlockGate } from './unlock/unlock-gate';

/** Survives a restart of the daemon (systemd: RuntimeDirectory=, RuntimeDirectoryPreserve=restart). */
const DEFAULT_RUN_DIR = '/run/bulkhead-input';

/**
 * The run dir when --run-dir is not given: DEFAULT_RUN_DIR on the system bus; on any other bus
 * (demo, tests) one per bus address under /dev/shm (or the temp dir), so that daemons on
 * different private buses never release keys in each other's VMs, while a restart on the same bus
 * finds its file.
 */
function defaultRunDir(): string {
  const bus = process.env.BULKHEAD_BUS ?? 'system';
  if (bus === 'system') return DEFAULT_RUN_DIR;
  // A tmpfs like /run when there is one: a rename on a loaded disk file system takes ms.
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return join(base, `bulkhead-input-${createHash('sha256').update(bus).digest('hex').slice(0, 16)}`);
}

/** The account whose password unlocks a hardware seat, unless --unlock-user names another. */
const DEFAULT_UNLOCK_USER = 'owner';

const USAGE = `usage: bulkhead-input-daemon [--seat evdev|virtual|replay:<file>] [--hotkeys <file>] [--run-dir <dir>]
       [--unlock-user <account>] [--pam-service <name>] [--unlock-without-password] [--idle-lock <seconds>]
  --unlock-user: whose password Unlock checks with PAM (default '${DEFAULT_UNLOCK_USER}'; PAM service
             --pam-service, default 'bulkhead-unlock' = /etc/pam.d/bulkhead-unlock)
  --unlock-without-password: Unlock needs no password (virtual seat only: the demo and tests; this is
             the default there unless --unlock-user is given)
  --idle-lock: lock the seat after this many seconds without input (default 0: never)
  --run-dir: where the keys held in each VM are recorded, so that the next daemon after a crash
             releases them (default ${DEFAULT_RUN_DIR} on the system bus, else one per bus address
             under /dev/shm or the temp dir)
  env BULKHEAD_BUS: D-Bus address (default: the system bus); BULKHEAD_LOG_LEVEL: debug|info|warn|error`;

interface Args {
  seat: string;
  hotkeys?: string;
  runDir: string;
  unlockUser?: string;
  pamService: string;
  unlockWithoutPassword: boolean;
  idleLockSeconds: number;
}

function parseArgs(argv: string[]): Args {
  const out: Args = {
    seat: 'evdev',
    runDir: defaultRunDir(),
    pamService: 'bulkhead-unlock',
    unlockWithoutPassword: false,
    idleLockSeconds: 0,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === '--seat') out.seat = value();
    else if (a.startsWith('--seat=')) out.seat = a.slice(7);
    else if (a === '--hotkeys') out.hotkeys = value();
    else if (a.startsWith('--hotkeys=')) out.hotkeys = a.slice(10);
    else if (a === '--run-dir') out.runDir = value();
    else if (a.startsWith('--run-dir=')) out.runDir = a.slice(10);
    else if (a === '--unlock-user') out.unlockUser = value();
    else if (a === '--pam-service') out.pamService = value();
    else if (a === '--unlock-without-password') out.unlockWithoutPassword = true;
    else if (a === '--idle-lock') {
      const v = value();
      out.idleLockSeconds = Number(v);
      if (!/^\d+$/.test(v) || out.idleLockSeconds > 86_400)
        throw new Error(`--idle-lock '${v}': expected whole seconds from 0 to 86400\n${USAGE}`);
    } else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument '${a}'\n${USAGE}`);
  }
  return out;
}

/**
 * What Unlock checks. A hardware seat always checks a password with PAM; only the virtual seat
 * (a browser window on a developer's machine) may unlock without one.
 */
function unlockCheck(args: Args, log: ReturnType<typeof createLogger>): UnlockCheck {
  const virtual = args.seat === 'virtual';
  if (args.unlockWithoutPassword && !virtual)
    throw new Error(`--unlock-without-password is only for --seat virtual, not '${args.seat}'\n${USAGE}`);
  if (args.unlockWithoutPassword || (virtual && !args.unlockUser)) {
    log.warn('Unlock needs no password (virtual seat)');
    return new PasswordlessUnlock();
  }
  const user = args.unlockUser ?? DEFAULT_UNLOCK_USER;
  log.info(`Unlock checks the password of '${user}' with PAM service '${args.pamService}'`);
  return new UnlockGate(
    new PamPasswordChecker(args.pamService),
    // In the run dir, as the lock is: a SIGKILLed daemon's successor keeps the back-off.
    { user, stateFile: join(args.runDir, 'unlock-failures.json') },
    log.child('unlock'),
  );
}

async function main(): Promise<void> {
  const log = createLogger('input-daemon');
  const args = parseArgs(process.argv.slice(2));
  const chords = args.hotkeys ? loadHotkeysFile(args.hotkeys) : buildChords();

  let source: InputSource;
  if (args.seat === 'evdev') source = new EvdevSeat(log.child('evdev'));
  else if (args.seat === 'virtual') source = new VirtualSeat();
  else if (args.seat.startsWith('replay:'))
    source = new ReplaySource(args.seat.slice(7), 'keyboard', { onWarning: (m) => log.warn(m) });
  else throw new Error(`--seat '${args.seat}': expected evdev, virtual or replay:<file>\n${USAGE}`);

  const uinput = existsSync('/dev/uinput') && evdevAvailable();
  // In the image the switcher (kiosk compositor) reads a uinput device; on a host it is counted only.
  let switcherSink: InputSink = new CountingSwitcherSink();
  if (uinput) {
    try {
      switcherSink = new UinputWriterSink(
        SWITCHER_TARGET,
        UinputDevice.create(seatDeviceSpec('bulkhead-switcher')),
        'uinput switcher',
      );
    } catch (e) {
      log.warn(`no uinput device for the switcher (${(e as Error).message}); its input is counted only`);
    }
  }
  const sinkFactory = vmSinkFactory({
    connect: qmpConnector(),
    fastPath: uinput ? (target, vmId, qmp) => createVmUinputSink(target, vmId, qmp) : null,
    warn: (m) => log.warn(m),
  });

  const bus = await connectBus();
  const client = new BusClient(bus, 10_000);
  const vmManager: VmManagerLink = {
    async switchToSlot(slot) {
      await client.call(
        BUS_NAMES.vmManager,
        VM_MANAGER_PATH,
        'org.bulkhead.VmManager1',
        'SwitchToSlot',
        'ua{sv}',
        [slot, {}],
        // A switch may take seconds (a GPU) to minutes (booting its VM): its answer, not a call
        // timeout, ends the hotkey's hold.
        { timeoutMs: SWITCH_CALL_TIMEOUT_MS },
      );
    },
  };
  const journalLog = log.child('held-keys');
  const leftovers = readHeldKeys(join(args.runDir, HELD_KEYS_FILE), journalLog);
  const journal = new HeldKeysJournal(args.runDir, journalLog);
  const service = new InputService(
    source,
    new HotkeyMatcher(chords),
    switcherSink,
    sinkFactory,
    vmManager,
    log,
    {
      journal,
      unlock: unlockCheck(args, log),
      idleLockMs: args.idleLockSeconds * 1000,
      lockFile: join(args.runDir, 'locked'),
    },
  );
  // First in the focus queue: no SetFocus is served before the leftovers are released.
  void service.releaseLeftovers(leftovers);
  const host = new ServiceHost(bus, { log: (level, msg) => log[level](msg) });
  service.attach(host.export(INPUT_PATH, 'org.bulkhead.Input1', service, () => service.properties()));
  await host.requestName(BUS_NAMES.input);
  await source.start();
  service.resumeLock();
  // Every sleep locks the seat first, also while vm-daemon is down (its own inhibitor with it).
  const sleepGuard = await startSleepGuard({
    client,
    bus: process.env.BULKHEAD_BUS ?? 'system',
    lockSeat: () => service.lockForSleep(),
    log,
    sleepRecord: new SleepRecord(
      join(args.runDir, 'asleep-since-boot.json'),
      process.env.BULKHEAD_PROC_UPTIME,
    ),
  });
  stopOnSignals(async (sig) => {
    log.info(`${sig}: stopping`);
    await sleepGuard?.close().catch(() => undefined);
    await source.stop().catch(() => undefined);
    await service.close().catch(() => undefined);
    await switcherSink.close().catch(() => undefined);
    host.close();
    bus.disconnect();
  });
  // Said last, once a stop is handled: whoever waits for this line may send SIGTERM at once.
  log.info(
    `ready: seat ${source.seat}, ${chords.length} hotkeys, ${uinput ? 'uinput fast path' : 'QMP input path'}, held keys recorded in ${journal.path}`,
  );
}

runDaemonMain('input-daemon', main);
