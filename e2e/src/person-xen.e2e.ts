/**
 * A person's own machine on the image's "Bulkhead (Xen)" entry (issue 18), driven from outside:
 * a USB stick holding the Linux test guest's ISO hot-plugged into the outer xHCI, the kiosk UI over
 * DevTools (CDP), keys at the outer keyboard through the outer QMP; what only the inside can show
 * (xl, files, the guests' consoles, D-Bus properties) over the root shell on the serial console.
 * The same story as vm-lifecycle.e2e.ts on the KVM entry, whose stick it shares (lab-stick.ts).
 *
 * 1. The stick is mounted read-only under /media/bulkhead.
 * 2. Through the UI: New machine "Lab" (slot 3, a 64 MiB disk, installing from the ISO on the
 *    stick, no network: the dialog offers no shared Internet on Xen); vm-daemon writes it for Xen.
 * 3. Ctrl+3 starts and switches to Lab: an HVM domain built from the person's options (the
 *    emulated USB controller, the qcow2 disk and the stick's ISO as CD-ROM through the device model,
 *    its screen as VNC, its serial port into <runDir>/serial.log, where the ISO's default GRUB entry
 *    puts the kernel's console: console=ttyS0); the Linux test guest boots from the ISO to
 *    "BULKHEAD-LINUX-GUEST READY name=Lab", and a s d at the outer keyboard reach its kernel
 *    (input-daemon -> the device model's QMP -> its emulated PS/2 keyboard) and no other guest's.
 *    Ctrl+3 -> READY is printed and recorded (bench-results.json `e2e/lab-boot/xen-hvm`).
 * 3b. Eject in Lab's settings takes the medium out of the running domain (`xl cd-eject`) and out
 *    of its file.
 * 4. Shut down from its tile, then colour and memory changed in its settings.
 * 5. Deleted with its disk: the tile, the file and the disk are gone.
 * 6. A person's VM file made on the KVM entry is listed as unavailable here: its tile says so,
 *    and the file is left as it was.
 *
 * Opt-in (BULKHEAD_E2E_XEN_PERSON=1): one more Xen boot and an HVM guest's boot under the outer
 * TCG's emulated AMD-V take more than the image suite's budget (CI's: a file with its boot in
 * <= 6 min); without it the file skips before booting anything.
 *
 * First run with the real ISO (2026-12-02, test image of this tree, 2-core machine shared with
 * other helpers): 7/7 passed in 764 s with the boot (boot-to-tiles 277 s). Ctrl+3 -> Lab's domain
 * listed 7.7 s, -> Lab active 30.4 s, -> READY 285.8 s (GRUB's "Booting" on its serial by 140 s;
 * then the console was silent, the kernel being quiet, until the agent's lines: the kernel and
 * initrd, 11.5 MB, read through SeaBIOS from the emulated IDE CD-ROM, and the kernel's boot, not
 * split further); the domain had used 46 s of CPU by then (lab-boot.json has the 30 s looks).
 * Second run (03:37, same image, host load average ~3.8 on 2 cores): 0/7, all in before(): the
 * services were active and personal and business running, but the kiosk's DevTools never answered
 * connectOverCDP within attachKiosk's 300 s (no tiles, no boot-to-tiles); the run's 415 s are that
 * wait. Not investigated further (no time left in that session).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
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
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e-person-xen');
const VM = (id: string) => `/org/bulkhead/VmManager1/vm/${id}`;
/** Where the image's vm-daemon keeps the person's VMs (its unit's --person-dir, --person-image-dir). */
/** Lab's serial port: the xl config's `serial = "file:..."` (the sidecar default serialLog). */
const LAB_SERIAL = '/run/bulkhead/vms/lab/serial.log';
/**
 * Lab's memory: the Linux test guest needs ~100 MiB; Xen has ~380 MiB left beside dom0 (2048) and
 * personal and business (320 each) in the outer 3 GiB.
 */
const LAB_MEMORY_MIB = 192;
/** How long Lab's boot may take before it counts as hung; the time is measured and printed. */
const LAB_BOOT_CAP_MS = 480_000;
const OPT_IN = process.env.BULKHEAD_E2E_XEN_PERSON === '1';
const fileStart = Date.now();

let m: ImageMachine;
let browser: Browser | undefined;
let page: Page;
let skip: string | false = false;

const labLines = (word: string) => guestConsoleLines(m, LAB_SERIAL, word);

before(async () => {
  if (!OPT_IN) {
    skip = 'opt-in (BULKHEAD_E2E_XEN_PERSON=1): one more Xen boot the image suite does not carry';
    return;
  }
  mkdirSync(artifacts, { recursive: true });
  const built = buildSticks(artifacts);
  if ('skip' in built) {
    skip = built.skip;
    return;
  }
  m = new ImageMachine({
    imageDir,
    artifactsDir: artifacts,
    entry: 'xen',
    extraQemuArgs: labStickDrive(built.lab),
  });
  await m.boot();
  await m.waitForServices(300_000, 2000);
  ({ browser, page } = await attachKiosk(m, {
    connectBoundMs: 300_000,
    pageBoundMs: 180_000,
    actionTimeoutMs: 120_000,
    shownBoundMs: 120_000,
  }));
});

after(async () => {
  if (m?.serial) {
    await m.saveOutput('journalctl -b --no-pager -u bulkhead-vm-daemon | tail -n 200', 'vm-daemon-tail.txt');
    await m.saveOutput(
      'xl list; cat /run/bulkhead/vms/lab/lab.cfg; xl dmesg | tail -n 60; tail -n 40 /var/log/xen/qemu-dm-lab.log',
      'xl.txt',
    );
    await m.saveOutput(`tail -c 20000 ${LAB_SERIAL}`, 'lab-serial-tail.txt');
  }
  await browser?.close().catch(() => undefined);
  await m?.shutdown();
  rmSync(join(artifacts, 'lab-stick.img'), { force: true });
  if (OPT_IN)
    console.log(`person-xen.e2e: ${((Date.now() - fileStart) / 1000).toFixed(0)} s wall time, boot included`);
});

test('1. a USB stick holding the test ISO is mounted read-only under /media/bulkhead', async (t) => {
  if (skip) return t.skip(skip);
  assert.equal(await m.activeVm(), '/', 'the tiles are in front: a new stick stays in the Control Domain');
  const opts = await plugLabStick(m);
  assert.match(opts, /^vfat /);
  for (const o of ['ro', 'nosuid', 'nodev', 'noexec'])
    assert.ok(opts.split(/[ ,]/).includes(o), `mounted ${o}: ${opts}`);
  assert.match(await m.serial.check(`ls -l ${ISO_IN_IMAGE}`), /17694720|guest\.iso/);
});

test('2. through the UI on the Xen entry: New machine "Lab" (slot 3, a 64 MiB disk, the ISO on the stick), written for the Xen backend; the dialog offers no shared Internet', async (t) => {
  if (skip) return t.skip(skip);
  assert.equal(
    (
      await m.busProperty(
        'org.bulkhead.VmManager1',
        '/org/bulkhead/VmManager1',
        'org.bulkhead.VmManager1',
        'Accelerator',
      )
    ).replace(/^s "|"$/g, ''),
    'xen',
  );
  console.log(`person-xen.e2e: Xen's ${(await m.serial.check("xl info | grep -E '^free_memory'")).trim()}`);
  await page.getByRole('button', { name: 'New machine' }).click({ noWaitAfter: true });
  const dialog = page.getByRole('dialog', { name: 'New machine' });
  await dialog.waitFor();
  const networks = await dialog.locator('[name=network] option').allInnerTexts();
  assert.deepEqual(networks, ['None (no shared Internet on the Xen boot entry)']);
  await dialog.locator('[name=name]').fill('Lab');
  await dialog.locator('[name=slot]').selectOption('3');
  await dialog.locator('[name=memory]').fill(String(LAB_MEMORY_MIB));
  await dialog.locator('[name=disk-size]').fill('64');
  await dialog.locator('[name=cdrom]').fill(ISO_IN_IMAGE);
  await page.screenshot({ path: join(artifacts, '2-new-machine.png') }).catch(() => undefined);
  await dialog.getByRole('button', { name: 'Create machine' }).click({ noWaitAfter: true });
  await dialog.waitFor({ state: 'detached', timeout: 120_000 }).catch(async (e) => {
    const said = await dialog
      .getByRole('alert')
      .innerText()
      .catch(() => '');
    throw new Error(`the dialog stayed open${said ? `, saying: ${said}` : ''}: ${(e as Error).message}`);
  });
  await page.getByRole('button', { name: /^Lab, slot 3/ }).waitFor();
  assert.equal(await m.vmProperty('lab', 'Owner'), 'person');
  assert.equal(await m.vmProperty('lab', 'Backend'), 'xen');
  assert.equal(await m.vmProperty('lab', 'Slot'), '3');
  assert.equal(await m.vmProperty('lab', 'Cdrom'), ISO_IN_IMAGE);
  assert.equal(await m.vmProperty('lab', 'Unavailable'), '');
  const doc = JSON.parse(
    await m.serial.check(`cat ${PERSON_VMS}/lab.json`).then((s) => s.slice(s.indexOf('{'))),
  ) as Record<string, unknown>;
  assert.equal(doc.backend, 'xen');
  assert.equal(doc.network, 'none');
  assert.equal(doc.cdrom, ISO_IN_IMAGE);
  const info = await m.serial.check(`qemu-img info --output=json ${PERSON_IMAGES}/lab.qcow2`);
  const disk = JSON.parse(info.slice(info.indexOf('{'))) as { format: string; 'virtual-size': number };
  assert.equal(disk.format, 'qcow2');
  assert.equal(disk['virtual-size'], 64 * 1024 * 1024);
});

test("3. Ctrl+3 starts and switches to Lab, an HVM domain booting the stick's ISO; its kernel says READY, and keys reach it and no other guest's", async (t) => {
  if (skip) return t.skip(skip);
  const p0 = (await m.xenGuestInput('personal')).length;
  const b0 = (await m.xenGuestInput('business')).length;
  const t0 = Date.now();
  await m.keys(['ctrl', '3']);
  const domids = await waitFor(
    'lab in xl list',
    async () => {
      const d = await m.xlDomids();
      return d.lab !== undefined ? d : null;
    },
    300_000,
    2000,
  );
  const listed = Date.now();
  await waitFor('Lab active', async () => (await m.activeVm()) === VM('lab'), 300_000, 2000);
  const active = Date.now();
  console.log(
    `person-xen.e2e: Ctrl+3 -> Lab's domain (domid ${domids.lab}) listed ${((listed - t0) / 1000).toFixed(1)} s, -> Lab active ${((active - t0) / 1000).toFixed(1)} s`,
  );
  const info = await m.serial.check('xl list -l lab');
  assert.match(info, /"type": "hvm"/, 'an HVM domain');
  const cfg = await m.serial.check('cat /run/bulkhead/vms/lab/lab.cfg');
  assert.match(cfg, /^type = "hvm"$/m);
  assert.match(cfg, new RegExp(`^memory = ${LAB_MEMORY_MIB}$`, 'm'));
  assert.match(cfg, /^usbctrl = \[ "type=devicemodel,version=2,ports=6" \]$/m);
  assert.match(
    cfg,
    /format=qcow2,vdev=hda,access=rw,backendtype=qdisk,target=\/var\/lib\/bulkhead\/person-images\/lab\.qcow2/,
  );
  assert.match(
    cfg,
    new RegExp(
      `format=raw,vdev=hdc,access=ro,devtype=cdrom,target=${ISO_IN_IMAGE.replace(/[./]/g, '\\$&')}"`,
    ),
    "the stick's ISO as its CD-ROM",
  );
  assert.match(cfg, /^boot = "dc"$/m, 'the CD-ROM first');
  assert.match(cfg, /^serial = "file:\/run\/bulkhead\/vms\/lab\/serial\.log"$/m);
  assert.equal(await m.vmProperty('lab', 'InputQmpSocket'), '/run/bulkhead/vms/lab/input-qmp.sock');
  assert.match(
    await m.serial.check('stat -c "%F %G" /run/bulkhead/vms/lab/vnc.sock'),
    /socket bulkhead-vnc/,
    "its screen as VNC for the switcher's VM view",
  );
  // The HVM guest under the outer TCG's emulated AMD-V, measured. Every 30 s the domain's CPU time
  // (xl list) and the console's size go into lab-boot.json, so a slow boot says where it was.
  const progress: Array<{ s: number; cpuS: string; consoleBytes: number; last: string }> = [];
  const look = async () => {
    const out = await m.serial.check(
      "xl list lab 2>/dev/null | awk 'NR==2 {print $6}' | grep . || echo -; " +
        `stat -c %s ${LAB_SERIAL} 2>/dev/null || echo 0; tail -c 300 ${LAB_SERIAL} 2>/dev/null | tr -cd '[:print:]\\n' | grep . | tail -n 1 || true`,
    );
    const [cpuS = '', bytes = '0', last = ''] = out.split('\n').map((l) => l.trim());
    progress.push({ s: Math.round((Date.now() - t0) / 1000), cpuS, consoleBytes: Number(bytes), last });
  };
  let lastLook = 0;
  let ready = 0;
  // A domain that ended while it booted (a crash, a reboot: on_reboot = "destroy") ends the wait,
  // named by vm-daemon's StateReason, rather than waiting out the cap.
  let ended = '';
  try {
    await waitFor(
      "Lab's kernel and agent up (BULKHEAD-LINUX-GUEST READY)",
      async () => {
        if (Date.now() - lastLook > 30_000) {
          lastLook = Date.now();
          await look();
        }
        if ((await labLines('BULKHEAD-LINUX-GUEST READY')).length > 0) return (ready = Date.now());
        const state = await m.vmProperty('lab', 'State');
        if (state !== 'running' && state !== 'starting')
          ended = `Lab ${state}: ${await m.vmProperty('lab', 'StateReason')}`;
        return ended;
      },
      LAB_BOOT_CAP_MS,
      3000,
    );
  } finally {
    await look().catch(() => undefined);
    const boot = {
      hotkeyToListedMs: listed - t0,
      hotkeyToActiveMs: active - t0,
      hotkeyToReadyMs: ready ? ready - t0 : null,
      capMs: LAB_BOOT_CAP_MS,
      memoryMiB: LAB_MEMORY_MIB,
      progress,
    };
    writeFileSync(join(artifacts, 'lab-boot.json'), JSON.stringify(boot, null, 2) + '\n');
    if (ready)
      recordBench('e2e/lab-boot/xen-hvm', {
        hotkeyToReadyMs: ready - t0,
        memoryMiB: LAB_MEMORY_MIB,
        at: new Date().toISOString(),
      });
    await m.serial
      .run(`cat -v ${LAB_SERIAL}`, { timeoutMs: 60_000 })
      .then((r) => writeFileSync(join(artifacts, 'lab-serial.txt'), r.output))
      .catch(() => undefined);
    await page.screenshot({ path: join(artifacts, '3-lab-boot.png') }).catch(() => undefined);
    console.log(
      `person-xen.e2e: Lab (Linux test guest from the ISO, Xen HVM, ${LAB_MEMORY_MIB} MiB): Ctrl+3 -> READY ${boot.hotkeyToReadyMs ?? `not within ${LAB_BOOT_CAP_MS}`} ms; domain CPU time ${progress.at(-1)?.cpuS} s`,
    );
  }
  assert.equal(ended, '', 'Lab ran until READY');
  assert.deepEqual(await labLines('BULKHEAD-LINUX-GUEST READY'), ['BULKHEAD-LINUX-GUEST READY name=Lab']);

  const keyLines = async () => keyEvents(await labLines('BULKHEAD-INPUT dev='));
  const k0 = (await keyLines()).length;
  await m.keys(['a'], ['s'], ['d']);
  await waitFor('Lab printed a s d', async () => (await keyLines()).length >= k0 + 6, 120_000, 1000);
  await new Promise((r) => setTimeout(r, 3000));
  // KEY_A=30, KEY_S=31, KEY_D=32: pressed and released, nothing else (no Ctrl or 3 of the chord).
  assert.deepEqual((await keyLines()).slice(k0), ASD_EVENTS);
  assert.equal((await m.xenGuestInput('personal')).length, p0, 'no key reached Personal');
  assert.equal((await m.xenGuestInput('business')).length, b0, 'no key reached Business');
});

test("3b. Eject in Lab's settings takes the medium out of the running domain (xl cd-eject) and out of its file", async (t) => {
  if (skip) return t.skip(skip);
  if ((await m.activeVm()) !== '/') await m.hotkeyTo(0, '/', 'the switcher active', 120_000);
  assert.equal(await m.vmProperty('lab', 'State'), 'running', 'Lab runs (scenario 3 started it)');
  await page.getByRole('button', { name: 'Settings of Lab' }).click({ noWaitAfter: true });
  const dialog = page.getByRole('dialog', { name: 'Settings of Lab' });
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Eject guest.iso' }).click({ noWaitAfter: true });
  await waitFor('Cdrom empty', async () => (await m.vmProperty('lab', 'Cdrom')) === '', 120_000, 2000);
  assert.equal(await m.vmProperty('lab', 'State'), 'running', 'ejected from the running domain');
  assert.equal(await m.vmProperty('lab', 'LastError'), '');
  const doc = JSON.parse(
    await m.serial.check(`cat ${PERSON_VMS}/lab.json`).then((s) => s.slice(s.indexOf('{'))),
  ) as Record<string, unknown>;
  assert.equal(doc.cdrom, undefined, 'the next start boots the disk');
  // libxl's record of the domain's CD-ROM: the medium is gone.
  assert.match(await m.serial.check('xl list -l lab | grep -E \'"pdev_path"\' || true'), /"pdev_path": ""/);
  await dialog.getByRole('button', { name: 'Close' }).click({ noWaitAfter: true });
});

test('4. Lab shut down from its tile; its colour and memory changed in Settings', async (t) => {
  if (skip) return t.skip(skip);
  if ((await m.activeVm()) !== '/') await m.hotkeyTo(0, '/', 'the switcher active', 120_000);
  if ((await m.vmProperty('lab', 'State')) !== 'stopped') {
    await page.getByRole('button', { name: 'Shut down Lab' }).click({ noWaitAfter: true });
    // The test guest does not act on the ACPI power button: vm-daemon destroys it after Stop's timeout.
    await waitFor(
      'Lab stopped',
      async () => (await m.vmProperty('lab', 'State')) === 'stopped',
      240_000,
      2000,
    );
  }
  assert.equal((await m.xlDomids()).lab, undefined, 'no domain left');
  const doc = await changeLabSettings(m, page, () =>
    page.screenshot({ path: join(artifacts, '4-lab-settings.png') }).then(
      () => undefined,
      () => undefined,
    ),
  );
  assert.equal(doc.color, '#c0392b');
  assert.equal(doc.memoryMiB, 256);
  assert.equal(doc.backend, 'xen');
});

test('5. delete Lab with its disk: the tile, the file and the disk are gone', async (t) => {
  if (skip) return t.skip(skip);
  const left = await deleteLabWithDisks(m, page, async (name) => {
    if (name === 'lab-deleted')
      await page.screenshot({ path: join(artifacts, '5-lab-deleted.png') }).catch(() => undefined);
  });
  assert.equal(left, '', 'no file or disk left');
  // The ISO stays on the stick: deleting a VM removes its disks, never its medium.
  assert.match(await m.serial.check(`ls -l ${ISO_IN_IMAGE}`), /guest\.iso/);
  assert.match(await m.serial.check(`findmnt -n -o FSTYPE /media/bulkhead/${STICK_LABEL}`), /vfat/);
});

test("6. a person's VM file made on the KVM entry is listed here as not available, and left as it was", async (t) => {
  if (skip) return t.skip(skip);
  const old = JSON.stringify({
    id: 'old',
    name: 'Old',
    slot: 5,
    color: '#808000',
    memoryMiB: 256,
    network: 'user',
    backend: 'qemu',
  });
  await m.serial.check(
    `echo '${old}' > ${PERSON_VMS}/old.json && chmod 644 ${PERSON_VMS}/old.json && sha256sum ${PERSON_VMS}/old.json`,
  );
  const sum = (await m.serial.check(`sha256sum ${PERSON_VMS}/old.json`)).trim();
  const tile = page.getByRole('button', { name: /^Old, slot 5 \(Ctrl\+5\), not on this boot entry/ });
  await tile.waitFor({ timeout: 60_000 });
  assert.equal(await tile.getAttribute('aria-disabled'), 'true');
  assert.match(await m.vmProperty('old', 'Unavailable'), /made on the Bulkhead \(KVM\) boot entry/);
  await page.screenshot({ path: join(artifacts, '6-old-unavailable.png') }).catch(() => undefined);
  assert.match(
    await m.serial.check(
      `busctl call org.bulkhead.VmManager1 ${VM('old')} org.bulkhead.Vm1 Start 'a{sv}' 0 2>&1 || true`,
    ),
    /made on the Bulkhead \(KVM\) boot entry/,
  );
  assert.equal(
    (await m.serial.check(`sha256sum ${PERSON_VMS}/old.json`)).trim(),
    sum,
    'the file is untouched',
  );
  assert.equal((await m.xlDomids()).old, undefined, 'no domain for it');
});
