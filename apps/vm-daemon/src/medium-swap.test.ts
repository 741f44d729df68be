/**
 * An installation medium (`cdrom`) is checked where QEMU will open it, at every start, not only
 * when its definition was read: a USB stick is a filesystem anyone may have made, and a stick
 * swapped for another with the same label (the same /media/bulkhead/<label>) may hold, at the
 * ISO's name, a symlink to the Control Domain's disk or /etc/shadow, which QEMU (root) would
 * follow and hand to the VM as its CD-ROM (security model item 9). With a fake backend.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SWITCHER_PATH } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { FakeBackend } from './testing/fake-backend';
import { StateStore } from './state-store';
import { DONE, type InputFocus, type StepResult } from './switch-transaction';
import { VmManager } from './vm-manager';

const log = createLogger('test', 'error');

class FakeInputFocus implements InputFocus {
  focused = SWITCHER_PATH;
  async freeze(): Promise<StepResult> {
    return DONE;
  }
  async setFocus(target: string): Promise<StepResult> {
    this.focused = target;
    return DONE;
  }
}

test('a VM whose ISO became a symlink out of the media root since its file was read is not started', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmd-medium-'));
  try {
    const configDir = join(root, 'vms');
    const media = join(root, 'media');
    const stick = join(media, 'STICK');
    mkdirSync(configDir);
    mkdirSync(stick, { recursive: true });
    const iso = join(stick, 'install.iso');
    writeFileSync(iso, 'an ISO');
    writeFileSync(
      join(configDir, 'lab.json'),
      JSON.stringify({ id: 'lab', slot: 1, color: '#2a6fdb', memoryMiB: 32, cdrom: iso }),
    );
    const backend = new FakeBackend();
    const manager = new VmManager({
      backend,
      input: new FakeInputFocus(),
      configDir,
      config: { mediaRoots: [media] },
      state: new StateStore(join(root, 'state'), log),
      log,
      watchConfig: false,
    });
    try {
      await manager.init();
      assert.equal(manager.vms.get('lab')?.def.cdrom, iso);
      // Another stick with the same label, mounted at the same place: its install.iso is a symlink.
      rmSync(iso);
      const secret = join(root, 'secret');
      writeFileSync(secret, 'the Control Domain disk');
      symlinkSync(secret, iso);
      await assert.rejects(manager.start('lab'), (e: Error & { errorName?: string }) => {
        assert.match(e.message, /cdrom: .*through a symlink, outside/);
        return true;
      });
      assert.ok(!backend.calls.includes('start lab'), `the backend was asked: ${backend.calls.join(', ')}`);
    } finally {
      manager.close();
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
