/**
 * A person's own machines through the switcher, end to end: the real vm-daemon on a private bus,
 * the web host's real entry point and Debian's Chromium (playwright-core). First boot with no
 * machines shows the welcome; "New machine" makes "Lab" (slot 3, a 64 MiB disk, an ISO from a
 * media root); its tile appears; Settings changes its colour and memory (vm-daemon's properties
 * and file follow); a bad value is said in words next to the form; Delete with its disk removes
 * tile, file and disk. The administrator's machine opens read-only. Screenshots go to
 * artifacts/switcher/ (gitignored).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { vmPath } from '@bulkhead/contract';
import { BusClient, connectBus, startPrivateBus, type MessageBus, type PrivateBus } from '@bulkhead/dbus';
import type { Browser, Page } from 'playwright-core';
import { chromiumAvailable, launchChromium } from '../testing/chromium';

const REPO = process.env.BULKHEAD_REPO ?? resolve(__dirname, '..', '..', '..', '..');
const VM_DAEMON = join(REPO, 'apps/vm-daemon/dist/main.js');
const WEB_HOST = join(REPO, 'apps/switcher/dist/main/web-host.js');
const SHOTS = join(REPO, 'artifacts/switcher');

function missing(): string | null {
  if (!existsSync(VM_DAEMON)) return `vm-daemon is not built (${VM_DAEMON}); run npx tsc -b apps/vm-daemon`;
  if (!existsSync(WEB_HOST) || !existsSync(join(REPO, 'apps/switcher/dist/web/app.js')))
    return 'the switcher is not built (npx tsc -b apps/switcher && npm run build -w apps/switcher)';
  if (!chromiumAvailable()) return 'Chromium is missing (apt-get install -y chromium)';
  return null;
}
const skip = missing();

let bus: PrivateBus;
let conn: MessageBus;
let client: BusClient;
let dir: string;
let browser: Browser;
let page: Page;
const children: ChildProcess[] = [];
const logs: string[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor<T>(
  what: string,
  f: () => Promise<T | null | undefined | false>,
  ms = 30_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => null);
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

function spawnLogged(name: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, args, {
    env: { ...process.env, BULKHEAD_BUS: bus.address, BULKHEAD_ACCEL: 'tcg', BULKHEAD_STRICT_CONTRACT: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const s of [child.stdout!, child.stderr!])
    createInterface({ input: s }).on('line', (l) => logs.push(`[${name}] ${l}`));
  children.push(child);
  return child;
}

const prop = (id: string, name: 'Color' | 'MemoryMiB' | 'Slot' | 'Owner') =>
  client.get('org.bulkhead.VmManager1', vmPath(id), 'org.bulkhead.Vm1', name);
const shot = (name: string) => page.screenshot({ path: join(SHOTS, `machines-${name}.png`) });

before(async () => {
  if (skip) return;
  mkdirSync(SHOTS, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), 'switcher-machines-'));
  for (const d of ['vms', 'run', 'state', 'media/stick']) mkdirSync(join(dir, d), { recursive: true });
  // The installer on a "USB stick" (its content does not matter here: nothing boots it).
  writeFileSync(join(dir, 'media/stick/installer.iso'), Buffer.alloc(64 * 1024));
  bus = await startPrivateBus({ mode: 'open' });
  conn = await connectBus(bus.address);
  client = new BusClient(conn, 10_000);
  spawnLogged('vm-daemon', [
    VM_DAEMON,
    '--config-dir',
    join(dir, 'vms'),
    '--run-dir',
    join(dir, 'run'),
    '--state-dir',
    join(dir, 'state'),
    '--media-root',
    join(dir, 'media'),
    '--stop-vms-on-exit',
  ]);
  await waitFor('vm-daemon ready', async () => logs.some((l) => l.includes(' ready on ')));
  spawnLogged('web-host', [WEB_HOST, '--port', '0', '--bus', bus.address, '--vm-run-dir', join(dir, 'run')]);
  const url = await waitFor(
    'SWITCHER-URL',
    async () => logs.find((l) => l.includes('SWITCHER-URL '))?.split('SWITCHER-URL ')[1],
  );
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(Number(process.env.PW_TIMEOUT ?? 60_000));
  await page.goto(url);
});

after(async () => {
  if (skip) return;
  await browser?.close().catch(() => undefined);
  for (const c of children.reverse())
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
    }
  conn?.disconnect();
  await bus?.stop();
  if (process.env.SWITCHER_E2E_LOGS) console.log(logs.join('\n'));
  rmSync(dir, { recursive: true, force: true });
});

test(
  'make, change and delete a machine through the switcher',
  { skip: skip ?? false, timeout: 300_000 },
  async (t) => {
    const file = () => join(dir, 'state/vms/lab.json');
    const disk = join(dir, 'state/images/lab.qcow2');

    await t.test('first boot with no machines: the welcome leads to New machine', async () => {
      await page.getByRole('region', { name: 'Welcome' }).waitFor();
      await shot('welcome');
      await page.getByRole('button', { name: 'New machine' }).click();
      await page.getByRole('dialog', { name: 'New machine' }).waitFor();
    });

    await t.test('a bad value is said in words next to the form, and nothing is made', async () => {
      const dialog = page.getByRole('dialog', { name: 'New machine' });
      await dialog.getByLabel('Name').fill('Lab');
      await dialog.getByLabel('Install from (an ISO on a USB stick, optional)').fill('/etc/shadow');
      await dialog.getByRole('button', { name: 'Create machine' }).click();
      const alert = dialog.getByRole('alert');
      await alert.waitFor();
      assert.match(await alert.innerText(), /Install from: resolves to \/etc\/shadow, outside/);
      assert.ok(!existsSync(file()));
    });

    await t.test('New machine "Lab" with a 64 MiB disk and the ISO: its tile appears in slot 3', async () => {
      const dialog = page.getByRole('dialog', { name: 'New machine' });
      await dialog
        .getByLabel('Install from (an ISO on a USB stick, optional)')
        .fill(join(dir, 'media/stick/installer.iso'));
      await dialog.getByLabel('Slot').selectOption('3');
      await dialog.getByLabel('Disk size (MiB)').fill('64');
      await dialog.getByLabel('Memory (MiB)').fill('256');
      await shot('new-machine');
      await dialog.getByRole('button', { name: 'Create machine' }).click();
      await page.getByRole('button', { name: /^Lab, slot 3 \(Ctrl\+3\), Stopped/ }).waitFor();
      assert.equal(await prop('lab', 'Owner'), 'person');
      assert.ok(existsSync(file()) && existsSync(disk));
      await shot('lab-tile');
    });

    await t.test("Settings change Lab's colour and memory", async () => {
      await page.getByRole('button', { name: 'Settings of Lab' }).click();
      const dialog = page.getByRole('dialog', { name: 'Settings of Lab' });
      await dialog.getByLabel('Colour').fill('#aa3300');
      await dialog.getByLabel('Memory (MiB)').fill('384');
      await dialog.getByRole('button', { name: 'Save' }).click();
      await waitFor('Lab recoloured', async () => (await prop('lab', 'Color')) === '#aa3300');
      assert.equal(await prop('lab', 'MemoryMiB'), 384);
      const doc = JSON.parse(readFileSync(file(), 'utf8'));
      assert.deepEqual([doc.color, doc.memoryMiB], ['#aa3300', 384]);
      await waitFor('the dialog closed', async () => (await dialog.count()) === 0);
    });

    await t.test("the administrator's machine opens read-only and says why", async () => {
      writeFileSync(
        join(dir, 'vms/business.json'),
        JSON.stringify({
          id: 'business',
          name: 'Business',
          slot: 2,
          color: '#e07b00',
          memoryMiB: 32,
          kind: 'business',
        }),
      );
      await page.getByRole('button', { name: 'Settings of Business' }).click();
      const dialog = page.getByRole('dialog', { name: 'Settings of Business' });
      await dialog.getByText(/managed by your administrator/).waitFor();
      assert.equal(await dialog.getByRole('button', { name: 'Save' }).count(), 0);
      assert.equal(await dialog.getByRole('button', { name: /Delete/ }).count(), 0);
      await shot('admin-settings');
      await dialog.getByRole('button', { name: 'Close' }).click();
    });

    await t.test('Delete with its disk, after a confirmation: tile, file and disk are gone', async () => {
      await page.getByRole('button', { name: 'Settings of Lab' }).click();
      const dialog = page.getByRole('dialog', { name: 'Settings of Lab' });
      await dialog.getByRole('button', { name: 'Delete…' }).click();
      await dialog.getByLabel('Also delete its disk and everything on it').check();
      await shot('delete-confirm');
      await dialog.getByRole('button', { name: 'Delete Lab' }).click();
      await waitFor(
        'the Lab tile is gone',
        async () => (await page.getByRole('button', { name: /^Lab,/ }).count()) === 0,
      );
      assert.ok(!existsSync(file()), 'the file is gone');
      assert.ok(!existsSync(disk), 'the disk is gone');
      assert.ok(existsSync(join(dir, 'media/stick/installer.iso')), "the stick's ISO stays");
    });
  },
);
