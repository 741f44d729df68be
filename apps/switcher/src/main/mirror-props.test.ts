/**
 * The switcher's mirrors keep every property the daemons publish: each one of the contract's
 * Vm1 and UsbDevice1 properties, given a value unlike its default, arrives in the model.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CONTRACT, encodeLastSwitch } from '@bulkhead/contract';
import { vmFromProps, lastSwitchFromDict } from './vm-manager-mirror';
import { usbFromProps } from './usb-mirror';

/** A value of D-Bus type `t` that no model default equals, and how the model holds it. */
function sample(t: string, enumValues?: readonly string[]): [wire: unknown, model: unknown] {
  if (enumValues) return [enumValues[enumValues.length - 1], enumValues[enumValues.length - 1]];
  switch (t) {
    case 's':
      return ['sample text', 'sample text'];
    case 'o':
      return ['/sample/path', '/sample/path'];
    case 'b':
      return [true, true];
    case 'y':
    case 'q':
    case 'u':
    case 'i':
      return [7, 7];
    case 't':
    case 'x':
      return [7n, 7];
    case 'as':
      return [
        ['a', 'b'],
        ['a', 'b'],
      ];
  }
  return [[], []];
}

/** Every property of `iface` with a sample value; and the model field name -> expected value. */
function everyProperty(iface: keyof typeof CONTRACT) {
  const props: Record<string, unknown> = {};
  const expected: Record<string, unknown> = {};
  for (const [name, p] of Object.entries(CONTRACT[iface].properties)) {
    const [wire, model] = sample(p.type);
    props[name] = wire;
    expected[name[0].toLowerCase() + name.slice(1)] = model;
  }
  return { props, expected };
}

test('vmFromProps maps every Vm1 property of the contract into the VM model', () => {
  const { props, expected } = everyProperty('org.bulkhead.Vm1');
  // Enum properties take a value of their enum.
  props.State = 'crashed';
  expected.state = 'crashed';
  props.Kind = 'service';
  expected.kind = 'service';
  props.Display = 'none';
  expected.display = 'none';
  const vm = vmFromProps('/org/bulkhead/VmManager1/vm/x', props) as unknown as Record<string, unknown>;
  for (const [field, value] of Object.entries(expected))
    assert.deepEqual(vm[field], value, `Vm1 property ${field} reaches the model`);
});

test('usbFromProps maps every UsbDevice1 property of the contract into the device model', () => {
  const { props, expected } = everyProperty('org.bulkhead.UsbDevice1');
  props.State = 'attached';
  expected.state = 'attached';
  const dev = usbFromProps('/org/bulkhead/Usb1/device/x', props) as unknown as Record<string, unknown>;
  for (const [field, value] of Object.entries(expected))
    assert.deepEqual(dev[field], value, `UsbDevice1 property ${field} reaches the model`);
});

test('LastSwitch reaches the model in milliseconds; a malformed one is dropped, not half-read', () => {
  const dict = encodeLastSwitch({
    from: '/',
    target: '/org/bulkhead/VmManager1/vm/personal',
    outcome: 'ok',
    error: '',
    message: '',
    started_usec: 5_000_000n,
    duration_usec: 2500n,
    steps: [['move-gpu', 1500n]],
    skipped: [],
  });
  const unwrapped = Object.fromEntries(Object.entries(dict).map(([k, v]) => [k, v.value]));
  assert.deepEqual(lastSwitchFromDict(unwrapped), {
    from: '/',
    target: '/org/bulkhead/VmManager1/vm/personal',
    outcome: 'ok',
    error: '',
    startedMs: 5000,
    durationMs: 2.5,
    steps: [['move-gpu', 1.5]],
  });
  assert.equal(lastSwitchFromDict({}), null, 'no switch yet');
  const errors: string[] = [];
  const orig = console.error;
  console.error = (m: string) => errors.push(m);
  try {
    assert.equal(lastSwitchFromDict({ ...unwrapped, outcome: 'maybe' }), null);
  } finally {
    console.error = orig;
  }
  assert.match(errors.join('\n'), /LastSwitch\.outcome/, 'the error names the key');
});
