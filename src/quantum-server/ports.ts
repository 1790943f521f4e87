// Ports (Neutron's db_base_plugin_v2 ports): the listing the metadata agent's lookup rides on, MAC generation
// from base_mac, and create / update / delete with their addresses allocated in the same transaction.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../common/log.js';
import { canonicalIp } from '../common/ipaddr.js';
import { ROUTER_INTERFACE_OWNERS, type FixedIp, type Port } from '../common/quantum-client.js';
import { isDuplicateKey } from '../db/connection.js';
import type { PortRow, QuantumDatabase, SubnetRow } from '../db/quantum-schema.js';
import { applyFilters, b, chunks, DEVICE_OWNER_ROUTER_GW, now, Retry, rowById, sortRows, tenantOf, txRetry, type Ctx, type Filters, type Q } from './db-util.js';
import { faults } from './faults.js';
import type { NetworkStore } from './networks.js';
import { allocateIps, compareFixedIps, defaultRequests, resolveFixedIps, type IpRequest } from './subnets.js';
import { checkAttrs, toBool, toMac, toStr, toUuid, type Body } from './validate.js';

export interface PortStoreOptions {
  baseMac: string;
  macRetries?: number | undefined;
}

export class PortStore {
  constructor(
    private readonly db: Kysely<QuantumDatabase>,
    private readonly log: Logger,
    private readonly networks: NetworkStore,
    private readonly opts: PortStoreOptions,
  ) {}

  row(q: Q, id: string): Promise<PortRow> {
    return rowById(q, 'ports', id, faults.portNotFound);
  }

  /** Rows in their API shape, with their fixed_ips (one query per 500 ports). */
  async out(q: Q, rows: PortRow[]): Promise<Port[]> {
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
  query(filters: Filters) {
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

  async list(filters: Filters): Promise<Port[]> {
    const rows = await this.query(filters).execute();
    return this.out(this.db, sortRows(rows));
  }

  async get(id: string): Promise<Port> {
    return (await this.out(this.db, [await this.row(this.db, id)]))[0]!;
  }

  /** fa:16:3e:xx:xx:xx from base_mac: the first 3 octets kept (4 if the 4th is not 00), the rest random. */
  randomMac(): string {
    const base = this.opts.baseMac.toLowerCase().split(':');
    const keep = base[3] !== '00' ? 4 : 3;
    const rnd = [...randomBytes(6)].map((x) => x.toString(16).padStart(2, '0'));
    return [...base.slice(0, keep), ...rnd.slice(keep)].join(':');
  }

  async create(ctx: Ctx, body: Body): Promise<Port> {
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
    await this.networks.row(this.db, networkId);
    const subnets = await this.db.selectFrom('subnets').selectAll().where('network_id', '=', networkId).orderBy('created_at').orderBy('id').execute();
    const reqs = a.fixed_ips === undefined ? defaultRequests(subnets) : resolveFixedIps(networkId, subnets, a.fixed_ips);
    const id = randomUUID();
    const macRetries = this.opts.macRetries ?? 16;
    let macAttempts = 0;
    await txRetry(this.db, this.log, 'allocate a port', async (trx, attempt) => {
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
      await allocateIps(trx, row, reqs, attempt);
    });
    const port = await this.get(id);
    this.log.info({ port_id: id, network_id: networkId, mac: port.mac_address, fixed_ips: port.fixed_ips.map((f) => f.ip_address), device_id: port.device_id }, 'created port');
    return port;
  }

  async update(id: string, body: Body): Promise<Port> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'device_id', 'device_owner', 'binding:host_id', 'fixed_ips', 'mac_address'], ['id', 'network_id', 'tenant_id', 'project_id', 'status']);
    const row = await this.row(this.db, id);
    const set: Partial<PortRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.admin_state_up !== undefined) set.admin_state_up = toBool('admin_state_up', a.admin_state_up) ? 1 : 0;
    if (a.device_id !== undefined) set.device_id = toStr('device_id', a.device_id);
    if (a.device_owner !== undefined) set.device_owner = toStr('device_owner', a.device_owner);
    if (a['binding:host_id'] !== undefined) set.binding_host_id = toStr('binding:host_id', a['binding:host_id']);
    if (a.mac_address !== undefined) set.mac_address = toMac('mac_address', a.mac_address);
    let reqs: IpRequest[] | undefined;
    if (a.fixed_ips !== undefined) {
      const subnets: SubnetRow[] = await this.db.selectFrom('subnets').selectAll().where('network_id', '=', row.network_id).orderBy('created_at').execute();
      reqs = resolveFixedIps(row.network_id, subnets, a.fixed_ips);
    }
    await txRetry(this.db, this.log, 'update a port', async (trx, attempt) => {
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
        const todo: IpRequest[] = [];
        for (const r of reqs) {
          const hit = current.find((c) => c.subnet_id === r.subnet.id && (r.ip === undefined || c.ip_address === r.ip) && !keep.has(c.ip_address));
          if (hit) keep.add(hit.ip_address);
          else todo.push(r);
        }
        for (const c of current) {
          if (!keep.has(c.ip_address)) await trx.deleteFrom('ipallocations').where('port_id', '=', id).where('ip_address', '=', c.ip_address).where('subnet_id', '=', c.subnet_id).execute();
        }
        await allocateIps(trx, row, todo, attempt);
      }
    });
    return this.get(id);
  }

  /** Router interface ports must go through remove_router_interface (Neutron's prevent_l3_port_deletion). */
  async delete(id: string, opts: { l3: boolean } = { l3: false }): Promise<void> {
    const row = await this.row(this.db, id);
    if (!opts.l3 && (ROUTER_INTERFACE_OWNERS.includes(row.device_owner) || row.device_owner === DEVICE_OWNER_ROUTER_GW) && row.device_id) {
      const router = await this.db.selectFrom('routers').select('id').where('id', '=', row.device_id).executeTakeFirst();
      if (router) throw faults.l3PortInUse(id, row.device_owner);
    }
    await txRetry(this.db, this.log, 'delete a port', async (trx) => {
      await trx.deleteFrom('ipallocations').where('port_id', '=', id).execute();
      await trx.deleteFrom('ports').where('id', '=', id).execute();
    });
    this.log.info({ port_id: id }, 'deleted port');
  }
}
