/**
 * The USB stick a person installs "Lab" from (issue 18), shared by the files that do it on each
 * boot entry (vm-lifecycle.e2e.ts on the KVM entry, person-xen.e2e.ts on the Xen entry): the Linux
 * test guest's ISO (guests/linux/build.sh) on a FAT stick image, its hot-plug into the outer xHCI,
 * and the Linux guest's console lines (READY, BULKHEAD-INPUT) as the files read them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { ImageMachine } from './image-machine';
import { waitFor } from './wait';

const repo = join(__dirname, '..', '..');
const guestOut = join(repo, '.cache', 'linux-guest');

/** The stick's filesystem label: the Control Domain mounts it at /media/bulkhead/<label>. */
export const STICK_LABEL = 'LABSTICK';
/** The ISO as the image sees it once the stick is mounted. */
export const ISO_IN_IMAGE = `/media/bulkhead/${STICK_LABEL}/guest.iso`;
/** The QEMU drive id of the stick (`labStickDrive`), what `plugLabStick` plugs. */
const LAB_DRIVE = 'labstick';

export interface Sticks {
  /** The stick image holding the ISO (MBR, one FAT16 partition labelled STICK_LABEL). */
  lab: string;
  /** A stick image with a filesystem the Control Domain does not mount (ext2, label OTHERFS). */
  ext2: string;
}

/**
 * The Linux test guest's ISO (cached build, guests/linux/build.sh) on a FAT stick image in
 * `artifacts`, and an ext2 stick beside it; `{ skip }` when the ISO cannot be built here.
 */
export function buildSticks(artifacts: string): Sticks | { skip: string } {
  const r = spawnSync('bash', [join(repo, 'guests', 'linux', 'build.sh'), guestOut], {
    encoding: 'utf8',
    timeout: 15 * 60_000,
  });
  if (r.status === 75)
    return { skip: "the Linux guest ISO cannot be built: Debian's packages cannot be fetched" };
  if (r.status !== 0) throw new Error(`guests/linux/build.sh failed: ${(r.stderr ?? '').slice(-2000)}`);
  const stick = join(artifacts, 'lab-stick.img');
  rmSync(stick, { force: true });
  const run = (cmd: string, args: string[]) => {
    const x = spawnSync(cmd, args, { encoding: 'utf8' });
    if (x.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${x.stderr}`);
  };
  // As a person's stick: an MBR with one FAT partition (type 0x0c) from 1 MiB, FAT16 on it (mtools:
  // build.sh installs it), the ISO (17 MiB) in it. (A FAT without a partition table can be misread
  // by the kernel as an MBR with a garbage partition: it saw an sda1 it could not mount.)
  const sectors = (40 * 1024 * 1024) / 512;
  const mbr = Buffer.alloc(512);
  mbr[446 + 4] = 0x0c;
  mbr.writeUInt32LE(2048, 446 + 8);
  mbr.writeUInt32LE(sectors - 2048, 446 + 12);
  mbr.writeUInt16LE(0xaa55, 510);
  writeFileSync(stick, mbr);
  run('truncate', ['-s', '40M', stick]);
  const part = `${stick}@@1M`;
  run('mformat', [
    '-i',
    part,
    '-v',
    STICK_LABEL,
    '-H',
    '2048',
    '-T',
    String(sectors - 2048),
    '-h',
    '64',
    '-s',
    '32',
    '::',
  ]);
  run('mcopy', ['-i', part, join(guestOut, 'guest.iso'), '::guest.iso']);
  // A stick with a filesystem the Control Domain does not mount (ext2: its driver is not one of
  // vfat, exfat, ext4, iso9660 it accepts).
  const other = join(artifacts, 'ext2-stick.img');
  rmSync(other, { force: true });
  run('mke2fs', ['-q', '-F', '-t', 'ext2', '-L', 'OTHERFS', other, '8M']);
  return { lab: stick, ext2: other };
}

/** The outer QEMU's drive for the lab stick (ImageMachine's extraQemuArgs), plugged later. */
export function labStickDrive(stick: string): string[] {
  return ['-drive', `if=none,id=${LAB_DRIVE},file=${stick},format=raw,readonly=on`];
}

/**
 * Hot-plugs the lab stick into the outer xHCI (usb-storage, serial BULKHEADLAB1, device id
 * labstick0) and waits until the Control Domain has mounted it; gives findmnt's FSTYPE,OPTIONS.
 */
export async function plugLabStick(m: ImageMachine): Promise<string> {
  await m.qmp.execute('device_add', {
    driver: 'usb-storage',
    drive: LAB_DRIVE,
    bus: 'xhci.0',
    id: 'labstick0',
    serial: 'BULKHEADLAB1',
  });
  return waitFor(
    `the stick mounted at /media/bulkhead/${STICK_LABEL}`,
    async () =>
      (await m.serial.run(`findmnt -n -o FSTYPE,OPTIONS /media/bulkhead/${STICK_LABEL}`)).output.trim(),
    90_000,
    1000,
  );
}

/**
 * The Linux guest's console lines starting with `word`, from `log` in the image (a serial log
 * file). Only grep's own lines: the image's kernel prints on the same serial console, and its line
 * in the middle of this output ('kvm [754]: vcpu0 ... Unhandled WRMSR(0xc0010007)', when Lab's
 * kernel starts) was once taken for READY, 60 s before Lab was up (a fresh-clone run, 2026-12-01).
 */
export async function guestConsoleLines(m: ImageMachine, log: string, word: string): Promise<string[]> {
  const out = await m.serial.check(`grep -a '^${word}' ${log} || true`);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith(word));
}

/** The key events (EV_KEY, type 1) among the guest's BULKHEAD-INPUT lines, as 'code=N value=V'. */
export function keyEvents(inputLines: string[]): string[] {
  return inputLines.filter((l) => / type=1 /.test(l)).map((l) => l.replace(/^.* type=1 /, ''));
}

/** KEY_A, KEY_S, KEY_D pressed and released, in that order: what `m.keys(['a'], ['s'], ['d'])` gives. */
export const ASD_EVENTS = [
  'code=30 value=1',
  'code=30 value=0',
  'code=31 value=1',
  'code=31 value=0',
  'code=32 value=1',
  'code=32 value=0',
];

/** Where the image's vm-daemon keeps the person's VMs and their disks (--person-dir, --person-image-dir). */
export const PERSON_VMS = '/var/lib/bulkhead/person-vms';
export const PERSON_IMAGES = '/var/lib/bulkhead/person-images';

/**
 * Through Lab's Settings (Lab stopped): colour #c0392b and 256 MiB, saved; waits until vm-daemon's
 * properties say so and returns Lab's VM file as written (the caller asserts on it). `shot` is
 * taken with the dialog filled in, before Save.
 */
export async function changeLabSettings(
  m: ImageMachine,
  page: Page,
  shot: () => Promise<void>,
): Promise<Record<string, unknown>> {
  await page.getByRole('button', { name: 'Settings of Lab' }).click({ noWaitAfter: true });
  const dialog = page.getByRole('dialog', { name: 'Settings of Lab' });
  await dialog.waitFor();
  await dialog.locator('[name=color]').fill('#c0392b');
  await dialog.locator('[name=memory]').fill('256');
  await shot();
  await dialog.getByRole('button', { name: 'Save' }).click({ noWaitAfter: true });
  await waitFor(
    'the new colour and memory',
    async () =>
      (await m.vmProperty('lab', 'Color')) === '#c0392b' &&
      (await m.vmProperty('lab', 'MemoryMiB')) === '256',
    60_000,
    1000,
  );
  const text = await m.serial.check(`cat ${PERSON_VMS}/lab.json`);
  const file = JSON.parse(text.slice(text.indexOf('{'))) as Record<string, unknown>;
  if (await dialog.isVisible())
    await dialog.getByRole('button', { name: 'Close' }).click({ noWaitAfter: true });
  return file;
}

/**
 * Deletes Lab from its Settings with its disks (asserts the confirmation's "remove disks" is
 * checked by default) and waits for its tile to go. `shot(name)` is taken at the confirmation and
 * after. Returns what is left in the person's VM and image dirs ('' when nothing).
 */
export async function deleteLabWithDisks(
  m: ImageMachine,
  page: Page,
  shot: (name: 'lab-delete-confirm' | 'lab-deleted') => Promise<void>,
): Promise<string> {
  await page.getByRole('button', { name: 'Settings of Lab' }).click({ noWaitAfter: true });
  const dialog = page.getByRole('dialog', { name: 'Settings of Lab' });
  await dialog.getByRole('button', { name: 'Delete…' }).click({ noWaitAfter: true });
  const confirm = dialog.getByRole('alertdialog');
  await confirm.waitFor();
  assert.equal(await confirm.locator('[name=remove-disks]').isChecked(), true, 'remove disks is the default');
  await shot('lab-delete-confirm');
  await confirm.getByRole('button', { name: 'Delete Lab' }).click({ noWaitAfter: true });
  await page.getByRole('button', { name: /^Lab, slot 3/ }).waitFor({ state: 'detached', timeout: 60_000 });
  await shot('lab-deleted');
  return (await m.serial.check(`ls -A ${PERSON_VMS} ${PERSON_IMAGES}`)).replace(/^\S+:$/gm, '').trim();
}
