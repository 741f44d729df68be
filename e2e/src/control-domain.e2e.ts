/**
 * The whole mission, in the Control Domain image booted under QEMU: driven only from outside, as a
 * person at the machine would — keys and mouse through QMP on the outer QEMU, USB devices
 * hot-plugged into its xHCI controller, the UI through Chromium's DevTools (CDP). What only the
 * inside can show (the nested test VMs' serial logs, daemon state) is read over the serial console.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ImageMachine } from './image-machine';

const repo = join(__dirname, '..', '..');
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image');
const artifacts = join(repo, 'artifacts', 'e2e');
const VM = (id: string) => `/org/bulkhead/VmManager1/vm/${id}`;

let m: ImageMachine;
let browser: Browser;
let page: Page;
let step = 0;

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | false | null | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A property of a daemon, read inside the image with busctl (e.g. 's "running"'). */
async function prop(dest: string, path: string, iface: string, name: string): Promise<string> {
  const out = await m.serial.check(`busctl get-property ${dest} ${path} ${iface} ${name}`);
  return out.trim();
}
const activeVm = async () =>
  (
    await prop('org.bulkhead.VmManager1', '/org/bulkhead/VmManager1', 'org.bulkhead.VmManager1', 'ActiveVm')
  ).replace(/^o "|"$/g, '');
const vmState = async (id: string) =>
  (await prop('org.bulkhead.VmManager1', VM(id), 'org.bulkhead.Vm1', 'State')).replace(/^s "|"$/g, '');

/** The input lines (KEY/BTN/REL) a nested test VM has printed on its serial port so far. */
async function guestInput(id: string): Promise<string[]> {
  const out = await m.serial.check(`grep -E '^(KEY|BTN|REL) ' /run/bulkhead/vms/${id}/serial.log || true`);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

async function shot(name: string): Promise<void> {
  step++;
  const base = `${String(step).padStart(2, '0')}-${name}`;
  await page.screenshot({ path: join(artifacts, `${base}.cdp.png`) }).catch(() => undefined);
  await m.screendump(`${base}.screen`).catch(() => undefined);
}

/** Connect over CDP and find the kiosk's page; reopen it if Chromium's first navigation hung. */
async function connectKiosk(): Promise<void> {
  // Attach only once the switcher page has loaded (its title is set): Playwright's attach waits
  // for every target, and a page hung in its first navigation never answers. The image's kiosk
  // watchdog replaces such a page (dom0-rootfs/overlay/usr/local/lib/bulkhead/kiosk-watchdog.js).
  await waitFor(
    'the kiosk showing the switcher',
    async () => {
      const res = await fetch(`http://127.0.0.1:${m.cdpPort}/json/list`, {
        signal: AbortSignal.timeout(10_000),
      });
      const targets = (await res.json()) as Array<{ type: string; url: string; title: string }>;
      return targets.some((t) => t.type === 'page' && t.url.includes(':8080') && t.title === 'Bulkhead');
    },
    300_000,
  );
  browser = await waitFor(
    'Chromium DevTools',
    () => chromium.connectOverCDP(`http://127.0.0.1:${m.cdpPort}`, { timeout: 60_000 }),
    240_000,
  );
  const ctx = browser.contexts()[0];
  page = await waitFor(
    'the switcher page',
    async () => ctx.pages().find((p) => p.url().includes(':8080')),
    120_000,
  );
  // Everything runs under TCG, twice nested for the VMs: be patient, not flaky.
  page.setDefaultTimeout(90_000);
  const ok = await page
    .getByRole('list', { name: 'Machines' })
    .waitFor({ timeout: 30_000 })
    .then(
      () => true,
      () => false,
    );
  if (!ok) {
    // Seen on cold boots: the first navigation stays blank. A fresh target loads normally.
    const url = page.url();
    page = await ctx.newPage();
    page.setDefaultTimeout(90_000);
    await page.goto(url);
    await page.getByRole('list', { name: 'Machines' }).waitFor({ timeout: 60_000 });
  }
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  m = new ImageMachine({ imageDir, artifactsDir: artifacts });
  await m.boot();
  await waitFor(
    'the Bulkhead services',
    async () =>
      (
        await m.serial.run(
          'systemctl is-active bulkhead-vm-daemon bulkhead-input-daemon bulkhead-usb-daemon bulkhead-switcher bulkhead-kiosk',
        )
      ).code === 0,
    180_000,
  );
  await connectKiosk();
});

after(async () => {
  if (m) {
    const save = (cmd: string, file: string) =>
      m.serial
        ?.run(cmd, { timeoutMs: 30_000 })
        .then((r) => writeFileSync(join(artifacts, file), r.output))
        .catch(() => undefined);
    await save('journalctl -b --no-pager -u "bulkhead-*" -u dbus | tail -n 400', 'journal-tail.txt');
    await save(
      'journalctl -b --no-pager -u bulkhead-kiosk | grep -v "^$" | tail -n 300',
      'kiosk-journal.txt',
    );
    await save('dmesg | tail -n 100', 'dmesg-tail.txt');
    await save(
      'journalctl -b --no-pager -o short-precise | grep -v "input-daemon/evdev" | tail -n 1500',
      'journal-full-tail.txt',
    );
  }
  await browser?.close().catch(() => undefined);
  await m?.shutdown();
});

test('1. at boot the tiles show both VMs; clicking Personal switches to it', async () => {
  await page.getByRole('button', { name: /^Personal, slot 1/ }).waitFor();
  await page.getByRole('button', { name: /^Business, slot 2/ }).waitFor();
  await waitFor(
    'both VMs running',
    async () => (await vmState('personal')) === 'running' && (await vmState('business')) === 'running',
    120_000,
  );
  await shot('tiles');
  await page.getByRole('button', { name: /^Personal, slot 1/ }).click({ noWaitAfter: true });
  await waitFor('Personal active', async () => (await activeVm()) === VM('personal'));
  // The shell shows the VM's own screen (its VNC display): the test guest fills it with its color.
  await page.getByRole('region', { name: 'Personal display' }).waitFor();
  await waitFor(
    'the personal screen in the VM view',
    async () => {
      const px = await page.evaluate(() => {
        const c = document.querySelector('.vm-view canvas') as HTMLCanvasElement | null;
        return c ? [...c.getContext('2d')!.getImageData(c.width / 2, c.height - 10, 1, 1).data] : null;
      });
      return px && px[0] === 0x2a && px[1] === 0x6f && px[2] === 0xdb;
    },
    30_000,
  );
  await shot('personal-active');
});

test('2. keys reach only the active VM; Ctrl+2 switches and reaches no VM; a held button is released in the VM left behind', async () => {
  assert.equal(await activeVm(), VM('personal'));
  const p0 = (await guestInput('personal')).length;
  const b0 = (await guestInput('business')).length;
  await m.keys(['a'], ['s'], ['d']);
  await waitFor('personal got a s d', async () => (await guestInput('personal')).length >= p0 + 6, 20_000);
  await m.button('left', true); // held across the switch
  await new Promise((r) => setTimeout(r, 300));
  await m.keys(['ctrl', '2']);
  await waitFor('Business active', async () => (await activeVm()) === VM('business'));
  await m.button('left', false);
  await m.keys(['j'], ['k'], ['l']);
  await waitFor('business got j k l', async () => (await guestInput('business')).length >= b0 + 6, 20_000);
  await new Promise((r) => setTimeout(r, 1000));
  const p = (await guestInput('personal')).slice(p0);
  const b = (await guestInput('business')).slice(b0);
  await shot('business-after-ctrl2');
  // Personal: exactly a s d, then the held button pressed and released, nothing of the chord.
  assert.deepEqual(p, [
    'KEY down 1e',
    'KEY up 1e',
    'KEY down 1f',
    'KEY up 1f',
    'KEY down 20',
    'KEY up 20',
    'BTN down left',
    'BTN up left',
  ]);
  // Business: exactly j k l; no chord key, no release of a button it never saw pressed.
  assert.deepEqual(b, ['KEY down 24', 'KEY up 24', 'KEY down 25', 'KEY up 25', 'KEY down 26', 'KEY up 26']);
});

test('3. Ctrl+0 returns to the switcher; the secure-attention chord locks and no key reaches any VM until unlocked', async () => {
  await m.keys(['ctrl', '0']);
  await waitFor('the switcher active', async () => (await activeVm()) === '/');
  await page.getByRole('list', { name: 'Machines' }).waitFor();
  await shot('switcher-after-ctrl0');
  const p0 = (await guestInput('personal')).length;
  const b0 = (await guestInput('business')).length;
  await m.keys(['ctrl', 'alt', 'backspace']);
  await page.getByRole('dialog', { name: 'Locked' }).waitFor({ timeout: 20_000 });
  await shot('locked');
  await m.keys(['ctrl', '1'], ['x'], ['ctrl', '2'], ['y']);
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await activeVm(), '/', 'no switch while locked');
  assert.equal((await guestInput('personal')).length, p0, 'no key reached personal while locked');
  assert.equal((await guestInput('business')).length, b0, 'no key reached business while locked');
  await page.getByRole('button', { name: 'Unlock' }).click({ noWaitAfter: true });
  await page.getByRole('dialog', { name: 'Locked' }).waitFor({ state: 'detached' });
  await m.keys(['ctrl', '1']);
  await waitFor('Personal active after unlock', async () => (await activeVm()) === VM('personal'));
  await shot('unlocked-personal');
});

/** `info usb` of a nested VM, through its HMP monitor socket (root-only, in the image). */
async function nestedInfoUsb(id: string): Promise<string> {
  return m.serial.check(`echo 'info usb' | socat -t 2 - UNIX-CONNECT:/run/bulkhead/vms/${id}/monitor.sock`);
}

test('4. a hot-plugged USB stick appears in the USB panel, is assigned to Business, follows focus; a hot-plugged keyboard stays with input-daemon', async () => {
  await m.keys(['ctrl', '0']);
  await waitFor('the switcher active', async () => (await activeVm()) === '/');
  await m.qmp.execute('device_add', {
    driver: 'usb-storage',
    drive: 'stick',
    bus: 'xhci.0',
    id: 'stick0',
    serial: 'BULKHEAD0001',
  });
  await page.getByRole('button', { name: /USB devices/ }).click({ noWaitAfter: true });
  const row = page.getByRole('listitem', { name: /HARDDRIVE.*held by Control Domain/i });
  await row.waitFor({ timeout: 60_000 });
  await shot('usb-stick-in-panel');
  await row.getByRole('combobox').selectOption({ label: 'Business' });
  await page.getByRole('listitem', { name: /HARDDRIVE.*held by Business/i }).waitFor({ timeout: 60_000 });
  await waitFor(
    "the stick on business's USB bus",
    async () => /HARDDRIVE|Mass Storage|usb-host/i.test(await nestedInfoUsb('business')),
    60_000,
  );
  assert.doesNotMatch(await nestedInfoUsb('personal'), /HARDDRIVE|usb-host/i, 'never in two VMs');
  await shot('usb-stick-on-business');

  // Follow focus: a switch to Personal moves the stick there.
  await page
    .getByRole('switch', { name: /HARDDRIVE.*follows the active machine/i })
    .click({ noWaitAfter: true });
  await m.keys(['ctrl', '1']);
  await waitFor('Personal active', async () => (await activeVm()) === VM('personal'));
  await waitFor(
    'the stick moved to personal',
    async () => /HARDDRIVE|usb-host/i.test(await nestedInfoUsb('personal')),
    60_000,
  );
  assert.doesNotMatch(await nestedInfoUsb('business'), /HARDDRIVE|usb-host/i);

  // A keyboard plugged in later is grabbed by input-daemon, not handed to a VM.
  await m.qmp.execute('device_add', { driver: 'usb-kbd', bus: 'xhci.0', id: 'kbd2' });
  await waitFor(
    'input-daemon grabbed the USB keyboard',
    async () => {
      const devs = await prop(
        'org.bulkhead.Input1',
        '/org/bulkhead/Input1',
        'org.bulkhead.Input1',
        'Devices',
      );
      return /"QEMU QEMU USB Keyboard" "keyboard" "usb" true/.test(devs);
    },
    60_000,
  );
  await m.keys(['ctrl', '0']);
  await waitFor('the switcher active', async () => (await activeVm()) === '/');
  await page.getByRole('button', { name: /USB devices/ }).click({ noWaitAfter: true });
  await page
    .getByRole('listitem', { name: /Keyboard.*held by Control Domain/i })
    .waitFor({ timeout: 60_000 });
  await shot('usb-keyboard-kept');
});

test('5. exclusive grab: no other reader of a grabbed keyboard sees a key', async () => {
  const node = await m.serial.check(
    `grep -l 'QEMU Virtio Keyboard' /sys/class/input/event*/device/name | head -n1 | sed 's|/sys/class/input/\\(event[0-9]*\\)/.*|/dev/input/\\1|'`,
  );
  const dev = node.trim();
  assert.match(dev, /^\/dev\/input\/event\d+$/);
  await m.serial.check(`(timeout 6 evtest ${dev} > /tmp/evtest.out 2>&1 &) ; sleep 2`);
  await m.keys(['q'], ['w']);
  await new Promise((r) => setTimeout(r, 5000));
  const out = await m.serial.check('cat /tmp/evtest.out');
  assert.match(out, /Input device name/, 'evtest opened the device');
  // evtest lists the capabilities first ("Event type 1 (EV_KEY)"); events are "Event: time ...".
  assert.doesNotMatch(out, /^Event: time .*EV_KEY/m, 'a second reader saw keys of a grabbed device');
});

test('6. a daemon killed inside the image: systemd restarts it, the switcher shows the outage and recovers, the active VM and devices stay', async () => {
  await m.keys(['ctrl', '2']);
  await waitFor('Business active', async () => (await activeVm()) === VM('business'));
  const pids = await m.serial.check(
    'cat /run/bulkhead/vms/personal/qemu.pid /run/bulkhead/vms/business/qemu.pid',
  );
  const usbBefore = await nestedInfoUsb('personal');
  // The daemon's main process only: its VMs (QEMU) are in the same cgroup and must survive.
  await m.serial.check('kill -9 $(systemctl show -p MainPID --value bulkhead-vm-daemon)');
  await page
    .getByRole('alert')
    .filter({ hasText: /not running/ })
    .waitFor({ timeout: 30_000 })
    .catch(() => undefined);
  await shot('vm-daemon-killed');
  await waitFor(
    'vm-daemon back',
    async () => (await m.serial.run('systemctl is-active bulkhead-vm-daemon')).code === 0,
    60_000,
  );
  await waitFor(
    'the outage banner gone',
    async () =>
      (await page
        .getByRole('alert')
        .filter({ hasText: /not running/ })
        .count()) === 0,
    60_000,
  );
  assert.equal(
    await m.serial.check('cat /run/bulkhead/vms/personal/qemu.pid /run/bulkhead/vms/business/qemu.pid'),
    pids,
    'no VM restarted',
  );
  assert.equal(await vmState('personal'), 'running');
  assert.equal(await vmState('business'), 'running');
  assert.equal(await activeVm(), VM('business'), 'the active VM stayed active');
  assert.equal(await nestedInfoUsb('personal'), usbBefore, 'no device detached');
  // input-daemon and usb-daemon too.
  for (const unit of ['bulkhead-input-daemon', 'bulkhead-usb-daemon']) {
    await m.serial.check(`kill -9 $(systemctl show -p MainPID --value ${unit})`);
    await waitFor(
      `${unit} back`,
      async () => (await m.serial.run(`systemctl is-active ${unit}`)).code === 0,
      60_000,
    );
  }
  await waitFor(
    'all services up in the switcher',
    async () =>
      (await page
        .getByRole('alert')
        .filter({ hasText: /not running/ })
        .count()) === 0,
    60_000,
  );
  assert.equal(await nestedInfoUsb('personal'), usbBefore, 'no device detached by a usb-daemon restart');
  // The seat still works: a hotkey switches and keys land in the VM.
  await m.keys(['ctrl', '1']);
  await waitFor('Personal active after the restarts', async () => (await activeVm()) === VM('personal'));
  const before = (await guestInput('personal')).length;
  await m.keys(['z']);
  await waitFor(
    'z reached personal',
    async () => (await guestInput('personal')).length >= before + 2,
    20_000,
  );
  await shot('recovered');
});
