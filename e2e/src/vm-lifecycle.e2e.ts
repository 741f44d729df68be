/**
 * A person makes, installs and removes a VM of their own, in the Control Domain image booted under
 * QEMU (issue 18), driven from outside only: a USB stick holding the Linux test guest's ISO is
 * hot-plugged into the outer xHCI controller, the kiosk UI is driven over DevTools (CDP), keys go
 * in through the outer QMP. What only the inside can show (files, mounts, the nested guest's
 * console) is read over the root shell on the serial console.
 *
 * The "Lab" guest is a real Debian kernel booting from the ISO. The image is booted with KVM
 * allowed (ImageMachine `kvmInside`): its vm-daemon's probe finds KVM working on the AMD-V the outer
 * TCG emulates, and runs the VMs nested under KVM instead of under TCG inside TCG (which had not
 * booted Lab 480 s after GRUB). Lab's boot time is printed and written to
 * artifacts/e2e-lifecycle/lab-boot.json. Opt-in (BULKHEAD_E2E_LAB_BOOT=1): see LAB_BOOT.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { waitFor } from './wait';
import { ImageMachine, recordBench } from './image-machine';
import { attachKiosk } from './kiosk';
import {
  ASD_EVENTS,
  buildSticks,
  changeLabSettings,
  deleteLabWithDisks,
  guestConsoleLines,
  ISO_IN_IMAGE,
  keyEvents,
  labStickDrive,
  PERSON_IMAGES,
  PERSON_VMS,
  plugLabStick,
  STICK_LABEL,
} from './lab-stick';

const repo = join(__dirname, '..', '..');
/** The test flavour (FLAVOUR=test dom0-rootfs/build-image.sh): production plus the test layer. */
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e-lifecycle');
const VM = (id: string) => `/org/bulkhead/VmManager1/vm/${id}`;
/** Where the image's vm-daemon keeps the person's VMs (its unit's --person-dir, --person-image-dir). */
/** Small, so the nested guest boots light: the Linux test guest needs ~100 MiB. */
const LAB_MEMORY_MIB = 192;
/**
 * Lab's boot. Under TCG inside TCG (the image's KVM modules blacklisted) the ISO
 * had printed nothing after GRUB's "Booting" 480 s later, beyond this file's budget. With KVM
 * loaded in the image (`kvmInside`) the VMs run nested under KVM on the outer TCG's AMD-V: Lab
 * went from Ctrl+3 to READY in 56, 73 and 82 s (three runs, 2026-12-01). An earlier try at KVM in the image had ended in
 * vm-daemon's probe saying "no QMP from qemu -accel kvm": it had 6 s for everything, and QEMU's
 * start alone takes ~4 s in the booting image; it now bounds each phase (backend/kvm-probe.ts).
 *
 * Opt-in again (BULKHEAD_E2E_LAB_BOOT=1, which also boots the image with KVM allowed): in a
 * fresh-clone run on 2026-12-01 the image's own kernel panicked 202 s after boot, inside KVM_RUN of
 * Lab's QEMU ("Kernel panic - not syncing: corrupted stack end detected inside scheduler"): nested
 * KVM on the outer TCG's emulated AMD-V passed four image runs and then took the Control Domain
 * down in the fifth, which a suite that must pass every time cannot carry. Without it the image
 * boots with KVM blacklisted and the toy VMs run under TCG, as before.
 */
const LAB_BOOT = process.env.BULKHEAD_E2E_LAB_BOOT === '1';
/** How long Lab's boot may take before it counts as hung; the time is measured and printed. */
const LAB_BOOT_CAP_MS = 300_000;

let m: ImageMachine;
let browser: Browser | undefined;
let page: Page;
let step = 0;
let skip: string | false = false;

/** The input lines (KEY/BTN/REL) one of the image's toy guests printed on its serial port. */
async function toyGuestInput(id: string): Promise<number> {
  const out = await m.serial.check(`grep -cE '^(KEY|BTN|REL) ' /run/bulkhead/vms/${id}/serial.log || true`);
  // The count is the one all-digit line: the kernel may print on the same console meanwhile.
  const count = out
    .split('\n')
    .map((l) => l.trim())
    .find((l) => /^\d+$/.test(l));
  if (count === undefined)
    throw new Error(`no count in the output of grep -c for ${id}: ${JSON.stringify(out)}`);
  return Number(count);
}

/** The Linux guest's console lines starting with `word`, from its serial log in the image. */
const labLines = (word: string) => guestConsoleLines(m, '/run/bulkhead/vms/lab/serial.log', word);

async function shot(name: string): Promise<void> {
  step++;
  const base = `${String(step).padStart(2, '0')}-${name}`;
  await m.screendump(`${base}.screen`).catch(() => undefined);
  await page?.screenshot({ path: join(artifacts, `${base}.cdp.png`) }).catch(() => undefined);
}

/**
 * A D-Bus call as the UI's user (bulkhead-switcher, group bulkhead-ui), printing 'ok' or
 * 'error <name>: <message>': busctl prints only the message, and the refusal is asserted by name.
 */
const UI_CALL_JS = `'use strict';
const dbus = require('/opt/bulkhead/node_modules/dbus-next');
const [path, member, opts] = process.argv.slice(2);
const body = {};
for (const [k, [t, v]] of Object.entries(JSON.parse(opts))) body[k] = new dbus.Variant(t, v);
const bus = dbus.systemBus();
bus.call(new dbus.Message({ destination: 'org.bulkhead.VmManager1', path, interface: 'org.bulkhead.Vm1', member, signature: 'a{sv}', body: [body] }))
  .then(() => console.log('ok'), (e) => console.log('error ' + String(e.type).replace('org.bulkhead.Error.', '') + ': ' + (e.text || e.message)))
  .finally(() => bus.disconnect());
`;
async function callAsUi(
  path: string,
  member: string,
  opts: Record<string, [string, unknown]>,
): Promise<string> {
  const js = Buffer.from(UI_CALL_JS).toString('base64');
  const args = Buffer.from(JSON.stringify(opts)).toString('base64');
  const out = await m.serial.check(
    `echo ${js} | base64 -d > /tmp/ui-call.js && chmod 644 /tmp/ui-call.js && ` +
      `runuser -u bulkhead-switcher -- /usr/local/bin/node /tmp/ui-call.js ${path} ${member} "$(echo ${args} | base64 -d)"`,
    { timeoutMs: 120_000 },
  );
  return out.trim().split('\n').pop() ?? '';
}

/**
 * Lab's Ctrl+3 → READY into bench-results.json as `e2e/lab-boot/nested-kvm` (beside
 * ImageMachine's `e2e/boot-to-tiles/<entry>`; the last run wins), so `npm run bench`'s numbers and
 * the image's sit in one file.
 */
function recordLabBoot(ms: number): void {
  recordBench('e2e/lab-boot/nested-kvm', {
    hotkeyToReadyMs: ms,
    memoryMiB: LAB_MEMORY_MIB,
    at: new Date().toISOString(),
  });
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  const built = buildSticks(artifacts);
  if ('skip' in built) {
    skip = built.skip;
    return;
  }
  m = new ImageMachine({
    imageDir,
    artifactsDir: artifacts,
    kvmInside: LAB_BOOT,
    extraQemuArgs: [
      ...labStickDrive(built.lab),
      '-drive',
      `if=none,id=otherstick,file=${built.ext2},format=raw,readonly=on`,
    ],
  });
  const t0 = Date.now();
  await m.boot();
  await m.waitForServices(180_000, 1000);
  // Attach to the kiosk's own page (never a fresh one), once it shows the switcher.
  ({ browser, page } = await attachKiosk(m, { loaded: 1000 }));
  console.log(`image booted to the switcher in ${Date.now() - t0} ms`);
});

after(async () => {
  if (m?.serial) {
    await m.saveOutput('journalctl -b --no-pager -u "bulkhead-*" | tail -n 400', 'journal-tail.txt');
    await m.saveOutput('tail -c 20000 /run/bulkhead/vms/lab/serial.log', 'lab-serial-tail.txt');
  }
  await browser?.close().catch(() => undefined);
  await m?.shutdown();
});

test('1. a USB stick holding the test ISO is mounted read-only under /media/bulkhead; one with another filesystem is refused by name', async (t) => {
  if (skip) return t.skip(skip);
  assert.equal(await m.activeVm(), '/', 'the tiles are in front: a new stick stays in the Control Domain');
  const opts = await plugLabStick(m);
  assert.match(opts, /^vfat /);
  for (const o of ['ro', 'nosuid', 'nodev', 'noexec'])
    assert.ok(opts.split(/[ ,]/).includes(o), `mounted ${o}: ${opts}`);
  assert.match(await m.serial.check(`ls -l ${ISO_IN_IMAGE}`), /17694720|guest\.iso/);
  assert.equal(
    (await m.serial.check("findmnt -l -n -o SOURCE,TARGET | grep ' /media/bulkhead/' || true"))
      .trim()
      .split('\n').length,
    1,
    "one mount: the stick's partition",
  );

  await m.qmp.execute('device_add', {
    driver: 'usb-storage',
    drive: 'otherstick',
    bus: 'xhci.0',
    id: 'otherstick0',
    serial: 'BULKHEADEXT2',
  });
  const refusal = await waitFor(
    'the ext2 stick refused in the journal',
    async () =>
      (
        await m.serial.check(
          'journalctl -b --no-pager -o cat -t bulkhead-media | grep "filesystem \'ext2\'" || true',
        )
      ).trim(),
    90_000,
    1000,
  );
  assert.match(refusal, /refused \/dev\/sd[a-z]+: filesystem 'ext2' is not one the Control Domain mounts/);
  assert.doesNotMatch(await m.serial.check('findmnt -n -o SOURCE,TARGET -t ext2,ext4 || true'), /media/);
  await m.qmp.execute('device_del', { id: 'otherstick0' });
});

test('2. through the UI: New machine "Lab", a 64 MiB disk, installing from the ISO on the stick; its tile appears with slot 3', async (t) => {
  if (skip) return t.skip(skip);
  await page.getByRole('button', { name: 'New machine' }).click({ noWaitAfter: true });
  const dialog = page.getByRole('dialog', { name: 'New machine' });
  await dialog.waitFor();
  await dialog.locator('[name=name]').fill('Lab');
  await dialog.locator('[name=slot]').selectOption('3');
  await dialog.locator('[name=memory]').fill(String(LAB_MEMORY_MIB));
  await dialog.locator('[name=disk-size]').fill('64');
  await dialog.locator('[name=cdrom]').fill(ISO_IN_IMAGE);
  await dialog.locator('[name=network]').selectOption('none');
  await shot('new-machine-filled');
  await dialog.getByRole('button', { name: 'Create machine' }).click({ noWaitAfter: true });
  await dialog.waitFor({ state: 'detached', timeout: 120_000 }).catch(async (e) => {
    await shot('new-machine-stuck');
    const said = await dialog
      .getByRole('alert')
      .innerText()
      .catch(() => '');
    throw new Error(`the dialog stayed open${said ? `, saying: ${said}` : ''}: ${(e as Error).message}`);
  });
  await page.getByRole('button', { name: /^Lab, slot 3/ }).waitFor();
  await shot('lab-tile');
  assert.equal(await m.vmProperty('lab', 'Owner'), 'person');
  assert.equal(await m.vmProperty('lab', 'Slot'), '3');
  assert.equal(await m.vmProperty('lab', 'Network'), 'none');
  assert.equal(await m.vmProperty('lab', 'Cdrom'), ISO_IN_IMAGE);
  assert.equal(await m.vmProperty('lab', 'ConfigFile'), `${PERSON_VMS}/lab.json`);
  const info = await m.serial.check(`qemu-img info --output=json ${PERSON_IMAGES}/lab.qcow2`);
  const disk = JSON.parse(info.slice(info.indexOf('{'))) as { format: string; 'virtual-size': number };
  assert.equal(disk.format, 'qcow2');
  assert.equal(disk['virtual-size'], 64 * 1024 * 1024);
});

test("3. Ctrl+3 starts and switches to Lab; keys reach its kernel and no other guest's", async (t) => {
  if (skip) return t.skip(skip);
  if (!LAB_BOOT)
    return t.skip(
      'opt-in (BULKHEAD_E2E_LAB_BOOT=1): nested KVM once panicked the image kernel (see LAB_BOOT)',
    );
  // vm-daemon's accelerator, chosen by its KVM probe at start; the probe's reason from its journal.
  const accel = (
    await m.busProperty(
      'org.bulkhead.VmManager1',
      '/org/bulkhead/VmManager1',
      'org.bulkhead.VmManager1',
      'Accelerator',
    )
  ).replace(/^s "|"$/g, '');
  const probe = (
    await m.serial.check(
      "journalctl -b --no-pager -o cat -u bulkhead-vm-daemon | grep -m1 -E 'accelerator (kvm|tcg)' || true",
    )
  ).trim();
  console.log(`vm-daemon in the image: ${probe}`);
  assert.equal(accel, 'kvm', `the image's VMs run nested under KVM (vm-daemon: ${probe})`);
  const p0 = await toyGuestInput('personal');
  const b0 = await toyGuestInput('business');
  const t0 = Date.now();
  await m.keys(['ctrl', '3']);
  await waitFor('Lab active', async () => (await m.activeVm()) === VM('lab'), 180_000, 1000);
  const started = Date.now();
  assert.match(
    await m.serial.check("tr '\\0' ' ' < /proc/$(cat /run/bulkhead/vms/lab/qemu.pid)/cmdline"),
    / -accel kvm .* -drive file=\/media\/bulkhead\/LABSTICK\/guest\.iso,format=raw,media=cdrom,/,
    'Lab runs the ISO from the stick as its CD-ROM',
  );
  // The nested Debian kernel under KVM on the outer TCG's AMD-V, measured. Every 30 s the nested QEMU's
  // CPU time and the console's size go into lab-boot.json, so a slow boot says where it was.
  const progress: Array<{ s: number; qemuCpu: string; consoleBytes: number; last: string }> = [];
  const look = async () => {
    const out = await m.serial.check(
      'ps -o time= -p "$(cat /run/bulkhead/vms/lab/qemu.pid)" || true; ' +
        "stat -c %s /run/bulkhead/vms/lab/serial.log || echo 0; tail -c 300 /run/bulkhead/vms/lab/serial.log | tr -cd '[:print:]\\n' | grep . | tail -n 1 || true",
    );
    const [qemuCpu = '', bytes = '0', last = ''] = out.split('\n').map((l) => l.trim());
    progress.push({ s: Math.round((Date.now() - t0) / 1000), qemuCpu, consoleBytes: Number(bytes), last });
  };
  let lastLook = 0;
  let ready = 0;
  try {
    ready = await waitFor(
      "Lab's kernel and agent up (BULKHEAD-LINUX-GUEST READY)",
      async () => {
        if (Date.now() - lastLook > 30_000) {
          lastLook = Date.now();
          await look();
        }
        return (await labLines('BULKHEAD-LINUX-GUEST READY')).length > 0;
      },
      LAB_BOOT_CAP_MS,
      2000,
    ).then(() => Date.now());
  } finally {
    await look().catch(() => undefined);
    const boot = {
      hotkeyToActiveMs: started - t0,
      hotkeyToReadyMs: ready ? ready - t0 : null,
      capMs: LAB_BOOT_CAP_MS,
      memoryMiB: LAB_MEMORY_MIB,
      progress,
    };
    writeFileSync(join(artifacts, 'lab-boot.json'), JSON.stringify(boot, null, 2) + '\n');
    if (ready) recordLabBoot(ready - t0);
    await m.serial
      .run('cat -v /run/bulkhead/vms/lab/serial.log', { timeoutMs: 60_000 })
      .then((r) => writeFileSync(join(artifacts, 'lab-serial.txt'), r.output))
      .catch(() => undefined);
    if (!ready) await shot('lab-boot-timeout');
    console.log(
      `Lab (Linux test guest from the ISO, nested KVM, ${LAB_MEMORY_MIB} MiB): Ctrl+3 -> active ${boot.hotkeyToActiveMs} ms, -> READY ${boot.hotkeyToReadyMs ?? `not within ${LAB_BOOT_CAP_MS}`} ms; nested QEMU CPU time ${progress.at(-1)?.qemuCpu}`,
    );
  }
  assert.deepEqual(await labLines('BULKHEAD-LINUX-GUEST READY'), ['BULKHEAD-LINUX-GUEST READY name=Lab']);
  await shot('lab-booted');

  const keyLines = async () => keyEvents(await labLines('BULKHEAD-INPUT dev='));
  const k0 = (await keyLines()).length;
  await m.keys(['a'], ['s'], ['d']);
  await waitFor('Lab printed a s d', async () => (await keyLines()).length >= k0 + 6, 120_000, 1000);
  await new Promise((r) => setTimeout(r, 2000));
  // KEY_A=30, KEY_S=31, KEY_D=32: pressed and released, nothing else (no Ctrl or 3 of the chord).
  assert.deepEqual((await keyLines()).slice(k0), ASD_EVENTS);
  assert.equal(await toyGuestInput('personal'), p0, 'no key reached Personal');
  assert.equal(await toyGuestInput('business'), b0, 'no key reached Business');
});

test('4. Lab (shut down from its tile when it ran): change its colour and memory in Settings', async (t) => {
  if (skip) return t.skip(skip);
  if ((await m.activeVm()) !== '/') await m.hotkeyTo(0, '/', 'the switcher active');
  if ((await m.vmProperty('lab', 'State')) !== 'stopped') {
    await page.getByRole('button', { name: 'Shut down Lab' }).click({ noWaitAfter: true });
    // The test guest does not act on the ACPI power button: vm-daemon stops it after Stop's timeout.
    await waitFor(
      'Lab stopped',
      async () => (await m.vmProperty('lab', 'State')) === 'stopped',
      120_000,
      1000,
    );
  }
  const file = await changeLabSettings(m, page, () => shot('lab-settings'));
  assert.equal(file.color, '#c0392b');
  assert.equal(file.memoryMiB, 256);
});

test('5. delete Lab with its disk: the tile, the file and the disk are gone', async (t) => {
  if (skip) return t.skip(skip);
  assert.equal(await deleteLabWithDisks(m, page, shot), '', 'no file or disk left');
});

test("6. the administrator's Business VM: Settings are read-only in the UI; Update and Delete as the UI user answer NotOwner and change nothing", async (t) => {
  if (skip) return t.skip(skip);
  const before = await m.serial.check('sha256sum /etc/bulkhead/vms/business.json');
  const color = await m.vmProperty('business', 'Color');
  await page.getByRole('button', { name: 'Settings of Business' }).click({ noWaitAfter: true });
  const dialog = page.getByRole('dialog', { name: 'Settings of Business' });
  await dialog.waitFor();
  await dialog.getByText('This machine is managed by your administrator').waitFor();
  assert.equal(await dialog.locator('[name=color]').isDisabled(), true);
  assert.equal(await dialog.getByRole('button', { name: 'Save' }).count(), 0);
  assert.equal(await dialog.getByRole('button', { name: 'Delete…' }).count(), 0);
  await shot('business-settings');
  await dialog.getByRole('button', { name: 'Close' }).click({ noWaitAfter: true });

  assert.match(await callAsUi(VM('business'), 'Update', { color: ['s', '#000000'] }), /^error NotOwner: /);
  assert.match(await callAsUi(VM('business'), 'Delete', { remove_disks: ['b', true] }), /^error NotOwner: /);
  assert.equal(await m.serial.check('sha256sum /etc/bulkhead/vms/business.json'), before);
  assert.equal(await m.vmProperty('business', 'Color'), color);
  assert.equal(await m.vmProperty('business', 'State'), 'running');
});

test('7. the stick pulled out: the Control Domain unmounts it', async (t) => {
  if (skip) return t.skip(skip);
  await m.qmp.execute('device_del', { id: 'labstick0' });
  await waitFor(
    'the stick unmounted',
    async () =>
      (await m.serial.run(`findmnt /media/bulkhead/${STICK_LABEL}`)).code !== 0 &&
      (await m.serial.run(`test -e /media/bulkhead/${STICK_LABEL}`)).code !== 0,
    60_000,
    1000,
  );
  assert.equal((await m.serial.check('ls -A /media/bulkhead')).trim(), '');
  if (existsSync(join(artifacts, 'lab-stick.img'))) rmSync(join(artifacts, 'lab-stick.img'));
});
