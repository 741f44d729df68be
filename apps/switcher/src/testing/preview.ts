/**
 * UI preview on fake daemons (no QEMU): a private bus, FakeVmManager/FakeInput/FakeUsb with a few
 * machines and devices, and the web host. Prints the URL and, with --screenshots DIR, saves
 * screenshots of the main screens at 1280x800 and 1920x1080 with headless Chromium.
 *
 *   node apps/switcher/dist/testing/preview.js [--screenshots artifacts/switcher]
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startPrivateBus } from '@bulkhead/dbus';
import { BulkheadError, usbDevicePath, vmPath } from '@bulkhead/contract';
import { startWebHost } from '../main/web-host';
import { fakeUsbProps, fakeVmProps, startFakeDaemons } from './fake-daemons';
import { launchChromium } from './chromium';

async function main() {
  const i = process.argv.indexOf('--screenshots');
  const shotDir = i >= 0 ? process.argv[i + 1] : null;
  const bus = await startPrivateBus({ mode: 'open' });
  const fakes = await startFakeDaemons(bus.address, {
    vms: [
      fakeVmProps('personal', { Name: 'Personal', Slot: 1, Color: '#2a6fdb', State: 'running' }),
      fakeVmProps('business', {
        Name: 'Business',
        Slot: 2,
        Kind: 'business',
        Color: '#d9822b',
        State: 'running',
        HasGpu: false,
      }),
      fakeVmProps('banking', {
        Name: 'Banking',
        Slot: 3,
        Kind: 'personal',
        Color: '#2ea043',
        State: 'stopped',
      }),
      fakeVmProps('gaming', {
        Name: 'Gaming',
        Slot: 4,
        Color: '#a371f7',
        State: 'starting',
        HasGpu: true,
        Autostart: true,
      }),
      fakeVmProps('netvm', {
        Name: 'Network',
        Slot: 5,
        Kind: 'service',
        Color: '#6e7781',
        State: 'crashed',
        StateReason: 'qemu exited with signal SIGKILL',
        StateReasonCode: 'crashed',
        LastError: 'BackendFailed: qemu exited with signal SIGKILL',
      }),
    ],
    configErrors: [
      ['/etc/bulkhead/vms/broken.json', 'memory_mib', 'must be an integer between 64 and 65536, got "lots"'],
    ],
    usbDevices: [
      [
        'stick',
        fakeUsbProps('stick', {
          Name: 'SanDisk Ultra',
          Vendor: 'SanDisk',
          VendorId: 0x0781,
          ProductId: 0x5581,
          Port: '1-2',
          Serial: '4C530001',
          AssignedVm: vmPath('business'),
          State: 'attached',
          Sticky: true,
        }),
      ],
      [
        'cam',
        fakeUsbProps('cam', {
          Name: 'Logitech C920',
          Vendor: 'Logitech',
          VendorId: 0x046d,
          ProductId: 0x082d,
          Classes: ['video', 'audio'],
          Port: '1-3',
          FollowFocus: true,
        }),
      ],
      [
        'kbd',
        fakeUsbProps('kbd', { Name: 'Keyboard', Classes: ['hid', 'keyboard'], Port: '1-1', State: 'input' }),
      ],
    ],
  });
  const host = await startWebHost({
    busAddress: bus.address,
    staticDir: undefined,
    vmRunDir: '/nonexistent',
    log: () => undefined,
  });
  console.log(`SWITCHER-URL ${host.url}`);
  if (!shotDir) return;
  mkdirSync(shotDir, { recursive: true });
  const browser = await launchChromium();
  try {
    for (const [w, h] of [
      [1280, 800],
      [1920, 1080],
    ] as const) {
      const page = await browser.newPage({ viewport: { width: w, height: h } });
      await page.goto(host.url);
      await page.getByRole('button', { name: /^Personal,/ }).waitFor();
      await page.waitForTimeout(2500);
      await page.screenshot({ path: join(shotDir, `preview-tiles-${w}.png`) });
      if (w === 1280) {
        await page.getByRole('button', { name: /USB devices/ }).click();
        await page.screenshot({ path: join(shotDir, `preview-usb-${w}.png`) });
        await page.getByRole('button', { name: 'Diagnostics' }).click();
        await page.getByRole('button', { name: 'Machines' }).click();
        await page.getByRole('button', { name: /^Business,/ }).click();
        await page.waitForTimeout(1200);
        await page.screenshot({ path: join(shotDir, `preview-vmview-${w}.png`) });
        await page.getByRole('button', { name: /Back to machines/ }).click();
        await page.getByRole('button', { name: 'Diagnostics' }).click();
        await page.waitForTimeout(300);
        await page.screenshot({ path: join(shotDir, `preview-diagnostics-${w}.png`) });
        fakes.usb.ask(7, usbDevicePath('cam'), vmPath('personal'));
        await page.getByRole('alertdialog').waitFor();
        await page.screenshot({ path: join(shotDir, `preview-prompt-${w}.png`) });
        await page.getByRole('button', { name: 'Deny' }).click();
        fakes.vmManager.failNextSwitch = new BulkheadError(
          'BackendFailed',
          'qemu: could not open disk image /var/lib/bulkhead/banking.qcow2: No such file or directory',
        );
        await page.getByRole('button', { name: 'Machines' }).click();
        await page.getByRole('button', { name: /^Banking,/ }).click();
        await page.getByRole('alert').first().waitFor();
        await page.waitForTimeout(300);
        await page.screenshot({ path: join(shotDir, `preview-switch-failed-${w}.png`) });
        fakes.stop('vmManager');
        await page.waitForTimeout(500);
        await page.screenshot({ path: join(shotDir, `preview-outage-${w}.png`) });
        await fakes.start('vmManager');
        fakes.input.Lock();
        await page.waitForTimeout(500);
        await page.screenshot({ path: join(shotDir, `preview-lock-${w}.png`) });
      }
      await page.close();
    }
  } finally {
    await browser.close();
    await host.close();
    fakes.close();
    await bus.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
