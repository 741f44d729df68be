/**
 * Fuzz target for usb-daemon's rules files (fixed seed in policy.fuzz.test.ts, random under
 * `npm run fuzz`): random JSON, garbled text and mutations of a valid rules file. parseRules
 * answers valid rules or a RulesError naming the rule index and field — never another exception —
 * and accepted rules survive the round trip through the file format (what SetRules writes is what
 * the next start reads). The engine then decides every device without throwing, never gives a
 * keyboard/mouse away without a rule naming it, and never gives a device to the switcher.
 */
import fc from 'fast-check';
import { checkProperty, type FuzzTarget } from '@bulkhead/dbus/dist/testing/fuzz-target';
import { USB_CLASSES, type UsbClass } from './device';
import {
  RULE_ACTIONS,
  RulesError,
  assignRefusal,
  decideNewDevice,
  formatRules,
  parseRules,
  type PolicyDevice,
} from './policy';

const VALID = {
  rules: [
    {
      match: { vid: '0781', pid: '5567', serial: '4C530001' },
      action: 'always',
      vm: 'work',
      comment: 'stick',
    },
    { match: { classes: ['storage'], vm: 'banking' }, action: 'deny' },
    { match: { classes: ['video', 'audio'] }, action: 'ask' },
    { match: { interfaceClasses: ['keyboard'], port: '1-4' }, action: 'allow' },
    { match: { classes: ['wireless'] }, action: 'deny' },
  ],
};
const RULE_FIELDS = ['match', 'action', 'vm', 'comment', 'bogus'];
const MATCH_FIELDS = ['classes', 'interfaceClasses', 'vid', 'pid', 'serial', 'port', 'vm', 'bogus'];

const edgy: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    null,
    '',
    'ABCD',
    '0781',
    '781',
    'zzzz',
    '1-2.3',
    '1-',
    '-1',
    'work',
    'a b',
    '/',
    '.',
    [],
    ['storage'],
    ['keyboard'],
    ['nope'],
    {},
    0,
    true,
    'x'.repeat(300),
    ...RULE_ACTIONS,
    ...USB_CLASSES,
  ),
  fc.jsonValue({ maxDepth: 2 }),
);

type Edit = { rule: number; inMatch: boolean; field: string; value: unknown; del: boolean };
const edit: fc.Arbitrary<Edit> = fc.record({
  rule: fc.nat({ max: 6 }),
  inMatch: fc.boolean(),
  field: fc.constantFrom(...RULE_FIELDS, ...MATCH_FIELDS),
  value: edgy,
  del: fc.boolean(),
});

function applyEdits(edits: Edit[]): unknown {
  const doc = JSON.parse(JSON.stringify(VALID)) as { rules: Array<Record<string, unknown>> };
  for (const e of edits) {
    const r = doc.rules[e.rule % (doc.rules.length + 1)];
    if (!r) {
      doc.rules.push({ action: 'allow' });
      continue;
    }
    const target = e.inMatch ? ((r.match ??= {}) as Record<string, unknown>) : r;
    if (typeof target !== 'object' || target === null) continue;
    if (e.del) delete target[e.field];
    else target[e.field] = e.value;
  }
  return doc;
}

export const rulesText: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.array(edit, { minLength: 1, maxLength: 5 }).map((es) => JSON.stringify(applyEdits(es))),
  },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null') },
  { weight: 1, arbitrary: fc.string({ maxLength: 100 }) },
  {
    weight: 1,
    arbitrary: fc.nat().map((cut) => {
      const t = formatRules(VALID.rules as never);
      return t.slice(0, cut % t.length);
    }),
  },
);

const device: fc.Arbitrary<PolicyDevice> = fc.record({
  vendorId: fc.constantFrom(0x0781, 0x046d, 0x1234),
  productId: fc.constantFrom(0x5567, 0xc52b, 0x0001),
  serial: fc.constantFrom('', '4C530001', 'X'),
  port: fc.constantFrom('1-4', '1-2.3', '2-1'),
  classes: fc.subarray([...USB_CLASSES] as UsbClass[], { minLength: 1 }),
  interfaceClasses: fc.subarray([...USB_CLASSES] as UsbClass[]),
});

export const rulesProperty = fc.property(
  rulesText,
  device,
  fc.constantFrom(null, 'work', 'banking'),
  (text, dev, focused) => {
    let rules;
    try {
      rules = parseRules(text);
    } catch (e) {
      if (!(e instanceof RulesError))
        throw new Error(`parseRules threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
      if (!e.field) throw new Error(`RulesError without a field: ${e.message}`);
      if (!/^(rules document|rule \d+), field '/.test(e.message))
        throw new Error(`unclear message: ${e.message}`);
      return;
    }
    const again = parseRules(formatRules(rules));
    if (JSON.stringify(again) !== JSON.stringify(rules))
      throw new Error('rules do not survive the file round trip');
    const vms = new Map([
      ['work', { running: true, usbAutoAttach: true }],
      ['banking', { running: true, usbAutoAttach: false }],
    ]);
    const d = decideNewDevice(dev, rules, { focusedVm: focused, vms });
    if (d.kind === 'attach' || d.kind === 'ask') {
      if (d.vm === '/' || d.vm === '') throw new Error(`device given to the switcher: ${JSON.stringify(d)}`);
      if (!vms.get(d.vm)?.running)
        throw new Error(`device given to a VM that is not running: ${JSON.stringify(d)}`);
    }
    const input = dev.classes.includes('keyboard') || dev.classes.includes('mouse');
    if (input && (d.kind === 'attach' || d.kind === 'ask') && d.rule === null)
      throw new Error('a keyboard/mouse left input-daemon without a rule naming it');
    if (input && rules.length === 0 && assignRefusal(dev, 'work', rules) === null)
      throw new Error('Assign of a keyboard/mouse allowed with no rules');
  },
);

export const fuzzTargets: FuzzTarget[] = [
  { name: 'usb-daemon: rules file', run: (o) => checkProperty(rulesProperty, o) },
];
