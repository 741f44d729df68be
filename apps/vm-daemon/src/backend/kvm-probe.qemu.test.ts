import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { probeKvm } from './kvm-probe';

test('the KVM probe always comes back with an accelerator and a reason, even where KVM hangs or fails', async () => {
  const guest = join(__dirname, '..', '..', 'guest', 'build', 'bulkhead-guest.elf');
  const r = await probeKvm({ probeKernel: existsSync(guest) ? guest : null, timeoutMs: 4000 });
  assert.ok(r.accel === 'kvm' || r.accel === 'tcg');
  assert.ok(r.reason.length > 0);
  if (!existsSync('/dev/kvm')) assert.equal(r.accel, 'tcg');
});

test('a missing QEMU binary means TCG (and the start path reports the missing binary), not a hang', async () => {
  const r = await probeKvm({ qemu: '/nonexistent/qemu-system-x86_64', timeoutMs: 2000, runMs: 200 });
  assert.equal(r.accel, 'tcg');
});
