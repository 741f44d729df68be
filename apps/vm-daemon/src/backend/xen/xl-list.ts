/**
 * Parsing of `xl list -l` (JSON: one {domid, config} per domain, config = libxl_domain_config).
 * Only what the backend needs is kept; anything malformed gives an error naming the entry and field.
 */
import { BulkheadError } from '@bulkhead/contract';
import { describeValue } from '../../config-text';

/** A field of xl's JSON that is not what libxl writes: names the field (e.g. config.usbdevs[0].port) and the problem. */
export class XlOutputError extends Error {
  constructor(
    readonly where: string,
    readonly problem: string,
  ) {
    super(`${where} ${problem}`);
    this.name = 'XlOutputError';
  }
}

export interface XlUsbDev {
  ctrl: number;
  port: number;
  hostbus: number;
  hostaddr: number;
}

/** USB devices of a domain as an error names them: `host bus/address at controller:port`, or none. */
export function usbdevsText(devs: XlUsbDev[]): string {
  return devs.map((u) => `${u.hostbus}/${u.hostaddr} at ${u.ctrl}:${u.port}`).join(', ') || 'none';
}

export interface XlDomain {
  domid: number;
  name: string;
  uuid: string;
  type: string;
  /** Assigned PCI functions as 0000:00:03.0. */
  pci: string[];
  usbctrls: Array<{ devid: number; type: string; version: number; ports: number }>;
  usbdevs: XlUsbDev[];
}

const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');

/** libxl_device_pci in JSON: {bdf:{domain,bus,dev,func}} (4.16+) or flat {domain,bus,dev,func}. */
export function pciBdf(p: unknown, where: string): string {
  if (!p || typeof p !== 'object') throw new XlOutputError(where, 'is not an object');
  const o = p as Record<string, unknown>;
  const b = (o.bdf && typeof o.bdf === 'object' ? o.bdf : o) as Record<string, unknown>;
  const num = (k: string) => {
    const v = b[k] ?? 0;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      throw new XlOutputError(`${where}.${k}`, `is not a non-negative integer: ${describeValue(v)}`);
    return v;
  };
  return `${hex(num('domain'), 4)}:${hex(num('bus'), 2)}:${hex(num('dev'), 2)}.${num('func')}`;
}

function usbdev(u: unknown, where: string): XlUsbDev {
  if (!u || typeof u !== 'object') throw new XlOutputError(where, 'is not an object');
  const o = u as Record<string, unknown>;
  // A keyed union: libxl writes the member as "type.hostdev": {...}; accept "u" and flat too.
  const h = (o['type.hostdev'] ?? o.u ?? o) as Record<string, unknown>;
  const n = (v: unknown, k: string) => {
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw new XlOutputError(`${where}.${k}`, `is not an integer: ${describeValue(v)}`);
    return v;
  };
  return {
    ctrl: n(o.ctrl ?? 0, 'ctrl'),
    port: n(o.port ?? 0, 'port'),
    hostbus: n(h.hostbus, 'hostbus'),
    hostaddr: n(h.hostaddr, 'hostaddr'),
  };
}

/** Parse the output of `xl list -l` (all domains, or one). */
export function parseXlListJson(text: string): XlDomain[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new BulkheadError(
      'BackendFailed',
      `xl list -l: output is not JSON (${(e as Error).message}): ${text.slice(0, 120)}`,
    );
  }
  // One domain (`xl list -l <dom>`) is still printed as an array; tolerate a bare object too.
  const arr = Array.isArray(raw) ? raw : [raw];
  return arr.map((entry, i) => {
    const where = `xl list -l: entry ${i}`;
    try {
      if (!entry || typeof entry !== 'object') throw new XlOutputError('the entry', 'is not an object');
      const e = entry as Record<string, unknown>;
      if (typeof e.domid !== 'number' || !Number.isInteger(e.domid) || e.domid < 0)
        throw new XlOutputError('domid', `is not a domain id: ${describeValue(e.domid)}`);
      const cfg = (e.config ?? {}) as Record<string, unknown>;
      const cinfo = (cfg.c_info ?? {}) as Record<string, unknown>;
      if (typeof cinfo.name !== 'string') throw new XlOutputError('config.c_info.name', 'is missing');
      const list = (k: string): unknown[] => {
        const v = cfg[k];
        if (v === undefined || v === null) return [];
        if (!Array.isArray(v)) throw new XlOutputError(`config.${k}`, 'is not an array');
        return v;
      };
      return {
        domid: e.domid,
        name: cinfo.name,
        uuid: typeof cinfo.uuid === 'string' ? cinfo.uuid : '',
        type: typeof cinfo.type === 'string' ? cinfo.type : '',
        pci: list('pcidevs').map((p, j) => pciBdf(p, `config.pcidevs[${j}]`)),
        usbctrls: list('usbctrls').map((c) => {
          const o = (c ?? {}) as Record<string, unknown>;
          return {
            devid: Number(o.devid ?? 0),
            type: String(o.type ?? ''),
            version: Number(o.version ?? 0),
            ports: Number(o.ports ?? 0),
          };
        }),
        usbdevs: list('usbdevs').map((u, j) => usbdev(u, `config.usbdevs[${j}]`)),
      };
    } catch (err) {
      if (err instanceof BulkheadError) throw err;
      throw new BulkheadError('BackendFailed', `${where}: ${(err as Error).message}`);
    }
  });
}
