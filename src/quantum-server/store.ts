// The plugin's tables: Neutron's db_base_plugin_v2 + l3_db semantics (networks, subnets, ports, routers)
// over the Kysely schema. Agents and their scheduling live in agents.ts and scheduler.ts.
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import type { Logger } from '../common/log.js';
import { isDuplicateKey, type Db } from '../db/connection.js';
import type { NetworkRow, PortRow, QuantumDatabase, RouterRow, SubnetRow } from '../db/quantum-schema.js';
import {
  DEVICE_OWNER_DHCP,
  DEVICE_OWNER_ROUTER_INTF,
  ROUTER_INTERFACE_OWNERS,
  type AllocationPool,
  type FixedIp,
  type HostRoute,
  type Network,
  type Port,
  type Router,
  type RouterInterfaceInfo,
  type Subnet,
} from '../common/quantum-client.js';
import { faults } from './faults.js';
import { canonicalIp, cidrContains, cidrFirst, cidrLast, cidrsOverlap, formatCidr, formatIp, parseCidrLoose, parseIp, type Cidr, type IpVersion } from '../common/ipaddr.js';
import { applyFilters, b, chunks, DEVICE_OWNER_ROUTER_GW, now, poolText, Retry, rowById, sortRows, txRetry, type Filters, type Q } from './db-util.js';
import { defaultPools, type Range } from './ipaddr.js';
import { checkAttrs, toBool, toCidr, toDict, toInt, toIp, toList, toMac, toStr, toUuid, type Body } from './validate.js';

export type { Filters } from './db-util.js';
export type NetworkBody = Network & { 'router:external': boolean };

export interface Ctx {
  /** The project new resources belong to unless the body names one. */
  projectId: string;
  isAdmin: boolean;
}

export interface StoreOptions {
  baseMac: string;
  macRetries?: number;
  log: Logger;
}

export class QuantumStore {
  readonly db: Kysely<QuantumDatabase>;
  private readonly log: Logger;
  constructor(
    readonly handle: Db<QuantumDatabase>,
    private readonly opts: StoreOptions,
  ) {
    this.db = handle.db;
    this.log = opts.log;
  }

  /** Run fn in a transaction; retry on lost races (duplicate automatically chosen values, deadlocks). */
  private txRetry<T>(what: string, fn: (trx: Transaction<QuantumDatabase>, attempt: number) => Promise<T>, max = 40): Promise<T> {
    return txRetry(this.db, this.log, what, fn, max);
  }

  // ---------------------------------------------------------------- networks

  private networkRow(q: Q, id: string): Promise<NetworkRow> {
    return rowById(q, 'networks', id, faults.networkNotFound);
  }

  private async networksOut(q: Q, rows: NetworkRow[]): Promise<NetworkBody[]> {
    const subs = new Map<string, string[]>();
    for (const part of chunks(rows.map((r) => r.id))) {
      if (!part.length) continue;
      const ss = await q.selectFrom('subnets').select(['id', 'network_id', 'created_at']).where('network_id', 'in', part).orderBy('created_at').orderBy('id').execute();
      for (const s of ss) subs.set(s.network_id, [...(subs.get(s.network_id) ?? []), s.id]);
    }
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      tenant_id: r.tenant_id,
      project_id: r.tenant_id,
      status: r.status,
      admin_state_up: b(r.admin_state_up),
      shared: b(r.shared),
      mtu: Number(r.mtu),
      subnets: subs.get(r.id) ?? [],
      'router:external': false,
    }));
  }

  async listNetworks(filters: Filters): Promise<NetworkBody[]> {
    const ext = filters['router:external'];
    if (ext && ext.length && ext.every((v) => toBool('router:external', v))) return [];
    const rows = await applyFilters(this.db.selectFrom('networks').selectAll(), 'networks', filters).execute();
    return this.networksOut(this.db, sortRows(rows));
  }

  async getNetwork(id: string): Promise<NetworkBody> {
    return (await this.networksOut(this.db, [await this.networkRow(this.db, id)]))[0]!;
  }

  async createNetwork(ctx: Ctx, body: Body): Promise<NetworkBody> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'shared', 'mtu', 'tenant_id', 'project_id', 'router:external'], ['id', 'status', 'subnets']);
    if (a['router:external'] !== undefined && toBool('router:external', a['router:external'])) {
      throw faults.invalidInput('external networks are not supported by this quantum-server');
    }
    const t = now();
    const row: NetworkRow = {
      id: randomUUID(),
      tenant_id: tenantOf(ctx, a),
      name: a.name === undefined ? '' : toStr('name', a.name),
      status: 'ACTIVE',
      admin_state_up: a.admin_state_up === undefined ? 1 : toBool('admin_state_up', a.admin_state_up) ? 1 : 0,
      shared: a.shared === undefined ? 0 : toBool('shared', a.shared) ? 1 : 0,
      mtu: a.mtu === undefined ? 1500 : toInt('mtu', a.mtu, 68, 65535),
      created_at: t,
      updated_at: t,
    };
    await this.db.insertInto('networks').values(row).execute();
    this.log.info({ network_id: row.id, tenant_id: row.tenant_id }, 'created network');
    return (await this.networksOut(this.db, [row]))[0]!;
  }

  async updateNetwork(id: string, body: Body): Promise<NetworkBody> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'shared', 'mtu'], ['id', 'tenant_id', 'project_id', 'status', 'subnets']);
    await this.networkRow(this.db, id);
    const set: Partial<NetworkRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.admin_state_up !== undefined) set.admin_state_up = toBool('admin_state_up', a.admin_state_up) ? 1 : 0;
    if (a.shared !== undefined) set.shared = toBool('shared', a.shared) ? 1 : 0;
    if (a.mtu !== undefined) set.mtu = toInt('mtu', a.mtu, 68, 65535);
    await this.db.updateTable('networks').set(set).where('id', '=', id).execute();
    return this.getNetwork(id);
  }

  /** Neutron: DHCP ports go with the network; any other port makes it NetworkInUse. */
  async deleteNetwork(id: string): Promise<void> {
    await this.txRetry('delete network', async (trx) => {
      await this.networkRow(trx, id);
      const busy = await trx.selectFrom('ports').select('id').where('network_id', '=', id).where('device_owner', '!=', DEVICE_OWNER_DHCP).limit(1).executeTakeFirst();
      if (busy) throw faults.networkInUse(id);
      const ports = await trx.selectFrom('ports').select('id').where('network_id', '=', id).execute();
      for (const part of chunks(ports.map((p) => p.id))) {
        await trx.deleteFrom('ipallocations').where('port_id', 'in', part).execute();
        await trx.deleteFrom('ports').where('id', 'in', part).execute();
      }
      await trx.deleteFrom('ipallocations').where('network_id', '=', id).execute();
      await trx.deleteFrom('subnets').where('network_id', '=', id).execute();
      await trx.deleteFrom('networks').where('id', '=', id).execute();
    });
    this.log.info({ network_id: id }, 'deleted network');
  }

  // ---------------------------------------------------------------- subnets

  private subnetRow(q: Q, id: string): Promise<SubnetRow> {
    return rowById(q, 'subnets', id, faults.subnetNotFound);
  }

  private subnetOut(r: SubnetRow): Subnet {
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

  async listSubnets(filters: Filters): Promise<Subnet[]> {
    // No subnet here is served by an advanced service provider (what Nova's X-Metadata-Provider mode asks for).
    if (filters.advanced_service_providers?.length) return [];
    const rows = await applyFilters(this.db.selectFrom('subnets').selectAll(), 'subnets', filters).execute();
    return sortRows(rows).map((r) => this.subnetOut(r));
  }

  async getSubnet(id: string): Promise<Subnet> {
    return this.subnetOut(await this.subnetRow(this.db, id));
  }

  async createSubnet(ctx: Ctx, body: Body): Promise<Subnet> {
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
    else gateway = this.checkGateway(toIp('gateway_ip', a.gateway_ip), cidr);
    const gw = gateway === null ? undefined : parseIp(gateway)!.value;

    let pools: Range[];
    if (a.allocation_pools === undefined || a.allocation_pools === null) pools = defaultPools(cidr, gw !== undefined && cidrContains(cidr, parseIp(gateway!)!) ? gw : undefined);
    else pools = this.checkPools(a.allocation_pools, cidr, gateway);

    const dns = a.dns_nameservers === undefined || a.dns_nameservers === null ? [] : this.checkNameservers(a.dns_nameservers, ipVersion);
    const routes = a.host_routes === undefined || a.host_routes === null ? [] : this.checkRoutes(a.host_routes, ipVersion);
    const raMode = optMode('ipv6_ra_mode', a.ipv6_ra_mode);
    const addrMode = optMode('ipv6_address_mode', a.ipv6_address_mode);
    if ((raMode || addrMode) && ipVersion !== 6) throw faults.invalidInput('ipv6_ra_mode or ipv6_address_mode cannot be set when ip_version is 4');

    await this.networkRow(this.db, networkId);
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
    return this.subnetOut(row);
  }

  private checkGateway(gw: string, cidr: Cidr): string {
    const ip = parseIp(gw)!;
    if (ip.version !== cidr.version) throw faults.invalidInput(`gateway_ip '${gw}' does not match the ip_version '${cidr.version}'`);
    if (cidrContains(cidr, ip) && cidr.version === 4 && cidr.prefix <= 30 && (ip.value === cidrFirst(cidr) || ip.value === cidrLast(cidr))) {
      throw faults.invalidInput(`Gateway is not valid on subnet`);
    }
    return gw;
  }

  private checkPools(raw: unknown, cidr: Cidr, gateway: string | null): Range[] {
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

  private checkNameservers(raw: unknown, v: IpVersion): string[] {
    const out: string[] = [];
    for (const x of toList('dns_nameservers', raw)) {
      const ip = toIp('dns_nameservers', x);
      if (out.includes(ip)) throw faults.invalidAttr('dns_nameservers', `Duplicate nameserver '${ip}'`);
      if (parseIp(ip)!.version !== v) throw faults.invalidInput(`dns_nameserver '${ip}' does not match the ip_version '${v}'`);
      out.push(ip);
    }
    return out;
  }

  private checkRoutes(raw: unknown, v: IpVersion): HostRoute[] {
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

  async updateSubnet(id: string, body: Body): Promise<Subnet> {
    const a = checkAttrs(body, ['name', 'gateway_ip', 'enable_dhcp', 'dns_nameservers', 'host_routes', 'allocation_pools'], ['id', 'cidr', 'network_id', 'ip_version', 'tenant_id', 'project_id']);
    const row = await this.subnetRow(this.db, id);
    const cidr = parseCidrLoose(row.cidr)!;
    const set: Partial<SubnetRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.enable_dhcp !== undefined) set.enable_dhcp = toBool('enable_dhcp', a.enable_dhcp) ? 1 : 0;
    if (a.gateway_ip !== undefined) set.gateway_ip = a.gateway_ip === null ? null : this.checkGateway(toIp('gateway_ip', a.gateway_ip), cidr);
    const gateway = set.gateway_ip !== undefined ? set.gateway_ip : row.gateway_ip;
    if (a.allocation_pools !== undefined) {
      const pools = this.checkPools(a.allocation_pools, cidr, gateway);
      set.allocation_pools = JSON.stringify(pools.map((p) => ({ start: formatIp(p.first, cidr.version), end: formatIp(p.last, cidr.version) })));
    } else if (set.gateway_ip !== undefined && gateway !== null) {
      const g = parseIp(gateway)!.value;
      const hit = (JSON.parse(row.allocation_pools) as AllocationPool[]).find((p) => g >= parseIp(p.start)!.value && g <= parseIp(p.end)!.value);
      if (hit) throw faults.gatewayConflict(gateway, poolText(hit));
    }
    if (a.dns_nameservers !== undefined) set.dns_nameservers = JSON.stringify(a.dns_nameservers === null ? [] : this.checkNameservers(a.dns_nameservers, cidr.version));
    if (a.host_routes !== undefined) set.host_routes = JSON.stringify(a.host_routes === null ? [] : this.checkRoutes(a.host_routes, cidr.version));
    await this.db.updateTable('subnets').set(set).where('id', '=', id).execute();
    return this.getSubnet(id);
  }

  /** Neutron: DHCP ports lose their address on the subnet; any other allocation makes it SubnetInUse. */
  async deleteSubnet(id: string): Promise<void> {
    await this.txRetry('delete subnet', async (trx) => {
      await this.subnetRow(trx, id);
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

  // ---------------------------------------------------------------- ports

  private portRow(q: Q, id: string): Promise<PortRow> {
    return rowById(q, 'ports', id, faults.portNotFound);
  }

  private async portsOut(q: Q, rows: PortRow[]): Promise<Port[]> {
    const ips = new Map<string, FixedIp[]>();
    for (const part of chunks(rows.map((r) => r.id))) {
      if (!part.length) continue;
      const allocs = await q.selectFrom('ipallocations').select(['port_id', 'subnet_id', 'ip_address']).where('port_id', 'in', part).execute();
      for (const x of allocs) ips.set(x.port_id, [...(ips.get(x.port_id) ?? []), { subnet_id: x.subnet_id, ip_address: x.ip_address }]);
    }
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      tenant_id: r.tenant_id,
      project_id: r.tenant_id,
      network_id: r.network_id,
      mac_address: r.mac_address,
      fixed_ips: (ips.get(r.id) ?? []).sort(compareFixedIps),
      device_id: r.device_id,
      device_owner: r.device_owner,
      admin_state_up: b(r.admin_state_up),
      status: r.status,
      'binding:host_id': r.binding_host_id,
    }));
  }

  /**
   * Port listing. A fixed_ips filter becomes `ports.id IN (SELECT port_id FROM ipallocations WHERE ip_address IN (..)
   * [AND network_id IN (..)] [AND subnet_id IN (..)])`, an index seek on (ip_address, network_id): the metadata
   * agent's lookup stays constant-time however many ports exist.
   */
  portsQuery(filters: Filters) {
    const { fixed_ips: fixed, ...plain } = filters;
    const nets = plain.network_id && plain.network_id.length ? plain.network_id : undefined;
    // With a fixed_ips filter the network filter moves into the subquery (ipallocations carries network_id):
    // left on ports, SQLite would walk every port of those networks instead of seeking the address.
    if (fixed && fixed.length) delete plain.network_id;
    let qb = applyFilters(this.db.selectFrom('ports').selectAll('ports'), 'ports', plain, 'ports.');
    if (fixed && fixed.length) {
      const ips: string[] = [];
      const subnets: string[] = [];
      for (const f of fixed) {
        const m = /^(ip_address|subnet_id)=(.*)$/.exec(f);
        if (!m) throw faults.invalidInput(`fixed_ips filter '${f}' must look like ip_address=IP or subnet_id=ID`);
        if (m[1] === 'ip_address') ips.push(canonicalIp(m[2]!) ?? m[2]!);
        else subnets.push(m[2]!);
      }
      qb = qb.where('ports.id', 'in', (eb) => {
        let sub = eb.selectFrom('ipallocations').select('ipallocations.port_id');
        if (ips.length) sub = sub.where('ipallocations.ip_address', 'in', ips);
        if (nets) sub = sub.where('ipallocations.network_id', 'in', nets);
        if (subnets.length) sub = sub.where('ipallocations.subnet_id', 'in', subnets);
        return sub;
      });
    }
    return qb;
  }

  async listPorts(filters: Filters): Promise<Port[]> {
    const rows = await this.portsQuery(filters).execute();
    return this.portsOut(this.db, sortRows(rows));
  }

  async getPort(id: string): Promise<Port> {
    return (await this.portsOut(this.db, [await this.portRow(this.db, id)]))[0]!;
  }

  /** fa:16:3e:xx:xx:xx from base_mac: the first 3 octets kept (4 if the 4th is not 00), the rest random. */
  randomMac(): string {
    const base = this.opts.baseMac.toLowerCase().split(':');
    const keep = base[3] !== '00' ? 4 : 3;
    const rnd = [...randomBytes(6)].map((x) => x.toString(16).padStart(2, '0'));
    return [...base.slice(0, keep), ...rnd.slice(keep)].join(':');
  }

  /** Resolve a port's requested fixed_ips against the network's subnets (Neutron's _test_fixed_ips_for_port). */
  private resolveFixedIps(networkId: string, subnets: SubnetRow[], raw: unknown): Array<{ subnet: SubnetRow; ip?: string }> {
    const out: Array<{ subnet: SubnetRow; ip?: string }> = [];
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
  private defaultRequests(subnets: SubnetRow[]): Array<{ subnet: SubnetRow; ip?: string; anyOf?: SubnetRow[] }> {
    const out: Array<{ subnet: SubnetRow; anyOf?: SubnetRow[] }> = [];
    for (const v of [4, 6]) {
      const of = subnets.filter((s) => Number(s.ip_version) === v);
      if (of.length) out.push({ subnet: of[0]!, anyOf: of });
    }
    return out;
  }

  /** The n-th free address of a subnet's pools (n > 0 only when retrying after lost races). */
  private async pickIp(trx: Q, subnet: SubnetRow, skip: number): Promise<string | undefined> {
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
  private async allocate(trx: Q, port: { id: string; network_id: string }, reqs: Array<{ subnet: SubnetRow; ip?: string; anyOf?: SubnetRow[] }>, attempt: number): Promise<void> {
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
        ip = await this.pickIp(trx, s, skip);
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

  async createPort(ctx: Ctx, body: Body): Promise<Port> {
    const a = checkAttrs(
      body,
      ['name', 'network_id', 'mac_address', 'fixed_ips', 'device_id', 'device_owner', 'admin_state_up', 'binding:host_id', 'tenant_id', 'project_id'],
      ['id', 'status'],
    );
    if (a.network_id === undefined) throw faults.missingAttr('network_id');
    const networkId = toUuid('network_id', a.network_id);
    const mac = a.mac_address === undefined ? undefined : toMac('mac_address', a.mac_address);
    const base = {
      tenant_id: tenantOf(ctx, a),
      network_id: networkId,
      name: a.name === undefined ? '' : toStr('name', a.name),
      device_id: a.device_id === undefined ? '' : toStr('device_id', a.device_id),
      device_owner: a.device_owner === undefined ? '' : toStr('device_owner', a.device_owner),
      admin_state_up: a.admin_state_up === undefined ? 1 : toBool('admin_state_up', a.admin_state_up) ? 1 : 0,
      binding_host_id: a['binding:host_id'] === undefined ? '' : toStr('binding:host_id', a['binding:host_id']),
    };
    await this.networkRow(this.db, networkId);
    const subnets = await this.db.selectFrom('subnets').selectAll().where('network_id', '=', networkId).orderBy('created_at').orderBy('id').execute();
    const reqs = a.fixed_ips === undefined ? this.defaultRequests(subnets) : this.resolveFixedIps(networkId, subnets, a.fixed_ips);
    const id = randomUUID();
    const macRetries = this.opts.macRetries ?? 16;
    let macAttempts = 0;
    await this.txRetry('allocate a port', async (trx, attempt) => {
      const t = now();
      const row: PortRow = { id, ...base, mac_address: mac ?? this.randomMac(), status: 'DOWN', created_at: t, updated_at: t };
      try {
        await trx.insertInto('ports').values(row).execute();
      } catch (e) {
        if (!isDuplicateKey(e)) throw e;
        if (mac) throw faults.macInUse(networkId, mac);
        if (++macAttempts >= macRetries) throw faults.macGenerationFailure(networkId);
        throw new Retry();
      }
      await this.allocate(trx, row, reqs, attempt);
    });
    const port = await this.getPort(id);
    this.log.info({ port_id: id, network_id: networkId, mac: port.mac_address, fixed_ips: port.fixed_ips.map((f) => f.ip_address), device_id: port.device_id }, 'created port');
    return port;
  }

  async updatePort(id: string, body: Body): Promise<Port> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'device_id', 'device_owner', 'binding:host_id', 'fixed_ips', 'mac_address'], ['id', 'network_id', 'tenant_id', 'project_id', 'status']);
    const row = await this.portRow(this.db, id);
    const set: Partial<PortRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.admin_state_up !== undefined) set.admin_state_up = toBool('admin_state_up', a.admin_state_up) ? 1 : 0;
    if (a.device_id !== undefined) set.device_id = toStr('device_id', a.device_id);
    if (a.device_owner !== undefined) set.device_owner = toStr('device_owner', a.device_owner);
    if (a['binding:host_id'] !== undefined) set.binding_host_id = toStr('binding:host_id', a['binding:host_id']);
    if (a.mac_address !== undefined) set.mac_address = toMac('mac_address', a.mac_address);
    let reqs: Array<{ subnet: SubnetRow; ip?: string }> | undefined;
    if (a.fixed_ips !== undefined) {
      const subnets = await this.db.selectFrom('subnets').selectAll().where('network_id', '=', row.network_id).orderBy('created_at').execute();
      reqs = this.resolveFixedIps(row.network_id, subnets, a.fixed_ips);
    }
    await this.txRetry('update a port', async (trx, attempt) => {
      try {
        await trx.updateTable('ports').set(set).where('id', '=', id).execute();
      } catch (e) {
        if (isDuplicateKey(e)) throw faults.macInUse(row.network_id, set.mac_address ?? '');
        throw e;
      }
      if (reqs) {
        // Addresses the port keeps stay where they are; a bare {subnet_id} keeps the port's address there if it has one.
        const current = await trx.selectFrom('ipallocations').select(['subnet_id', 'ip_address']).where('port_id', '=', id).execute();
        const keep = new Set<string>();
        const todo: typeof reqs = [];
        for (const r of reqs) {
          const hit = current.find((c) => c.subnet_id === r.subnet.id && (r.ip === undefined || c.ip_address === r.ip) && !keep.has(c.ip_address));
          if (hit) keep.add(hit.ip_address);
          else todo.push(r);
        }
        for (const c of current) {
          if (!keep.has(c.ip_address)) await trx.deleteFrom('ipallocations').where('port_id', '=', id).where('ip_address', '=', c.ip_address).where('subnet_id', '=', c.subnet_id).execute();
        }
        await this.allocate(trx, row, todo, attempt);
      }
    });
    return this.getPort(id);
  }

  /** Router interface ports must go through remove_router_interface (Neutron's prevent_l3_port_deletion). */
  async deletePort(id: string, opts: { l3: boolean } = { l3: false }): Promise<void> {
    const row = await this.portRow(this.db, id);
    if (!opts.l3 && (ROUTER_INTERFACE_OWNERS.includes(row.device_owner) || row.device_owner === DEVICE_OWNER_ROUTER_GW) && row.device_id) {
      const router = await this.db.selectFrom('routers').select('id').where('id', '=', row.device_id).executeTakeFirst();
      if (router) throw faults.l3PortInUse(id, row.device_owner);
    }
    await this.txRetry('delete a port', async (trx) => {
      await trx.deleteFrom('ipallocations').where('port_id', '=', id).execute();
      await trx.deleteFrom('ports').where('id', '=', id).execute();
    });
    this.log.info({ port_id: id }, 'deleted port');
  }

  // ---------------------------------------------------------------- routers

  private routerRow(q: Q, id: string): Promise<RouterRow> {
    return rowById(q, 'routers', id, faults.routerNotFound);
  }

  private routerOut(r: RouterRow): Router {
    return {
      id: r.id,
      name: r.name,
      tenant_id: r.tenant_id,
      project_id: r.tenant_id,
      status: r.status,
      admin_state_up: b(r.admin_state_up),
      external_gateway_info: r.external_gateway_info ? (JSON.parse(r.external_gateway_info) as Record<string, unknown>) : null,
    };
  }

  async listRouters(filters: Filters): Promise<Router[]> {
    const rows = await applyFilters(this.db.selectFrom('routers').selectAll(), 'routers', filters).execute();
    return sortRows(rows).map((r) => this.routerOut(r));
  }

  async getRouter(id: string): Promise<Router> {
    return this.routerOut(await this.routerRow(this.db, id));
  }

  async createRouter(ctx: Ctx, body: Body): Promise<Router> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'external_gateway_info', 'tenant_id', 'project_id'], ['id', 'status']);
    const t = now();
    const row: RouterRow = {
      id: randomUUID(),
      tenant_id: tenantOf(ctx, a),
      name: a.name === undefined ? '' : toStr('name', a.name),
      status: 'ACTIVE',
      admin_state_up: a.admin_state_up === undefined ? 1 : toBool('admin_state_up', a.admin_state_up) ? 1 : 0,
      external_gateway_info: a.external_gateway_info === undefined || a.external_gateway_info === null ? null : JSON.stringify(toDict('external_gateway_info', a.external_gateway_info)),
      created_at: t,
      updated_at: t,
    };
    await this.db.insertInto('routers').values(row).execute();
    this.log.info({ router_id: row.id }, 'created router');
    return this.routerOut(row);
  }

  async updateRouter(id: string, body: Body): Promise<Router> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'external_gateway_info'], ['id', 'tenant_id', 'project_id', 'status']);
    await this.routerRow(this.db, id);
    const set: Partial<RouterRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.admin_state_up !== undefined) set.admin_state_up = toBool('admin_state_up', a.admin_state_up) ? 1 : 0;
    if (a.external_gateway_info !== undefined) set.external_gateway_info = a.external_gateway_info === null ? null : JSON.stringify(toDict('external_gateway_info', a.external_gateway_info));
    await this.db.updateTable('routers').set(set).where('id', '=', id).execute();
    return this.getRouter(id);
  }

  async deleteRouter(id: string): Promise<void> {
    await this.txRetry('delete router', async (trx) => {
      await this.routerRow(trx, id);
      const busy = await trx.selectFrom('ports').select('id').where('device_id', '=', id).where('device_owner', 'in', ROUTER_INTERFACE_OWNERS).limit(1).executeTakeFirst();
      if (busy) throw faults.routerInUse(id);
      const gw = await trx.selectFrom('ports').select('id').where('device_id', '=', id).where('device_owner', '=', DEVICE_OWNER_ROUTER_GW).execute();
      for (const p of gw) {
        await trx.deleteFrom('ipallocations').where('port_id', '=', p.id).execute();
        await trx.deleteFrom('ports').where('id', '=', p.id).execute();
      }
      await trx.deleteFrom('routers').where('id', '=', id).execute();
    });
    this.log.info({ router_id: id }, 'deleted router');
  }

  private interfaceInfo(router: RouterRow, port: Port): RouterInterfaceInfo {
    const subnetIds = port.fixed_ips.map((f) => f.subnet_id);
    return { id: router.id, tenant_id: router.tenant_id, port_id: port.id, subnet_id: subnetIds[0] ?? '', subnet_ids: subnetIds, network_id: port.network_id };
  }

  /** The subnets already on a router, for the duplicate and overlap checks (Neutron's _check_for_dup_router_subnets). */
  private async checkRouterSubnets(routerId: string, newSubnets: SubnetRow[]): Promise<void> {
    const rows = await this.db
      .selectFrom('ports')
      .innerJoin('ipallocations', 'ipallocations.port_id', 'ports.id')
      .innerJoin('subnets', 'subnets.id', 'ipallocations.subnet_id')
      .select(['subnets.id as id', 'subnets.cidr as cidr'])
      .where('ports.device_id', '=', routerId)
      .where('ports.device_owner', 'in', ROUTER_INTERFACE_OWNERS)
      .execute();
    for (const n of newSubnets) {
      for (const r of rows) {
        if (r.id === n.id) throw faults.badRequest('router', `Router already has a port on subnet ${n.id}`);
        if (cidrsOverlap(parseCidrLoose(r.cidr)!, parseCidrLoose(n.cidr)!)) {
          throw faults.badRequest('router', `Cidr ${n.cidr} of subnet ${n.id} overlaps with cidr ${r.cidr} of subnet ${r.id}`);
        }
      }
    }
  }

  async addRouterInterface(id: string, body: Body): Promise<RouterInterfaceInfo> {
    const router = await this.routerRow(this.db, id);
    const a = toDict('router', body ?? {});
    if (a.subnet_id !== undefined && a.port_id !== undefined) throw faults.badRequest('router', 'Cannot specify both subnet-id and port-id');
    if (a.subnet_id === undefined && a.port_id === undefined) throw faults.badRequest('router', 'Either subnet_id or port_id must be specified');
    if (a.port_id !== undefined) {
      const portId = toUuid('port_id', a.port_id);
      const port = await this.getPort(portId);
      if (port.device_id) throw faults.portInUse(port.id, port.network_id, port.device_id);
      if (!port.fixed_ips.length) throw faults.badRequest('router', 'Router port must have at least one fixed IP');
      const subnets = await this.db.selectFrom('subnets').selectAll().where('id', 'in', port.fixed_ips.map((f) => f.subnet_id)).execute();
      await this.checkRouterSubnets(id, subnets);
      await this.db.updateTable('ports').set({ device_id: id, device_owner: DEVICE_OWNER_ROUTER_INTF, updated_at: now() }).where('id', '=', portId).where('device_id', '=', '').execute();
      const updated = await this.getPort(portId);
      if (updated.device_id !== id) throw faults.portInUse(port.id, port.network_id, updated.device_id);
      this.log.info({ router_id: id, port_id: portId }, 'added router interface');
      return this.interfaceInfo(router, updated);
    }
    const subnetId = toUuid('subnet_id', a.subnet_id);
    const subnet = await this.subnetRow(this.db, subnetId);
    if (!subnet.gateway_ip) throw faults.badRequest('router', `Subnet for router interface must have a gateway IP`);
    await this.checkRouterSubnets(id, [subnet]);
    const port = await this.createPort(
      { projectId: router.tenant_id, isAdmin: true },
      { tenant_id: router.tenant_id, network_id: subnet.network_id, fixed_ips: [{ subnet_id: subnet.id, ip_address: subnet.gateway_ip }], device_id: id, device_owner: DEVICE_OWNER_ROUTER_INTF, name: '', admin_state_up: true },
    );
    // Two concurrent adds of the same subnet to the same router: the gateway IP's unique key lets only one through.
    this.log.info({ router_id: id, subnet_id: subnetId, port_id: port.id }, 'added router interface');
    return this.interfaceInfo(router, port);
  }

  async removeRouterInterface(id: string, body: Body): Promise<RouterInterfaceInfo> {
    const router = await this.routerRow(this.db, id);
    const a = toDict('router', body ?? {});
    if (a.subnet_id === undefined && a.port_id === undefined) throw faults.badRequest('router', 'Either subnet_id or port_id must be specified');
    let port: Port | undefined;
    if (a.port_id !== undefined) {
      const portId = toUuid('port_id', a.port_id);
      const row = await this.db.selectFrom('ports').selectAll().where('id', '=', portId).executeTakeFirst();
      if (!row || row.device_id !== id || !ROUTER_INTERFACE_OWNERS.includes(row.device_owner)) throw faults.routerInterfaceNotFound(id, portId);
      port = await this.getPort(portId);
      if (a.subnet_id !== undefined && !port.fixed_ips.some((f) => f.subnet_id === a.subnet_id)) throw faults.routerInterfaceNotFoundForSubnet(id, String(a.subnet_id));
    } else {
      const subnetId = toUuid('subnet_id', a.subnet_id);
      await this.subnetRow(this.db, subnetId);
      const rows = await this.db
        .selectFrom('ports')
        .innerJoin('ipallocations', 'ipallocations.port_id', 'ports.id')
        .selectAll('ports')
        .where('ports.device_id', '=', id)
        .where('ports.device_owner', 'in', ROUTER_INTERFACE_OWNERS)
        .where('ipallocations.subnet_id', '=', subnetId)
        .execute();
      if (!rows.length) throw faults.routerInterfaceNotFoundForSubnet(id, subnetId);
      port = (await this.portsOut(this.db, [rows[0]!]))[0]!;
    }
    const info = this.interfaceInfo(router, port);
    await this.deletePort(port.id, { l3: true });
    this.log.info({ router_id: id, port_id: port.id }, 'removed router interface');
    return info;
  }

}

function tenantOf(ctx: Ctx, a: Body): string {
  const t = a.tenant_id ?? a.project_id;
  if (a.tenant_id !== undefined && a.project_id !== undefined && a.tenant_id !== a.project_id) {
    throw faults.invalidInput(`'project_id' and 'tenant_id' do not match`);
  }
  return t === undefined || t === null ? ctx.projectId : toStr('tenant_id', t);
}

function optMode(attr: string, v: unknown): string | null {
  if (v === undefined || v === null) return null;
  const s = toStr(attr, v);
  if (!['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac'].includes(s)) throw faults.invalidAttr(attr, `'${s}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac']`);
  return s;
}

/** An address a port may hold on this subnet: inside the CIDR, not the network (or v4 broadcast) address. */
function validHostIn(s: SubnetRow, value: bigint, version: IpVersion): boolean {
  const c = parseCidrLoose(s.cidr)!;
  if (!cidrContains(c, { version, value })) return false;
  if (version === 4 && c.prefix <= 30 && (value === cidrFirst(c) || value === cidrLast(c))) return false;
  if (version === 6 && c.prefix < 128 && value === cidrFirst(c)) return false;
  return true;
}

function compareFixedIps(a: FixedIp, b: FixedIp): number {
  const x = parseIp(a.ip_address);
  const y = parseIp(b.ip_address);
  if (!x || !y) return a.ip_address.localeCompare(b.ip_address);
  if (x.version !== y.version) return x.version - y.version;
  return x.value < y.value ? -1 : x.value > y.value ? 1 : 0;
}
