// Parses the introspection XML files (the contract) into a plain model.
// Shared by the code generator and by the tests that check code against XML.
import { XMLParser } from 'fast-xml-parser';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const asArray = (x) => (x === undefined ? [] : Array.isArray(x) ? x : [x]);

/** An enum value or dict key: lower-case words joined by '-' or '_' (what goes on the bus as is). */
const WIRE_NAME = /^[a-z][a-z0-9]*([-_][a-z0-9]+)*$/;

/**
 * org.bulkhead.Enum: the values a string may take, space-separated. Throws naming `where` on a
 * malformed or duplicated value, so a typo in the XML stops the build rather than the daemon.
 */
export function parseEnum(value, where) {
  const values = value.split(/\s+/).filter(Boolean);
  if (values.length === 0) throw new Error(`${where}: org.bulkhead.Enum lists no values`);
  for (const v of values)
    if (!WIRE_NAME.test(v))
      throw new Error(`${where}: org.bulkhead.Enum value "${v}" is not a lower-case name`);
  const dup = values.find((v, i) => values.indexOf(v) !== i);
  if (dup) throw new Error(`${where}: org.bulkhead.Enum lists "${dup}" twice`);
  return values;
}

/**
 * org.bulkhead.Dict: the keys of an a{sv}, space-separated `key:signature`, e.g.
 * `from:o steps:a(st) outcome:s=ok|rolled-back|failed`. `=a|b|c` makes a string key an enum;
 * `key?:sig` marks a key that may be absent. Every other key must be present.
 */
export function parseDict(value, where) {
  const fields = value
    .split(/\s+/)
    .filter(Boolean)
    .map((entry) => {
      const m = /^([a-z][a-z0-9_]*)(\?)?:([^=]+)(?:=(.+))?$/.exec(entry);
      if (!m) throw new Error(`${where}: org.bulkhead.Dict entry "${entry}" is not key:signature`);
      const [, key, optional, type, enumText] = m;
      try {
        if (splitSignature(type).length !== 1) throw new Error('not one complete type');
      } catch (e) {
        throw new Error(`${where}: org.bulkhead.Dict key ${key}: bad signature "${type}" (${e.message})`);
      }
      if (enumText !== undefined && type !== 's')
        throw new Error(`${where}: org.bulkhead.Dict key ${key}: only an s key can be an enum`);
      return {
        key,
        type,
        optional: optional === '?',
        ...(enumText !== undefined
          ? { enum: parseEnum(enumText.replace(/\|/g, ' '), `${where} key ${key}`) }
          : {}),
      };
    });
  if (fields.length === 0) throw new Error(`${where}: org.bulkhead.Dict lists no keys`);
  const dup = fields.find((f, i) => fields.findIndex((g) => g.key === f.key) !== i);
  if (dup) throw new Error(`${where}: org.bulkhead.Dict lists key ${dup.key} twice`);
  return fields;
}

/** Split a D-Bus signature into its complete types. */
export function splitSignature(sig) {
  const out = [];
  let i = 0;
  const one = () => {
    const start = i;
    const c = sig[i++];
    if (c === 'a') one();
    else if (c === '(' || c === '{') {
      const close = c === '(' ? ')' : '}';
      while (sig[i] !== close) {
        if (i >= sig.length) throw new Error(`bad signature ${sig}`);
        one();
      }
      i++;
    } else if (c === undefined || !'ybnqiuxtdsogvh'.includes(c)) throw new Error(`bad signature ${sig}`);
    return sig.slice(start, i);
  };
  while (i < sig.length) out.push(one());
  return out;
}

/** The Enum and Dict annotations of a property or argument, checked against its type. */
function typedAnnotations(a, type, where) {
  const out = {};
  if (a['org.bulkhead.Enum'] !== undefined) {
    if (type !== 's') throw new Error(`${where}: org.bulkhead.Enum needs type s, not ${type}`);
    out.enum = parseEnum(a['org.bulkhead.Enum'], where);
  }
  if (a['org.bulkhead.Dict'] !== undefined) {
    if (type !== 'a{sv}') throw new Error(`${where}: org.bulkhead.Dict needs type a{sv}, not ${type}`);
    out.dict = parseDict(a['org.bulkhead.Dict'], where);
  }
  return out;
}

function annotations(el) {
  const out = {};
  for (const a of asArray(el.annotation)) out[a['@_name']] = a['@_value'];
  return out;
}

/** Parse one XML document into [{ name, doc, methods, properties, signals }]. Throws naming the file. */
export function parseContractXml(xml, file = '<xml>') {
  const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', isArray: () => false });
  let doc;
  try {
    doc = parser.parse(xml);
  } catch (e) {
    throw new Error(`${file}: not well-formed XML: ${e.message}`);
  }
  if (!doc.node) throw new Error(`${file}: no <node> root element`);
  return asArray(doc.node.interface).map((iface) => {
    const ann = annotations(iface);
    const name = iface['@_name'];
    if (!name) throw new Error(`${file}: <interface> without a name`);
    const methods = asArray(iface.method).map((m) => {
      const a = annotations(m);
      const args = asArray(m.arg).map((arg, i) => ({
        name: arg['@_name'] ?? `arg${i}`,
        type: arg['@_type'],
        direction: arg['@_direction'] ?? 'in',
      }));
      const access = a['org.bulkhead.Access'];
      if (access !== 'ui' && access !== 'root')
        throw new Error(`${file}: ${name}.${m['@_name']}: org.bulkhead.Access must be "ui" or "root"`);
      return {
        name: m['@_name'],
        doc: a['org.bulkhead.Doc'] ?? '',
        errors: (a['org.bulkhead.Errors'] ?? '').split(/\s+/).filter(Boolean),
        access,
        inArgs: args.filter((x) => x.direction === 'in').map(({ name, type }) => ({ name, type })),
        outArgs: args.filter((x) => x.direction === 'out').map(({ name, type }) => ({ name, type })),
      };
    });
    const properties = asArray(iface.property).map((p) => {
      const a = annotations(p);
      const max = a['org.bulkhead.MaxLength'];
      if (max !== undefined && !/^[1-9][0-9]{0,8}$/.test(max))
        throw new Error(`${file}: ${name}.${p['@_name']}: org.bulkhead.MaxLength must be a positive integer`);
      return {
        name: p['@_name'],
        type: p['@_type'],
        access: p['@_access'],
        doc: a['org.bulkhead.Doc'] ?? '',
        ...(max !== undefined ? { maxLength: Number(max) } : {}),
        ...typedAnnotations(a, p['@_type'], `${file}: ${name}.${p['@_name']}`),
      };
    });
    const signals = asArray(iface.signal).map((s) => ({
      name: s['@_name'],
      doc: annotations(s)['org.bulkhead.Doc'] ?? '',
      args: asArray(s.arg).map((arg, i) => ({
        name: arg['@_name'] ?? `arg${i}`,
        type: arg['@_type'],
        ...typedAnnotations(
          annotations(arg),
          arg['@_type'],
          `${file}: ${name}.${s['@_name']}(${arg['@_name'] ?? i})`,
        ),
      })),
    }));
    return { name, doc: ann['org.bulkhead.Doc'] ?? '', methods, properties, signals };
  });
}

/** Every interface of every XML file in dir, with the file it came from. */
export function loadContractDir(dir) {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.xml'))
    .sort();
  return files.flatMap((f) => {
    const xml = readFileSync(join(dir, f), 'utf8');
    return parseContractXml(xml, f).map((iface) => ({ ...iface, file: f, xml }));
  });
}
