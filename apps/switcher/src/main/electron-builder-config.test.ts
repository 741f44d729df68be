import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

/**
 * The packaging config is checked by electron-builder's own schema validation, the same code that
 * `npm run package` runs before it builds: a typo in electron-builder.yml fails here, on machines
 * that cannot download Electron to build the package.
 */
const APP = join(__dirname, '..', '..');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { validateConfiguration } = require('app-builder-lib/out/util/config/config') as {
  validateConfiguration(config: unknown, debug: unknown): Promise<void>;
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const yaml = require('js-yaml') as { load(text: string): Record<string, unknown> };
const debugLogger = { add: () => undefined, isEnabled: false };
const config = () => yaml.load(readFileSync(join(APP, 'electron-builder.yml'), 'utf8'));

test('electron-builder accepts the switcher packaging config, and it packages what the app runs', async () => {
  const c = config();
  await validateConfiguration(c, debugLogger);
  // The packaged app starts at the compiled Electron main and ships the sandboxed preload bundle.
  assert.equal((c.extraMetadata as { main: string }).main, 'dist/main/electron-main.js');
  assert.ok((c.files as string[]).includes('dist/preload/preload.bundle.js'));
  assert.ok((c.files as string[]).includes('!dist/testing/**'), 'test fakes stay out of the package');
});

test('a config with an option electron-builder does not know is refused (the check can fail)', async () => {
  const c = config();
  await assert.rejects(
    validateConfiguration({ ...c, linux: { ...(c.linux as object), executableNmae: 'typo' } }, debugLogger),
    /configuration\.linux/,
  );
});

test('npm run package says why it cannot build where Electron was not downloaded', () => {
  const r = spawnSync(process.execPath, [join(APP, 'package.mjs')], {
    encoding: 'utf8',
    env: { ...process.env, ELECTRON_DIST: '/nonexistent/electron-dist' },
  });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /Electron's binary distribution is not installed/);
  assert.match(r.stderr, /npm run package/);
});
