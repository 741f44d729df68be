/**
 * The production flavour of the Control Domain image (FLAVOUR=production, `npm run image`), checked
 * the way an attacker or the person would meet it: its disk read offline, then booted and observed
 * from outside only — the serial console, the forwarded TCP ports, the screen (QMP screendump) and
 * the keyboard (QMP). It has no root shell, no DevTools and no test probe to help.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './wait';
import { ImageMachine, readImageVms } from './image-machine';
import { classify, readPpm, type SeenPicture } from './screen-picture';

const repo = join(__dirname, '..', '..');
const imageDir = process.env.BULKHEAD_PRODUCTION_IMAGE_DIR ?? join(repo, '.cache', 'image');
const artifacts = join(repo, 'artifacts', 'e2e-production');
/** What the person chooses at first start (typed at the keyboard: letters, digits and '-'). */
const OWNER_PASSWORD = 'first-start-7';

const imageVms = readImageVms();

let m: ImageMachine;
let disk: string;

/** What the outer screen shows now (one QMP screendump). */
async function screen(): Promise<{ seen: SeenPicture; lit: number }> {
  const ppm = join(artifacts, 'screen.ppm');
  await m.qmp.execute('screendump', { filename: ppm });
  const p = readPpm(ppm);
  unlinkSync(ppm);
  // Share of pixels that are not (near) black: text on the console, or any page.
  let lit = 0;
  for (let i = 0; i < p.rgb.length; i += 3) if (p.rgb[i] + p.rgb[i + 1] + p.rgb[i + 2] > 90) lit++;
  return { seen: classify(p, imageVms), lit: lit / (p.rgb.length / 3) };
}

/** The disk's GPT partition `n` (sgdisk): its first byte and its type GUID. */
function partition(n: number): { offset: number; type: string } {
  const r = spawnSync('sgdisk', ['--info', String(n), disk], { encoding: 'utf8' });
  const first = /First sector: (\d+)/.exec(r.stdout);
  const type = /Partition GUID code: ([0-9A-F-]+)/i.exec(r.stdout);
  if (r.status !== 0 || !first || !type)
    throw new Error(`sgdisk --info ${n} ${disk}: ${r.stdout}${r.stderr}`);
  return { offset: Number(first[1]) * 512, type: type[1].toUpperCase() };
}

/**
 * Reads files out of the disk's root file system (ext4, GPT partition 2) without mounting it
 * (debugfs, read-only, at the partition's offset).
 */
function dumpFromDisk(paths: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-prod-disk-'));
  const fs = `${disk}?offset=${partition(2).offset}`;
  for (const p of paths) {
    const target = join(dir, p);
    mkdirSync(target, { recursive: true });
    const r = spawnSync('debugfs', ['-R', `rdump ${p} ${target}`, fs], { encoding: 'utf8' });
    if (r.status !== 0 || /^rdump: /m.test(r.stderr)) throw new Error(`debugfs rdump ${p}: ${r.stderr}`);
  }
  return dir;
}

before(() => {
  mkdirSync(artifacts, { recursive: true });
  disk = join(imageDir, 'disk.img');
  assert.ok(existsSync(disk), `${disk} is missing (npm run image)`);
});

after(async () => {
  await m?.shutdown();
});

test('1. offline: production is production — root locked, owner without a password yet, no enabled unit listens on TCP, no DevTools, no autologin, no test layer', () => {
  const root = dumpFromDisk(['/etc', '/usr/lib/systemd/system', '/usr/local']);
  try {
    const f = (p: string) => readFileSync(join(root, p), 'utf8');
    assert.equal(f('etc/etc/bulkhead/flavour').trim(), 'production');
    const shadow = new Map(
      f('etc/etc/shadow')
        .split('\n')
        .map((l) => l.split(':'))
        .map((x) => [x[0], x[1]] as const),
    );
    assert.match(shadow.get('root') ?? '', /^!/, 'root is locked');
    assert.match(
      shadow.get('owner') ?? 'missing',
      /^!\*?$/,
      'owner exists without a password (first start asks)',
    );
    assert.equal(existsSync(join(root, 'usr/local/local/bin/bulkhead-test-call')), false, 'no test probe');

    // Every enabled unit, with its drop-ins: what systemd will run at boot.
    const etcUnits = join(root, 'etc/etc/systemd/system');
    const libUnits = join(root, 'usr/lib/systemd/system/system');
    const unitText = (name: string) => {
      const template = name.replace(/@[^.]+\./, '@.');
      const texts: string[] = [];
      for (const dir of [libUnits, etcUnits]) {
        for (const n of new Set([template, name])) {
          if (existsSync(join(dir, n)) && !n.endsWith('.d')) texts.push(readFileSync(join(dir, n), 'utf8'));
          const d = join(dir, `${n}.d`);
          if (existsSync(d))
            for (const c of readdirSync(d))
              if (c.endsWith('.conf')) texts.push(readFileSync(join(d, c), 'utf8'));
        }
      }
      return texts.join('\n');
    };
    const enabled = readdirSync(etcUnits)
      .filter((d) => d.endsWith('.wants'))
      .flatMap((d) => readdirSync(join(etcUnits, d)));
    assert.ok(enabled.includes('bulkhead-kiosk.service') && enabled.includes('serial-getty@ttyS0.service'));
    assert.ok(enabled.includes('bulkhead-first-boot.service'));
    // Masked units (a link to /dev/null, e.g. getty@tty1: the kiosk owns tty1) never start.
    const masked = (name: string) => {
      try {
        return readlinkSync(join(etcUnits, name)) === '/dev/null';
      } catch {
        return false;
      }
    };
    for (const name of enabled.filter((n) => !masked(n))) {
      const text = unitText(name);
      assert.ok(text, `unit file of enabled ${name} found`);
      assert.doesNotMatch(
        text,
        /^Listen(Stream|Datagram|SequentialPacket)=\s*(\S*:)?\d+\s*$/m,
        `${name}: a TCP/UDP socket`,
      );
      assert.doesNotMatch(
        text,
        /socat|TCP-LISTEN|remote-debugging|BULKHEAD_KIOSK_DEVTOOLS_PORT/,
        `${name}: DevTools`,
      );
      assert.doesNotMatch(text, /--autologin|-a root/, `${name}: autologin`);
    }
    // The one TCP listener: the web host, on a loopback address (its code takes 127.x.y.z only),
    // and not 127.0.0.1, which guests on QEMU's user-mode network reach through 10.0.2.2.
    const hosts = enabled.filter((n) => /--port \d+/.test(unitText(n)));
    assert.deepEqual(hosts, ['bulkhead-switcher.service']);
    assert.match(unitText('bulkhead-switcher.service'), / --listen 127\.0\.0\.2 /);
    const kiosk = f('usr/local/local/lib/bulkhead/kiosk.js');
    assert.doesNotMatch(kiosk, /--no-sandbox/, "Chromium's sandbox stays on");
    assert.match(kiosk, /--remote-debugging-pipe/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("1b. offline: a UEFI disk as a laptop boots it — GPT with an EFI system partition holding Debian's signed shim and GRUB at the removable-media path, a menu with Bulkhead (Xen) first and Bulkhead (KVM), nothing only emulation needs, fstab by PARTUUID", () => {
  const esp = partition(1);
  assert.equal(esp.type, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'partition 1 is an EFI system partition');
  assert.equal(
    partition(2).type,
    '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
    'partition 2 is a Linux x86-64 root',
  );
  const espFile = (path: string) => {
    const r = spawnSync('mtype', ['-i', `${disk}@@${esp.offset}`, `::${path}`], {
      encoding: 'latin1',
      maxBuffer: 64 * 1024 * 1024,
    });
    assert.equal(r.status, 0, `${path} on the ESP: ${r.stderr}`);
    return Buffer.from(r.stdout, 'latin1');
  };
  // shim at the path firmware boots without a boot entry, Debian's GRUB next to it: both PE images
  // with an Authenticode signature (a certificate table), as Secure Boot needs.
  for (const path of ['/EFI/BOOT/BOOTX64.EFI', '/EFI/BOOT/grubx64.efi']) {
    const pe = espFile(path);
    assert.equal(pe.subarray(0, 2).toString('latin1'), 'MZ', `${path} is a PE image`);
    const nt = pe.readUInt32LE(0x3c);
    assert.equal(pe.subarray(nt, nt + 4).toString('latin1'), 'PE\0\0', `${path}: PE header`);
    const opt = nt + 24;
    assert.equal(pe.readUInt16LE(opt), 0x20b, `${path} is PE32+ (x86_64)`);
    // Data directory 4 (the certificate table) of a PE32+ optional header: offset 112 + 4 * 8.
    assert.ok(pe.readUInt32LE(opt + 112 + 4 * 8 + 4) > 0, `${path} is signed`);
  }
  assert.match(espFile('/EFI/BOOT/BOOTX64.EFI').toString('latin1'), /shim/i, 'BOOTX64.EFI is shim');
  assert.match(espFile('/EFI/debian/grub.cfg').toString('latin1'), /configfile \/boot\/grub\/grub\.cfg/);
  const root = dumpFromDisk(['/boot/grub', '/etc/fstab']);
  try {
    const menu = readFileSync(join(root, 'boot/grub/grub/grub.cfg'), 'utf8');
    const entries = [...menu.matchAll(/^menuentry '([^']+)' --id (\w+)/gm)].map((x) => `${x[1]}=${x[2]}`);
    assert.deepEqual(entries, ['Bulkhead (Xen)=xen', 'Bulkhead (KVM)=kvm']);
    assert.match(menu, /^set default=xen$/m, 'Xen is the default');
    assert.match(menu, /^\s*multiboot2 \/boot\/xen-[\w.-]+\.gz /m);
    assert.match(menu, /^\s*module2 \/boot\/vmlinuz-\S+ placeholder root=PARTUUID=/m);
    // multiboot2 (Xen) is a module the signed GRUB loads from here with Secure Boot off.
    assert.ok(
      existsSync(join(root, 'boot/grub/grub/x86_64-efi/multiboot2.mod')),
      'multiboot2.mod beside the menu',
    );
    // Only the e2e's QEMU adds these (e2e/src/image-machine.ts, ENTRY_ARGS), never the disk.
    const commands = menu
      .split('\n')
      .filter((l) => !/^\s*#/.test(l))
      .join('\n');
    assert.doesNotMatch(
      commands,
      /console=ttyS0|console=com1|console=hvc0|spec-ctrl|modprobe\.blacklist|smap/,
    );
    const partuuid = /root=PARTUUID=([0-9a-f-]{36})/.exec(menu)?.[1];
    assert.ok(partuuid, 'the kernel finds its root by PARTUUID');
    assert.match(
      readFileSync(join(root, 'etc/fstab/fstab'), 'utf8'),
      new RegExp(`^PARTUUID=${partuuid} / ext4 `, 'm'),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('2. booted: the serial console asks for a login and refuses root with an empty password', async () => {
  m = new ImageMachine({ imageDir, artifactsDir: artifacts, rootShell: false });
  await m.boot();
  await m.serial.waitForOutput(/login: $/m, 300_000);
  let from = m.serial.output.length;
  m.serial.send('root\n');
  await m.serial.waitForOutput(/Password: ?$/m, 30_000, from);
  from = m.serial.output.length;
  m.serial.send('\n');
  await m.serial.waitForOutput(/Login incorrect/, 60_000, from);
  assert.doesNotMatch(m.serial.output.slice(from), /root@bulkhead-dom0/, 'no root shell');
});

test('3. first start asks on the screen for the password; once set, the kiosk shows the tiles', async () => {
  // The first-start prompt is the only text on tty1 (the kernel's console is the serial port).
  await waitFor(
    'the first-start prompt on the screen',
    async () => (await screen()).lit > 0.001,
    300_000,
    500,
  );
  await m.screendump('first-start');
  // passwd: "New password:", then "Retype new password:". Typed like a person, with pauses.
  await new Promise((r) => setTimeout(r, 5000));
  await m.typeText(`${OWNER_PASSWORD}\n`);
  await new Promise((r) => setTimeout(r, 3000));
  await m.typeText(`${OWNER_PASSWORD}\n`);
  await waitFor(
    'the kiosk showing the tiles',
    async () => (await screen()).seen.kind === 'tiles',
    420_000,
    500,
  );
  await m.screendump('tiles');
});

test("4. nothing answers on any forwarded port: Chromium's DevTools (9222), the test flavour's forward (9223), the web host (8080, loopback only)", async () => {
  for (const [what, port] of [
    ['DevTools 9222', m.devtoolsPort],
    ['forward 9223', m.cdpPort],
    ['web host 8080', m.switcherPort],
  ] as const) {
    await assert.rejects(
      fetch(`http://127.0.0.1:${port}/json/version`, { signal: AbortSignal.timeout(15_000) }),
      `${what}: refused`,
    );
  }
});

test('5. the lock screen: a wrong password keeps the seat locked; the password chosen at first start unlocks it', async () => {
  await m.keys(['ctrl', 'alt', 'backspace']);
  await waitFor('the lock screen', async () => (await screen()).seen.kind !== 'tiles', 60_000, 500);
  await m.screendump('locked');
  await m.typeText('wrong-guess\n');
  // input-daemon backs off after a failure (1 s, then doubling): let the wait pass, then retry.
  await new Promise((r) => setTimeout(r, 8000));
  assert.notEqual((await screen()).seen.kind, 'tiles', 'still locked after a wrong password');
  await m.screendump('wrong-password');
  await m.typeText(`${OWNER_PASSWORD}\n`);
  await waitFor(
    'the tiles again after the right password',
    async () => (await screen()).seen.kind === 'tiles',
    120_000,
    500,
  );
});
