/**
 * The kiosk's own page, reached the way every image e2e that drives the UI reaches it: over the
 * test layer's DevTools forward (ImageMachine's `cdpPort`), with Playwright attached over CDP. No
 * fresh page is ever opened: a kiosk page that does not show the switcher is a failure a person
 * would see, not something to work around.
 */
import assert from 'node:assert/strict';
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

/** The unlock password of the test flavour (dom0-rootfs/test-layer/setup-in-chroot.sh). */
export const OWNER_PASSWORD = 'bulkhead-test';

/**
 * Types `password` at the outer keyboard on the kiosk's lock screen until input-daemon takes it,
 * at most `attempts` times: an attempt refused because the back-off still runs ("Too many wrong
 * passwords. Try again in N s") is made again once the screen's countdown is over; any other
 * answer fails. Returns the words the screen showed on the way.
 */
export async function unlockOnLockScreen(
  m: ImageMachine,
  page: Page,
  password: string,
  attempts: number,
): Promise<string[]> {
  const said: string[] = [];
  const dialog = page.getByRole('dialog', { name: 'Locked' });
  const problem = dialog.locator('.lock-problem');
  for (let attempt = 0; attempt < attempts; attempt++) {
    await waitFor('the Unlock button accepting an attempt', async () =>
      dialog.getByRole('button', { name: 'Unlock' }).isEnabled(),
    );
    // The screen counts input-daemon's answers: the words of an earlier answer are no answer to this.
    const before = Number(await problem.getAttribute('data-answers'));
    await m.typeText(`${password}\n`);
    // Short reads, retried by waitFor: the dialog may go (unlocked) between count() and the read,
    // and a read of a gone element would wait the page's whole default timeout (seen once, loaded).
    const outcome = await waitFor(
      'the lock screen answering the attempt',
      async () =>
        (await dialog.count()) === 0
          ? 'unlocked'
          : Number(await problem.getAttribute('data-answers', { timeout: 2_000 })) > before &&
            (await problem.innerText({ timeout: 2_000 })).trim(),
      60_000,
    );
    if (outcome === 'unlocked') return said;
    said.push(outcome);
    assert.match(outcome, /^Too many wrong passwords\. Try again in \d+ s\.$/, 'only the back-off delays it');
  }
  throw new Error(`the right password did not unlock: the screen said ${JSON.stringify(said)}`);
}
