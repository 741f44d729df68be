// Parses the introspection XML files (the contract) into a plain model.
// Shared by the code generator and by the tests that check code against XML.
import { XMLParser } from 'fast-xml-parser';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const asArray = (x) => (x === undefined ? [] : Array.isArray(x) ? x : [x]);

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
      };
    });
    const signals = asArray(iface.signal).map((s) => ({
      name: s['@_name'],
      doc: annotations(s)['org.bulkhead.Doc'] ?? '',
      args: asArray(s.arg).map((arg, i) => ({ name: arg['@_name'] ?? `arg${i}`, type: arg['@_type'] })),
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
