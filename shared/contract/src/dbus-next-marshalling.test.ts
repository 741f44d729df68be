/**
 * The changes to dbus-next's marshalling (dbus-next-marshalling.ts) write the same bytes as before,
 * and dbus-next really uses them when the packages are loaded the way the daemons load them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
// As a daemon: the package first (it loads dbus-next after changing it), then dbus-next.
import { GrowableBufferWriter, marshallingChanges } from './index';
import { cachingParser, originalPut, SIGNATURE_CACHE_MAX } from './dbus-next-marshalling';
import { Message, Variant } from 'dbus-next';

type Op = ['put', number[]] | ['word8' | 'word16le' | 'word32le', number];

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.tuple(fc.constant('put' as const), fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 300 })),
  fc.tuple(
    fc.constantFrom('word8' as const, 'word16le' as const, 'word32le' as const),
    fc.oneof(
      fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 }),
      fc.constantFrom(0, 255, 256, 65535, 65536, -1, 2 ** 31, 2 ** 32 - 1),
    ),
  ),
);

test('the growable writer writes the same bytes as @nornagon/put for any sequence of the calls dbus-next makes', () => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const ours = new GrowableBufferWriter();
      const theirs = originalPut() as Record<string, (x: unknown) => unknown> & {
        buffer(): Buffer;
        length(): number;
      };
      for (const [name, arg] of ops) {
        const x = name === 'put' ? Buffer.from(arg) : arg;
        ours[name](x as never);
        theirs[name](x);
      }
      assert.equal(ours.length(), theirs.length());
      assert.deepEqual(ours.buffer(), theirs.buffer());
    }),
    { numRuns: 500, seed: 17 },
  );
});

test("dbus-next's marshaller uses the writer and the signature cache, and a message survives the round trip", () => {
  const before = marshallingChanges();
  assert.equal(before.tooLate, false, 'dbus-next loaded after @bulkhead/contract');
  const body = [
    'org.bulkhead.VmManager1',
    {
      LastSwitch: new Variant('a{sv}', {
        outcome: new Variant('s', 'ok'),
        steps: new Variant('a(st)', [
          ['freeze-input', 120n],
          ['focus-input', 340n],
        ]),
      }),
      Slot: new Variant('u', 3),
    },
    ['Switching'],
  ];
  const msg = new Message({
    type: 4, // signal
    path: '/org/bulkhead/VmManager1',
    interface: 'org.freedesktop.DBus.Properties',
    member: 'PropertiesChanged',
    signature: 'sa{sv}as',
    body,
    serial: 7,
  });
  const bytes = marshal(msg);
  const after = marshallingChanges();
  assert.ok(after.writersMade > before.writersMade, 'the marshaller made its writers with ours');
  assert.ok(after.signaturesCached > 0, 'signatures parsed once are cached');
  const back = unmarshal(bytes);
  assert.equal(back.member, 'PropertiesChanged');
  assert.equal(back.signature, 'sa{sv}as');
  assert.equal(back.body[0], 'org.bulkhead.VmManager1');
  assert.deepEqual(back.body[2], ['Switching']);
  const props = back.body[1] as Record<string, Variant>;
  assert.equal(props.Slot.value, 3);
  const last = props.LastSwitch.value as Record<string, Variant>;
  assert.equal(last.outcome.value, 'ok');
  assert.deepEqual(last.steps.value, [
    ['freeze-input', 120n],
    ['focus-input', 340n],
  ]);
});

test('a cached signature tree is frozen (no caller changes what the next one gets), a bad one throws each time, and the cache stays bounded', () => {
  let parses = 0;
  const parse = cachingParser((s: string) => {
    parses++;
    if (s.includes('!')) throw new Error(`Unknown type: "!" in signature "${s}"`);
    return [{ type: s[0], child: [] }];
  });
  const t = parse('s');
  assert.equal(parse('s'), t);
  assert.equal(parses, 1);
  assert.throws(() => ((t[0] as { type: string }).type = 'u'), TypeError);
  assert.throws(() => parse('a!'), /Unknown type/);
  assert.throws(() => parse('a!'), /Unknown type/);
  assert.equal(parses, 3, 'a bad signature is not cached');
  for (let i = 0; i < SIGNATURE_CACHE_MAX * 3; i++) parse(`(s${i})`);
  assert.ok(parse.cacheSize() <= SIGNATURE_CACHE_MAX);
});

/* dbus-next's own wire functions, reached as its connection does (no types: not its public API). */
/* eslint-disable @typescript-eslint/no-require-imports */
function marshal(m: Message): Buffer {
  const compat = require('dbus-next/lib/marshall-compat') as {
    marshallMessage(m: Message): [Buffer, unknown];
  };
  return compat.marshallMessage(m)[0];
}

function unmarshal(b: Buffer): Message {
  const wire = require('dbus-next/lib/message') as { unmarshall(b: Buffer): Message };
  const compat = require('dbus-next/lib/marshall-compat') as { messageToJsFmt(m: Message): Message };
  return compat.messageToJsFmt(wire.unmarshall(b));
}
/* eslint-enable @typescript-eslint/no-require-imports */
