// Benchmark: quantum-ns-metadata-proxy vs haproxy (configured as Neutron configures it) vs the upstream
// directly, in real namespaces with Neutron's iptables rules; plus the whole chain and a boot storm.
//   npm run build && node dist/bench/metadata-proxy.js [--quick] [--storm 50,200] [--no-chain] [--no-profile]
// See bench/README.md. Not part of the test suite.
import { mkdtempSync, mkdirSync, readdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir, loadavg, cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { BenchRun, writeResults } from './lib/lifecycle.js';
import { run } from './lib/exec.js';
import { addGuests, createTopology, GUEST_IP, METADATA_IP, redirectTo, ROUTER_IP, runPrefix, tcpActiveOpens, type Topology } from './lib/netns.js';
import { cpuSeconds, memory, type Mem } from './lib/procstat.js';
import { wrk } from './lib/wrk.js';
import { BOOT_CRAWL } from './lib/bodies.js';
import { bootStorm, type StormResult } from './lib/storm.js';
import { launch, startHaproxy, startOurProxy, startUpstream, upstreamStats, logTail, type Proc, type UpstreamHandle } from './lib/procs.js';
import { summarizeProfile, type ProfileSummary } from './lib/profile.js';
import { median, fmt, table } from './lib/stats.js';
import { buildChain, chainReady, type Chain } from './lib/chain.js';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { defaultProxyMain } from '../src/linux/agent-common.js';

const here = dirname(fileURLToPath(import.meta.url));
const buildRoot = resolve(here, '..');
const repoRoot = resolve(buildRoot, '..');
// The copy the agents run (the CommonJS build).
const PROXY_MAIN = defaultProxyMain;
const UPSTREAM_MAIN = resolve(here, 'lib/upstream.js');

const PORTS = { ours: 9697, haproxy: 9698, chainOurs: 9699, chainHaproxy: 9700, profile: 9701, scaleBase: 9800 };
const UPSTREAM_TCP_PORT = 8080;

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    storm: { type: 'string' },
    repeats: { type: 'string' },
    duration: { type: 'string' },
    'chain-duration': { type: 'string' },
    'node-flags': { type: 'string' },
    scale: { type: 'string' },
    conns: { type: 'string' },
    chain: { type: 'boolean', default: true },
    'no-chain': { type: 'boolean', default: false },
    profile: { type: 'boolean' },
    'no-profile': { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  process.stdout.write(
    'usage: node dist/bench/metadata-proxy.js [--quick] [--storm 50,200|0] [--repeats N] [--duration S] [--conns 1,16,64] [--no-chain] [--no-profile] [--out NAME]\n',
  );
  process.exit(0);
}
const quick = flags.quick!;
const cfg = {
  quick,
  repeats: Math.max(1, Number(flags.repeats ?? 3)),
  duration: Number(flags.duration ?? (quick ? 1 : 3)),
  warmup: quick ? 1 : 2,
  conns: (flags.conns ?? (quick ? '16,64' : '1,16,64')).split(',').map(Number),
  paths: quick ? ['/latest/meta-data/instance-id'] : ['/latest/meta-data/instance-id', '/openstack/latest/meta_data.json'],
  /** Also measured with `Connection: close` (a new guest connection per request, like cloud-init), at closeConns. */
  closePaths: quick ? [] : ['/openstack/latest/meta_data.json'],
  closeConns: [16],
  storm: (flags.storm ?? (quick ? '50' : '50,200')).split(',').map(Number).filter((n) => n > 0),
  chainDuration: Number(flags['chain-duration'] ?? (quick ? 1 : 2)),
  chain: flags.chain! && !flags['no-chain'],
  profile: flags['no-profile'] ? false : (flags.profile ?? !quick),
  out: flags.out ?? (quick ? 'quick' : 'latest'),
  /** Node flags for our proxy; default the ones the L3/DHCP agents run it with (src/common/proxy-runtime.ts). */
  nodeFlags: flags['node-flags'] !== undefined ? flags['node-flags'].split(' ').filter(Boolean) : [...PROXY_NODE_FLAGS],
  /** Idle copies of each proxy started at once to measure the per-router memory on a network node. */
  scale: Number(flags.scale ?? (quick ? 5 : 20)),
};

function say(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface Target {
  name: string;
  label: string;
  /** Namespace wrk runs in ('' = root). */
  ns: string;
  url: (path: string) => string;
  /** Redirect port when reached through 169.254.169.254. */
  port?: number;
  proc?: Proc;
  headers?: Record<string, string>;
  /** Upstream whose connection count we read (proxy → backend connections per request). */
  upstream?: UpstreamHandle;
}

interface RunRecord {
  target: string;
  path: string;
  conns: number;
  rep: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  cpuUsPerReq: number;
  /** CPU µs per request of the processes behind the proxy (upstream; or agent, nova-api, quantum-server). */
  otherCpuUsPerReq: Record<string, number>;
  /** TCP connections the guest namespace opened during the run (ActiveOpens delta). */
  guestConnsOpened: number;
  /** Connections opened beyond wrk's initial `conns`, per request: 0 when the proxy keeps guests alive. */
  guestConnsPerReq: number;
  backendConnsPerReq: number;
}

interface MemRecord {
  idle: Mem;
  afterWarmup?: Mem;
  afterLoad?: Mem;
  /** Measured just before the process is stopped, after idling `idleSeconds` since its last load. */
  atEnd?: Mem;
  idleSeconds?: number;
}

/** When each target last carried load (for the idle time of the final memory reading). */
const lastLoad: Record<string, number> = {};

function memoryAtEnd(targets: Target[]): void {
  for (const t of targets) {
    const m = t.proc && result.memory[t.name];
    if (!m) continue;
    m.atEnd = memory(t.proc!.pid);
    m.idleSeconds = Math.round((Date.now() - (lastLoad[t.name] ?? Date.now())) / 1000);
  }
}

const result = {
  meta: {} as Record<string, unknown>,
  config: cfg,
  notes: [] as string[],
  sanity: [] as { target: string; ok: boolean; detail: string }[],
  runs: [] as RunRecord[],
  memory: {} as Record<string, MemRecord>,
  storm: [] as (StormResult & { target: string; rep: number })[],
  scale: [] as { target: string; copies: number; rssKbEach: number; privateKbEach: number; pssKbEach: number }[],
  profiles: {} as Record<string, ProfileSummary>,
};

let topo: Topology | undefined;
let prefix = '';
let tmp = '';

const runner = new BenchRun(say, () => ({ prefix, tmp }));

async function measure(t: Target, path: string, conns: number, seconds: number, rep: number, others: Record<string, number>): Promise<RunRecord> {
  if (t.port !== undefined) await redirectTo(topo!, t.port);
  const guestNs = t.ns && t.ns !== '' ? t.ns : undefined;
  const cpu0 = t.proc ? cpuSeconds(t.proc.pid) : NaN;
  const oth0 = Object.fromEntries(Object.entries(others).map(([k, pid]) => [k, cpuSeconds(pid)]));
  const up0 = t.upstream ? await upstreamStats(t.upstream.ctl) : undefined;
  const open0 = guestNs ? await tcpActiveOpens(guestNs) : NaN;
  // "close:<path>": every request on a new connection, as cloud-init does (one requests.Session per URL).
  const close = path.startsWith(CLOSE);
  const r = await wrk(guestNs, t.url(close ? path.slice(CLOSE.length) : path), conns, seconds, close ? { ...t.headers, Connection: 'close' } : t.headers);
  const open1 = guestNs ? await tcpActiveOpens(guestNs) : NaN;
  const up1 = t.upstream ? await upstreamStats(t.upstream.ctl) : undefined;
  const cpu1 = t.proc ? cpuSeconds(t.proc.pid) : NaN;
  const oth1 = Object.fromEntries(Object.entries(others).map(([k, pid]) => [k, cpuSeconds(pid)]));
  // wrk's count covers completed responses; requests cut off at the deadline are not counted by wrk either.
  const n = r.requests || 1;
  return {
    target: t.name,
    path,
    conns,
    rep,
    rps: r.rps,
    p50Ms: r.p50Ms,
    p90Ms: r.p90Ms,
    p99Ms: r.p99Ms,
    requests: r.requests,
    errors: r.non2xx + r.socketErrors,
    cpuUsPerReq: ((cpu1 - cpu0) * 1e6) / n,
    otherCpuUsPerReq: Object.fromEntries(Object.keys(others).map((k) => [k, ((oth1[k]! - oth0[k]!) * 1e6) / n])),
    // wrk opens `conns` connections up front; what matters is every connection opened beyond those.
    guestConnsOpened: open1 - open0,
    guestConnsPerReq: Math.max(0, open1 - open0 - conns) / n,
    backendConnsPerReq: up0 && up1 ? (up1.unixConns - up0.unixConns) / Math.max(1, up1.requests - up0.requests) : NaN,
  };
}

async function curlOnce(ns: string, url: string, headers: string[] = []): Promise<{ code: string; body: string }> {
  const { stdout } = await run(['curl', '-s', '--max-time', '10', ...headers.flatMap((h) => ['-H', h]), '-w', '\n%{http_code}', url], { ns, allowFail: true });
  const i = stdout.lastIndexOf('\n');
  return { body: stdout.slice(0, i), code: stdout.slice(i + 1) };
}

/** One request through a proxy with a spoofed identity; the upstream must see the real guest and router. */
async function sanity(t: Target, routerId: string): Promise<void> {
  if (t.port === undefined || !t.upstream) return;
  await redirectTo(topo!, t.port);
  const r = await curlOnce(topo!.guest, `http://${METADATA_IP}/latest/meta-data/instance-id`, ['X-Neutron-Router-ID: spoofed', 'X-Neutron-Network-ID: spoofed']);
  const s = await upstreamStats(t.upstream.ctl);
  const xffOk = s.last.xff.split(',').map((x) => x.trim()).pop() === GUEST_IP;
  const ok = r.code === '200' && r.body === 'i-0000000a' && xffOk && s.last.routerId === routerId && s.last.networkId === '';
  result.sanity.push({ target: t.name, ok, detail: `status ${r.code}, upstream saw X-Forwarded-For "${s.last.xff}", X-Neutron-Router-ID "${s.last.routerId}", X-Neutron-Network-ID "${s.last.networkId}"` });
  if (!ok) throw new Error(`sanity check through ${t.name} failed: ${JSON.stringify(result.sanity.at(-1))}`);
}

const CLOSE = 'close:';
/** The keep-alive paths, then the connection-per-request variants. */
const allPaths = () => [...cfg.paths, ...cfg.closePaths.map((p) => `${CLOSE}${p}`)];
const connsFor = (path: string) => (path.startsWith(CLOSE) ? cfg.closeConns : cfg.conns);

function rotate<T>(xs: T[], k: number): T[] {
  const i = k % xs.length;
  return [...xs.slice(i), ...xs.slice(0, i)];
}

async function loadPhase(targets: Target[], others: Record<string, number>, phase: string, duration = cfg.duration): Promise<void> {
  for (const t of targets) await wrk(t.ns || undefined, t.url(cfg.paths[cfg.paths.length - 1]!), 16, cfg.warmup, t.headers).catch(() => undefined);
  const plan = allPaths().flatMap((path) => connsFor(path).map((c) => ({ path, c })));
  for (const t of targets) if (t.proc) result.memory[t.name]!.afterWarmup = memory(t.proc.pid);
  const total = cfg.repeats * plan.length * targets.length;
  let i = 0;
  for (let rep = 0; rep < cfg.repeats; rep++) {
    for (const { path, c } of plan) {
      {
        // Rotate the order every repeat so drift in machine load does not favour one target.
        for (const t of rotate(targets, rep)) {
          i++;
          const r = await measure(t, path, c, duration, rep, others);
          result.runs.push(r);
          say(`${phase} ${i}/${total} ${t.name} ${path} c${c}: ${fmt(r.rps, 0)} req/s p99 ${fmt(r.p99Ms, 2)} ms cpu ${fmt(r.cpuUsPerReq)} µs/req${r.errors ? ` ERRORS ${r.errors}` : ''}`);
        }
      }
    }
  }
  await new Promise((r) => setTimeout(r, 2000));
  for (const t of targets) if (t.proc) result.memory[t.name]!.afterLoad = memory(t.proc.pid);
  for (const t of targets) lastLoad[t.name] = Date.now() - 2000;
}

async function stormPhase(targets: Target[], guestIps: (i: number) => string, sizes = cfg.storm): Promise<void> {
  const maxN = Math.max(...sizes);
  if (topo!.guests.length < maxN) {
    say(`creating ${maxN} guest namespaces`);
    const t0 = Date.now();
    await addGuests(topo!, Array.from({ length: maxN }, (_, i) => guestIps(i)));
    say(`guests ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  for (let rep = 0; rep < cfg.repeats; rep++) {
    for (const n of sizes) {
      for (const t of rotate(targets, rep)) {
        await redirectTo(topo!, t.port!);
        const r = await bootStorm(topo!.guests.slice(0, n).map((g) => g.ns), BOOT_CRAWL);
        result.storm.push({ ...r, target: t.name, rep });
        lastLoad[t.name] = Date.now();
        say(`storm ${t.name} N=${n}: ${r.requests} requests in ${fmt(r.totalMs, 0)} ms, p99 ${fmt(r.p99Ms, 1)} ms, errors ${r.errors}`);
      }
    }
  }
}

/**
 * Many routers on one network node: start `scale` idle copies of each proxy (each serves one request so it
 * is really up), and report the mean RSS, private and Pss per copy. Pss splits shared pages (the node binary,
 * haproxy's text) among the copies, so it is what each additional router costs.
 */
async function scalePhase(socket: string, routerId: string, haveOurs: boolean): Promise<void> {
  say(`starting ${cfg.scale} idle copies of each proxy`);
  const kinds: { target: string; start: (i: number) => Promise<Proc>; serves?: false }[] = [];
  if (haveOurs)
    kinds.push(
      {
        target: 'ours',
        start: (i) => startOurProxy(`scale-ours-${i}`, PROXY_MAIN, topo!.router, tmp, { routerId, port: PORTS.scaleBase + i, socket, nodeArgs: cfg.nodeFlags }),
      },
      // Node's floor: a process that loads nothing and waits, with the same flags.
      {
        target: 'empty node process (floor)',
        start: async (i) => launch(`scale-node-${i}`, [process.execPath, ...cfg.nodeFlags, '-e', 'setInterval(() => {}, 1 << 30)'], topo!.router, tmp),
        serves: false,
      },
    );
  kinds.push({ target: 'haproxy', start: (i) => startHaproxy(`scale-haproxy-${i}`, topo!.router, tmp, { routerId, port: PORTS.scaleBase + 100 + i, socket }) });
  for (const k of kinds) {
    const procs: Proc[] = [];
    try {
      for (let i = 0; i < cfg.scale; i++) procs.push(await k.start(i));
      for (let i = 0; i < procs.length && k.serves !== false; i++) {
        await redirectTo(topo!, PORTS.scaleBase + (k.target === 'haproxy' ? 100 : 0) + i);
        await curlOnce(topo!.guest, `http://${METADATA_IP}/openstack/latest/meta_data.json`);
      }
      await new Promise((r) => setTimeout(r, 1000));
      const ms = procs.map((p) => memory(p.pid));
      const mean = (f: (m: Mem) => number) => ms.reduce((a, m) => a + f(m), 0) / ms.length;
      result.scale.push({ target: k.target, copies: procs.length, rssKbEach: mean((m) => m.rssKb), privateKbEach: mean((m) => m.privateKb), pssKbEach: mean((m) => m.pssKb) });
      say(`${procs.length} × ${k.target}: ${fmt(mean((m) => m.pssKb) / 1024)} MB Pss each`);
    } finally {
      for (const p of procs) await p.stop();
    }
  }
}

/** Run a second copy of our proxy under --cpu-prof, load it with wrk (16 connections), keep the profile. */
async function profilePhase(socket: string, routerId: string, name: string, close = false): Promise<void> {
  const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  const dir = join(tmp, `cpuprof-${slug}`);
  mkdirSync(dir, { recursive: true });
  const p = await startOurProxy(`ours-profile-${slug}`, PROXY_MAIN, topo!.router, tmp, {
    routerId,
    port: PORTS.profile,
    socket,
    nodeArgs: [...cfg.nodeFlags, '--cpu-prof', `--cpu-prof-dir=${dir}`],
  });
  await redirectTo(topo!, PORTS.profile);
  for (const path of cfg.paths) await wrk(topo!.guest, `http://${METADATA_IP}${path}`, 16, quick ? 2 : 4, close ? { Connection: 'close' } : {});
  await p.stop();
  const f = readdirSync(dir).find((x) => x.endsWith('.cpuprofile'));
  if (!f) {
    result.notes.push('profile: no .cpuprofile was written (the proxy did not exit through process.exit?)');
    return;
  }
  result.profiles[name] = summarizeProfile(join(dir, f));
  const keep = join(repoRoot, 'bench/results/tmp');
  mkdirSync(keep, { recursive: true });
  writeFileSync(join(keep, `ns-proxy-${slug}.cpuprofile`), readFileSync(join(dir, f)));
}

async function chainPhase(stormIp: (i: number) => string): Promise<void> {
  say('building the whole chain (quantum-server, nova-api, metadata agent; network, subnet, router, servers via the APIs)');
  // --quick skips the chain's boot storm (creating the servers and the storms take most of a minute).
  const maxN = cfg.quick ? 0 : Math.min(240, Math.max(0, ...cfg.storm));
  let chain: Chain | undefined;
  try {
    chain = await buildChain({
      buildRoot,
      tmp,
      topo: topo!,
      proxyMain: PROXY_MAIN,
      nodeFlags: cfg.nodeFlags,
      ports: { ours: PORTS.chainOurs, haproxy: PORTS.chainHaproxy },
      stormIps: Array.from({ length: maxN }, (_, i) => stormIp(i)),
      log: say,
    });
    const c = chain;
    const viaMeta = (p2: string) => `http://${METADATA_IP}${p2}`;
    const chainTargets: Target[] = [
      { name: 'chain-ours', label: 'ours → agent → nova', ns: topo!.guest, url: viaMeta, port: PORTS.chainOurs, proc: c.ours },
      { name: 'chain-haproxy', label: 'haproxy → agent → nova', ns: topo!.guest, url: viaMeta, port: PORTS.chainHaproxy, proc: c.haproxy },
      { name: 'nova-direct', label: 'nova-api metadata directly (signed headers)', ns: '', url: (p2) => `${c.novaUrl}${p2}`, headers: c.novaHeaders },
    ];
    await new Promise((r) => setTimeout(r, 1000));
    for (const t of chainTargets) if (t.proc) result.memory[t.name] = { idle: memory(t.proc.pid) };
    for (const t of chainTargets.slice(0, 2)) {
      await redirectTo(topo!, t.port!);
      const r = await curlOnce(topo!.guest, `http://${METADATA_IP}/openstack/latest/meta_data.json`);
      let uuid = '';
      try {
        uuid = (JSON.parse(r.body) as { uuid?: string }).uuid ?? '';
      } catch {
        /* not JSON: reported below */
      }
      result.sanity.push({ target: t.name, ok: r.code === '200' && uuid === c.serverId, detail: `status ${r.code}, meta_data.json uuid "${uuid}" (server ${c.serverId})` });
    }
    say(`chain sanity: ${result.sanity.slice(-2).map((s) => `${s.target} ${s.ok ? 'ok' : 'FAILED ' + s.detail}`).join(', ')}`);
    if (result.sanity.slice(-2).some((s) => !s.ok)) throw new Error('chain sanity check failed');
    const pidOf = (n: string) => c.procs.find((p) => p.name === n)!.pid;
    await loadPhase(chainTargets, { agent: c.agent.pid, 'quantum-server': pidOf('quantum-server'), 'nova-api': pidOf('nova-api') }, 'chain', cfg.chainDuration);
    const sizes = cfg.storm.filter((n) => n <= c.stormIps.length);
    if (sizes.length) {
      await stormPhase(chainTargets.slice(0, 2), stormIp, sizes);
      await new Promise((r) => setTimeout(r, 2000));
      for (const t of chainTargets) if (t.proc) result.memory[t.name]!.afterLoad = memory(t.proc.pid);
    }
    if (sizes.length < cfg.storm.length && !cfg.quick) result.notes.push(`chain boot storm only for ${sizes.join(',') || 'no'} guests (servers exist for ${c.stormIps.length} storm IPs)`);
    if (cfg.profile) {
      say('profiling our proxy in the whole chain (--cpu-prof)');
      await profilePhase(c.socket, c.routerId, 'chain');
    }
    memoryAtEnd(chainTargets);
  } catch (e) {
    result.notes.push(`whole chain failed: ${(e as Error).message}`);
    say(`chain failed: ${(e as Error).stack ?? String(e)}`);
    if (chain) for (const p of chain.procs) say(`${p.name} log:\n${logTail(p)}`);
  } finally {
    await chain?.stop();
  }
}

function meta(): Record<string, unknown> {
  const v = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString().split('\n')[0]!.trim();
    } catch (e) {
      const x = e as { stdout?: Buffer; stderr?: Buffer };
      return `${x.stdout ?? ''}${x.stderr ?? ''}`.split('\n')[0]!.trim();
    }
  };
  return {
    date: new Date().toISOString(),
    host: { cpus: cpus().length, model: cpus()[0]?.model, kernel: v('uname', ['-r']), loadavgStart: loadavg() },
    node: process.version,
    haproxy: v('haproxy', ['-v']),
    wrk: v('wrk', ['-v']),
    commit: v('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
    // The build measured may include uncommitted work of the proxy's owner.
    nsProxyUncommitted: v('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src/ns-proxy', 'src/common']) !== '',
  };
}

async function main(): Promise<void> {
  result.meta = meta();
  if (process.getuid?.() !== 0) throw new Error('the benchmark builds namespaces and iptables rules: run it as root');
  prefix = runPrefix();
  tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  say(`run ${prefix}, tmp ${tmp}, ${JSON.stringify(cfg)}`);
  if (cfg.repeats < 3) result.notes.push(`only ${cfg.repeats} repeat(s) per figure: medians of fewer than 3 runs are not robust on a shared machine`);
  topo = await createTopology(prefix, PORTS.ours);
  const routerId = randomUUID();
  const upstream = await startUpstream(UPSTREAM_MAIN, topo.router, tmp, `0.0.0.0:${UPSTREAM_TCP_PORT}`);
  const targets: Target[] = [];
  const haveOurs = existsSync(PROXY_MAIN);
  if (haveOurs) {
    const p = await startOurProxy('ours', PROXY_MAIN, topo.router, tmp, { routerId, port: PORTS.ours, socket: upstream.socket, nodeArgs: cfg.nodeFlags });
    targets.push({ name: 'ours', label: 'quantum-ns-metadata-proxy', ns: topo.guest, url: (p2) => `http://${METADATA_IP}${p2}`, port: PORTS.ours, proc: p, upstream });
  } else result.notes.push(`our proxy is not built (${PROXY_MAIN} missing): measured haproxy and direct only`);
  const h = await startHaproxy('haproxy', topo.router, tmp, { routerId, port: PORTS.haproxy, socket: upstream.socket });
  targets.push({ name: 'haproxy', label: 'haproxy (Neutron config)', ns: topo.guest, url: (p2) => `http://${METADATA_IP}${p2}`, port: PORTS.haproxy, proc: h, upstream });
  targets.push({ name: 'direct', label: 'upstream directly (TCP)', ns: topo.guest, url: (p2) => `http://${ROUTER_IP}:${UPSTREAM_TCP_PORT}${p2}` });
  await new Promise((r) => setTimeout(r, 1000));
  for (const t of targets) if (t.proc) result.memory[t.name] = { idle: memory(t.proc.pid) };
  for (const t of targets) await sanity(t, routerId);
  say(`sanity: ${result.sanity.map((s) => `${s.target} ${s.ok ? 'ok' : 'FAILED'}`).join(', ')}`);

  await loadPhase(targets, { upstream: upstream.pid }, 'load');

  const stormIp = (i: number) => (i < 240 ? `10.1.1.${10 + i}` : `10.1.${2 + Math.floor((i - 240) / 250)}.${1 + ((i - 240) % 250)}`);
  if (cfg.storm.length) {
    // The minimal upstream answers any guest: 10.1.1.10 onwards, then 10.1.2.x ... for large N.
    await stormPhase(targets.filter((t) => t.port !== undefined), stormIp);
    await new Promise((r) => setTimeout(r, 2000));
    for (const t of targets) if (t.proc) result.memory[t.name]!.afterLoad = memory(t.proc.pid);
  }

  if (cfg.scale > 0) await scalePhase(upstream.socket, routerId, haveOurs);

  if (cfg.profile && haveOurs) {
    say('profiling our proxy under load (--cpu-prof)');
    await profilePhase(upstream.socket, routerId, 'minimal-upstream');
    if (cfg.closePaths.length) await profilePhase(upstream.socket, routerId, 'minimal-upstream, Connection: close', true);
  }

  if (cfg.chain) {
    const ready = chainReady(buildRoot);
    if (ready !== true) result.notes.push(`whole chain not measured: ${ready}`);
    else if (!haveOurs) result.notes.push('whole chain not measured: our proxy is not built');
    else await chainPhase(stormIp);
  }
  memoryAtEnd(targets);
  (result.meta as { loadavgEnd?: number[] }).loadavgEnd = loadavg();
}

// ---------- report ----------

function summaryRows() {
  const keys = new Map<string, RunRecord[]>();
  for (const r of result.runs) {
    const k = `${r.target}|${r.path}|${r.conns}`;
    keys.set(k, [...(keys.get(k) ?? []), r]);
  }
  return [...keys.values()].map((rs) => ({
    target: rs[0]!.target,
    path: rs[0]!.path,
    conns: rs[0]!.conns,
    repeats: rs.length,
    rps: median(rs.map((r) => r.rps)),
    p50Ms: median(rs.map((r) => r.p50Ms)),
    p99Ms: median(rs.map((r) => r.p99Ms)),
    cpuUsPerReq: median(rs.map((r) => r.cpuUsPerReq)),
    otherCpuUsPerReq: Object.fromEntries(Object.keys(rs[0]!.otherCpuUsPerReq).map((k) => [k, median(rs.map((r) => r.otherCpuUsPerReq[k]!))])),
    guestConnsPerReq: median(rs.map((r) => r.guestConnsPerReq)),
    backendConnsPerReq: median(rs.map((r) => r.backendConnsPerReq)),
    errors: rs.reduce((a, r) => a + r.errors, 0),
  }));
}

/** Median over repeats of the per-repeat ratio a/b (both measured seconds apart in the same repeat). */
function pairedRatio(a: string, b: string, path: string, conns: number, field: 'rps' | 'cpuUsPerReq' | 'p99Ms'): number {
  const ra = result.runs.filter((r) => r.target === a && r.path === path && r.conns === conns);
  const rb = result.runs.filter((r) => r.target === b && r.path === path && r.conns === conns);
  return median(ra.map((x) => {
    const y = rb.find((z) => z.rep === x.rep);
    return y ? x[field] / y[field] : NaN;
  }));
}

function ratios() {
  const out = [];
  for (const path of allPaths())
    for (const c of connsFor(path))
      out.push({
        path,
        conns: c,
        rpsOursOverHaproxy: pairedRatio('ours', 'haproxy', path, c, 'rps'),
        rpsOursOverDirect: pairedRatio('ours', 'direct', path, c, 'rps'),
        rpsHaproxyOverDirect: pairedRatio('haproxy', 'direct', path, c, 'rps'),
        cpuOursOverHaproxy: pairedRatio('ours', 'haproxy', path, c, 'cpuUsPerReq'),
        p99OursOverHaproxy: pairedRatio('ours', 'haproxy', path, c, 'p99Ms'),
        chainRpsOursOverHaproxy: pairedRatio('chain-ours', 'chain-haproxy', path, c, 'rps'),
        chainP99OursOverNova: pairedRatio('chain-ours', 'nova-direct', path, c, 'p99Ms'),
        chainP99HaproxyOverNova: pairedRatio('chain-haproxy', 'nova-direct', path, c, 'p99Ms'),
        chainCpuOursOverHaproxy: pairedRatio('chain-ours', 'chain-haproxy', path, c, 'cpuUsPerReq'),
      });
  return out;
}

function stormSummary() {
  const keys = new Map<string, (StormResult & { target: string })[]>();
  for (const s of result.storm) keys.set(`${s.target}|${s.guests}`, [...(keys.get(`${s.target}|${s.guests}`) ?? []), s]);
  return [...keys.values()].map((ss) => ({
    target: ss[0]!.target,
    guests: ss[0]!.guests,
    repeats: ss.length,
    requests: ss[0]!.requests,
    totalMs: median(ss.map((s) => s.totalMs)),
    p50Ms: median(ss.map((s) => s.p50Ms)),
    p99Ms: median(ss.map((s) => s.p99Ms)),
    maxMs: median(ss.map((s) => s.maxMs)),
    crawlP50Ms: median(ss.map((s) => s.crawlP50Ms)),
    crawlP99Ms: median(ss.map((s) => s.crawlP99Ms)),
    errors: ss.reduce((a, s) => a + s.errors, 0),
  }));
}

function checks(summary: ReturnType<typeof summaryRows>, rat: ReturnType<typeof ratios>, storm: ReturnType<typeof stormSummary>) {
  const out: { goal: string; measured: string; pass: boolean | null }[] = [];
  const mb = (kb: number | undefined) => (kb === undefined ? NaN : kb / 1024);
  // The targets are about keep-alive guests; the connection-per-request variant is reported for information.
  const closeRat = rat.filter((r) => r.path.startsWith(CLOSE));
  rat = rat.filter((r) => !r.path.startsWith(CLOSE));
  for (const r of rat) {
    if (r.conns === 16 || r.conns === 64) {
      out.push({ goal: `req/s ours ≥ 1.0× haproxy (${r.path}, c${r.conns})`, measured: `${fmt(r.rpsOursOverHaproxy, 2)}×`, pass: Number.isFinite(r.rpsOursOverHaproxy) ? r.rpsOursOverHaproxy >= 1 : null });
    }
    out.push({ goal: `CPU/request ours ≤ haproxy (${r.path}, c${r.conns})`, measured: `${fmt(r.cpuOursOverHaproxy, 2)}×`, pass: Number.isFinite(r.cpuOursOverHaproxy) ? r.cpuOursOverHaproxy <= 1 : null });
  }
  const g = summary.filter((s) => s.target === 'ours' && !s.path.startsWith(CLOSE)).map((s) => s.guestConnsPerReq);
  if (g.length) out.push({ goal: 'guest TCP connections per request ≈ 0 (ours; beyond wrk\'s initial ones)', measured: `max ${fmt(Math.max(...g), 4)}`, pass: Math.max(...g) < 0.001 });
  const m = result.memory.ours;
  if (m) {
    out.push({ goal: 'idle RSS ≤ 30 MB (ours)', measured: `${fmt(mb(m.idle.rssKb))} MB`, pass: mb(m.idle.rssKb) <= 30 });
    const end = m.atEnd ?? m.afterLoad;
    if (end && m.afterWarmup) {
      const grow = mb(end.rssKb) - mb(m.afterWarmup.rssKb);
      out.push({
        goal: 'no RSS growth after load (ours; idle at the end vs after warm-up, ≤ +10%)',
        measured: `${grow >= 0 ? '+' : ''}${fmt(grow)} MB (${fmt(mb(m.idle.rssKb))} idle → ${fmt(mb(m.afterWarmup.rssKb))} warm → ${fmt(mb(m.afterLoad?.rssKb))} right after load → ${fmt(mb(end.rssKb))} after ${m.idleSeconds ?? 0} s idle)`,
        pass: end.rssKb <= m.afterWarmup.rssKb * 1.1,
      });
      const pgrow = mb(end.privateKb) - mb(m.idle.privateKb);
      out.push({
        goal: '(info) private memory growth after load (ours; at the end vs idle; RSS also counts node\'s shared code pages)',
        measured: `${pgrow >= 0 ? '+' : ''}${fmt(pgrow)} MB (${fmt(mb(m.idle.privateKb))} → ${fmt(mb(end.privateKb))})`,
        pass: null,
      });
    }
  }
  for (const r of rat) {
    if ((r.conns === 16 || r.conns === 64) && Number.isFinite(r.chainRpsOursOverHaproxy))
      out.push({ goal: `whole chain req/s ours ≥ 1.0× haproxy (${r.path}, c${r.conns})`, measured: `${fmt(r.chainRpsOursOverHaproxy, 2)}×`, pass: r.chainRpsOursOverHaproxy >= 1 });
    if (r.conns === 64 && Number.isFinite(r.chainP99OursOverNova))
      out.push({ goal: `whole chain p99 (ours) ≤ 2× direct-to-nova p99 (${r.path}, c64)`, measured: `${fmt(r.chainP99OursOverNova, 2)}× (haproxy chain: ${fmt(r.chainP99HaproxyOverNova, 2)}×)`, pass: r.chainP99OursOverNova <= 2 });
  }
  for (const r of closeRat) {
    out.push({ goal: `(info) a new connection per request: req/s ours ÷ haproxy (${r.path}, c${r.conns})`, measured: `${fmt(r.rpsOursOverHaproxy, 2)}×`, pass: null });
    out.push({ goal: `(info) a new connection per request: CPU/request ours ÷ haproxy (${r.path}, c${r.conns})`, measured: `${fmt(r.cpuOursOverHaproxy, 2)}×`, pass: null });
    if (Number.isFinite(r.chainRpsOursOverHaproxy))
      out.push({ goal: `(info) a new connection per request, whole chain: req/s ours ÷ haproxy (${r.path}, c${r.conns})`, measured: `${fmt(r.chainRpsOursOverHaproxy, 2)}×`, pass: null });
  }
  for (const s of storm.filter((x) => x.target === 'ours' || x.target === 'chain-ours'))
    out.push({ goal: `boot storm ${s.guests} guests: 0 errors (${s.target})`, measured: `${s.errors} errors in ${s.repeats}×${s.requests} requests`, pass: s.errors === 0 });
  return out;
}

function markdown(summary: ReturnType<typeof summaryRows>, rat: ReturnType<typeof ratios>, storm: ReturnType<typeof stormSummary>, chk: ReturnType<typeof checks>): string {
  const m = result.meta as {
    date: string;
    host: { cpus: number; model?: string; kernel: string; loadavgStart: number[] };
    loadavgEnd?: number[];
    node: string;
    haproxy: string;
    wrk: string;
    commit: string;
    nsProxyUncommitted: boolean;
  };
  const L: string[] = [];
  L.push(`# Metadata proxy benchmark (${m.date})`, '');
  L.push(
    `Machine: ${m.host.cpus} CPUs (${m.host.model ?? '?'}), kernel ${m.host.kernel}, node ${m.node}, ${m.haproxy.replace(/ - https.*/, '')}, ${m.wrk.replace(/ Copyright.*/, '')}; commit ${m.commit}${m.nsProxyUncommitted ? ' (+ uncommitted changes in src/ns-proxy or src/common)' : ''}. ` +
      `Our proxy runs ${cfg.nodeFlags.join(' ') === PROXY_NODE_FLAGS.join(' ') ? 'as the L3 agent runs it' : '**not** as the L3 agent runs it'}: \`node main.js --nodaemonize ...\`${cfg.nodeFlags.length ? ` with node flags \`${cfg.nodeFlags.join(' ')}\`` : ' (no extra node flags)'}. ` +
      `Load average at start ${m.host.loadavgStart.map((x) => x.toFixed(2)).join(' ')}, at end ${(m.loadavgEnd ?? []).map((x) => x.toFixed(2)).join(' ')} (shared machine: other builds/tests were running).`,
  );
  L.push(
    '',
    `${cfg.repeats} repeats × ${cfg.duration} s per figure (${cfg.chainDuration} s in the whole chain; wrk -t1, --latency, from the guest namespace through Neutron's iptables REDIRECT), medians shown; ratios are medians of per-repeat ratios (targets interleaved within each repeat). ${cfg.quick ? '**Quick run.**' : ''}`,
  );
  if (result.notes.length) L.push('', ...result.notes.map((n) => `- Note: ${n}`));
  L.push('', '## Targets', '', table(['goal', 'measured', 'pass'], chk.map((c) => [c.goal, c.measured, c.pass === null ? '–' : c.pass ? 'yes' : '**NO**'])));
  const tbl = (names: string[], others: string[], backend: boolean, total = false) =>
    table(
      [
        'target',
        'path',
        'conns',
        'req/s',
        'p50 ms',
        'p99 ms',
        'proxy CPU µs/req',
        ...others.map((o) => `${o} CPU µs/req`),
        ...(total ? ['all hops CPU µs/req'] : []),
        'new guest conns/req',
        ...(backend ? ['backend conns/req'] : []),
        'errors',
      ],
      summary
        .filter((s) => names.includes(s.target))
        .sort((a, b) => a.path.localeCompare(b.path) || a.conns - b.conns || names.indexOf(a.target) - names.indexOf(b.target))
        .map((s) => [
          s.target,
          `\`${s.path}\``,
          s.conns,
          fmt(s.rps, 0),
          fmt(s.p50Ms, 2),
          fmt(s.p99Ms, 2),
          fmt(s.cpuUsPerReq),
          ...others.map((o) => fmt(s.otherCpuUsPerReq[o])),
          ...(total ? [fmt((Number.isFinite(s.cpuUsPerReq) ? s.cpuUsPerReq : 0) + others.reduce((a, o) => a + (s.otherCpuUsPerReq[o] ?? 0), 0))] : []),
          fmt(s.guestConnsPerReq, 3),
          ...(backend ? [fmt(s.backendConnsPerReq, 3)] : []),
          s.errors,
        ]),
    );
  L.push('', '## Proxy in front of the minimal upstream', '', tbl(['ours', 'haproxy', 'direct'], ['upstream'], true));
  L.push(
    '',
    table(
      ['path', 'conns', 'req/s ours÷haproxy', 'req/s ours÷direct', 'req/s haproxy÷direct', 'CPU/req ours÷haproxy', 'p99 ours÷haproxy'],
      rat.map((r) => [`\`${r.path}\``, r.conns, fmt(r.rpsOursOverHaproxy, 2), fmt(r.rpsOursOverDirect, 2), fmt(r.rpsHaproxyOverDirect, 2), fmt(r.cpuOursOverHaproxy, 2), fmt(r.p99OursOverHaproxy, 2)]),
    ),
  );
  const mrow = (name: string) => {
    const x = result.memory[name];
    if (!x) return undefined;
    const mb = (k?: number) => (k === undefined ? '–' : fmt(k / 1024));
    return [
      name,
      mb(x.idle.rssKb),
      mb(x.afterWarmup?.rssKb),
      mb(x.afterLoad?.rssKb),
      x.atEnd ? `${mb(x.atEnd.rssKb)} (${x.idleSeconds} s)` : '–',
      mb((x.atEnd ?? x.afterLoad ?? x.afterWarmup ?? x.idle).hwmKb),
      mb(x.idle.privateKb),
      mb(x.afterLoad?.privateKb),
      mb(x.atEnd?.privateKb),
    ];
  };
  L.push(
    '',
    '## Memory (MB; haproxy summed over its processes)',
    '',
    table(
      ['process', 'RSS idle', 'RSS after warm-up', 'RSS after load (+2 s)', 'RSS at end (idle for)', 'peak RSS (VmHWM)', 'private idle', 'private after load', 'private at end'],
      ['ours', 'haproxy', 'chain-ours', 'chain-haproxy'].map(mrow).filter((r): r is string[] => !!r),
    ),
  );
  if (result.scale.length)
    L.push(
      '',
      '## Many routers on one node (idle copies started together, mean per copy, MB)',
      '',
      table(
        ['proxy', 'copies', 'RSS each', 'private each', 'Pss each (fair share of shared pages)'],
        result.scale.map((x) => [x.target, x.copies, fmt(x.rssKbEach / 1024), fmt(x.privateKbEach / 1024), fmt(x.pssKbEach / 1024)]),
      ),
    );
  if (storm.length)
    L.push(
      '',
      `## Boot storm (each guest: ${BOOT_CRAWL.length} requests of cloud-init's crawl, one connection each, all guests at once)`,
      '',
      table(
        ['target', 'guests', 'requests', 'total ms', 'request p50 ms', 'request p99 ms', 'request max ms', 'guest crawl p50 ms', 'guest crawl p99 ms', 'errors (all repeats)'],
        storm.map((s) => [s.target, s.guests, s.requests, fmt(s.totalMs, 0), fmt(s.p50Ms, 1), fmt(s.p99Ms, 1), fmt(s.maxMs, 1), fmt(s.crawlP50Ms, 0), fmt(s.crawlP99Ms, 0), s.errors]),
      ),
    );
  if (summary.some((s) => s.target.startsWith('chain-'))) {
    L.push('', '## Whole chain: proxy → metadata agent → quantum-server lookup → nova-api metadata', '', tbl(['chain-ours', 'chain-haproxy', 'nova-direct'], ['agent', 'quantum-server', 'nova-api'], false, true));
    L.push(
      '',
      table(
        ['path', 'conns', 'req/s ours÷haproxy', 'CPU/req ours÷haproxy', 'p99 ours÷nova-direct', 'p99 haproxy÷nova-direct'],
        rat.map((r) => [`\`${r.path}\``, r.conns, fmt(r.chainRpsOursOverHaproxy, 2), fmt(r.chainCpuOursOverHaproxy, 2), fmt(r.chainP99OursOverNova, 2), fmt(r.chainP99HaproxyOverNova, 2)]),
      ),
    );
  }
  for (const [name, prof] of Object.entries(result.profiles)) {
    L.push('', `## Where our proxy spends its CPU: ${name} (--cpu-prof, wrk -c16, ${prof.samples} samples, self time)`, '');
    L.push(table(['area', 'self %'], prof.byArea.map((a) => [a.area, fmt(a.selfPct)])));
    L.push('', table(['function', 'where', 'self %'], prof.topFrames.map((f) => [`\`${f.name}\``, f.where, fmt(f.selfPct)])));
    L.push('', table(['function (inclusive)', 'where', 'total %'], prof.topInclusive.map((f) => [`\`${f.name}\``, f.where, fmt(f.selfPct)])));
  }
  L.push('', '## Sanity (one request with spoofed X-Neutron-*-ID headers through each proxy)', '', ...result.sanity.map((s) => `- ${s.target}: ${s.ok ? 'ok' : 'FAILED'}: ${s.detail}`));
  return L.join('\n') + '\n';
}

function writeReport(): void {
  const summary = summaryRows();
  const rat = ratios();
  const storm = stormSummary();
  const chk = checks(summary, rat, storm);
  writeResults(repoRoot, cfg.out, { ...result, summary, ratios: rat, stormSummary: storm, checks: chk }, markdown(summary, rat, storm, chk), say);
}

await runner.finish(main, {
  notes: result.notes,
  report: writeReport,
});
