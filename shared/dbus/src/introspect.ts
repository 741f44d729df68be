import type { InterfaceContract } from '@bulkhead/contract';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
const doc = (text: string, pad: string) =>
  text ? `${pad}<annotation name="org.bulkhead.Doc" value="${esc(text)}"/>\n` : '';

/** The introspection XML of one interface, rendered from the contract (what Introspect returns). */
export function renderInterfaceXml(c: InterfaceContract): string {
  let x = ` <interface name="${c.name}">\n`;
  for (const [name, m] of Object.entries(c.methods)) {
    x += `  <method name="${name}">\n` + doc(m.doc, '   ');
    if (m.errors.length) x += `   <annotation name="org.bulkhead.Errors" value="${m.errors.join(' ')}"/>\n`;
    x += `   <annotation name="org.bulkhead.Access" value="${m.access}"/>\n`;
    for (const a of m.inArgs) x += `   <arg name="${a.name}" type="${a.type}" direction="in"/>\n`;
    for (const a of m.outArgs) x += `   <arg name="${a.name}" type="${a.type}" direction="out"/>\n`;
    x += `  </method>\n`;
  }
  for (const [name, p] of Object.entries(c.properties))
    x += `  <property name="${name}" type="${p.type}" access="${p.access}">\n${doc(p.doc, '   ')}  </property>\n`;
  for (const [name, s] of Object.entries(c.signals)) {
    x += `  <signal name="${name}">\n` + doc(s.doc, '   ');
    for (const a of s.args) x += `   <arg name="${a.name}" type="${a.type}"/>\n`;
    x += `  </signal>\n`;
  }
  return x + ' </interface>\n';
}
