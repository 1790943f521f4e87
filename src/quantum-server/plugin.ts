// The API's write operations as Neutron's plugin + notifiers perform them: the table change (store.ts), then
// scheduling what now needs an agent (router_auto_schedule, network_auto_schedule), then telling the agents
// that serve it (L3AgentNotifyAPI, DhcpAgentNotifyAPI) and the metadata agents (port.*.end notifications).
// A failed notification never fails the API call: the agents converge at their next sync.
import type { Logger } from '../common/log.js';
import { DEVICE_OWNER_DHCP, ROUTER_INTERFACE_OWNERS, type Port, type Router, type RouterInterfaceInfo, type Subnet } from '../common/quantum-client.js';
import type { AgentStore } from './agents.js';
import type { AgentNotifier, DhcpMethod } from './notifier.js';
import type { AgentScheduler } from './scheduler.js';
import type { Ctx, NetworkBody, QuantumStore } from './store.js';
import type { Body } from './validate.js';

const isRouterPort = (p: Pick<Port, 'device_owner' | 'device_id'>) => ROUTER_INTERFACE_OWNERS.includes(p.device_owner) && p.device_id !== '';

export class QuantumPlugin {
  constructor(
    readonly store: QuantumStore,
    readonly agents: AgentStore,
    readonly scheduler: AgentScheduler,
    readonly notifier: AgentNotifier,
    private readonly log: Logger,
  ) {}

  private async guard(what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.log.error({ err: e, what }, 'notifying agents failed; they converge at their next sync');
    }
  }

  private async dhcp(method: DhcpMethod, networkId: string, payload: Record<string, unknown>): Promise<void> {
    await this.notifier.dhcp(method, networkId, payload, await this.scheduler.hostsOfNetwork(networkId));
  }

  private async routersUpdated(routerIds: readonly string[]): Promise<void> {
    const ids = [...new Set(routerIds)];
    if (!ids.length) return;
    const hosts = await this.scheduler.routerHosts(ids);
    const byHost = new Map<string, string[]>();
    for (const [rid, hs] of hosts) for (const h of hs) byHost.set(h, [...(byHost.get(h) ?? []), rid]);
    for (const [h, rids] of byHost) await this.notifier.l3('routers_updated', rids, [h]);
  }

  // ---------------------------------------------------------------- networks

  async createNetwork(ctx: Ctx, body: Body): Promise<NetworkBody> {
    const n = await this.store.createNetwork(ctx, body);
    await this.guard('network.create', async () => {
      await this.notifier.notification('network.create.end', n.id, { network: n });
    });
    return n;
  }

  async updateNetwork(id: string, body: Body): Promise<NetworkBody> {
    const n = await this.store.updateNetwork(id, body);
    await this.guard('network.update', async () => {
      await this.dhcp('network_update_end', id, { network: n });
      await this.notifier.notification('network.update.end', id, { network: n });
    });
    return n;
  }

  async deleteNetwork(id: string): Promise<void> {
    await this.store.deleteNetwork(id);
    await this.guard('network.delete', async () => {
      // The bindings went with the network: every DHCP agent hears it (Neutron fans network_delete_end out too).
      await this.notifier.dhcp('network_delete_end', id, { network_id: id }, 'fanout');
      await this.notifier.notification('network.delete.end', id, { network_id: id });
    });
  }

  // ---------------------------------------------------------------- subnets

  private async routersOnSubnet(subnetId: string): Promise<string[]> {
    const ports = await this.store.listPorts({ fixed_ips: [`subnet_id=${subnetId}`], device_owner: ROUTER_INTERFACE_OWNERS });
    return ports.map((p) => p.device_id).filter((x) => x !== '');
  }

  async createSubnet(ctx: Ctx, body: Body): Promise<Subnet> {
    const s = await this.store.createSubnet(ctx, body);
    await this.guard('subnet.create', async () => {
      if (s.enable_dhcp && this.scheduler.o.networkAutoSchedule) await this.scheduler.scheduleNetwork(s.network_id);
      await this.dhcp('subnet_create_end', s.network_id, { subnet: s });
    });
    return s;
  }

  async updateSubnet(id: string, body: Body): Promise<Subnet> {
    const s = await this.store.updateSubnet(id, body);
    await this.guard('subnet.update', async () => {
      if (s.enable_dhcp && this.scheduler.o.networkAutoSchedule) await this.scheduler.scheduleNetwork(s.network_id);
      await this.dhcp('subnet_update_end', s.network_id, { subnet: s });
      await this.routersUpdated(await this.routersOnSubnet(id));
    });
    return s;
  }

  async deleteSubnet(id: string): Promise<void> {
    const s = await this.store.getSubnet(id);
    await this.store.deleteSubnet(id);
    await this.guard('subnet.delete', () => this.dhcp('subnet_delete_end', s.network_id, { subnet_id: id, network_id: s.network_id }));
  }

  // ---------------------------------------------------------------- ports

  private async portChanged(method: 'port_create_end' | 'port_update_end', port: Port, before?: Port): Promise<void> {
    await this.guard(method, async () => {
      if (method === 'port_create_end' && port.device_owner !== DEVICE_OWNER_DHCP && this.scheduler.o.networkAutoSchedule) await this.scheduler.scheduleNetwork(port.network_id);
      await this.dhcp(method, port.network_id, { port });
      await this.notifier.notification(method === 'port_create_end' ? 'port.create.end' : 'port.update.end', port.id, { port, ...(before ? { original_port: before } : {}) });
      const routers = [port, ...(before ? [before] : [])].filter(isRouterPort).map((p) => p.device_id);
      await this.routersUpdated(routers);
    });
  }

  private async portDeleted(port: Port): Promise<void> {
    await this.guard('port_delete_end', async () => {
      await this.dhcp('port_delete_end', port.network_id, { port_id: port.id, network_id: port.network_id, fixed_ips: port.fixed_ips });
      await this.notifier.notification('port.delete.end', port.id, { port_id: port.id, port });
    });
  }

  async createPort(ctx: Ctx, body: Body): Promise<Port> {
    const p = await this.store.createPort(ctx, body);
    await this.portChanged('port_create_end', p);
    return p;
  }

  async updatePort(id: string, body: Body): Promise<Port> {
    const before = await this.store.getPort(id);
    const p = await this.store.updatePort(id, body);
    await this.portChanged('port_update_end', p, before);
    return p;
  }

  async deletePort(id: string): Promise<void> {
    const before = await this.store.getPort(id);
    await this.store.deletePort(id);
    await this.portDeleted(before);
  }

  // ---------------------------------------------------------------- routers

  async createRouter(ctx: Ctx, body: Body): Promise<Router> {
    const r = await this.store.createRouter(ctx, body);
    if (this.scheduler.o.routerAutoSchedule) await this.guard('router.create', async () => void (await this.scheduler.scheduleRouter(r.id)));
    return r;
  }

  async updateRouter(id: string, body: Body): Promise<Router> {
    const r = await this.store.updateRouter(id, body);
    await this.guard('router.update', () => this.routersUpdated([id]));
    return r;
  }

  async deleteRouter(id: string): Promise<void> {
    const hosts = await this.scheduler.hostsOfRouter(id);
    await this.store.deleteRouter(id);
    await this.guard('router.delete', () => this.notifier.l3('router_deleted', [id], hosts));
  }

  async addRouterInterface(id: string, body: Body): Promise<RouterInterfaceInfo> {
    const before = typeof body?.port_id === 'string' ? await this.store.getPort(body.port_id).catch(() => undefined) : undefined;
    const info = await this.store.addRouterInterface(id, body);
    await this.guard('router.interface.create', async () => {
      if (this.scheduler.o.routerAutoSchedule) await this.scheduler.scheduleRouter(id);
      const port = await this.store.getPort(info.port_id);
      await this.portChanged(before ? 'port_update_end' : 'port_create_end', port, before);
    });
    return info;
  }

  async removeRouterInterface(id: string, body: Body): Promise<RouterInterfaceInfo> {
    const ports = await this.store.listPorts({ device_id: [id], device_owner: ROUTER_INTERFACE_OWNERS });
    const info = await this.store.removeRouterInterface(id, body);
    const gone = ports.find((p) => p.id === info.port_id);
    await this.guard('router.interface.delete', async () => {
      await this.routersUpdated([id]);
      if (gone) await this.portDeleted(gone);
    });
    return info;
  }
}
