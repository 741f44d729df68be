// Kiosk watchdog. On a cold boot Chromium's first navigation can hang for good ("Network service
// crashed or was terminated, restarting service": the page stays blank, its renderer never
// answers). Chromium itself recovers the network service, so a fresh target loads fine. Every
// few seconds this asks Chromium's DevTools endpoint for its pages; a switcher page whose title
// is still not the switcher's after GRACE_MS is replaced by a fresh one with the same URL.
'use strict';
const http = require('node:http');

const PORT = Number(process.env.KIOSK_DEVTOOLS_PORT || 9222);
const GRACE_MS = Number(process.env.KIOSK_GRACE_MS || 20000);
const TITLE = 'Bulkhead';
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

async function tick() {
  let pages;
  try {
    pages = JSON.parse(await request('GET', '/json/list')).filter(
      (t) => t.type === 'page' && /:8080\//.test(t.url),
    );
  } catch {
    return; // Chromium not up yet (or restarting): nothing to watch.
  }
  const now = Date.now();
  for (const p of pages) {
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
      await request('PUT', `/json/new?${p.url}`);
      await request('GET', `/json/close/${p.id}`);
    } catch (e) {
      console.error(`kiosk-watchdog: ${e.message}`);
    }
  }
}

setInterval(() => void tick(), 5000);
