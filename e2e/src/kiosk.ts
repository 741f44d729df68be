/**
 * The kiosk's own page, reached the way every image e2e that drives the UI reaches it: over the
 * test layer's DevTools forward (ImageMachine's `cdpPort`), with Playwright attached over CDP. No
 * fresh page is ever opened: a kiosk page that does not show the switcher is a failure a person
 * would see, not something to work around.
 */
import { chromium, type Browser, type Page } from 'playwright-core';
import type { ImageMachine } from './image-machine';
import { waitFor } from './wait';

/**
 * Waits, over DevTools' HTTP listing only (nothing attached), until the kiosk shows the switcher
 * (a page on :8080 titled Bulkhead), for at most 300 s, asking every `everyMs`.
 */
export async function kioskLoaded(m: ImageMachine, everyMs?: number): Promise<void> {
  // The image's kiosk replaces a page whose first navigation hung (cold boot, network service
  // restart): dom0-rootfs/overlay/usr/local/lib/bulkhead/kiosk.js.
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
    everyMs,
  );
}

export interface AttachKioskOptions {
  /** First wait for kioskLoaded (asking every this many ms; true: its default). */
  loaded?: boolean | number;
  /** A connection made before: used again while it is connected, closed and replaced if not. */
  browser?: Browser;
  /** Bound on reaching Chromium's DevTools (default 240 s). */
  connectBoundMs?: number;
  /** Bound on finding the switcher page among the kiosk's pages (default 120 s). */
  pageBoundMs?: number;
  /** The page's default timeout for every Playwright action after this (default 90 s). */
  actionTimeoutMs?: number;
  /** Bound on the page showing the tiles' list (default 60 s). */
  shownBoundMs?: number;
  /** The lock screen counts as shown too (a page attached to while the seat is locked). */
  orLocked?: boolean;
}

/**
 * Attach Playwright over CDP to the kiosk's own switcher page and wait until it shows the tiles
 * (or, with `orLocked`, the lock screen).
 */
export async function attachKiosk(
  m: ImageMachine,
  opts: AttachKioskOptions = {},
): Promise<{ browser: Browser; page: Page }> {
  if (opts.loaded !== undefined && opts.loaded !== false)
    await kioskLoaded(m, opts.loaded === true ? undefined : opts.loaded);
  let browser = opts.browser;
  if (!browser?.isConnected()) {
    await browser?.close().catch(() => undefined);
    browser = await waitFor(
      'Chromium DevTools',
      () => chromium.connectOverCDP(`http://127.0.0.1:${m.cdpPort}`, { timeout: 60_000 }),
      opts.connectBoundMs ?? 240_000,
    );
  }
  const b = browser;
  const page = await waitFor(
    'the switcher page',
    async () =>
      b
        .contexts()[0]
        .pages()
        .find((p) => p.url().includes(':8080') && !p.isClosed()),
    opts.pageBoundMs ?? 120_000,
  );
  // Everything runs under TCG (twice nested for the VMs): be patient, not flaky.
  page.setDefaultTimeout(opts.actionTimeoutMs ?? 90_000);
  const tiles = page.getByRole('list', { name: 'Machines' });
  await (opts.orLocked ? tiles.or(page.getByRole('dialog', { name: 'Locked' })).first() : tiles).waitFor({
    timeout: opts.shownBoundMs ?? 60_000,
  });
  return { browser: b, page };
}
