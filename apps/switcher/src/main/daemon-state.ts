/**
 * The switcher's model of the machine, kept from the three daemons over D-Bus: one mirror per
 * daemon (vm-manager-mirror.ts, input-mirror.ts, usb-mirror.ts), each followed by its bus name
 * through a NameOwnerTracker (name-owner-tracker.ts). This facade composes them into the snapshot
 * the UI gets and carries every mirror's events.
 */
import { BUS_NAMES } from '@bulkhead/contract';
import { TypedEmitter } from '@bulkhead/common';
import type { BusClient } from '@bulkhead/dbus';
import {
  emptySnapshot,
  type DaemonName,
  type DaemonStatus,
  type PromptModel,
  type SwitcherSnapshot,
  type VmModel,
} from '../common/model';
import { InputMirror } from './input-mirror';
import { NameOwnerTracker, type DaemonMirror } from './name-owner-tracker';
import { PowerMirror } from './power-mirror';
import { UsbMirror } from './usb-mirror';
import { VmManagerMirror } from './vm-manager-mirror';

export interface DaemonStateEvents {
  /** Something other than one VM's properties changed: send a new snapshot. */
  changed: [];
  vmPatch: [path: string, patch: Partial<VmModel>];
  daemon: [name: DaemonName, status: DaemonStatus];
  switchProgress: [target: string, step: string, detail: string];
  secureAttention: [];
  prompt: [prompt: PromptModel];
  hotkey: [chord: string, action: string];
  usbRejected: [device: string, reason: string];
}

export class DaemonState extends TypedEmitter<DaemonStateEvents> {
  private daemons: Record<DaemonName, DaemonStatus>;
  private readonly vmManager: VmManagerMirror;
  private readonly input: InputMirror;
  private readonly usb: UsbMirror;
  private readonly power: PowerMirror;
  private readonly trackers: NameOwnerTracker[];

  constructor(
    client: BusClient,
    private readonly opts: { retryMs?: number; log?: (msg: string) => void; injectInput?: boolean } = {},
  ) {
    super();
    this.daemons = emptySnapshot(Date.now()).daemons;
    this.vmManager = new VmManagerMirror(client, this);
    this.input = new InputMirror(client, this);
    this.usb = new UsbMirror(client, this);
    this.power = new PowerMirror(client, this);
    const follow = (d: DaemonName, busName: string, mirror: DaemonMirror) =>
      new NameOwnerTracker(client, d, busName, mirror, {
        onStatus: (up, detail) => this.setStatus(d, up, detail),
        retryMs: opts.retryMs,
        log: opts.log,
      });
    this.trackers = [
      follow('vmManager', BUS_NAMES.vmManager, this.vmManager),
      follow('input', BUS_NAMES.input, this.input),
      follow('usb', BUS_NAMES.usb, this.usb),
      // Power1 lives in vm-daemon: its up/down is the VM manager's status, reported once above.
      new NameOwnerTracker(client, 'power', BUS_NAMES.vmManager, this.power, {
        onStatus: () => this.emit('changed'),
        retryMs: opts.retryMs,
        log: opts.log,
      }),
    ];
  }

  async start(): Promise<void> {
    for (const t of this.trackers) await t.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.trackers.map((t) => t.stopWatching()));
    for (const t of this.trackers) await t.teardown();
  }

  snapshot(): SwitcherSnapshot {
    const vmm = this.vmManager;
    const input = this.input.input;
    return {
      daemons: this.daemons,
      vms: vmm.sortedVms(),
      activeVm: vmm.activeVm,
      switching: vmm.switching,
      lastSwitch: vmm.lastSwitch,
      configErrors: vmm.configErrors,
      accelerator: vmm.accelerator,
      gpuHolder: vmm.gpuHolder,
      input,
      power: this.power.power,
      usbDevices: this.usb.sortedDevices(),
      prompts: this.usb.prompts,
      features: { injectInput: !!this.opts.injectInput && input?.seat === 'virtual' },
    };
  }

  vm(path: string): VmModel | undefined {
    return this.vmManager.vms.get(path);
  }

  /** vm-daemon's `Switching`. */
  get switching(): boolean {
    return this.vmManager.switching;
  }

  isUp(d: DaemonName): boolean {
    return this.daemons[d].up;
  }

  private setStatus(d: DaemonName, up: boolean, detail: string): void {
    const s: DaemonStatus = { up, since: Date.now(), detail };
    this.daemons = { ...this.daemons, [d]: s };
    this.opts.log?.(`${d}: ${up ? 'up' : 'down'}${detail ? ` (${detail})` : ''}`);
    this.emit('daemon', d, s);
    this.emit('changed');
  }
}
