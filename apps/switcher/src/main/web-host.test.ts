import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { WebSocket } from 'ws';
import { BulkheadError, usbDevicePath, vmPath } from '@bulkhead/contract';
import { startPrivateBus, type PrivateBus } from '@bulkhead/dbus';
import type { ServerFrame } from '../common/channels';
import type { SwitcherSnapshot as Snap, SwitcherSnapshot } from '../common/model';
import { fakeUsbProps, startFakeDaemons, type FakeDaemons } from '../testing/fake-daemons';
import { startWebHost, type WebHost } from './web-host';

let bus: PrivateBus;
let fakes: FakeDaemons;
let host: WebHost;

before(async () => {
  bus = await startPrivateBus({ mode: 'open' });
  fakes = await startFakeDaemons(bus.address, {
    usbDevices: [['stick', fakeUsbProps('stick')]],
    configErrors: [['/etc/bulkhead/vms/broken.json', 'memory_mib', 'must be a number']],
  });
  host = await startWebHost({ busAddress: bus.address, log: () => undefined, thumbnailIntervalMs: 200 });
});

after(async () => {
  await host?.close();
  fakes?.close();
  await bus?.stop();
});

/** A renderer stand-in: the WebSocket client side of the channel map. */
class Client {
  readonly pushes: Array<{ push: string; payload: unknown }> = [];
  private readonly replies = new Map<number, ServerFrame>();
  private nextId = 1;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      const f = JSON.parse(String(d)) as ServerFrame;
      if ('push' in f) this.pushes.push(f);
      else this.replies.set(f.id, f);
    });
  }
  static open(url: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const c = new Client(ws);
      ws.once('open', () => resolve(c));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
  }
  async request(
    channel: string,
    args: unknown,
  ): Promise<{ id: number; ok: boolean; result?: unknown; error?: { name: string; message: string } }> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, channel, args }));
    await waitFor(() => this.replies.has(id));
    return this.replies.get(id) as { id: number; ok: boolean };
  }
  lastSnapshot(): Snap | undefined {
    return this.pushes.filter((p) => p.push === 'snapshot').pop()?.payload as Snap | undefined;
  }
  close() {
    this.ws.close();
  }
}

const wsUrl = (token?: string) =>
  `ws://127.0.0.1:${host.port}/ws${token === undefined ? '' : `?token=${token}`}`;

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('the URL printed has a token, and the page is served', async () => {
  assert.match(host.url, /^http:\/\/127\.0\.0\.1:\d+\/\?token=[\w-]{20,}$/);
  const res = await fetch(host.url);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /<div id="root">/);
  assert.equal((await fetch(`http://127.0.0.1:${host.port}/../../etc/passwd`)).status, 404);
});

/** One raw HTTP request (what fetch would refuse to send); resolves with the status line. */
function rawRequest(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(`${head}\r\nHost: 127.0.0.1\r\n\r\n`));
    let got = '';
    sock.on('data', (d) => {
      got += d;
      if (got.includes('\r\n')) {
        resolve(got.split('\r\n')[0]);
        sock.destroy();
      }
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(got.split('\r\n')[0]));
  });
}

test('malformed request paths get 400 or 404, before or after the token, and the web host stays up', async () => {
  const token = new URL(host.url).searchParams.get('token')!;
  const upgrade =
    'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==';
  for (const [head, status] of [
    ['GET /%E0%A4%A HTTP/1.1', /^HTTP\/1\.1 400/],
    ['GET //[ HTTP/1.1', /^HTTP\/1\.1 400/],
    ['HEAD /%ZZ HTTP/1.1', /^HTTP\/1\.1 400/],
    [`GET //[ HTTP/1.1\r\n${upgrade}`, /^HTTP\/1\.1 400/],
    [`GET /vnc/%E0%A4%A?token=${token} HTTP/1.1\r\n${upgrade}`, /^HTTP\/1\.1 404/],
  ] as const)
    assert.match(await rawRequest(host.port, head), status, head);
  const res = await fetch(host.url);
  assert.equal(res.status, 200, 'still serving the page');
});

test('a WebSocket without the token, or with a wrong one, is refused', async () => {
  await assert.rejects(Client.open(wsUrl()), /401/);
  await assert.rejects(Client.open(wsUrl('wrong-token')), /401/);
  await assert.rejects(Client.open(`ws://127.0.0.1:${host.port}/vnc/personal`), /401/);
});

test('unknown channels and malformed arguments are rejected with a named error', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    const r = await c.request('rm -rf', {});
    assert.deepEqual(r, {
      id: 1,
      ok: false,
      error: { name: 'UnknownChannel', message: "unknown channel 'rm -rf'" },
    });
    const bad = await c.request('switchTo', { vm: 42 });
    assert.equal(bad.ok, false);
    assert.match((bad as { error: { message: string } }).error.message, /switchTo: argument 'vm'/);
    const extra = await c.request('switchTo', { vm: '/', evil: true });
    assert.match((extra as { error: { message: string } }).error.message, /unknown argument 'evil'/);
  } finally {
    c.close();
  }
});

test('the first push is a snapshot of the daemons: VMs, config errors, USB devices, input', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    await waitFor(() => (c.lastSnapshot()?.vms.length ?? 0) === 2 && !!c.lastSnapshot()?.daemons.usb.up);
    const s = c.lastSnapshot() as SwitcherSnapshot;
    assert.deepEqual(
      s.vms.map((v) => [v.name, v.slot, v.color]),
      [
        ['Personal', 1, '#2a6fdb'],
        ['Business', 2, '#d9822b'],
      ],
    );
    assert.deepEqual(s.configErrors, [
      { file: '/etc/bulkhead/vms/broken.json', field: 'memory_mib', reason: 'must be a number' },
    ]);
    assert.deepEqual(
      s.usbDevices.map((d) => d.path),
      [usbDevicePath('stick')],
    );
    assert.equal(s.input?.seat, 'virtual');
    assert.equal(s.features.injectInput, true);
  } finally {
    c.close();
  }
});

test('switchTo reaches VmManager1.Switch; progress and the new ActiveVm come back as pushes', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    const r = await c.request('switchTo', { vm: vmPath('business') });
    assert.deepEqual(r, { id: 1, ok: true, result: null });
    assert.deepEqual(fakes.vmManager.switchCalls.at(-1), vmPath('business'));
    await waitFor(() => c.lastSnapshot()?.activeVm === vmPath('business'));
    const steps = c.pushes
      .filter((p) => p.push === 'switchProgress')
      .map((p) => (p.payload as { step: string }).step);
    assert.deepEqual(steps, ['starting-vm', 'freeze-input', 'focus-input', 'publish', 'done']);
    await waitFor(() => c.lastSnapshot()?.lastSwitch?.outcome === 'ok');
    assert.deepEqual(c.lastSnapshot()?.lastSwitch?.steps[0], ['freeze-input', 0.3]);
  } finally {
    c.close();
  }
});

test('VmManager1.GpuHolder reaches the renderer: who owns the screen follows the GPU', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    await waitFor(() => c.lastSnapshot()?.gpuHolder === '/');
    fakes.vmManager.props.GpuHolder = vmPath('business');
    fakes.vmManager.handle.propertiesChanged('GpuHolder');
    await waitFor(() => c.lastSnapshot()?.gpuHolder === vmPath('business'));
  } finally {
    fakes.vmManager.props.GpuHolder = '/';
    fakes.vmManager.handle.propertiesChanged('GpuHolder');
    c.close();
  }
});

test('a named D-Bus error reaches the renderer by name with its message', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    fakes.vmManager.failNextSwitch = new BulkheadError(
      'InvalidConfig',
      '/etc/bulkhead/vms/x.json: memory_mib: must be a number',
    );
    const r = await c.request('switchTo', { vm: vmPath('personal') });
    assert.deepEqual(r, {
      id: 1,
      ok: false,
      error: { name: 'InvalidConfig', message: '/etc/bulkhead/vms/x.json: memory_mib: must be a number' },
    });
    const missing = await c.request('switchTo', { vm: vmPath('nope') });
    assert.equal((missing as { error: { name: string } }).error.name, 'NoSuchVm');
  } finally {
    c.close();
  }
});

test('USB, lock and input requests reach their daemons', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    assert.equal(
      (await c.request('assignUsb', { device: usbDevicePath('stick'), vm: vmPath('personal') })).ok,
      true,
    );
    assert.equal(fakes.usbDevices.get(usbDevicePath('stick'))?.props.AssignedVm, vmPath('personal'));
    assert.equal((await c.request('setSticky', { device: usbDevicePath('stick'), sticky: true })).ok, true);
    assert.equal(fakes.usbDevices.get(usbDevicePath('stick'))?.props.Sticky, true);
    await waitFor(() => c.lastSnapshot()?.usbDevices[0]?.sticky === true);
    fakes.usb.ask(9, usbDevicePath('stick'), vmPath('business'));
    await waitFor(() => c.pushes.some((p) => p.push === 'prompt'));
    assert.equal((await c.request('answerPrompt', { promptId: 9, answer: 'deny' })).ok, true);
    assert.deepEqual(fakes.usb.answers, [[9, 'deny']]);
    assert.equal((await c.request('lock', {})).ok, true);
    await waitFor(
      () => c.pushes.some((p) => p.push === 'secureAttention') && c.lastSnapshot()?.input?.locked === true,
    );
    assert.equal((await c.request('unlock', {})).ok, false, 'an unlock without a password field is refused');
    assert.equal((await c.request('unlock', { password: 'hunter2!' })).ok, true);
    assert.deepEqual(fakes.input.unlockPasswords, ['hunter2!'], 'the password reaches input-daemon as typed');
    await waitFor(() => c.lastSnapshot()?.input?.locked === false);
    const ev = [
      [1, 30, 1],
      [0, 0, 0],
    ];
    assert.equal((await c.request('injectInput', { deviceClass: 'keyboard', events: ev })).ok, true);
    assert.deepEqual(fakes.input.injected.at(-1), ['keyboard', ev]);
  } finally {
    c.close();
  }
});

test('thumbnails of running VMs are pushed only while a renderer shows the tiles', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    await c.request('setThumbnailsVisible', { visible: true });
    await waitFor(() => c.pushes.some((p) => p.push === 'thumbnail'));
    const t = c.pushes.find((p) => p.push === 'thumbnail')!.payload as { vm: string; png: string };
    assert.equal(Buffer.from(t.png, 'base64').subarray(1, 4).toString(), 'PNG');
    await c.request('setThumbnailsVisible', { visible: false });
    await new Promise((r) => setTimeout(r, 300));
    const n = c.pushes.filter((p) => p.push === 'thumbnail').length;
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(c.pushes.filter((p) => p.push === 'thumbnail').length, n);
  } finally {
    c.close();
  }
});

test('an unchanged VM screen is not pushed again; a renderer that starts looking gets every screen', async () => {
  const c = await Client.open(wsUrl(host.token));
  const thumbs = () =>
    c.pushes.filter((p) => p.push === 'thumbnail').map((p) => (p.payload as { vm: string }).vm);
  try {
    await c.request('setThumbnailsVisible', { visible: true });
    await waitFor(() => thumbs().length > 0);
    // The fakes' screens never change: several rounds (200 ms apart) push each VM once.
    await new Promise((r) => setTimeout(r, 1000));
    const first = thumbs();
    assert.deepEqual([...new Set(first)], first, `each VM once: ${first.join(', ')}`);
    await c.request('setThumbnailsVisible', { visible: false });
    await c.request('setThumbnailsVisible', { visible: true });
    await waitFor(() => thumbs().length === 2 * first.length);
  } finally {
    c.close();
  }
});

test('vm-daemon going away is shown as down with no VMs; it recovers by itself when it comes back', async () => {
  const c = await Client.open(wsUrl(host.token));
  try {
    await waitFor(() => c.lastSnapshot()?.daemons.vmManager.up === true);
    fakes.stop('vmManager');
    await waitFor(() => c.lastSnapshot()?.daemons.vmManager.up === false);
    assert.deepEqual(c.lastSnapshot()?.vms, []);
    const r = await c.request('switchTo', { vm: vmPath('personal') });
    assert.equal((r as { error: { name: string } }).error.name, 'ServiceDown');
    await fakes.start('vmManager');
    await waitFor(
      () => c.lastSnapshot()?.daemons.vmManager.up === true && c.lastSnapshot()?.vms.length === 2,
    );
    assert.equal((await c.request('switchTo', { vm: '/' })).ok, true);
  } finally {
    c.close();
  }
});

test('--listen: another loopback address only (guests on user networking reach 127.0.0.1), never a network one', async () => {
  const other = await startWebHost({ busAddress: bus.address, log: () => undefined, listen: '127.0.0.2' });
  try {
    assert.match(other.url, /^http:\/\/127\.0\.0\.2:\d+\/\?token=/);
    const res = await fetch(other.url);
    assert.equal(res.status, 200);
    assert.match(
      res.headers.get('content-security-policy') ?? '',
      /connect-src 'self' ws:\/\/127\.0\.0\.2:\*/,
    );
    await assert.rejects(fetch(`http://127.0.0.1:${other.port}/`), 'nothing on 127.0.0.1 at that port');
    // The page's channel works from the address it was loaded from.
    const token = new URL(other.url).searchParams.get('token')!;
    const c = await Client.open(`ws://127.0.0.2:${other.port}/ws?token=${token}`);
    c.close();
  } finally {
    await other.close();
  }
  for (const listen of ['0.0.0.0', '10.0.2.15', '::', 'localhost', '127.0.0.256'])
    await assert.rejects(
      startWebHost({ busAddress: bus.address, log: () => undefined, listen }),
      /is not a loopback address/,
      listen,
    );
});
