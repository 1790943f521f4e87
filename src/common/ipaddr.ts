// IPv4/IPv6 address and CIDR arithmetic on bigints (what netaddr is to Neutron and Nova): shared by
// quantum-server (validation, allocation) and nova-metadata (network_data.json netmasks).
import { isIPv4, isIPv6 } from 'node:net';

export type IpVersion = 4 | 6;

export interface Ip {
  version: IpVersion;
  value: bigint;
}

export interface Cidr {
  version: IpVersion;
  /** Network address (host bits cleared). */
  network: bigint;
  prefix: number;
}

/** Address width in bits. */
export const ipBits = (v: IpVersion) => (v === 4 ? 32 : 128);

/** Parse a literal IPv4 or IPv6 address (no zone, no prefix); undefined when it is not one. */
export function parseIp(s: string): Ip | undefined {
  if (typeof s !== 'string') return undefined;
  if (isIPv4(s)) {
    const p = s.split('.').map(Number);
    return { version: 4, value: BigInt(((p[0]! << 24) >>> 0) + (p[1]! << 16) + (p[2]! << 8) + p[3]!) };
  }
  if (isIPv6(s) && !s.includes('%')) {
    let str = s;
    // Embedded IPv4 tail (::ffff:1.2.3.4) → two hextets.
    const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(str);
    if (m) {
      const v4 = parseIp(m[2]!)!.value;
      str = `${m[1]}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
    }
    const [head, tail] = str.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    let v = 0n;
    for (const g of groups) v = (v << 16n) | BigInt(Number.parseInt(g, 16));
    return { version: 6, value: v };
  }
  return undefined;
}

export function formatIp(value: bigint, version: IpVersion): string {
  if (version === 4) return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on ties.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** Canonical text of an address (so '10.0.0.02'-style variants never slip past the unique keys). */
export function canonicalIp(s: string): string | undefined {
  const ip = parseIp(s);
  return ip ? formatIp(ip.value, ip.version) : undefined;
}

export function cidrFirst(c: Cidr): bigint {
  return c.network;
}
export function cidrLast(c: Cidr): bigint {
  return c.network | ((1n << BigInt(ipBits(c.version) - c.prefix)) - 1n);
}
export function cidrContains(c: Cidr, ip: Ip): boolean {
  return ip.version === c.version && ip.value >= cidrFirst(c) && ip.value <= cidrLast(c);
}
export function formatCidr(c: Cidr): string {
  return `${formatIp(c.network, c.version)}/${c.prefix}`;
}
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.version === b.version && cidrFirst(a) <= cidrLast(b) && cidrFirst(b) <= cidrLast(a);
}

/** Loose parse: address/prefix with host bits allowed (they are cleared). */
export function parseCidrLoose(s: string): Cidr | undefined {
  if (typeof s !== 'string') return undefined;
  const m = /^([^/\s]+)\/(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const ip = parseIp(m[1]!);
  if (!ip) return undefined;
  const prefix = Number(m[2]);
  if (prefix > ipBits(ip.version)) return undefined;
  const host = (1n << BigInt(ipBits(ip.version) - prefix)) - 1n;
  return { version: ip.version, network: ip.value & ~host, prefix };
}
