/**
 * Issue 19 on the Xen entry: the power key suspends the Control Domain (Xen 4.17 with a PV dom0)
 * with its two Xen PV guests, and `system_wakeup` brings it back. The outer QEMU as in
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
 * Opt-in (BULKHEAD_E2E_XEN_POWER=1): it passed, but not yet often enough to call it reliable
 * (dom0-rootfs/README.md has the runs). Assertions as power.e2e.ts's power-key scenario where
 * they apply: the same domains (domids) run after the wake, each guest's console log goes on
 * (its bytes before the sleep unchanged), the seat is locked and the password typed at the outer
 * keyboard reaches no guest, keys then reach only the active guest's kernel, and the outer screen
 * shows the tiles and the chosen VM after the unlock. Not here (yet): the USB stick (the Xen
 * backend's USB passthrough is not in the Xen entry's e2e either) and the lock screen's picture
 * (the Locked property is asserted; the picture is kept as an artifact). In both runs so far
 * (2026-12-01, both passed) both screendumps taken after the wake while locked (04-woken,
 * 05-woken-locked) showed a garbled picture, dark rows repeated as if read at a wrong stride;
 * after the unlock the tiles (1.2 s) and Business (2.7 s) were drawn right. On the KVM entry the
 * lock screen is on the outer screen 4.3-5.7 s after the wake: not understood yet on Xen.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './wait';
import { ImageMachine } from './image-machine';
import { classify, parseHexColor, readPpm, type SeenPicture } from './screen-picture';

const repo = join(__dirname, '..', '..');
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e-power-xen');
const VM = (id: string) => `/org/bulkhead/VmManager1/vm/${id}`;
/** The unlock password of the test flavour (dom0-rootfs/test-layer/setup-in-chroot.sh). */
const OWNER_PASSWORD = 'bulkhead-test';
const enabled = process.env.BULKHEAD_E2E_XEN_POWER === '1';
const imageVms = readdirSync(join(repo, 'dom0-rootfs', 'vms'))
  .filter((f) => f.endsWith('-xen.json'))
  .map(
    (f) => JSON.parse(readFileSync(join(repo, 'dom0-rootfs', 'vms', f), 'utf8')) as Record<string, unknown>,
  )
  .map((v) => ({ id: String(v.id), color: parseHexColor(String(v.color)) }));

let m: ImageMachine;
let step = 0;
const runState = async () => ((await m.qmp.execute('query-status', {})) as { status: string }).status;
const lastSuspend = async () =>
  m.busProperty('org.bulkhead.VmManager1', '/org/bulkhead/Power1', 'org.bulkhead.Power1', 'LastSuspend');
const locked = async () =>
  /true/.test(
    await m.busProperty('org.bulkhead.Input1', '/org/bulkhead/Input1', 'org.bulkhead.Input1', 'Locked'),
  );
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

/** Polls the outer screen (screendump only) until it shows `want` or `boundMs` passed. */
async function pictureShown(want: SeenPicture, name: string, boundMs: number): Promise<string> {
  const ppm = join(artifacts, `${name}.ppm`);
  const since = Date.now();
  for (;;) {
    let seen: SeenPicture = { kind: 'other', why: 'no screendump' };
    try {
      await m.qmp.execute('screendump', { filename: ppm });
      seen = classify(readPpm(ppm), imageVms);
    } catch (e) {
      seen = { kind: 'other', why: (e as Error).message };
    }
    const ok = seen.kind === want.kind && (seen.kind !== 'vm' || want.kind !== 'vm' || seen.id === want.id);
    if (ok || Date.now() - since > boundMs) {
      await shot(name);
      if (existsSync(ppm)) unlinkSync(ppm);
      const what = seen.kind === 'vm' ? `the ${seen.id} VM` : seen.kind === 'tiles' ? 'the tiles' : seen.why;
      console.log(`screen ${name}: ${what} after ${Date.now() - since} ms`);
      return ok ? 'ok' : what;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

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
  await m.boot();
  await m.waitForServices(300_000, 2000);
});

after(async () => {
  if (!m) return;
  const save = (cmd: string, file: string) =>
    m.serial
      ?.run(cmd, { timeoutMs: 30_000 })
      .then((r) => writeFileSync(join(artifacts, file), r.output))
      .catch(() => undefined);
  await save('xl dmesg | tail -n 60', 'xl-dmesg-tail.txt');
  await save('dmesg | tail -n 200', 'dmesg-tail.txt');
  await save(
    'journalctl -b --no-pager -o short-precise -u bulkhead-vm-daemon -u bulkhead-input-daemon -u systemd-logind -u systemd-suspend | tail -n 400',
    'journal-power.txt',
  );
  await m.shutdown();
});

test(
  'the power key suspends Xen and dom0 with both PV guests; waking brings the same domains back, consoles going on, the seat locked until the password',
  { skip: enabled ? false : 'opt-in: BULKHEAD_E2E_XEN_POWER=1' },
  async () => {
    await waitFor(
      'both domains running',
      async () => (await m.vmState('personal')) === 'running' && (await m.vmState('business')) === 'running',
      420_000,
      2000,
    );
    assert.equal(await pictureShown({ kind: 'tiles' }, 'tiles-before-sleep', 300_000), 'ok');
    await m.keys(['ctrl', '2']);
    await waitFor('Business active', async () => (await m.activeVm()) === VM('business'), 120_000);
    assert.equal(await pictureShown({ kind: 'vm', id: 'business' }, 'business-before', 120_000), 'ok');
    const domids = await m.xlDomids();
    assert.ok(domids.personal && domids.business, JSON.stringify(domids));
    const logs = { personal: await consoleLog('personal'), business: await consoleLog('business') };

    const pressed = Date.now();
    await m.qmp.execute('system_powerdown', {});
    await waitFor(
      'the outer QEMU reporting S3',
      async () => (await runState()) === 'suspended',
      120_000,
      100,
    );
    const suspendedAt = Date.now();
    await shot('asleep');
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(await runState(), 'suspended', 'still asleep until woken');
    const wokeAt = Date.now();
    await m.qmp.execute('system_wakeup', {});
    await waitFor('running again', async () => (await runState()) === 'running', 60_000, 100);
    const runningAt = Date.now();
    await m.serial.check('true', { timeoutMs: 180_000 });
    const shellAt = Date.now();
    await waitFor(
      'the suspend transaction over',
      async () => /"outcome" s "(ok|incomplete|failed)"/.test(await lastSuspend()),
      120_000,
    );
    const timing = {
      toSuspendedMs: suspendedAt - pressed,
      wakeToRunningMs: runningAt - wokeAt,
      wakeToShellMs: shellAt - wokeAt,
    };
    console.log(`sleep ${JSON.stringify(timing)}`);
    writeFileSync(join(artifacts, 'suspend-resume.json'), JSON.stringify(timing, null, 2) + '\n');
    await shot('woken');

    const last = await lastSuspend();
    assert.match(last, /"reason" s "power-key"/, last);
    assert.match(last, /"outcome" s "ok"/, last);
    assert.match(last, /"pause-vms" "ok" "paused (personal, business|business, personal)"/, last);
    // Xen itself went through S3 (not only dom0's kernel), and came back.
    const xl = await m.serial.check('xl dmesg | tail -n 40');
    assert.match(xl, /Entering ACPI S3 state/);
    assert.match(xl, /Finishing wakeup from ACPI S3 state/);
    assert.equal(await m.vmState('personal'), 'running');
    assert.equal(await m.vmState('business'), 'running');
    assert.deepEqual(await m.xlDomids(), domids, 'the same domains: none restarted');
    assert.equal(await locked(), true, 'the seat is locked after the wake');
    await shot('woken-locked');

    // The password at the outer keyboard unlocks and reaches no guest.
    const p0 = (await m.xenGuestInput('personal')).length;
    const b0 = (await m.xenGuestInput('business')).length;
    await waitFor(
      'unlocked by the password',
      async () => {
        if (!(await locked())) return true;
        await m.typeText(`${OWNER_PASSWORD}\n`);
        await new Promise((r) => setTimeout(r, 5000));
        return !(await locked());
      },
      120_000,
      0,
    );
    assert.equal((await m.xenGuestInput('personal')).length, p0, 'the password reached no guest');
    assert.equal((await m.xenGuestInput('business')).length, b0, 'the password reached no guest');
    assert.equal(await m.activeVm(), '/', 'the lock took the screen home');
    assert.equal(await pictureShown({ kind: 'tiles' }, 'woken-tiles', 120_000), 'ok');

    // Keys reach only the active guest's kernel, after the wake as before it.
    await m.keys(['ctrl', '2']);
    await waitFor('Business active', async () => (await m.activeVm()) === VM('business'), 120_000);
    assert.equal(await pictureShown({ kind: 'vm', id: 'business' }, 'woken-business', 120_000), 'ok');
    await m.keys(['j']);
    await waitFor(
      'j in business',
      async () => (await m.xenGuestInput('business')).length >= b0 + 2,
      60_000,
      500,
    );
    await m.keys(['ctrl', '1']);
    await waitFor('Personal active', async () => (await m.activeVm()) === VM('personal'), 120_000);
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
);
