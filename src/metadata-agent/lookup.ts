// (remote address, router | network) → (instance id, tenant id), as Neutron's MetadataProxyHandler
// _get_instance_and_tenant_id does: the router's interface networks, then the ports holding that
// fixed IP on them (or, for an IPv6 link-local source, the port with the EUI-64-derived MAC).
// Exactly one port identifies the instance; anything else is "not found".
import { isIP, isIPv6 } from 'node:net';
import { canonicalIp } from '../common/ipaddr.js';
import { ROUTER_INTERFACE_OWNERS, type Filters, type Port } from '../common/quantum-client.js';
import { TtlCache } from '../common/ttl-cache.js';

/** The part of QuantumClient the lookup needs (tests may count its calls). */
export interface PortLister {
  listPorts(f: Filters): Promise<Port[]>;
}

export interface Identity {
  instanceId: string;
  tenantId: string;
}

export interface LookupResult {
  identity: Identity | undefined;
  /** Whether any part of the answer came from the cache (a Nova 404 then warrants a fresh look). */
  cached: boolean;
  /** Ports that matched (0, 1 or several), for the log line. */
  matches: number;
}

/** IPv4-mapped IPv6 → IPv4; anything else unchanged. */
export function unmapAddress(addr: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1]! : addr;
}

/**
 * The address a guest's request came from, as ports hold it: IPv4-mapped → IPv4, and a zone dropped
 * (fe80::...%tap0: the proxy's link, which says nothing about the guest; the router or network id does).
 */
export function guestAddress(addr: string): string {
  const i = addr.indexOf('%');
  return unmapAddress(i >= 0 ? addr.slice(0, i) : addr);
}

/** Expand an IPv6 address into its 8 16-bit groups, or undefined if it is not one. */
export function ipv6Groups(addr: string): number[] | undefined {
  if (!isIPv6(addr)) return undefined;
  let a = addr.split('%')[0]!.toLowerCase();
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two groups.
  const dq = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (dq) {
    const [b0, b1, b2, b3] = dq.slice(1).map(Number) as [number, number, number, number];
    a = `${a.slice(0, dq.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail] = a.includes('::') ? (a.split('::') as [string, string]) : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const groups = [...h, ...Array<string>(fill).fill('0'), ...t].map((g) => Number.parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : undefined;
}

export function isIPv6LinkLocal(addr: string): boolean {
  const g = ipv6Groups(addr);
  return g !== undefined && (g[0]! & 0xffc0) === 0xfe80;
}

/**
 * The MAC an EUI-64 interface identifier was built from (fe80::5054:ff:fede:5bbf → 52:54:00:de:5b:bf),
 * or undefined when the identifier is not EUI-64 (privacy addresses are not supported, as in Neutron).
 */
export function macFromEui64(addr: string): string | undefined {
  const g = ipv6Groups(addr);
  if (!g) return undefined;
  const b = [g[4]! >> 8, g[4]! & 0xff, g[5]! >> 8, g[5]! & 0xff, g[6]! >> 8, g[6]! & 0xff, g[7]! >> 8, g[7]! & 0xff];
  if (b[3] !== 0xff || b[4] !== 0xfe) return undefined;
  const mac = [b[0]! ^ 0x02, b[1]!, b[2]!, b[5]!, b[6]!, b[7]!];
  return mac.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export class InstanceLookup {
  private readonly routerNets: TtlCache<string[]> | undefined;
  private readonly ports: TtlCache<Port[]> | undefined;
  /** Identical lookups already on their way to quantum-server: a boot storm asks once, not N times. */
  private readonly inflight = new Map<string, Promise<unknown>>();

  constructor(
    private readonly client: PortLister,
    cacheTtlMs: number,
  ) {
    if (cacheTtlMs > 0) {
      this.routerNets = new TtlCache(cacheTtlMs, { maxEntries: 10_000 });
      this.ports = new TtlCache(cacheTtlMs, { maxEntries: 10_000 });
    }
  }

  get caching(): boolean {
    return this.ports !== undefined;
  }

  /** Cached lookups dropped because a port or network changed (tests, logs). */
  invalidated = 0;

  private dropPorts(prefix: string): void {
    if (!this.ports) return;
    for (const k of this.ports.keys()) if (k.startsWith(prefix) && this.ports.delete(k)) this.invalidated++;
  }

  /**
   * A port was created, changed or deleted: every cached lookup for an address it has or had (or for its MAC,
   * for link-local sources) goes, negative ones included, and so do its router's networks if it is a router
   * interface. The next request asks quantum-server again instead of answering with the previous owner.
   */
  portChanged(...ports: Array<Partial<Pick<Port, 'fixed_ips' | 'mac_address' | 'device_owner' | 'device_id'>> | undefined>): void {
    for (const p of ports) {
      if (!p) continue;
      for (const f of p.fixed_ips ?? []) this.dropPorts(`p ${canonicalIp(f.ip_address) ?? f.ip_address} `);
      if (p.mac_address) this.dropPorts(`p mac:${p.mac_address.toLowerCase()} `);
      if (p.device_id && p.device_owner && ROUTER_INTERFACE_OWNERS.includes(p.device_owner) && this.routerNets?.delete(`r ${p.device_id}`)) this.invalidated++;
    }
  }

  /** A network went away: every lookup that searched it, and every router's network list (one may have named it). */
  networkDeleted(networkId: string): void {
    if (!this.ports) return;
    for (const k of this.ports.keys()) if (k.split(' ')[2]?.split(',').includes(networkId) && this.ports.delete(k)) this.invalidated++;
    this.routerNets?.clear();
  }

  private once<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const p = this.inflight.get(key) as Promise<T> | undefined;
    if (p) return p;
    const q = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, q);
    return q;
  }

  /** Networks of the router's interfaces (device_owner in ROUTER_INTERFACE_OWNERS). */
  async routerNetworks(routerId: string, skipCache = false): Promise<{ value: string[]; cached: boolean }> {
    const key = `r ${routerId}`;
    if (!skipCache) {
      const hit = this.routerNets?.get(key);
      if (hit) return { value: hit, cached: true };
    }
    const nets = await this.once(key + (skipCache ? ' fresh' : ''), async () => {
      const ports = await this.client.listPorts({ device_id: routerId, device_owner: ROUTER_INTERFACE_OWNERS });
      return [...new Set(ports.map((p) => p.network_id))].sort();
    });
    this.routerNets?.set(key, nets);
    return { value: nets, cached: false };
  }

  /** Ports on `networks` with fixed IP `ip`, or with the EUI-64 MAC for an IPv6 link-local `ip`. */
  async portsForAddress(ip: string, networks: readonly string[], skipCache = false): Promise<{ value: Port[]; cached: boolean }> {
    // Keyed by what a port change can name: the canonical address, or the MAC a link-local address came from.
    const ll = isIPv6LinkLocal(ip);
    const mac = ll ? macFromEui64(ip) : undefined;
    const key = `p ${ll ? `mac:${mac ?? ip}` : (canonicalIp(ip) ?? ip)} ${networks.join(',')}`;
    if (!skipCache) {
      const hit = this.ports?.get(key);
      if (hit) return { value: hit, cached: true };
    }
    const ports = await this.once(key + (skipCache ? ' fresh' : ''), async () => {
      if (networks.length === 0) return [];
      if (ll) {
        if (!mac) return [];
        return this.client.listPorts({ network_id: networks, mac_address: mac });
      }
      return this.client.listPorts({ network_id: networks, fixed_ips: `ip_address=${ip}` });
    });
    this.ports?.set(key, ports);
    return { value: ports, cached: false };
  }

  /**
   * Neutron's _get_instance_and_tenant_id. `remoteAddress` must already be a valid IP (the handler checks).
   * Both ids, or neither, → no identity and no quantum-server call (bug 1865036).
   */
  async find(remoteAddress: string, routerId: string | undefined, networkId: string | undefined, skipCache = false): Promise<LookupResult> {
    if (!routerId === !networkId) return { identity: undefined, cached: false, matches: 0 };
    const ip = guestAddress(remoteAddress);
    if (!isIP(ip)) return { identity: undefined, cached: false, matches: 0 };
    let cached = false;
    let nets: string[];
    if (networkId) nets = [networkId];
    else {
      const r = await this.routerNetworks(routerId!, skipCache);
      cached = r.cached;
      nets = r.value;
    }
    const p = await this.portsForAddress(ip, nets, skipCache);
    cached ||= p.cached;
    const ports = p.value;
    if (ports.length !== 1) return { identity: undefined, cached, matches: ports.length };
    // A port bound to no device identifies no instance (Neutron would send Nova an empty X-Instance-ID).
    if (!ports[0]!.device_id) return { identity: undefined, cached, matches: 1 };
    return { identity: { instanceId: ports[0]!.device_id, tenantId: ports[0]!.tenant_id }, cached, matches: 1 };
  }
}
