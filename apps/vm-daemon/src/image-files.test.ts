/**
 * What the Control Domain image ships of the project's build: dom0-rootfs/build-image.sh copies
 * every package's dist/ and then deletes tests, fuzz targets, benchmarks and every testing/
 * directory with a few `find "$dest" ...` lines. This test runs those very lines over a copy of
 * the file names of every shared/* and apps/* dist, then checks what is left: no fake (a fake
 * backend or QMP server in the image could be wired in by mistake and would answer for a real
 * VM), and no shipped file that requires a file the image leaves out (the daemon would die at
 * start in the image only, where no unit test runs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';

const REPO = resolve(__dirname, '..', '..', '..');
const BUILD_IMAGE = join(REPO, 'dom0-rootfs', 'build-image.sh');

/** Every .js file under shared/<pkg>/dist and apps/<pkg>/dist, relative to the repository. */
function distJsFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (e.endsWith('.js')) out.push(relative(REPO, p));
    }
  };
  for (const top of ['shared', 'apps'])
    for (const pkg of readdirSync(join(REPO, top))) {
      const dist = join(REPO, top, pkg, 'dist');
      if (existsSync(dist)) walk(dist);
    }
  return out.sort();
}

/** The files of `files` the image keeps: build-image.sh's own find lines, run on empty copies. */
function keptByImage(files: string[]): Set<string> {
  const findLines = readFileSync(BUILD_IMAGE, 'utf8')
    .split('\n')
    .filter((l) => /^find "\$dest/.test(l));
  assert.ok(findLines.length > 0, `no 'find "$dest' line in ${BUILD_IMAGE}`);
  const dest = mkdtempSync(join(tmpdir(), 'bulkhead-image-files-'));
  try {
    for (const f of files) {
      mkdirSync(dirname(join(dest, f)), { recursive: true });
      writeFileSync(join(dest, f), '');
    }
    execFileSync('bash', ['-euc', findLines.join('\n')], { env: { ...process.env, dest } });
    return new Set(files.filter((f) => existsSync(join(dest, f))));
  } finally {
    rmSync(dest, { recursive: true, force: true });
  }
}

/** The repository-relative file a require() in `from` loads, when it is one of ours; else null. */
function resolveOurs(from: string, spec: string): string | null {
  let abs: string;
  const pkg = /^@bulkhead\/([^/]+)(\/.*)?$/.exec(spec);
  if (pkg) {
    const dir = ['shared', 'apps'].map((t) => join(REPO, t, pkg[1])).find((d) => existsSync(d));
    if (!dir) return null;
    const main = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).main ?? 'index.js';
    abs = pkg[2] ? join(dir, pkg[2]) : join(dir, main);
  } else if (spec.startsWith('.')) abs = resolve(REPO, dirname(from), spec);
  else return null;
  for (const candidate of [abs, `${abs}.js`, join(abs, 'index.js')])
    if (existsSync(candidate) && statSync(candidate).isFile()) return relative(REPO, candidate);
  return relative(REPO, abs);
}

test('the image ships no fake and no file that needs one: tests, fuzz targets, benchmarks and testing/ stay out, and nothing left requires them', () => {
  const files = distJsFiles();
  assert.ok(
    files.some((f) => f.endsWith('vm-daemon/dist/main.js')),
    'build first: npx tsc -b',
  );
  const kept = keptByImage(files);

  const fakes = [...kept].filter((f) => /(^|\/)fake-[^/]*\.js$/.test(f));
  assert.deepEqual(fakes, [], 'fakes the image would ship (they belong under src/testing/)');

  const broken: string[] = [];
  for (const f of kept) {
    for (const m of readFileSync(join(REPO, f), 'utf8').matchAll(/\brequire\("([^"]+)"\)/g)) {
      const target = resolveOurs(f, m[1]);
      if (target !== null && target.endsWith('.js') && !kept.has(target))
        broken.push(`${f} requires ${m[1]} (${target}), which the image leaves out`);
    }
  }
  assert.deepEqual(broken, []);

  // The daemons themselves are still there.
  for (const main of [
    'apps/vm-daemon/dist/main.js',
    'apps/input-daemon/dist/main.js',
    'shared/qmp/dist/index.js',
  ])
    assert.ok(kept.has(main), `${main} is missing from the image`);
});
