// One lint setup for the whole repository (flat config). Besides style and correctness it
// enforces the layering (rule bulkhead/layering below): an app imports only the shared packages,
// the switcher's renderer never imports its main process, preload only imports common/, and
// production code never imports test helpers (testing/).
import { dirname, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import tseslint from 'typescript-eslint';

const root = dirname(fileURLToPath(import.meta.url));

/** The packages under shared/ that apps may import (by package name). */
const SHARED_PACKAGES = ['common', 'contract', 'dbus', 'qmp'];

/** Files that are tests or test tooling: they may import testing/ helpers. */
const TEST_SIDE = /(\.test\.tsx?$|\.fuzz\.ts$|(^|\/)(testing|bench|e2e)\/)/;

/**
 * Where a module lives, as a path relative to the repository ('apps/usb-daemon/src/x.ts'), or
 * null for a bare package specifier.
 */
function resolveSpecifier(fromFile, spec) {
  if (!spec.startsWith('.') && !spec.startsWith('/')) return null;
  return relative(root, resolve(dirname(fromFile), spec))
    .split(sep)
    .join('/');
}

/** Why importing `spec` from `file` (both repository-relative) breaks the layering, or null. */
function layeringViolation(file, spec, target) {
  const app = /^apps\/([^/]+)\//.exec(file)?.[1];
  const shared = /^shared\/([^/]+)\//.exec(file)?.[1];
  const bulkhead = /^@bulkhead\/([^/]+)/.exec(spec)?.[1];
  if ((app || shared) && bulkhead && !SHARED_PACKAGES.includes(bulkhead))
    return `'${spec}': ${app ? `apps/${app}` : `shared/${shared}`} may import only @bulkhead/{${SHARED_PACKAGES.join(',')}}, never an app`;
  if (target !== null) {
    const home = app ? `apps/${app}/` : shared ? `shared/${shared}/` : null;
    if (home && !target.startsWith(home) && (target.startsWith('apps/') || target.startsWith('shared/')))
      return `'${spec}' reaches into ${target.split('/').slice(0, 2).join('/')} from ${home.slice(0, -1)}: import a shared package by its name (@bulkhead/…); apps never import each other`;
    if (file.startsWith('apps/switcher/src/renderer/') && target.startsWith('apps/switcher/src/main/'))
      return `'${spec}': the switcher's renderer never imports main/ (it talks to it through common/ channels)`;
    if (
      file.startsWith('apps/switcher/src/preload/') &&
      !target.startsWith('apps/switcher/src/preload/') &&
      !target.startsWith('apps/switcher/src/common/')
    )
      return `'${spec}': the switcher's preload imports only common/`;
    if (!TEST_SIDE.test(file) && /(^|\/)testing(\/|$)/.test(target))
      return `'${spec}': production code never imports testing/ (fakes and test helpers stay out of the image)`;
  }
  return null;
}

/** bulkhead/layering: every import, export-from, import() and require() of a literal path. */
const layering = {
  meta: {
    type: 'problem',
    schema: [],
    docs: { description: 'keeps apps, shared packages, renderer/main/preload and testing/ apart' },
  },
  create(context) {
    const file = relative(root, context.filename).split(sep).join('/');
    const check = (node, source) => {
      if (!source || source.type !== 'Literal' || typeof source.value !== 'string') return;
      const why = layeringViolation(file, source.value, resolveSpecifier(context.filename, source.value));
      if (why) context.report({ node, message: why });
    };
    return {
      ImportDeclaration: (n) => check(n, n.source),
      ExportNamedDeclaration: (n) => check(n, n.source),
      ExportAllDeclaration: (n) => check(n, n.source),
      ImportExpression: (n) => check(n, n.source),
      TSExternalModuleReference: (n) => check(n, n.expression),
      CallExpression: (n) => {
        if (n.callee.type === 'Identifier' && n.callee.name === 'require') check(n, n.arguments[0]);
      },
    };
  },
};

// Node's own globals, as the process running ESLint sees them (no extra package needed).
const nodeGlobals = Object.fromEntries(Object.getOwnPropertyNames(globalThis).map((g) => [g, 'readonly']));

export default tseslint.config(
  {
    ignores: [
      '**/dist/**',
      '**/build/**',
      '**/node_modules/**',
      '.cache/**',
      'artifacts/**',
      '**/generated.ts',
    ],
  },
  ...tseslint.configs.recommended,
  {
    plugins: { bulkhead: { rules: { layering } } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      'bulkhead/layering': 'error',
    },
  },
  // Scripts, build files and the image's JavaScript: plain Node. Their types are checked by
  // `tsc -p tsconfig.scripts.json` (checkJs), part of `npm run lint`.
  {
    files: ['**/*.mjs', '**/*.js', '**/*.cjs'],
    languageOptions: { globals: nodeGlobals },
    rules: { 'no-undef': 'error' },
  },
  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
