/**
 * Issue 16's rig on the image's "Bulkhead (Xen)" entry: the outer QEMU's display device is the
 * machine's ONLY GPU, shared by dom0's kiosk and a VM (vm-daemon's `--gpu-shared-with-dom0 true`,
 * docs/gpu-handoff.md). The outer machine has an emulated VT-d (`intel-iommu,intremap=on`, as
 * xen-harness/ has), so Xen can pass the device through to a guest.
 *
 * The display device is the Xen entry's own, `virtio-vga,iommu_platform=on` (image-machine.ts says
 * why PV dom0 needs iommu_platform), at a fixed address (00:05.0, as xen-harness's): dom0's
 * virtio-gpu draws the kiosk on it, and the Linux test guest's virtio-gpu behind xen-pcifront
 * paints it in the guest's colour. xen-harness's `bochs-display` was tried first (2026-12-01, this
 * file's first run): Xen had its IOMMU on and dom0 bound bochs-drm, but cage never started on it:
 * "[backend/drm/drm.c:52] PRIME import not supported", then "Failed to create DRM backend",
 * restarted by systemd 150 times in 10 minutes: Debian 12's wlroots needs PRIME import, which
 * Linux 6.1's bochs-drm (GEM VRAM) does not offer. A laptop's GPU driver (i915, amdgpu) has it.
 *
 * The image loads xen-pciback on the Xen entry (bulkhead-vm-daemon's drop-in xen.conf); the rest
 * the test configures at run time through the root shell (a drop-in with
 * `BULKHEAD_GPU_SHARED_WITH_DOM0=true` for bulkhead-vm-daemon, personal's VM file with `gpu.pci`
 * naming the device's BDF as dom0 sees it), then restarts vm-daemon.
 *
 * In order: the tiles at boot; Ctrl+1 -> personal's own painting; Ctrl+0 -> the tiles; rounds;
 * the secure-attention chord while personal holds the GPU -> the lock screen on the display (the
 * Unlock button's colour, as power-xen.e2e judges it), the password at the outer keyboard -> the
 * tiles, Ctrl+1 -> personal again; the bare sequence (xl pci-detach / assignable-remove /
 * assignable-add / pci-attach and the sysfs reset, timed in the image's root shell with vm-daemon
 * SIGSTOPped so its holder watch does not react) beside the hand-offs' move-gpu and its
 * LastSwitch sub-steps, per direction; VM -> VM between personal and a second PV guest made at
 * run time from personal's file (`work`, slot 3: business is HVM, its test guest has no display
 * behind pcifront), with no kiosk step in between; `xl destroy personal` -> the tiles.
 * Hotkey -> picture, the lock's chord -> lock screen, and the bare sequence against move-gpu go to
 * bench-results.json (`e2e/gpu-xen/hotkey-to-picture`, `e2e/gpu-xen/bare-sequence`).
 * 2026-12-02 03:13 (ROUNDS=1): 8 of 9 passed, 1 skipped, 887 s with the boot; the chord -> the lock
 * screen 76.5 s; hotkey -> picture p50 dom0 -> VM 9.1 s, VM -> VM 6.6 s, VM -> dom0 69.0 s; move-gpu
 * over the bare sequence (p50s) 5.0x, 2.3x, 4.0x, VM -> VM's xl sub-steps 1.065x
 * (docs/gpu-handoff.md, "In the image"). 2026-12-02 06:44 (ROUNDS=1, today's tree with settled() and
 * checkQueued, this file on gpu-rig.ts): 8 of 9 passed, 1 skipped, 722 s; p50 dom0 -> VM 5.9 s,
 * VM -> VM 4.2 s, VM -> dom0 50.2 s, the chord -> the lock screen 63.7 s; move-gpu over bare 5.7x,
 * 2.1x, 3.9x, VM -> VM's xl sub-steps 1.38x.
 *
 * Every picture is proven by screendumps of the outer QEMU only: nothing is attached to the kiosk
 * (DevTools would make it paint). A guest's own painting is told from the kiosk's VM view of the
 * same guest (which the page shows as soon as it hears the hotkey, before the GPU moved) by its
 * corners: the guest fills its whole framebuffer with its colour, while the kiosk's view has the
 * switcher's bar on top and the scaled picture between margins.
 *
 * The two-GPU rig (dom0 keeps a display of its own, a second GPU moves between VMs) is
 * gpu-xen-two.e2e.ts; what both files share (the screen, the picture judges, GpuHolder and
 * LastSwitch, the work guest, personal's gpu.pci) is gpu-rig.ts.
 *
 * Opt-in (BULKHEAD_E2E_GPU=1): one more boot of the Xen entry (~8 min with the scenarios under
 * TCG), over the image suite's CI budget; without it the file skips before booting anything.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { waitFor } from './wait';
import { ImageMachine, readImageVms, recordBench } from './image-machine';
import { colorPixels, percentile, type Rgb } from './screen-picture';
import { LOCK_SCREEN_PX, locked, unlockAtKeyboard } from './sleep-wake';
import {
  ACCENT,
  DISPLAY_STEP,
  Screen,
  bootGpuRig,
  reportGpuRig,
  VM,
  WORK,
  consoleLines as consoleLinesOf,
  givePersonalTheGpu,
  gpuHolder as gpuHolderOf,
  guestOwnPainting,
  lastSwitch as lastSwitchOf,
  pciDriver,
  printSteps,
  putFile,
  startWorkGuest,
  stepNames,
  tilesOf,
  vmDaemonGpuEnv,
  workColor,
} from './gpu-rig';

const repo = join(__dirname, '..', '..');
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e-gpu-xen');
const OPT_IN = process.env.BULKHEAD_E2E_GPU === '1';
/** Ctrl+1 / Ctrl+0 rounds for the hotkey-to-picture numbers (the first two scenarios are round 1). */
const ROUNDS = Math.max(1, Number(process.env.BULKHEAD_E2E_GPU_ROUNDS ?? 3));
/** The display device of the outer machine, at the address xen-harness uses too. */
const DISPLAY = 'virtio-vga,iommu_platform=on,addr=05.0';
/** virtio-vga's PCI ids (virtio 1.0 GPU). */
const DISPLAY_IDS = '0x1af4:0x1050';
/** The PCI driver of the display in dom0 when dom0 has it (virtio-gpu sits on the virtio bus). */
const DOM0_DRIVER = 'virtio-pci';
const fileStart = Date.now();

const imageVms = readImageVms();
const personalColor: Rgb = imageVms.find((v) => v.id === 'personal' && v.backend === 'xen')!.color;
let m: ImageMachine;
let skip: string | false = false;
/** dom0's BDF of the display device (sysfs), found in scenario 1. */
let bdf = '';
const samples = { dom0ToVm: [] as number[], vmToDom0: [] as number[], vmToVm: [] as number[] };
let holderDeathMs: number | undefined;
/** The secure-attention chord while personal held the GPU: chord -> the lock screen on the display. */
const lockSamples = { chordToLockScreenMs: [] as number[], unlockToTilesMs: [] as number[] };
type Direction = 'dom0ToVm' | 'vmToDom0' | 'vmToVm';
/** Each hand-off's move-gpu and its xl/sysfs sub-steps (µs, from LastSwitch), per direction. */
const moves: Record<Direction, Array<{ moveGpuUs: number; xlResetUs: number; displayUs: number }>> = {
  dom0ToVm: [],
  vmToDom0: [],
  vmToVm: [],
};
/** The bare sequences timed in the image's root shell (µs, the sum of the three commands), per direction. */
const bare: Record<Direction, number[]> = { dom0ToVm: [], vmToDom0: [], vmToVm: [] };

before(async () => {
  if (!OPT_IN) {
    skip =
      'opt-in (BULKHEAD_E2E_GPU=1): boots the Xen entry once more with the display passed through (~8 min under TCG), over the image suite CI budget';
    return;
  }
  m = await bootGpuRig({ imageDir, artifactsDir: artifacts, display: DISPLAY });
  screen = new Screen(m, artifacts);
});

after(async () => {
  await reportGpuRig(m, 'gpu-xen.e2e', [
    ["Xen's IOMMU lines", "xl dmesg | grep -a -i -E 'I/O virt|VT-d|iommu|intremap' | head -n 12"],
  ]);
  await m?.shutdown();
  if (!OPT_IN) return;
  const stats = (xs: number[]) =>
    xs.length
      ? {
          n: xs.length,
          p50Ms: percentile(
            [...xs].sort((a, b) => a - b),
            0.5,
          ),
          p95Ms: percentile(
            [...xs].sort((a, b) => a - b),
            0.95,
          ),
          samplesMs: xs,
        }
      : { n: 0 };
  const numbers = {
    at: new Date().toISOString(),
    display: DISPLAY,
    dom0ToVm: stats(samples.dom0ToVm),
    vmToDom0: stats(samples.vmToDom0),
    vmToVm: stats(samples.vmToVm),
    holderDeathToTilesMs: holderDeathMs ?? null,
    lockWhileVmHeldGpu: {
      chordToLockScreen: stats(lockSamples.chordToLockScreenMs),
      unlockToTiles: stats(lockSamples.unlockToTilesMs),
    },
  };
  console.log(`gpu-xen.e2e: hotkey -> picture per direction: ${JSON.stringify(numbers)}`);
  if (samples.dom0ToVm.length || samples.vmToDom0.length)
    recordBench('e2e/gpu-xen/hotkey-to-picture', numbers);
  const overhead = overheadNumbers();
  console.log(`gpu-xen.e2e: the hand-offs' move-gpu against the bare sequence: ${JSON.stringify(overhead)}`);
  if (Object.values(bare).some((xs) => xs.length)) recordBench('e2e/gpu-xen/bare-sequence', overhead);
  console.log(`gpu-xen.e2e: ${((Date.now() - fileStart) / 1000).toFixed(0)} s wall time, boot included`);
});

/** The display (the machine's only one), read by screendump alone. */
let screen: Screen;
const pictureAfter = (...a: Parameters<Screen['after']>) => screen.after(...a);
const tiles = tilesOf(imageVms);
const gpuHolder = () => gpuHolderOf(m);
const lastSwitch = () => lastSwitchOf(m);
const consoleLines = (id: string, word: string) => consoleLinesOf(m, id, word);
/** The driver bound to the display device in dom0 ('' for none). */
const dom0Driver = () => pciDriver(m, bdf);

/** The xl and sysfs sub-steps of move-gpu, whose bare counterparts scenario 8 times. */
const XL_RESET = /^gpu-(detach|reset|attach|assignable-add|assignable-remove|forced-detach):/;
function recordMove(dir: Direction, steps: Array<[string, number]>): void {
  const sum = (re: RegExp) => steps.filter(([n]) => re.test(n)).reduce((a, [, us]) => a + Number(us), 0);
  moves[dir].push({
    moveGpuUs: Number(steps.find(([n]) => n === 'move-gpu')?.[1] ?? NaN),
    xlResetUs: sum(XL_RESET),
    displayUs: sum(DISPLAY_STEP),
  });
}

/** Per direction: the bare sequence, the hand-offs' move-gpu and its parts, and their ratios (p50s). */
function overheadNumbers(): Record<string, unknown> {
  const p50 = (xs: number[]) =>
    percentile(
      [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b),
      0.5,
    );
  const out: Record<string, unknown> = { at: new Date().toISOString() };
  for (const dir of ['dom0ToVm', 'vmToDom0', 'vmToVm'] as const) {
    const mv = moves[dir];
    const bareP50 = p50(bare[dir]);
    const moveP50 = p50(mv.map((x) => x.moveGpuUs));
    const xlP50 = p50(mv.map((x) => x.xlResetUs));
    const dispP50 = p50(mv.map((x) => x.displayUs));
    const r = (x: number) => (Number.isFinite(x) && bareP50 > 0 ? Number((x / bareP50).toFixed(3)) : null);
    out[dir] = {
      bareUs: bare[dir],
      bareP50Us: Number.isFinite(bareP50) ? bareP50 : null,
      handOffs: mv.length,
      moveGpuP50Us: Number.isFinite(moveP50) ? moveP50 : null,
      xlResetSubStepsP50Us: Number.isFinite(xlP50) ? xlP50 : null,
      displaySubStepsP50Us: Number.isFinite(dispP50) ? dispP50 : null,
      moveGpuOverBare: r(moveP50),
      moveGpuWithoutDisplayOverBare: r(moveP50 - dispP50),
      xlResetSubStepsOverBare: r(xlP50),
    };
  }
  return out;
}
test('1. the Xen entry boots with the outer display passed to dom0 under the emulated VT-d: Xen has its IOMMU on, dom0 drives the display with virtio-gpu, the kiosk shows the tiles on it', async (t) => {
  if (skip) return t.skip(skip);
  // Xen's own boot lines, on the serial port (its console ring in `xl dmesg` may have moved on).
  const iommu = m.serial.output.split('\n').filter((l) => /I\/O virtualisation|Interrupt remapping/i.test(l));
  assert.ok(
    iommu.some((l) => /I\/O virtualisation enabled/.test(l)),
    `Xen found the IOMMU: ${iommu.join(' | ') || 'no line'}`,
  );
  bdf = (
    await m.serial.check(
      `for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor):$(cat $d/device)" = ${DISPLAY_IDS} ] && basename $d; done; true`,
    )
  ).trim();
  assert.match(bdf, /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/, `one virtio-vga in dom0: '${bdf}'`);
  await m.waitForServices(300_000, 2000);
  await waitFor(
    `${DOM0_DRIVER} bound in dom0`,
    async () => (await dom0Driver()) === DOM0_DRIVER,
    60_000,
    1000,
  );
  const ms = await pictureAfter(m.startedAt, 'the tiles on the screen', tiles, 600_000, 'tiles-at-boot');
  console.log(
    `gpu-xen: display ${bdf} (${DOM0_DRIVER}), the tiles ${(ms / 1000).toFixed(0)} s after QEMU started`,
  );
});

test("2. the rig, configured at run time: xen-pciback, vm-daemon with BULKHEAD_GPU_SHARED_WITH_DOM0=true, personal's VM file naming the display; personal runs again with it, dom0 still holds the GPU", async (t) => {
  if (skip) return t.skip(skip);
  assert.ok(bdf, 'scenario 1 found the display');
  // Debian's xen init script does not load pciback; libxl needs it for pci-assignable-add. The
  // image loads it on the Xen entry (bulkhead-vm-daemon's drop-in xen.conf), not the test.
  assert.match(
    await m.serial.check('test -d /sys/bus/pci/drivers/pciback && echo loaded || echo missing'),
    /loaded/,
    'xen-pciback loaded by the image',
  );
  await waitFor(
    'personal running (autostart)',
    async () => (await m.vmState('personal')) === 'running',
    600_000,
    3000,
  );
  // personal's domain made again with the display in its gpu.pci, vm-daemon with the drop-in.
  await givePersonalTheGpu(
    m,
    bdf,
    'gpu-xen.e2e: personal with the outer display passed through (issue 16).',
    async () => {
      await m.serial.check('mkdir -p /etc/systemd/system/bulkhead-vm-daemon.service.d');
      await putFile(
        m,
        '/etc/systemd/system/bulkhead-vm-daemon.service.d/gpu-shared.conf',
        '# gpu-xen.e2e: the display is the only GPU, shared by the kiosk and a VM (docs/gpu-handoff.md)\n[Service]\nEnvironment=BULKHEAD_GPU_SHARED_WITH_DOM0=true\n',
      );
    },
  );
  const env = await vmDaemonGpuEnv(m);
  assert.match(env, /BULKHEAD_GPU_SHARED_WITH_DOM0=true/, `vm-daemon's environment: ${env}`);
  const cfg = await m.serial.check('xl list -l personal | grep -a -i passthrough || true');
  console.log(`gpu-xen: personal's domain: ${cfg.trim()}`);
  assert.equal(await gpuHolder(), '/', 'dom0 holds the GPU');
  assert.equal(await dom0Driver(), DOM0_DRIVER, "dom0's driver kept the display");
  assert.equal(await m.activeVm(), '/', 'the switcher is active');
  await pictureAfter(Date.now(), 'the tiles on the screen', tiles, 120_000, 'tiles-rig-configured');
});

/** Ctrl+1 with the switcher shown: the GPU goes to personal, the screen shows its own painting. */
async function toPersonal(round: number): Promise<void> {
  const fbBefore = (await consoleLines('personal', 'BULKHEAD-FB painted')).length;
  const t0 = Date.now();
  await m.keys(['ctrl', '1']);
  const ms = await pictureAfter(
    t0,
    "personal's own painting on the screen",
    (p) => guestOwnPainting(p, personalColor),
    300_000,
    `personal-own-painting-${round}`,
  );
  samples.dom0ToVm.push(ms);
  await waitFor('GpuHolder personal', async () => (await gpuHolder()) === VM('personal'), 60_000, 1000);
  const ls = await lastSwitch();
  console.log(
    `gpu-xen: round ${round} dom0 -> personal: picture ${ms} ms after Ctrl+1; LastSwitch ${ls.outcome}: ${printSteps(ls.steps)}`,
  );
  recordMove('dom0ToVm', ls.steps);
  assert.equal(ls.outcome, 'ok');
  assert.equal(ls.target, VM('personal'));
  const names = stepNames(ls.steps);
  for (const s of [
    'gpu-release-display:Domain-0:',
    `gpu-assignable-add:Domain-0:${bdf}`,
    `gpu-reset:Domain-0:${bdf}`,
    `gpu-attach:personal:${bdf}`,
  ])
    assert.ok(
      names.some((n) => n.startsWith(s)),
      `LastSwitch has ${s}: ${names.join(', ')}`,
    );
  assert.equal(await dom0Driver(), 'pciback', 'dom0 let go of the display (pciback)');
  assert.match(await m.serial.check(`xl pci-list personal`), new RegExp(bdf.replace(/^0000:/, '')));
  // The guest's kernel saw the device and painted a framebuffer of it (virtio-gpu behind pcifront).
  const fb = await consoleLines('personal', 'BULKHEAD-FB painted');
  const pci = await consoleLines('personal', 'BULKHEAD-PCI-DISPLAY');
  console.log(`gpu-xen: personal's console: ${pci.at(-1)}; ${fb.slice(fbBefore).join(' | ')}`);
  assert.match(pci.at(-1) ?? '', /1af4:1050/, "the display in personal's kernel");
  assert.ok(fb.length > fbBefore, 'personal painted a framebuffer after the switch');
}

/** Ctrl+0 while personal holds the GPU: it comes home, the kiosk shows the tiles again. */
async function toTiles(round: number): Promise<void> {
  const t0 = Date.now();
  await m.keys(['ctrl', '0']);
  const ms = await pictureAfter(t0, 'the tiles on the screen', tiles, 300_000, `tiles-again-${round}`);
  samples.vmToDom0.push(ms);
  await waitFor('GpuHolder /', async () => (await gpuHolder()) === '/', 60_000, 1000);
  const ls = await lastSwitch();
  console.log(
    `gpu-xen: round ${round} personal -> dom0: tiles ${ms} ms after Ctrl+0; LastSwitch ${ls.outcome}: ${printSteps(ls.steps)}`,
  );
  recordMove('vmToDom0', ls.steps);
  assert.equal(ls.outcome, 'ok');
  assert.equal(ls.target, '/');
  const names = stepNames(ls.steps);
  for (const s of [
    `gpu-detach:personal:${bdf}`,
    `gpu-reset:Domain-0:${bdf}`,
    `gpu-assignable-remove:Domain-0:${bdf}`,
    'gpu-reclaim-display:Domain-0:',
  ])
    assert.ok(
      names.some((n) => n.startsWith(s)),
      `LastSwitch has ${s}: ${names.join(', ')}`,
    );
  assert.equal(await dom0Driver(), DOM0_DRIVER, "dom0's driver has the display again");
  assert.equal(await m.vmState('personal'), 'running', 'personal runs on without the GPU');
}

test("3. Ctrl+1: the kiosk lets go, the GPU goes to personal (GpuHolder, LastSwitch's gpu sub-steps), and the screen shows personal's own painting", async (t) => {
  if (skip) return t.skip(skip);
  await toPersonal(1);
});

test('4. Ctrl+0: the GPU comes home (GpuHolder "/"), the kiosk takes the display back and shows the tiles', async (t) => {
  if (skip) return t.skip(skip);
  await toTiles(1);
});

test(`5. more rounds of Ctrl+1 / Ctrl+0 for hotkey-to-picture per direction (BULKHEAD_E2E_GPU_ROUNDS=${ROUNDS} in all)`, async (t) => {
  if (skip) return t.skip(skip);
  if (ROUNDS < 2) return t.skip('BULKHEAD_E2E_GPU_ROUNDS=1');
  for (let r = 2; r <= ROUNDS; r++) {
    await toPersonal(r);
    await toTiles(r);
  }
});

test('6. the secure-attention chord while personal holds the GPU: the GPU comes home and the display shows the lock screen; the password unlocks to the tiles; Ctrl+1 gives personal its picture again', async (t) => {
  if (skip) return t.skip(skip);
  await toPersonal(ROUNDS + 1);
  const t0 = Date.now();
  await m.keys(['ctrl', 'alt', 'backspace']);
  // The lock screen on the display itself: the GPU came home and the restarted kiosk drew it.
  const ms = await pictureAfter(
    t0,
    'the lock screen on the screen',
    (p) => {
      const px = colorPixels(p, ACCENT, 8);
      return { yes: px >= LOCK_SCREEN_PX, why: `${px} px of the Unlock button's colour` };
    },
    300_000,
    'lock-screen-while-personal-held-gpu',
  );
  lockSamples.chordToLockScreenMs.push(ms);
  assert.equal(await locked(m), true, 'Input1.Locked');
  await waitFor('GpuHolder /', async () => (await gpuHolder()) === '/', 60_000, 1000);
  const ls = await lastSwitch();
  console.log(
    `gpu-xen: the chord while personal held the GPU: the lock screen ${ms} ms after it; LastSwitch ${ls.outcome} to ${ls.target}: ${printSteps(ls.steps)}`,
  );
  assert.equal(ls.target, '/', 'the lock switched to the switcher');
  assert.equal(ls.outcome, 'ok');
  const names = stepNames(ls.steps);
  for (const s of [
    `gpu-detach:personal:${bdf}`,
    `gpu-assignable-remove:Domain-0:${bdf}`,
    'gpu-reclaim-display:Domain-0:',
  ])
    assert.ok(
      names.some((n) => n.startsWith(s)),
      `LastSwitch has ${s}: ${names.join(', ')}`,
    );
  recordMove('vmToDom0', ls.steps);
  assert.equal(await dom0Driver(), DOM0_DRIVER, "dom0's driver has the display again");
  // The password at the outer keyboard (the screen is judged from outside: nothing attached).
  const u0 = Date.now();
  await unlockAtKeyboard(m);
  const tilesMs = await pictureAfter(u0, 'the tiles after the unlock', tiles, 120_000, 'tiles-after-unlock');
  lockSamples.unlockToTilesMs.push(tilesMs);
  assert.equal(await m.activeVm(), '/', 'the lock took the screen home');
  console.log(`gpu-xen: unlocked, the tiles ${tilesMs} ms after the password's first try`);
  await toPersonal(ROUNDS + 2);
});

/** Runs a script in the image's root shell: its output. */
async function runScript(name: string, text: string, timeoutMs: number): Promise<string> {
  await m.serial.check(`echo ${Buffer.from(text).toString('base64')} | base64 -d > /tmp/${name}`);
  return m.serial.check(`bash /tmp/${name}`, { timeoutMs });
}

test("7. the bare sequence, timed in the image's root shell beside the hand-offs' move-gpu: xl pci-detach + reset + xl pci-assignable-remove -r (VM -> dom0), xl pci-assignable-add + reset + xl pci-attach (dom0 -> VM), xl pci-detach + reset + xl pci-attach (VM -> VM's xl part, here back to the same guest); the rig as it was after", async (t) => {
  if (skip) return t.skip(skip);
  assert.equal(await gpuHolder(), VM('personal'), 'personal holds the GPU (scenario 6)');
  const n = Math.max(1, Number(process.env.BULKHEAD_E2E_GPU_BARE ?? 3));
  // vm-daemon is stopped (SIGSTOP) while the bare sequence runs: its watch of the holder (every
  // 2 s) would otherwise see personal without the GPU and bring it home. It runs on after SIGCONT
  // with personal holding the GPU again, as before. The kiosk stays stopped (personal held it).
  // bash for $EPOCHREALTIME (no fork for the clock: a `date` costs ~0.1 s in the PV dom0 under
  // TCG, which the first try counted into every step). After each attach the script waits, untimed,
  // for personal to paint the display again (its console's BULKHEAD-FB line) before the next
  // detach: the first try (2026-12-02 02:44) detached 0.8 s after an attach, xl pci-detach took
  // 12.6 s and every later attach failed ("Backend /local/domain/0/backend/pci/<domid>/0 not
  // ready"); a switch never follows an attach that fast (the picture comes first).
  const script = `set -u
b=${bdf}
d=$(xl domid personal)
log=/var/log/xen/console/guest-personal.log
step() { local seq=$1 r=$2 s=$3; shift 3; local t0=\${EPOCHREALTIME/./}; "$@" >/tmp/bare-step.log 2>&1; local rc=$? t1=\${EPOCHREALTIME/./}; echo "BARE $seq $r $s $(( t1 - t0 )) $rc"; [ $rc = 0 ] || cat /tmp/bare-step.log; }
reset_fn() { if [ -e /sys/bus/pci/devices/$b/reset ]; then echo 1 > /sys/bus/pci/devices/$b/reset; fi; }
painted() { grep -a -c 'BULKHEAD-FB painted' $log; }
settle() { local i=0; while [ "$(painted)" -le "$1" ] && [ $i -lt 240 ]; do sleep 0.5; i=$((i+1)); done; echo "SETTLE personal painted after $(( i * 500 )) ms (untimed)"; }
pid=$(pgrep -o -f vm-daemon/dist/main.js)
trap 'kill -CONT $pid' EXIT
kill -STOP $pid
for r in $(seq 1 ${n}); do
  step vmToDom0 $r detach xl pci-detach $d $b
  step vmToDom0 $r reset reset_fn
  step vmToDom0 $r assignable-remove xl pci-assignable-remove -r $b
  step dom0ToVm $r assignable-add xl pci-assignable-add $b
  step dom0ToVm $r reset reset_fn
  n0=$(painted)
  step dom0ToVm $r attach xl pci-attach $d $b
  settle $n0
  step vmToVm $r detach xl pci-detach $d $b
  step vmToVm $r reset reset_fn
  n0=$(painted)
  step vmToVm $r attach xl pci-attach $d $b
  settle $n0
done
echo "reset file: $( [ -e /sys/bus/pci/devices/$b/reset ] && echo yes || echo no)"
`;
  const out = await runScript('bare-sequence.sh', script, 600_000);
  const lines = out.split('\n').filter((l) => l.startsWith('BARE '));
  console.log(`gpu-xen: the bare sequence (µs per command, rc):\n${out.trim()}`);
  assert.equal(lines.length, n * 9, 'every command of the bare sequence ran');
  assert.ok(
    lines.every((l) => l.endsWith(' 0')),
    `every command of the bare sequence succeeded: ${lines.filter((l) => !l.endsWith(' 0')).join(' | ')}`,
  );
  const per = new Map<string, number>();
  for (const l of lines) {
    const [, seq, r, , us] = l.split(' ');
    per.set(`${seq} ${r}`, (per.get(`${seq} ${r}`) ?? 0) + Number(us));
  }
  for (const [k, us] of per) bare[k.split(' ')[0] as Direction].push(us);
  // The rig as it was: personal holds the GPU, vm-daemon says so, dom0's driver does not have it.
  assert.match(await m.serial.check(`xl pci-list personal`), new RegExp(bdf.replace(/^0000:/, '')));
  assert.equal(await dom0Driver(), 'pciback');
  assert.equal(await gpuHolder(), VM('personal'), 'GpuHolder personal after the bare sequence');
  await new Promise((r) => setTimeout(r, 5000));
  assert.equal(await gpuHolder(), VM('personal'), "GpuHolder personal 5 s later (vm-daemon's watch ran)");
  await pictureAfter(
    Date.now(),
    "personal's own painting after the bare sequence",
    (p) => guestOwnPainting(p, personalColor),
    120_000,
    'personal-after-bare-sequence',
  );
  console.log(`gpu-xen: bare vs move-gpu: ${JSON.stringify(overheadNumbers())}`);
});

/** Ctrl+<slot> while `from` holds the GPU: it moves straight to `to`, whose own painting shows. */
async function vmToVm(from: string, to: string, slot: number, color: Rgb, name: string): Promise<void> {
  const t0 = Date.now();
  await m.keys(['ctrl', String(slot)]);
  const ms = await pictureAfter(
    t0,
    `${to}'s own painting on the screen`,
    (p) => guestOwnPainting(p, color),
    300_000,
    name,
  );
  samples.vmToVm.push(ms);
  await waitFor(`GpuHolder ${to}`, async () => (await gpuHolder()) === VM(to), 60_000, 1000);
  const ls = await lastSwitch();
  console.log(
    `gpu-xen: ${from} -> ${to}: picture ${ms} ms after Ctrl+${slot}; LastSwitch ${ls.outcome}: ${printSteps(ls.steps)}`,
  );
  assert.equal(ls.outcome, 'ok');
  assert.equal(ls.target, VM(to));
  const names = stepNames(ls.steps);
  for (const s of [`gpu-detach:${from}:${bdf}`, `gpu-reset:Domain-0:${bdf}`, `gpu-attach:${to}:${bdf}`])
    assert.ok(
      names.some((n) => n.startsWith(s)),
      `LastSwitch has ${s}: ${names.join(', ')}`,
    );
  assert.ok(!names.some((n) => DISPLAY_STEP.test(n)), `no kiosk step between two VMs: ${names.join(', ')}`);
  recordMove('vmToVm', ls.steps);
  assert.equal(await dom0Driver(), 'pciback', 'dom0 never took the display in between');
}

test("8. VM -> VM: a second PV guest (work, made at run time from personal's file, the same gpu.pci); Ctrl+3 while personal holds the GPU shows work's own painting, Ctrl+1 personal's, with no kiosk in between (no display sub-steps); Ctrl+0 the tiles", async (t) => {
  if (skip) return t.skip(skip);
  assert.equal(await gpuHolder(), VM('personal'), 'personal holds the GPU');
  await startWorkGuest(
    m,
    bdf,
    'gpu-xen.e2e: a second PV guest with the outer display for VM -> VM (issue 16).',
  );
  assert.equal(await gpuHolder(), VM('personal'), 'personal still holds the GPU');
  for (let r = 1; r <= 2; r++) {
    await vmToVm('personal', WORK.id, WORK.slot, workColor, `work-own-painting-${r}`);
    await vmToVm(WORK.id, 'personal', 1, personalColor, `personal-from-work-${r}`);
  }
  await toTiles(ROUNDS + 3);
});

test("9. personal's domain destroyed while it holds the GPU: the tiles come back, personal is stopped, GpuHolder '/'", async (t) => {
  if (skip) return t.skip(skip);
  await toPersonal(ROUNDS + 4);
  const t0 = Date.now();
  await m.serial.check('xl destroy personal');
  const ms = await pictureAfter(t0, 'the tiles on the screen', tiles, 300_000, 'tiles-after-holder-died');
  holderDeathMs = ms;
  const holderAt = await gpuHolder();
  const state = await m.vmState('personal');
  const lines = await m.outputOf(
    'journalctl -b --no-pager -o cat -u bulkhead-vm-daemon | grep -a -i -E "gpu|holder|came home|personal" | tail -n 12 | cut -c1-220',
  );
  console.log(
    `gpu-xen: holder destroyed -> tiles ${ms} ms (from xl destroy's start); GpuHolder ${holderAt}, personal ${state}\n${lines}`,
  );
  assert.equal(holderAt, '/');
  assert.equal(state, 'stopped', 'personal shown stopped');
  assert.equal(await dom0Driver(), DOM0_DRIVER);
});
