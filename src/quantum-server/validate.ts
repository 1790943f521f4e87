// Request-body attribute checks the way Neutron's attribute maps do them (convert_to_boolean, type:uuid, ...).
import { faults } from './faults.js';
import { canonicalIp, parseIp, type Cidr } from '../common/ipaddr.js';
import { validateSubnetCidr } from './ipaddr.js';

export type Body = Record<string, unknown>;

const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

export function isUuid(s: unknown): s is string {
  return typeof s === 'string' && UUID_RE.test(s);
}

/** Extension attributes real clients send that this subset accepts and ignores (Neutron would store them). */
const IGNORED = new Set(['description', 'security_groups', 'port_security_enabled', 'binding:vnic_type', 'binding:profile', 'dns_name', 'tags']);

/** Refuse attributes outside `allowed` (Neutron: "Unrecognized attribute(s)"), dropping the ignorable ones. */
export function checkAttrs(body: Body, allowed: readonly string[], readOnly: readonly string[] = []): Body {
  const out: Body = {};
  const unknown: string[] = [];
  for (const [k, v] of Object.entries(body)) {
    if (readOnly.includes(k)) throw faults.readOnly(k);
    if (allowed.includes(k)) out[k] = v;
    else if (!IGNORED.has(k)) unknown.push(k);
  }
  if (unknown.length) throw faults.unknownAttr(unknown.join(', '));
  return out;
}

export function toBool(attr: string, v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number' && (v === 0 || v === 1)) return v === 1;
  if (typeof v === 'string') {
    const l = v.toLowerCase();
    if (l === 'true' || l === '1') return true;
    if (l === 'false' || l === '0') return false;
  }
  throw faults.invalidAttr(attr, `'${String(v)}' cannot be converted to boolean`);
}

export function toStr(attr: string, v: unknown, max = 255): string {
  if (typeof v !== 'string') throw faults.invalidAttr(attr, `'${JSON.stringify(v)}' is not a valid string`);
  if (v.length > max) throw faults.invalidAttr(attr, `'${v}' exceeds maximum length of ${max}`);
  return v;
}

export function toUuid(attr: string, v: unknown): string {
  if (!isUuid(v)) throw faults.invalidAttr(attr, `'${typeof v === 'string' ? v : JSON.stringify(v)}' is not a valid UUID`);
  return v;
}

export function toInt(attr: string, v: unknown, min?: number, max?: number): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n)) throw faults.invalidAttr(attr, `'${String(v)}' is not an integer`);
  if (min !== undefined && n < min) throw faults.invalidAttr(attr, `'${n}' is too small - must be at least '${min}'`);
  if (max !== undefined && n > max) throw faults.invalidAttr(attr, `'${n}' is too large - must be no larger than '${max}'`);
  return n;
}

/** A canonical IP literal, or the Neutron "is not a valid IP address" 400. */
export function toIp(attr: string, v: unknown): string {
  const c = typeof v === 'string' ? canonicalIp(v) : undefined;
  if (!c) throw faults.invalidAttr(attr, `'${typeof v === 'string' ? v : JSON.stringify(v)}' is not a valid IP address`);
  return c;
}

export function toCidr(attr: string, v: unknown): Cidr {
  const r = validateSubnetCidr(v);
  if (typeof r === 'string') throw faults.invalidAttr(attr, r);
  return r;
}

export function toList(attr: string, v: unknown): unknown[] {
  if (!Array.isArray(v)) throw faults.invalidAttr(attr, `'${JSON.stringify(v)}' is not a list`);
  return v;
}

export function toDict(attr: string, v: unknown): Body {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw faults.invalidAttr(attr, `'${JSON.stringify(v)}' is not a dictionary`);
  return v as Body;
}

export function toMac(attr: string, v: unknown): string {
  if (typeof v !== 'string' || !/^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i.test(v)) {
    throw faults.invalidAttr(attr, `'${typeof v === 'string' ? v : JSON.stringify(v)}' is not a valid MAC address`);
  }
  const mac = v.toLowerCase().replace(/-/g, ':');
  if (mac === '00:00:00:00:00:00' || (Number.parseInt(mac.slice(0, 2), 16) & 1) === 1) {
    throw faults.invalidAttr(attr, `'${v}' is not a valid MAC address`);
  }
  return mac;
}

export { parseIp };
