// Which DRM device the kiosk's cage draws on (docs/gpu-handoff.md, "Two rigs, one flag").
//
// wlroots (cage) opens every DRM card it finds by default: the first as its primary, the others as
// secondary GPUs with outputs of their own. In the second-GPU rig (vm-daemon's
// --gpu-shared-with-dom0 false) one of those cards is the GPU that moves between VMs: vm-daemon
// unbinds dom0's driver from it at its start (xl pci-assignable-add), and with cage holding it the
// unbind would pull a device out from under the compositor. So the kiosk pins cage to dom0's own
// display (WLR_DRM_DEVICES), as OpenXT and Qubes keep the pass-through GPU away from dom0's
// compositor:
// - BULKHEAD_KIOSK_GPU=<PCI address> (e.g. 0000:00:05.0, a drop-in on bulkhead-kiosk.service):
//   that device's card, whatever else there is.
// - unset, with more than one card: the card of the boot VGA device (sysfs boot_vga = 1), the one
//   the firmware drew on, which on a laptop is the GPU wired to the panel.
// - unset, with one card (the one-GPU rig, or the moving GPU already in pciback): nothing is
//   pinned, wlroots takes the one there is.
// A configured address without a card is a named error; the kiosk then falls back to the boot VGA
// choice rather than draw nothing.
'use strict';
const { readdirSync, readFileSync, realpathSync } = require('node:fs');
const { basename, join } = require('node:path');

const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

class KioskGpuError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'KioskGpuError';
  }
}

/** @param {string} dir */
const cardsIn = (dir) => {
  try {
    return readdirSync(dir)
      .filter((e) => /^card\d+$/.test(e))
      .sort();
  } catch {
    return [];
  }
};

/**
 * @param {{ gpu?: string, sysRoot?: string, devRoot?: string }} opts
 * @returns {{ device?: string, why: string }} the DRM device node for WLR_DRM_DEVICES (none: leave
 *   wlroots' own choice) and why, for the kiosk's log
 */
function kioskDrmDevice(opts = {}) {
  const sys = opts.sysRoot ?? '/sys';
  const dev = opts.devRoot ?? '/dev';
  const gpu = (opts.gpu ?? '').trim().toLowerCase();
  if (gpu) {
    if (!PCI_ADDRESS.test(gpu))
      throw new KioskGpuError(`BULKHEAD_KIOSK_GPU '${opts.gpu}' is not a PCI address (0000:00:05.0)`);
    const [card] = cardsIn(join(sys, 'bus', 'pci', 'devices', gpu, 'drm'));
    if (!card) {
      let driver = 'none';
      try {
        driver = basename(realpathSync(join(sys, 'bus', 'pci', 'devices', gpu, 'driver')));
      } catch {
        // No such device, or no driver bound: 'none'.
      }
      throw new KioskGpuError(`BULKHEAD_KIOSK_GPU ${gpu} has no DRM card (its driver: ${driver})`);
    }
    return { device: join(dev, 'dri', card), why: `BULKHEAD_KIOSK_GPU ${gpu}` };
  }
  const cards = cardsIn(join(sys, 'class', 'drm'));
  if (cards.length <= 1) return { why: `${cards.length} DRM card(s): wlroots' own choice` };
  for (const card of cards) {
    let bootVga = '';
    try {
      bootVga = readFileSync(join(sys, 'class', 'drm', card, 'device', 'boot_vga'), 'utf8').trim();
    } catch {
      // Not a VGA-class device (no boot_vga file): not the boot display.
    }
    if (bootVga === '1') {
      let pci = card;
      try {
        pci = basename(realpathSync(join(sys, 'class', 'drm', card, 'device')));
      } catch {
        // The card's name is enough for the log.
      }
      return { device: join(dev, 'dri', card), why: `the boot VGA device ${pci} of ${cards.length} cards` };
    }
  }
  return { why: `${cards.length} DRM cards and none is the boot VGA device: wlroots' own choice` };
}

module.exports = { kioskDrmDevice, KioskGpuError };
