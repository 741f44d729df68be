/**
 * The whole mission, in the Control Domain image booted under QEMU: driven only from outside, as a
 * person at the machine would — keys and mouse through QMP on the outer QEMU, USB devices
 * hot-plugged into its xHCI controller, the UI through Chromium's DevTools (CDP). What only the
 * inside can show (the nested test VMs' serial logs, daemon state) is read over the serial console.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { waitFor } from './wait';
import { ImageMachine, readImageVms, recordBench } from './image-machine';
import { attachKiosk, kioskLoaded, OWNER_PASSWORD, unlockOnLockScreen } from './kiosk';
import { classify, percentile, pixelsChanged, readPpm, type SeenPicture } from './screen-picture';

const repo = join(__dirname, '..', '..');
/** The test flavour (FLAVOUR=test dom0-rootfs/build-image.sh): production plus the test layer. */
const imageDir = process.env.BULKHEAD_IMAGE_DIR ?? join(repo, '.cache', 'image-test');
const artifacts = join(repo, 'artifacts', 'e2e');
const VM = (id: string) => `/org/bulkhead/VmManager1/vm/${id}`;

let m: ImageMachine;
let browser: Browser;
let page: Page;
let step = 0;
/**
 * How long one switch may take to reach the screen before the scenario fails. The reported fault
 * was a view black for more than 30 s, or a blank page for minutes; on this 2-core TCG box shared
 * with other test runs a healthy switch has taken up to ~15 s (the first after boot the longest).
 * Speed is recorded (hotkey-to-picture.json, bench-results.json), not asserted.
 */
const PICTURE_BOUND_MS = 30_000;

/** The image's VMs and the color each test guest paints (dom0-rootfs/vms/*.json, `color`). */
const imageVms = readImageVms();
const vmInSlot = (slot: number) => {
  const vm = imageVms.find((v) => v.slot === slot);
  if (!vm) throw new Error(`no VM in slot ${slot} in dom0-rootfs/vms`);
  return vm;
};
const describe = (p: SeenPicture) =>
  p.kind === 'vm' ? `the ${p.id} VM` : p.kind === 'tiles' ? 'the tiles' : p.why;

/**
 * Polls the outer QEMU's screen (QMP screendump, nothing else) until it shows `want`; returns the
 * time from `since` to the first screendump that showed it. Each poll's picture overwrites one
 * file; the last one is kept as a PNG next to it for a person to look at.
 */
async function waitForPicture(
  want: SeenPicture,
  name: string,
  since: number,
  boundMs: number,
): Promise<number> {
  const ppm = join(artifacts, `${name}.ppm`);
  let seen: SeenPicture = { kind: 'other', why: 'no screendump yet' };
  for (;;) {
    await m.qmp.execute('screendump', { filename: ppm });
    const at = Date.now();
    seen = classify(readPpm(ppm), imageVms);
    const ok = seen.kind === want.kind && (seen.kind !== 'vm' || want.kind !== 'vm' || seen.id === want.id);
    if (ok || at - since > boundMs) {
      await m.screendump(name).catch(() => undefined);
      if (existsSync(ppm)) unlinkSync(ppm);
      if (ok) return at - since;
      throw new Error(
        `${name}: the screen did not show ${describe(want)} within ${boundMs} ms; it showed: ${describe(seen)} (see ${name}.png)`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The bare baseline of hotkey-to-picture (issue 17): the same outer QMP key at t0 and the same
 * screendump poll, with no switch: a key typed into the VM shown full screen, until the outer screen
 * shows the toy guest's echo of it (it draws each event as a line on its own screen, and nothing
 * else: no clock, no cursor). Key → input-daemon → the VM's QEMU → the guest → the kiosk's view of
 * the VM → the outer screen: what this machine's display path costs for any key. Also a check that
 * the shown VM's view is live: an echo that never reaches the screen fails the scenario. Ends on
 * the tiles, as it found them.
 */
async function keyEchoTimes(slot: number, keys: number): Promise<number[]> {
  const vm = vmInSlot(slot);
  await m.keys(['ctrl', String(slot)]);
  await waitForPicture({ kind: 'vm', id: vm.id }, `echo-00-ctrl${slot}`, Date.now(), PICTURE_BOUND_MS);
  const file = join(artifacts, 'echo.ppm');
  const grab = async () => {
    await m.qmp.execute('screendump', { filename: file });
    return readPpm(file);
  };
  const times: number[] = [];
  for (let i = 0; i < keys; i++) {
    // A settled screen first (the switch's last frames, the previous echo's release line).
    let before = await grab();
    for (let k = 0; k < 20; k++) {
      await new Promise((r) => setTimeout(r, 400));
      const again = await grab();
      const moved = pixelsChanged(before, again);
      before = again;
      if (moved === 0) break;
    }
    const t0 = Date.now();
    await m.keys([['a', 's', 'd', 'f', 'j', 'k'][i % 6]]);
    for (;;) {
      const at = Date.now();
      const changed = pixelsChanged(before, await grab());
      // A drawn line of text, not a stray pixel.
      if (changed >= 20) {
        times.push(at - t0);
        break;
      }
      if (at - t0 > PICTURE_BOUND_MS) {
        await m.screendump(`echo-${String(i + 1).padStart(2, '0')}-missing`).catch(() => undefined);
        throw new Error(
          `a key typed into ${vm.id} was not echoed on the outer screen within ${PICTURE_BOUND_MS} ms (${changed} pixels changed): the VM's view is not live`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  if (existsSync(file)) unlinkSync(file);
  await m.keys(['ctrl', '0']);
  await waitForPicture({ kind: 'tiles' }, 'echo-99-tiles', Date.now(), PICTURE_BOUND_MS);
  return times;
}

async function shot(name: string): Promise<void> {
  step++;
  const base = `${String(step).padStart(2, '0')}-${name}`;
  // The outer screen first: a CDP screenshot makes Chromium paint, so taken before, it would
  // hide a page that does not paint on its own (issue 12, item 10).
  await m.screendump(`${base}.screen`).catch(() => undefined);
  await page?.screenshot({ path: join(artifacts, `${base}.cdp.png`) }).catch(() => undefined);
}

/** Attach to the kiosk's own page once (src/kiosk.ts), after it shows the switcher. */
async function connectKiosk(): Promise<void> {
  if (page) return;
  ({ browser, page } = await attachKiosk(m, { loaded: true }));
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  m = new ImageMachine({ imageDir, artifactsDir: artifacts });
  await m.boot();
  await m.waitForServices(180_000);
  // Nothing attaches to the kiosk before the first scenario: it watches the screen from outside.
  await kioskLoaded(m);
});

after(async () => {
  if (m) {
    await m.saveOutput('journalctl -b --no-pager -u "bulkhead-*" -u dbus | tail -n 400', 'journal-tail.txt');
    await m.saveOutput(
      'journalctl -b --no-pager -t bulkhead-kiosk | grep -v "^$" | tail -n 300',
      'kiosk-journal.txt',
    );
    await m.saveOutput('dmesg | tail -n 100', 'dmesg-tail.txt');
    await m.saveOutput(
      'journalctl -b --no-pager -o short-precise | grep -v "input-daemon/evdev" | tail -n 1500',
      'journal-full-tail.txt',
    );
  }
  await browser?.close().catch(() => undefined);
  await m?.shutdown();
});

/**
 * Where each of the last `n` hotkey switches' time went inside the image, from the image's own
 * journal afterwards (nothing attached to the kiosk while it ran): input-daemon's hotkey line, the
 * end of vm-daemon's switch, and the switcher page's own timing of the view change (the push that
 * caused it, the DOM commit, the second animation frame: the web host logs the page's reportView).
 * All in the image's clock, in ms after the hotkey line; null where a line is missing.
 */
async function hotkeySplit(n: number): Promise<
  Array<{
    switchDoneMs: number | null;
    channel: string | null;
    pushMs: number | null;
    domMs: number | null;
    frameMs: number | null;
  }>
> {
  const lines = await m.serial
    .run(
      `journalctl -b --no-pager -o cat -u bulkhead-input-daemon -u bulkhead-vm-daemon -u bulkhead-switcher | grep -E 'info: hotkey Ctrl\\+[0-9] |switch .* (ok in|failed at) |view .* shown: ' | tail -n ${n * 4}`,
      { timeoutMs: 60_000 },
    )
    .then((r) => r.output.split('\n'))
    .catch(() => [] as string[]);
  const iso = (l: string) => {
    const t = /(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z)/.exec(l);
    return t ? Date.parse(t[1]) : NaN;
  };
  const hotkeys = lines
    .filter((l) => / info: hotkey Ctrl\+\d /.test(l))
    .map(iso)
    .slice(-n);
  const switches = lines.filter((l) => / (ok in|failed at) /.test(l)).map(iso);
  const views = lines
    .map((l) => /view (\S+) shown: push '(\w*)' at (\S+), DOM \+(\d+) ms, second frame \+(\d+) ms/.exec(l))
    .filter((v): v is RegExpExecArray => !!v)
    .map((v) => ({ channel: v[2], push: Date.parse(v[3]), dom: Number(v[4]), frame: Number(v[5]) }));
  return hotkeys.map((h, i) => {
    const next = hotkeys[i + 1] ?? Infinity;
    const within = (t: number) => t >= h - 50 && t < next;
    const done = switches.find(within);
    const view = views.find((v) => within(v.push));
    return {
      switchDoneMs: done === undefined ? null : done - h,
      channel: view?.channel ?? null,
      pushMs: view ? view.push - h : null,
      domMs: view ? view.push + view.dom - h : null,
      frameMs: view ? view.push + view.frame - h : null,
    };
  });
}

test("1. ten hotkey switches: after each, the outer screen alone shows the new VM's picture or the tiles", async () => {
  // Nothing is attached to the kiosk here (no DevTools session, no CDP screenshot, no fresh page):
  // only what Chromium paints on its own reaches the outer QEMU's screen. Under TCG a switch is
  // slow; the bound is generous and time is recorded, not asserted (benchmarks judge speed).
  await waitFor(
    'both VMs running',
    async () => (await m.vmState('personal')) === 'running' && (await m.vmState('business')) === 'running',
    120_000,
  );
  await waitForPicture({ kind: 'tiles' }, 'switch-00-tiles', Date.now(), 120_000);
  const slots = [1, 2, 0, 2, 1, 0, 1, 2, 1, 0, 2, 0];
  const times: Array<{ n: number; chord: string; shows: string; ms: number }> = [];
  for (const [i, slot] of slots.entries()) {
    const n = i + 1;
    const want: SeenPicture = slot === 0 ? { kind: 'tiles' } : { kind: 'vm', id: vmInSlot(slot).id };
    const name = `switch-${String(n).padStart(2, '0')}-ctrl${slot}`;
    const t0 = Date.now();
    await m.keys(['ctrl', String(slot)]);
    const ms = await waitForPicture(want, name, t0, PICTURE_BOUND_MS);
    times.push({ n, chord: `Ctrl+${slot}`, shows: describe(want), ms });
  }
  const sorted = times.map((t) => t.ms).sort((a, b) => a - b);
  // Where the time went, from the image's own log afterwards (nothing attached to the kiosk):
  // vm-daemon's duration of each of these switches (null: it failed). The rest of each time is
  // the key reaching input-daemon, the switcher's push to the page, and Chromium's frame reaching
  // the outer screen (issue 17: a diagnostic run timed those; the kiosk was CPU-starved).
  const switchLines = await m.serial
    .run(
      `journalctl -b --no-pager -o cat -u bulkhead-vm-daemon | grep -E 'switch .* (ok in|failed at) ' | tail -n ${slots.length}`,
      { timeoutMs: 60_000 },
    )
    .then((r) => r.output.split('\n').filter((l) => / (ok in|failed at) /.test(l)))
    .catch(() => [] as string[]);
  const vmDaemonSwitchMs = switchLines.map((l) => {
    const ok = / ok in (\d+) us/.exec(l);
    return ok ? Math.round(Number(ok[1]) / 1000) : null;
  });
  const split = await hotkeySplit(slots.length);
  // After the journal reads above, which take the last switches' lines: the baseline adds two.
  const echoes = await keyEchoTimes(2, 6);
  const echoSorted = [...echoes].sort((a, b) => a - b);
  // Where the image's CPU goes, after the timed switches (the tiles shown, nothing attached):
  // each process's CPU time so far, and a 5 s sample of what runs while nobody does anything.
  await m.serial
    .run(
      "cat /proc/loadavg; ps -eo pid,user,time,pcpu,args --sort=-time | cut -c1-220 | head -n 25; top -b -n 2 -d 5 -w 160 | awk '/^top -/{n++} n==2' | head -n 25",
      { timeoutMs: 90_000 },
    )
    .then(async (r) => {
      // Chromium's own list of its targets (DevTools' HTTP listing: nothing attaches): which page
      // each renderer is for.
      const targets = await fetch(`http://127.0.0.1:${m.cdpPort}/json/list`, {
        signal: AbortSignal.timeout(10_000),
      })
        .then((res) => res.text())
        .catch((e: Error) => `no target list: ${e.message}`);
      writeFileSync(join(artifacts, 'hotkey-to-picture-cpu.txt'), `${r.output}\n${targets}\n`);
    })
    .catch(() => undefined);
  const summary = {
    what: 'hotkey (outer QMP input-send-event) to the first outer screendump showing the new picture, ms',
    switches: times.length,
    p50: percentile(sorted, 0.5),
    p95: percentile(sorted, 0.95),
    max: sorted[sorted.length - 1],
    times,
    vmDaemonSwitchMs,
    split,
    bareKeyEcho: {
      what: "a key typed into the shown VM (no switch) to the first outer screendump showing the guest's echo of it, ms",
      p50: percentile(echoSorted, 0.5),
      p95: percentile(echoSorted, 0.95),
      times: echoes,
    },
  };
  console.log(
    `hotkey -> picture over ${times.length} switches: p50 ${summary.p50} ms, p95 ${summary.p95} ms, max ${summary.max} ms (${times.map((t) => t.ms).join(', ')}); vm-daemon's own switch ms: ${vmDaemonSwitchMs.join(', ')}`,
  );
  console.log(
    `bare baseline, a key's echo on the shown VM's screen (no switch), ${echoes.length} keys: p50 ${summary.bareKeyEcho.p50} ms, p95 ${summary.bareKeyEcho.p95} ms (${echoes.join(', ')}); ratio picture / echo p50 ${(summary.p50 / summary.bareKeyEcho.p50).toFixed(2)}, p95 ${(summary.p95 / summary.bareKeyEcho.p95).toFixed(2)}`,
  );
  for (const [i, s] of split.entries())
    console.log(
      `  switch ${i + 1}: picture ${times[i]?.ms ?? '?'} ms; in the image after input-daemon's hotkey line: vm-daemon done +${s.switchDoneMs ?? '?'}, the page's push +${s.pushMs ?? '?'} ('${s.channel ?? '?'}'), DOM +${s.domMs ?? '?'}, second frame +${s.frameMs ?? '?'} ms`,
    );
  writeFileSync(join(artifacts, 'hotkey-to-picture.json'), JSON.stringify(summary, null, 2) + '\n');
  recordBench('e2e/hotkey-to-picture', {
    p50Ms: summary.p50,
    p95Ms: summary.p95,
    maxMs: summary.max,
    switches: times.length,
    bareKeyEchoP50Ms: summary.bareKeyEcho.p50,
    bareKeyEchoP95Ms: summary.bareKeyEcho.p95,
    ratioP50: +(summary.p50 / summary.bareKeyEcho.p50).toFixed(3),
    ratioP95: +(summary.p95 / summary.bareKeyEcho.p95).toFixed(3),
    at: new Date().toISOString(),
  });
});

test('2. the tiles show both VMs; clicking Personal switches to it', async () => {
  await connectKiosk();
  if ((await m.activeVm()) !== '/') {
    // Scenario 1 ends on the tiles; after a failure of its own it may not have.
    await m.hotkeyTo(0, '/', 'the switcher active');
  }
  await page.getByRole('button', { name: /^Personal, slot 1/ }).waitFor();
  await page.getByRole('button', { name: /^Business, slot 2/ }).waitFor();
  await waitFor(
    'both VMs running',
    async () => (await m.vmState('personal')) === 'running' && (await m.vmState('business')) === 'running',
    120_000,
  );
  await shot('tiles');
  const clicked = Date.now();
  await page.getByRole('button', { name: /^Personal, slot 1/ }).click({ noWaitAfter: true });
  await waitFor('Personal active', async () => (await m.activeVm()) === VM('personal'));
  // The shell shows the VM's own screen (its VNC display): the test guest fills it with its color.
  // Judged on the outer screen, before anything is asked of the page.
  await waitForPicture({ kind: 'vm', id: 'personal' }, 'click-personal', clicked, PICTURE_BOUND_MS);
  await page.getByRole('region', { name: 'Personal display' }).waitFor();
  await shot('personal-active');
});

test('3. keys reach only the active VM; Ctrl+2 switches and reaches no VM; a held button is released in the VM left behind', async () => {
  assert.equal(await m.activeVm(), VM('personal'));
  const p0 = (await m.guestInput('personal')).length;
  const b0 = (await m.guestInput('business')).length;
  await m.keys(['a'], ['s'], ['d']);
  await waitFor('personal got a s d', async () => (await m.guestInput('personal')).length >= p0 + 6, 20_000);
  await m.button('left', true); // held across the switch
  await new Promise((r) => setTimeout(r, 300));
  await m.hotkeyTo(2, VM('business'), 'Business active');
  await m.button('left', false);
  await m.keys(['j'], ['k'], ['l']);
  await waitFor('business got j k l', async () => (await m.guestInput('business')).length >= b0 + 6, 20_000);
  await new Promise((r) => setTimeout(r, 1000));
  const p = (await m.guestInput('personal')).slice(p0);
  const b = (await m.guestInput('business')).slice(b0);
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

/** A lock-related D-Bus call as root inside the image: 'ok' or 'error <Name>: <message>'. */
const busCall = async (what: 'unlock' | 'switch', args: string) =>
  (await m.serial.check(`bulkhead-test-call ${what} ${args}`)).trim();

/** The lock screen's words about the last attempt ('' when none). */
const lockProblem = async () =>
  (await page.getByRole('dialog', { name: 'Locked' }).locator('.lock-problem').innerText()).trim();

/** The lock screen takes the password (control-domain's six attempts: the back-off may run). */
const unlockWithPassword = (password: string) => unlockOnLockScreen(m, page, password, 6);

test('4. Ctrl+0 returns to the switcher; the secure-attention chord locks; no key reaches any VM and no Switch runs until unlocked; a wrong password is refused and backs off; the right one unlocks', async () => {
  await m.hotkeyTo(0, '/', 'the switcher active');
  await page.getByRole('list', { name: 'Machines' }).waitFor();
  await shot('switcher-after-ctrl0');
  const p0 = (await m.guestInput('personal')).length;
  const b0 = (await m.guestInput('business')).length;
  await m.keys(['ctrl', 'alt', 'backspace']);
  const dialog = page.getByRole('dialog', { name: 'Locked' });
  await dialog.waitFor({ timeout: 20_000 });
  await shot('locked');
  await m.keys(['ctrl', '1'], ['x'], ['ctrl', '2'], ['y']);
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await m.activeVm(), '/', 'no switch while locked');
  assert.equal((await m.guestInput('personal')).length, p0, 'no key reached personal while locked');
  assert.equal((await m.guestInput('business')).length, b0, 'no key reached business while locked');
  assert.match(await busCall('switch', VM('personal')), /^error Locked: /, 'a D-Bus Switch while locked');
  assert.equal(await m.activeVm(), '/', 'the refused Switch changed nothing');

  // The keys typed while locked ("xy") went into the password field: with "wrong" after them, a
  // wrong password, typed at the keyboard like a person would.
  const field = dialog.getByLabel('Password');
  await m.typeText('wrong\n');
  await waitFor('the lock screen saying the password was wrong', async () =>
    /^Wrong password\./.test(await lockProblem()),
  );
  assert.equal(await field.inputValue(), '', 'the field is emptied after the attempt');
  await shot('wrong-password');
  // Back-off, asked of input-daemon directly: three wrong guesses one right after the other (one
  // process: node starts too slowly under TCG to land inside a 1 s wait from separate runs). The
  // ones arriving during the wait get TryAgainLater, without PAM being asked.
  const answers = (await busCall('unlock', 'guess1 guess2 guess3')).split('\n').map((l) => l.trim());
  assert.equal(answers.length, 3, answers.join(' | '));
  assert.ok(
    answers.every((a) => /^error (AuthenticationFailed|TryAgainLater): /.test(a)),
    `wrong guesses: ${answers.join(' | ')}`,
  );
  assert.match(answers[2], /^error TryAgainLater: .*try again in \d+ s/, `backs off: ${answers.join(' | ')}`);
  assert.match(
    await m.busProperty('org.bulkhead.Input1', '/org/bulkhead/Input1', 'org.bulkhead.Input1', 'Locked'),
    /true/,
  );

  await unlockWithPassword(OWNER_PASSWORD);
  assert.match(
    await m.busProperty('org.bulkhead.Input1', '/org/bulkhead/Input1', 'org.bulkhead.Input1', 'Locked'),
    /false/,
  );
  await m.hotkeyTo(1, VM('personal'), 'Personal active after unlock');
  await shot('unlocked-personal');
});

/**
 * usb-daemon's record of the USB stick (the outer machine's "QEMU USB HARDDRIVE"): its AssignedVm
 * and State over the bus, e.g. `o "/org/bulkhead/VmManager1/vm/business" s "attached"`.
 */
async function stickRecord(): Promise<string> {
  return (
    await m.serial.check(
      "for p in $(busctl --list tree org.bulkhead.Usb1 | grep /device/); do busctl get-property org.bulkhead.Usb1 $p org.bulkhead.UsbDevice1 Product AssignedVm State | tr '\\n' ' '; echo; done | grep -i harddrive | sed 's/^s \"[^\"]*\" //' || true",
    )
  ).trim();
}

/** How many times usb-daemon has asked the running VMs what they hold (at its start, and each time vm-daemon came). */
async function usbReconciles(): Promise<number> {
  const n = await m.serial.check(
    "journalctl -b -o cat -u bulkhead-usb-daemon | grep -c 'asked the running VMs which USB devices they hold' || true",
  );
  return Number(n.trim()) || 0;
}

/** `info usb` of a nested VM, through its HMP monitor socket (root-only, in the image). */
async function nestedInfoUsb(id: string): Promise<string> {
  return m.serial.check(`echo 'info usb' | socat -t 2 - UNIX-CONNECT:/run/bulkhead/vms/${id}/monitor.sock`);
}

test('5. a hot-plugged USB stick appears in the USB panel, is assigned to Business, follows focus; a hot-plugged keyboard stays with input-daemon', async () => {
  await m.hotkeyTo(0, '/', 'the switcher active');
  await m.plugUsbStick();
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
  await m.hotkeyTo(1, VM('personal'), 'Personal active');
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
      const devs = await m.busProperty(
        'org.bulkhead.Input1',
        '/org/bulkhead/Input1',
        'org.bulkhead.Input1',
        'Devices',
      );
      return /"QEMU QEMU USB Keyboard" "keyboard" "usb" true/.test(devs);
    },
    60_000,
  );
  await m.hotkeyTo(0, '/', 'the switcher active');
  await page.getByRole('button', { name: /USB devices/ }).click({ noWaitAfter: true });
  await page
    .getByRole('listitem', { name: /Keyboard.*held by Control Domain/i })
    .waitFor({ timeout: 60_000 });
  await shot('usb-keyboard-kept');
});

test('6. exclusive grab: no other reader of a grabbed keyboard sees a key', async () => {
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

/** The line each daemon logs once it serves (its seat grabbed, its bus name taken). */
const READY_LINE: Record<string, string> = {
  'bulkhead-vm-daemon': 'vm-daemon info: ready on ',
  'bulkhead-input-daemon': 'input-daemon info: ready: ',
  'bulkhead-usb-daemon': 'usb-daemon info: serving org.bulkhead.Usb1',
  'bulkhead-switcher': 'SWITCHER-URL ',
};

/**
 * `unit`'s current process has said it is ready. systemd calls a Type=simple unit active as soon
 * as it forked: under TCG a restarted input-daemon took 34 s from there to its seat's grab, and a
 * hotkey pressed in between reached no daemon (a control-domain run on 2026-12-02).
 */
async function daemonReady(unit: string): Promise<boolean> {
  const out = await m.serial.check(
    `pid=$(systemctl show -p MainPID --value ${unit}); [ "$pid" != 0 ] && journalctl -b -o cat _PID=$pid | grep -c '${READY_LINE[unit]}' || echo 0`,
  );
  return Number(out.trim().split('\n').pop()) > 0;
}

test('7. a daemon killed inside the image: systemd restarts it, the switcher shows the outage and recovers, the active VM and devices stay', async () => {
  await m.hotkeyTo(2, VM('business'), 'Business active');
  // Scenario 4's refused switch (locked) is long over: its failure card is not left over the VM.
  assert.equal(await page.getByText(/^Could not switch to/).count(), 0, "no earlier switch's failure card");
  const pids = await m.serial.check(
    'cat /run/bulkhead/vms/personal/qemu.pid /run/bulkhead/vms/business/qemu.pid',
  );
  const usbBefore = await nestedInfoUsb('personal');
  // The stick follows focus (scenario 5): business holds it, in its QEMU and in usb-daemon's record.
  const onBusiness = `o "${VM('business')}" s "attached"`;
  assert.equal(await stickRecord(), onBusiness, 'the stick on business before the kills');
  assert.match(await nestedInfoUsb('business'), /HARDDRIVE|usb-host/i);
  const reconciles = await usbReconciles();
  // The daemon's main process only: its VMs (QEMU) are in the same cgroup and must survive.
  await m.serial.check('kill -9 $(systemctl show -p MainPID --value bulkhead-vm-daemon)');
  await page
    .getByRole('alert')
    .filter({ hasText: /not running/ })
    .waitFor({ timeout: 30_000 })
    .catch(() => undefined);
  await shot('vm-daemon-killed');
  await waitFor('vm-daemon back', () => daemonReady('bulkhead-vm-daemon'), 120_000, 1000);
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
  assert.equal(await m.vmState('personal'), 'running');
  assert.equal(await m.vmState('business'), 'running');
  assert.equal(await m.activeVm(), VM('business'), 'the active VM stayed active');
  assert.equal(await nestedInfoUsb('personal'), usbBefore, 'no device detached');
  // usb-daemon asked the VMs again once vm-daemon was back, and still has the stick on business
  // (it once took QEMU's unset hostaddr of a stick attached by port for a device gone, and
  // recorded it back in the Control Domain while business held it).
  await waitFor(
    'usb-daemon asked the VMs again',
    async () => (await usbReconciles()) > reconciles,
    60_000,
    1000,
  );
  assert.equal(await stickRecord(), onBusiness, "after vm-daemon's restart: the stick still on business");
  // input-daemon and usb-daemon too. input-daemon dies with X held down in business: its
  // successor releases it there (the held-keys journal) by QMP, since its own new uinput device
  // never had X down and the kernel would drop that release; the outer key stays down until then.
  const xBefore = (await m.guestInput('business')).length;
  await m.key('x', true);
  await waitFor(
    'X down in business',
    async () => (await m.guestInput('business')).slice(xBefore).some((l) => /^KEY down 2d\b/.test(l)),
    20_000,
  );
  for (const unit of ['bulkhead-input-daemon', 'bulkhead-usb-daemon']) {
    await m.serial.check(`kill -9 $(systemctl show -p MainPID --value ${unit})`);
    await waitFor(`${unit} back`, () => daemonReady(unit), 120_000, 1000);
    if (unit === 'bulkhead-input-daemon')
      await waitFor(
        'X released in business by the restarted input-daemon (the key still down on the keyboard)',
        async () => (await m.guestInput('business')).slice(xBefore).some((l) => /^KEY up 2d\b/.test(l)),
        60_000,
        1000,
      );
  }
  await m.key('x', false);
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
  assert.match(await nestedInfoUsb('business'), /HARDDRIVE|usb-host/i, 'the stick still in business');
  await waitFor(
    "the new usb-daemon's record of the stick",
    async () => (await stickRecord()) === onBusiness,
    60_000,
    1000,
  ).catch(async (e: Error) => {
    throw new Error(`${e.message}: ${await stickRecord()}`);
  });
  // The seat still works: a hotkey switches and keys land in the VM.
  await m.hotkeyTo(1, VM('personal'), 'Personal active after the restarts');
  const before = (await m.guestInput('personal')).length;
  await m.keys(['z']);
  await waitFor(
    'z reached personal',
    async () => (await m.guestInput('personal')).length >= before + 2,
    20_000,
  );
  // The new input-daemon reaches personal's QEMU by the fast path again, beside the object its
  // killed predecessor left there (not the per-key QMP fallback).
  const { path, lines } = await m.inputPathOf('personal');
  assert.equal(
    path,
    'uinput',
    `after input-daemon's restart, personal's input path: ${lines || 'none logged'}`,
  );
  await shot('recovered');
  // The switcher's web host too (it serves the page, its channel and the VMs' displays): the
  // kiosk's page, not reloaded, reconnects with the token in its URL and its views with it, so a
  // hotkey shows the VM's own picture again on the outer screen. (A restarted web host once made a
  // new token: the page was refused for good, and the screen stayed on the last picture.)
  await m.serial.check('kill -9 $(systemctl show -p MainPID --value bulkhead-switcher)');
  await waitFor('bulkhead-switcher back', () => daemonReady('bulkhead-switcher'), 120_000, 1000);
  const t0 = Date.now();
  await m.hotkeyTo(2, VM('business'), 'Business active after the web host restart');
  const ms = await waitForPicture({ kind: 'vm', id: 'business' }, 'web-host-restarted', t0, 120_000);
  console.log(`after the web host's restart: business's picture ${ms} ms after its hotkey`);
});

// Before the renderer is killed: Playwright's handle of a page whose renderer crashed answers
// "Target crashed" from then on.
test('8. the idle timer locks the seat; the password unlocks it again', async () => {
  // The test layer turns the idle lock off (its scenarios have long stretches without input); this
  // one turns it on with a runtime drop-in (gone at the next boot), then off again. The drop-in's
  // name sorts after the test layer's test-layer.conf: systemd applies drop-ins in file-name order
  // across /etc and /run, and the last Environment= wins. 20 s: long
  // enough to type the password and turn it off before it locks a second time.
  const dropIn = '/run/systemd/system/bulkhead-input-daemon.service.d';
  const restartInput = async (setup: string) => {
    await m.serial.check(`${setup} && systemctl daemon-reload && systemctl restart bulkhead-input-daemon`);
    await page.getByRole('dialog', { name: 'Locked' }).waitFor({ state: 'detached', timeout: 60_000 });
  };
  const isLocked = async () =>
    /true/.test(
      await m.busProperty('org.bulkhead.Input1', '/org/bulkhead/Input1', 'org.bulkhead.Input1', 'Locked'),
    );
  await restartInput(
    `mkdir -p ${dropIn} && printf '[Service]\\nEnvironment=BULKHEAD_IDLE_LOCK_SECONDS=20\\n' > ${dropIn}/zz-idle.conf`,
  );
  try {
    await waitFor('the seat locked by the idle timer', isLocked, 120_000);
    await page.getByRole('dialog', { name: 'Locked' }).waitFor({ timeout: 30_000 });
    await shot('idle-locked');
    await unlockWithPassword(OWNER_PASSWORD);
    assert.equal(await isLocked(), false, 'unlocked by the password');
  } finally {
    await restartInput(`rm -f ${dropIn}/zz-idle.conf`);
  }
});

test("9. the kiosk page's renderer killed: the kiosk reloads it by itself and the screen shows the active VM again", async () => {
  const active = await m.activeVm();
  const want: SeenPicture =
    active === '/' ? { kind: 'tiles' } : { kind: 'vm', id: active.slice(active.lastIndexOf('/') + 1) };
  // Chromium's renderers (not the browser, GPU or utility processes), each killed by its pid.
  const pids = (
    await m.serial.check(
      `for p in $(pgrep -u bulkhead-ui -x chromium); do tr '\\0' ' ' < /proc/$p/cmdline | grep -q -- '--type=renderer' && echo $p; done; true`,
    )
  )
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^\d+$/.test(l));
  assert.ok(pids.length > 0, 'found the kiosk renderer');
  await m.serial.check(`kill -9 ${pids.join(' ')}`);
  // A crashed page stays "Aw, Snap!" until reloaded; the image's kiosk (kiosk.js, over its DevTools
  // pipe) reloads it.
  await waitFor(
    'the kiosk reloading the crashed page',
    async () =>
      /crashed: reloading it/.test(
        // By its syslog identifier: the kiosk runs in a login session (PAMName=login), so its
        // processes log under the session's scope, not under the unit.
        await m.serial.check('journalctl -b --no-pager -t bulkhead-kiosk | tail -n 40'),
      ),
    60_000,
  );
  // The reload under TCG loads the whole renderer bundle again: a longer bound than a switch.
  await waitForPicture(want, 'renderer-killed', Date.now(), 120_000);
});

test("10. the running image: TCP listeners only where documented (the web host on loopback; the test layer's DevTools and its forward), Chromium's renderers and the VMs' QEMUs sandboxed", async () => {
  // Everything but the test layer's two listeners runs the same in production (dom0-rootfs/README.md).
  const listeners = (await m.serial.check("ss -H -ltn | awk '{print $4}'"))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
  // The web host on 127.0.0.2, not 127.0.0.1: a VM on QEMU's user-mode network reaches the
  // Control Domain's 127.0.0.1 (slirp maps 10.0.2.2 there) and no other loopback address.
  assert.deepEqual(listeners, ['0.0.0.0:9223', '127.0.0.1:9222', '127.0.0.2:8080']);
  const renderers = (
    await m.serial.check(
      `for p in $(pgrep -u bulkhead-ui -x chromium); do tr '\\0' ' ' < /proc/$p/cmdline | grep -q -- '--type=renderer' && echo "$p $(grep '^Seccomp:' /proc/$p/status)"; done; true`,
    )
  )
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  assert.ok(renderers.length > 0, 'found the kiosk renderers');
  for (const r of renderers) assert.match(r, /Seccomp:\s+2$/, `renderer under seccomp (sandbox on): ${r}`);
  assert.doesNotMatch(
    await m.serial.check("tr '\\0' ' ' < /proc/$(pgrep -u bulkhead-ui -x -o chromium)/cmdline"),
    /--no-sandbox/,
  );
  // Each VM's QEMU (root, where a guest's hostile input lands) runs under QEMU's seccomp
  // sandbox (apps/vm-daemon/src/backend/qemu-sandbox.ts, qemuSandbox): its run dir's pid file.
  const qemus = (
    await m.serial.check(
      `for f in /run/bulkhead/vms/*/qemu.pid; do p=$(cat $f); [ -d /proc/$p ] && echo "$(basename $(dirname $f)) $(tr '\\0' ' ' < /proc/$p/cmdline | grep -o -- '-sandbox [^ ]*') $(grep '^Seccomp:' /proc/$p/status)"; done; true`,
    )
  )
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  assert.deepEqual(
    qemus.map((l) => l.split(' ')[0]).sort(),
    imageVms
      .filter((v) => v.backend === 'qemu')
      .map((v) => v.id)
      .sort(),
    `the image's VMs each have a running QEMU: ${qemus.join('; ')}`,
  );
  for (const q of qemus)
    assert.match(
      q,
      / -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny Seccomp:\s+2$/,
      `VM QEMU under seccomp: ${q}`,
    );
  // The web host's token is on no command line a local uid can read (every uid reads
  // /proc/<pid>/cmdline here): with it, any of them could use the web host as the switcher.
  const token = (await m.serial.check('cat /run/bulkhead-ui/token')).trim();
  assert.match(token, /^[A-Za-z0-9_-]{32}$/, `the token file holds a token: ${token}`);
  // Read as nobody; compared as root with the pattern read from the file (grep -f), so the token
  // is on no command line of this check itself.
  const leaks = await m.serial.check(
    `runuser -u nobody -- sh -c 'for f in /proc/[0-9]*/cmdline; do tr "\\\\0" " " < $f; echo; done' 2>/dev/null > /tmp/cmdlines; echo "processes: $(wc -l < /tmp/cmdlines)"; grep -F -f /run/bulkhead-ui/token /tmp/cmdlines; true`,
  );
  assert.match(leaks, /processes: [1-9][0-9]+/, `nobody read the command lines: ${leaks}`);
  const found = leaks.split('\n').filter((l) => l.trim() && !l.startsWith('processes: '));
  assert.deepEqual(found, [], 'the token on a command line readable by nobody');
  // Were the token to leak anyway, it would let no other uid in: the web host accepts
  // connections from the kiosk's uid only (bulkhead-switcher.service's --allow-uid). nobody, handed
  // the real token on stdin (opened by root: nobody cannot read the file), is refused; the kiosk's
  // user with the same request is served, so the refusal is the uid's, not the request's.
  const asNobody = await webHostProbe('nobody');
  assert.doesNotMatch(asNobody, /HTTP\/1\.1/, `nobody, with the token, was answered: ${asNobody}`);
  assert.match(asNobody, /WEBHOST-PROBE (closed|error ECONNRESET)/, asNobody);
  assert.match(await webHostProbe('bulkhead-ui'), /WEBHOST-PROBE HTTP\/1\.1 200 /);
  const webHostLog = await m.serial.check(
    `journalctl -b --no-pager -u bulkhead-switcher | grep -e 'refused a connection' -e 'connections only from uid'; true`,
  );
  const allowed = (await m.serial.check('id -u bulkhead-ui')).trim();
  assert.match(
    webHostLog,
    new RegExp(`listening on 127\\.0\\.0\\.2:8080: connections only from uid ${allowed}\n`),
  );
  assert.match(
    webHostLog,
    new RegExp(
      `refused a connection to port 8080 from uid ${NOBODY_UID} \\(127\\.0\\.0\\.1:\\d+\\): not an allowed uid \\(${allowed}\\)`,
    ),
    webHostLog,
  );
  assert.ok(!webHostLog.includes(token), 'the token in a refusal line');
  // Nor in the boot's journal (the web host printed its URL with the token to it before).
  const inJournal = await m.serial.check(
    'journalctl -b --no-pager -o cat | grep -a -F -f /run/bulkhead-ui/token | cut -c1-120; true',
  );
  assert.equal(inJournal.trim(), '', `the token in the journal: ${inJournal.replaceAll(token, '<token>')}`);
  // The kiosk's user cannot open a VM's VNC socket; only the web host's user may.
  assert.doesNotMatch(await m.serial.check('id bulkhead-ui'), /bulkhead-vnc/);
  assert.match(await m.serial.check('id bulkhead-switcher'), /bulkhead-vnc/);
});

const NOBODY_UID = 65534;

/**
 * One HTTP request for the switcher's page, with the real token, made inside the image by a node
 * process running as `user`: `WEBHOST-PROBE <status line>`, or `closed` / `error <code>` when the
 * web host dropped the connection. The token goes in on stdin, never on a command line.
 */
async function webHostProbe(user: 'nobody' | 'bulkhead-ui'): Promise<string> {
  const script =
    'let t="";process.stdin.on("data",(d)=>(t+=d)).on("end",()=>{' +
    'const s=require("net").connect(8080,"127.0.0.2",()=>s.write("GET /?token="+t.trim()+" HTTP/1.1\\r\\nHost: 127.0.0.2\\r\\nConnection: close\\r\\n\\r\\n"));' +
    'let g="";s.on("data",(d)=>(g+=d));' +
    's.on("error",(e)=>console.log("WEBHOST-PROBE error "+e.code));' +
    's.on("close",()=>console.log("WEBHOST-PROBE "+(g.split("\\r\\n")[0]||"closed")))})';
  return m.serial.check(`runuser -u ${user} -- node -e '${script}' < /run/bulkhead-ui/token`);
}

/**
 * The test layer's RFB probe (dom0-rootfs/test-layer/rootfs/usr/local/lib/bulkhead-test/rfb-probe.js)
 * run inside the image as `user`: its one-line JSON report.
 */
async function rfbProbe(
  user: 'root' | 'bulkhead-ui',
  how: 'web' | 'socket',
  target: string,
): Promise<{
  connected: boolean;
  error?: string;
  name?: string;
  updateAfterInput?: boolean;
  closedAfterUnknown?: boolean;
}> {
  const cmd = `node /usr/local/lib/bulkhead-test/rfb-probe.js ${how} ${target}`;
  const out = await m.serial.check(user === 'root' ? cmd : `runuser -u ${user} -- ${cmd}`, {
    timeoutMs: 90_000,
  });
  const line = out.split('\n').find((l) => l.startsWith('RFB-PROBE '));
  assert.ok(line, `rfb-probe printed no report: ${out}`);
  return JSON.parse(line.slice('RFB-PROBE '.length));
}

test("11. the display channel carries no input: as the kiosk's user, RFB keys, pointer and clipboard into a VM's view reach no guest, focused, unfocused or locked; the VMs' display sockets refuse that user", async () => {
  assert.match(await busCall('switch', VM('personal')), /^ok/);
  await waitFor('Personal active', async () => (await m.activeVm()) === VM('personal'));
  const counts = async () => ({
    personal: (await m.guestInput('personal')).length,
    business: (await m.guestInput('business')).length,
  });

  // The control: the same messages as root, straight at the unfocused VM's VNC socket (no filter)
  // do reach its kernel. Without this the check below could pass with a probe whose events no
  // guest would ever take.
  const c0 = await counts();
  const control = await rfbProbe('root', 'socket', '/run/bulkhead/vms/business/vnc.sock');
  assert.equal(control.connected, true, JSON.stringify(control));
  await waitFor(
    "the probe's keys in business's log when sent around the filter",
    async () => (await m.guestInput('business')).slice(c0.business).includes('KEY down 10'),
    20_000,
  );

  // The kiosk's user cannot open a VM's display socket at all.
  for (const id of ['personal', 'business']) {
    const direct = await rfbProbe('bulkhead-ui', 'socket', `/run/bulkhead/vms/${id}/vnc.sock`);
    assert.equal(direct.connected, false, `bulkhead-ui opened ${id}'s VNC socket: ${JSON.stringify(direct)}`);
    assert.match(direct.error ?? '', /EACCES/, JSON.stringify(direct));
  }

  // Through the web host, as the page would: the view works, the input goes nowhere.
  const throughWebHost = async (when: string) => {
    for (const id of ['personal', 'business']) {
      const before = await counts();
      const r = await rfbProbe('bulkhead-ui', 'web', id);
      assert.equal(r.connected, true, `${when}, ${id}: ${JSON.stringify(r)}`);
      assert.equal(r.error, undefined, `${when}, ${id}: ${JSON.stringify(r)}`);
      assert.equal(r.updateAfterInput, true, `${when}, ${id}: the view still shows the VM`);
      assert.equal(r.closedAfterUnknown, true, `${when}, ${id}: an unknown message ends the relay`);
      await new Promise((res) => setTimeout(res, 1500));
      assert.deepEqual(await counts(), before, `${when}: RFB input to ${id} reached a guest`);
    }
  };
  await throughWebHost('personal focused');
  await m.serial.check('busctl call org.bulkhead.Input1 /org/bulkhead/Input1 org.bulkhead.Input1 Lock');
  try {
    await waitFor('the seat locked', async () =>
      /true/.test(
        await m.busProperty('org.bulkhead.Input1', '/org/bulkhead/Input1', 'org.bulkhead.Input1', 'Locked'),
      ),
    );
    await throughWebHost('locked');
  } finally {
    assert.match(await busCall('unlock', OWNER_PASSWORD), /^ok/);
  }
});
