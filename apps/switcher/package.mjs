#!/usr/bin/env node
// Packages the switcher as an Electron app for Linux (electron-builder, target `dir`, config in
// electron-builder.yml) into apps/switcher/build/. Needs Electron's own binary distribution, which
// `npm install` downloads on a networked machine; the build machines of this project have no such
// access (ELECTRON_SKIP_BINARY_DOWNLOAD=1), so there this says why it cannot and exits 2. An
// unpacked Electron can also be named with ELECTRON_DIST=/path/to/electron-dist.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function electronDist() {
  if (process.env.ELECTRON_DIST) return process.env.ELECTRON_DIST;
  const pkg = dirname(require.resolve('electron/package.json'));
  // electron's install script writes path.txt and dist/ once the binary is downloaded.
  return existsSync(join(pkg, 'path.txt')) && existsSync(join(pkg, 'dist')) ? join(pkg, 'dist') : null;
}

const dist = electronDist();
if (!dist || !existsSync(dist)) {
  console.error(
    [
      "package: cannot build the Electron app here: Electron's binary distribution is not installed.",
      "  It is downloaded by electron's install script, which this machine skips (ELECTRON_SKIP_BINARY_DOWNLOAD=1,",
      '  no access to its download host). On a networked machine run:',
      '    npm install --workspace apps/switcher electron && npm run package',
      '  or point ELECTRON_DIST at an unpacked Electron of the version in apps/switcher/package.json.',
      '  The switcher itself runs without Electron: the image and the tests use Chromium with the web host.',
    ].join('\n'),
  );
  process.exit(2);
}

const { build, Platform } = require('electron-builder');
const yaml = require('js-yaml');
const config = yaml.load(readFileSync(join(here, 'electron-builder.yml'), 'utf8'));
const out = await build({
  projectDir: here,
  targets: Platform.LINUX.createTarget('dir'),
  config: { ...config, electronDist: dist },
});
console.log(`package: ${out.join(', ') || join(here, config.directories.output)}`);
