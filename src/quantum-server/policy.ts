// Neutron's default policy for this subset (neutron/conf/policies, Zed, enforce_scope off): the admin role sees
// and does everything; anyone else sees their project's networks (plus shared ones), subnets (plus those of
// shared networks), ports (theirs and those on their networks) and routers; cannot act for another project,
// share a network, read agents, or give a port a device_id that belongs to someone else (a victim's server or
// router: the port-with-a-victim's-device_id attack). A resource one cannot see is "not found", as in Neutron.
import { ApiError } from '../common/errors.js';
import { ROUTER_INTERFACE_OWNERS, type Agent, type Port, type Router, type Subnet } from '../common/quantum-client.js';
import { faults } from './faults.js';
import type { QuantumPlugin } from './plugin.js';
import type { Ctx, Filters, NetworkBody } from './store.js';
import { toBool, type Body } from './validate.js';

export const policyFaults = {
  notAuthorized: (action: string) => new ApiError(403, 'PolicyNotAuthorized', `rule:${action} is disallowed by policy`),
  otherProject: () => new ApiError(400, 'HTTPBadRequest', "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges"),
  deviceNotOwned: (deviceId: string) => new ApiError(409, 'DeviceIDNotOwnedByTenant', `The following device_id ${deviceId} is not owned by your tenant or matches another tenants router.`),
};

type Owned = { tenant_id: string };
const owns = (ctx: Ctx, r: Owned) => ctx.isAdmin || r.tenant_id === ctx.projectId;

export class QuantumPolicy {
  constructor(private readonly p: QuantumPlugin) {}

  private get store() {
    return this.p.store;
  }

  /** populate_project_info: a non-admin names no other project. */
  private checkProject(ctx: Ctx, body: Body): void {
    if (ctx.isAdmin) return;
    for (const k of ['tenant_id', 'project_id']) {
      const v = body[k];
      if (v !== undefined && v !== null && v !== ctx.projectId) throw policyFaults.otherProject();
    }
  }

  private sharedFlag(body: Body): boolean {
    return body.shared !== undefined && body.shared !== null && toBool('shared', body.shared);
  }

  // ---------------------------------------------------------------- networks

  private netVisible(ctx: Ctx, n: NetworkBody): boolean {
    return owns(ctx, n) || n.shared;
  }

  async listNetworks(ctx: Ctx, f: Filters): Promise<NetworkBody[]> {
    const all = await this.store.listNetworks(f);
    return ctx.isAdmin ? all : all.filter((n) => this.netVisible(ctx, n));
  }

  async getNetwork(ctx: Ctx, id: string): Promise<NetworkBody> {
    const n = await this.store.getNetwork(id);
    if (!this.netVisible(ctx, n)) throw faults.networkNotFound(id);
    return n;
  }

  /** A network the caller owns (update, delete, subnets on it); visible but not owned → 403. */
  private async ownNetwork(ctx: Ctx, id: string, action: string): Promise<NetworkBody> {
    const n = await this.getNetwork(ctx, id);
    if (!owns(ctx, n)) throw policyFaults.notAuthorized(action);
    return n;
  }

  async createNetwork(ctx: Ctx, body: Body): Promise<NetworkBody> {
    this.checkProject(ctx, body);
    if (!ctx.isAdmin && this.sharedFlag(body)) throw policyFaults.notAuthorized('create_network:shared');
    return this.p.createNetwork(ctx, body);
  }

  async updateNetwork(ctx: Ctx, id: string, body: Body): Promise<NetworkBody> {
    await this.ownNetwork(ctx, id, 'update_network');
    if (!ctx.isAdmin && body.shared !== undefined) throw policyFaults.notAuthorized('update_network:shared');
    return this.p.updateNetwork(id, body);
  }

  async deleteNetwork(ctx: Ctx, id: string): Promise<void> {
    await this.ownNetwork(ctx, id, 'delete_network');
    return this.p.deleteNetwork(id);
  }

  // ---------------------------------------------------------------- subnets

  private async sharedNetworkIds(): Promise<Set<string>> {
    return new Set((await this.store.listNetworks({ shared: ['true'] })).map((n) => n.id));
  }

  async listSubnets(ctx: Ctx, f: Filters): Promise<Subnet[]> {
    const all = await this.store.listSubnets(f);
    if (ctx.isAdmin) return all;
    const shared = all.some((s) => s.tenant_id !== ctx.projectId) ? await this.sharedNetworkIds() : new Set<string>();
    return all.filter((s) => s.tenant_id === ctx.projectId || shared.has(s.network_id));
  }

  async getSubnet(ctx: Ctx, id: string): Promise<Subnet> {
    const s = await this.store.getSubnet(id);
    if (owns(ctx, s)) return s;
    const n = await this.store.getNetwork(s.network_id).catch(() => undefined);
    if (!n?.shared) throw faults.subnetNotFound(id);
    return s;
  }

  async createSubnet(ctx: Ctx, body: Body): Promise<Subnet> {
    this.checkProject(ctx, body);
    if (!ctx.isAdmin && typeof body.network_id === 'string') await this.ownNetwork(ctx, body.network_id, 'create_subnet');
    return this.p.createSubnet(ctx, body);
  }

  private async ownSubnet(ctx: Ctx, id: string, action: string): Promise<Subnet> {
    const s = await this.getSubnet(ctx, id);
    if (!owns(ctx, s)) throw policyFaults.notAuthorized(action);
    return s;
  }

  async updateSubnet(ctx: Ctx, id: string, body: Body): Promise<Subnet> {
    await this.ownSubnet(ctx, id, 'update_subnet');
    return this.p.updateSubnet(id, body);
  }

  async deleteSubnet(ctx: Ctx, id: string): Promise<void> {
    await this.ownSubnet(ctx, id, 'delete_subnet');
    return this.p.deleteSubnet(id);
  }

  // ---------------------------------------------------------------- ports

  private async ownNetworkIds(ctx: Ctx): Promise<Set<string>> {
    return new Set((await this.store.listNetworks({ tenant_id: [ctx.projectId] })).map((n) => n.id));
  }

  async listPorts(ctx: Ctx, f: Filters): Promise<Port[]> {
    const all = await this.store.listPorts(f);
    if (ctx.isAdmin) return all;
    const mine = all.some((p) => p.tenant_id !== ctx.projectId) ? await this.ownNetworkIds(ctx) : new Set<string>();
    return all.filter((p) => p.tenant_id === ctx.projectId || mine.has(p.network_id));
  }

  async getPort(ctx: Ctx, id: string): Promise<Port> {
    const p = await this.store.getPort(id);
    if (owns(ctx, p)) return p;
    const n = await this.store.getNetwork(p.network_id).catch(() => undefined);
    if (!n || n.tenant_id !== ctx.projectId) throw faults.portNotFound(id);
    return p;
  }

  /**
   * What a non-admin may put in device_id / device_owner: network:* owners only on a network they own (Neutron's
   * network_device rule), and no device that is someone else's: another project's router (Neutron's
   * DeviceIDNotOwnedByTenant) or a device another project's ports are bound to (a victim's server).
   */
  private async checkDevice(ctx: Ctx, networkId: string, deviceId: string, deviceOwner: string, portId?: string): Promise<void> {
    if (ctx.isAdmin) return;
    if (deviceOwner.startsWith('network:')) {
      const n = await this.store.getNetwork(networkId).catch(() => undefined);
      if (n && n.tenant_id !== ctx.projectId) throw policyFaults.notAuthorized('create_port:device_owner');
    }
    if (!deviceId) return;
    const router = (await this.store.listRouters({ id: [deviceId] }))[0];
    if (router && router.tenant_id !== ctx.projectId) throw policyFaults.deviceNotOwned(deviceId);
    if (ROUTER_INTERFACE_OWNERS.includes(deviceOwner) && !router) return;
    const others = (await this.store.listPorts({ device_id: [deviceId] })).filter((p) => p.id !== portId && p.tenant_id !== ctx.projectId);
    if (others.length) throw policyFaults.deviceNotOwned(deviceId);
  }

  async createPort(ctx: Ctx, body: Body): Promise<Port> {
    this.checkProject(ctx, body);
    if (!ctx.isAdmin && typeof body.network_id === 'string') {
      await this.getNetwork(ctx, body.network_id);
      await this.checkDevice(ctx, body.network_id, typeof body.device_id === 'string' ? body.device_id : '', typeof body.device_owner === 'string' ? body.device_owner : '');
    }
    return this.p.createPort(ctx, body);
  }

  private async ownPort(ctx: Ctx, id: string, action: string): Promise<Port> {
    const p = await this.getPort(ctx, id);
    if (!owns(ctx, p) && !ctx.isAdmin) {
      const n = await this.store.getNetwork(p.network_id).catch(() => undefined);
      if (!n || n.tenant_id !== ctx.projectId) throw policyFaults.notAuthorized(action);
    }
    return p;
  }

  async updatePort(ctx: Ctx, id: string, body: Body): Promise<Port> {
    const p = await this.ownPort(ctx, id, 'update_port');
    if (!ctx.isAdmin && (body.device_id !== undefined || body.device_owner !== undefined)) {
      const deviceId = typeof body.device_id === 'string' ? body.device_id : p.device_id;
      const owner = typeof body.device_owner === 'string' ? body.device_owner : p.device_owner;
      await this.checkDevice(ctx, p.network_id, deviceId, owner, p.id);
    }
    return this.p.updatePort(id, body);
  }

  async deletePort(ctx: Ctx, id: string): Promise<void> {
    await this.ownPort(ctx, id, 'delete_port');
    return this.p.deletePort(id);
  }

  // ---------------------------------------------------------------- routers

  async listRouters(ctx: Ctx, f: Filters): Promise<Router[]> {
    const all = await this.store.listRouters(f);
    return ctx.isAdmin ? all : all.filter((r) => r.tenant_id === ctx.projectId);
  }

  async getRouter(ctx: Ctx, id: string): Promise<Router> {
    const r = await this.store.getRouter(id);
    if (!owns(ctx, r)) throw faults.routerNotFound(id);
    return r;
  }

  async createRouter(ctx: Ctx, body: Body): Promise<Router> {
    this.checkProject(ctx, body);
    return this.p.createRouter(ctx, body);
  }

  async updateRouter(ctx: Ctx, id: string, body: Body): Promise<Router> {
    await this.getRouter(ctx, id);
    return this.p.updateRouter(id, body);
  }

  async deleteRouter(ctx: Ctx, id: string): Promise<void> {
    await this.getRouter(ctx, id);
    return this.p.deleteRouter(id);
  }

  /** add/remove_router_interface: the caller's router, and a subnet (or port) it can see. */
  async routerInterface(ctx: Ctx, id: string, body: Body, add: boolean) {
    if (!ctx.isAdmin) {
      await this.getRouter(ctx, id);
      if (typeof body.subnet_id === 'string') await this.getSubnet(ctx, body.subnet_id);
      if (typeof body.port_id === 'string') {
        const port = await this.store.getPort(body.port_id).catch(() => undefined);
        if (!port || port.tenant_id !== ctx.projectId) throw faults.portNotFound(body.port_id);
      }
    }
    return add ? this.p.addRouterInterface(id, body) : this.p.removeRouterInterface(id, body);
  }

  // ---------------------------------------------------------------- agents, scheduling, RPC: admin only

  /** Listing agents as non-admin shows none (Neutron filters out what policy hides). */
  async listAgents(ctx: Ctx, f: Filters): Promise<Agent[]> {
    return ctx.isAdmin ? this.p.agents.listAgents(f) : [];
  }

  async getAgent(ctx: Ctx, id: string): Promise<Agent> {
    if (!ctx.isAdmin) throw faults.agentNotFound(id);
    return this.p.agents.getAgent(id);
  }

  /** Writes to agents, the scheduler API and the agents' RPC need the admin role (the agents' service users have it). */
  requireAdmin(ctx: Ctx, action: string): void {
    if (!ctx.isAdmin) throw policyFaults.notAuthorized(action);
  }
}
