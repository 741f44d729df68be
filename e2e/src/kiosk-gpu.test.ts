/**
 * The kiosk's choice of DRM device (dom0-rootfs/overlay/usr/local/lib/bulkhead/kiosk-gpu.js), on
 * fake sysfs trees made here: cage must draw on dom0's own display only, never on the second GPU
 * that vm-daemon hands between VMs (the two-GPU rig, gpu-xen-two.e2e.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const { kioskDrmDevice } = createRequire(__filename)(
  join(__dirname, '..', '..', 'dom0-rootfs', 'overlay', 'usr', 'local', 'lib', 'bulkhead', 'kiosk-gpu.js'),
) as {
  kioskDrmDevice: (opts: { gpu?: string; sysRoot?: string; devRoot?: string }) => {
    device?: string;
    why: string;
  };
};

interface FakeGpu {
  pci: string;
  /** Its DRM card while a DRM driver has it (none: in pciback). */
  card?: string;
  /** boot_vga's content (none: not a VGA-class device, no file). */
  bootVga?: '0' | '1';
  driver?: string;
}

/** A sysfs tree as Linux has it: /sys/bus/pci/devices/<bdf>/{drm/cardN,boot_vga,driver}, /sys/class/drm/cardN/device. */
function fakeSys(gpus: FakeGpu[]): string {
  const sys = mkdtempSync(join(tmpdir(), 'kiosk-gpu-'));
  mkdirSync(join(sys, 'class', 'drm'), { recursive: true });
  mkdirSync(join(sys, 'bus', 'pci', 'drivers'), { recursive: true });
  for (const g of gpus) {
    const dev = join(sys, 'devices', 'pci0000:00', g.pci);
    mkdirSync(dev, { recursive: true });
    mkdirSync(join(sys, 'bus', 'pci', 'devices'), { recursive: true });
    symlinkSync(dev, join(sys, 'bus', 'pci', 'devices', g.pci));
    if (g.bootVga) writeFileSync(join(dev, 'boot_vga'), `${g.bootVga}\n`);
    if (g.driver) {
      mkdirSync(join(sys, 'bus', 'pci', 'drivers', g.driver), { recursive: true });
      symlinkSync(join(sys, 'bus', 'pci', 'drivers', g.driver), join(dev, 'driver'));
    }
    if (g.card) {
      mkdirSync(join(dev, 'drm', g.card), { recursive: true });
      mkdirSync(join(dev, 'drm', 'renderD128'), { recursive: true });
      symlinkSync(dev, join(dev, 'drm', g.card, 'device'));
      symlinkSync(join(dev, 'drm', g.card), join(sys, 'class', 'drm', g.card));
    }
  }
  return sys;
}

const dom0Vga: FakeGpu = { pci: '0000:00:05.0', card: 'card0', bootVga: '1', driver: 'virtio-pci' };
const secondGpu: FakeGpu = { pci: '0000:00:06.0', card: 'card1', driver: 'virtio-pci' };

test('two cards, nothing configured: cage is pinned to the boot VGA device, not to the second GPU', () => {
  const sys = fakeSys([dom0Vga, secondGpu]);
  const r = kioskDrmDevice({ sysRoot: sys, devRoot: '/dev' });
  assert.equal(r.device, '/dev/dri/card0');
  assert.match(r.why, /boot VGA device 0000:00:05\.0 of 2 cards/);
  // The boot VGA device enumerated second: still its card.
  const swapped = fakeSys([
    { ...dom0Vga, card: 'card1' },
    { ...secondGpu, card: 'card0', bootVga: '0' },
  ]);
  assert.equal(kioskDrmDevice({ sysRoot: swapped, devRoot: '/dev' }).device, '/dev/dri/card1');
});

test("one card (the one-GPU rig, or the second GPU already in pciback): nothing pinned, wlroots' own choice", () => {
  const sys = fakeSys([dom0Vga, { ...secondGpu, card: undefined, driver: 'pciback' }]);
  const r = kioskDrmDevice({ sysRoot: sys });
  assert.equal(r.device, undefined);
  assert.match(r.why, /1 DRM card/);
});

test('two cards and no boot VGA device: not guessed, left to wlroots', () => {
  const sys = fakeSys([
    { ...dom0Vga, bootVga: undefined },
    { ...secondGpu, bootVga: '0' },
  ]);
  const r = kioskDrmDevice({ sysRoot: sys });
  assert.equal(r.device, undefined);
  assert.match(r.why, /none is the boot VGA device/);
});

test('BULKHEAD_KIOSK_GPU names the display: its card, also when it is not the boot VGA device', () => {
  const sys = fakeSys([dom0Vga, secondGpu]);
  assert.equal(kioskDrmDevice({ sysRoot: sys, gpu: '0000:00:06.0' }).device, '/dev/dri/card1');
  assert.equal(kioskDrmDevice({ sysRoot: sys, gpu: ' 0000:00:05.0\n' }).device, '/dev/dri/card0');
});

test('BULKHEAD_KIOSK_GPU that is no PCI address, or a device without a card: a named error saying which', () => {
  const sys = fakeSys([dom0Vga, { ...secondGpu, card: undefined, driver: 'pciback' }]);
  assert.throws(() => kioskDrmDevice({ sysRoot: sys, gpu: '../../etc' }), {
    name: 'KioskGpuError',
    message: /not a PCI address/,
  });
  assert.throws(() => kioskDrmDevice({ sysRoot: sys, gpu: '0000:00:06.0' }), {
    name: 'KioskGpuError',
    message: /0000:00:06\.0 has no DRM card \(its driver: pciback\)/,
  });
  assert.throws(() => kioskDrmDevice({ sysRoot: sys, gpu: '0000:00:07.0' }), {
    name: 'KioskGpuError',
    message: /its driver: none/,
  });
});
