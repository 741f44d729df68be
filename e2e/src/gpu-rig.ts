/**
 * Issue 16's image e2e, what both rigs share (gpu-xen.e2e.ts: the one GPU shared by dom0 and the
 * VMs; gpu-xen-two.e2e.ts: dom0 keeps its own display, a second GPU moves between VMs): pictures
 * from the outer QEMU's screendumps of one display, the judges of those pictures, and what vm-daemon
 * says about the GPU (GpuHolder, LastSwitch's gpu sub-steps), read in the image's root shell.
 */
import { mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { ImageMachine, type ImageVm } from './image-machine';
import { classify, colorShare, parseHexColor, type Picture, type Rgb } from './screen-picture';
import { waitFor } from './wait';

export const VM = (id: string): string => `/org/bulkhead/VmManager1/vm/${id}`;
export const MGR = [
  'org.bulkhead.VmManager1',
  '/org/bulkhead/VmManager1',
  'org.bulkhead.VmManager1',
] as const;

/** One display of the outer machine, read by screendump alone (nothing attached to the kiosk). */
export class Screen {
  private readonly ppm: string;

  /** `device`: the display's qdev id (none: the machine's first display); `name` makes the scratch file's name. */
  constructor(
    private readonly m: ImageMachine,
    artifactsDir: string,
    readonly device?: string,
    name = device ?? 'screen',
  ) {
    this.ppm = join(artifactsDir, `${name}.ppm`);
  }

  picture(): Promise<Picture> {
    return this.m.screenPicture(this.ppm, this.device);
  }

  /**
   * Polls this display from `t0` (every 200 ms) until `want` says yes, keeps that picture as
   * `<file>.png`; the ms from t0 to that screendump.
   */
  async after(
    t0: number,
    what: string,
    want: (p: Picture) => { yes: boolean; why: string },
    boundMs: number,
    file: string,
  ): Promise<number> {
    let last = 'no screendump yet';
    const at = await waitFor(
      what,
      async () => {
        const p = await this.picture();
        const now = Date.now();
        const r = want(p);
        last = r.why;
        return r.yes && now;
      },
      boundMs,
      200,
    ).catch((e: Error) => {
      throw new Error(`${e.message}; last seen: ${last}`);
    });
    unlinkSync(this.ppm);
    await this.m.screendump(file, this.device);
    return at - t0;
  }
}

/**
 * The guest's own painting fills its whole framebuffer with its colour (its name drawn in the
 * middle): both top corners and most of the screen are the colour. The kiosk's VM view of the same
 * guest has the switcher's bar on top.
 */
export function guestOwnPainting(p: Picture, color: Rgb): { yes: boolean; why: string } {
  const whole = colorShare(p, color, { x0: 0, x1: 1, y0: 0, y1: 1 });
  const tl = colorShare(p, color, { x0: 0, x1: 0.06, y0: 0, y1: 0.06 });
  const tr = colorShare(p, color, { x0: 0.94, x1: 1, y0: 0, y1: 0.06 });
  return {
    yes: whole >= 0.85 && tl >= 0.95 && tr >= 0.95,
    why: `${p.width}x${p.height}, colour on ${(whole * 100).toFixed(0)}% of the screen, corners ${(tl * 100).toFixed(0)}% / ${(tr * 100).toFixed(0)}%`,
  };
}

/** The switcher's tiles, as `classify` sees them among the image's VMs. */
export const tilesOf =
  (vms: ImageVm[]) =>
  (p: Picture): { yes: boolean; why: string } => {
    const seen = classify(p, vms);
    return { yes: seen.kind === 'tiles', why: seen.kind === 'other' ? seen.why : seen.kind };
  };

export async function gpuHolder(m: ImageMachine): Promise<string> {
  return (await m.busProperty(...MGR, 'GpuHolder')).replace(/^o "|"$/g, '');
}

/** LastSwitch's outcome and step names (busctl's JSON), for the GPU's sub-steps. */
export async function lastSwitch(
  m: ImageMachine,
): Promise<{ outcome: string; target: string; steps: Array<[string, number]> }> {
  const out = await m.serial.check(`busctl --json=short get-property ${MGR.join(' ')} LastSwitch`);
  const json = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1)) as {
    data: Record<string, { data: unknown }>;
  };
  return {
    outcome: String(json.data.outcome?.data),
    target: String(json.data.target?.data),
    steps: (json.data.steps?.data ?? []) as Array<[string, number]>,
  };
}

export const stepNames = (s: Array<[string, number]>): string[] => s.map(([n]) => n);
export const printSteps = (s: Array<[string, number]>): string =>
  s.map(([n, us]) => `${n} ${(us / 1000).toFixed(0)} ms`).join(', ');

/** dom0's display (the kiosk's stop and start): no bare counterpart, and none in the second-GPU rig. */
export const DISPLAY_STEP = /^gpu-(release|reclaim)-display:/;

/** A guest's console lines (xenconsoled's log) starting with `word`, stamps left out. */
export async function consoleLines(m: ImageMachine, id: string, word: string): Promise<string[]> {
  return (await m.serial.check(`grep -a '${word}' /var/log/xen/console/guest-${id}.log || true`))
    .split('\n')
    .map((l) => l.replace(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] /, '').trim())
    .filter((l) => l.startsWith(word));
}

/** The driver bound to a PCI function in dom0 ('' for none). */
export async function pciDriver(m: ImageMachine, bdf: string): Promise<string> {
  return (
    await m.serial.check(`basename "$(readlink /sys/bus/pci/devices/${bdf}/driver)" 2>/dev/null || true`)
  ).trim();
}

/** Writes `text` to `path` in the image (through the root shell, base64 so nothing is quoted). */
export async function putFile(m: ImageMachine, path: string, text: string): Promise<void> {
  await m.serial.check(`echo ${Buffer.from(text).toString('base64')} | base64 -d > ${path}`);
}

/** Waits until the Xen guest `id` runs and its newest console log says READY (a fresh domain's). */
export async function xenGuestReady(m: ImageMachine, id: string, boundMs: number): Promise<void> {
  await waitFor(
    `${id} running, READY on its domain`,
    async () =>
      (await m.vmState(id)) === 'running' &&
      (
        await m.serial.check(
          `grep -a -e 'Logfile Opened' -e 'BULKHEAD-LINUX-GUEST READY' /var/log/xen/console/guest-${id}.log | tail -n 1 || true`,
        )
      ).includes('READY'),
    boundMs,
    3000,
  );
}

const repo = join(__dirname, '..', '..');

/**
 * The lock screen's Unlock button is the switcher's accent colour (button.primary), read from its
 * stylesheet as power-xen.e2e does: the screen is judged from screendumps alone.
 */
export const ACCENT: Rgb = parseHexColor(
  /--accent:\s*(#[0-9a-f]{6})/i.exec(
    readFileSync(join(repo, 'apps', 'switcher', 'src', 'renderer', 'styles.css'), 'utf8'),
  )?.[1] ?? 'no --accent in styles.css',
);

/**
 * The second PV guest for VM -> VM, made at run time from personal's file (business is an HVM
 * domain whose Linux test guest has no display behind pcifront): the same kernel, its own name,
 * colour and slot.
 */
export const WORK = { id: 'work', name: 'Work', slot: 3, hex: 'd9822b' } as const;
export const workColor: Rgb = parseHexColor(`#${WORK.hex}`);

/**
 * Makes `work` (WORK) with the GPU `bdf` in its gpu.pci and starts it: vm-daemon watches its config
 * dir, so the new file is a new VM, started over the bus. Its Xen sidecar (a PV domain with the test
 * guest's initramfs) is personal's, written first. Returns once work runs and said READY.
 */
export async function startWorkGuest(m: ImageMachine, bdf: string, why: string): Promise<void> {
  const file = JSON.parse(
    readFileSync(join(repo, 'dom0-rootfs', 'vms', 'personal-xen.json'), 'utf8'),
  ) as Record<string, unknown>;
  file.$comment = why;
  Object.assign(file, {
    id: WORK.id,
    name: WORK.name,
    slot: WORK.slot,
    color: `#${WORK.hex}`,
    autostart: false,
    gpu: { pci: [bdf], handoff: true },
    append: `console=hvc0 quiet bulkhead.name=${WORK.name} bulkhead.color=${WORK.hex}`,
  });
  await m.serial.check('cp /etc/bulkhead/vms/personal-xen.xen /etc/bulkhead/vms/work-xen.xen');
  await putFile(m, '/etc/bulkhead/vms/work-xen.json', JSON.stringify(file, null, 2));
  await waitFor(
    'work known to vm-daemon',
    async () => (await m.vmState(WORK.id).catch(() => '')) === 'stopped',
    120_000,
    2000,
  );
  // busctl's own bound on a call is 25 s: `xl create` of a PV guest took 22.9 s while business's
  // HVM guest was restarting (the lead's run at 06:44), and the call failed with "Connection timed out".
  await m.serial.check(
    `busctl --timeout=240 call org.bulkhead.VmManager1 ${VM(WORK.id)} org.bulkhead.Vm1 Start a{sv} 0`,
    { timeoutMs: 250_000 },
  );
  await waitFor(
    'work running, READY',
    async () =>
      (await m.vmState(WORK.id)) === 'running' &&
      (
        await m.serial.check(
          `grep -a -c 'BULKHEAD-LINUX-GUEST READY' /var/log/xen/console/guest-${WORK.id}.log || true`,
        )
      ).trim() !== '0',
    600_000,
    3000,
  );
}

/**
 * Gives personal the GPU `bdf` at run time (its VM file's gpu.pci), on a fresh domain: vm-daemon is
 * stopped (its domains run on: KillMode=process), personal's domain destroyed, `beforeStart` run
 * (e.g. a drop-in for vm-daemon), vm-daemon started; its autostart makes personal's new domain,
 * with passthrough enabled (libxl needs it at create for hot-plug). Under TCG, next to the kiosk
 * and two guests, the stop alone can take a minute.
 */
export async function givePersonalTheGpu(
  m: ImageMachine,
  bdf: string,
  why: string,
  beforeStart: () => Promise<void> = async () => undefined,
): Promise<void> {
  await m.serial.check('systemctl stop bulkhead-vm-daemon && xl destroy personal', { timeoutMs: 240_000 });
  await beforeStart();
  const file = JSON.parse(
    readFileSync(join(repo, 'dom0-rootfs', 'vms', 'personal-xen.json'), 'utf8'),
  ) as Record<string, unknown>;
  file.$comment = why;
  file.gpu = { pci: [bdf], handoff: true };
  await putFile(m, '/etc/bulkhead/vms/personal-xen.json', JSON.stringify(file, null, 2));
  await m.serial.check('systemctl daemon-reload && systemctl start bulkhead-vm-daemon');
  await xenGuestReady(m, 'personal', 600_000);
}

/**
 * The running vm-daemon's own environment's GPU lines (not systemctl show: PID 1, busy after a
 * reload and restart under TCG, kept that from answering within 60 s once).
 */
export async function vmDaemonGpuEnv(m: ImageMachine): Promise<string> {
  return m.serial.check(
    "tr '\\0' '\\n' < /proc/$(pgrep -o -f vm-daemon/dist/main.js)/environ | grep GPU || true",
    {
      timeoutMs: 120_000,
    },
  );
}

/**
 * The Xen entry booted for issue 16's rigs: the outer machine's emulated VT-d (`iommu`, before
 * every PCI device) and `display` as its first display (dom0's), `extraQemuArgs` for more (the
 * second GPU). 3.5 GiB (not the usual 3): dom0 keeps 2 GiB, and a third 320 MiB guest (work, for
 * VM -> VM) does not fit beside personal and business in the 1 GiB Xen has left of 3.
 */
export async function bootGpuRig(opts: {
  imageDir: string;
  artifactsDir: string;
  display: string;
  extraQemuArgs?: string[];
}): Promise<ImageMachine> {
  mkdirSync(opts.artifactsDir, { recursive: true });
  const m = new ImageMachine({ ...opts, entry: 'xen', iommu: true, memoryMiB: 3584 });
  await m.boot();
  return m;
}

/**
 * The after() hook's artifacts and, in the run's own output (CI keeps no artifacts), what
 * vm-daemon's GPU hand-off logged and `more` (a label and a command) said.
 */
export async function reportGpuRig(
  m: ImageMachine,
  tag: string,
  more: Array<[string, string]>,
): Promise<void> {
  if (!m?.serial) return;
  await m.saveXenState();
  const gpu = await m.outputOf(
    'journalctl -b --no-pager -o cat -u bulkhead-vm-daemon | grep -a -i -E "gpu|pci|kiosk" | tail -n 40 | cut -c1-220',
  );
  console.log(`${tag}: vm-daemon's GPU lines:\n${gpu}`);
  for (const [label, cmd] of more) console.log(`${tag}: ${label}:\n${await m.outputOf(cmd)}`);
}
