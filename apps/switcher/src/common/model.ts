/**
 * The switcher's view of the machine, as the main process builds it from the three daemons and
 * sends it to the renderer. Plain JSON (no Buffers, no bigints) so it crosses IPC and WebSocket
 * unchanged.
 */

import type { LastSwitchOutcome, UsbDevice1View, Vm1View } from '@bulkhead/contract';

export type DaemonName = 'vmManager' | 'input' | 'usb';
export const DAEMON_NAMES: readonly DaemonName[] = ['vmManager', 'input', 'usb'];

export const DAEMON_LABELS: Record<DaemonName, string> = {
  vmManager: 'VM manager',
  input: 'Input service',
  usb: 'USB service',
};

export interface DaemonStatus {
  up: boolean;
  /** Wall clock (ms) of the last change. */
  since: number;
  /** Why it is down or degraded, in words; empty when fine. */
  detail: string;
}

/**
 * A VM as the switcher shows it: its object path and every org.bulkhead.Vm1 property, by the view
 * generated from the contract XML (so a property added there reaches the switcher, and a misspelled
 * field or state fails tsc).
 */
export interface VmModel extends Vm1View {
  path: string;
}

/** A USB device as the switcher shows it: its object path and every org.bulkhead.UsbDevice1 property. */
export interface UsbDeviceModel extends UsbDevice1View {
  path: string;
}

export interface PromptModel {
  id: number;
  device: string;
  vm: string;
}

export interface LastSwitchModel {
  from: string;
  target: string;
  outcome: LastSwitchOutcome;
  error: string;
  startedMs: number;
  durationMs: number;
  /** (step, milliseconds) */
  steps: Array<[string, number]>;
}

export interface ConfigErrorModel {
  file: string;
  field: string;
  reason: string;
}

export interface InputModel {
  focusedTarget: string;
  locked: boolean;
  frozen: boolean;
  seat: string;
  hotkeys: Array<[string, string]>;
  lastHotkeyError: string;
}

export interface BatteryModel {
  present: boolean;
  percentage: number;
  state: string;
  timeToEmptySec: number;
  onBattery: boolean;
  /** By the power policy's thresholds, while on battery. */
  level: 'normal' | 'low' | 'critical';
}

export interface SuspendReportModel {
  reason: string;
  /** ok | failed | incomplete */
  outcome: string;
  error: string;
  startedMs: number;
  /** (step, result ok | failed | running, detail) */
  steps: Array<[string, string, string]>;
  /** VMs that did not come back after waking: (id, why). */
  notBack: Array<[string, string]>;
}

export interface PowerModel {
  battery: BatteryModel;
  suspending: boolean;
  /** The step of the suspend running now (SuspendProgress), null when none runs. */
  progress: { step: string; detail: string } | null;
  lastSuspend: SuspendReportModel | null;
}

export interface SwitcherSnapshot {
  daemons: Record<DaemonName, DaemonStatus>;
  vms: VmModel[];
  activeVm: string;
  switching: boolean;
  lastSwitch: LastSwitchModel | null;
  configErrors: ConfigErrorModel[];
  accelerator: string;
  /** VmManager1.GpuHolder: the VM holding the GPU that moves between VMs, or '/' (dom0 or nobody). */
  gpuHolder: string;
  /** null while the input daemon is down. */
  input: InputModel | null;
  /** vm-daemon's power component (Power1); null while it is not reachable. */
  power: PowerModel | null;
  usbDevices: UsbDeviceModel[];
  prompts: PromptModel[];
  /** What this host allows: forwarding keyboard/mouse to Input1.InjectEvents (demo, virtual seat). */
  features: { injectInput: boolean };
}

export function emptySnapshot(now = 0): SwitcherSnapshot {
  const down = (): DaemonStatus => ({ up: false, since: now, detail: 'not connected yet' });
  return {
    daemons: { vmManager: down(), input: down(), usb: down() },
    vms: [],
    activeVm: '/',
    switching: false,
    lastSwitch: null,
    configErrors: [],
    accelerator: '',
    gpuHolder: '/',
    input: null,
    power: null,
    usbDevices: [],
    prompts: [],
    features: { injectInput: false },
  };
}

/** "Ctrl+3" for slot 3; the switcher itself is Ctrl+0. */
export const hotkeyForSlot = (slot: number): string => `Ctrl+${slot}`;
