/**
 * vm-daemon's power component, wired: the policy file, UPower, logind (sleep, PrepareForSleep and
 * the inhibitor locks), the ACPI buttons, the suspend transaction and org.bulkhead.Power1.
 *
 * Inhibitors: a delay lock on 'sleep' while awake, so a sleep somebody else starts waits until
 * the seat is locked and the VMs are paused; a block lock on the keys vm-daemon reads itself
 * (handle-power-key, handle-lid-switch), so logind leaves them to power.json. Taken only when
 * logind is on the bus (never on a test bus without one).
 */
import { formatConfigError } from '../config';
import { InhibitorLock, LogindClient, type BusClient, type ServiceHost } from '@bulkhead/dbus';
import type { Logger } from '@bulkhead/common';
import type { VmManager } from '../vm-manager';
import { AcpiButtons, findButtonDevices, inhibitedKeys } from './acpi-buttons';
import { DEFAULT_POWER_POLICY_FILE, loadPowerPolicy } from './policy';
import { PowerDbus } from './power-dbus';
import { PowerManager } from './power-manager';
import { SuspendTransaction } from './suspend-transaction';
import { UPowerClient } from './upower';
import { ManagerSuspendHost } from './vm-host';

export interface PowerComponent {
  power: PowerManager;
  close(): Promise<void>;
}

export async function startPower(opts: {
  host: ServiceHost;
  client: BusClient;
  manager: VmManager;
  /** 'system' or the private bus address vm-daemon is on (UPower and logind are looked up there). */
  bus: string;
  log: Logger;
  /** The policy file; BULKHEAD_POWER_POLICY, else /etc/bulkhead/power.json. */
  policyFile?: string;
  /** Where the kernel lists input devices (the ACPI buttons); BULKHEAD_SYS_CLASS_INPUT for tests. */
  sysClassInput?: string;
}): Promise<PowerComponent> {
  const log = opts.log.child('power');
  const policyFile = opts.policyFile ?? process.env.BULKHEAD_POWER_POLICY ?? DEFAULT_POWER_POLICY_FILE;
  const loaded = loadPowerPolicy(policyFile);
  if (loaded.error) log.error(`${formatConfigError(loaded.error)} (the default policy is in force)`);

  const upower = new UPowerClient(opts.client, log);
  await upower.start();
  const logind = new LogindClient(opts.client);
  await logind.start();
  const hasLogind = await logind.isPresent();

  const transaction = new SuspendTransaction(new ManagerSuspendHost(opts.manager, opts.client, logind), log);
  const lockSeat = () => new ManagerSuspendHost(opts.manager, opts.client, logind).lockSeat();
  const delayLock = hasLogind
    ? new InhibitorLock({
        what: 'sleep',
        mode: 'delay',
        who: 'Bulkhead vm-daemon',
        why: 'Lock the seat and pause the VMs before sleeping',
        bus: opts.bus,
        log,
      })
    : undefined;
  const power = new PowerManager({
    transaction,
    battery: upower,
    policy: loaded.policy,
    policyFile,
    policyError: loaded.error,
    lockSeat,
    system: { onPrepareForSleep: (fn) => logind.onPrepareForSleep(fn), delayLock },
    log,
  });
  new PowerDbus(opts.host, power).export();

  const devices = findButtonDevices(opts.sysClassInput ?? process.env.BULKHEAD_SYS_CLASS_INPUT);
  const buttons = new AcpiButtons(devices, (which) => void power.key(which), log);
  buttons.start();
  const keys = inhibitedKeys(devices);
  const keyLock =
    hasLogind && keys
      ? new InhibitorLock({
          what: keys,
          mode: 'block',
          who: 'Bulkhead vm-daemon',
          why: 'Bulkhead handles these keys (power.json)',
          bus: opts.bus,
          log,
        })
      : undefined;
  keyLock?.take();
  log.info(
    `policy ${loaded.error ? 'defaults (file invalid)' : policyFile}: lid ${loaded.policy.lid}, power key ${loaded.policy.powerKey}, critical ${loaded.policy.critical}; battery ${upower.battery.present ? `${upower.battery.percentage}%` : 'none'}; logind ${hasLogind ? 'present' : 'absent'}; buttons ${devices.length}`,
  );
  return {
    power,
    async close() {
      buttons.close();
      keyLock?.release();
      delayLock?.release();
      await upower.close();
    },
  };
}
