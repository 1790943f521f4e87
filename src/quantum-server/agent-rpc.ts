// The calls the agents make to the plugin, named and shaped as Neutron's RPC callbacks (L3RpcCallback.sync_routers,
// DhcpRpcCallback.get_active_networks_info / get_network_info) plus the notification log they poll. Neutron
// carries them over RabbitMQ; here they are `POST /v2.0/rpc/<topic>/<method>` with the args as the JSON body,
// so an agent's requests are bounded by what it asks for, never by how many routers or networks exist.
import { ApiError } from '../common/errors.js';
import { DHCP_PLUGIN_TOPIC, L3_PLUGIN_TOPIC, ROUTER_INTERFACE_OWNERS, type InterfacePort, type NetworkInfo, type Port, type Subnet, type SyncRouter } from '../common/quantum-client.js';
import { AGENT_TYPE_DHCP, AGENT_TYPE_L3, type AgentStore } from './agents.js';
import { chunks } from './db-util.js';
import { TOPIC_DHCP, TOPIC_L3, TOPIC_NOTIFICATIONS, type AgentNotifier, type ChangesReply } from './notifier.js';
import type { AgentScheduler } from './scheduler.js';
import type { QuantumStore } from './store.js';


const MAX_IDS = 1000;

function str(args: Record<string, unknown>, k: string, required = true): string | undefined {
  const v = args[k];
  if (v === undefined || v === null) {
    if (required) throw new ApiError(400, 'HTTPBadRequest', `RPC argument '${k}' is required`);
    return undefined;
  }
  if (typeof v !== 'string' || v === '') throw new ApiError(400, 'HTTPBadRequest', `RPC argument '${k}' must be a non-empty string`);
  return v;
}

function ids(args: Record<string, unknown>, k: string): string[] | undefined {
  const v = args[k];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string')) throw new ApiError(400, 'HTTPBadRequest', `RPC argument '${k}' must be a list of ids`);
  if (v.length > MAX_IDS) throw new ApiError(400, 'HTTPBadRequest', `RPC argument '${k}' names ${v.length} ids; at most ${MAX_IDS} per call`);
  return v;
}

export class AgentRpc {
  constructor(
    private readonly store: QuantumStore,
    private readonly agents: AgentStore,
    private readonly scheduler: AgentScheduler,
    private readonly notifier: AgentNotifier,
  ) {}

  async call(topic: string, method: string, args: Record<string, unknown>): Promise<unknown> {
    const m = `${topic}/${method}`;
    switch (m) {
      case `${L3_PLUGIN_TOPIC}/sync_routers`:
        return this.syncRouters(str(args, 'host')!, ids(args, 'router_ids'));
      case `${DHCP_PLUGIN_TOPIC}/get_active_networks_info`:
        return this.activeNetworksInfo(str(args, 'host')!);
      case `${DHCP_PLUGIN_TOPIC}/get_network_info`: {
        const one = str(args, 'network_id', false);
        const many = ids(args, 'network_ids');
        if (!one === !many) throw new ApiError(400, 'HTTPBadRequest', "get_network_info takes 'network_id' or 'network_ids'");
        const got = await this.networksInfo(many ?? [one!], str(args, 'host', false));
        return one ? (got[0] ?? null) : got;
      }
      case `${L3_PLUGIN_TOPIC}/get_changes`:
        return this.changes(TOPIC_L3, args);
      case `${DHCP_PLUGIN_TOPIC}/get_changes`:
        return this.changes(TOPIC_DHCP, args);
      case `${DHCP_PLUGIN_TOPIC}/get_notifications`:
        return this.changes(TOPIC_NOTIFICATIONS, { ...args, host: undefined });
      default:
        throw new ApiError(404, 'HTTPNotFound', `No RPC method ${method} on topic ${topic}`);
    }
  }

  private async changes(topic: string, args: Record<string, unknown>): Promise<ChangesReply> {
    const since = args.since;
    if (since !== undefined && since !== null && (typeof since !== 'number' || !Number.isInteger(since) || since < 0)) throw new ApiError(400, 'HTTPBadRequest', "RPC argument 'since' must be a cursor (an integer >= 0)");
    return this.notifier.changes(topic, str(args, 'host', false), since === null ? undefined : (since as number | undefined));
  }

  /**
   * L3RpcCallback.sync_routers: the routers hosted by the host's L3 agent (those of router_ids only, if given),
   * each with its interfaces. A full sync (no router_ids) first gives the agent any unhosted router.
   */
  async syncRouters(host: string, routerIds?: string[]): Promise<SyncRouter[]> {
    const agent = routerIds ? undefined : await this.agents.byTypeAndHost(AGENT_TYPE_L3, host);
    if (agent) await this.scheduler.autoScheduleRouters(agent);
    const mine = new Set(await this.scheduler.routerIdsOnHost(host, routerIds));
    const want = routerIds ? routerIds.filter((id) => mine.has(id)) : [...mine];
    const out: SyncRouter[] = [];
    for (const part of chunks(want)) {
      if (!part.length) continue;
      const routers = await this.store.listRouters({ id: part });
      const ports = await this.store.listPorts({ device_id: part, device_owner: ROUTER_INTERFACE_OWNERS });
      const subnetIds = [...new Set(ports.flatMap((p) => p.fixed_ips.map((f) => f.subnet_id)))];
      const subnets = new Map<string, Subnet>();
      for (const sp of chunks(subnetIds)) if (sp.length) for (const s of await this.store.listSubnets({ id: sp })) subnets.set(s.id, s);
      const byRouter = new Map<string, InterfacePort[]>();
      for (const p of ports) {
        const subs = p.fixed_ips.map((f) => subnets.get(f.subnet_id)).filter((s): s is Subnet => !!s);
        byRouter.set(p.device_id, [...(byRouter.get(p.device_id) ?? []), { ...p, subnets: subs.map((s) => ({ id: s.id, cidr: s.cidr, gateway_ip: s.gateway_ip, ip_version: s.ip_version })) }]);
      }
      for (const r of routers) out.push({ ...r, _interfaces: byRouter.get(r.id) ?? [] });
    }
    return out;
  }

  /** DhcpRpcCallback.get_active_networks_info: every network the host's DHCP agent serves, with subnets and ports. */
  async activeNetworksInfo(host: string): Promise<NetworkInfo[]> {
    const agent = await this.agents.byTypeAndHost(AGENT_TYPE_DHCP, host);
    if (agent) await this.scheduler.autoScheduleNetworks(agent);
    return this.networksInfo(await this.scheduler.networkIdsOnHost(host), undefined);
  }

  /** get_network_info for several networks; with a host, only those its DHCP agent serves (the rest are not its own). */
  async networksInfo(networkIds: string[], host: string | undefined): Promise<NetworkInfo[]> {
    let want = networkIds;
    if (host !== undefined) {
      const mine = new Set(await this.scheduler.networkIdsOnHost(host, networkIds));
      want = want.filter((id) => mine.has(id));
    }
    const out: NetworkInfo[] = [];
    for (const part of chunks(want)) {
      if (!part.length) continue;
      const nets = await this.store.listNetworks({ id: part });
      const subnets = await this.store.listSubnets({ network_id: part });
      const ports = await this.store.listPorts({ network_id: part });
      const sBy = new Map<string, Subnet[]>();
      for (const s of subnets) sBy.set(s.network_id, [...(sBy.get(s.network_id) ?? []), s]);
      const pBy = new Map<string, Port[]>();
      for (const p of ports) pBy.set(p.network_id, [...(pBy.get(p.network_id) ?? []), p]);
      for (const n of nets) out.push({ ...n, subnets: sBy.get(n.id) ?? [], ports: pBy.get(n.id) ?? [] });
    }
    return out;
  }
}
