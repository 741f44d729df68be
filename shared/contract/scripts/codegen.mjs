#!/usr/bin/env node
// Generates from the contract XML:
//  - src/generated.ts: the contract as data (signatures, access, errors) and TypeScript types for
//    service implementations and clients of every interface;
//    (with the enums, typed dicts and property views of the Enum and Dict annotations);
//  - policy/org.bulkhead.*.conf: deny-by-default D-Bus policy files from the Access annotations;
//  - ACCESS.md: the access table and its prose.
// `--check` fails (exit 1) when the committed output differs from what the XML says.
import { writeFileSync, readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadContractDir } from './contract-model.mjs';
import { renderAccess, renderGenerated, renderPolicies } from './render.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ifaces = loadContractDir(join(root, 'xml'));
const outputs = [
  [join(root, 'src/generated.ts'), renderGenerated(ifaces)],
  [join(root, 'ACCESS.md'), renderAccess(ifaces)],
];
for (const [name, text] of Object.entries(renderPolicies(ifaces)))
  outputs.push([join(root, 'policy', name), text]);

const check = process.argv.includes('--check');
let stale = 0;
for (const [file, text] of outputs) {
  const old = existsSync(file) ? readFileSync(file, 'utf8') : null;
  if (old === text) continue;
  if (check) {
    console.error(`stale: ${file} (run npm run codegen)`);
    stale++;
  } else {
    writeFileSync(file, text);
    console.log(`wrote ${file}`);
  }
}
process.exit(stale ? 1 : 0);
