#!/usr/bin/env node
// `npm start`: the demo on the embedded default (QEMU backend).
// Starts a private D-Bus, vm-daemon with two small test-guest VMs ("personal" and "business"),
// input-daemon on a virtual seat (your real keyboard is never grabbed: the switcher's window
// feeds it), usb-daemon, and the switcher's web host; opens the switcher in Chromium's app
// window when there is a display, else prints its URL. Ctrl+C stops everything.
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  rmSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';

const root = new URL('..', import.meta.url).pathname;
const require = createRequire(import.meta.url);
const { startPrivateBus } = require(join(root, 'shared/dbus/dist/index.js'));

const work = mkdtempSync(join(tmpdir(), 'bulkhead-demo-'));
const dirs = {
  vms: join(work, 'vms'),
  run: join(work, 'run'),
  state: join(work, 'state'),
  logs: join(work, 'logs'),
};
Object.values(dirs).forEach((d) => mkdirSync(d, { recursive: true }));

// The example VM definitions name the test guest relative to their own directory; the copies
// live elsewhere (so the demo can be edited freely), so make that path absolute.
const examples = join(root, 'apps/vm-daemon/examples/vms');
for (const f of readdirSync(examples).filter((f) => f.endsWith('.json'))) {
  const def = JSON.parse(readFileSync(join(examples, f), 'utf8'));
  if (typeof def.kernel === 'string') def.kernel = resolve(examples, def.kernel);
  writeFileSync(join(dirs.vms, f), JSON.stringify(def, null, 2));
}

const bus = await startPrivateBus({ mode: 'open' });
const env = { ...process.env, BULKHEAD_BUS: bus.address };
const children = [];
function daemon(name, args, opts = {}) {
  const child = spawn(process.execPath, args, {
    env,
    stdio: ['ignore', opts.pipe ? 'pipe' : 'inherit', 'inherit'],
  });
  child.on('exit', (code, sig) => {
    if (!stopping) console.error(`demo: ${name} exited (${sig ?? code})`);
  });
  children.push(child);
  return child;
}

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  console.log('\ndemo: stopping');
  for (const c of children.reverse()) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1500));
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  // vm-daemon powers its VMs down on exit, but a guest that ignores ACPI outlives a short grace:
  // the demo's VMs are the demo's, so make sure none is left running.
  for (const id of existsSync(dirs.run) ? readdirSync(dirs.run) : []) {
    try {
      process.kill(Number(readFileSync(join(dirs.run, id, 'qemu.pid'), 'utf8').trim()), 'SIGKILL');
    } catch {
      /* not running */
    }
  }
  await bus.stop();
  rmSync(work, { recursive: true, force: true });
  process.exit(0);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

daemon('vm-daemon', [
  join(root, 'apps/vm-daemon/dist/main.js'),
  '--config-dir',
  dirs.vms,
  '--run-dir',
  dirs.run,
  '--state-dir',
  join(dirs.state, 'vm'),
  '--stop-vms-on-exit',
]);
daemon('input-daemon', [join(root, 'apps/input-daemon/dist/main.js'), '--seat', 'virtual']);
daemon('usb-daemon', [
  join(root, 'apps/usb-daemon/dist/main.js'),
  '--rules',
  join(dirs.state, 'usb-rules.json'),
  '--state-dir',
  join(dirs.state, 'usb'),
]);
const host = daemon(
  'switcher',
  [
    join(root, 'apps/switcher/dist/main/web-host.js'),
    '--port',
    process.env.PORT ?? '0',
    '--bus',
    bus.address,
    '--vm-run-dir',
    dirs.run,
  ],
  { pipe: true },
);

let url = null;
if (!host.stdout) throw new Error('demo: the switcher was started without a stdout pipe');
host.stdout.setEncoding('utf8');
host.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  const m = /SWITCHER-URL (\S+)/.exec(chunk);
  if (m && !url) {
    url = m[1];
    openBrowser(url);
  }
});

function openBrowser(u) {
  console.log(`\ndemo: the switcher is at ${u}`);
  console.log(
    'demo: click a tile to switch; in a VM, Ctrl+1 / Ctrl+2 switch VMs and Ctrl+0 returns to the tiles.',
  );
  const haveDisplay = process.env.DISPLAY || process.env.WAYLAND_DISPLAY;
  const chromium = spawnSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).stdout.trim();
  if (!haveDisplay || !chromium || process.env.BULKHEAD_NO_BROWSER) {
    console.log('demo: no display here: open that URL in a browser on this machine. Ctrl+C stops the demo.');
    return;
  }
  const profile = join(work, 'chromium');
  children.push(
    spawn(
      chromium,
      [
        `--app=${u}`,
        `--user-data-dir=${profile}`,
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--start-maximized',
        ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      ],
      {
        stdio: 'ignore',
      },
    ),
  );
}
console.log(`demo: private bus at ${bus.address}; working files in ${work}`);
