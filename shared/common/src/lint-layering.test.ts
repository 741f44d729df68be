// The repository's layering is enforced by lint (eslint.config.mjs, rule bulkhead/layering):
// snippets placed (virtually) inside the apps are linted with the real config, through ESLint's
// Node API, and must be refused or accepted as the layering says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ESLint } from 'eslint';

const repo = join(__dirname, '../../..');
const eslint = new ESLint({ cwd: repo });

/** The layering messages ESLint reports for `code` as if it were the file `path` of the repository. */
async function layeringErrors(path: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(repo, path) });
  return result.messages.filter((m) => m.ruleId === 'bulkhead/layering').map((m) => m.message);
}

test('an app importing another app, by relative path, require() or package name, is a lint error', async () => {
  const viaPath = await layeringErrors(
    'apps/input-daemon/src/qmp-wiring-example.ts',
    "import { QmpClient } from '../../vm-daemon/dist/qmp/qmp-client';\nexport const c = QmpClient;\n",
  );
  assert.equal(viaPath.length, 1, `expected one layering error, got ${JSON.stringify(viaPath)}`);
  assert.match(viaPath[0], /reaches into apps\/vm-daemon from apps\/input-daemon/);

  const viaRequire = await layeringErrors(
    'apps/input-daemon/src/qmp-wiring-example.ts',
    "// eslint-disable-next-line @typescript-eslint/no-require-imports\nexport const q = require('../../vm-daemon/dist/qmp/qmp-client');\n",
  );
  assert.equal(viaRequire.length, 1, `expected one layering error, got ${JSON.stringify(viaRequire)}`);

  const viaName = await layeringErrors(
    'apps/usb-daemon/src/example.ts',
    "import { thing } from '@bulkhead/vm-daemon';\nexport const t = thing;\n",
  );
  assert.equal(viaName.length, 1, `expected one layering error, got ${JSON.stringify(viaName)}`);
  assert.match(viaName[0], /may import only @bulkhead\/\{common,contract,dbus,qmp\}/);
});

test('imports of shared packages and of the same app are accepted', async () => {
  assert.deepEqual(
    await layeringErrors(
      'apps/input-daemon/src/qmp-wiring-example.ts',
      "import { QmpClient } from '@bulkhead/qmp';\nimport { BUS_NAMES } from '@bulkhead/contract';\n" +
        "import { parseChord } from './hotkeys';\nexport const x = [QmpClient, BUS_NAMES, parseChord];\n",
    ),
    [],
  );
});

test("the switcher's renderer never imports main/, preload imports only common/", async () => {
  const renderer = await layeringErrors(
    'apps/switcher/src/renderer/example.ts',
    "import { DaemonState } from '../main/daemon-state';\nimport { hotkeyForSlot } from '../common/model';\n" +
      'export const x = [DaemonState, hotkeyForSlot];\n',
  );
  assert.equal(renderer.length, 1, JSON.stringify(renderer));
  assert.match(renderer[0], /renderer never imports main/);

  const preload = await layeringErrors(
    'apps/switcher/src/preload/example.ts',
    "import { store } from '../renderer/store';\nimport { hotkeyForSlot } from '../common/model';\n" +
      'export const x = [store, hotkeyForSlot];\n',
  );
  assert.equal(preload.length, 1, JSON.stringify(preload));
  assert.match(preload[0], /preload imports only common/);
});

test('production code never imports testing/; tests and fuzz targets may', async () => {
  const code =
    "import { FakeVmManager } from './testing/fake-vm-manager';\nexport const f = FakeVmManager;\n";
  const production = await layeringErrors('apps/usb-daemon/src/example.ts', code);
  assert.equal(production.length, 1, JSON.stringify(production));
  assert.match(production[0], /production code never imports testing/);
  assert.deepEqual(await layeringErrors('apps/usb-daemon/src/example.test.ts', code), []);
  assert.deepEqual(await layeringErrors('apps/usb-daemon/src/example.fuzz.ts', code), []);
});
