/**
 * The USB policy engine: pure functions, no I/O. An ordered list of rules, first match wins.
 *
 * Rules file (JSON): { "rules": [ { "match": {...}, "action": "...", "vm": "...", "comment": "..." } ] }
 *   match (all given fields must hold; an empty or missing match matches every device):
 *     classes          any of these among the device's device+interface classes
 *     interfaceClasses any of these among its interface classes only
 *     vid, pid         4 hex digits
 *     serial           exact serial string
 *     port             exact port path, e.g. "1-2.3"
 *     vm               the VM the device would go to (the focused VM, or the rule's own vm)
 *   action:
 *     allow   the device may go to a VM; a new device goes to the focused VM if it has UsbAutoAttach
 *     deny    the device may not go to the VM (stays in the Control Domain, State 'rejected')
 *     always  the device always goes to 'vm' (sticky); needs "vm"
 *     ask     ask the person (AttachRequested) before giving it to 'vm' or else the focused VM
 *
 * Keyboards and mice belong to input-daemon: for them only rules that name them explicitly
 * (classes/interfaceClasses containing keyboard or mouse, or a vid, serial or port) count; every
 * other rule is skipped, and without such a rule they stay in the Control Domain (State 'input').
 * A device is never given to the switcher ('/').
 */
import { USB_CLASSES, allClasses, hex4, interfaceClasses, type UsbClass, type UsbDeviceInfo } from './device';

export const RULE_ACTIONS = ['allow', 'deny', 'always', 'ask'] as const;
export type RuleAction = (typeof RULE_ACTIONS)[number];

export interface RuleMatch {
  classes?: UsbClass[];
  interfaceClasses?: UsbClass[];
  /** Lower-case 4 hex digits. */
  vid?: string;
  pid?: string;
  serial?: string;
  port?: string;
  /** A VM id. */
  vm?: string;
}

export interface Rule {
  match: RuleMatch;
  action: RuleAction;
  /** Target VM id: required for 'always', optional for 'ask'. */
  vm?: string;
  comment?: string;
}

/** What the policy looks at in a device. */
export interface PolicyDevice {
  vendorId: number;
  productId: number;
  serial: string;
  port: string;
  classes: UsbClass[];
  interfaceClasses: UsbClass[];
}

export function policyDeviceOf(info: UsbDeviceInfo): PolicyDevice {
  return {
    vendorId: info.vendorId,
    productId: info.productId,
    serial: info.serial,
    port: info.port,
    classes: allClasses(info),
    interfaceClasses: interfaceClasses(info),
  };
}

export interface PolicyVm {
  running: boolean;
  usbAutoAttach: boolean;
}

export interface PolicyContext {
  /** The focused VM's id; null when the switcher has the focus. */
  focusedVm: string | null;
  vms: ReadonlyMap<string, PolicyVm>;
}

export type Decision =
  | { kind: 'input'; reason: string }
  | { kind: 'attach'; vm: string; rule: number | null; sticky: boolean; reason: string }
  | { kind: 'ask'; vm: string; rule: number; reason: string }
  | { kind: 'reject'; rule: number; reason: string }
  | { kind: 'wait'; reason: string };

/** A rules document that failed validation; `index` is the rule's position (null: the document). */
export class RulesError extends Error {
  constructor(
    readonly index: number | null,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${index === null ? 'rules document' : `rule ${index}`}, field '${field}': ${reason}`);
    this.name = 'RulesError';
  }
}

export const isInputDevice = (d: PolicyDevice): boolean =>
  d.classes.includes('keyboard') || d.classes.includes('mouse');

/** Does the rule name keyboards/mice (or this very device) explicitly? */
function explicitForInput(m: RuleMatch): boolean {
  const names = (cs?: UsbClass[]) => !!cs && (cs.includes('keyboard') || cs.includes('mouse'));
  return (
    names(m.classes) ||
    names(m.interfaceClasses) ||
    m.vid !== undefined ||
    m.serial !== undefined ||
    m.port !== undefined
  );
}

/** Device-side part of a match (everything but match.vm). */
export function matchesDevice(m: RuleMatch, d: PolicyDevice): boolean {
  if (m.classes && !m.classes.some((c) => d.classes.includes(c))) return false;
  if (m.interfaceClasses && !m.interfaceClasses.some((c) => d.interfaceClasses.includes(c))) return false;
  if (m.vid !== undefined && m.vid !== hex4(d.vendorId)) return false;
  if (m.pid !== undefined && m.pid !== hex4(d.productId)) return false;
  if (m.serial !== undefined && m.serial !== d.serial) return false;
  if (m.port !== undefined && m.port !== d.port) return false;
  return true;
}

/**
 * The rules that apply to a device going to `target` (null = no VM in view), in order, with
 * their index, each with the VM it would send the device to.
 */
function* applicable(d: PolicyDevice, rules: readonly Rule[], focusedVm: string | null) {
  const input = isInputDevice(d);
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (input && !explicitForInput(r.match)) continue;
    if (!matchesDevice(r.match, d)) continue;
    const target = r.action === 'always' || r.action === 'ask' ? (r.vm ?? focusedVm) : focusedVm;
    if (r.match.vm !== undefined && r.match.vm !== target) continue;
    yield { rule: r, index: i, target };
  }
}

/** Where a device that just appeared (hotplug or daemon start) goes. */
export function decideNewDevice(d: PolicyDevice, rules: readonly Rule[], ctx: PolicyContext): Decision {
  const focused = ctx.focusedVm;
  const autoTarget = (rule: number | null, why: string): Decision => {
    if (focused === null) return { kind: 'wait', reason: `${why}; the switcher has the focus` };
    const vm = ctx.vms.get(focused);
    if (!vm?.running) return { kind: 'wait', reason: `${why}; focused VM ${focused} is not running` };
    if (!vm.usbAutoAttach)
      return { kind: 'wait', reason: `${why}; focused VM ${focused} has no UsbAutoAttach` };
    return {
      kind: 'attach',
      vm: focused,
      rule,
      sticky: false,
      reason: `${why}; focused VM ${focused} has UsbAutoAttach`,
    };
  };
  for (const { rule, index, target } of applicable(d, rules, focused)) {
    switch (rule.action) {
      case 'deny':
        return {
          kind: 'reject',
          rule: index,
          reason: `rule ${index} denies it${rule.comment ? ` (${rule.comment})` : ''}`,
        };
      case 'always': {
        const vm = rule.vm!;
        if (!ctx.vms.get(vm)?.running)
          return { kind: 'wait', reason: `rule ${index} makes it sticky to ${vm}, which is not running` };
        return {
          kind: 'attach',
          vm,
          rule: index,
          sticky: true,
          reason: `rule ${index} makes it sticky to ${vm}`,
        };
      }
      case 'ask':
        if (target === null) return { kind: 'wait', reason: `rule ${index} asks, but no VM is in view` };
        if (!ctx.vms.get(target)?.running)
          return { kind: 'wait', reason: `rule ${index} asks for ${target}, which is not running` };
        return { kind: 'ask', vm: target, rule: index, reason: `rule ${index} asks the person` };
      case 'allow':
        return autoTarget(index, `rule ${index} allows it`);
    }
  }
  if (isInputDevice(d)) return { kind: 'input', reason: 'keyboards and mice stay with input-daemon' };
  if (d.classes.includes('hub')) return { kind: 'wait', reason: 'hubs stay in the Control Domain' };
  return autoTarget(null, 'no rule matches');
}

/** May the person give this device to `vm` (UsbDevice1.Assign)? null = yes, else the reason. */
export function assignRefusal(d: PolicyDevice, vm: string, rules: readonly Rule[]): string | null {
  for (const { rule, index } of applicable(d, rules, vm)) {
    // An explicit Assign is the person's own choice: 'ask' and a sticky rule elsewhere permit it.
    if (rule.action === 'deny')
      return `rule ${index} denies this device to VM ${vm}${rule.comment ? ` (${rule.comment})` : ''}`;
    return null;
  }
  if (isInputDevice(d))
    return 'keyboards and mice stay with input-daemon unless a rule passes this one through (match it by class keyboard/mouse, vid, serial or port)';
  return null;
}

/** The VM an 'always' rule sends the device to, with that rule's index; null when none. */
export function stickyTarget(d: PolicyDevice, rules: readonly Rule[]): { vm: string; rule: number } | null {
  for (const { rule, index } of applicable(d, rules, null)) {
    if (rule.action === 'always') return { vm: rule.vm!, rule: index };
    if (rule.action === 'deny' && rule.match.vm === undefined) return null;
  }
  return null;
}

/** The rule SetSticky writes: always to `vm`, keyed on VID, PID and (when it has one) serial. */
export function stickyRule(d: PolicyDevice, vm: string): Rule {
  const match: RuleMatch = { vid: hex4(d.vendorId), pid: hex4(d.productId) };
  if (d.serial) match.serial = d.serial;
  return { match, action: 'always', vm, comment: 'sticky (SetSticky)' };
}

/** Is `r` a rule SetSticky wrote for this device (keyed exactly on it)? */
export function isStickyRuleFor(r: Rule, d: PolicyDevice): boolean {
  const m = r.match;
  const keys = Object.keys(m).sort().join(',');
  const want = d.serial ? 'pid,serial,vid' : 'pid,vid';
  return (
    r.action === 'always' &&
    keys === want &&
    m.vid === hex4(d.vendorId) &&
    m.pid === hex4(d.productId) &&
    (d.serial ? m.serial === d.serial : true)
  );
}

/**
 * Why `d` may not be made sticky, or null. A serial-less device is known only by VID:PID, so with
 * an identical one present the rule could not tell them apart (OpenXT OXT-1782).
 */
export function stickyRefusal(d: PolicyDevice, present: readonly PolicyDevice[]): string | null {
  if (d.serial) return null;
  const twin = present.find(
    (o) => o !== d && o.vendorId === d.vendorId && o.productId === d.productId && o.port !== d.port,
  );
  if (!twin) return null;
  return (
    `device ${hex4(d.vendorId)}:${hex4(d.productId)} at port ${d.port} has no serial number and an identical device ` +
    `is present at port ${twin.port}: a sticky rule could not tell them apart`
  );
}

// ---------------------------------------------------------------------------------------------
// Validation

const MATCH_KEYS = ['classes', 'interfaceClasses', 'vid', 'pid', 'serial', 'port', 'vm'];
const RULE_KEYS = ['match', 'action', 'vm', 'comment'];
const VM_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const PORT = /^[0-9]+-[0-9]+(\.[0-9]+)*$/;

/** An empty key is shown as "" so that the error still names a field. */
const fieldName = (k: string): string => k || '""';

const describe = (v: unknown): string => (v === undefined ? 'nothing' : JSON.stringify(v));

function classList(index: number, field: string, v: unknown): UsbClass[] {
  if (!Array.isArray(v) || v.length === 0)
    throw new RulesError(index, field, `must be a non-empty array of classes, got ${describe(v)}`);
  for (const c of v)
    if (typeof c !== 'string' || !(USB_CLASSES as readonly string[]).includes(c))
      throw new RulesError(index, field, `unknown class ${describe(c)} (known: ${USB_CLASSES.join(', ')})`);
  return [...(v as UsbClass[])];
}

function vmId(index: number, field: string, v: unknown): string {
  if (typeof v !== 'string' || !VM_ID.test(v))
    throw new RulesError(
      index,
      field,
      `must be a VM id (letters, digits, '_', '.', '-'), got ${describe(v)}`,
    );
  return v;
}

function validateRule(index: number, raw: unknown): Rule {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new RulesError(index, '(rule)', `must be an object, got ${describe(raw)}`);
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!RULE_KEYS.includes(k))
      throw new RulesError(index, fieldName(k), `unknown field (known: ${RULE_KEYS.join(', ')})`);
  if (typeof o.action !== 'string' || !(RULE_ACTIONS as readonly string[]).includes(o.action))
    throw new RulesError(
      index,
      'action',
      `unknown action ${describe(o.action)} (known: ${RULE_ACTIONS.join(', ')})`,
    );
  const action = o.action as RuleAction;
  const rule: Rule = { match: {}, action };
  if (o.match !== undefined) {
    if (!o.match || typeof o.match !== 'object' || Array.isArray(o.match))
      throw new RulesError(index, 'match', `must be an object, got ${describe(o.match)}`);
    const m = o.match as Record<string, unknown>;
    for (const k of Object.keys(m))
      if (!MATCH_KEYS.includes(k))
        throw new RulesError(
          index,
          `match.${fieldName(k)}`,
          `unknown field (known: ${MATCH_KEYS.join(', ')})`,
        );
    if (m.classes !== undefined) rule.match.classes = classList(index, 'match.classes', m.classes);
    if (m.interfaceClasses !== undefined)
      rule.match.interfaceClasses = classList(index, 'match.interfaceClasses', m.interfaceClasses);
    for (const k of ['vid', 'pid'] as const) {
      if (m[k] === undefined) continue;
      if (typeof m[k] !== 'string' || !/^[0-9a-fA-F]{4}$/.test(m[k] as string))
        throw new RulesError(
          index,
          `match.${k}`,
          `must be 4 hex digits such as "0781", got ${describe(m[k])}`,
        );
      rule.match[k] = (m[k] as string).toLowerCase();
    }
    if (m.serial !== undefined) {
      if (typeof m.serial !== 'string' || m.serial === '')
        throw new RulesError(index, 'match.serial', `must be a non-empty string, got ${describe(m.serial)}`);
      rule.match.serial = m.serial;
    }
    if (m.port !== undefined) {
      if (typeof m.port !== 'string' || !PORT.test(m.port))
        throw new RulesError(
          index,
          'match.port',
          `must be a port path such as "1-2.3", got ${describe(m.port)}`,
        );
      rule.match.port = m.port;
    }
    if (m.vm !== undefined) rule.match.vm = vmId(index, 'match.vm', m.vm);
  }
  if (o.vm !== undefined) {
    if (action !== 'always' && action !== 'ask')
      throw new RulesError(
        index,
        'vm',
        `only 'always' and 'ask' rules take a target vm (to filter by VM use match.vm)`,
      );
    rule.vm = vmId(index, 'vm', o.vm);
  } else if (action === 'always')
    throw new RulesError(index, 'vm', `an 'always' rule needs the VM id the device sticks to`);
  if (o.comment !== undefined) {
    if (typeof o.comment !== 'string')
      throw new RulesError(index, 'comment', `must be a string, got ${describe(o.comment)}`);
    rule.comment = o.comment;
  }
  return rule;
}

/** Validate a parsed rules document; throws RulesError naming the rule index and field. */
export function validateRules(doc: unknown): Rule[] {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc))
    throw new RulesError(null, '(document)', `must be an object {"rules": [...]}, got ${describe(doc)}`);
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'rules') throw new RulesError(null, fieldName(k), `unknown field (known: rules)`);
  if (!Array.isArray(o.rules))
    throw new RulesError(null, 'rules', `must be an array, got ${describe(o.rules)}`);
  return o.rules.map((r, i) => validateRule(i, r));
}

/** Parse and validate the rules file's text. */
export function parseRules(text: string): Rule[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new RulesError(null, '(json)', `not valid JSON: ${(e as Error).message}`);
  }
  return validateRules(doc);
}

/** The rules file's text for `rules` (what Rules shows and what is written to disk). */
export function formatRules(rules: readonly Rule[]): string {
  return JSON.stringify({ rules }, null, 2) + '\n';
}
