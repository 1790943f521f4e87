// Subnets and IP allocation (Neutron's db_base_plugin_v2 subnets and IPAM): the subnet's validation (gateway,
// pools, nameservers, host routes), its delete rules, and how a port's fixed_ips are resolved against its network's
// subnets and allocated inside the port's transaction.
import { randomInt, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../common/log.js';
import { DEVICE_OWNER_DHCP, type AllocationPool, type FixedIp, type HostRoute, type Subnet } from '../common/quantum-client.js';
import { cidrContains, cidrFirst, cidrLast, formatCidr, formatIp, parseCidrLoose, parseIp, type Cidr, type IpVersion } from '../common/ipaddr.js';
import { isDuplicateKey } from '../db/connection.js';
import type { QuantumDatabase, SubnetRow } from '../db/quantum-schema.js';
import { applyFilters, b, now, poolText, Retry, rowById, sortRows, tenantOf, txRetry, type Ctx, type Filters, type Q } from './db-util.js';
import { faults } from './faults.js';
import { defaultPools, type Range } from './ipaddr.js';
import type { NetworkStore } from './networks.js';
import { checkAttrs, toBool, toCidr, toDict, toInt, toIp, toList, toStr, toUuid, type Body } from './validate.js';

export class SubnetStore {
  constructor(
    private readonly db: Kysely<QuantumDatabase>,
    private readonly log: Logger,
    private readonly networks: NetworkStore,
  ) {}

  row(q: Q, id: string): Promise<SubnetRow> {
    return rowById(q, 'subnets', id, faults.subnetNotFound);
  }

  private out(r: SubnetRow): Subnet {
    return {
      id: r.id,
      name: r.name,
      tenant_id: r.tenant_id,
      project_id: r.tenant_id,
      network_id: r.network_id,
      cidr: r.cidr,
      ip_version: Number(r.ip_version) as 4 | 6,
      gateway_ip: r.gateway_ip,
      enable_dhcp: b(r.enable_dhcp),
      allocation_pools: JSON.parse(r.allocation_pools) as AllocationPool[],
      dns_nameservers: JSON.parse(r.dns_nameservers) as string[],
      host_routes: JSON.parse(r.host_routes) as HostRoute[],
      ipv6_ra_mode: r.ipv6_ra_mode,
      ipv6_address_mode: r.ipv6_address_mode,
    };
  }

  async list(filters: Filters): Promise<Subnet[]> {
    // No subnet here is served by an advanced service provider (what Nova's X-Metadata-Provider mode asks for).
    if (filters.advanced_service_providers?.length) return [];
    const rows = await applyFilters(this.db.selectFrom('subnets').selectAll(), 'subnets', filters).execute();
    return sortRows(rows).map((r) => this.out(r));
  }

  async get(id: string): Promise<Subnet> {
    return this.out(await this.row(this.db, id));
  }

  async create(ctx: Ctx, body: Body): Promise<Subnet> {
    const a = checkAttrs(
      body,
      ['name', 'network_id', 'cidr', 'ip_version', 'gateway_ip', 'enable_dhcp', 'allocation_pools', 'dns_nameservers', 'host_routes', 'ipv6_ra_mode', 'ipv6_address_mode', 'tenant_id', 'project_id', 'subnetpool_id'],
      ['id'],
    );
    if (a.network_id === undefined) throw faults.missingAttr('network_id');
    if (a.cidr === undefined || a.cidr === null) throw faults.missingAttr('cidr');
    const networkId = toUuid('network_id', a.network_id);
    const loose = toCidr('cidr', a.cidr);
    const ipVersion = a.ip_version === undefined ? loose.version : (toInt('ip_version', a.ip_version) as IpVersion);
    if (ipVersion !== 4 && ipVersion !== 6) throw faults.invalidAttr('ip_version', `'${String(a.ip_version)}' is not in [4, 6]`);
    if (loose.version !== ipVersion) throw faults.invalidInput(`cidr '${String(a.cidr)}' does not match the ip_version '${ipVersion}'`);
    const cidr: Cidr = loose;
    if (cidr.prefix === 0) throw faults.invalidInput(`${formatCidr(cidr)} is not allowed as a subnet cidr`);
    const cidrText = formatCidr(cidr);

    // Gateway: absent → first host; null → none (the --no-gateway case).
    let gateway: string | null;
    if (a.gateway_ip === undefined) gateway = formatIp(cidrFirst(cidr) + 1n, ipVersion);
    else if (a.gateway_ip === null) gateway = null;
    else gateway = checkGateway(toIp('gateway_ip', a.gateway_ip), cidr);
    const gw = gateway === null ? undefined : parseIp(gateway)!.value;

    let pools: Range[];
    if (a.allocation_pools === undefined || a.allocation_pools === null) pools = defaultPools(cidr, gw !== undefined && cidrContains(cidr, parseIp(gateway!)!) ? gw : undefined);
    else pools = checkPools(a.allocation_pools, cidr, gateway);

    const dns = a.dns_nameservers === undefined || a.dns_nameservers === null ? [] : checkNameservers(a.dns_nameservers, ipVersion);
    const routes = a.host_routes === undefined || a.host_routes === null ? [] : checkRoutes(a.host_routes, ipVersion);
    const raMode = optMode('ipv6_ra_mode', a.ipv6_ra_mode);
    const addrMode = optMode('ipv6_address_mode', a.ipv6_address_mode);
    if ((raMode || addrMode) && ipVersion !== 6) throw faults.invalidInput('ipv6_ra_mode or ipv6_address_mode cannot be set when ip_version is 4');

    await this.networks.row(this.db, networkId);
    const t = now();
    const row: SubnetRow = {
      id: randomUUID(),
      tenant_id: tenantOf(ctx, a),
      network_id: networkId,
      name: a.name === undefined ? '' : toStr('name', a.name),
      cidr: cidrText,
      ip_version: ipVersion,
      gateway_ip: gateway,
      enable_dhcp: a.enable_dhcp === undefined ? 1 : toBool('enable_dhcp', a.enable_dhcp) ? 1 : 0,
      allocation_pools: JSON.stringify(pools.map((p) => ({ start: formatIp(p.first, ipVersion), end: formatIp(p.last, ipVersion) }))),
      dns_nameservers: JSON.stringify(dns),
      host_routes: JSON.stringify(routes),
      ipv6_ra_mode: raMode,
      ipv6_address_mode: addrMode,
      created_at: t,
      updated_at: t,
    };
    await this.db.insertInto('subnets').values(row).execute();
    this.log.info({ subnet_id: row.id, network_id: networkId, cidr: cidrText }, 'created subnet');
    return this.out(row);
  }

  async update(id: string, body: Body): Promise<Subnet> {
    const a = checkAttrs(body, ['name', 'gateway_ip', 'enable_dhcp', 'dns_nameservers', 'host_routes', 'allocation_pools'], ['id', 'cidr', 'network_id', 'ip_version', 'tenant_id', 'project_id']);
    const row = await this.row(this.db, id);
    const cidr = parseCidrLoose(row.cidr)!;
    const set: Partial<SubnetRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.enable_dhcp !== undefined) set.enable_dhcp = toBool('enable_dhcp', a.enable_dhcp) ? 1 : 0;
    if (a.gateway_ip !== undefined) set.gateway_ip = a.gateway_ip === null ? null : checkGateway(toIp('gateway_ip', a.gateway_ip), cidr);
    const gateway = set.gateway_ip !== undefined ? set.gateway_ip : row.gateway_ip;
    if (a.allocation_pools !== undefined) {
      const pools = checkPools(a.allocation_pools, cidr, gateway);
      set.allocation_pools = JSON.stringify(pools.map((p) => ({ start: formatIp(p.first, cidr.version), end: formatIp(p.last, cidr.version) })));
    } else if (set.gateway_ip !== undefined && gateway !== null) {
      const g = parseIp(gateway)!.value;
      const hit = (JSON.parse(row.allocation_pools) as AllocationPool[]).find((p) => g >= parseIp(p.start)!.value && g <= parseIp(p.end)!.value);
      if (hit) throw faults.gatewayConflict(gateway, poolText(hit));
    }
    if (a.dns_nameservers !== undefined) set.dns_nameservers = JSON.stringify(a.dns_nameservers === null ? [] : checkNameservers(a.dns_nameservers, cidr.version));
    if (a.host_routes !== undefined) set.host_routes = JSON.stringify(a.host_routes === null ? [] : checkRoutes(a.host_routes, cidr.version));
    await this.db.updateTable('subnets').set(set).where('id', '=', id).execute();
    return this.get(id);
  }

  /** Neutron: DHCP ports lose their address on the subnet; any other allocation makes it SubnetInUse. */
  async delete(id: string): Promise<void> {
    await txRetry(this.db, this.log, 'delete subnet', async (trx) => {
      await this.row(trx, id);
      const busy = await trx
        .selectFrom('ipallocations')
        .innerJoin('ports', 'ports.id', 'ipallocations.port_id')
        .select('ports.id')
        .where('ipallocations.subnet_id', '=', id)
        .where('ports.device_owner', '!=', DEVICE_OWNER_DHCP)
        .limit(1)
        .executeTakeFirst();
      if (busy) throw faults.subnetInUse(id);
      await trx.deleteFrom('ipallocations').where('subnet_id', '=', id).execute();
      await trx.deleteFrom('subnets').where('id', '=', id).execute();
    });
    this.log.info({ subnet_id: id }, 'deleted subnet');
  }
}

function checkGateway(gw: string, cidr: Cidr): string {
  const ip = parseIp(gw)!;
  if (ip.version !== cidr.version) throw faults.invalidInput(`gateway_ip '${gw}' does not match the ip_version '${cidr.version}'`);
  if (cidrContains(cidr, ip) && cidr.version === 4 && cidr.prefix <= 30 && (ip.value === cidrFirst(cidr) || ip.value === cidrLast(cidr))) {
    throw faults.invalidInput(`Gateway is not valid on subnet`);
  }
  return gw;
}

function checkPools(raw: unknown, cidr: Cidr, gateway: string | null): Range[] {
  const out: Range[] = [];
  const texts: string[] = [];
  for (const item of toList('allocation_pools', raw)) {
    const d = toDict('allocation_pools', item);
    if (d.start === undefined || d.end === undefined) throw faults.invalidAttr('allocation_pools', `Invalid data format for IP pool: '${JSON.stringify(item)}'`);
    const s = parseIp(toIp('allocation_pools', d.start))!;
    const e = parseIp(toIp('allocation_pools', d.end))!;
    const text = `${formatIp(s.value, s.version)}-${formatIp(e.value, e.version)}`;
    if (s.version !== cidr.version || e.version !== cidr.version || s.value > e.value) throw faults.invalidAllocationPool(text);
    if (!cidrContains(cidr, s) || !cidrContains(cidr, e)) throw faults.outOfBoundsPool(text, formatCidr(cidr));
    out.push({ first: s.value, last: e.value });
    texts.push(text);
  }
  for (let i = 0; i < out.length; i++) {
    for (let j = i + 1; j < out.length; j++) {
      if (out[i]!.first <= out[j]!.last && out[j]!.first <= out[i]!.last) throw faults.overlappingPools(texts[i]!, texts[j]!, formatCidr(cidr));
    }
  }
  if (gateway !== null) {
    const g = parseIp(gateway)!.value;
    const hit = out.findIndex((r) => g >= r.first && g <= r.last);
    if (hit >= 0) throw faults.gatewayConflict(gateway, texts[hit]!);
  }
  return out;
}

function checkNameservers(raw: unknown, v: IpVersion): string[] {
  const out: string[] = [];
  for (const x of toList('dns_nameservers', raw)) {
    const ip = toIp('dns_nameservers', x);
    if (out.includes(ip)) throw faults.invalidAttr('dns_nameservers', `Duplicate nameserver '${ip}'`);
    if (parseIp(ip)!.version !== v) throw faults.invalidInput(`dns_nameserver '${ip}' does not match the ip_version '${v}'`);
    out.push(ip);
  }
  return out;
}

function checkRoutes(raw: unknown, v: IpVersion): HostRoute[] {
  const out: HostRoute[] = [];
  for (const x of toList('host_routes', raw)) {
    const d = toDict('host_routes', x);
    if (d.destination === undefined || d.nexthop === undefined) throw faults.invalidAttr('host_routes', `Invalid data format for hostroute: '${JSON.stringify(x)}'`);
    const dest = toCidr('host_routes', d.destination);
    const hop = toIp('host_routes', d.nexthop);
    if (dest.version !== v || parseIp(hop)!.version !== v) throw faults.invalidInput(`host_route '${JSON.stringify(x)}' does not match the ip_version '${v}'`);
    const r = { destination: formatCidr(dest), nexthop: hop };
    if (out.some((o) => o.destination === r.destination && o.nexthop === r.nexthop)) throw faults.invalidAttr('host_routes', `Duplicate hostroute '${JSON.stringify(x)}'`);
    out.push(r);
  }
  return out;
}

function optMode(attr: string, v: unknown): string | null {
  if (v === undefined || v === null) return null;
  const s = toStr(attr, v);
  if (!['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac'].includes(s)) throw faults.invalidAttr(attr, `'${s}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac']`);
  return s;
}

// ---------------------------------------------------------------- IP allocation

/** One address a port asks for: a given ip on a subnet, or any free one (from the first of anyOf with room). */
export interface IpRequest {
  subnet: SubnetRow;
  ip?: string | undefined;
  anyOf?: SubnetRow[];
}

/** An address a port may hold on this subnet: inside the CIDR, not the network (or v4 broadcast) address. */
function validHostIn(s: SubnetRow, value: bigint, version: IpVersion): boolean {
  const c = parseCidrLoose(s.cidr)!;
  if (!cidrContains(c, { version, value })) return false;
  if (version === 4 && c.prefix <= 30 && (value === cidrFirst(c) || value === cidrLast(c))) return false;
  if (version === 6 && c.prefix < 128 && value === cidrFirst(c)) return false;
  return true;
}

/** Resolve a port's requested fixed_ips against the network's subnets (Neutron's _test_fixed_ips_for_port). */
export function resolveFixedIps(networkId: string, subnets: SubnetRow[], raw: unknown): IpRequest[] {
  const out: IpRequest[] = [];
  for (const item of toList('fixed_ips', raw)) {
    const d = toDict('fixed_ips', item);
    for (const k of Object.keys(d)) if (k !== 'subnet_id' && k !== 'ip_address') throw faults.invalidAttr('fixed_ips', `Unrecognized attribute(s) '${k}'`);
    let subnet: SubnetRow | undefined;
    if (d.subnet_id !== undefined) {
      const sid = toUuid('fixed_ips', d.subnet_id);
      subnet = subnets.find((s) => s.id === sid);
      if (!subnet) throw faults.invalidInput(`Failed to create port on network ${networkId}, because fixed_ips included invalid subnet ${sid}`);
    }
    let ip: string | undefined;
    if (d.ip_address !== undefined) {
      ip = toIp('fixed_ips', d.ip_address);
      const parsed = parseIp(ip)!;
      if (subnet) {
        if (!validHostIn(subnet, parsed.value, parsed.version)) throw faults.invalidIpForSubnet(ip);
      } else {
        subnet = subnets.find((s) => validHostIn(s, parsed.value, parsed.version));
        if (!subnet) throw faults.invalidIpForNetwork(ip);
      }
    }
    if (!subnet) throw faults.invalidAttr('fixed_ips', `'${JSON.stringify(item)}' names neither a subnet_id nor an ip_address`);
    if (ip && out.some((o) => o.ip === ip)) throw faults.invalidInput(`Duplicate IP address '${ip}'`);
    out.push({ subnet, ip });
  }
  return out;
}

/** Default allocation: one address from the first v4 subnet with room, and one from the first v6 subnet. */
export function defaultRequests(subnets: SubnetRow[]): IpRequest[] {
  const out: IpRequest[] = [];
  for (const v of [4, 6]) {
    const of = subnets.filter((s) => Number(s.ip_version) === v);
    if (of.length) out.push({ subnet: of[0]!, anyOf: of });
  }
  return out;
}

/** The n-th free address of a subnet's pools (n > 0 only when retrying after lost races). */
async function pickIp(trx: Q, subnet: SubnetRow, skip: number): Promise<string | undefined> {
  const v = Number(subnet.ip_version) as IpVersion;
  const used = new Set((await trx.selectFrom('ipallocations').select('ip_address').where('subnet_id', '=', subnet.id).execute()).map((r) => parseIp(r.ip_address)?.value));
  if (subnet.gateway_ip) used.add(parseIp(subnet.gateway_ip)!.value);
  let firstFree: bigint | undefined;
  for (const p of JSON.parse(subnet.allocation_pools) as AllocationPool[]) {
    const last = parseIp(p.end)!.value;
    for (let x = parseIp(p.start)!.value; x <= last; x++) {
      if (used.has(x)) continue;
      if (firstFree === undefined) firstFree = x;
      if (skip-- <= 0) return formatIp(x, v);
    }
  }
  return firstFree === undefined ? undefined : formatIp(firstFree, v);
}

/** Insert the allocations for a port inside trx; explicit addresses in use → IpAddressInUse, lost races → Retry. */
export async function allocateIps(trx: Q, port: { id: string; network_id: string }, reqs: IpRequest[], attempt: number): Promise<void> {
  const skip = attempt === 0 ? 0 : randomInt(0, Math.min(2 + attempt * 3, 64));
  for (const r of reqs) {
    if (r.ip) {
      try {
        await trx.insertInto('ipallocations').values({ port_id: port.id, subnet_id: r.subnet.id, network_id: port.network_id, ip_address: r.ip }).execute();
      } catch (e) {
        if (isDuplicateKey(e)) throw faults.ipInUse(port.network_id, r.ip);
        throw e;
      }
      continue;
    }
    let ip: string | undefined;
    let subnet = r.subnet;
    for (const s of r.anyOf ?? [r.subnet]) {
      ip = await pickIp(trx, s, skip);
      if (ip) {
        subnet = s;
        break;
      }
    }
    if (!ip) throw faults.ipGenerationFailure(port.network_id);
    try {
      await trx.insertInto('ipallocations').values({ port_id: port.id, subnet_id: subnet.id, network_id: port.network_id, ip_address: ip }).execute();
    } catch (e) {
      if (isDuplicateKey(e)) throw new Retry();
      throw e;
    }
  }
}

/** A port's fixed_ips in address order (v4 before v6). */
export function compareFixedIps(a: FixedIp, b: FixedIp): number {
  const x = parseIp(a.ip_address);
  const y = parseIp(b.ip_address);
  if (!x || !y) return a.ip_address.localeCompare(b.ip_address);
  if (x.version !== y.version) return x.version - y.version;
  return x.value < y.value ? -1 : x.value > y.value ? 1 : 0;
}
