/**
 * The switcher's main-process core, the same under Electron and under the web host: carries out
 * the channel map's requests on the daemons and turns the daemons' state into pushes.
 */
import {
  BUS_NAMES,
  INPUT_PATH,
  POWER_PATH,
  USB_PATH,
  isBulkheadError,
  type VariantDict,
} from '@bulkhead/contract';
import { TypedEmitter } from '@bulkhead/common';
import { BusCallError, variant, type BusClient } from '@bulkhead/dbus';
import {
  ChannelError,
  type MachineOptions,
  type PushChannel,
  type PushMap,
  type RequestArgs,
  type RequestChannel,
  type RequestFailure,
  type RequestResult,
} from '../common/channels';
import { DaemonState } from './daemon-state';

export interface CoreEvents {
  push: [channel: PushChannel, payload: PushMap[PushChannel]];
}

export interface CoreOptions {
  /** Forward the renderer's keyboard/mouse to Input1.InjectEvents (demo; virtual seat only). */
  injectInput: boolean;
  /** How the renderer reaches a VM's VNC display; '' when there is none. */
  vncUrl: (vmPath: string) => string;
  thumbnailIntervalMs?: number;
  /** An unchanged screen is pushed again after this long (default THUMB_REFRESH_MS). */
  thumbnailRefreshMs?: number;
  log?: (msg: string) => void;
}

type Handlers = {
  [C in RequestChannel]: (args: RequestArgs<C>, client: string) => Promise<RequestResult<C>>;
};

/** Long enough for a switch that has to boot the VM first (TCG is slow). */
const SWITCH_TIMEOUT_MS = 180_000;

/**
 * How long thumbnails wait after a hotkey, a switch request or the tiles coming back on screen.
 * A round is two Screenshot calls (vm-daemon, each VM's QEMU encoding a PNG) and a push the
 * renderer decodes: on the Control Domain's two CPUs that competed with the switch and with the
 * frame that shows its result (issue 17: hotkey to picture). No round runs while a switch does.
 */
const THUMB_QUIET_MS = 1500;

/**
 * An unchanged screen is pushed again after this long. A push can be lost on the way: the
 * renderer ignores a thumbnail of a VM its own model does not show running yet (its first
 * snapshot still on the way when the first round ran), and a guest's static painting never changes
 * again, so without this its tile kept "Waiting for the screen…" (seen on the Xen entry,
 * 2026-12-01). One decode per VM every 10 s costs little.
 */
const THUMB_REFRESH_MS = 10_000;
/**
 * A screen that came back the same THUMB_STILL_AFTER rounds in a row is captured only every
 * THUMB_STILL_EVERY rounds until it changes: each capture costs the VM's device model a PNG encode
 * of its whole screen and vm-daemon a file read, whether or not anything changed. In the test image
 * with the tiles shown and both toy guests' screens still, their two QEMUs took 10-12 % of a CPU
 * each and vm-daemon 6 % (`top`, 2026-12-02), against 0.2 % each with a VM's view shown: CPU the
 * next switch's frames and a laptop's battery want. A changed screen is seen within
 * THUMB_STILL_EVERY rounds (4 s at the default 1 s), and every VM is captured again in the first
 * round after the tiles come back on screen (the backoff is forgotten with the last thumbnails).
 */
const THUMB_STILL_AFTER = 3;
const THUMB_STILL_EVERY = 4;
/** How long one thumbnail's Vm1.Screenshot may take (see takeThumbnails). */
const SCREENSHOT_TIMEOUT_MS = 20_000;

export class SwitcherCore extends TypedEmitter<CoreEvents> {
  readonly state: DaemonState;
  private snapshotTimer: NodeJS.Timeout | undefined;
  private thumbTimer: NodeJS.Timeout | undefined;
  private thumbBusy = false;
  private readonly thumbViewers = new Set<string>();
  /**
   * The last thumbnail pushed per VM (base64 PNG). An unchanged screen is not pushed again: each
   * push makes every viewing renderer decode an image and repaint its tile, and the Control
   * Domain draws in software — once a second, for nothing, on top of whatever a switch must draw.
   */
  private readonly lastThumb = new Map<
    string,
    {
      png: string;
      /** When it was last pushed. */
      at: number;
      /** Rounds in a row it came back the same, and the round it was last captured in. */
      still: number;
      round: number;
    }
  >();
  /** Thumbnail rounds run so far (the backoff of still screens counts in rounds). */
  private thumbRound = 0;
  /** Renderers that have looked at thumbnails before (their store still has them). */
  private readonly knownViewers = new Set<string>();
  /** No thumbnail round before this time (Date.now()): see THUMB_QUIET_MS. */
  private quietUntil = 0;

  constructor(
    private readonly client: BusClient,
    private readonly opts: CoreOptions,
  ) {
    super();
    this.state = new DaemonState(client, { log: opts.log, injectInput: opts.injectInput });
    this.state.on('changed', () => this.scheduleSnapshot());
    this.state.on('vmPatch', (path, patch) => this.push('vmPatch', { path, patch }));
    this.state.on('daemon', (name, status) => this.push('daemon', { name, status }));
    this.state.on('switchProgress', (target, step, detail) =>
      this.push('switchProgress', { target, step, detail, at: Date.now() }),
    );
    this.state.on('secureAttention', () => this.push('secureAttention', { at: Date.now() }));
    this.state.on('prompt', (p) => this.push('prompt', p));
    this.state.on('hotkey', (chord, action) => {
      this.push('hotkey', { chord, action });
      this.quiet();
    });
    this.state.on('usbRejected', (device, reason) => this.push('usbRejected', { device, reason }));
  }

  async start(): Promise<void> {
    await this.state.start();
    this.thumbTimer = setInterval(() => void this.takeThumbnails(), this.opts.thumbnailIntervalMs ?? 1000);
  }

  async stop(): Promise<void> {
    clearInterval(this.thumbTimer);
    clearTimeout(this.snapshotTimer);
    await this.state.stop();
  }

  /** A renderer went away: it no longer looks at thumbnails. */
  forgetClient(client: string): void {
    this.thumbViewers.delete(client);
    this.knownViewers.delete(client);
  }

  private quiet(): void {
    this.quietUntil = Date.now() + THUMB_QUIET_MS;
  }

  private push<C extends PushChannel>(channel: C, payload: PushMap[C]): void {
    this.emit('push', channel, payload);
  }

  private scheduleSnapshot(): void {
    if (this.snapshotTimer) return;
    // Coalesce bursts (an ObjectManager listing, a switch's property changes) into one push.
    this.snapshotTimer = setTimeout(() => {
      this.snapshotTimer = undefined;
      this.push('snapshot', this.state.snapshot());
    }, 20);
  }

  private async takeThumbnails(): Promise<void> {
    // Renderers drop the thumbnails of VMs that are not running, and all of them while vm-daemon is
    // down (pruneThumbnails): forget what they were sent, or a VM back with the same screen would
    // never get its thumbnail again.
    if (!this.state.isUp('vmManager')) this.lastThumb.clear();
    for (const path of this.lastThumb.keys())
      if (this.state.vm(path)?.state !== 'running') this.lastThumb.delete(path);
    if (this.thumbBusy || this.thumbViewers.size === 0 || !this.state.isUp('vmManager')) return;
    // A switch, or a picture that must reach the screen first: this round is skipped.
    if (this.state.switching || Date.now() < this.quietUntil) return;
    this.thumbBusy = true;
    const round = ++this.thumbRound;
    try {
      for (const vm of this.state.snapshot().vms) {
        // A VM without a screen (Vm1.Display none: console only) has nothing to capture: asking
        // would only cost a call to its device model every round and fail the same way each time.
        // A VM with a passed-through GPU draws on that card, which the device model's screen is
        // not: its capture would be a blank or stale emulated screen, so none is taken either.
        if (vm.state !== 'running' || vm.display === 'none' || vm.hasGpu) {
          this.lastThumb.delete(vm.path);
          continue;
        }
        const before = this.lastThumb.get(vm.path);
        if (before && before.still >= THUMB_STILL_AFTER && round - before.round < THUMB_STILL_EVERY) continue;
        try {
          // 20 s: on a Xen dom0 under TCG a screenshot (QEMU's PPM, encoded to PNG by vm-daemon)
          // took over 5 s while the guests booted, and a call given up on is work thrown away:
          // vm-daemon finishes it anyway and the next round asks again, so no thumbnail ever came
          // (xen-entry.e2e, "no reply within 5000 ms" each round). Rounds never overlap.
          const png = (await this.client
            .proxy(BUS_NAMES.vmManager, vm.path, 'org.bulkhead.Vm1', { timeoutMs: SCREENSHOT_TIMEOUT_MS })
            .Screenshot({})) as unknown as Buffer;
          if (!png?.length) continue;
          const b64 = Buffer.from(png).toString('base64');
          const last = this.lastThumb.get(vm.path);
          const refreshMs = this.opts.thumbnailRefreshMs ?? THUMB_REFRESH_MS;
          const still = last?.png === b64 ? last.still + 1 : 0;
          if (last?.png === b64 && Date.now() - last.at < refreshMs) {
            this.lastThumb.set(vm.path, { ...last, still, round });
            continue;
          }
          this.lastThumb.set(vm.path, { png: b64, at: Date.now(), still, round });
          this.push('thumbnail', { vm: vm.path, png: b64, at: Date.now() });
        } catch (e) {
          this.opts.log?.(`screenshot of ${vm.id}: ${(e as Error).message}`);
        }
      }
    } finally {
      this.thumbBusy = false;
    }
  }

  private readonly handlers: Handlers = {
    getSnapshot: async () => this.state.snapshot(),
    switchTo: async ({ vm }) => {
      this.requireUp('vmManager');
      this.quiet();
      await this.vmManager(SWITCH_TIMEOUT_MS).Switch(vm, {});
      return null;
    },
    startVm: async ({ vm }) => {
      this.requireUp('vmManager');
      await this.client
        .proxy(BUS_NAMES.vmManager, vm, 'org.bulkhead.Vm1', { timeoutMs: SWITCH_TIMEOUT_MS })
        .Start({});
      return null;
    },
    stopVm: async ({ vm }) => {
      this.requireUp('vmManager');
      await this.client.proxy(BUS_NAMES.vmManager, vm, 'org.bulkhead.Vm1', { timeoutMs: 60_000 }).Stop({});
      return null;
    },
    assignUsb: async ({ device, vm }) => {
      this.requireUp('usb');
      await this.usbDevice(device).Assign(vm, {});
      return null;
    },
    releaseUsb: async ({ device }) => {
      this.requireUp('usb');
      await this.usbDevice(device).Release();
      return null;
    },
    setSticky: async ({ device, sticky }) => {
      this.requireUp('usb');
      await this.usbDevice(device).SetSticky(sticky);
      return null;
    },
    setFollowFocus: async ({ device, follow }) => {
      this.requireUp('usb');
      await this.usbDevice(device).SetFollowFocus(follow);
      return null;
    },
    answerPrompt: async ({ promptId, answer }) => {
      this.requireUp('usb');
      await this.client.proxy(BUS_NAMES.usb, USB_PATH, 'org.bulkhead.Usb1').AnswerPrompt(promptId, answer);
      return null;
    },
    lock: async () => {
      this.requireUp('input');
      await this.input().Lock();
      return null;
    },
    suspend: async () => {
      this.requireUp('vmManager');
      // Power1.Suspend answers only after the machine woke again (or failed): not something to
      // wait for here. The steps, and any failure with the VMs left running, reach the person
      // through Power1's Suspending, SuspendProgress and LastSuspend (the suspend card).
      void this.client
        .proxy(BUS_NAMES.vmManager, POWER_PATH, 'org.bulkhead.Power1', { timeoutMs: 24 * 3600_000 })
        .Suspend({})
        .catch(() => undefined);
      return null;
    },
    unlock: async ({ password }) => {
      this.requireUp('input');
      // Handed straight to input-daemon, which decides; the switcher keeps and logs nothing of it.
      await this.input().Unlock({ password: variant('s', password) });
      return null;
    },
    injectInput: async ({ deviceClass, events }) => {
      if (!this.state.snapshot().features.injectInput)
        throw new ChannelError('NotSupported', 'input forwarding is only available on a virtual seat (demo)');
      await this.input().InjectEvents(deviceClass, events);
      return null;
    },
    setThumbnailsVisible: async ({ visible }, client) => {
      if (!visible) {
        this.thumbViewers.delete(client);
        return null;
      }
      this.thumbViewers.add(client);
      // A viewer that starts looking gets every VM's screen in the next round, changed or not.
      this.lastThumb.clear();
      if (this.knownViewers.has(client)) {
        // The tiles came back (Ctrl+0): the renderer still has the screens it was sent, and the
        // tiles' first frame goes first; the next round after the quiet time refreshes them.
        this.quiet();
      } else {
        this.knownViewers.add(client);
        void this.takeThumbnails();
      }
      return null;
    },
    vncUrl: async ({ vm }) => ({ url: this.opts.vncUrl(vm) }),
    reportView: async (t) => {
      // One line per change of the view on screen, with absolute times to set beside the
      // daemons' journal lines (input-daemon's hotkey, vm-daemon's switch).
      this.opts.log?.(
        `view ${t.view} shown: push '${t.channel}' at ${new Date(t.pushAt).toISOString()}, DOM +${t.domAt - t.pushAt} ms, second frame +${t.frameAt - t.pushAt} ms`,
      );
      return null;
    },
    createVm: async ({ name, options }) => {
      this.requireUp('vmManager');
      // Creating the disk (qemu-img) can take a few seconds on a loaded machine.
      const vm = await this.vmManager(60_000).CreateVm(name, machineOptionsDict(options));
      return { vm };
    },
    updateVm: async ({ vm, options }) => {
      this.requireUp('vmManager');
      await this.client
        .proxy(BUS_NAMES.vmManager, vm, 'org.bulkhead.Vm1')
        .Update(machineOptionsDict(options));
      return null;
    },
    deleteVm: async ({ vm, removeDisks }) => {
      this.requireUp('vmManager');
      await this.client
        .proxy(BUS_NAMES.vmManager, vm, 'org.bulkhead.Vm1', { timeoutMs: 60_000 })
        .Delete({ remove_disks: variant('b', removeDisks) });
      return null;
    },
    ejectVm: async ({ vm }) => {
      this.requireUp('vmManager');
      await this.client.proxy(BUS_NAMES.vmManager, vm, 'org.bulkhead.Vm1').Eject();
      return null;
    },
    cancelDiskJob: async ({ vm }) => {
      this.requireUp('vmManager');
      await this.client.proxy(BUS_NAMES.vmManager, vm, 'org.bulkhead.Vm1').CancelDiskJob();
      return null;
    },
  };

  /**
   * Carry out one (already validated) request from renderer `client`. Failures come back as the
   * daemon's named error (short name + message), never as a stack trace.
   */
  async handle<C extends RequestChannel>(
    channel: C,
    args: RequestArgs<C>,
    client = 'main',
  ): Promise<RequestResult<C>> {
    const h = this.handlers[channel] as (a: RequestArgs<C>, c: string) => Promise<RequestResult<C>>;
    return h(args, client);
  }

  private requireUp(d: 'vmManager' | 'input' | 'usb'): void {
    if (!this.state.isUp(d)) {
      const what = { vmManager: 'The VM manager', input: 'The input service', usb: 'The USB service' }[d];
      throw new ChannelError('ServiceDown', `${what} is not running`);
    }
  }

  private vmManager(timeoutMs?: number) {
    return this.client.proxy(BUS_NAMES.vmManager, '/org/bulkhead/VmManager1', 'org.bulkhead.VmManager1', {
      timeoutMs,
    });
  }
  private input() {
    return this.client.proxy(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1');
  }
  private usbDevice(path: string) {
    return this.client.proxy(BUS_NAMES.usb, path, 'org.bulkhead.UsbDevice1');
  }
}

/** The dialog's options as CreateVm/Update's a{sv} (vm-daemon's option names and D-Bus types). */
export function machineOptionsDict(o: MachineOptions): VariantDict {
  const d: VariantDict = {};
  const put = (key: string, sig: string, v: unknown) => {
    if (v !== undefined) d[key] = variant(sig, v);
  };
  put('name', 's', o.name);
  put('slot', 'u', o.slot);
  put('color', 's', o.color);
  put('memory_mib', 'u', o.memoryMiB);
  put('vcpus', 'u', o.vcpus);
  put('network', 's', o.network);
  put('usb_auto_attach', 'b', o.usbAutoAttach);
  put('disk_size_mib', 'u', o.diskSizeMiB);
  put('disk_format', 's', o.diskFormat);
  put('disk_import', 's', o.diskImport);
  put('cdrom', 's', o.cdrom);
  return d;
}

/** What a renderer is told when a request fails. */
export function toFailure(e: unknown): RequestFailure {
  if (isBulkheadError(e)) return { name: e.errorName, message: e.message };
  if (e instanceof ChannelError) return { name: e.errorName, message: e.message };
  if (e instanceof BusCallError) {
    if (/ServiceUnknown|NameHasNoOwner|NoReply|Disconnected/.test(e.dbusName))
      return { name: 'ServiceDown', message: e.message };
    return { name: e.dbusName.split('.').pop() ?? 'Failed', message: e.message };
  }
  const msg = (e as Error)?.message ?? String(e);
  if (/no reply within/.test(msg)) return { name: 'Timeout', message: msg };
  return { name: 'Failed', message: msg };
}
