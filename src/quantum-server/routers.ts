// Routers and router interfaces (Neutron's l3_db): a router's row, its delete (gateway ports go with it,
// interfaces make it RouterInUse), and add/remove_router_interface by subnet (a new port on the gateway IP) or by
// an existing port, with the duplicate and overlap checks.
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../common/log.js';
import { cidrsOverlap, parseCidrLoose } from '../common/ipaddr.js';
import { DEVICE_OWNER_ROUTER_INTF, ROUTER_INTERFACE_OWNERS, type Port, type Router, type RouterInterfaceInfo } from '../common/quantum-client.js';
import type { QuantumDatabase, RouterRow, SubnetRow } from '../db/quantum-schema.js';
import { applyFilters, b, DEVICE_OWNER_ROUTER_GW, now, rowById, sortRows, tenantOf, txRetry, type Ctx, type Filters, type Q } from './db-util.js';
import { faults } from './faults.js';
import type { PortStore } from './ports.js';
import type { SubnetStore } from './subnets.js';
import { checkAttrs, toBool, toDict, toStr, toUuid, type Body } from './validate.js';

export class RouterStore {
  constructor(
    private readonly db: Kysely<QuantumDatabase>,
    private readonly log: Logger,
    private readonly subnets: SubnetStore,
    private readonly ports: PortStore,
  ) {}

  row(q: Q, id: string): Promise<RouterRow> {
    return rowById(q, 'routers', id, faults.routerNotFound);
  }

  private out(r: RouterRow): Router {
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

  async list(filters: Filters): Promise<Router[]> {
    const rows = await applyFilters(this.db.selectFrom('routers').selectAll(), 'routers', filters).execute();
    return sortRows(rows).map((r) => this.out(r));
  }

  async get(id: string): Promise<Router> {
    return this.out(await this.row(this.db, id));
  }

  async create(ctx: Ctx, body: Body): Promise<Router> {
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
    return this.out(row);
  }

  async update(id: string, body: Body): Promise<Router> {
    const a = checkAttrs(body, ['name', 'admin_state_up', 'external_gateway_info'], ['id', 'tenant_id', 'project_id', 'status']);
    await this.row(this.db, id);
    const set: Partial<RouterRow> = { updated_at: now() };
    if (a.name !== undefined) set.name = toStr('name', a.name);
    if (a.admin_state_up !== undefined) set.admin_state_up = toBool('admin_state_up', a.admin_state_up) ? 1 : 0;
    if (a.external_gateway_info !== undefined) set.external_gateway_info = a.external_gateway_info === null ? null : JSON.stringify(toDict('external_gateway_info', a.external_gateway_info));
    await this.db.updateTable('routers').set(set).where('id', '=', id).execute();
    return this.get(id);
  }

  async delete(id: string): Promise<void> {
    await txRetry(this.db, this.log, 'delete router', async (trx) => {
      await this.row(trx, id);
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

  // ---------------------------------------------------------------- interfaces

  private interfaceInfo(router: RouterRow, port: Port): RouterInterfaceInfo {
    const subnetIds = port.fixed_ips.map((f) => f.subnet_id);
    return { id: router.id, tenant_id: router.tenant_id, port_id: port.id, subnet_id: subnetIds[0] ?? '', subnet_ids: subnetIds, network_id: port.network_id };
  }

  /** The subnets already on a router, for the duplicate and overlap checks (Neutron's _check_for_dup_router_subnets). */
  private async checkSubnets(routerId: string, newSubnets: SubnetRow[]): Promise<void> {
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

  async addInterface(id: string, body: Body): Promise<RouterInterfaceInfo> {
    const router = await this.row(this.db, id);
    const a = toDict('router', body ?? {});
    if (a.subnet_id !== undefined && a.port_id !== undefined) throw faults.badRequest('router', 'Cannot specify both subnet-id and port-id');
    if (a.subnet_id === undefined && a.port_id === undefined) throw faults.badRequest('router', 'Either subnet_id or port_id must be specified');
    if (a.port_id !== undefined) {
      const portId = toUuid('port_id', a.port_id);
      const port = await this.ports.get(portId);
      if (port.device_id) throw faults.portInUse(port.id, port.network_id, port.device_id);
      if (!port.fixed_ips.length) throw faults.badRequest('router', 'Router port must have at least one fixed IP');
      const subnets = await this.db.selectFrom('subnets').selectAll().where('id', 'in', port.fixed_ips.map((f) => f.subnet_id)).execute();
      await this.checkSubnets(id, subnets);
      await this.db.updateTable('ports').set({ device_id: id, device_owner: DEVICE_OWNER_ROUTER_INTF, updated_at: now() }).where('id', '=', portId).where('device_id', '=', '').execute();
      const updated = await this.ports.get(portId);
      if (updated.device_id !== id) throw faults.portInUse(port.id, port.network_id, updated.device_id);
      this.log.info({ router_id: id, port_id: portId }, 'added router interface');
      return this.interfaceInfo(router, updated);
    }
    const subnetId = toUuid('subnet_id', a.subnet_id);
    const subnet = await this.subnets.row(this.db, subnetId);
    if (!subnet.gateway_ip) throw faults.badRequest('router', `Subnet for router interface must have a gateway IP`);
    await this.checkSubnets(id, [subnet]);
    const port = await this.ports.create(
      { projectId: router.tenant_id, isAdmin: true },
      { tenant_id: router.tenant_id, network_id: subnet.network_id, fixed_ips: [{ subnet_id: subnet.id, ip_address: subnet.gateway_ip }], device_id: id, device_owner: DEVICE_OWNER_ROUTER_INTF, name: '', admin_state_up: true },
    );
    // Two concurrent adds of the same subnet to the same router: the gateway IP's unique key lets only one through.
    this.log.info({ router_id: id, subnet_id: subnetId, port_id: port.id }, 'added router interface');
    return this.interfaceInfo(router, port);
  }

  async removeInterface(id: string, body: Body): Promise<RouterInterfaceInfo> {
    const router = await this.row(this.db, id);
    const a = toDict('router', body ?? {});
    if (a.subnet_id === undefined && a.port_id === undefined) throw faults.badRequest('router', 'Either subnet_id or port_id must be specified');
    let port: Port | undefined;
    if (a.port_id !== undefined) {
      const portId = toUuid('port_id', a.port_id);
      const row = await this.db.selectFrom('ports').selectAll().where('id', '=', portId).executeTakeFirst();
      if (!row || row.device_id !== id || !ROUTER_INTERFACE_OWNERS.includes(row.device_owner)) throw faults.routerInterfaceNotFound(id, portId);
      port = await this.ports.get(portId);
      if (a.subnet_id !== undefined && !port.fixed_ips.some((f) => f.subnet_id === a.subnet_id)) throw faults.routerInterfaceNotFoundForSubnet(id, String(a.subnet_id));
    } else {
      const subnetId = toUuid('subnet_id', a.subnet_id);
      await this.subnets.row(this.db, subnetId);
      const rows = await this.db
        .selectFrom('ports')
        .innerJoin('ipallocations', 'ipallocations.port_id', 'ports.id')
        .selectAll('ports')
        .where('ports.device_id', '=', id)
        .where('ports.device_owner', 'in', ROUTER_INTERFACE_OWNERS)
        .where('ipallocations.subnet_id', '=', subnetId)
        .execute();
      if (!rows.length) throw faults.routerInterfaceNotFoundForSubnet(id, subnetId);
      port = (await this.ports.out(this.db, [rows[0]!]))[0]!;
    }
    const info = this.interfaceInfo(router, port);
    await this.ports.delete(port.id, { l3: true });
    this.log.info({ router_id: id, port_id: port.id }, 'removed router interface');
    return info;
  }
}
