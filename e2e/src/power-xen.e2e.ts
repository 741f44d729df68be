/**
 * Issue 19 on the Xen entry: the power key suspends the Control Domain (Xen 4.17 with a PV dom0)
 * with its two Xen guests (personal PV, business HVM), and `system_wakeup` brings it back. The outer QEMU as in
 * power.e2e.ts (S3 enabled with `ICH9-LPC.disable_s3=0`, display `qxl-vga`: an S3 wake resets
 * every device and qxl's driver restores its mode; see power.e2e.ts), booted on the Xen entry
 * (ImageMachine `entry: 'xen'`, with its emulation-only Xen options).
 *
 * The path under test: ACPI power button (QMP system_powerdown) → vm-daemon's Power1 (lock the
 * seat, pause the running domains with `xl pause`, logind Suspend) → dom0's kernel (PM: suspend
 * entry (deep)) → Xen (XENPF_enter_acpi_sleep: "Entering ACPI S3 state.") → the outer QEMU
 * reports 'suspended'; system_wakeup → Xen "Finishing wakeup from ACPI S3 state." → dom0 → the
 * domains unpaused, the seat still locked.
 *
 * In `npm test` (BULKHEAD_E2E_XEN_POWER=0 or BULKHEAD_E2E_XEN=0 leaves it out): dom0-rootfs/README.md
 * has the runs. Assertions as
 * power.e2e.ts's where they apply, the screen judged from screendumps alone (nothing attached to
 * the kiosk): before any sleep, the secure-attention chord's lock screen on the outer screen (the
 * control for the check after the wake); after the wake, the same domains (domids) running, each
 * guest's console log going on (its bytes before the sleep unchanged), the seat locked and the
 * lock screen on the outer screen, the password typed at the outer keyboard reaching no guest,
 * then the tiles, keys reaching only the active guest's kernel and Personal's picture in its view.
 * 2: a critical battery (the test layer's simulated one) locks and suspends the same way.
 * A USB stick on Business (HVM, the device model's emulated controller) before the sleep is on it
 * after the wake (usb-daemon, `xl usb-list`, business's kernel), never on Personal.
 *
 * The lock screen after the wake needs the image's bulkhead-redraw-after-sleep (Xen entry only):
 * without it the outer screen kept the frame the kernel restored on resume, garbled (rows as if
 * read at a wrong stride), and did not follow the kiosk's new frames (a character typed into the
 * password field did not show) until something made cage commit its output afresh; a VT round
 * trip does (dom0-rootfs/README.md, power).
 * Business is not asked for its picture: on the Xen entry it may be an HVM domain without a
 * display (its tile then shows the placeholder); Personal is a PV domain with its own screen.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './wait';
import { ImageMachine, readImageVms } from './image-machine';
import { parseHexColor, type Rgb, type SeenPicture } from './screen-picture';
import { SleepWake, lastSuspend, locked, unlockAtKeyboard } from './sleep-wake';
import { despiteBusinessReboot } from './xen-reboots';

const repo = join(__dirname, '..', '..');
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e-power-xen');
const VM = (id: string) => `/org/bulkhead/VmManager1/vm/${id}`;
const enabled = process.env.BULKHEAD_E2E_XEN_POWER !== '0' && process.env.BULKHEAD_E2E_XEN !== '0';

let m: ImageMachine;
let step = 0;
/** Sleeps and wakes, the outer screen judged from screendumps (src/sleep-wake.ts); made in before(). */
let sw: SleepWake;
const shot = (name: string) =>
  m.screendump(`${String(++step).padStart(2, '0')}-${name}`).catch(() => undefined);

/** Each guest's console log (xenconsoled, test layer): its size and the SHA-256 of its content. */
async function consoleLog(id: string, bytes?: number): Promise<{ bytes: number; sha256: string }> {
  const f = `/var/log/xen/console/guest-${id}.log`;
  const out = await m.serial.check(
    `n=${bytes ?? `$(stat -c %s ${f})`}; echo $n $(head -c $n ${f} | sha256sum | cut -c1-64)`,
  );
  const [n, sha256] = out.trim().split(' ');
  return { bytes: Number(n), sha256 };
}

/** QEMU's usb-storage on the outer xHCI: vendor 46f4, product 0001 (0x46f4 = 18164). */
const STICK = '46f4:0001';

/** `id`'s kernel's USB devices as its console printed them: every `BULKHEAD-USB` line, oldest first. */
async function guestUsbLines(id: string): Promise<string[]> {
  const out = await m.serial.check(
    `grep -a BULKHEAD-USB /var/log/xen/console/guest-${id}.log | tr -d '\\r' || true`,
  );
  return out
    .split('\n')
    .map((l) => l.replace(/^.*(BULKHEAD-USB)/, '$1').trim())
    .filter((l) => l.startsWith('BULKHEAD-USB'));
}

/** The stick's object on org.bulkhead.Usb1 ('' while usb-daemon does not list it). */
async function stickPath(): Promise<string> {
  const out = await m.serial.check(
    "for p in $(busctl --list tree org.bulkhead.Usb1 | grep /device/); do busctl get-property org.bulkhead.Usb1 $p org.bulkhead.UsbDevice1 VendorId | grep -q ' 18164$' && echo $p; done; true",
  );
  return (
    out
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('/org/bulkhead/Usb1/device/'))[0] ?? ''
  );
}

/** UsbDevice1.AssignedVm of the stick, as busctl prints it ('o "/…"'). */
const stickHolder = async (path: string) =>
  m.busProperty('org.bulkhead.Usb1', path, 'org.bulkhead.UsbDevice1', 'AssignedVm');

/** Polls the outer screen (screendump only) until it shows `want`, for at most `boundMs`: 'ok', or what it showed. */
async function pictureShown(want: SeenPicture, name: string, boundMs: number): Promise<string> {
  const shown = await sw.pictureShown(want, name, Date.now(), boundMs);
  return shown.ms >= 0 ? 'ok' : shown.seen;
}

/**
 * The lock screen's Unlock button is the switcher's accent colour (button.primary), read from its
 * stylesheet: the screen is judged from screendumps alone, with nothing attached to the kiosk.
 */
const ACCENT: Rgb = parseHexColor(
  /--accent:\s*(#[0-9a-f]{6})/i.exec(
    readFileSync(join(repo, 'apps', 'switcher', 'src', 'renderer', 'styles.css'), 'utf8'),
  )?.[1] ?? 'no --accent in styles.css',
);
before(async () => {
  if (!enabled) return;
  mkdirSync(artifacts, { recursive: true });
  m = new ImageMachine({
    imageDir,
    artifactsDir: artifacts,
    entry: 'xen',
    display: 'qxl-vga,xres=1280,yres=800',
    extraQemuArgs: ['-global', 'ICH9-LPC.disable_s3=0'],
  });
  sw = new SleepWake(m, {
    artifactsDir: artifacts,
    keep: shot,
    vms: readImageVms('xen'),
    unlockColor: () => ACCENT,
    pollMs: 500,
    shellBoundMs: 180_000,
    lockScreenSuffix: '-woken-lock-screen',
    awaitOutcome: true,
  });
  await m.boot();
  await m.waitForServices(300_000, 2000);
});

after(async () => {
  if (!m) return;
  await m.saveOutput('xl dmesg | tail -n 60', 'xl-dmesg-tail.txt');
  await m.saveOutput('dmesg | tail -n 200', 'dmesg-tail.txt');
  await m.saveOutput(
    'journalctl -b --no-pager -o short-precise -u bulkhead-vm-daemon -u bulkhead-input-daemon -u systemd-logind -u systemd-suspend -u bulkhead-redraw-after-sleep | tail -n 400',
    'journal-power.txt',
  );
  await m.saveOutput(
    'journalctl -b --no-pager -o short-precise -t bulkhead-kiosk -t cage | tail -n 200',
    'journal-kiosk.txt',
  );
  await m.shutdown();
});

/**
 * What each sleep must leave: vm-daemon's suspend record (`reason`, ok, both guests paused), Xen
 * itself through S3 and back (not only dom0's kernel: `xlDmesg` reads its console ring), both
 * guests running as the same domains, and the seat locked.
 */
async function assertSleptWhole(reason: string, domids: Record<string, number>, xlDmesg: string) {
  const last = await lastSuspend(m);
  assert.match(last, new RegExp(`"reason" s "${reason}"`), last);
  assert.match(last, /"outcome" s "ok"/, last);
  assert.match(last, /"pause-vms" "ok" "paused (personal, business|business, personal)"/, last);
  const xl = await m.serial.check(xlDmesg);
  assert.match(xl, /Entering ACPI S3 state/);
  assert.match(xl, /Finishing wakeup from ACPI S3 state/);
  assert.equal(await m.vmState('personal'), 'running');
  assert.equal(await m.vmState('business'), 'running');
  assert.deepEqual(await m.xlDomids(), domids, 'the same domains: none restarted');
  assert.equal(await locked(m), true, 'the seat is locked after the wake');
}

/**
 * Puts the seat back where each sleep scenario starts before its rerun (xen-reboots.ts: business's
 * HVM guest rebooted during the first run): the battery above the policy's level, the seat
 * unlocked, the tiles shown.
 */
async function recoverSeat(): Promise<void> {
  await m.serial.check('bulkhead-test-battery 80 discharging').catch(() => undefined);
  if (await locked(m)) await unlockAtKeyboard(m);
  if ((await m.activeVm()) !== '/') await m.hotkeyTo(0, '/', 'the switcher active');
}

test(
  'the power key suspends Xen and dom0 with both guests; waking brings the same domains back, consoles going on, the seat locked until the password',
  { skip: enabled ? false : 'left out: BULKHEAD_E2E_XEN_POWER=0 or BULKHEAD_E2E_XEN=0' },
  async () => {
    await despiteBusinessReboot(
      m,
      async () => {
        await waitFor(
          'both domains running',
          async () =>
            (await m.vmState('personal')) === 'running' && (await m.vmState('business')) === 'running',
          420_000,
          2000,
        );
        assert.equal(await pictureShown({ kind: 'tiles' }, 'tiles-before-sleep', 300_000), 'ok');
        // Personal's picture (a PV domain with its own screen) in the VM view before the sleep.
        await m.hotkeyTo(1, VM('personal'), 'Personal active', 120_000);
        assert.equal(await pictureShown({ kind: 'vm', id: 'personal' }, 'personal-before', 120_000), 'ok');
        // The control for the picture after the wake: the secure-attention chord locks, and the outer
        // screen shows the lock screen (no sleep involved); the password unlocks, back to Personal.
        await m.keys(['ctrl', 'alt', 'backspace']);
        await waitFor('locked by the chord', () => locked(m), 60_000);
        const control = await sw.lockScreenShown('lock-before-sleep', Date.now(), 90_000);
        await unlockAtKeyboard(m);
        assert.ok(
          control.ms >= 0,
          `control: the lock screen before any sleep (${control.px} px of the Unlock button)`,
        );
        await m.hotkeyTo(1, VM('personal'), 'Personal active', 120_000);
        assert.equal(await pictureShown({ kind: 'vm', id: 'personal' }, 'personal-again', 120_000), 'ok');

        // A USB stick on Business (an HVM domain: its device model's emulated controller takes it),
        // given there over Usb1 from the Control Domain's root shell (the UI's call; the screen stays
        // unattached for the checks after the wake).
        // A rerun after business rebooted finds the stick plugged in already.
        await m.plugUsbStick().catch((e: Error) => {
          if (!/duplicate/i.test(e.message)) throw e;
        });
        let stick = '';
        await waitFor(
          'usb-daemon lists the stick',
          async () => (stick = await stickPath()) !== '',
          120_000,
          2000,
        );
        await m.serial.check(
          `busctl call org.bulkhead.Usb1 ${stick} org.bulkhead.UsbDevice1 Assign 'oa{sv}' ${VM('business')} 0`,
          { timeoutMs: 120_000 },
        );
        await waitFor(
          "the stick in business's kernel (its console's USB line)",
          async () => ((await guestUsbLines('business')).at(-1) ?? '').includes(STICK),
          120_000,
          2000,
        );
        assert.match(await stickHolder(stick), /business/, 'usb-daemon: the stick is on Business');
        const usbLinesBefore = (await guestUsbLines('business')).length;

        const domids = await m.xlDomids();
        assert.ok(domids.personal && domids.business, JSON.stringify(domids));
        const logs = { personal: await consoleLog('personal'), business: await consoleLog('business') };

        const pressed = Date.now();
        await m.qmp.execute('system_powerdown', {});
        const woken = await sw.sleptAndWoken('power-key', pressed);

        await assertSleptWhole('power-key', domids, 'xl dmesg | tail -n 40');
        // The stick is still on Business: usb-daemon says so, libxl lists it on the domain, and
        // business's kernel has it now (its console's last USB line), never personal's.
        const usbAfter = await waitFor(
          "the stick in business's kernel after the wake",
          async () => {
            const lines = await guestUsbLines('business');
            return (lines.at(-1) ?? '').includes(STICK) ? lines : undefined;
          },
          120_000,
          2000,
        );
        assert.match(await stickHolder(stick), /business/, 'usb-daemon: the stick is still on Business');
        const listed = await m.serial.check('xl usb-list business');
        assert.match(listed, /Port \d+: Bus \d+ Device \d+/, `xl lists the stick on business: ${listed}`);
        console.log(`business USB lines: ${usbLinesBefore} before the sleep, ${usbAfter.length} after`);
        assert.ok(
          (await guestUsbLines('personal')).every((l) => !l.includes(STICK)),
          "the stick never in personal's kernel",
        );
        assert.ok(
          woken.wakeToLockScreenMs >= 0,
          `the lock screen on the outer screen within 180 s of the wake (${woken.lockScreenPx} px of the Unlock button)`,
        );

        // The password at the outer keyboard unlocks and reaches no guest.
        const p0 = (await m.xenGuestInput('personal')).length;
        const b0 = (await m.xenGuestInput('business')).length;
        await unlockAtKeyboard(m);
        assert.equal((await m.xenGuestInput('personal')).length, p0, 'the password reached no guest');
        assert.equal((await m.xenGuestInput('business')).length, b0, 'the password reached no guest');
        assert.equal(await m.activeVm(), '/', 'the lock took the screen home');
        assert.equal(await pictureShown({ kind: 'tiles' }, 'woken-tiles', 120_000), 'ok');

        // Keys reach only the active guest's kernel, after the wake as before it.
        await m.hotkeyTo(2, VM('business'), 'Business active', 120_000);
        await m.keys(['j']);
        await waitFor(
          'j in business',
          async () => (await m.xenGuestInput('business')).length >= b0 + 2,
          60_000,
          500,
        );
        await m.hotkeyTo(1, VM('personal'), 'Personal active', 120_000);
        assert.equal(await pictureShown({ kind: 'vm', id: 'personal' }, 'woken-personal', 120_000), 'ok');
        await m.keys(['k']);
        await waitFor(
          'k in personal',
          async () => (await m.xenGuestInput('personal')).length >= p0 + 2,
          60_000,
          500,
        );
        await new Promise((r) => setTimeout(r, 2000));
        // EV_KEY (type 1): KEY_J 36, KEY_K 37; press 1, release 0; no chord key reached either.
        assert.deepEqual((await m.xenGuestInput('business')).slice(b0), ['1 36 1', '1 36 0']);
        assert.deepEqual((await m.xenGuestInput('personal')).slice(p0), ['1 37 1', '1 37 0']);

        // Each console log went on where it was: its bytes before the sleep are still its beginning.
        for (const id of ['personal', 'business'] as const) {
          assert.equal(
            (await consoleLog(id, logs[id].bytes)).sha256,
            logs[id].sha256,
            `${id}: the console log before the sleep is intact`,
          );
          const now = await consoleLog(id);
          assert.ok(
            now.bytes > logs[id].bytes,
            `${id}: its console went on (${logs[id].bytes} → ${now.bytes} bytes)`,
          );
        }
      },
      recoverSeat,
    );
  },
);

test(
  'the battery drained to critical locks the seat and suspends Xen with both guests; waking brings the same domains back, locked until the password',
  { skip: enabled ? false : 'left out: BULKHEAD_E2E_XEN_POWER=0 or BULKHEAD_E2E_XEN=0' },
  async () => {
    await despiteBusinessReboot(
      m,
      async () => {
        const domids = await m.xlDomids();
        assert.ok(domids.personal && domids.business, JSON.stringify(domids));
        assert.equal(await locked(m), false, 'unlocked before the battery drains');
        // Xen's console ring emptied: its S3 lines below are this sleep's.
        await m.serial.check('xl dmesg -c > /dev/null');
        // 4 %: at or under the policy's 5 % and above UPower's own last-resort action level (2 %).
        // Not awaited: the machine may be asleep before the command's answer reaches the console.
        const set = Date.now();
        const setting = m.serial.run('bulkhead-test-battery 4', { timeoutMs: 400_000 });
        const woken = await sw.sleptAndWoken('critical', set);
        assert.match((await setting).output, /^ok 4 /m);
        await assertSleptWhole('critical-battery', domids, 'xl dmesg');
        assert.ok(
          woken.wakeToLockScreenMs >= 0,
          `the lock screen on the outer screen within 180 s of the wake (${woken.lockScreenPx} px of the Unlock button)`,
        );
        await unlockAtKeyboard(m);
        // Plugged in: charging, so the policy has nothing more to do.
        assert.match(await m.serial.check('bulkhead-test-battery 5 charging'), /^ok /m);
        assert.equal(await pictureShown({ kind: 'tiles' }, 'critical-woken-tiles', 120_000), 'ok');
      },
      recoverSeat,
    );
  },
);
