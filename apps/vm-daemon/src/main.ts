#!/usr/bin/env node
/**
 * vm-daemon: org.bulkhead.VmManager1. Wires the pieces: bus connection, backend (QEMU, or Xen
 * in dom0 with its GPU hand-off), input-daemon client, the core (VmManager) and its D-Bus
 * publication.
 *
 *   node apps/vm-daemon/dist/main.js [--config-dir DIR] [--run-dir DIR] [--state-dir DIR]
 *        [--bus ADDRESS] [--backend auto|qemu|xen] [--no-autostart] [--stop-vms-on-exit]
 *        [--image-dir DIR]... [--person-dir DIR] [--person-image-dir DIR] [--media-root DIR]...
 *        [--gpu-shared-with-dom0 true|false]
 *
 * Environment: BULKHEAD_BUS, BULKHEAD_VM_DIR, BULKHEAD_RUN_DIR, BULKHEAD_STATE_DIR,
 * BULKHEAD_IMAGE_DIRS (':'-separated, added to the --image-dir list), BULKHEAD_PERSON_VM_DIR,
 * BULKHEAD_PERSON_IMAGE_DIR, BULKHEAD_MEDIA_ROOTS (':'-separated, replaces the default),
 * BULKHEAD_BACKEND (auto|qemu|xen, as --backend), BULKHEAD_ACCEL (kvm|tcg: skip the KVM probe),
 * BULKHEAD_GPU_SHARED_WITH_DOM0 (true|false, as --gpu-shared-with-dom0),
 * BULKHEAD_LOG_LEVEL,
 * BULKHEAD_XEN_DUMP_DIR (xen: where xl writes core dumps, default /var/lib/xen/dump).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BUS_NAMES } from '@bulkhead/contract';
import { argsOrExit, createLogger, runDaemonMain, stopOnSignals } from '@bulkhead/common';
import { BusClient, ServiceHost, connectBus } from '@bulkhead/dbus';
import type { VmBackend } from './backend/backend';
import { QemuBackend } from './backend/qemu-backend';
import { XenGpuHandoff } from './backend/xen/gpu-handoff';
import { XenBackend } from './backend/xen/xen-backend';
import { ExecXlRunner } from './backend/xen/xl-runner';
import { xenDefinitionProblem } from './backend/xen/xen-options';
import { NoDom0Display, SystemdKioskDisplay } from './gpu/dom0-display';
import { DEFAULT_MEDIA_ROOTS, defaultImageDirs, loadConfigDir, type ConfigOptions } from './config';
import { VmStore } from './vm-store';
import { VmManagerDbus } from './dbus-service';
import { InputDaemonClient } from './input-daemon-client';
import { startPower } from './power';
import { StateStore } from './state-store';
import { NoGpuHandoff, type GpuHandoff } from './switch-transaction';
import { switchGateFromEnv } from './switch-gate';
import { DbusUsbMover } from './usb-mover';
import { VmManager } from './vm-manager';

export interface DaemonArgs {
  configDir: string;
  runDir: string;
  stateDir: string;
  bus: string;
  /** auto (the default: see chooseBackend), qemu or xen. */
  backend: string;
  autostart: boolean;
  stopVmsOnExit: boolean;
  /** Extra directories VM files may name disks/kernels in (besides defaultImageDirs). */
  imageDirs: string[];
  /** The person's VM files (CreateVm) and their disks: never the admin's config dir. */
  personDir: string;
  personImageDir: string;
  /** Where ISOs and disk imports may come from (USB sticks, mounted read-only). */
  mediaRoots: string[];
  /**
   * The hand-off GPU is the one dom0 draws on (the laptop): dom0 holds it between VMs and the kiosk
   * lets go of it for a VM. false (default): a second GPU only VMs hold (docs/gpu-handoff.md).
   */
  gpuSharedWithDom0: boolean;
}

const USAGE = `usage: bulkhead-vm-daemon [--config-dir DIR] [--run-dir DIR] [--state-dir DIR] [--bus ADDRESS]
                          [--backend auto|qemu|xen] [--no-autostart] [--stop-vms-on-exit] [--image-dir DIR]...
                          [--person-dir DIR] [--person-image-dir DIR] [--media-root DIR]...
                          [--gpu-shared-with-dom0 true|false]`;

export function parseArgs(argv: string[], env: NodeJS.ProcessEnv): DaemonArgs {
  const a: DaemonArgs = {
    configDir: env.BULKHEAD_VM_DIR ?? '/etc/bulkhead/vms',
    runDir: env.BULKHEAD_RUN_DIR ?? '/run/bulkhead/vms',
    stateDir: env.BULKHEAD_STATE_DIR ?? '/var/lib/bulkhead/vm-daemon',
    bus: env.BULKHEAD_BUS ?? 'system',
    backend: env.BULKHEAD_BACKEND ?? 'auto',
    autostart: true,
    stopVmsOnExit: false,
    imageDirs: (env.BULKHEAD_IMAGE_DIRS ?? '').split(':').filter((d) => d !== ''),
    // Default: under the state dir (see below), so a daemon with its own state dir (a test, the
    // demo) never reads or writes another's person VMs.
    personDir: env.BULKHEAD_PERSON_VM_DIR ?? '',
    personImageDir: env.BULKHEAD_PERSON_IMAGE_DIR ?? '',
    mediaRoots: env.BULKHEAD_MEDIA_ROOTS?.split(':').filter((d) => d !== '') ?? [],
    gpuSharedWithDom0: trueOrFalse(
      'BULKHEAD_GPU_SHARED_WITH_DOM0',
      env.BULKHEAD_GPU_SHARED_WITH_DOM0 ?? 'false',
    ),
  };
  let mediaRootFlags = false;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    switch (flag) {
      case '--config-dir':
        a.configDir = value();
        break;
      case '--run-dir':
        a.runDir = value();
        break;
      case '--state-dir':
        a.stateDir = value();
        break;
      case '--bus':
        a.bus = value();
        break;
      case '--backend':
        a.backend = value();
        break;
      case '--image-dir':
        a.imageDirs.push(value());
        break;
      case '--person-dir':
        a.personDir = value();
        break;
      case '--person-image-dir':
        a.personImageDir = value();
        break;
      case '--media-root':
        // The first flag replaces the default/environment list; further ones add to it.
        if (!mediaRootFlags) a.mediaRoots = [];
        mediaRootFlags = true;
        a.mediaRoots.push(value());
        break;
      case '--gpu-shared-with-dom0':
        a.gpuSharedWithDom0 = trueOrFalse(flag, value());
        break;
      case '--no-autostart':
        a.autostart = false;
        break;
      case '--stop-vms-on-exit':
        a.stopVmsOnExit = true;
        break;
      case '--help':
      case '-h':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument '${flag}'\n${USAGE}`);
    }
  }
  a.configDir = resolve(a.configDir);
  a.runDir = resolve(a.runDir);
  a.stateDir = resolve(a.stateDir);
  a.imageDirs = a.imageDirs.map((d) => resolve(d));
  a.personDir = resolve(a.personDir || join(a.stateDir, 'vms'));
  a.personImageDir = resolve(a.personImageDir || join(a.stateDir, 'images'));
  if (a.mediaRoots.length === 0) a.mediaRoots = [...DEFAULT_MEDIA_ROOTS];
  a.mediaRoots = a.mediaRoots.map((d) => resolve(d));
  if (a.personDir === a.configDir)
    throw new Error(`--person-dir must not be the admin's --config-dir (${a.configDir})\n${USAGE}`);
  return a;
}

function trueOrFalse(what: string, v: string): boolean {
  if (v === 'true' || v === 'false') return v === 'true';
  throw new Error(`${what} must be true or false, got '${v}'\n${USAGE}`);
}

/**
 * The backend vm-daemon runs its VMs on. `auto` chooses from the machine it runs on: Xen when this
 * is Xen's control domain (`/proc/xen/capabilities` lists `control_d`: dom0 of the image's
 * "Bulkhead (Xen)" entry), QEMU/KVM otherwise (the "Bulkhead (KVM)" entry, a developer's machine,
 * a Xen guest). `qemu` or `xen` (--backend, BULKHEAD_BACKEND) override it.
 * `xenCapabilities` returns the file's text, or null when there is none (no Xen, or xenfs not
 * mounted).
 */
export function chooseBackend(requested: string, xenCapabilities: () => string | null): 'qemu' | 'xen' {
  if (requested === 'qemu' || requested === 'xen') return requested;
  if (requested !== 'auto') throw new Error(`--backend must be auto, qemu or xen, got '${requested}'`);
  const caps = xenCapabilities();
  return caps !== null && caps.split(/[\s,]+/).includes('control_d') ? 'xen' : 'qemu';
}

export function readXenCapabilities(path = '/proc/xen/capabilities'): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const log = createLogger('vm-daemon');
  const args = argsOrExit(() => parseArgs(process.argv.slice(2), process.env));
  const backendName = argsOrExit(() => chooseBackend(args.backend, readXenCapabilities));
  log.info(`backend ${backendName}${args.backend === 'auto' ? ' (auto: from /proc/xen/capabilities)' : ''}`);
  const accelEnv = process.env.BULKHEAD_ACCEL;
  if (accelEnv && accelEnv !== 'kvm' && accelEnv !== 'tcg') {
    console.error(`BULKHEAD_ACCEL must be kvm or tcg, got '${accelEnv}'`);
    process.exit(2);
  }
  const config: ConfigOptions = {
    imageDirs: [...defaultImageDirs(args.configDir), ...args.imageDirs],
    mediaRoots: args.mediaRoots,
    // Only the admin's files for the backend chosen: one image holds the QEMU VM files of its KVM
    // entry and the Xen ones of its Xen entry (dom0-rootfs/vms/); the others are set aside, not
    // errors. The person's own files (CreateVm) are all loaded: one of the other backend is listed
    // as unavailable on this entry (VmEntry.unavailable), kept unchanged, never dropped.
    backends: [backendName],
    // A Xen file's sidecar and guest kind are checked when it is loaded (ConfigErrors), not at start.
    check: backendName === 'xen' ? xenDefinitionProblem : undefined,
  };
  const person = new VmStore({
    dir: args.personDir,
    imageDir: args.personImageDir,
    mediaRoots: args.mediaRoots,
    // CreateVm makes VMs for the backend this boot entry runs (on Xen: HVM domains).
    backend: backendName,
    check: config.check,
  });
  try {
    person.ensureDirs(); // (VmManager.init removes what an import cut off left in them)
  } catch (e) {
    log.warn(`cannot make the person's VM directories (CreateVm will fail): ${(e as Error).message}`);
  }
  let backend: VmBackend;
  let gpu: GpuHandoff = new NoGpuHandoff();
  if (backendName === 'qemu') {
    const guest = join(__dirname, '..', 'guest', 'build', 'bulkhead-guest.elf');
    backend = new QemuBackend({
      runRoot: args.runDir,
      log: log.child('qemu'),
      accel: (accelEnv as 'kvm' | 'tcg' | undefined) ?? null,
      probeKernel: existsSync(guest) ? guest : null,
    });
  } else {
    const runner = new ExecXlRunner();
    const xen = new XenBackend({
      runRoot: args.runDir,
      runner,
      log: log.child('xen'),
      dumpDir: process.env.BULKHEAD_XEN_DUMP_DIR,
    });
    backend = xen;
    const handoff = new XenGpuHandoff({
      runner,
      log: log.child('gpu'),
      sharedWithDom0: args.gpuSharedWithDom0,
      display: args.gpuSharedWithDom0
        ? new SystemdKioskDisplay({ releasedMarker: join(args.runDir, '.kiosk-stopped-for-gpu') })
        : new NoDom0Display(),
      runningDomains: () => xen.runningDomains(),
    });
    // Once at boot. One GPU shared with dom0: one parked in pciback goes back to dom0's driver and
    // the kiosk. A second GPU: it goes to pciback, so dom0's drivers let go of it before any VM asks.
    const gpus = loadConfigDir(args.configDir, config)
      .vms.filter((v) => v.backend === 'xen')
      .flatMap((v) => v.gpu?.pci ?? []);
    await handoff
      .prepare(gpus)
      .catch((e) => log.error(`preparing the hand-off GPUs failed: ${(e as Error).message}`));
    gpu = handoff;
  }

  const bus = await connectBus(args.bus);
  const host = new ServiceHost(bus, { log: (level, msg) => log[level](`dbus: ${msg}`) });
  const client = new BusClient(bus, 30_000);
  const input = new InputDaemonClient(client);
  await input.start();
  const usbMover = new DbusUsbMover(client);
  await usbMover.start();
  const manager = new VmManager({
    backend,
    input,
    gpu,
    usb: usbMover,
    afterSwitchStep: switchGateFromEnv(process.env),
    configDir: args.configDir,
    config,
    person,
    state: new StateStore(args.stateDir, log.child('state')),
    log,
  });
  await manager.init();
  new VmManagerDbus(host, manager).export();
  const power = await startPower({ host, client, manager, bus: args.bus, log });
  await host.requestName(BUS_NAMES.vmManager);

  let stopping = false;
  const shutdown = stopOnSignals(async (sig) => {
    stopping = true;
    log.info(
      `${sig}: ${args.stopVmsOnExit ? 'stopping every VM' : 'leaving VMs running (re-adopted at next start)'}`,
    );
    manager.close();
    await power.close().catch(() => undefined);
    try {
      if (args.stopVmsOnExit) await backend.stopAll(10_000);
      else await backend.detachAll();
    } finally {
      await input.close().catch(() => undefined);
      await usbMover.close().catch(() => undefined);
      host.close();
      bus.disconnect();
    }
  });
  bus.on('error', (e: Error) => {
    // While stopping, the bus may go first (the demo's Ctrl+C reaches its private bus too, and a
    // system shutdown stops dbus): expected, and the stop goes on.
    if (stopping) return log.info(`bus connection closed while stopping: ${e?.message}`);
    log.error(`bus connection lost: ${e?.message}`);
    shutdown('bus lost');
  });
  // Said last, once a stop is handled: whoever waits for this line (systemd's journal readers,
  // the tests) may send SIGTERM at once.
  log.info(
    `ready on ${args.bus}: ${manager.vms.size} VM(s) from ${args.configDir}, ${manager.configErrors.length} config error(s), accelerator ${manager.accelerator}`,
  );

  if (args.autostart) await manager.autostart();
}

if (require.main === module) runDaemonMain('vm-daemon', main);
