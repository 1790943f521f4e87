// The whole chain: guest → proxy (ours or haproxy) → quantum-metadata-agent → quantum-server (port lookup)
// → nova-api metadata (8775), with the network, subnet, router, interface and servers created through the
// real APIs (the Neutron v2.0 client and Nova's compute API), as an operator would. buildChain is one router with
// its proxies; startChainDaemons, createRouterNetwork and createServers are its parts, for benches with many routers.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { QuantumClient } from '../../src/common/quantum-client.js';
import { signInstanceId } from '../../src/common/hmac.js';
import { GUEST_IP, ROUTER_IP, type Topology } from './netns.js';
import { launch, startHaproxy, startOurProxy, waitUnixListen, logTail, type Proc } from './procs.js';
import { cpuSeconds } from './procstat.js';

export const CHAIN_DAEMONS = ['quantum-server', 'nova-api', 'metadata-agent'];

/** true when every daemon of the chain is built, else why not. */
export function chainReady(buildRoot: string): true | string {
  const missing = CHAIN_DAEMONS.filter((d) => !existsSync(resolve(buildRoot, 'src', d, 'main.js')));
  return missing.length ? `not built yet: ${missing.map((d) => `src/${d}/main.ts`).join(', ')}` : true;
}

export interface ChainOptions {
  buildRoot: string;
  tmp: string;
  topo: Topology;
  proxyMain: string;
  nodeFlags: string[];
  ports: { ours: number; haproxy: number };
  /** Extra servers for the boot storm: their fixed IPs (the storm guests' addresses). */
  stormIps: string[];
  log: (msg: string) => void;
  /**
   * Serve Prometheus metrics from every daemon: a `[metrics] listen = 127.0.0.1:<free port>` section in
   * quantum.conf, nova.conf and metadata_agent.ini (the agent also reads quantum.conf, so its own file's
   * section overrides that one). Unset: the config files are exactly as without this option.
   */
  metrics?: boolean;
  /** More `[api]` options of nova.conf, e.g. `{ metadata_tokens: 'required' }`. */
  novaApi?: Record<string, string>;
}

export interface Chain {
  ours: Proc;
  haproxy: Proc;
  agent: Proc;
  procs: Proc[];
  routerId: string;
  serverId: string;
  /** The agent's Unix socket. */
  socket: string;
  /** Namespace to reach nova from ('' = root) and its metadata URL base. */
  novaNs?: string;
  novaUrl: string;
  novaHeaders: Record<string, string>;
  /** Fixed IPs for which a server exists (storm guests can use the chain). */
  stormIps: string[];
  /** The `[metrics] listen` port of each daemon ('quantum-server', 'nova-api', 'metadata-agent'); empty without `metrics`. */
  metricsPorts: Record<string, number>;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const p = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(p));
    });
  });
}

async function waitTcp(p: Proc, port: number, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (p.exited()) throw new Error(`${p.name} exited during start-up:\n${logTail(p)}`);
    const ok = await new Promise<boolean>((r) => {
      const s = createServer();
      s.once('error', () => r(true)); // in use: something listens
      s.listen(port, '127.0.0.1', () => s.close(() => r(false)));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${p.name} did not listen on 127.0.0.1:${port}:\n${logTail(p)}`);
}

function sshPublicKey(comment: string): string {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return `ssh-ed25519 ${Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]).toString('base64')} ${comment}`;
}

async function compute<T>(url: string, method: string, path: string, project: string, body?: unknown): Promise<T> {
  const res = await request(`${url}/v2.1${path}`, {
    method: method as 'GET',
    headers: { 'x-project-id': project, 'content-type': 'application/json', accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode >= 400) throw new Error(`nova ${method} ${path}: ${res.statusCode} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

export interface ChainDaemons {
  agent: Proc;
  procs: Proc[];
  /** The agent's Unix socket. */
  socket: string;
  project: string;
  quantumUrl: string;
  computeUrl: string;
  /** nova's metadata URL base (root namespace). */
  novaUrl: string;
  /** Seconds after which neither the agent's nor nova's metadata cache still holds a lookup. */
  cacheExpirySec: number;
  metricsPorts: Record<string, number>;
  /** The headers the agent sends nova for this server and guest address, signed with the chain's secret. */
  novaHeaders(serverId: string, ip: string): Record<string, string>;
  stop(): Promise<void>;
}

/** quantum-server, nova-api and the metadata agent, each from this build with its config under `tmp`; a keypair. */
export async function startChainDaemons(o: Pick<ChainOptions, 'buildRoot' | 'tmp' | 'metrics' | 'log' | 'novaApi'>): Promise<ChainDaemons> {
  const dir = join(o.tmp, 'chain');
  const etc = join(dir, 'etc');
  const qState = join(dir, 'quantum');
  const nState = join(dir, 'nova');
  for (const d of [etc, qState, nState]) mkdirSync(d, { recursive: true });
  const socket = join(qState, 'metadata_proxy');
  const secret = randomBytes(24).toString('hex');
  const [qPort, cPort, mPort] = [await freePort(), await freePort(), await freePort()];
  const quantumUrl = `http://127.0.0.1:${qPort}`;
  const [agentCacheSec, novaCacheSec] = [10, 15];
  const files: Record<string, string> = {
    'quantum.conf': `[DEFAULT]\nstate_path = ${qState}\nbind_host = 127.0.0.1\nbind_port = ${qPort}\nauth_strategy = noauth\nquantum_url = ${quantumUrl}\n\n[database]\nconnection = sqlite:///${join(qState, 'quantum.sqlite')}\n\n[AGENT]\nreport_interval = 30\n`,
    // Neutron's recommended metadata agent cache (about 10 s); workers left at Neutron's default (cpus/2).
    'metadata_agent.ini': `[DEFAULT]\nmetadata_proxy_socket = ${socket}\nnova_metadata_host = 127.0.0.1\nnova_metadata_port = ${mPort}\nmetadata_proxy_shared_secret = ${secret}\n\n[cache]\nenabled = True\nexpiration_time = ${agentCacheSec}\n`,
    'nova.conf': `[DEFAULT]\nstate_path = ${nState}\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = ${cPort}\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\nenabled_apis = osapi_compute,metadata\n\n[database]\nconnection = sqlite:///${join(nState, 'nova.sqlite')}\n\n[neutron]\nurl = ${quantumUrl}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = ${secret}\n\n[api]\nmetadata_cache_expiration = ${novaCacheSec}\ndhcp_domain = novalocal\n`,
  };
  // nova.conf ends in its [api] section.
  for (const [k, v] of Object.entries(o.novaApi ?? {})) files['nova.conf'] += `${k} = ${v}\n`;
  const metricsPorts: Record<string, number> = {};
  if (o.metrics) {
    const section: Record<string, string> = { 'quantum.conf': 'quantum-server', 'nova.conf': 'nova-api', 'metadata_agent.ini': 'metadata-agent' };
    for (const [file, daemon] of Object.entries(section)) {
      metricsPorts[daemon] = await freePort();
      files[file] += `\n[metrics]\nlisten = 127.0.0.1:${metricsPorts[daemon]}\n`;
    }
  }
  for (const [n, t] of Object.entries(files)) writeFileSync(join(etc, n), t, { mode: 0o600 });
  const procs: Proc[] = [];
  const stop = async () => {
    for (const p of [...procs].reverse()) await p.stop();
  };
  const main = (d: string) => resolve(o.buildRoot, 'src', d, 'main.js');
  const project = 'bench';
  const computeUrl = `http://127.0.0.1:${cPort}`;
  try {
    const qs = launch('quantum-server', [process.execPath, main('quantum-server'), '--config-file', join(etc, 'quantum.conf'), '--log_file', join(dir, 'quantum-server.log')], undefined, dir);
    procs.push(qs);
    await waitTcp(qs, qPort);
    const nova = launch('nova-api', [process.execPath, main('nova-api'), '--config-file', join(etc, 'nova.conf'), '--log_file', join(dir, 'nova-api.log')], undefined, dir);
    procs.push(nova);
    await waitTcp(nova, cPort);
    await waitTcp(nova, mPort);
    const agent = launch(
      'metadata-agent',
      [process.execPath, main('metadata-agent'), '--config-file', join(etc, 'quantum.conf'), '--config-file', join(etc, 'metadata_agent.ini'), '--log_file', join(dir, 'metadata-agent.log')],
      undefined,
      dir,
    );
    procs.push(agent);
    // Any HTTP answer on the socket (a bare GET / gets an error status) means the agent is up.
    await waitUnixListen(agent, socket);
    await compute(computeUrl, 'POST', '/os-keypairs', project, { keypair: { name: KEY_NAME, public_key: sshPublicKey('bench@controller') } });
    return {
      agent,
      procs,
      socket,
      project,
      quantumUrl,
      computeUrl,
      novaUrl: `http://127.0.0.1:${mPort}`,
      cacheExpirySec: Math.max(agentCacheSec, novaCacheSec),
      metricsPorts,
      novaHeaders: (serverId, ip) => ({ 'X-Forwarded-For': ip, 'X-Instance-ID': serverId, 'X-Tenant-ID': project, 'X-Instance-ID-Signature': signInstanceId(secret, serverId) }),
      stop,
    };
  } catch (e) {
    for (const p of procs) if (p.exited()) o.log(`${p.name} exited:\n${logTail(p)}`);
    await stop();
    throw e;
  }
}

const KEY_NAME = 'bench-key';

export interface RouterNetwork {
  routerId: string;
  networkId: string;
}

/**
 * Through the Neutron API: network `<name>-net`, subnet 10.1.1.0/24 (gateway ROUTER_IP, netns.ts's addresses) and
 * router `<name>-router` with an interface on it. Networks of different routers may overlap, as tenants' do.
 */
export async function createRouterNetwork(d: ChainDaemons, name: string): Promise<RouterNetwork> {
  const q = new QuantumClient({ url: d.quantumUrl, projectId: d.project });
  try {
    const net = await q.createNetwork({ name: `${name}-net`, admin_state_up: true }, d.project);
    const subnet = await q.createSubnet({ network_id: net.id, name: `${name}-subnet`, cidr: '10.1.1.0/24', ip_version: 4, gateway_ip: ROUTER_IP, enable_dhcp: true }, d.project);
    const router = await q.createRouter({ name: `${name}-router`, admin_state_up: true }, d.project);
    await q.addRouterInterface(router.id, { subnet_id: subnet.id });
    return { routerId: router.id, networkId: net.id };
  } finally {
    await q.close();
  }
}

/** Servers through Nova's compute API, each with its fixed IP on `networkId`, `parallel` at a time; ids in input order. */
export async function createServers(d: ChainDaemons, networkId: string, servers: { name: string; ip: string }[], parallel = 4): Promise<string[]> {
  const ids: string[] = new Array<string>(servers.length);
  const queue = [...servers.entries()];
  const worker = async () => {
    for (let x = queue.shift(); x; x = queue.shift()) {
      const [i, s] = x;
      ids[i] = (
        await compute<{ server: { id: string } }>(d.computeUrl, 'POST', '/servers', d.project, {
          server: {
            name: s.name,
            flavorRef: '1',
            imageRef: '6f3c7a8e-2b1d-4c59-9e0a-3d5b7c1f2a90',
            key_name: KEY_NAME,
            user_data: Buffer.from('#cloud-config\nhostname: bench\n').toString('base64'),
            metadata: { role: 'bench' },
            networks: [{ uuid: networkId, fixed_ip: s.ip }],
          },
        })
      ).server.id;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return ids;
}

/** What nova answers for this server directly (signed headers), e.g. its own instance-id, to check guests against. */
export async function novaDirect(d: ChainDaemons, serverId: string, ip: string, path: string): Promise<{ status: number; body: string }> {
  const res = await request(`${d.novaUrl}${path}`, { headers: d.novaHeaders(serverId, ip) });
  return { status: res.statusCode, body: await res.body.text() };
}

export async function buildChain(o: ChainOptions): Promise<Chain> {
  const d = await startChainDaemons(o);
  const { procs } = d;
  try {
    const { routerId, networkId } = await createRouterNetwork(d, 'bench');
    const [serverId] = await createServers(d, networkId, [{ name: 'bench-vm', ip: GUEST_IP }], 1);
    const t0 = Date.now();
    await createServers(d, networkId, o.stormIps.map((ip, i) => ({ name: `bench-storm-${i}`, ip })));
    if (o.stormIps.length) o.log(`created ${o.stormIps.length} storm servers in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const dir = join(o.tmp, 'chain');
    const ours = await startOurProxy('chain-ours', o.proxyMain, o.topo.router, dir, { routerId, port: o.ports.ours, socket: d.socket, nodeArgs: o.nodeFlags });
    procs.push(ours);
    const haproxy = await startHaproxy('chain-haproxy', o.topo.router, dir, { routerId, port: o.ports.haproxy, socket: d.socket });
    procs.push(haproxy);
    return {
      ours,
      haproxy,
      agent: d.agent,
      procs,
      routerId,
      serverId: serverId!,
      socket: d.socket,
      novaUrl: d.novaUrl,
      novaHeaders: d.novaHeaders(serverId!, GUEST_IP),
      stormIps: [...o.stormIps],
      metricsPorts: d.metricsPorts,
      stop: d.stop,
    };
  } catch (e) {
    for (const p of procs) if (p.exited()) o.log(`${p.name} exited:\n${logTail(p)}`);
    await d.stop();
    throw e;
  }
}

/** The processes a request through the chain (our proxy) passes, in that order. */
export const HOPS = ['proxy', 'metadata-agent', 'quantum-server', 'nova-api'] as const;
export type Hop = (typeof HOPS)[number];

export function hopPids(c: Chain): Record<Hop, number> {
  const pidOf = (n: string) => c.procs.find((p) => p.name === n)!.pid;
  return { proxy: c.ours.pid, 'metadata-agent': c.agent.pid, 'quantum-server': pidOf('quantum-server'), 'nova-api': pidOf('nova-api') };
}

/** What `work` reports, and the CPU (utime+stime of each hop's process tree) it cost per request, µs. */
export async function cpuPerRequest<R extends { requests: number }>(c: Chain, work: () => Promise<R>): Promise<{ r: R; cpuUsPerReq: Record<Hop, number> }> {
  const p = hopPids(c);
  const cpu = () => Object.fromEntries(HOPS.map((d) => [d, cpuSeconds(p[d])])) as Record<Hop, number>;
  const cpu0 = cpu();
  const r = await work();
  const cpu1 = cpu();
  const n = r.requests || 1;
  return { r, cpuUsPerReq: Object.fromEntries(HOPS.map((d) => [d, ((cpu1[d] - cpu0[d]) * 1e6) / n])) as Record<Hop, number> };
}
