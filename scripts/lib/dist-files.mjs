// Finds compiled files in every workspace package's dist/ (shared/* and apps/*), sorted.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const repoRoot = new URL('../..', import.meta.url).pathname;

/** Every file under shared/<pkg>/dist and apps/<pkg>/dist for which `accept(name, path)` is true. */
export function distFiles(accept) {
  const out = [];
  const walk = (dir) => {
    let entries;
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const e of entries) {
      if (e === 'node_modules') continue;
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (accept(e, p)) out.push(p);
    }
  };
  for (const d of ['shared', 'apps'])
    for (const pkg of readdirSync(join(repoRoot, d))) walk(join(repoRoot, d, pkg, 'dist'));
  // The e2e package's own helpers have unit tests too (its *.e2e.js files are run by the image phase).
  walk(join(repoRoot, 'e2e', 'dist'));
  return out.sort();
}
