// A small Neutron v2.0 REST client (what python-quantumclient is to the agents), over one keep-alive pool.
import { Pool } from 'undici';
import { ApiError } from './errors.js';

export interface FixedIp {
  subnet_id: string;
  ip_address: string;
}

export interface AllocationPool {
  start: string;
  end: string;
}

export interface HostRoute {
  destination: string;
  nexthop: string;
}

export interface Network {
  id: string;
  tenant_id: string;
  project_id: string;
  name: string;
  status: string;
  admin_state_up: boolean;
  shared: boolean;
  mtu: number;
  subnets: string[];
}

export interface Subnet {
  id: string;
  tenant_id: string;
  project_id: string;
  network_id: string;
  name: string;
  cidr: string;
  ip_version: 4 | 6;
  gateway_ip: string | null;
  enable_dhcp: boolean;
  allocation_pools: AllocationPool[];
  dns_nameservers: string[];
  host_routes: HostRoute[];
  ipv6_ra_mode: string | null;
  ipv6_address_mode: string | null;
}

export interface Port {
  id: string;
  tenant_id: string;
  project_id: string;
  network_id: string;
  name: string;
  mac_address: string;
  fixed_ips: FixedIp[];
  device_id: string;
  device_owner: string;
  admin_state_up: boolean;
  status: string;
  'binding:host_id': string;
}

export interface Router {
  id: string;
  tenant_id: string;
  project_id: string;
  name: string;
  status: string;
  admin_state_up: boolean;
  external_gateway_info: Record<string, unknown> | null;
}

export interface RouterInterfaceInfo {
  id: string;
  tenant_id: string;
  port_id: string;
  subnet_id: string;
  subnet_ids: string[];
  network_id: string;
}

export interface Agent {
  id: string;
  agent_type: string;
  binary: string;
  topic: string;
  host: string;
  admin_state_up: boolean;
  alive: boolean;
  created_at: string;
  started_at: string;
  heartbeat_timestamp: string;
  configurations: Record<string, unknown>;
  description: string | null;
}

export interface AgentReport {
  binary: string;
  host: string;
  agent_type: string;
  topic: string;
  configurations: Record<string, unknown>;
  /** True on the first report after the agent started (Neutron's start_flag). */
  start_flag?: boolean;
}

/** Filters as Neutron takes them: each key may repeat (OR); `fields` trims the answer. */
export type Filters = Record<string, string | readonly string[] | undefined>;

export const ROUTER_INTERFACE_OWNERS = ['network:router_interface', 'network:router_interface_distributed', 'network:ha_router_replicated_interface'];
export const DEVICE_OWNER_ROUTER_INTF = 'network:router_interface';
export const DEVICE_OWNER_DHCP = 'network:dhcp';

/** Where a client's X-Auth-Token comes from: a KeystoneSession (renewed, re-fetched after a 401) or a caller's token. */
export interface TokenSource {
  token(): Promise<string>;
  /** A request with this token got a 401. */
  invalidate(token?: string): void;
}

/** A fixed token (a user's, passed on by a service acting for them): nothing to renew. */
export const staticToken = (t: string): TokenSource => ({ token: async () => t, invalidate: () => undefined });

export interface QuantumClientOptions {
  /** e.g. http://127.0.0.1:9696 */
  url: string;
  /** auth_strategy = keystone: the token every request carries. */
  auth?: TokenSource | undefined;
  /** Sent as X-Project-Id under auth_strategy=noauth (admin context when empty). */
  projectId?: string;
  /** Milliseconds before a request is abandoned (connect + headers + body). */
  timeoutMs?: number;
  connections?: number;
}

export function encodeFilters(filters: Filters): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(filters)) {
    if (v === undefined) continue;
    const vals = typeof v === 'string' ? [v] : v;
    for (const x of vals) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(x)}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

export class QuantumClient {
  private readonly pool: Pool;
  private readonly base: URL;
  private readonly shared: boolean;
  constructor(
    private readonly opts: QuantumClientOptions,
    from?: QuantumClient,
  ) {
    this.base = new URL(opts.url);
    this.shared = !!from;
    const t = opts.timeoutMs ?? 30_000;
    this.pool = from
      ? from.pool
      : new Pool(this.base.origin, {
          connections: opts.connections ?? 16,
          connectTimeout: Math.min(t, 10_000),
          headersTimeout: t,
          bodyTimeout: t,
          keepAliveTimeout: 30_000,
        });
  }

  /** The same connections, with another token (a user's, for what a service does on their behalf). */
  as(auth: TokenSource): QuantumClient {
    return new QuantumClient({ ...this.opts, auth }, this);
  }

  /** Low level: returns the parsed JSON body, or throws ApiError (503 when the server cannot be reached). */
  async request<T>(method: string, path: string, body?: unknown, projectId?: string): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    const pid = projectId ?? this.opts.projectId;
    if (pid) headers['x-project-id'] = pid;
    let payload: string | undefined;
    if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
    const prefix = this.base.pathname.replace(/\/$/, '');
    const auth = this.opts.auth;
    let res;
    for (let attempt = 0; ; attempt++) {
      const token = auth ? await auth.token() : undefined;
      if (token) headers['x-auth-token'] = token;
      try {
        res = await this.pool.request({ method: method as 'GET', path: `${prefix}${path}`, headers, body: payload });
      } catch (e) {
        throw new ApiError(503, 'ServiceUnavailable', `quantum-server at ${this.base.origin} unreachable: ${(e as Error).message}`);
      }
      // A token revoked or expired early: authenticate again once, as keystoneauth's session does.
      if (res.statusCode !== 401 || !auth || attempt > 0) break;
      await res.body.dump();
      auth.invalidate(token);
    }
    const text = await res.body.text();
    if (res.statusCode >= 400) {
      let type = 'QuantumError';
      let message = text || `HTTP ${res.statusCode}`;
      let detail = '';
      try {
        const j = JSON.parse(text) as { NeutronError?: { type?: string; message?: string; detail?: string } };
        if (j.NeutronError) {
          type = j.NeutronError.type ?? type;
          message = j.NeutronError.message ?? message;
          detail = j.NeutronError.detail ?? '';
        }
      } catch {
        /* not JSON: keep the text */
      }
      throw new ApiError(res.statusCode, type, message, detail);
    }
    if (res.statusCode === 204 || text === '') return undefined as T;
    return JSON.parse(text) as T;
  }

  async close(): Promise<void> {
    if (!this.shared) await this.pool.close();
  }

  listNetworks = async (f: Filters = {}) => (await this.request<{ networks: Network[] }>('GET', `/v2.0/networks${encodeFilters(f)}`)).networks;
  showNetwork = async (id: string) => (await this.request<{ network: Network }>('GET', `/v2.0/networks/${encodeURIComponent(id)}`)).network;
  createNetwork = async (body: Partial<Network>, projectId?: string) => (await this.request<{ network: Network }>('POST', '/v2.0/networks', { network: body }, projectId)).network;
  updateNetwork = async (id: string, body: Partial<Network>) => (await this.request<{ network: Network }>('PUT', `/v2.0/networks/${encodeURIComponent(id)}`, { network: body })).network;
  deleteNetwork = async (id: string) => this.request<void>('DELETE', `/v2.0/networks/${encodeURIComponent(id)}`);

  listSubnets = async (f: Filters = {}) => (await this.request<{ subnets: Subnet[] }>('GET', `/v2.0/subnets${encodeFilters(f)}`)).subnets;
  showSubnet = async (id: string) => (await this.request<{ subnet: Subnet }>('GET', `/v2.0/subnets/${encodeURIComponent(id)}`)).subnet;
  createSubnet = async (body: Record<string, unknown>, projectId?: string) => (await this.request<{ subnet: Subnet }>('POST', '/v2.0/subnets', { subnet: body }, projectId)).subnet;
  updateSubnet = async (id: string, body: Record<string, unknown>) => (await this.request<{ subnet: Subnet }>('PUT', `/v2.0/subnets/${encodeURIComponent(id)}`, { subnet: body })).subnet;
  deleteSubnet = async (id: string) => this.request<void>('DELETE', `/v2.0/subnets/${encodeURIComponent(id)}`);

  listPorts = async (f: Filters = {}) => (await this.request<{ ports: Port[] }>('GET', `/v2.0/ports${encodeFilters(f)}`)).ports;
  showPort = async (id: string) => (await this.request<{ port: Port }>('GET', `/v2.0/ports/${encodeURIComponent(id)}`)).port;
  createPort = async (body: Record<string, unknown>, projectId?: string) => (await this.request<{ port: Port }>('POST', '/v2.0/ports', { port: body }, projectId)).port;
  updatePort = async (id: string, body: Record<string, unknown>) => (await this.request<{ port: Port }>('PUT', `/v2.0/ports/${encodeURIComponent(id)}`, { port: body })).port;
  deletePort = async (id: string) => this.request<void>('DELETE', `/v2.0/ports/${encodeURIComponent(id)}`);

  listRouters = async (f: Filters = {}) => (await this.request<{ routers: Router[] }>('GET', `/v2.0/routers${encodeFilters(f)}`)).routers;
  showRouter = async (id: string) => (await this.request<{ router: Router }>('GET', `/v2.0/routers/${encodeURIComponent(id)}`)).router;
  createRouter = async (body: Record<string, unknown>, projectId?: string) => (await this.request<{ router: Router }>('POST', '/v2.0/routers', { router: body }, projectId)).router;
  updateRouter = async (id: string, body: Record<string, unknown>) => (await this.request<{ router: Router }>('PUT', `/v2.0/routers/${encodeURIComponent(id)}`, { router: body })).router;
  deleteRouter = async (id: string) => this.request<void>('DELETE', `/v2.0/routers/${encodeURIComponent(id)}`);
  addRouterInterface = async (id: string, body: { subnet_id?: string; port_id?: string }) =>
    this.request<RouterInterfaceInfo>('PUT', `/v2.0/routers/${encodeURIComponent(id)}/add_router_interface`, body);
  removeRouterInterface = async (id: string, body: { subnet_id?: string; port_id?: string }) =>
    this.request<RouterInterfaceInfo>('PUT', `/v2.0/routers/${encodeURIComponent(id)}/remove_router_interface`, body);

  listAgents = async (f: Filters = {}) => (await this.request<{ agents: Agent[] }>('GET', `/v2.0/agents${encodeFilters(f)}`)).agents;
  /** An agent's heartbeat (Neutron's report_state RPC, here as REST): upsert keyed by (agent_type, host). */
  reportState = async (report: AgentReport) => (await this.request<{ agent: Agent }>('POST', '/v2.0/agents', { agent: report })).agent;

  // Neutron's l3_agent_scheduler and dhcp_agent_scheduler extensions.
  listRoutersOnL3Agent = async (agentId: string) => (await this.request<{ routers: Router[] }>('GET', `/v2.0/agents/${encodeURIComponent(agentId)}/l3-routers`)).routers;
  addRouterToL3Agent = async (agentId: string, routerId: string) => this.request<null>('POST', `/v2.0/agents/${encodeURIComponent(agentId)}/l3-routers`, { router_id: routerId });
  removeRouterFromL3Agent = async (agentId: string, routerId: string) => this.request<void>('DELETE', `/v2.0/agents/${encodeURIComponent(agentId)}/l3-routers/${encodeURIComponent(routerId)}`);
  listL3AgentsHostingRouter = async (routerId: string) => (await this.request<{ agents: Agent[] }>('GET', `/v2.0/routers/${encodeURIComponent(routerId)}/l3-agents`)).agents;
  listNetworksOnDhcpAgent = async (agentId: string) => (await this.request<{ networks: Network[] }>('GET', `/v2.0/agents/${encodeURIComponent(agentId)}/dhcp-networks`)).networks;
  addNetworkToDhcpAgent = async (agentId: string, networkId: string) => this.request<null>('POST', `/v2.0/agents/${encodeURIComponent(agentId)}/dhcp-networks`, { network_id: networkId });
  removeNetworkFromDhcpAgent = async (agentId: string, networkId: string) => this.request<void>('DELETE', `/v2.0/agents/${encodeURIComponent(agentId)}/dhcp-networks/${encodeURIComponent(networkId)}`);
  listDhcpAgentsHostingNetwork = async (networkId: string) => (await this.request<{ agents: Agent[] }>('GET', `/v2.0/networks/${encodeURIComponent(networkId)}/dhcp-agents`)).agents;

  /** An agent's call into the plugin (Neutron's RPC, here POST /v2.0/rpc/<topic>/<method>). */
  rpc = async <T>(topic: string, method: string, args: Record<string, unknown>) => (await this.request<{ result: T }>('POST', `/v2.0/rpc/${encodeURIComponent(topic)}/${encodeURIComponent(method)}`, args)).result;
}

/** L3RpcCallback / DhcpRpcCallback topics (Neutron's topics.L3PLUGIN, topics.PLUGIN). */
export const L3_PLUGIN_TOPIC = 'q-l3-plugin';
export const DHCP_PLUGIN_TOPIC = 'q-plugin';

/** A router interface as sync_routers returns it: the port and its subnets. */
export type InterfacePort = Port & { subnets: Array<Pick<Subnet, 'id' | 'cidr' | 'gateway_ip' | 'ip_version'>> };
/** A router as sync_routers returns it. */
export type SyncRouter = Router & { _interfaces: InterfacePort[] };
/** A network as get_network_info returns it: with its subnets and ports. */
export type NetworkInfo = Omit<Network, 'subnets'> & { subnets: Subnet[]; ports: Port[] };

export interface Change {
  id: number;
  method: string;
  resource_id: string;
  payload?: Record<string, unknown>;
}

/** get_changes / get_notifications: what changed past a cursor. */
export interface ChangesReply {
  changes: Change[];
  last: number;
  retention: number;
}
