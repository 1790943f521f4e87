// Networks (Neutron's db_base_plugin_v2 networks): the row, its API shape with the ids of its subnets, and the
// DHCP-ports-go-with-it delete.
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../common/log.js';
import { DEVICE_OWNER_DHCP, type Network } from '../common/quantum-client.js';
import type { NetworkRow, QuantumDatabase } from '../db/quantum-schema.js';
import { applyFilters, b, chunks, now, rowById, sortRows, tenantOf, txRetry, type Ctx, type Filters, type Q } from './db-util.js';
import { faults } from './faults.js';
import { checkAttrs, toBool, toInt, toStr, type Body } from './validate.js';

export type NetworkBody = Network & { 'router:external': boolean };

export class NetworkStore {
  constructor(
    private readonly db: Kysely<QuantumDatabase>,
    private readonly log: Logger,
  ) {}

  row(q: Q, id: string): Promise<NetworkRow> {
    return rowById(q, 'networks', id, faults.networkNotFound);
  }

  private async out(q: Q, rows: NetworkRow[]): Promise<NetworkBody[]> {
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

  async list(filters: Filters): Promise<NetworkBody[]> {
    const ext = filters['router:external'];
    if (ext && ext.length && ext.every((v) => toBool('router:external', v))) return [];
    const rows = await applyFilters(this.db.selectFrom('networks').selectAll(), 'networks', filters).execute();
    return this.out(this.db, sortRows(rows));
  }

  async get(id: string): Promise<NetworkBody> {
    return (await this.out(this.db, [await this.row(this.db, id)]))[0]!;
  }

  async create(ctx: Ctx, body: Body): Promise<NetworkBody> {
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
    return (await this.out(this.db, [row]))[0]!;
  }

  async update(id: string, body: Body): Promise<NetworkBody> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'shared', 'mtu'], ['id', 'tenant_id', 'project_id', 'status', 'subnets']);
    await this.row(this.db, id);
    const set: Partial<NetworkRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.admin_state_up !== undefined) set.admin_state_up = toBool('admin_state_up', a.admin_state_up) ? 1 : 0;
    if (a.shared !== undefined) set.shared = toBool('shared', a.shared) ? 1 : 0;
    if (a.mtu !== undefined) set.mtu = toInt('mtu', a.mtu, 68, 65535);
    await this.db.updateTable('networks').set(set).where('id', '=', id).execute();
    return this.get(id);
  }

  /** Neutron: DHCP ports go with the network; any other port makes it NetworkInUse. */
  async delete(id: string): Promise<void> {
    await txRetry(this.db, this.log, 'delete network', async (trx) => {
      await this.row(trx, id);
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
}
