// The agent's side of the metadata chain as real processes: quantum-server, nova-api (compute + metadata,
// service_metadata_proxy with a shared secret), quantum-metadata-agent on its Unix socket with a log file, and
// guests booted through the compute API. Requests go to the agent's socket with exactly the headers the
// namespace proxy sends (X-Forwarded-For and the router/network id pair), so the agent → Nova hop is real.
import { readFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { startQuantumServer, tempDir, writeIni, type RunningQuantum, type TenantNet } from './mdpath.js';
import { getFreePort, spawnDaemon, waitForListen, type Daemon } from './proc.js';

export const CHAIN_SECRET = 'chain-secret';
const IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6';

export interface Reply {
  status: number;
  body: string;
  headers: IncomingMessage['headers'];
}

export interface Chain {
  dir: string;
  qs: RunningQuantum;
  nova: Daemon;
  agent: Daemon;
  sock: string;
  computePort: number;
  metadataPort: number;
  agentMetricsPort: number | undefined;
  agentLog: string;
  novaLog: string;
  nets: Record<string, TenantNet>;
  /** Boot a server in a tenant's network with a fixed IP; its uuid. */
  boot(name: string, tenant: string, ip: string, extra?: Record<string, unknown>): Promise<string>;
  /** A request to the agent as the proxy of `tenant`'s router sends it for the guest at `ip`. */
  viaAgent(tenant: string, ip: string, path: string, o?: { method?: string; headers?: Record<string, string>; body?: string; network?: boolean }): Promise<Reply>;
  stop(): Promise<void>;
}

export function compute(port: number, method: string, path: string, project: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ host: '127.0.0.1', port, method, path: `/v2.1${path}`, agent: false, headers: { connection: 'close', 'x-project-id': project, ...(payload ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}) } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: b ? (JSON.parse(b) as Record<string, unknown>) : {} }));
    });
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

export function socketRequest(sock: string, path: string, o: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: sock, path, method: o.method ?? 'GET', agent: false, headers: { host: '169.254.169.254', connection: 'close', ...(o.headers ?? {}) } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, headers: res.headers }));
    });
    req.on('error', reject);
    req.setTimeout(20_000, () => req.destroy(new Error('agent request timed out')));
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

export function readLog(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Start the chain. `tenants` each get a network on 10.9.0.0/24 (the same addresses in every tenant) behind their
 * own router. `agentIni` and `novaIni` add options to the agent's and nova's config files.
 */
export async function startChain(o: { tenants: string[]; agentIni?: Record<string, Record<string, string | number | boolean>>; novaIni?: Record<string, Record<string, string | number | boolean>>; agentMetrics?: boolean }): Promise<Chain> {
  const tmp = tempDir('qm-chain-');
  const dir = tmp.path;
  const state = join(dir, 'quantum');
  const sock = join(state, 'metadata_proxy');
  const agentLog = join(dir, 'agent.log');
  const novaLog = join(dir, 'nova.log');
  const daemons: Daemon[] = [];
  let qs: RunningQuantum | undefined;
  const stopAll = async () => {
    for (const d of daemons.reverse()) await d.stop().catch(() => undefined);
    await qs?.stop().catch(() => undefined);
    tmp.rm();
  };
  try {
    qs = await startQuantumServer(dir);
    const computePort = await getFreePort();
    const metadataPort = await getFreePort();
    const novaConf = writeIni(join(dir, 'nova.conf'), {
      DEFAULT: { state_path: join(dir, 'nova'), osapi_compute_listen: '127.0.0.1', osapi_compute_listen_port: computePort, metadata_listen: '127.0.0.1', metadata_listen_port: metadataPort, log_file: novaLog, ...(o.novaIni?.DEFAULT ?? {}) },
      neutron: { url: qs.url, service_metadata_proxy: true, metadata_proxy_shared_secret: CHAIN_SECRET },
      ...Object.fromEntries(Object.entries(o.novaIni ?? {}).filter(([k]) => k !== 'DEFAULT')),
    });
    const nova = spawnDaemon('nova-api/main.js', ['--config-file', novaConf]);
    daemons.push(nova);
    await waitForListen({ host: '127.0.0.1', port: computePort }, 20_000).catch(() => {
      throw new Error(`nova-api did not start: ${nova.output()} ${readLog(novaLog)}`);
    });
    await waitForListen({ host: '127.0.0.1', port: metadataPort }, 20_000);
    const nets: Record<string, TenantNet> = {};
    for (const t of o.tenants) {
      const net = await qs.client.createNetwork({ name: `net-${t}`, tenant_id: t });
      const sub = await qs.client.createSubnet({ network_id: net.id, cidr: '10.9.0.0/24', ip_version: 4, tenant_id: t });
      const router = await qs.client.createRouter({ name: `router-${t}`, tenant_id: t });
      await qs.client.addRouterInterface(router.id, { subnet_id: sub.id });
      nets[t] = { tenantId: t, networkId: net.id, subnetId: sub.id, routerId: router.id };
    }
    const agentMetricsPort = o.agentMetrics ? await getFreePort() : undefined;
    const ini = writeIni(join(dir, 'metadata_agent.ini'), {
      DEFAULT: { state_path: state, quantum_url: qs.url, host: 'chain-node', nova_metadata_host: '127.0.0.1', nova_metadata_port: metadataPort, metadata_proxy_shared_secret: CHAIN_SECRET, metadata_workers: 1, log_file: agentLog, ...(o.agentIni?.DEFAULT ?? {}) },
      AGENT: { report_interval: 0 },
      ...(agentMetricsPort ? { metrics: { listen: `127.0.0.1:${agentMetricsPort}` } } : {}),
      ...Object.fromEntries(Object.entries(o.agentIni ?? {}).filter(([k]) => k !== 'DEFAULT')),
    });
    const agent = spawnDaemon('metadata-agent/main.js', ['--config-file', ini]);
    daemons.push(agent);
    await waitForListen({ path: sock }, 15_000).catch(() => {
      throw new Error(`agent did not start: ${agent.output()} ${readLog(agentLog)}`);
    });
    const q = qs;
    return {
      dir, qs: q, nova, agent, sock, computePort, metadataPort, agentMetricsPort, agentLog, novaLog, nets,
      async boot(name, tenant, ip, extra = {}) {
        const r = await compute(computePort, 'POST', '/servers', tenant, { server: { name, flavorRef: '1', imageRef: IMAGE, networks: [{ uuid: nets[tenant]!.networkId, fixed_ip: ip }], ...extra } });
        if (r.status !== 202) throw new Error(`boot ${name}: ${r.status} ${JSON.stringify(r.json)}`);
        return (r.json.server as { id: string }).id;
      },
      viaAgent(tenant, ip, path, ro = {}) {
        const n = nets[tenant]!;
        const id: Record<string, string> = ro.network ? { 'x-neutron-network-id': n.networkId, 'x-quantum-network-id': n.networkId } : { 'x-neutron-router-id': n.routerId, 'x-quantum-router-id': n.routerId };
        return socketRequest(sock, path, { ...(ro.method ? { method: ro.method } : {}), headers: { 'x-forwarded-for': ip, ...id, ...(ro.headers ?? {}) }, ...(ro.body !== undefined ? { body: ro.body } : {}) });
      },
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
