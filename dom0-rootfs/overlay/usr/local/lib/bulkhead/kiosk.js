// The kiosk (bulkhead-kiosk.service → /usr/local/bin/bulkhead-kiosk), as the unprivileged
// bulkhead-ui: starts cage showing Chromium full screen on the switcher's page and keeps that page
// alive, talking to Chromium over DevTools on a pipe (--remote-debugging-pipe: fds 3 and 4 of the
// Chromium process, reachable by this process only). No TCP port is opened for it.
//
// What it watches (both seen under QEMU TCG):
// - On a cold boot Chromium's first navigation can hang for good ("Network service crashed or was
//   terminated, restarting service": the page stays blank, its renderer never answers). Chromium
//   recovers the network service, so a fresh target loads fine: a kiosk page whose title is still
//   not the switcher's after GRACE_MS (including one whose first navigation never committed, URL
//   still empty) is replaced by a fresh one with the switcher's URL.
// - A page whose renderer died ("Aw, Snap!") stays dead until someone presses Reload, and nobody
//   can: the kiosk has no other UI. Each switcher page gets a session with only the Inspector
//   domain enabled (it reports the crash; it asks nothing of the page and makes it paint nothing);
//   on Inspector.targetCrashed the page is reloaded.
// When cage (and with it Chromium) exits, this exits with its status; systemd restarts the unit.
// cage draws on dom0's own display only (kiosk-gpu.js): in the second-GPU rig the other card is
// the GPU that moves between VMs.
//
// The test flavour's layer may set BULKHEAD_KIOSK_DEVTOOLS_PORT (a drop-in on bulkhead-kiosk): then
// Chromium also listens for DevTools on 127.0.0.1 at that port, for the e2e. Production never does.
'use strict';
const { spawn } = require('node:child_process');
const { mkdtempSync, readFileSync } = require('node:fs');
const { kioskDrmDevice } = require('./kiosk-gpu.js');

const SWITCHER_PORT = 8080;
// The web host's address (bulkhead-switcher.service's --listen): a loopback address other than
// 127.0.0.1, the one address of the Control Domain a VM on QEMU's user-mode network reaches.
const SWITCHER_HOST = '127.0.0.2';
const TITLE = 'Bulkhead';
const GRACE_MS = Number(process.env.KIOSK_GRACE_MS || 20000);
// The web host's per-boot token (written by bulkhead-switcher, readable by group bulkhead-ui).
const TOKEN_FILE = process.env.KIOSK_TOKEN_FILE || '/run/bulkhead-ui/token';
const DEVTOOLS_PORT = process.env.BULKHEAD_KIOSK_DEVTOOLS_PORT || '';

const log = (/** @type {string} */ m) => console.error(`kiosk: ${m}`);
const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

async function readToken() {
  for (let i = 0; i < 120; i++) {
    try {
      const t = readFileSync(TOKEN_FILE, 'utf8').trim();
      if (t) return t;
    } catch {
      // The web host has not written it yet.
    }
    await sleep(500);
  }
  throw new Error(`no token in ${TOKEN_FILE} after 60 s (is bulkhead-switcher running?)`);
}

const isSwitcherUrl = (/** @type {string} */ url) =>
  url.startsWith(`http://${SWITCHER_HOST}:${SWITCHER_PORT}/`);

// Where Chromium keeps its profile and its shared memory: memory (tmpfs), never the root disk.
// Debian's chromium wrapper adds --disable-dev-shm-usage whenever /dev/shm is under 3.8 GB (it is
// half the RAM), and with it Chromium creates every shared memory region (raster tiles, compositor
// frames, the Wayland buffers it hands cage) as a file in $TMPDIR, else /tmp — on the image's ext4
// root. Every frame then dirtied file pages the kernel wrote back to disk (issue 17: in a booted
// test image the kiosk's frames came seconds apart and a disk flush worker had seconds of CPU).
// TMPDIR points it at /dev/shm, which is what Chromium uses when the flag is absent.
const MEMORY_DIR = process.env.KIOSK_MEMORY_DIR || '/dev/shm';

async function main() {
  const url = `http://${SWITCHER_HOST}:${SWITCHER_PORT}/?token=${await readToken()}`;
  const profile = mkdtempSync(`${MEMORY_DIR}/kiosk-profile.`);
  // A kiosk must never quit: Chromium gives up ("GPU process isn't usable. Goodbye.") after its
  // GPU process crashed 3 times, seen under QEMU TCG (SIGSEGV) while the VM view was drawing;
  // without the limit the GPU process is simply restarted. The page is the only thing on screen,
  // always: never a background or occluded page (throttled timers and frames, a renderer at
  // background priority), whatever Chromium concludes from the window state under cage. Reduced
  // motion: in software every frame of an endless animation is a repaint competing with a switch.
  // Chromium's own sandbox stays on (nothing here turns it off): renderers run in their own
  // namespaces under seccomp.
  const flags = [
    '--enable-logging=stderr',
    '--log-level=1',
    '--kiosk',
    '--ozone-platform=wayland',
    '--disable-gpu',
    '--disable-gpu-process-crash-limit',
    '--no-first-run',
    '--disable-renderer-backgrounding',
    '--disable-background-timer-throttling',
    '--disable-backgrounding-occluded-windows',
    '--force-prefers-reduced-motion',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // Chromium keeps hidden browser-UI pages ("top-chrome WebUI") in a renderer of their own,
    // though a kiosk has no tab strip and no omnibox to open them from: the preloaded Tab Search
    // (PreloadTopChromeWebUI), and in Chromium 156 the omnibox popup as WebUI, two pages
    // (WebUIOmniboxPopup: chrome://omnibox-popup.top-chrome/, WebUIOmniboxAimPopup: its
    // omnibox_popup_aim.html). With only PreloadTopChromeWebUI off, that renderer was still there
    // in the image and had used 34 s of CPU by the end of the hotkey scenario, next to the
    // switcher page's 41 s (ps; issue 17). With all three off Chromium starts no top-chrome
    // renderer (DevTools' target list and ps, Chromium 156 on the build machine).
    '--disable-features=Translate,PreloadTopChromeWebUI,WebUIOmniboxPopup,WebUIOmniboxAimPopup',
    `--user-data-dir=${profile}`,
    '--remote-debugging-pipe',
  ];
  if (DEVTOOLS_PORT) {
    if (!/^\d{1,5}$/.test(DEVTOOLS_PORT)) throw new Error(`BULKHEAD_KIOSK_DEVTOOLS_PORT '${DEVTOOLS_PORT}'`);
    log(`test layer: DevTools also on 127.0.0.1:${DEVTOOLS_PORT}`);
    flags.push(`--remote-debugging-port=${DEVTOOLS_PORT}`, '--remote-allow-origins=*');
  }
  // cage runs Chromium as its own client, as before the pipe existed: with Chromium a grandchild
  // of cage (this script as cage's client), pointer input reached the page but the keyboard did
  // not (seen in the image: nothing typed on the lock screen arrived). The DevTools pipe's fds 3
  // and 4 pass through cage to Chromium (cage closes no inherited fds).
  /** @type {{ device?: string, why: string }} */
  let drm;
  try {
    drm = kioskDrmDevice({ gpu: process.env.BULKHEAD_KIOSK_GPU });
  } catch (e) {
    // A wrong address draws nothing: the boot display's choice instead, said in the journal.
    log(`${e.message}: the boot display's choice instead`);
    drm = kioskDrmDevice({});
  }
  log(`DRM device: ${drm.device ?? '(wlroots chooses)'} (${drm.why})`);
  // Chromium starts on a blank page; the switcher's URL goes over the DevTools pipe (below). The
  // token must not be on a command line: /proc/<pid>/cmdline of cage and Chromium is readable by
  // every local uid, and with the token any of them could use the web host as the switcher.
  const chromium = spawn('cage', ['-d', '--', 'chromium', ...flags, 'about:blank'], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe', 'pipe'],
    env: { ...process.env, TMPDIR: MEMORY_DIR, ...(drm.device ? { WLR_DRM_DEVICES: drm.device } : {}) },
  });
  chromium.on('exit', (code, signal) => {
    log(`cage/chromium exited (${signal ?? `status ${code}`})`);
    process.exit(code ?? 1);
  });
  const toChromium = /** @type {import('node:stream').Writable} */ (chromium.stdio[3]);
  const fromChromium = /** @type {import('node:stream').Readable} */ (chromium.stdio[4]);
  toChromium.on('error', (e) => log(`DevTools pipe: ${e.message}`));

  // --- DevTools over the pipe: JSON messages, each ended by a NUL byte. ---------------------------
  let nextId = 1;
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void}>} */
  const pending = new Map();
  /**
   * @param {string} method
   * @param {object} [params]
   * @param {string} [sessionId]
   * @returns {Promise<any>}
   */
  function send(method, params = {}, sessionId) {
    const id = nextId++;
    toChromium.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  }
  /** @type {Map<string, string>} targetId -> DevTools session watching it for crashes */
  const sessions = new Map();
  /** @type {Map<string, number>} targetId -> when first seen not showing the switcher */
  const firstSeen = new Map();

  async function watchCrashes(/** @type {string} */ targetId) {
    if (sessions.has(targetId)) return;
    sessions.set(targetId, '');
    try {
      const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
      sessions.set(targetId, sessionId);
      await send('Inspector.enable', {}, sessionId);
    } catch (e) {
      sessions.delete(targetId);
      log(`cannot watch page ${targetId}: ${e.message}`);
    }
  }

  /** @param {any} msg */
  function onMessage(msg) {
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(`${msg.error.message} (${msg.error.code})`));
      else p?.resolve(msg.result);
      return;
    }
    if (msg.method === 'Target.detachedFromTarget') {
      for (const [t, sid] of sessions) if (sid === msg.params.sessionId) sessions.delete(t);
    } else if (msg.method === 'Inspector.targetCrashed' && msg.sessionId) {
      log('the switcher page crashed: reloading it');
      send('Page.reload', {}, msg.sessionId).catch((e) => log(`reload: ${e.message}`));
    }
  }

  let buf = '';
  fromChromium.setEncoding('utf8');
  fromChromium.on('data', (/** @type {string} */ d) => {
    buf += d;
    let end;
    while ((end = buf.indexOf('\0')) >= 0) {
      const text = buf.slice(0, end);
      buf = buf.slice(end + 1);
      try {
        onMessage(JSON.parse(text));
      } catch (e) {
        log(`DevTools message: ${e.message}`);
      }
    }
  });

  // Every few seconds: the kiosk's pages as Chromium has them now (Target.getTargets: live titles;
  // Target.targetInfoChanged does not report title changes, and a watchdog trusting it replaced a
  // healthy page every GRACE_MS, seen in the image). A switcher page gets a crash watcher; a kiosk
  // page (the switcher's, or one that has not got anywhere yet) that still does not show the
  // switcher after GRACE_MS is replaced by a fresh one.
  const tick = async () => {
    const { targetInfos } = await send('Target.getTargets');
    const now = Date.now();
    const alive = new Set();
    for (const t of targetInfos) {
      if (t.type !== 'page' || !(isSwitcherUrl(t.url) || t.url === '' || t.url === 'about:blank')) continue;
      const id = t.targetId;
      alive.add(id);
      if (isSwitcherUrl(t.url)) void watchCrashes(id);
      if (t.title === TITLE) {
        firstSeen.delete(id);
        continue;
      }
      if (!firstSeen.has(id)) firstSeen.set(id, now);
      if (now - (firstSeen.get(id) ?? now) < GRACE_MS) continue;
      log(`page ${id} still '${t.title}' after ${GRACE_MS} ms: opening a fresh one`);
      firstSeen.delete(id);
      await send('Target.createTarget', { url: isSwitcherUrl(t.url) ? t.url : url });
      await send('Target.closeTarget', { targetId: id });
    }
    for (const id of [...firstSeen.keys(), ...sessions.keys()])
      if (!alive.has(id)) {
        firstSeen.delete(id);
        sessions.delete(id);
      }
  };
  // The switcher's page, opened over the pipe once Chromium has its first (blank) page, replaces
  // that page, as the watchdog below replaces a stuck one (a blank page this misses is the
  // watchdog's after GRACE_MS).
  const isBlank = (/** @type {any} */ t) => t.type === 'page' && (t.url === 'about:blank' || t.url === '');
  for (let i = 0; i < 100; i++) {
    const { targetInfos } = await send('Target.getTargets');
    if (targetInfos.some(isBlank)) break;
    await sleep(100);
  }
  const opened = await send('Target.createTarget', { url });
  for (const t of (await send('Target.getTargets')).targetInfos)
    if (isBlank(t) && t.targetId !== opened.targetId)
      await send('Target.closeTarget', { targetId: t.targetId });
  let ticking = false; // one look at a time: under TCG one can outlast the interval
  setInterval(() => {
    if (ticking) return;
    ticking = true;
    tick()
      .catch((e) => log(`watch: ${e.message}`))
      .finally(() => (ticking = false));
  }, 5000);
}

main().catch((e) => {
  log(e.message);
  process.exit(1);
});
