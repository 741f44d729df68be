#!/usr/bin/env node
/**
 * vm-daemon with the Xen backend, for dom0. main.ts (owned by the core) only wires QEMU so far;
 * this entry point wires XenBackend + XenGpuHandoff the same way until main.ts grows
 * `--backend xen` (then this file can go):
 *
 *   node apps/vm-daemon/dist/backend/xen/main-xen.js [same flags as main.js]
 *
 * Extra environment: BULKHEAD_XEN_DUMP_DIR (default /var/lib/xen/dump).
 */
import { BUS_NAMES } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { BusClient, ServiceHost, connectBus } from '@bulkhead/dbus';
import { VmManagerDbus } from '../../dbus-service';
import { InputDaemonClient } from '../../input-daemon-client';
import { parseArgs } from '../../main';
import { StateStore } from '../../state-store';
import { NoUsbMover } from '../../switch-transaction';
import { VmManager } from '../../vm-manager';
import { loadConfigDir } from '../../config';
import { XenBackend } from './xen-backend';
import { XenGpuHandoff } from './gpu-handoff';
import { ExecXlRunner } from './xl-runner';
import { loadXenOptions } from './xen-options';

async function main(): Promise<void> {
  const log = createLogger('vm-daemon');
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2).filter((a, i, all) => !(a === 'xen' && all[i - 1] === '--backend') && a !== '--backend'), process.env);
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
  const runner = new ExecXlRunner();
  const backend = new XenBackend({ runRoot: args.runDir, runner, log: log.child('xen'), dumpDir: process.env.BULKHEAD_XEN_DUMP_DIR });
  let manager: VmManager | null = null;
  const sharedGpuOf = (id: string): string[] => {
    const def = manager?.vms.get(id)?.def;
    try {
      return def ? loadXenOptions(def).sharedGpu : [];
    } catch {
      return [];
    }
  };
  const gpu = new XenGpuHandoff({ runner, log: log.child('gpu'), sharedGpuOf });
  // Once at boot: every GPU named by a definition goes to pciback so dom0 holds it, assignable.
  const gpus = loadConfigDir(args.configDir).vms.flatMap((v) => {
    let shared: string[] = [];
    try {
      shared = loadXenOptions(v).sharedGpu;
    } catch {
      /* reported when the VM starts */
    }
    return [...(v.gpu?.pci ?? []), ...shared];
  });
  await gpu.prepare(gpus).catch((e) => log.error(`making the GPUs assignable failed: ${(e as Error).message}`));

  const bus = await connectBus(args.bus);
  const host = new ServiceHost(bus, { log: (level, msg) => log[level](`dbus: ${msg}`) });
  const client = new BusClient(bus, 30_000);
  const input = new InputDaemonClient(client);
  await input.start();
  manager = new VmManager({
    backend, input, gpu, usb: new NoUsbMover(), configDir: args.configDir,
    state: new StateStore(args.stateDir, log.child('state')), log,
  });
  await manager.init();
  new VmManagerDbus(host, manager).export();
  await host.requestName(BUS_NAMES.vmManager);
  log.info(`ready on ${args.bus} (xen): ${manager.vms.size} VM(s) from ${args.configDir}, ${manager.configErrors.length} config error(s)`);

  let exiting = false;
  const shutdown = async (sig: string) => {
    if (exiting) return;
    exiting = true;
    log.info(`${sig}: ${args.stopVmsOnExit ? 'stopping every domain' : 'leaving domains running (re-adopted at next start)'}`);
    manager.close();
    try {
      if (args.stopVmsOnExit) await backend.stopAll(10_000);
      else await backend.detachAll();
    } finally {
      await input.close().catch(() => undefined);
      host.close();
      bus.disconnect();
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  bus.on('error', (e: Error) => {
    log.error(`bus connection lost: ${e?.message}`);
    void shutdown('bus lost');
  });
  if (args.autostart) await manager.autostart();
}

if (require.main === module) {
  main().catch((e) => {
    console.error(`vm-daemon (xen): fatal: ${(e as Error).stack ?? e}`);
    process.exit(1);
  });
}
