#!/usr/bin/env node
// The image suite: builds the Control Domain image in both flavours (cached base layer; the project
// layer is re-made each run, ~15 s each), boots them under QEMU and runs e2e/dist/*.e2e.js with node's test runner.
// Needs root (mmdebstrap, chroot). Without root it says so and exits 0 without running, so a
// developer's unprivileged `npm test` still runs everything else.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
if (process.getuid?.() !== 0) {
  console.log('image suite: skipped (needs root to build the image: sudo npm run test:image)');
  process.exit(0);
}
// Both flavours from the one recipe: the test flavour (production plus dom0-rootfs/test-layer/)
// into .cache/image-test for control-domain.e2e, production into .cache/image for
// production-image.e2e.
for (const flavour of ['test', 'production']) {
  const build = spawnSync('bash', [join(root, 'dom0-rootfs/build-image.sh')], {
    stdio: 'inherit',
    env: { ...process.env, FLAVOUR: flavour },
  });
  if (build.status !== 0) {
    console.error(`image suite: the ${flavour} image build failed`);
    process.exit(1);
  }
}
const dir = join(root, 'e2e/dist');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.e2e.js'))
  .map((f) => join(dir, f));
const filters = process.argv.slice(2);
// The Xen boot entry's e2e (xen-entry.e2e.js: Xen and a PV dom0 under TCG, personal as a Xen PV
// guest and business as an HVM one; 258-458 s with its boot, 280-347 s when both were PV) runs
// with the rest since it passed whole in three runs in a row on 2026-12-01, and twice in a row
// with the HVM guest (dom0-rootfs/README.md, "The e2e"); BULKHEAD_E2E_XEN=0 leaves it out.
// power-xen.e2e.js (S3 on the Xen entry with an HVM guest's USB stick across the sleep; 285-454 s)
// joined on 2026-12-01 after four passing runs in a row; BULKHEAD_E2E_XEN_POWER=0 leaves it out.
// Opt-in files run with the rest but skip themselves before booting anything unless asked:
// person-xen.e2e.js (BULKHEAD_E2E_XEN_PERSON=1, issue 18 on the Xen entry: Lab installed from the
// ISO on a stick boots as an HVM guest; 764 s with its boot, over CI's 6 min) and gpu-xen.e2e.js (BULKHEAD_E2E_GPU=1, issue 16's
// one-GPU rig: the outer display passed through under the emulated VT-d; one more Xen boot, ~8 min
// with its scenarios, over CI's budget).
const optOut = [
  ...(process.env.BULKHEAD_E2E_XEN === '0' ? ['xen-entry.e2e.js', 'power-xen.e2e.js'] : []),
  ...(process.env.BULKHEAD_E2E_XEN_POWER === '0' ? ['power-xen.e2e.js'] : []),
];
const wanted = (f) =>
  filters.length ? filters.some((x) => f.includes(x)) : !optOut.some((o) => f.endsWith(o));
const selected = files.filter(wanted);
const r = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-reporter=spec', ...selected],
  { stdio: 'inherit' },
);
process.exit(r.status ?? 1);
