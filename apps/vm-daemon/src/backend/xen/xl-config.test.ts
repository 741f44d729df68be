import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import { loadConfigDir, type VmDefinition } from '../../config';
import { generateXlConfig } from './xl-config';
import {
  XEN_INPUT_PATH,
  defaultXenOptions,
  loadXenOptions,
  parseXenOptions,
  xenDefinitionProblem,
} from './xen-options';

const def = (over: Partial<VmDefinition> = {}): VmDefinition => ({
  id: 'personal',
  name: 'Personal',
  slot: 1,
  kind: 'personal',
  color: '#2a6fdb',
  icon: '',
  memoryMiB: 128,
  vcpus: 2,
  disks: [],
  network: { mode: 'none' },
  autostart: false,
  gpu: null,
  usbAutoAttach: false,
  display: 'none',
  backend: 'xen',
  kernel: '/boot/vmlinuz',
  append: 'console=hvc0 guestname=personal',
  file: '/etc/bulkhead/vms/personal.json',
  ...over,
});
const lines = (cfg: string) => cfg.split('\n');

test('PV config: kernel, ramdisk, cmdline, memory, vcpus, lifecycle actions', () => {
  const opts = { ...defaultXenOptions(def()), ramdisk: '/boot/guest.cpio.gz' };
  const cfg = generateXlConfig(def(), opts, { runDir: '/run/bulkhead/vms/personal' });
  for (const l of [
    'name = "personal"',
    'type = "pv"',
    'memory = 128',
    'maxmem = 128',
    'vcpus = 2',
    'kernel = "/boot/vmlinuz"',
    'ramdisk = "/boot/guest.cpio.gz"',
    'cmdline = "console=hvc0 guestname=personal"',
    'on_crash = "coredump-destroy"',
    'on_poweroff = "destroy"',
  ])
    assert.ok(lines(cfg).includes(l), `missing '${l}' in\n${cfg}`);
  assert.ok(!cfg.includes('usbctrl'), 'PV gets no USB controller by default');
  assert.ok(!cfg.includes('tsc_mode'), 'tsc_mode is for HVM');
  assert.ok(!cfg.includes('passthrough'));
});

test('PVH config and a PV/PVH definition without kernel is refused with file and field', () => {
  const cfg = generateXlConfig(def(), defaultXenOptions(def(), 'pvh'), { runDir: '/r' });
  assert.ok(lines(cfg).includes('type = "pvh"'));
  assert.throws(
    () =>
      generateXlConfig(def({ kernel: null, append: '' }), defaultXenOptions(def(), 'pvh'), { runDir: '/r' }),
    (e: BulkheadError) =>
      e.errorName === 'InvalidConfig' && /personal\.json: kernel: a PVH guest needs a kernel/.test(e.message),
  );
});

test('HVM config: TCG needs (tsc_mode native), devicemodel usbctrl, our own QMP sockets, serial log', () => {
  const d = def({ kernel: null, append: '' });
  const cfg = generateXlConfig(d, defaultXenOptions(d), { runDir: '/run/vms/personal' });
  for (const l of [
    'type = "hvm"',
    'tsc_mode = "native"',
    'acpi = 1',
    'usbctrl = [ "type=devicemodel,version=2,ports=6" ]',
    'serial = "file:/run/vms/personal/serial.log"',
    'device_model_args_hvm = [ "-qmp", "unix:/run/vms/personal/qmp.sock,server=on,wait=off", "-qmp", "unix:/run/vms/personal/input-qmp.sock,server=on,wait=off" ]',
  ])
    assert.ok(lines(cfg).includes(l), `missing '${l}' in\n${cfg}`);
  assert.ok(!cfg.includes('kernel ='));
});

test('disks: VHD is format=vhd on qdisk, raw stays raw, readonly is access=ro, HVM names hdX', () => {
  const disks: VmDefinition['disks'] = [
    { path: '/vm/sys.vhd', format: 'vpc', readonly: false, sizeMiB: null },
    { path: '/vm/data.img', format: 'raw', readonly: true, sizeMiB: null },
    { path: '/vm/q.qcow2', format: 'qcow2', readonly: false, sizeMiB: null },
  ];
  const cfg = generateXlConfig(def({ disks }), defaultXenOptions(def()), { runDir: '/r' });
  assert.ok(
    cfg.includes(
      'disk = [ "format=vhd,vdev=xvda,access=rw,backendtype=qdisk,target=/vm/sys.vhd", "format=raw,vdev=xvdb,access=ro,target=/vm/data.img", "format=qcow2,vdev=xvdc,access=rw,backendtype=qdisk,target=/vm/q.qcow2" ]',
    ),
    cfg,
  );
  const hvm = generateXlConfig(
    def({ disks: disks.slice(0, 1), kernel: null, append: '' }),
    defaultXenOptions(def({ kernel: null })),
    { runDir: '/r' },
  );
  assert.ok(hvm.includes('vdev=hda'));
  assert.throws(
    () =>
      generateXlConfig(
        def({ disks: [{ path: '/vm/x.vhdx', format: 'vhdx', readonly: false, sizeMiB: null }] }),
        defaultXenOptions(def()),
        { runDir: '/r' },
      ),
    (e: BulkheadError) =>
      e.errorName === 'InvalidConfig' && /disks\[0\]\.format: vhdx is not supported by xl/.test(e.message),
  );
});

test('pci: permanent devices go to pci=[], the GPU only enables passthrough (the hand-off moves it)', () => {
  const d = def({ gpu: { pci: ['0000:00:03.0'], handoff: false } });
  const cfg = generateXlConfig(d, { ...defaultXenOptions(d), pci: ['0000:00:04.0'] }, { runDir: '/r' });
  assert.ok(lines(cfg).includes('pci = [ "0000:00:04.0" ]'), cfg);
  assert.ok(lines(cfg).includes('passthrough = "enabled"'));
  assert.ok(!cfg.includes('0000:00:03.0'), 'the GPU is never in the create-time config');
});

test('PV and PVH get a QEMU-served virtual keyboard/pointer and framebuffer with our QMP sockets (screenshots, input); HVM keeps its device model', () => {
  for (const type of ['pv', 'pvh'] as const) {
    const cfg = generateXlConfig(def(), defaultXenOptions(def(), type), { runDir: '/run/vms/personal' });
    for (const l of [
      // The vfb is what makes libxl 4.17 start the QEMU that serves the vkbd.
      'vfb = [ "vnc=0,sdl=0" ]',
      'vkb = [ "backend-type=qemu" ]',
      'device_model_args_pv = [ "-qmp", "unix:/run/vms/personal/qmp.sock,server=on,wait=off", "-qmp", "unix:/run/vms/personal/input-qmp.sock,server=on,wait=off" ]',
    ])
      assert.ok(lines(cfg).includes(l), `${type}: missing '${l}' in\n${cfg}`);
    assert.ok(!cfg.includes('device_model_args_hvm'), `${type}: no HVM device model`);
  }
  const hvm = generateXlConfig(def({ kernel: null, append: '' }), defaultXenOptions(def({ kernel: null })), {
    runDir: '/r',
  });
  assert.ok(!hvm.includes('vkb ='), 'HVM: input through its own device model');
  assert.ok(!hvm.includes('device_model_args_pv'));
});

test("display 'vnc': a PV/PVH guest's framebuffer is exported as VNC on <runDir>/vnc.sock by the QEMU serving its vfb; 'none' exports nothing", () => {
  for (const type of ['pv', 'pvh'] as const) {
    const cfg = generateXlConfig(def({ display: 'vnc' }), defaultXenOptions(def(), type), { runDir: '/r' });
    assert.ok(
      lines(cfg).includes(
        'device_model_args_pv = [ "-qmp", "unix:/r/qmp.sock,server=on,wait=off", "-qmp", "unix:/r/input-qmp.sock,server=on,wait=off", "-vnc", "unix:/r/vnc.sock" ]',
      ),
      cfg,
    );
    assert.ok(lines(cfg).includes('vfb = [ "vnc=0,sdl=0" ]'), 'never a TCP display');
    assert.ok(!generateXlConfig(def(), defaultXenOptions(def(), type), { runDir: '/r' }).includes('-vnc'));
  }
});

test('USB on PV/PVH is refused with the reason, in the sidecar and in the config; bridge networking is a vif; user networking is refused', () => {
  for (const type of ['pv', 'pvh'])
    assert.throws(
      () =>
        parseXenOptions('/x/a.xen', `{"type":"${type}","usbctrl":{"version":2,"ports":4}}`, { kernel: '/k' }),
      (e: BulkheadError) =>
        e.errorName === 'InvalidConfig' &&
        new RegExp(
          `^/x/a\\.xen: usbctrl: a ${type.toUpperCase()} guest cannot take USB devices .*CONFIG_USB_XEN_HCD`,
        ).test(e.message),
    );
  const d = def({ network: { mode: 'bridge', bridge: 'xenbr0' } });
  assert.throws(
    () =>
      generateXlConfig(d, { ...defaultXenOptions(d), usbctrl: { version: 2, ports: 4 } }, { runDir: '/r' }),
    (e: BulkheadError) =>
      e.errorName === 'InvalidConfig' &&
      /personal\.json: usbctrl: a PV guest cannot take USB/.test(e.message),
  );
  const cfg = generateXlConfig(d, defaultXenOptions(d), { runDir: '/r' });
  assert.ok(lines(cfg).includes('vif = [ "bridge=xenbr0" ]'));
  assert.throws(
    () => generateXlConfig(def({ network: { mode: 'user' } }), defaultXenOptions(def()), { runDir: '/r' }),
    /network: 'user' networking is QEMU-only/,
  );
});

test('strings are quoted for xl; newlines are refused', () => {
  const cfg = generateXlConfig(def({ append: 'a="b c" d\\e' }), defaultXenOptions(def()), { runDir: '/r' });
  assert.ok(lines(cfg).includes('cmdline = "a=\\"b c\\" d\\\\e"'), cfg);
  assert.throws(
    () => generateXlConfig(def({ append: 'x\ny' }), defaultXenOptions(def()), { runDir: '/r' }),
    /append: must not contain a newline/,
  );
});

test('sidecar options: parsed, defaults by kernel presence, bad fields named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xenopts-'));
  const file = join(dir, 'work.json');
  assert.equal(loadXenOptions({ file, kernel: null }).type, 'hvm');
  assert.equal(loadXenOptions({ file, kernel: '/k' }).type, 'pv');
  writeFileSync(
    join(dir, 'work.xen'),
    JSON.stringify({
      type: 'hvm',
      ramdisk: 'g.cpio',
      usbctrl: { version: 3, ports: 8 },
      pci: ['0000:00:04.0'],
    }),
  );
  const o = loadXenOptions({ file, kernel: '/k' });
  assert.deepEqual(o, {
    type: 'hvm',
    ramdisk: join(dir, 'g.cpio'),
    usbctrl: { version: 3, ports: 8 },
    pci: ['0000:00:04.0'],
    serialLog: true,
    deviceModelArgs: [],
  });
  assert.throws(
    () => parseXenOptions('/x/a.xen', '{"type":"kvm"}', { kernel: null }),
    /\/x\/a\.xen: type: must be pv, pvh or hvm, got "kvm"/,
  );
  assert.throws(() => parseXenOptions('/x/a.xen', '{"typo":1}', { kernel: null }), /typo: unknown field/);
  assert.throws(
    () => parseXenOptions('/x/a.xen', '{"usbctrl":{"ports":99}}', { kernel: null }),
    /usbctrl\.ports: must be an integer from 1 to 31/,
  );
  assert.throws(() => parseXenOptions('/x/a.xen', '{', { kernel: null }), /\(file\): not valid JSON/);
  assert.equal(parseXenOptions('/x/a.xen', '{"usbctrl":null}', { kernel: null }).usbctrl, null);
});

test('deviceModelArgs go to the device model after the QMP monitors (HVM) or to the PV input QEMU; refused when malformed', () => {
  const opts = parseXenOptions(
    '/x/a.xen',
    '{"type":"hvm","deviceModelArgs":["-global","fw_cfg_io.dma_enabled=off"]}',
    { kernel: null },
  );
  const cfg = generateXlConfig(def({ kernel: null, append: '' }), opts, { runDir: '/r' });
  const dm = lines(cfg).find((l) => l.startsWith('device_model_args_hvm'));
  assert.match(
    dm ?? '',
    /"-qmp", "unix:\/r\/input-qmp\.sock,server=on,wait=off", "-global", "fw_cfg_io\.dma_enabled=off" \]$/,
  );
  const pv = parseXenOptions('/x/a.xen', '{"type":"pv","deviceModelArgs":["-trace","xenfb_*"]}', {
    kernel: '/k',
  });
  assert.ok(
    lines(generateXlConfig(def(), pv, { runDir: '/r' })).includes(
      'device_model_args_pv = [ "-qmp", "unix:/r/qmp.sock,server=on,wait=off", "-qmp", "unix:/r/input-qmp.sock,server=on,wait=off", "-trace", "xenfb_*" ]',
    ),
  );
  assert.throws(
    () => parseXenOptions('/x/a.xen', '{"type":"hvm","deviceModelArgs":["a\\"b"]}', { kernel: null }),
    /deviceModelArgs: must be an array of non-empty strings/,
  );
});

test('HVM with display none gets no emulated VGA; with vnc it keeps stdvga (screenshots)', () => {
  const hvm = defaultXenOptions(def({ kernel: null }), 'hvm');
  assert.ok(
    lines(
      generateXlConfig(def({ kernel: null, append: '', display: 'none' }), hvm, { runDir: '/r' }),
    ).includes('vga = "none"'),
  );
  assert.ok(
    lines(
      generateXlConfig(def({ kernel: null, append: '', display: 'vnc' }), hvm, { runDir: '/r' }),
    ).includes('vga = "stdvga"'),
  );
});

test("a Xen file is checked when it is loaded: a bad sidecar or a PV guest without a kernel is the file's ConfigError and the VM is not loaded", () => {
  const dir = mkdtempSync(join(tmpdir(), 'xenload-'));
  const vm = (id: string, slot: number, extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      id,
      name: id,
      slot,
      kind: 'business',
      color: '#123456',
      memoryMiB: 64,
      backend: 'xen',
      ...extra,
    });
  writeFileSync(join(dir, 'k'), 'kernel');
  writeFileSync(join(dir, 'pv.json'), vm('pv', 1, { kernel: 'k' }));
  writeFileSync(join(dir, 'pv.xen'), '{"type":"pv"}');
  writeFileSync(join(dir, 'hvm.json'), vm('hvm', 2, { kernel: 'k' }));
  writeFileSync(join(dir, 'hvm.xen'), '{"type":"hvm","usbctrl":{"version":2,"ports":6}}');
  writeFileSync(join(dir, 'pvusb.json'), vm('pvusb', 3, { kernel: 'k' }));
  writeFileSync(join(dir, 'pvusb.xen'), '{"type":"pv","usbctrl":{"version":2,"ports":6}}');
  writeFileSync(join(dir, 'nokernel.json'), vm('nokernel', 4));
  writeFileSync(join(dir, 'nokernel.xen'), '{"type":"pvh"}');
  writeFileSync(join(dir, 'kvm.json'), vm('kvm', 5));
  writeFileSync(join(dir, 'kvm.xen'), '{"type":"kvm"}');
  const r = loadConfigDir(dir, { check: xenDefinitionProblem });
  assert.deepEqual(r.vms.map((v) => v.id).sort(), ['hvm', 'pv'], JSON.stringify(r.errors));
  const errs = Object.fromEntries(
    r.errors.map((e) => [e.file.slice(dir.length + 1), `${e.field}: ${e.reason}`]),
  );
  assert.match(errs['pvusb.xen'], /^usbctrl: a PV guest cannot take USB devices/);
  assert.match(errs['nokernel.json'], /^kernel: a PVH guest needs a kernel/);
  assert.match(errs['kvm.xen'], /^type: must be pv, pvh or hvm, got "kvm"/);
  assert.equal(Object.keys(errs).length, 3, JSON.stringify(errs));
  // Without the check (another backend's daemon, or before this check existed) all five load.
  assert.equal(loadConfigDir(dir).vms.length, 5);
  // Every kind the sidecar may name has an input path (else it would be refused here too).
  for (const t of ['pv', 'pvh', 'hvm'] as const) assert.ok(XEN_INPUT_PATH[t]);
});
