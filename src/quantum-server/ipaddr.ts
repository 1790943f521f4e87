// Neutron's subnet validation and default allocation pools, over the common address arithmetic.
import { cidrFirst, cidrLast, ipBits, parseCidrLoose, parseIp, type Cidr } from '../common/ipaddr.js';

/**
 * Neutron's validate_subnet: a CIDR without '/' is refused with the /32 (or /128) it recommends; anything
 * unparseable "is not a valid IP subnet". Host bits are accepted and normalised by the caller.
 * Returns the parsed CIDR or the validation message.
 */
export function validateSubnetCidr(s: unknown): Cidr | string {
  if (typeof s !== 'string' || s.trim() !== s || s === '') return `'${String(s)}' is not a valid IP subnet`;
  if (!s.includes('/')) {
    const ip = parseIp(s);
    if (ip) return `'${s}' isn't a recognized IP subnet cidr, '${s}/${ipBits(ip.version)}' is recommended`;
    return `'${s}' is not a valid IP subnet`;
  }
  const c = parseCidrLoose(s);
  return c ?? `'${s}' is not a valid IP subnet`;
}

export interface Range {
  first: bigint;
  last: bigint;
}

/** Neutron's default pools: the whole CIDR minus network (and v4 broadcast) minus the gateway. */
export function defaultPools(c: Cidr, gateway: bigint | undefined): Range[] {
  let first = cidrFirst(c);
  let last = cidrLast(c);
  if (c.version === 4) {
    if (c.prefix <= 30) {
      first += 1n;
      last -= 1n;
    }
  } else if (c.prefix < 128) {
    first += 1n; // the subnet-router anycast address
  }
  if (first > last) return [];
  if (gateway === undefined || gateway < first || gateway > last) return [{ first, last }];
  const out: Range[] = [];
  if (gateway > first) out.push({ first, last: gateway - 1n });
  if (gateway < last) out.push({ first: gateway + 1n, last });
  return out;
}
