#!/usr/bin/env node
// Bundles the renderer (React app + noVNC) for the browser and the preload script for Electron's
// sandbox (which cannot require project files), next to tsc's output in dist/.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist', 'web');
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [join(here, 'src/renderer/index.tsx')],
  bundle: true,
  outdir: out,
  entryNames: 'app',
  chunkNames: 'chunk-[hash]',
  splitting: true, // noVNC (top-level await) loads only when a VM view opens
  format: 'esm',
  platform: 'browser',
  target: ['chrome110'],
  jsx: 'automatic',
  minify: true,
  sourcemap: true,
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
});
await build({
  entryPoints: [join(here, 'src/preload/preload.ts')],
  bundle: true,
  outfile: join(here, 'dist', 'preload', 'preload.bundle.js'),
  platform: 'node',
  format: 'cjs',
  target: ['node20'],
  external: ['electron'],
  logLevel: 'warning',
});
copyFileSync(join(here, 'src/renderer/index.html'), join(out, 'index.html'));
copyFileSync(join(here, 'src/renderer/styles.css'), join(out, 'app.css'));
console.log('switcher: renderer and preload bundled');
