// Benchmark: the control plane at a network node's scale. As root:
//   npm run build && node dist/bench/control-plane.js [--sizes 100,300,1000] [--mode shared|per-namespace]
//        [--no-rabbit] [--changes 20] [--idle 60] [--outage 30] [--out bench/results/control-plane]
// Per size, a fresh stack on this machine: quantum-server, nova-api, one quantum-metadata-agent, two
// quantum-l3-agents (hosts bench-l3-a / bench-l3-b, standing in for two network nodes) and one
// quantum-dhcp-agent, all real processes, with RabbitMQ (a private broker node) unless --no-rabbit. Then:
//  1. converge: N routers, each with a network, a subnet and a router interface, created through the API
//     while the agents run; time until the agents report every router built and every metadata proxy alive;
//  2. change-to-serving: 20 times, a router interface is added under a guest that already has a Nova server;
//     time until the guest gets 200 from 169.254.169.254 through the whole chain;
//  3. idle: agents' CPU and the RPC requests they send to quantum-server over --idle seconds;
//  4. failover: kill -9 of one L3 agent and its proxies (its "node" dies); time until every sampled guest
//     behind its routers is served again, and every router hosted exactly once;
//  5. RabbitMQ outage (with RabbitMQ): the broker stopped for --outage seconds while routers are created;
//     time to converge once it is back.
// Everything the run makes is named from the ids it created and removed at the end. Not a test.
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { QuantumClient, type Agent } from '../src/common/quantum-client.js';
import { bridgeName, dhcpNamespace, routerDeviceName, routerNamespace } from '../src/linux/names.js';
import { NetFixture, type Guest } from '../test/helpers/netns.js';
import { startRabbit, type TestRabbit as RunningRabbit } from '../test/helpers/rabbitmq.js';
import { killChildren, run } from './lib/exec.js';
import { cpuSecondsSelf, cpuSecondsWithReaped, memory } from './lib/procstat.js';
import { launch, logTail, type Proc } from './lib/procs.js';
import { fmt, median, table } from './lib/stats.js';
import { percentile } from './lib/storm.js';

const here = dirname(fileURLToPath(import.meta.url));
const buildRoot = resolve(here, '..');
const main = (d: string) => resolve(buildRoot, 'src', d, 'main.js');

const { values: flags } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100,300,1000' },
    mode: { type: 'string', default: 'shared' },
    'no-rabbit': { type: 'boolean', default: false },
    changes: { type: 'string', default: '20' },
    idle: { type: 'string', default: '60' },
    outage: { type: 'string', default: '30' },
    'agent-down-time': { type: 'string', default: '10' },
    'no-failover': { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results/control-plane' },
    debug: { type: 'boolean', default: false },
    'keep-logs': { type: 'string' },
    profile: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  process.stdout.write('usage: node dist/bench/control-plane.js [--sizes 100,300,1000] [--mode shared|per-namespace] [--no-rabbit] [--changes N] [--idle S] [--outage S] [--agent-down-time S] [--no-failover] [--out PATH] [--keep-logs DIR] [--profile DIR]\n');
  process.exit(0);
}
const SIZES = flags.sizes.split(',').map(Number);
const MODE = flags.mode;
const RABBIT = !flags['no-rabbit'];
const CHANGES = Number(flags.changes);
const IDLE_S = Number(flags.idle);
const OUTAGE_S = Number(flags.outage);
const DOWN_TIME = Number(flags['agent-down-time']);
const POLLING = 2;
const REPORT_S = 4;
const L3_HOSTS = ['bench-l3-a', 'bench-l3-b'];
const DHCP_HOST = 'bench-dhcp';
const PROJECT = 'bench';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const log = (m: string) => process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${m}\n`);

async function freePort(): Promise<number> {
  const { getFreePort } = await import('../test/helpers/proc.js');
  return getFreePort();
}

async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined | false>, stepMs = 250): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/** Run fn over items, `n` at a time. */
async function pool<T>(items: readonly T[], n: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

interface Stack {
  dir: string;
  q: QuantumClient;
  computeUrl: string;
  procs: Map<string, Proc>;
  agentState: Map<string, string>;
  serverLog: string;
  fx: NetFixture;
  routers: string[];
  networks: string[];
  stop(): Promise<void>;
}

function ini(sections: Record<string, Record<string, string | number | boolean>>): string {
  return Object.entries(sections)
    .map(([s, kv]) => `[${s}]\n${Object.entries(kv).map(([k, v]) => `${k} = ${typeof v === 'boolean' ? (v ? 'True' : 'False') : v}`).join('\n')}\n`)
    .join('\n');
}

async function startStack(fx: NetFixture, rabbit: RunningRabbit | undefined, label: string): Promise<Stack> {
  const dir = fx.statePath();
  const etc = join(dir, 'etc');
  mkdirSync(etc, { recursive: true });
  const [qPort, cPort, mPort] = [await freePort(), await freePort(), await freePort()];
  const quantumUrl = `http://127.0.0.1:${qPort}`;
  const secret = randomBytes(16).toString('hex');
  const socket = join(dir, 'metadata_proxy');
  const transport: Record<string, string> = rabbit ? { transport_url: rabbit.url } : {};
  const qState = join(dir, 'quantum');
  mkdirSync(qState, { recursive: true });
  writeFileSync(
    join(etc, 'quantum.conf'),
    ini({
      DEFAULT: { bind_host: '127.0.0.1', bind_port: qPort, state_path: qState, quantum_url: quantumUrl, agent_down_time: DOWN_TIME, allow_automatic_l3agent_failover: true, ...transport },
      database: { connection: `sqlite:///${join(qState, 'quantum.sqlite')}` },
    }),
  );
  writeFileSync(
    join(etc, 'metadata_agent.ini'),
    ini({ DEFAULT: { state_path: qState, metadata_proxy_socket: socket, nova_metadata_host: '127.0.0.1', nova_metadata_port: mPort, metadata_proxy_shared_secret: secret, metadata_workers: 1, host: 'bench-meta', ...transport }, AGENT: { report_interval: REPORT_S }, cache: { enabled: true, expiration_time: 10 } }),
  );
  const nState = join(dir, 'nova');
  mkdirSync(nState, { recursive: true });
  writeFileSync(
    join(etc, 'nova.conf'),
    ini({
      DEFAULT: { state_path: nState, osapi_compute_listen: '127.0.0.1', osapi_compute_listen_port: cPort, metadata_listen: '127.0.0.1', metadata_listen_port: mPort, enabled_apis: 'osapi_compute,metadata' },
      database: { connection: `sqlite:///${join(nState, 'nova.sqlite')}` },
      neutron: { url: quantumUrl, service_metadata_proxy: true, metadata_proxy_shared_secret: secret },
    }),
  );
  const agentState = new Map<string, string>();
  const agentCommon = (host: string) => {
    const st = join(dir, host);
    mkdirSync(st, { recursive: true });
    agentState.set(host, st);
    return { state_path: st, quantum_url: quantumUrl, host, polling_interval: POLLING, metadata_proxy_socket: socket, metadata_proxy_mode: MODE, ...transport };
  };
  // Reports every 4 s (agent_down_time 10 s wants at least two per window); children checked every 10 s.
  const agentSection = { report_interval: REPORT_S, check_child_processes_interval: 10 };
  for (const h of L3_HOSTS) writeFileSync(join(etc, `${h}.ini`), ini({ DEFAULT: agentCommon(h), AGENT: agentSection }));
  writeFileSync(join(etc, `${DHCP_HOST}.ini`), ini({ DEFAULT: agentCommon(DHCP_HOST), AGENT: agentSection }));

  const procs = new Map<string, Proc>();
  const serverLog = join(dir, 'quantum-server.log');
  const up = async (name: string, argv: string[]) => {
    // --profile DIR: each daemon writes a V8 CPU profile there when it stops (node's --cpu-prof).
    if (flags.profile) argv = [argv[0]!, '--cpu-prof', `--cpu-prof-dir=${resolve(flags.profile)}`, `--cpu-prof-name=${name}.cpuprofile`, ...argv.slice(1)];
    const p = launch(name, argv, undefined, dir);
    procs.set(name, p);
    return p;
  };
  const q = new QuantumClient({ url: quantumUrl, projectId: PROJECT, timeoutMs: 120_000, connections: 8 });
  const stop = async () => {
    await q.close();
    for (const p of [...procs.values()].reverse()) await p.stop();
  };
  try {
    await up('quantum-server', [process.execPath, main('quantum-server'), '--config-file', join(etc, 'quantum.conf'), '--log_file', serverLog]);
    await waitFor('quantum-server', 30_000, async () => (await q.listNetworks({ id: 'none' })) !== undefined);
    await up('nova-api', [process.execPath, main('nova-api'), '--config-file', join(etc, 'nova.conf'), '--log_file', join(dir, 'nova-api.log')]);
    await waitFor('nova-api', 30_000, async () => (await request(`http://127.0.0.1:${cPort}/`)).statusCode < 500);
    await up('metadata-agent', [process.execPath, main('metadata-agent'), '--config-file', join(etc, 'quantum.conf'), '--config-file', join(etc, 'metadata_agent.ini'), '--log_file', join(dir, 'metadata-agent.log')]);
    const dbg = flags.debug ? ['--debug'] : [];
    for (const h of L3_HOSTS) await up(h, [process.execPath, main('l3-agent'), '--config-file', join(etc, `${h}.ini`), '--log_file', join(dir, `${h}.log`), ...dbg]);
    await up(DHCP_HOST, [process.execPath, main('dhcp-agent'), '--config-file', join(etc, `${DHCP_HOST}.ini`), '--log_file', join(dir, `${DHCP_HOST}.log`), ...dbg]);
    await waitFor('agents registered', 30_000, async () => (await q.listAgents()).filter((a) => a.alive).length >= 4);
  } catch (e) {
    for (const p of procs.values()) if (p.exited()) log(`${p.name} exited:\n${logTail(p)}`);
    await stop();
    throw e;
  }
  log(`${label}: stack up (${[...procs.keys()].join(', ')}), ${RABBIT ? 'RabbitMQ' : 'polling'}, metadata_proxy_mode = ${MODE}`);
  return { dir, q, computeUrl: `http://127.0.0.1:${cPort}`, procs, agentState, serverLog, fx, routers: [], networks: [], stop };
}

interface Built {
  networkId: string;
  subnetId: string;
  routerId: string;
}

/** A network (10.20.0.0/24, the same CIDR everywhere, as tenants have), a subnet, a router; the interface unless told not to. */
async function buildTenant(s: Stack, i: number, withInterface = true): Promise<Built> {
  const net = await s.q.createNetwork({ name: `bench-net-${i}` });
  s.networks.push(net.id);
  s.fx.trackNamespace(dhcpNamespace(net.id));
  s.fx.trackBridge(bridgeName(net.id));
  const sub = await s.q.createSubnet({ network_id: net.id, cidr: '10.20.0.0/24', ip_version: 4, gateway_ip: '10.20.0.1' });
  const r = await s.q.createRouter({ name: `bench-router-${i}` });
  s.routers.push(r.id);
  s.fx.trackNamespace(routerNamespace(r.id));
  if (withInterface) await s.q.addRouterInterface(r.id, { subnet_id: sub.id });
  return { networkId: net.id, subnetId: sub.id, routerId: r.id };
}

interface NodeReport {
  l3: Array<{ host: string; routers: number; expected: number; alive: number; up: boolean }>;
  dhcpNetworks: number;
}

async function reports(s: Stack): Promise<NodeReport> {
  const agents: Agent[] = await s.q.listAgents();
  const conf = (a: Agent) => a.configurations as { routers?: number; networks?: number; metadata_proxies?: { expected: number; alive: number } };
  return {
    l3: agents.filter((a) => a.agent_type === 'L3 agent').map((a) => ({ host: a.host, routers: conf(a).routers ?? 0, expected: conf(a).metadata_proxies?.expected ?? 0, alive: conf(a).metadata_proxies?.alive ?? 0, up: a.alive })),
    dhcpNetworks: agents.filter((a) => a.agent_type === 'DHCP agent').reduce((n, a) => n + (conf(a).networks ?? 0), 0),
  };
}

/** Every router built and its proxy alive on the live L3 agents, and every network served by DHCP. */
async function converged(s: Stack, routers: number, networks: number, hosts = L3_HOSTS): Promise<boolean> {
  const r = await reports(s);
  const live = r.l3.filter((a) => hosts.includes(a.host));
  const built = live.reduce((n, a) => n + a.routers, 0);
  const alive = live.reduce((n, a) => n + a.alive, 0);
  return built === routers && alive === routers && r.dhcpNetworks >= networks;
}

async function compute<T>(s: Stack, method: string, path: string, body?: unknown): Promise<T> {
  const res = await request(`${s.computeUrl}/v2.1${path}`, { method: method as 'GET', headers: { 'x-project-id': PROJECT, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode >= 400) throw new Error(`nova ${method} ${path}: ${res.statusCode} ${text}`);
  return JSON.parse(text) as T;
}

interface Sample {
  built: Built;
  guest: Guest;
  serverId: string;
  ec2Id: string;
}

/** A Nova server on the tenant's network at 10.20.0.5 and a guest namespace holding its port. */
async function sampleGuest(s: Stack, b: Built): Promise<Sample> {
  const srv = await compute<{ server: { id: string } }>(s, 'POST', '/servers', { server: { name: `bench-vm-${b.routerId.slice(0, 8)}`, flavorRef: '1', imageRef: '6f3c7a8e-2b1d-4c59-9e0a-3d5b7c1f2a90', networks: [{ uuid: b.networkId, fixed_ip: '10.20.0.5' }] } });
  const [port] = await s.q.listPorts({ device_id: srv.server.id });
  const guest = s.fx.guest({ bridge: bridgeName(b.networkId), mac: port!.mac_address, cidr: '10.20.0.5/24', gateway: '10.20.0.1' });
  const ec2 = await waitFor('server ec2 id', 10_000, async () => {
    const d = await compute<{ server: Record<string, unknown> }>(s, 'GET', `/servers/${srv.server.id}`);
    return (d.server['OS-EXT-SRV-ATTR:instance_name'] as string | undefined) ?? 'unknown';
  });
  return { built: b, guest, serverId: srv.server.id, ec2Id: ec2 };
}

const trace: string[] = [];
async function served(g: Guest): Promise<boolean> {
  const t0 = Date.now();
  const r0 = await run(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code} %{time_connect} %{time_total}', '--connect-timeout', '0.2', '-m', '2', 'http://169.254.169.254/openstack/latest/meta_data.json'], { ns: g.ns, allowFail: true, timeoutMs: 3000 });
  if (process.env.CP_TRACE) trace.push(`${t0 % 100000} ${r0.stdout.trim()} exit ${r0.code} took ${Date.now() - t0}`);
  return r0.stdout.trim().startsWith('200');
  // Short timeouts: before the router's interface exists the SYN goes nowhere, and a long one would round the latency up to it.
  const r = await run(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--connect-timeout', '0.2', '-m', '2', 'http://169.254.169.254/openstack/latest/meta_data.json'], { ns: g.ns, allowFail: true, timeoutMs: 3000 });
  return r.stdout.trim() === '200';
}

/** How long until the guest is served, polling every 50 ms. */
async function timeToServe(g: Guest, t0: number, timeoutMs: number): Promise<number> {
  await waitFor('guest served', timeoutMs, () => served(g), 50);
  return Date.now() - t0;
}

function pidsOf(s: Stack, host: string): number[] {
  return s.fx.pidsFromStatePath(s.agentState.get(host)!);
}

/** RPC requests and heartbeats quantum-server logged in [from, to). */
function serverRequests(s: Stack, from: number, to: number): { rpc: number; periodic: number; reports: number; other: number; byUrl: Record<string, number> } {
  const out = { rpc: 0, periodic: 0, reports: 0, other: 0, byUrl: {} as Record<string, number> };
  // The periodic read of the change log re-syncs what it names (changes the casts already brought, or lost):
  // an RPC within 2 s after a get_changes of the same plugin topic belongs to that safety net.
  const lastRead = new Map<string, number>();
  for (const line of readFileSync(s.serverLog, 'utf8').split('\n')) {
    if (!line.includes('"status"') || !line.includes('"url"')) continue;
    let j: { time?: number; url?: string; method?: string };
    try {
      j = JSON.parse(line) as typeof j;
    } catch {
      continue;
    }
    if (!j.time || j.time < from || j.time >= to || !j.url) continue;
    const key = `${j.method} ${j.url.split('?')[0]}`;
    out.byUrl[key] = (out.byUrl[key] ?? 0) + 1;
    if (j.url.startsWith('/v2.0/rpc/')) {
      out.rpc++;
      const topic = j.url.split('/')[3] ?? '';
      // With RabbitMQ, the read of the change log every periodic_interval: the safety net, not a reaction.
      if (j.url.endsWith('/get_changes')) {
        out.periodic++;
        lastRead.set(topic, j.time);
      } else if (j.time - (lastRead.get(topic) ?? -Infinity) <= 2000) out.periodic++;
    }
    else if (j.method === 'POST' && j.url.startsWith('/v2.0/agents')) out.reports++;
    else out.other++;
  }
  return out;
}

/** External commands an agent logged (at debug) in [from, to), by their first words. */
function agentCommands(s: Stack, host: string, from: number, to: number): Record<string, number> {
  const out: Record<string, number> = {};
  let text = '';
  try {
    text = readFileSync(join(s.dir, `${host}.log`), 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.includes('running command')) continue;
    try {
      const j = JSON.parse(line) as { time?: number; argv?: string[] };
      if (!j.time || j.time < from || j.time >= to || !j.argv) continue;
      const k = j.argv.slice(0, 4).join(' ');
      out[k] = (out[k] ?? 0) + 1;
    } catch {
      /* not JSON */
    }
  }
  return out;
}

interface SizeResult {
  routers: number;
  createS: number;
  convergeS: number;
  perRouterS: number;
  /** CPU each daemon spent converging (with the commands it ran, not its long-running children), per router. */
  cpuPerRouterMs: Record<string, number>;
  latency: { p50: number; p99: number; max: number; n: number };
  idle: Array<{ host: string; cpuPct: number }>;
  proxyIdleCpuPct: number;
  /** Interface added → its qr- device up in the router namespace (what the agent did, without the guest's ARP retry). */
  applied: { p50: number; p99: number };
  idleRequests: { rpc: number; periodic: number; reports: number; other: number; byUrl: Record<string, number> };
  settleS: number;
  /** The machine's 1-minute load average when this size started and when it ended (2 cores). */
  load: { start: number; end: number };
  proxyPss?: number;
  failover?: { servedAfterS: number; convergeS: number; lost: number; doubled: number; sampled: number };
  outage?: { routersDuring: number; convergeAfterS: number };
}

async function runSize(n: number, rabbit: RunningRabbit | undefined): Promise<SizeResult> {
  const loadStart = loadavg()[0]!;
  const fx = new NetFixture();
  const s = await startStack(fx, rabbit, `${n} routers`);
  try {
    // 1. converge (and what each daemon spent on it)
    const daemonCpu = () => new Map([...s.procs].map(([name, p]) => [name, cpuSecondsWithReaped(p.pid)]));
    const c0 = daemonCpu();
    const t0 = Date.now();
    await pool(Array.from({ length: n }, (_, i) => i), 8, async (i) => void (await buildTenant(s, i)));
    const createS = (Date.now() - t0) / 1000;
    log(`created ${n} networks, subnets, routers and interfaces in ${createS.toFixed(1)} s`);
    await waitFor(`${n} routers converged`, Math.max(300_000, n * 1000), () => converged(s, n, n), 500);
    const convergeS = (Date.now() - t0) / 1000;
    const c1 = daemonCpu();
    const cpuPerRouterMs = Object.fromEntries([...c1].map(([name, v]) => [name, ((v - (c0.get(name) ?? 0)) / n) * 1000]));
    log(`converged in ${convergeS.toFixed(1)} s (${((convergeS / n) * 1000).toFixed(0)} ms per router); CPU per router: ${Object.entries(cpuPerRouterMs).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ')}`);

    // 2. change-to-serving
    const lat: number[] = [];
    const app: number[] = [];
    const samples: Sample[] = [];
    for (let i = 0; i < CHANGES; i++) {
      const b = await buildTenant(s, n + i, false);
      const smp = await sampleGuest(s, b);
      samples.push(smp);
      await sleep(300);
      const t = Date.now();
      const info = await s.q.addRouterInterface(b.routerId, { subnet_id: b.subnetId });
      const dev = routerDeviceName(info.port_id);
      const [l, a] = await Promise.all([
        timeToServe(smp.guest, t, 60_000),
        waitFor('qr- device', 60_000, async () => (await run(['ip', '-n', routerNamespace(b.routerId), 'link', 'show', 'dev', dev], { allowFail: true })).code === 0, 10).then(() => Date.now() - t),
      ]);
      lat.push(l);
      app.push(a);
      if (process.env.CP_TRACE) log(`t0 ${t % 100000}: ${trace.splice(0).join(' | ')}`);
    }
    app.sort((x, y) => x - y);
    const applied = { p50: percentile(app, 50), p99: percentile(app, 99) };
    lat.sort((a, b) => a - b);
    const latency = { p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat[lat.length - 1] ?? NaN, n: lat.length };
    log(`change-to-serving: guest served p50 ${latency.p50} ms, p99 ${latency.p99} ms; interface built p50 ${applied.p50} ms, p99 ${applied.p99} ms; over ${lat.length} changes`);
    const total = n + CHANGES;
    await waitFor('converged after the changes', 120_000, () => converged(s, total, total), 500);

    // 3. idle, once the agents have settled: the changes' trailing reactions (DHCP ports going ACTIVE, the
    // port updates that follows) are part of converging, not of being idle. Settled: no RPC for 5 s.
    const settleFrom = Date.now();
    await sleep(3000);
    for (let quietSince = Date.now(); Date.now() - settleFrom < 120_000; ) {
      await sleep(1000);
      if (serverRequests(s, Date.now() - 1000, Date.now()).rpc > 0) quietSince = Date.now();
      else if (Date.now() - quietSince >= 5000) break;
    }
    const settleS = (Date.now() - settleFrom) / 1000;
    log(`agents settled ${settleS.toFixed(1)} s after the last change converged (no RPC for 5 s)`);
    const hosts = [...L3_HOSTS, DHCP_HOST];
    // The agents' own CPU (their proxies, children of the L3 agents in per-namespace mode, are counted apart).
    const proxyPids = L3_HOSTS.flatMap((h) => pidsOf(s, h).filter((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('ns-proxy')));
    const proxyCpu = () => proxyPids.reduce((t, p) => t + cpuSecondsSelf(p), 0);
    const cpu0 = new Map(hosts.map((h) => [h, cpuSecondsSelf(s.procs.get(h)!.pid)]));
    const px0 = proxyCpu();
    const w0 = Date.now();
    await sleep(IDLE_S * 1000);
    const w1 = Date.now();
    const idle = hosts.map((h) => ({ host: h, cpuPct: ((cpuSecondsSelf(s.procs.get(h)!.pid) - cpu0.get(h)!) / ((w1 - w0) / 1000)) * 100 }));
    const proxyIdleCpuPct = ((proxyCpu() - px0) / ((w1 - w0) / 1000)) * 100;
    const idleRequests = serverRequests(s, w0, w1);
    log(`idle ${IDLE_S} s: CPU ${idle.map((x) => `${x.host} ${x.cpuPct.toFixed(2)}%`).join(', ')}, all ${proxyPids.length} metadata proxies ${proxyIdleCpuPct.toFixed(2)}%; ${idleRequests.rpc} RPC requests, ${idleRequests.reports} state reports (${Object.entries(idleRequests.byUrl).map(([k, v]) => `${k} ×${v}`).join(', ')})`);
    for (const h of hosts) {
      const cmds = agentCommands(s, h, w0, w1);
      if (Object.keys(cmds).length) log(`  ${h} ran during the idle window: ${Object.entries(cmds).map(([k, v]) => `${k} ×${v}`).join(', ')}`);
    }
    // Proxy memory: every proxy process of the L3 agents (shared or one per router).
    let pss = 0;
    for (const h of L3_HOSTS) for (const pid of pidsOf(s, h)) if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('ns-proxy')) pss += memory(pid).pssKb;
    const proxyPss = pss / total;
    log(`metadata proxies: ${(pss / 1024).toFixed(1)} MB Pss in all, ${(proxyPss).toFixed(0)} kB per router`);

    const res: SizeResult = { routers: n, createS, convergeS, perRouterS: convergeS / n, cpuPerRouterMs, latency, applied, idle, proxyIdleCpuPct, idleRequests, settleS, proxyPss, load: { start: loadStart, end: loadStart } };

    // 4. failover
    if (!flags['no-failover']) {
      const victim = L3_HOSTS[0]!;
      const survivor = L3_HOSTS[1]!;
      const agents = await s.q.listAgents({ agent_type: 'L3 agent' });
      const vAgent = agents.find((a) => a.host === victim)!;
      const onVictim = new Set((await s.q.listRoutersOnL3Agent(vAgent.id)).map((r) => r.id));
      const behind = samples.filter((x) => onVictim.has(x.built.routerId));
      const procsToKill = [s.procs.get(victim)!.pid, ...pidsOf(s, victim).filter((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('ns-proxy'))];
      const tk = Date.now();
      for (const pid of procsToKill) process.kill(pid, 'SIGKILL');
      s.procs.delete(victim);
      log(`failover: killed ${victim} and its ${procsToKill.length - 1} proxy processes (${onVictim.size} routers, ${behind.length} sampled guests behind them)`);
      await Promise.all(behind.map((x) => waitFor('guest served after failover', (DOWN_TIME + 120) * 1000, () => served(x.guest), 250)));
      const servedAfterS = (Date.now() - tk) / 1000;
      await waitFor('survivor hosts everything', 300_000, () => converged(s, total, total, [survivor]), 500);
      const convergeFo = (Date.now() - tk) / 1000;
      const byAgent = await Promise.all(agents.map(async (a) => (await s.q.listRoutersOnL3Agent(a.id)).map((r) => r.id)));
      const all = byAgent.flat();
      const lost = s.routers.filter((id) => !all.includes(id)).length;
      const doubled = all.length - new Set(all).size;
      res.failover = { servedAfterS, convergeS: convergeFo, lost, doubled, sampled: behind.length };
      log(`failover: sampled guests served again after ${servedAfterS.toFixed(1)} s, survivor converged after ${convergeFo.toFixed(1)} s; ${lost} routers lost, ${doubled} doubled`);
    }

    // 5. RabbitMQ outage
    if (rabbit && OUTAGE_S > 0) {
      const before = s.routers.length;
      const tDown = Date.now();
      await rabbit.down();
      log(`RabbitMQ stopped; creating routers for ${OUTAGE_S} s`);
      let made = 0;
      while (Date.now() - tDown < OUTAGE_S * 1000) {
        await buildTenant(s, 100_000 + made);
        made++;
        await sleep(500);
      }
      await rabbit.up();
      const tUp = Date.now();
      const hostsNow = flags['no-failover'] ? L3_HOSTS : [L3_HOSTS[1]!];
      await waitFor('converged after the outage', 300_000, () => converged(s, before + made, before + made, hostsNow), 500);
      res.outage = { routersDuring: made, convergeAfterS: (Date.now() - tUp) / 1000 };
      log(`outage: ${made} routers created while RabbitMQ was down; all served ${res.outage.convergeAfterS.toFixed(1)} s after it came back`);
    }
    res.load.end = loadavg()[0]!;
    return res;
  } finally {
    log('tearing down');
    await s.stop();
    if (flags['keep-logs']) {
      const to = join(resolve(flags['keep-logs']), `${n}`);
      mkdirSync(to, { recursive: true });
      for (const f of readdirSync(s.dir)) if (f.endsWith('.log')) copyFileSync(join(s.dir, f), join(to, f));
      log(`logs kept in ${to}`);
    }
    fx.cleanup();
  }
}

async function mainRun(): Promise<void> {
  let rabbit: RunningRabbit | undefined;
  const results: SizeResult[] = [];
  const started = new Date();
  try {
    if (RABBIT) {
      rabbit = await startRabbit();
      log(`RabbitMQ node ${rabbit.nodename} on port ${rabbit.port}`);
    }
    for (const n of SIZES) results.push(await runSize(n, rabbit));
  } finally {
    await rabbit?.stop();
    killChildren();
  }
  const rows = results.map((r) => [
    r.routers,
    fmt(r.createS),
    fmt(r.convergeS),
    fmt(r.perRouterS, 3),
    `${r.latency.p50} / ${r.latency.p99} (built ${r.applied.p50} / ${r.applied.p99})`,
    `${r.idle.map((x) => fmt(x.cpuPct, 2)).join(' / ')} (proxies ${fmt(r.proxyIdleCpuPct, 2)})`,
    `${r.idleRequests.rpc} (${r.idleRequests.periodic} periodic: get_changes and the syncs it brings; +${r.idleRequests.reports} reports; settled in ${fmt(r.settleS)} s)`,
    r.proxyPss !== undefined ? fmt(r.proxyPss, 0) : '–',
    r.failover ? `${fmt(r.failover.servedAfterS)} / ${fmt(r.failover.convergeS)} (${r.failover.lost} lost, ${r.failover.doubled} doubled)` : '–',
    r.outage ? `${r.outage.routersDuring} made, ${fmt(r.outage.convergeAfterS)} s` : '–',
  ]);
  const growth = results.length > 1 ? results.map((r) => fmt(r.perRouterS / results[0]!.perRouterS, 2)).join(' → ') : '–';
  const md = [
    `# control-plane benchmark, ${started.toISOString()}`,
    '',
    `metadata_proxy_mode = ${MODE}; ${RABBIT ? 'RabbitMQ (private broker node)' : `no RabbitMQ (polling every ${POLLING} s)`}; two L3 agents, one DHCP agent, one metadata agent; agent_down_time = ${DOWN_TIME} s; ${CHANGES} change samples; idle window ${IDLE_S} s.`,
    '',
    table(['routers', 'create (API) s', 'converge s', 's per router', 'change→200 p50 / p99 ms', 'idle CPU % (l3-a / l3-b / dhcp)', 'idle RPC requests', 'proxy Pss kB per router', 'failover: served again / converged s', 'RabbitMQ outage'], rows),
    '',
    `Cost per router relative to the smallest size: ${growth} (1.00 everywhere is linear).`,
    '',
    `${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}); 1-minute load average at the start → end of each size: ${results.map((r) => `${r.routers}: ${fmt(r.load.start, 1)} → ${fmt(r.load.end, 1)}`).join(', ')}${results.some((r) => Math.max(r.load.start, r.load.end) > cpus().length) ? ' (above the core count: other work shared the machine, and the times of that size are inflated by it)' : ''}.`,
    '',
  ].join('\n');
  mkdirSync(dirname(resolve(flags.out)), { recursive: true });
  writeFileSync(`${resolve(flags.out)}-${MODE}${RABBIT ? '' : '-polling'}.md`, md);
  writeFileSync(`${resolve(flags.out)}-${MODE}${RABBIT ? '' : '-polling'}.json`, `${JSON.stringify({ started, mode: MODE, rabbit: RABBIT, results }, null, 1)}\n`);
  process.stdout.write(`\n${md}`);
  void median;
}

process.on('SIGINT', () => {
  killChildren('SIGKILL');
  process.exit(130);
});
mainRun().catch((e: unknown) => {
  process.stderr.write(`control-plane: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
