/**
 * Issue 19 in the Control Domain image: a laptop's day. The outer QEMU has S3 enabled
 * (ICH9-LPC.disable_s3=0); its ACPI power button (QMP system_powerdown) is the power key, and
 * `system_wakeup` opens the lid again. The battery is the test layer's simulated one (upowerd under
 * umockdev-run; bulkhead-test-battery sets its level). Driven from outside like the other image
 * tests: keys through QMP, the UI through DevTools, the screen by screendump; the inside (serial
 * console) is only read.
 *
 * One boot, three scenarios (≈ 4-5 min on a loaded 2-core TCG host, boot included).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { waitFor } from './wait';
import { ImageMachine } from './image-machine';
import { colorPixels, readPpm, type Rgb } from './screen-picture';

const repo = join(__dirname, '..', '..');
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e-power');
const VM = (id: string) => `/org/bulkhead/VmManager1/vm/${id}`;
/** The unlock password of the test flavour (dom0-rootfs/test-layer/setup-in-chroot.sh). */
const OWNER_PASSWORD = 'bulkhead-test';

let m: ImageMachine;
let browser: Browser;
let page: Page;
let step = 0;

const locked = async () =>
  /true/.test(
    await m.busProperty('org.bulkhead.Input1', '/org/bulkhead/Input1', 'org.bulkhead.Input1', 'Locked'),
  );
/** Power1.LastSuspend as busctl prints it (a{sv}, one line). */
const lastSuspend = () =>
  m.busProperty('org.bulkhead.VmManager1', '/org/bulkhead/Power1', 'org.bulkhead.Power1', 'LastSuspend');
/** The outer QEMU's run state: 'running', 'suspended' (S3), … */
const runState = async () => ((await m.qmp.execute('query-status', {})) as { status: string }).status;

const qemuPids = () =>
  m.serial.check('cat /run/bulkhead/vms/personal/qemu.pid /run/bulkhead/vms/business/qemu.pid');
async function nestedInfoUsb(id: string): Promise<string> {
  return m.serial.check(`echo 'info usb' | socat -t 2 - UNIX-CONNECT:/run/bulkhead/vms/${id}/monitor.sock`);
}
const setBattery = async (percent: number, status = 'discharging') =>
  assert.match(await m.serial.check(`bulkhead-test-battery ${percent} ${status}`), /^ok /m);

async function shot(name: string): Promise<void> {
  step++;
  const base = `${String(step).padStart(2, '0')}-${name}`;
  await m.screendump(`${base}.screen`).catch(() => undefined);
  await page?.screenshot({ path: join(artifacts, `${base}.cdp.png`) }).catch(() => undefined);
}

/** Waits until the outer QEMU says the Control Domain sleeps (S3), then wakes it as a lid would. */
async function sleptAndWoken(what: string): Promise<void> {
  await waitFor(
    `${what}: the outer QEMU reporting the Control Domain suspended`,
    async () => ((await runState()) === 'suspended' ? true : false),
    120_000,
  );
  await m.screendump(`${String(++step).padStart(2, '0')}-${what}-asleep.screen`).catch(() => undefined);
  // Asleep for a moment, as a laptop with its lid shut.
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await runState(), 'suspended', 'still asleep until woken');
  await m.qmp.execute('system_wakeup', {});
  await waitFor(
    `${what}: running again`,
    async () => ((await runState()) === 'running' ? true : false),
    60_000,
  );
  // The serial console's shell is frozen with the rest while asleep; it answers again.
  await m.serial.check('true', { timeoutMs: 120_000 });
  await new Promise((r) => setTimeout(r, 2000));
  await attachKiosk(`after ${what}`);
}

/**
 * How much of the lock screen's Unlock button the outer screen shows (QMP screendump, nothing
 * attached): pixels of the button's own colour, read from the page. The button is ~280x44 px.
 */
async function unlockButtonOnScreen(name: string): Promise<number> {
  const css = await page
    .getByRole('dialog', { name: 'Locked' })
    .getByRole('button', { name: 'Unlock' })
    .evaluate((e) => getComputedStyle(e).backgroundColor);
  const [r, g, b] = (css.match(/\d+/g) ?? []).map(Number);
  const ppm = join(artifacts, `${name}.ppm`);
  await m.qmp.execute('screendump', { filename: ppm });
  const n = colorPixels(readPpm(ppm), [r, g, b] as Rgb, 8);
  unlinkSync(ppm);
  return n;
}
/** The lock screen on the outer screen: before any sleep (the control) and after the wake. */
const unlockPixels = { beforeSleep: -1, afterWake: -1 };

/** Types the password at the outer keyboard until the lock screen goes (the back-off may delay it). */
async function unlockAtKeyboard(): Promise<void> {
  const dialog = page.getByRole('dialog', { name: 'Locked' });
  const problem = dialog.locator('.lock-problem');
  for (let attempt = 0; attempt < 4; attempt++) {
    await waitFor('the Unlock button accepting an attempt', async () =>
      dialog.getByRole('button', { name: 'Unlock' }).isEnabled(),
    );
    const before = Number(await problem.getAttribute('data-answers'));
    await m.typeText(`${OWNER_PASSWORD}\n`);
    const outcome = await waitFor(
      'the lock screen answering',
      async () =>
        (await dialog.count()) === 0
          ? 'unlocked'
          : // Short reads, retried: the dialog may go (unlocked) between count() and the read.
            Number(await problem.getAttribute('data-answers', { timeout: 2_000 })) > before &&
            (await problem.innerText({ timeout: 2_000 })).trim(),
      60_000,
    );
    if (outcome === 'unlocked') return;
    assert.match(outcome, /^Too many wrong passwords/, 'only the back-off delays the right password');
  }
  throw new Error('the right password did not unlock');
}

/** Pages the kiosk replaced (Chromium or its page gone and started again), with when: reported. */
const replaced: string[] = [];

/**
 * Attach Playwright over CDP to the kiosk's own switcher page (never a fresh page). Called again
 * after a wake: if the kiosk replaced the page or Chromium meanwhile, the new one is taken and
 * that is recorded (printed at the end), not hidden.
 */
async function attachKiosk(when = 'boot'): Promise<void> {
  if (page && !page.isClosed() && browser?.isConnected()) return;
  if (page) replaced.push(`${when}: ${browser?.isConnected() ? 'page' : 'Chromium'} replaced`);
  if (!browser?.isConnected()) {
    await browser?.close().catch(() => undefined);
    browser = await waitFor(
      'Chromium DevTools',
      () => chromium.connectOverCDP(`http://127.0.0.1:${m.cdpPort}`, { timeout: 60_000 }),
      300_000,
    );
  }
  page = await waitFor(
    'the switcher page',
    async () =>
      browser
        .contexts()[0]
        .pages()
        .find((p) => p.url().includes(':8080') && !p.isClosed()),
    300_000,
  );
  page.setDefaultTimeout(90_000);
  await page
    .getByRole('list', { name: 'Machines' })
    .or(page.getByRole('dialog', { name: 'Locked' }))
    .first()
    .waitFor({ timeout: 120_000 });
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  m = new ImageMachine({
    imageDir,
    artifactsDir: artifacts,
    extraQemuArgs: ['-global', 'ICH9-LPC.disable_s3=0'],
  });
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
  await attachKiosk();
});

after(async () => {
  if (m) {
    const save = (cmd: string, file: string) =>
      m.serial
        ?.run(cmd, { timeoutMs: 30_000 })
        .then((r) => writeFileSync(join(artifacts, file), r.output))
        .catch(() => undefined);
    await save(
      'journalctl -b --no-pager -o short-precise -u bulkhead-vm-daemon -u bulkhead-input-daemon -u bulkhead-usb-daemon -u upower -u systemd-logind -u systemd-suspend | tail -n 600',
      'journal-power.txt',
    );
    await save('dmesg | tail -n 200', 'dmesg-tail.txt');
    await save(
      'journalctl -b --no-pager -o short-precise -t bulkhead-kiosk | tail -n 200; journalctl -b --no-pager -o short-precise -u bulkhead-kiosk | tail -n 100',
      'journal-kiosk.txt',
    );
  }
  if (replaced.length) console.log(`the kiosk replaced its page or Chromium: ${replaced.join('; ')}`);
  await browser?.close().catch(() => undefined);
  await m?.shutdown();
});

test('1. the top bar shows the simulated battery (UPower) and follows its level', async () => {
  // The policy in the image (/etc/bulkhead/power.json) as Power1 reports it.
  const policy = await m.busProperty(
    'org.bulkhead.VmManager1',
    '/org/bulkhead/Power1',
    'org.bulkhead.Power1',
    'Policy',
  );
  assert.match(policy, /"lid" s "suspend"/);
  assert.match(policy, /"power_key" s "suspend"/);
  assert.match(policy, /"error" s ""/);
  // logind leaves the keys to vm-daemon: its block inhibitor is registered.
  assert.match(await m.serial.check('systemd-inhibit --list --no-pager'), /handle-power-key.*block/);
  await page.getByRole('img', { name: /^Battery 80%/ }).waitFor({ timeout: 120_000 });
  await setBattery(63);
  await page.getByRole('img', { name: /^Battery 63%, about .+ left$/ }).waitFor({ timeout: 60_000 });
  await shot('battery-63');
  await setBattery(8);
  await page
    .getByRole('alert')
    .filter({ hasText: /Battery low \(8%/ })
    .waitFor({ timeout: 60_000 });
  await shot('battery-low');
  await setBattery(70);
  await page.getByRole('img', { name: /^Battery 70%/ }).waitFor({ timeout: 60_000 });
});

test('2. the power key suspends the Control Domain with its VMs; waking brings both back, the USB stick where it was, the lock screen until the password', async () => {
  await waitFor(
    'both VMs running',
    async () => (await m.vmState('personal')) === 'running' && (await m.vmState('business')) === 'running',
    120_000,
  );
  // A USB stick on Business, given there in the USB panel.
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
  await row.getByRole('combobox').selectOption({ label: 'Business' });
  await waitFor(
    "the stick on business's USB bus",
    async () => /HARDDRIVE|usb-host/i.test(await nestedInfoUsb('business')),
    60_000,
  );
  await m.keys(['ctrl', '2']);
  await waitFor('Business active', async () => (await m.activeVm()) === VM('business'));
  const pids = await qemuPids();
  // The control for the screen check after the wake: the secure-attention chord locks, and the
  // outer screen shows the lock screen.
  await m.keys(['ctrl', 'alt', 'backspace']);
  await page.getByRole('dialog', { name: 'Locked' }).waitFor({ timeout: 30_000 });
  await new Promise((r) => setTimeout(r, 2000));
  unlockPixels.beforeSleep = await unlockButtonOnScreen('lock-before-sleep');
  await unlockAtKeyboard();
  await m.keys(['ctrl', '2']);
  await waitFor('Business active', async () => (await m.activeVm()) === VM('business'));
  await shot('before-power-key');

  await m.qmp.execute('system_powerdown', {});
  await sleptAndWoken('power-key');
  await waitFor(
    'the suspend transaction over',
    async () => /"outcome" s "(ok|incomplete|failed)"/.test(await lastSuspend()),
    120_000,
  );
  const last = await lastSuspend();
  assert.match(last, /"reason" s "power-key"/, last);
  assert.match(last, /"outcome" s "ok"/, last);
  assert.equal(await m.vmState('personal'), 'running');
  assert.equal(await m.vmState('business'), 'running');
  assert.equal(await qemuPids(), pids, 'no VM restarted');
  assert.match(await nestedInfoUsb('business'), /HARDDRIVE|usb-host/i, 'the stick is still on Business');
  assert.doesNotMatch(await nestedInfoUsb('personal'), /HARDDRIVE|usb-host/i);

  // The lock screen is up, on the outer screen too, and no key reaches a VM until the password.
  assert.equal(await locked(), true);
  const dialog = page.getByRole('dialog', { name: 'Locked' });
  await dialog.waitFor({ timeout: 60_000 });
  await shot('woken-locked');
  unlockPixels.afterWake = await unlockButtonOnScreen('lock-after-wake');
  const p0 = (await m.guestInput('personal')).length;
  const b0 = (await m.guestInput('business')).length;
  await unlockAtKeyboard();
  assert.equal(await locked(), false);
  assert.equal((await m.guestInput('personal')).length, p0, 'the password reached no VM');
  assert.equal((await m.guestInput('business')).length, b0, 'the password reached no VM');
  // The lock took the screen home (the lock screen is the switcher's); the person goes back.
  assert.equal(await m.activeVm(), '/');
  await m.keys(['ctrl', '2']);
  await waitFor('Business active', async () => (await m.activeVm()) === VM('business'));

  // Both guests run on: keys reach the active one only, then the other after a switch.
  await m.keys(['j']);
  await waitFor('j in business', async () => (await m.guestInput('business')).length >= b0 + 2, 30_000);
  assert.equal((await m.guestInput('personal')).length, p0, 'nothing reached personal');
  await m.keys(['ctrl', '1']);
  await waitFor('Personal active', async () => (await m.activeVm()) === VM('personal'));
  const b1 = (await m.guestInput('business')).length;
  await m.keys(['k']);
  await waitFor('k in personal', async () => (await m.guestInput('personal')).length >= p0 + 2, 30_000);
  assert.deepEqual((await m.guestInput('personal')).slice(p0), ['KEY down 25', 'KEY up 25']);
  assert.equal((await m.guestInput('business')).length, b1, 'nothing reached business');
  await shot('woken-personal');
});

test(
  '2b. the outer screen shows the lock screen after the wake',
  {
    todo: "fails under QEMU 7.2: the S3 wake resets virtio-gpu and Linux 6.1's virtio-gpu has no resume, so the screen says 'Display output is not active' (the page, read over CDP, shows the lock screen)",
  },
  () => {
    assert.ok(
      unlockPixels.beforeSleep > 5000,
      `control: the lock screen before any sleep (${unlockPixels.beforeSleep} px)`,
    );
    assert.ok(
      unlockPixels.afterWake > 5000,
      `the lock screen after the wake: ${unlockPixels.afterWake} px of the Unlock button`,
    );
  },
);

test('3. the battery drained to critical locks the seat and suspends; waking resumes the VMs', async () => {
  const pids = await qemuPids();
  // 4 %: at or under the policy's 5 % and above UPower's own last-resort action level (2 %).
  // Not awaited: the machine may be asleep before the command's answer reaches the console.
  const setting = m.serial.run('bulkhead-test-battery 4', { timeoutMs: 400_000 });
  await sleptAndWoken('critical');
  assert.match((await setting).output, /^ok 4 /m);
  await waitFor(
    'the suspend transaction over',
    async () => /"reason" s "critical-battery"/.test(await lastSuspend()),
    120_000,
  );
  assert.match(await lastSuspend(), /"outcome" s "ok"/);
  assert.equal(await m.vmState('personal'), 'running');
  assert.equal(await m.vmState('business'), 'running');
  assert.equal(await qemuPids(), pids, 'no VM restarted');
  assert.equal(await locked(), true, 'locked after waking');
  await page.getByRole('dialog', { name: 'Locked' }).waitFor({ timeout: 60_000 });
  await shot('critical-woken-locked');
  await unlockAtKeyboard();
  assert.equal(await locked(), false);
  // Plugged in: charging, the warning gone.
  await setBattery(5, 'charging');
  await page.getByRole('img', { name: /^Battery 5%, charging$/ }).waitFor({ timeout: 60_000 });
  assert.equal(
    await page
      .getByRole('alert')
      .filter({ hasText: /^Battery (low|critical)/ })
      .count(),
    0,
  );
  await shot('critical-woken-charging');
});
