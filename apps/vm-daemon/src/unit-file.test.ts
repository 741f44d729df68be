/**
 * The image's bulkhead-vm-daemon.service and the daemon agree (issue 18): the arguments of its
 * ExecStart, parsed by the daemon's own parseArgs, put the person's VMs and disks in directories
 * the unit's sandbox lets it write, never in the admin's dir; the media root (where ISOs and
 * imports come from) is the directory the image mounts USB sticks under, and stays read-only to
 * the daemon and its QEMUs. A typo in the unit would otherwise show only in the image (CreateVm
 * failing with EROFS, or every ISO refused as outside the media roots).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { parseArgs } from './main';

const REPO = resolve(__dirname, '..', '..', '..');
const OVERLAY = join(REPO, 'dom0-rootfs', 'overlay');
const UNIT = join(OVERLAY, 'etc/systemd/system/bulkhead-vm-daemon.service');

/** Every value of `key=` in the unit (systemd: repeated keys add up), split on spaces. */
function values(unit: string, key: string): string[] {
  return unit
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .flatMap((l) => l.slice(key.length + 1).split(/\s+/))
    .filter(Boolean);
}

/** The daemon's arguments as its ExecStart= gives them, parsed by the daemon itself. */
function daemonArgs(unit: string) {
  const exec = values(unit, 'ExecStart');
  const main = exec.findIndex((a) => a.endsWith('/vm-daemon/dist/main.js'));
  assert.ok(main > 0, `ExecStart runs vm-daemon's main.js: ${exec.join(' ')}`);
  return parseArgs(exec.slice(main + 1), {});
}

const under = (p: string, dir: string) => p === dir || p.startsWith(dir.endsWith(sep) ? dir : dir + sep);

test("the unit's ExecStart puts the person's VMs in writable dirs of their own and reads media from the stick mounts only", () => {
  const unit = readFileSync(UNIT, 'utf8');
  const args = daemonArgs(unit);
  assert.equal(args.personDir, '/var/lib/bulkhead/person-vms');
  assert.equal(args.personImageDir, '/var/lib/bulkhead/person-images');
  assert.deepEqual(args.mediaRoots, ['/media/bulkhead']);
  assert.ok(!under(args.personDir, args.configDir) && !under(args.configDir, args.personDir));

  // ProtectSystem=strict: only StateDirectory= (under /var/lib), RuntimeDirectory= (under /run)
  // and ReadWritePaths= are writable.
  assert.deepEqual(values(unit, 'ProtectSystem'), ['strict']);
  const writable = [
    ...values(unit, 'StateDirectory').map((d) => `/var/lib/${d}`),
    ...values(unit, 'RuntimeDirectory').map((d) => `/run/${d}`),
    ...values(unit, 'ReadWritePaths').map((d) => d.replace(/^-/, '')),
  ];
  for (const [what, dir] of [
    ['state dir', args.stateDir],
    ['run dir', args.runDir],
    ["person's VM dir", args.personDir],
    ["person's image dir", args.personImageDir],
  ])
    assert.ok(
      writable.some((w) => under(dir, w)),
      `${what} ${dir} is writable (${writable.join(' ')})`,
    );
  assert.ok(!writable.some((w) => under(args.configDir, w)), "the admin's VM dir stays read-only");
  for (const root of args.mediaRoots)
    assert.ok(!writable.some((w) => under(root, w) || under(w, root)), `${root} stays read-only`);
  assert.ok(
    !writable.some((w) => w === '/var/lib/bulkhead'),
    'not the whole /var/lib/bulkhead (usb-daemon keeps its state there)',
  );
});

test('the media root is where the image mounts USB sticks (bulkhead-media, tmpfiles.d)', () => {
  const script = readFileSync(join(OVERLAY, 'usr/local/sbin/bulkhead-media'), 'utf8');
  const tmpfiles = readFileSync(join(OVERLAY, 'etc/tmpfiles.d/bulkhead-media.conf'), 'utf8');
  const args = daemonArgs(readFileSync(UNIT, 'utf8'));
  assert.match(script, new RegExp(`^ROOT=${args.mediaRoots[0]}$`, 'm'));
  assert.match(tmpfiles, new RegExp(`^d ${args.mediaRoots[0]} 0755 root root -$`, 'm'));
  // Mounted read-only, without set-uid programs, device nodes or executables: the Control Domain
  // parses a filesystem it cannot trust and hands files from it to QEMU only.
  assert.match(script, /^opts=ro,nosuid,nodev,noexec$/m);
  assert.match(script, /^ALLOWED='vfat exfat ext4 iso9660'$/m);
});

test("on the Xen entry, the unit's drop-in lets xl write where libxl writes, and tmpfiles makes each of those dirs", () => {
  const dropIn = readFileSync(
    join(OVERLAY, 'etc/systemd/system/bulkhead-vm-daemon.service.d/xen.conf'),
    'utf8',
  );
  const writable = values(dropIn, 'ReadWritePaths').map((d) => d.replace(/^-/, ''));
  // libxl's user data and locks, the crash dumps of on_crash=coredump-destroy (the backend's
  // default dump dir), its own QMP sockets, xl's lock, the device models' logs.
  for (const dir of ['/var/lib/xen', '/var/lib/xen/dump', '/run/xen', '/run/lock', '/var/log/xen'])
    assert.ok(
      writable.some((w) => under(dir, w)),
      `${dir} is writable for vm-daemon's xl (drop-in: ${writable.join(' ')})`,
    );
  const made = readFileSync(join(OVERLAY, 'etc/tmpfiles.d/bulkhead-xen.conf'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('d '))
    .map((l) => l.split(/\s+/)[1]);
  // /run/lock is systemd's own; every other path must exist before the unit starts to be bound.
  for (const w of writable.filter((w) => w !== '/run/lock'))
    assert.ok(made.includes(w), `tmpfiles makes ${w} (it makes ${made.join(' ')})`);
});
