// Kiosk watchdog. On a cold boot Chromium's first navigation can hang for good ("Network service
// crashed or was terminated, restarting service": the page stays blank, its renderer never
// answers). Chromium itself recovers the network service, so a fresh target loads fine. Every
// few seconds this asks Chromium's DevTools endpoint for its pages; a switcher page whose title
// is still not the switcher's after GRACE_MS is replaced by a fresh one with the switcher's URL.
// That includes a page whose first navigation never even committed (URL still empty: seen on a
// cold boot right after "Network service crashed"), which a match on the URL alone missed.
//
// A kiosk page whose renderer died ("Aw, Snap!", seen under QEMU TCG after GPU-process crashes)
// stays dead until someone presses Reload — and nobody can: the kiosk has no other UI. The watchdog
// keeps one DevTools session per switcher page with only the Inspector domain enabled (it reports
// the crash; it asks nothing of the page and makes it paint nothing) and reloads the page when
// Inspector.targetCrashed arrives.
'use strict';
const http = require('node:http');
const { readFileSync } = require('node:fs');

// The image's copy of the `ws` package (a dependency of the switcher's web host).
let WebSocket = null;
try {
  WebSocket = require(process.env.KIOSK_WS_MODULE || '/opt/bulkhead/node_modules/ws');
} catch (e) {
  console.error(`kiosk-watchdog: no WebSocket client (${e.message}): crashed pages are not reloaded`);
}
const sessions = new Map(); // page id -> DevTools WebSocket

function watchCrashes(page) {
  if (!WebSocket || sessions.has(page.id) || !page.webSocketDebuggerUrl) return;
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  sessions.set(page.id, ws);
  let nextId = 1;
  const send = (method) => ws.send(JSON.stringify({ id: nextId++, method }));
  ws.on('open', () => send('Inspector.enable'));
  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(String(data));
    } catch {
      return;
    }
    if (msg.method === 'Inspector.targetCrashed') {
      console.error(`kiosk-watchdog: the renderer of page ${page.id} crashed: reloading it`);
      send('Page.reload');
    }
  });
  ws.on('close', () => sessions.delete(page.id));
  ws.on('error', (e) => console.error(`kiosk-watchdog: DevTools session of ${page.id}: ${e.message}`));
}

const PORT = Number(process.env.KIOSK_DEVTOOLS_PORT || 9222);
const GRACE_MS = Number(process.env.KIOSK_GRACE_MS || 20000);
const TITLE = 'Bulkhead';
const SWITCHER_PORT = 8080;
// The web host's per-boot token (written by bulkhead-switcher, readable by this user).
const TOKEN_FILE = process.env.KIOSK_TOKEN_FILE || '/run/bulkhead-ui/token';
const firstSeen = new Map();

function request(method, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: PORT, method, path, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function isSwitcherUrl(url) {
  return url.startsWith(`http://127.0.0.1:${SWITCHER_PORT}/`);
}

function switcherUrl() {
  return `http://127.0.0.1:${SWITCHER_PORT}/?token=${readFileSync(TOKEN_FILE, 'utf8').trim()}`;
}

async function tick() {
  let pages;
  try {
    // The kiosk's pages: the switcher, or a page that has not got anywhere yet.
    pages = JSON.parse(await request('GET', '/json/list')).filter(
      (t) => t.type === 'page' && (isSwitcherUrl(t.url) || t.url === '' || t.url === 'about:blank'),
    );
  } catch {
    return; // Chromium not up yet (or restarting): nothing to watch.
  }
  const now = Date.now();
  for (const p of pages) {
    if (isSwitcherUrl(p.url)) watchCrashes(p);
    if (p.title === TITLE) {
      firstSeen.delete(p.id);
      continue;
    }
    if (!firstSeen.has(p.id)) firstSeen.set(p.id, now);
    if (now - firstSeen.get(p.id) < GRACE_MS) continue;
    console.error(
      `kiosk-watchdog: page ${p.id} still '${p.title}' after ${GRACE_MS} ms: opening a fresh one`,
    );
    firstSeen.delete(p.id);
    try {
      const url = isSwitcherUrl(p.url) ? p.url : switcherUrl();
      await request('PUT', `/json/new?${url}`);
      await request('GET', `/json/close/${p.id}`);
    } catch (e) {
      console.error(`kiosk-watchdog: ${e.message}`);
    }
  }
}

setInterval(() => void tick(), 5000);
