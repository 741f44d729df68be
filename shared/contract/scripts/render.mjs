// Renders the contract model into TypeScript, D-Bus policy files and ACCESS.md. Pure functions of the model.

/** The bus names and the interfaces each one serves. */
export const SERVICES = {
  'org.bulkhead.VmManager1': ['org.bulkhead.VmManager1', 'org.bulkhead.Vm1', 'org.bulkhead.Power1'],
  'org.bulkhead.Input1': ['org.bulkhead.Input1'],
  'org.bulkhead.Usb1': ['org.bulkhead.Usb1', 'org.bulkhead.UsbDevice1'],
};
export const UI_GROUP = 'bulkhead-ui';

import { splitSignature } from './contract-model.mjs';

export { splitSignature };

/** The TypeScript type dbus-next uses for a complete D-Bus type. */
export function tsType(t) {
  switch (t[0]) {
    case 'y':
    case 'n':
    case 'q':
    case 'i':
    case 'u':
    case 'd':
    case 'h':
      return 'number';
    case 'x':
    case 't':
      return 'bigint';
    case 'b':
      return 'boolean';
    case 's':
    case 'o':
    case 'g':
      return 'string';
    case 'v':
      return 'Variant';
    case '(':
      return `[${splitSignature(t.slice(1, -1)).map(tsType).join(', ')}]`;
    case 'a': {
      const inner = t.slice(1);
      if (inner === 'y') return 'Buffer';
      if (inner === '{sv}') return 'VariantDict';
      if (inner[0] === '{') {
        const [k, v] = splitSignature(inner.slice(1, -1));
        return `Record<${tsType(k) === 'number' ? 'number' : 'string'}, ${tsType(v)}>`;
      }
      const el = tsType(inner);
      return /^[\w.]+$/.test(el) ? `${el}[]` : `Array<${el}>`;
    }
  }
  throw new Error(`bad type ${t}`);
}

const short = (iface) => iface.split('.').pop();
const doc = (text, indent = '') => (text ? `${indent}/** ${text.replace(/\*\//g, '* /')} */\n` : '');
const ret = (outs) =>
  outs.length === 0
    ? 'void'
    : outs.length === 1
      ? tsType(outs[0].type)
      : `[${outs.map((a) => `${a.name}: ${tsType(a.type)}`).join(', ')}]`;
const params = (args) => args.map((a) => `${a.name}: ${tsType(a.type)}`).join(', ');

/** The plain-JSON type of a complete D-Bus type, as a view (e.g. the switcher's model) holds it. */
export function viewType(t) {
  switch (t[0]) {
    case 'x':
    case 't':
      return 'number';
    case 'v':
      return 'unknown';
    case '(':
      return `[${splitSignature(t.slice(1, -1)).map(viewType).join(', ')}]`;
    case 'a': {
      const inner = t.slice(1);
      if (inner === 'y') return 'number[]';
      if (inner[0] === '{') {
        const [k, v] = splitSignature(inner.slice(1, -1));
        return `Record<${tsType(k) === 'number' ? 'number' : 'string'}, ${viewType(v)}>`;
      }
      const el = viewType(inner);
      return /^[\w.]+$/.test(el) ? `${el}[]` : `Array<${el}>`;
    }
  }
  return tsType(t);
}

const pascal = (s) => s.replace(/(^|[-_])([a-z0-9])/g, (_, __, c) => c.toUpperCase());
const camel = (s) => s[0].toLowerCase() + s.slice(1);
const constName = (s) => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/** The zero value of a view field: the first enum value, '' / 0 / false / empty. */
function viewDefault(t, enumValues) {
  if (enumValues) return enumValues[0];
  const v = viewType(t);
  if (v === 'string') return t === 'o' ? '/' : '';
  if (v === 'number') return 0;
  if (v === 'boolean') return false;
  if (v === 'unknown') return null;
  if (t[0] === 'a') return t[1] === '{' ? {} : [];
  if (t[0] === '(') return splitSignature(t.slice(1, -1)).map((x) => viewDefault(x));
  throw new Error(`no default for ${t}`);
}

/**
 * Names of the generated types: a property enum is <Interface><Property> (Vm1State), a dict is its
 * property's name (LastSwitch), a dict key's enum <Dict><Key> (LastSwitchOutcome). Throws on a
 * clash, which two dict properties of the same name in different interfaces would cause.
 */
function typedNames(ifaces) {
  const enums = [];
  const dicts = [];
  for (const i of ifaces) {
    for (const p of i.properties) {
      const where = `${i.name}.${p.name}`;
      if (p.enum) enums.push({ name: `${short(i.name)}${p.name}`, values: p.enum, where });
      if (p.dict) {
        dicts.push({ name: p.name, fields: p.dict, where });
        for (const f of p.dict)
          if (f.enum)
            enums.push({ name: `${p.name}${pascal(f.key)}`, values: f.enum, where: `${where}.${f.key}` });
      }
    }
    for (const s of i.signals)
      for (const a of s.args)
        if (a.enum)
          enums.push({
            name: `${short(i.name)}${s.name}${pascal(a.name)}`,
            values: a.enum,
            where: `${i.name}.${s.name}(${a.name})`,
          });
  }
  const seen = new Map();
  for (const x of [...enums, ...dicts]) {
    if (seen.has(x.name))
      throw new Error(`generated type ${x.name} is named twice: ${seen.get(x.name)} and ${x.where}`);
    seen.set(x.name, x.where);
  }
  return { enums, dicts };
}

/** The TypeScript type of a property in <Interface>Properties: its enum if it has one. */
const propType = (i, p) => (p.enum ? `${short(i.name)}${p.name}` : tsType(p.type));
const argType = (i, s, a) => (a.enum ? `${short(i.name)}${s.name}${pascal(a.name)}` : tsType(a.type));

function renderTyped(ifaces) {
  const { enums, dicts } = typedNames(ifaces);
  let out = `// ---------------------------------------------------------------- enums (org.bulkhead.Enum)\n\n`;
  for (const e of enums) {
    out += `/** The values of ${e.where}. */\n`;
    out += `export const ${constName(e.name)}_VALUES = ${JSON.stringify(e.values)} as const;\n`;
    out += `export type ${e.name} = (typeof ${constName(e.name)}_VALUES)[number];\n\n`;
  }
  out += `// ---------------------------------------------------------------- dicts (org.bulkhead.Dict)\n\n`;
  for (const d of dicts) {
    out += `/** ${d.where} (a{sv}) with its keys typed; encode${d.name}/decode${d.name} check a value against it. */\n`;
    out += `export interface ${d.name} {\n`;
    for (const f of d.fields)
      out += `  ${f.key}${f.optional ? '?' : ''}: ${f.enum ? `${d.name}${pascal(f.key)}` : tsType(f.type)};\n`;
    out += `}\n`;
    out += `export const ${constName(d.name)}_FIELDS = ${JSON.stringify(d.fields)} as const satisfies readonly DictField[];\n`;
    out += `/** ${d.where} as the a{sv} on the bus. Throws ContractValueError naming the key of a malformed value. */\n`;
    out += `export const encode${d.name} = (value: ${d.name}): VariantDict => encodeDict(value, ${constName(d.name)}_FIELDS, '${d.where}');\n`;
    out += `/** ${d.where} read from the bus. Throws ContractValueError naming the key that is missing or malformed. */\n`;
    out += `export const decode${d.name} = (dict: unknown): ${d.name} => decodeDict(dict, ${constName(d.name)}_FIELDS, '${d.where}') as unknown as ${d.name};\n\n`;
  }
  out += `// ---------------------------------------------------------------- views (what UIs mirror)\n\n`;
  for (const i of ifaces) {
    if (i.properties.length === 0) continue;
    const n = short(i.name);
    out += `/** Every property of ${i.name} as plain JSON under its camelCase name (64-bit integers as numbers), as a UI mirrors it. */\n`;
    out += `export type ${n}View = ViewOf<${n}Properties>;\n`;
    out += `/** ${n}View before the daemon said anything: zero values, an enum's first value. */\n`;
    out += `export const ${constName(n)}_VIEW_DEFAULTS: ${n}View = ${JSON.stringify(
      Object.fromEntries(i.properties.map((p) => [camel(p.name), viewDefault(p.type, p.enum)])),
    )};\n`;
    out += `/** The ${n}View fields of the ${i.name} properties in \`props\` (GetAll or PropertiesChanged), as plain JSON. */\n`;
    out += `export const ${camel(n)}ViewPatch = viewPatcher<${n}View>(CONTRACT['${i.name}']);\n\n`;
  }
  return out;
}

/** The CONTRACT table's form of an argument or property: name and signature, annotations it needs at run time. */
const argModel = (a) => ({ name: a.name, type: a.type });

/**
 * The CONTRACT table as TypeScript: one line per method, property and signal (its whole record),
 * so the table reads as rows rather than as the same nested blocks repeated.
 */
function contractTable(model) {
  const row = (k, v) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`;
  const members = (kind, table) => {
    const rows = Object.entries(table).map(([k, v]) => `      ${row(k, v)},\n`);
    return rows.length ? `    ${kind}: {\n${rows.join('')}    },\n` : `    ${kind}: {},\n`;
  };
  let out = '{\n';
  for (const [name, i] of Object.entries(model)) {
    out += `  ${JSON.stringify(name)}: {\n    name: ${JSON.stringify(i.name)},\n    doc: ${JSON.stringify(i.doc)},\n`;
    out +=
      members('methods', i.methods) + members('properties', i.properties) + members('signals', i.signals);
    out += '  },\n';
  }
  return out + '}';
}

export function renderGenerated(ifaces) {
  const errors = new Set();
  let out = `// GENERATED by shared/contract/scripts/codegen.mjs from shared/contract/xml/*.xml. Do not edit;
// change the XML and run \`npm run codegen\`. A test fails when this file and the XML disagree.
import type { Variant } from 'dbus-next';
import type { CallContext, ClientOf, InterfaceContract } from './types';
import { decodeDict, encodeDict, viewPatcher, type DictField, type ViewOf } from './contract-values';

export type VariantDict = Record<string, Variant>;

`;
  for (const i of ifaces) {
    const n = short(i.name);
    for (const m of i.methods) m.errors.forEach((e) => errors.add(e));
    out += doc(i.doc);
    out += `export interface ${n}Service {\n`;
    for (const m of i.methods) {
      out += doc(`${m.doc} Errors: ${m.errors.join(', ') || 'none'}. Access: ${m.access}.`, '  ');
      const p = params(m.inArgs);
      out += `  ${m.name}(ctx: CallContext${p ? ', ' + p : ''}): Promise<${ret(m.outArgs)}> | ${ret(m.outArgs)};\n`;
    }
    out += `}\n\nexport interface ${n}Properties {\n`;
    for (const p of i.properties) out += doc(p.doc, '  ') + `  ${p.name}: ${propType(i, p)};\n`;
    out += `}\n\nexport interface ${n}Signals {\n`;
    for (const s of i.signals)
      out +=
        doc(s.doc, '  ') +
        `  ${s.name}: [${s.args.map((a) => `${a.name}: ${argType(i, s, a)}`).join(', ')}];\n`;
    out += `}\n\n/** Client view of ${i.name}: its methods as promises. */\nexport type ${n}Client = ClientOf<${n}Service>;\n\n`;
  }
  const model = Object.fromEntries(
    ifaces.map((i) => [
      i.name,
      {
        name: i.name,
        doc: i.doc,
        methods: Object.fromEntries(
          i.methods.map((m) => [
            m.name,
            {
              doc: m.doc,
              access: m.access,
              errors: m.errors,
              inArgs: m.inArgs,
              outArgs: m.outArgs,
              inSignature: m.inArgs.map((a) => a.type).join(''),
              outSignature: m.outArgs.map((a) => a.type).join(''),
            },
          ]),
        ),
        properties: Object.fromEntries(
          i.properties.map((p) => [
            p.name,
            {
              type: p.type,
              access: p.access,
              doc: p.doc,
              ...(p.maxLength ? { maxLength: p.maxLength } : {}),
            },
          ]),
        ),
        signals: Object.fromEntries(
          i.signals.map((s) => [
            s.name,
            { doc: s.doc, args: s.args.map(argModel), signature: s.args.map((a) => a.type).join('') },
          ]),
        ),
      },
    ]),
  );
  out += `/** The whole contract as data: what the toolkit dispatches, validates and authorises by. */\n`;
  out += `export const CONTRACT = ${contractTable(model)} as const satisfies Record<string, InterfaceContract>;\n\n`;
  out += `export type InterfaceName = keyof typeof CONTRACT;\n`;
  out += `export const ERROR_NAMES_USED = ${JSON.stringify([...errors].sort())} as const;\n`;
  out += `export const SERVICES = ${JSON.stringify(SERVICES, null, 2)} as const;\n`;
  out += `export const UI_GROUP = '${UI_GROUP}';\n\n`;
  out += `/** Maps each interface to its generated types, for typed exports and clients. */\nexport interface InterfaceTypes {\n`;
  for (const i of ifaces) {
    const n = short(i.name);
    out += `  '${i.name}': { service: ${n}Service; properties: ${n}Properties; signals: ${n}Signals; client: ${n}Client };\n`;
  }
  out += `}\n\n`;
  out += renderTyped(ifaces);
  return out.replace(/\n+$/, '\n');
}

/**
 * ACCESS.md: the prose of who may call what (kept here, the one place it is edited) and the table
 * of every method by caller, from the org.bulkhead.Access annotations. The access-matrix test
 * checks each row against the real daemons.
 */
export function renderAccess(ifaces) {
  const sorted = [...ifaces].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const signals = sorted.flatMap((i) => i.signals.map((s) => `\`${s.name}\``)).join(', ');
  let out = `<!-- GENERATED by shared/contract/scripts/codegen.mjs from the XML's org.bulkhead.Access
     annotations and the prose in shared/contract/scripts/render.mjs (renderAccess). Do not edit;
     run \`npm run codegen\`. -->
# Who may call what

The access table of the D-Bus contract. Callers: **root** (the daemons, the administrator),
**ui** (the \`bulkhead-ui\` group: the switcher), **nobody** (any other uid — VMs have no bus access
at all, and a compromised unprivileged process in the Control Domain is treated like this).

It is enforced twice: by the bus policy files generated from the XML's \`org.bulkhead.Access\`
annotations (\`shared/contract/policy/*.conf\`, installed in the image under
\`/usr/share/dbus-1/system.d/\`) and by each daemon per call (\`ServiceHost\` checks the caller's uid,
as the bus daemon reports it, against the same annotation). The test
\`shared/dbus/src/access-matrix.test.ts\` reads this table and checks every row against the real
daemons on a bus running the real policy, once with the policy and once with a permissive bus
(so the daemons' own check is proven on its own).

Reading properties, introspection and \`GetManagedObjects\`: root and ui allow, nobody deny.

Receiving signals is reading too. Every signal a daemon sends under its bus name —
\`PropertiesChanged\` of its objects, \`InterfacesAdded\` / \`InterfacesRemoved\`, and the contract's own
signals (${signals}) — reaches root and ui only; nobody receives none of them, whatever match rule it
installs. The generated policy denies \`receive_sender\` of each Bulkhead name by default and allows
it to root and to the \`bulkhead-ui\` group (signals only); a daemon sends no signal before it owns its
name, since the bus can only apply the rule to a sender that owns the name. Replies to a call are
not affected (a caller always gets the answer it asked for, which for nobody is the bus's denial).
Proven on a 'system'-mode bus with the real policy during a real switch by
\`apps/vm-daemon/src/bus-boundary.qemu.test.ts\`.

What reaches the bus is valid whatever a daemon hands over: \`ServiceHost\` passes every reply,
property value, signal argument and error message through one boundary
(\`shared/dbus/src/bus-values.ts\`): NUL and unpaired surrogates become U+FFFD, a string is cut at
4096 characters (a property may declare more with \`org.bulkhead.MaxLength\`, e.g. \`Usb1.Rules\`)
with a "… (N more characters)" marker, invalid object paths are replaced, nesting is bounded; a
reply that still cannot be sent is answered with \`org.bulkhead.Error.Failed\`. A method answers only
the errors its XML declares (plus AccessDenied, InvalidArgument for a wrong signature, and Failed):
under test (\`BULKHEAD_STRICT_CONTRACT=1\`, or any process started by node's test runner) an
undeclared one is answered as Failed so the test fails; in production it is answered and logged.

Per object, besides the table: a VM has an owner (\`Vm1.Owner\`), decided by the directory its file
is in and never by anything the file says. \`admin\` VMs (files in \`/etc/bulkhead/vms\`) may be
started, stopped and switched to by ui, but \`Update\`, \`Delete\` and \`CancelDiskJob\` on them answer
\`org.bulkhead.Error.NotOwner\` to every caller (the administrator edits the files). \`person\` VMs
are the ones \`CreateVm\` wrote into vm-daemon's own directory (\`<state dir>/vms\`); ui may change
and delete those. No method lets ui write into the admin's directory or name a disk path: the
disks of person VMs are made by vm-daemon in \`<state dir>/images\`, ISOs and imports come only
from the media roots (\`/media/bulkhead\`, checked after symlinks are followed). Proven by
\`apps/vm-daemon/src/vm-store.test.ts\` and, as the ui user on a bus with the real policy, by
\`apps/vm-daemon/src/person-vms.qemu.test.ts\`.

On the Xen boot entry the same rules hold for the VMs \`CreateVm\` makes there (HVM domains: the
ISO is the device model's CD-ROM, the disk is in \`<state dir>/images\`); options Xen cannot honour
(\`network\` \`user\`, \`disk_format\` \`vhdx\`) are InvalidArgument naming the option. A person's VM
made on the other boot entry is listed with the reason in \`Vm1.Unavailable\` and cannot be started,
switched to, changed or ejected there (InvalidConfig / InvalidState before anything runs); vm-daemon
never rewrites or removes its file, and ui may still \`Delete\` it. Proven by
\`apps/vm-daemon/src/person-xen.test.ts\`.

`;
  out += `| interface | method | root | ui | nobody |\n| --- | --- | --- | --- | --- |\n`;
  for (const i of sorted)
    for (const m of i.methods)
      out += `| ${i.name} | ${m.name} | allow | ${m.access === 'ui' ? 'allow' : 'deny'} | deny |\n`;
  return out;
}

export function renderPolicies(ifaces) {
  const byName = Object.fromEntries(ifaces.map((i) => [i.name, i]));
  const files = {};
  for (const [bus, served] of Object.entries(SERVICES)) {
    const allow = (iface, member) =>
      `    <allow send_destination="${bus}" send_interface="${iface}" send_member="${member}"/>\n`;
    let ui = '';
    for (const [iface, member] of [
      ['org.freedesktop.DBus.Introspectable', 'Introspect'],
      ['org.freedesktop.DBus.Peer', 'Ping'],
      ['org.freedesktop.DBus.Properties', 'Get'],
      ['org.freedesktop.DBus.Properties', 'GetAll'],
      ['org.freedesktop.DBus.ObjectManager', 'GetManagedObjects'],
    ])
      ui += allow(iface, member);
    for (const name of served) {
      const i = byName[name];
      if (!i) throw new Error(`policy: interface ${name} has no XML`);
      for (const m of i.methods) if (m.access === 'ui') ui += allow(name, m.name);
    }
    files[`${bus}.conf`] = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- GENERATED by shared/contract/scripts/codegen.mjs from the org.bulkhead.Access annotations.
     Deny by default: only root owns and fully calls ${bus}; the ${UI_GROUP} group (the switcher)
     may call the members marked Access=ui; everybody else, VMs included, is denied.
     Reading is calling too: signals sent by ${bus} (PropertiesChanged, InterfacesAdded/Removed
     and the contract's own) reach only root and ${UI_GROUP}, the callers that may read its
     properties. The bus checks receive rules against the sender's well-known name, so the daemon
     sends no signal before it owns the name. Replies a caller asked for are not affected.
     The daemon checks the caller's uid again per method: this file alone is not the only guard. -->
<busconfig>
  <policy context="default">
    <deny own="${bus}"/>
    <deny send_destination="${bus}"/>
    <deny receive_sender="${bus}"/>
  </policy>
  <policy group="${UI_GROUP}">
${ui}    <allow receive_sender="${bus}" receive_type="signal"/>
  </policy>
  <policy user="root">
    <allow own="${bus}"/>
    <allow send_destination="${bus}"/>
    <allow receive_sender="${bus}"/>
  </policy>
</busconfig>
`;
  }
  return files;
}
