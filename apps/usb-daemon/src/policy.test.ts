import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allClasses, deviceId, type UsbDeviceInfo } from './device';
import {
  assignRefusal,
  decideNewDevice,
  formatRules,
  parseRules,
  policyDeviceOf,
  stickyRefusal,
  stickyRule,
  RulesError,
  type PolicyContext,
  type Rule,
} from './policy';
import { KEYBOARD_INTERFACE, MOUSE_INTERFACE, fakeDevice } from './testing/fake-usb-enumerator';

const stick = fakeDevice({ address: 2, port: '1-2', serial: 'AA01' });
const keyboard = fakeDevice({
  address: 3,
  port: '1-3',
  vendorId: 0x046d,
  productId: 0xc31c,
  serial: '',
  interfaces: [KEYBOARD_INTERFACE],
});
const mouse = fakeDevice({
  address: 4,
  port: '1-4',
  vendorId: 0x046d,
  productId: 0xc077,
  serial: '',
  interfaces: [MOUSE_INTERFACE],
});
const webcam = fakeDevice({
  address: 5,
  port: '1-5',
  vendorId: 0x046d,
  productId: 0x0825,
  serial: 'CAM',
  interfaces: [
    { classCode: 0x0e, subclass: 1, protocol: 0 },
    { classCode: 0x01, subclass: 1, protocol: 0 },
  ],
});
const hub = fakeDevice({
  address: 6,
  port: '1-6',
  serial: '',
  deviceCodes: { classCode: 9, subclass: 0, protocol: 0 },
  interfaces: [{ classCode: 9, subclass: 0, protocol: 0 }],
});

const vms = new Map([
  ['work', { running: true, usbAutoAttach: true }],
  ['home', { running: true, usbAutoAttach: false }],
  ['off', { running: false, usbAutoAttach: true }],
]);
const focus = (vm: string | null): PolicyContext => ({ focusedVm: vm, vms });
const rules = (text: object[]): Rule[] => parseRules(JSON.stringify({ rules: text }));

interface Row {
  name: string;
  device: UsbDeviceInfo;
  rules: Rule[];
  focused: string | null;
  want: { kind: string; vm?: string; rule?: number | null };
}

const table: Row[] = [
  {
    name: 'no rules: a stick goes to the focused VM with UsbAutoAttach',
    device: stick,
    rules: [],
    focused: 'work',
    want: { kind: 'attach', vm: 'work', rule: null },
  },
  {
    name: 'no rules: never to the switcher',
    device: stick,
    rules: [],
    focused: null,
    want: { kind: 'wait' },
  },
  {
    name: 'no rules: focused VM without UsbAutoAttach keeps it in the Control Domain',
    device: stick,
    rules: [],
    focused: 'home',
    want: { kind: 'wait' },
  },
  {
    name: 'keyboards default to input-daemon',
    device: keyboard,
    rules: [],
    focused: 'work',
    want: { kind: 'input' },
  },
  {
    name: 'mice default to input-daemon',
    device: mouse,
    rules: [],
    focused: 'work',
    want: { kind: 'input' },
  },
  {
    name: 'a catch-all allow does not pass a keyboard through',
    device: keyboard,
    rules: rules([{ action: 'allow' }]),
    focused: 'work',
    want: { kind: 'input' },
  },
  {
    name: 'a rule naming keyboards passes one through',
    device: keyboard,
    rules: rules([{ match: { classes: ['keyboard'] }, action: 'allow' }]),
    focused: 'work',
    want: { kind: 'attach', vm: 'work', rule: 0 },
  },
  {
    name: 'sticky beats focus',
    device: stick,
    rules: rules([{ match: { vid: '0781', pid: '5567', serial: 'AA01' }, action: 'always', vm: 'home' }]),
    focused: 'work',
    want: { kind: 'attach', vm: 'home', rule: 0 },
  },
  {
    name: 'sticky to a stopped VM waits',
    device: stick,
    rules: rules([{ match: { serial: 'AA01' }, action: 'always', vm: 'off' }]),
    focused: 'work',
    want: { kind: 'wait' },
  },
  {
    name: 'deny beats a later allow',
    device: stick,
    rules: rules([{ match: { classes: ['storage'] }, action: 'deny' }, { action: 'allow' }]),
    focused: 'work',
    want: { kind: 'reject', rule: 0 },
  },
  {
    name: 'an earlier allow beats a later deny',
    device: stick,
    rules: rules([
      { match: { vid: '0781' }, action: 'allow' },
      { match: { classes: ['storage'] }, action: 'deny' },
    ]),
    focused: 'work',
    want: { kind: 'attach', vm: 'work', rule: 0 },
  },
  {
    name: 'deny for one VM only (match.vm) lets other VMs have it',
    device: stick,
    rules: rules([{ match: { classes: ['storage'], vm: 'home' }, action: 'deny' }]),
    focused: 'work',
    want: { kind: 'attach', vm: 'work', rule: null },
  },
  {
    name: 'deny for the focused VM applies',
    device: stick,
    rules: rules([{ match: { classes: ['storage'], vm: 'work' }, action: 'deny' }]),
    focused: 'work',
    want: { kind: 'reject', rule: 0 },
  },
  {
    name: 'ask targets the focused VM',
    device: webcam,
    rules: rules([{ match: { classes: ['video'] }, action: 'ask' }]),
    focused: 'home',
    want: { kind: 'ask', vm: 'home', rule: 0 },
  },
  {
    name: 'ask with its own vm',
    device: webcam,
    rules: rules([{ match: { interfaceClasses: ['audio'] }, action: 'ask', vm: 'work' }]),
    focused: null,
    want: { kind: 'ask', vm: 'work', rule: 0 },
  },
  {
    name: 'ask with the switcher focused and no vm waits',
    device: webcam,
    rules: rules([{ match: { classes: ['video'] }, action: 'ask' }]),
    focused: null,
    want: { kind: 'wait' },
  },
  {
    name: 'match by port',
    device: stick,
    rules: rules([
      { match: { port: '1-9' }, action: 'deny' },
      { match: { port: '1-2' }, action: 'always', vm: 'home' },
    ]),
    focused: 'work',
    want: { kind: 'attach', vm: 'home', rule: 1 },
  },
  {
    name: 'hubs stay in the Control Domain',
    device: hub,
    rules: [],
    focused: 'work',
    want: { kind: 'wait' },
  },
];

for (const row of table) {
  test(`policy: ${row.name}`, () => {
    const d = decideNewDevice(policyDeviceOf(row.device), row.rules, focus(row.focused));
    assert.equal(d.kind, row.want.kind, `got ${JSON.stringify(d)}`);
    if (row.want.vm !== undefined) assert.equal((d as { vm: string }).vm, row.want.vm);
    if (row.want.rule !== undefined) assert.equal((d as { rule: number | null }).rule, row.want.rule);
    assert.ok(d.reason.length > 0);
  });
}

test('policy: explicit Assign is refused for denied devices and for keyboards without a pass-through rule', () => {
  const deny = rules([{ match: { classes: ['storage'], vm: 'home' }, action: 'deny' }]);
  assert.match(assignRefusal(policyDeviceOf(stick), 'home', deny) ?? '', /rule 0 denies/);
  assert.equal(assignRefusal(policyDeviceOf(stick), 'work', deny), null);
  assert.match(assignRefusal(policyDeviceOf(keyboard), 'work', []) ?? '', /input-daemon/);
  assert.equal(
    assignRefusal(
      policyDeviceOf(keyboard),
      'work',
      rules([{ match: { vid: '046d', pid: 'c31c' }, action: 'allow' }]),
    ),
    null,
  );
});

test('policy: a serial-less device cannot be made sticky while an identical one is present', () => {
  const twinA = policyDeviceOf(fakeDevice({ address: 7, port: '1-7', serial: '' }));
  const twinB = policyDeviceOf(fakeDevice({ address: 8, port: '1-8', serial: '' }));
  const withSerial = policyDeviceOf(stick);
  assert.match(stickyRefusal(twinA, [twinA, twinB]) ?? '', /no serial number.*identical device.*1-8/);
  assert.equal(stickyRefusal(twinA, [twinA]), null);
  assert.equal(
    stickyRefusal(withSerial, [withSerial, policyDeviceOf(fakeDevice({ address: 9, serial: 'OTHER' }))]),
    null,
  );
  assert.deepEqual(stickyRule(withSerial, 'work'), {
    match: { vid: '0781', pid: '5567', serial: 'AA01' },
    action: 'always',
    vm: 'work',
    comment: 'sticky (SetSticky)',
  });
});

test('classes: HID boot protocol gives keyboard/mouse; webcam is video+audio; ids prefer the serial', () => {
  assert.deepEqual(allClasses(keyboard), ['hid', 'keyboard']);
  assert.deepEqual(allClasses(mouse), ['hid', 'mouse']);
  assert.deepEqual(allClasses(webcam), ['audio', 'video']);
  assert.deepEqual(allClasses(stick), ['storage']);
  assert.equal(deviceId(stick), '0781:5567:AA01');
  assert.equal(deviceId(keyboard), '046d:c31c@1-3');
});

const invalid: Array<{ name: string; text: string; index: number | null; field: string }> = [
  { name: 'malformed JSON', text: '{"rules": [', index: null, field: '(json)' },
  { name: 'not an object', text: '[]', index: null, field: '(document)' },
  { name: 'rules not an array', text: '{"rules": {}}', index: null, field: 'rules' },
  {
    name: 'unknown action',
    text: '{"rules": [{"action":"allow"},{"action":"permit"}]}',
    index: 1,
    field: 'action',
  },
  {
    name: 'bad vid',
    text: '{"rules": [{"action":"allow"},{"action":"allow"},{"match":{"vid":"12345"},"action":"deny"}]}',
    index: 2,
    field: 'match.vid',
  },
  {
    name: 'unknown class',
    text: '{"rules": [{"match":{"classes":["disk"]},"action":"deny"}]}',
    index: 0,
    field: 'match.classes',
  },
  {
    name: 'always without vm',
    text: '{"rules": [{"match":{"serial":"x"},"action":"always"}]}',
    index: 0,
    field: 'vm',
  },
  { name: 'vm on an allow rule', text: '{"rules": [{"action":"allow","vm":"work"}]}', index: 0, field: 'vm' },
  {
    name: 'bad port',
    text: '{"rules": [{"match":{"port":"usb1"},"action":"deny"}]}',
    index: 0,
    field: 'match.port',
  },
  {
    name: 'unknown match field',
    text: '{"rules": [{"match":{"product":"x"},"action":"deny"}]}',
    index: 0,
    field: 'match.product',
  },
];

for (const row of invalid) {
  test(`rules validation: ${row.name} is an error naming index and field`, () => {
    assert.throws(
      () => parseRules(row.text),
      (e: unknown) => {
        assert.ok(e instanceof RulesError, String(e));
        assert.equal(e.index, row.index);
        assert.equal(e.field, row.field);
        assert.match(
          e.message,
          new RegExp(
            `${row.index === null ? 'rules document' : `rule ${row.index}`}, field '${row.field.replace(/[()]/g, '\\$&')}'`,
          ),
        );
        return true;
      },
    );
  });
}

test('rules: formatRules round-trips and normalises hex to lower case', () => {
  const r = rules([
    { match: { vid: '0A5C', classes: ['wireless'] }, action: 'deny', comment: 'no Bluetooth' },
  ]);
  assert.equal(r[0].match.vid, '0a5c');
  assert.deepEqual(parseRules(formatRules(r)), r);
});
