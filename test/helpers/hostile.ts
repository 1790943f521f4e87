// Hostile guests against the real chain, for test/adversarial.test.ts and bench/adversarial.ts: a router
// namespace with a bridge (10.250.0.1/24) and the real quantum-ns-metadata-proxy in it, guest namespaces
// plugged into that bridge, each the fixed IP of a server booted through nova-api; the proxy talks to the
// real quantum-metadata-agent, which asks quantum-server and signs for nova-api's metadata service. The
// test process opens the guests' TCP connections itself, from inside their namespaces (the qm_netns addon's
// connectInNamespace), so a guest can send any bytes and read, or not read, as it likes. The proxy runs in
// either metadata_proxy_mode: its own process in the router namespace, or a listener of a shared process
// (bound in the router namespace by SharedMetadataProxy, as the agents do).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { PROXY_NODE_FLAGS } from '../../src/common/proxy-runtime.js';
import { defaultProxyMain } from '../../src/linux/agent-common.js';
import { loadNetnsSocket, netnsPath } from '../../src/linux/netns-socket.js';
import { nativeAddonPath } from '../../src/linux/native-addon.js';
import { spawnNovaApi } from './nova-fixtures.js';
import { NetFixture, nsExec, sh } from './netns.js';
import { getFreePort, sleep, spawnDaemon, waitFor, waitForListen, type Daemon } from './proc.js';
import { startProxyIn, type ProxyMode } from './proxy-modes.js';
import { startQuantumServer, type RunningQuantum } from './quantum-server.js';

export const ROUTER_IP = '10.250.0.1';
const SECRET = 'hostile-guest-secret';
const PROJECT = 'hostile';
const IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6';

export interface HostileGuest {
  ns: string;
  ip: string;
  serverId: string;
}

export interface RunningProxyProc {
  /** The proxy process (the shared one's in shared mode). */
  pid: number;
  port: number;
  output(): string;
  /** Its connections to the metadata agent now. */
  agentConnections(): number;
  stop(): Promise<void>;
}

export interface HostileChain {
  mode: ProxyMode;
  fx: NetFixture;
  routerNs: string;
  routerId: string;
  guests: HostileGuest[];
  agent: Daemon;
  socket: string;
  /**
   * Start a proxy for the router in its namespace (flags added to the agents' usual ones), in the chain's mode
   * unless told; `main`: another build's proxy (dist/proxy/ns-proxy/main.js).
   */
  proxy(flags: string[], main?: string, mode?: ProxyMode): Promise<RunningProxyProc>;
  /** A raw TCP connection from inside guest `g`'s namespace to the proxy's port. */
  connect(g: HostileGuest, port: number): Promise<Socket>;
  stop(): Promise<void>;
}

const netns = () => loadNetnsSocket(nativeAddonPath);

/** VmRSS of a process in kB (0 when gone). */
export function rssKb(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * The proxy's connections to the agent: its Unix sockets (the descriptors of /proc/<pid>/fd that are listed in
 * its namespace's /proc/<pid>/net/unix; the proxy has no other Unix socket, its stdio are pipes) but `skipFds`
 * (a shared proxy's IPC channel and descriptor socket, fds 3 and 4).
 */
export function agentConnections(proxyPid: number, skipFds: readonly string[] = []): number {
  let unix: Set<string>;
  try {
    unix = new Set(readFileSync(`/proc/${proxyPid}/net/unix`, 'utf8').split('\n').slice(1).map((l) => l.trim().split(/\s+/)[6] ?? '').filter(Boolean));
  } catch {
    return 0;
  }
  let n = 0;
  for (const fd of readdirSync(`/proc/${proxyPid}/fd`)) {
    if (skipFds.includes(fd)) continue;
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${proxyPid}/fd/${fd}`));
      if (m && unix.has(m[1]!)) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

async function compute(base: string, path: string, body: unknown): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await fetch(`${base}/v2.1${path}`, { method: 'POST', headers: { 'X-Project-Id': PROJECT, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const t = await r.text();
  if (r.status >= 300) throw new Error(`nova POST ${path}: ${r.status} ${t}`);
  return t ? (JSON.parse(t) as Record<string, any>) : {}; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export async function startHostileChain(o: { guests: number; mode?: ProxyMode; agentArgs?: string[] }): Promise<HostileChain> {
  const mode = o.mode ?? 'per-namespace';
  const fx = new NetFixture();
  const state = fx.statePath();
  const socket = join(state, 'metadata_proxy');
  let qs: RunningQuantum | undefined;
  let nova: Awaited<ReturnType<typeof spawnNovaApi>> | undefined;
  let agent: Daemon | undefined;
  const proxies: RunningProxyProc[] = [];
  const stop = async () => {
    for (const p of proxies) await p.stop();
    await agent?.stop();
    await nova?.stop();
    await qs?.stop();
    fx.cleanup();
  };
  try {
    qs = await startQuantumServer(state);
    nova = await spawnNovaApi(join(state, 'nova'), { quantumUrl: qs.url, args: ['--neutron-service_metadata_proxy', `--neutron-metadata_proxy_shared_secret=${SECRET}`] });
    const net = await qs.client.createNetwork({ name: 'hostile-net', tenant_id: PROJECT } as never, PROJECT);
    const sub = await qs.client.createSubnet({ network_id: net.id, cidr: '10.250.0.0/24', ip_version: 4, tenant_id: PROJECT, gateway_ip: ROUTER_IP }, PROJECT);
    const router = await qs.client.createRouter({ name: 'hostile-router', tenant_id: PROJECT } as never, PROJECT);
    await qs.client.addRouterInterface(router.id, { subnet_id: sub.id });

    // The router namespace: a bridge for the guests, everything inside namespaces of this run.
    const routerNs = fx.namespace(`${fx.prefix}-r`);
    nsExec(routerNs, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
    nsExec(routerNs, ['ip', 'addr', 'add', `${ROUTER_IP}/24`, 'dev', 'br0']);
    nsExec(routerNs, ['ip', 'link', 'set', 'br0', 'up']);
    const guests: HostileGuest[] = [];
    for (let i = 0; i < o.guests; i++) {
      const ns = fx.namespace(`${fx.prefix}-g${i}`);
      const ip = `10.250.0.${11 + i}`;
      nsExec(routerNs, ['ip', 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      nsExec(routerNs, ['ip', 'link', 'set', `v${i}`, 'master', 'br0', 'up']);
      nsExec(ns, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
      const s = await compute(nova.compute, '/servers', { server: { name: `hostile-${i}`, flavorRef: '1', imageRef: IMAGE, user_data: Buffer.from('#cloud-config\n').toString('base64'), networks: [{ uuid: net.id, fixed_ip: ip }] } });
      guests.push({ ns, ip, serverId: s.server.id as string });
    }
    const conf = join(state, 'agent.ini');
    sh(['sh', '-c', `cat > ${conf}`], `[DEFAULT]\nstate_path = ${state}\nquantum_url = ${qs.url}\nhost = hostile-node\nnova_metadata_host = 127.0.0.1\nnova_metadata_port = ${nova.metadataPort}\nmetadata_proxy_shared_secret = ${SECRET}\nmetadata_workers = 1\n\n[AGENT]\nreport_interval = 0\n`);
    agent = spawnDaemon('metadata-agent/main.js', ['--config-file', conf, ...(o.agentArgs ?? [])]);
    await waitForListen({ path: socket }, 15_000).catch(() => {
      throw new Error(`agent did not start: ${agent!.output()}`);
    });
    const ns = netns();
    const proxy = async (flags: string[], main = defaultProxyMain, as = mode): Promise<RunningProxyProc> => {
      const port = await getFreePort();
      if (as === 'shared') {
        // A process of its own per call, as the per-namespace proxies are: flags and builds never mix.
        const sp = await startProxyIn('shared', [`--router_id=${router.id}`, `--metadata_proxy_socket=${socket}`, `--metadata_port=${port}`, ...flags], port, {
          namespace: routerNs,
          proxyCmd: [process.execPath, ...PROXY_NODE_FLAGS, main].join(' '),
          ownProcess: true,
        });
        const p: RunningProxyProc = { pid: sp.pid, port, output: () => sp.output(), agentConnections: () => agentConnections(sp.pid, ['3', '4']), stop: () => sp.stop() };
        proxies.push(p);
        return p;
      }
      const argv = ['netns', 'exec', routerNs, process.execPath, ...PROXY_NODE_FLAGS, main, '--nodaemonize', `--router_id=${router.id}`, `--state_path=${state}`, `--metadata_port=${port}`, ...flags];
      const child = spawn('ip', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      fx.trackPid(child.pid!);
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      const p: RunningProxyProc = {
        pid: child.pid!,
        port,
        output: () => out,
        agentConnections: () => agentConnections(child.pid!),
        async stop() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(t);
        },
      };
      proxies.push(p);
      await waitFor(() => {
        try {
          ns.closeFd(ns.connectInNamespace(netnsPath(routerNs), '127.0.0.1', port, 0));
          return true;
        } catch {
          if (child.exitCode !== null) throw new Error(`proxy exited: ${out}`);
          return false;
        }
      }, 10_000, 50, 'the proxy listening');
      return p;
    };
    const connect = async (g: HostileGuest, port: number): Promise<Socket> => {
      const fd = ns.connectInNamespace(netnsPath(g.ns), ROUTER_IP, port, 0);
      const s = new Socket({ fd, readable: true, writable: true });
      s.on('error', () => {});
      return s;
    };
    return { mode, fx, routerNs, routerId: router.id, guests, agent, socket, proxy, connect, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
  ms: number;
}

/** Read HTTP/1.1 answers off a socket as they come (Content-Length framed, as the proxy writes them). */
export class AnswerReader {
  private buf: Buffer = Buffer.alloc(0);
  readonly answers: Answer[] = [];
  private waiters: { n: number; resolve: () => void }[] = [];
  closed = false;
  private t0 = Date.now();
  constructor(readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.parse();
    });
    sock.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w.resolve();
    });
  }
  private parse(): void {
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.toString('latin1', 0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of head.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? 0);
      const len = status === 100 ? 0 : Number(headers['content-length'] ?? 0);
      if (this.buf.length < end + 4 + len) return;
      const body = this.buf.toString('utf8', end + 4, end + 4 + len);
      this.buf = this.buf.subarray(end + 4 + len);
      this.answers.push({ status, headers, body, ms: Date.now() - this.t0 });
      this.t0 = Date.now();
      this.waiters = this.waiters.filter((w) => (this.answers.length >= w.n ? (w.resolve(), false) : true));
    }
  }
  /** Until `n` answers arrived or the connection closed (or timeoutMs). */
  wait(n: number, timeoutMs = 10_000): Promise<void> {
    if (this.answers.length >= n || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      });
    });
  }
}

/** One request on a fresh connection from guest `g`: its answer (status 0 when the connection closed without one). */
export async function guestRequest(c: HostileChain, g: HostileGuest, port: number, raw: string | Buffer, timeoutMs = 10_000): Promise<Answer & { closed: boolean }> {
  const s = await c.connect(g, port);
  const r = new AnswerReader(s);
  const t0 = Date.now();
  s.write(raw);
  await r.wait(1, timeoutMs);
  s.destroy();
  const a = r.answers.find((x) => x.status !== 100) ?? { status: 0, headers: {}, body: '', ms: 0 };
  return { ...a, ms: Date.now() - t0, closed: r.closed };
}

export const GET = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: 169.254.169.254\r\n${extra}Connection: close\r\n\r\n`;

/**
 * cloud-init's own OpenStack + EC2 readers (Debian's python3-cloudinit) run inside guest `g`'s namespace against
 * the proxy, as a booting guest would: every URL it fetched with its status.
 */
export async function cloudInitCrawl(g: HostileGuest, port: number, python: string): Promise<[string, number][]> {
  const { CLOUDINIT_RECORDER } = await import('./cloudinit.js');
  const script = `${CLOUDINIT_RECORDER}
base = sys.argv[1]
openstack.MetadataReader._read_ec2_metadata = lambda self: ec2.get_instance_metadata(metadata_address=base, ssl_details=self.ssl_details, timeout=self.timeout, retries=self.retries)
try:
    openstack.MetadataReader(base, timeout=5, retries=0).read_v2()
except Exception as e:
    pass
print(json.dumps(seen))
`;
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', g.ns, python, '-c', script, `http://${ROUTER_IP}:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', () => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as [string, number][]);
      } catch {
        reject(new Error(`cloud-init crawl failed: ${err || out}`));
      }
    });
  });
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export interface Latency {
  n: number;
  p50: number;
  p99: number;
  errors: number;
}

function summary(ms: number[], errors: number): Latency {
  const s = [...ms].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 50), p99: percentile(s, 99), errors };
}

/** `n` sequential GETs of `path` from guest `g`, a connection each (as cloud-init makes them): each one's ms, and the non-200s. */
async function sequential(c: HostileChain, g: HostileGuest, port: number, n: number, path: string): Promise<{ ms: number[]; errors: number }> {
  const ms: number[] = [];
  let errors = 0;
  for (let i = 0; i < n; i++) {
    const r = await guestRequest(c, g, port, GET(path), 10_000);
    if (r.status !== 200) errors++;
    ms.push(r.ms);
  }
  return { ms, errors };
}

export async function latency(c: HostileChain, g: HostileGuest, port: number, n: number, path = '/openstack/latest/meta_data.json'): Promise<Latency> {
  const r = await sequential(c, g, port, n, path);
  return summary(r.ms, r.errors);
}

/** A guest that reads its answers as fast as it can: wrk in its namespace, keep-alive connections. */
export interface ReadingFlood {
  /** SIGSTOP / SIGCONT: the flood stops (what is in flight completes) and goes on. */
  pause(): void;
  resume(): void;
  /** Milliseconds it has been running (not paused). */
  readonly runningMs: number;
  /** SIGINT (wrk prints its summary): wrk's output, with the number of requests it made. */
  stop(): Promise<{ out: string; requests: number }>;
}

export function readingFlood(c: HostileChain, g: HostileGuest, port: number, conns: number, path = '/openstack/latest/meta_data.json'): ReadingFlood {
  // `ip netns exec` execs wrk: the child's pid is wrk's.
  const child = spawn('ip', ['netns', 'exec', g.ns, 'wrk', '-t1', `-c${conns}`, '-d3600s', '--timeout', '10s', `http://${ROUTER_IP}:${port}${path}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  c.fx.trackPid(child.pid!);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let ran = 0;
  let since: number | undefined = Date.now();
  return {
    pause() {
      if (since === undefined) return;
      child.kill('SIGSTOP');
      ran += Date.now() - since;
      since = undefined;
    },
    resume() {
      if (since !== undefined) return;
      child.kill('SIGCONT');
      since = Date.now();
    },
    get runningMs() {
      return ran + (since === undefined ? 0 : Date.now() - since);
    },
    async stop() {
      this.resume();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGINT');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      return { out, requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0) };
    },
  };
}

/**
 * A neighbour's latency beside a reading flood, and without it, interleaved: `rounds` times `perPhase`
 * sequential requests with the flood paused, then as many while it runs, so that whatever else loads the
 * machine meanwhile weighs on both alike. The flood is left running.
 */
export async function quietVsFlood(c: HostileChain, neighbour: HostileGuest, port: number, flood: ReadingFlood, o: { rounds: number; perPhase: number; settleMs?: number }): Promise<{ quiet: Latency; flood: Latency }> {
  const quiet = { ms: [] as number[], errors: 0 };
  const busy = { ms: [] as number[], errors: 0 };
  for (let i = 0; i < o.rounds; i++) {
    for (const [phase, into] of [['quiet', quiet], ['flood', busy]] as const) {
      if (phase === 'quiet') flood.pause();
      else flood.resume();
      await sleep(o.settleMs ?? 200);
      const r = await sequential(c, neighbour, port, o.perPhase, '/openstack/latest/meta_data.json');
      into.ms.push(...r.ms);
      into.errors += r.errors;
    }
  }
  return { quiet: summary(quiet.ms, quiet.errors), flood: summary(busy.ms, busy.errors) };
}
