/** The typed dicts generated from org.bulkhead.Dict: what a producer sends and a reader gets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Variant } from 'dbus-next';
import { ContractValueError } from './contract-values';
import { decodeLastSwitch, encodeLastSwitch, type LastSwitch } from './generated';

const good: LastSwitch = {
  from: '/',
  target: '/org/bulkhead/VmManager1/vm/personal',
  outcome: 'rolled-back',
  error: 'org.bulkhead.Error.BackendFailed',
  message: 'fake SetFocus failure',
  started_usec: 1_700_000_000_000_000n,
  duration_usec: 1234n,
  steps: [['freeze-input', 10n]],
  skipped: ['move-gpu'],
};

const throwsNaming = (fn: () => unknown, where: RegExp, problem: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ContractValueError, `a ContractValueError, got ${String(e)}`);
    assert.match(e.where, where);
    assert.match(e.message, problem);
    return true;
  });

test('LastSwitch encodes to the a{sv} the XML declares and decodes back unchanged', () => {
  const dict = encodeLastSwitch(good);
  assert.equal(dict.outcome.signature, 's');
  assert.equal(dict.started_usec.signature, 't');
  assert.equal(dict.steps.signature, 'a(st)');
  assert.deepEqual(decodeLastSwitch(dict), good);
  // dbus-next may hand over values already unwrapped from their Variants
  const unwrapped = Object.fromEntries(Object.entries(dict).map(([k, v]) => [k, v.value]));
  assert.deepEqual(decodeLastSwitch(unwrapped), good);
});

test('a malformed LastSwitch is refused with an error naming the key and the problem', () => {
  const dict = encodeLastSwitch(good);
  const without = (k: string) => Object.fromEntries(Object.entries(dict).filter(([key]) => key !== k));
  throwsNaming(() => decodeLastSwitch(without('skipped')), /LastSwitch\.skipped$/, /missing/);
  throwsNaming(
    () => decodeLastSwitch({ ...dict, outcome: new Variant('s', 'rolled_back') }),
    /LastSwitch\.outcome$/,
    /one of ok, rolled-back, failed.*rolled_back/,
  );
  throwsNaming(
    () => decodeLastSwitch({ ...dict, duration_usec: new Variant('s', '12') }),
    /LastSwitch\.duration_usec$/,
    /expected D-Bus t, got s/,
  );
  throwsNaming(
    () => decodeLastSwitch({ ...dict, steps: new Variant('a(st)', [['x', 'soon']]) }),
    /LastSwitch\.steps\[0\]\[1\]$/,
    /integer/,
  );
  throwsNaming(() => decodeLastSwitch('ok'), /LastSwitch$/, /a dict/);
});

test('a producer cannot put a value the contract does not allow on the bus', () => {
  throwsNaming(
    () => encodeLastSwitch({ ...good, outcome: 'partly' as LastSwitch['outcome'] }),
    /LastSwitch\.outcome$/,
    /one of/,
  );
  throwsNaming(() => encodeLastSwitch({ ...good, target: 'personal' }), /LastSwitch\.target$/, /object path/);
  throwsNaming(
    () => encodeLastSwitch({ ...good, extra: 1 } as LastSwitch),
    /LastSwitch\.extra$/,
    /not a key/,
  );
});
