// One shared metadata proxy for all namespaces vs a proxy per namespace vs haproxy per namespace:
//  1. memory per router: Pss of all proxy processes ÷ routers, with 100, 300 and 1000 namespaces (each
//     listener answers one request first), and the shared proxy's marginal cost per listener;
//  2. req/s and proxy CPU per request through one router namespace (Neutron's REDIRECT) at 1/16/64
//     connections, shared (next to the other idle listeners) vs per-namespace, each proxy in a session of its own as
//     the agents start them (and a per-namespace one left in the benchmark's session, for scale), and haproxy as
//     Neutron runs it in the same namespace;
//  3. kill -9 under a guest loop with a new connection per request: shared (respawned by
//     SharedMetadataProxy, sockets kept by the agent) vs per-namespace (ProcessMonitor, 1 s checks);
//  4. boot storm: 50 routers with 4 guests each, all 200 guests run cloud-init's crawl at once through the whole
//     chain (metadata agent, quantum-server, nova-api), each checked to get its own instance-id, shared (one process,
//     a listener per router) vs per-namespace (a process per router), side by side.
// Not a test. As root:  node dist/bench/shared-proxy.js [--sizes 100,300,1000] [--per-ns 100,300] [--haproxy 100]
//   [--conns 1,16,64] [--duration 3] [--repeats 3] [--storm-routers 50] [--storm-guests 4] [--only storm] [--out NAME]
//   [--compare <another build's dist/proxy/ns-proxy/main.js> [--compare-label NAME]]
// --compare: one more row in the load phase, a shared proxy of that build with as many listeners (each answered
// once), measured in the same run and rotation as the others: two builds side by side under the same load.
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { silentLogger } from '../src/common/log.js';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { defaultProxyMain, metadataProxyManager } from '../src/linux/agent-common.js';
import { ProcessMonitor, type ProcessManager } from '../src/linux/external-process.js';
import { SharedMetadataProxy } from '../src/linux/shared-proxy.js';
import { BOOT_CRAWL } from './lib/bodies.js';
import { chainReady, createRouterNetwork, createServers, novaDirect, startChainDaemons } from './lib/chain.js';
// The same guest loop the shared proxy's kill -9 test runs.
import { guestLoop, type LoopResult } from '../test/helpers/guest-loop.js';
import { parallel, run } from './lib/exec.js';
import { BenchRun } from './lib/lifecycle.js';
import { addGuests, addNamespaces, createTopology, GUEST_IP, METADATA_IP, redirectTo, runPrefix, type Topology } from './lib/netns.js';
import { launch, startHaproxy, startOurProxy, startUpstream, type Proc } from './lib/procs.js';
import { cpuSeconds, cpuSecondsPrecise, cpuSecondsSelf, memory } from './lib/procstat.js';
import { bootStorm, type StormResult } from './lib/storm.js';
import { fmt, median, table } from './lib/stats.js';
import { wrk } from './lib/wrk.js';

const here = dirname(fileURLToPath(import.meta.url));
const buildRoot = resolve(here, '..');
const repoRoot = resolve(here, '../..');
const list = (s: string | undefined, d: number[]) => (s === undefined ? d : s === '' || s === '0' ? [] : s.split(',').map(Number));
const { values: flags } = parseArgs({
  options: {
    sizes: { type: 'string' },
    'per-ns': { type: 'string' },
    haproxy: { type: 'string' },
    conns: { type: 'string' },
    duration: { type: 'string' },
    repeats: { type: 'string' },
    'storm-routers': { type: 'string' },
    'storm-guests': { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string' },
    compare: { type: 'string' },
    'compare-label': { type: 'string' },
  },
});
if (flags.only !== undefined && flags.only !== 'storm') throw new Error(`--only: the one phase that runs alone is "storm", not "${flags.only}"`);
const cfg = {
  only: flags.only,
  sizes: list(flags.sizes, [100, 300, 1000]),
  perNs: list(flags['per-ns'], [100, 300]),
  haproxy: Number(flags.haproxy ?? 100),
  conns: list(flags.conns, [1, 16, 64]),
  duration: Number(flags.duration ?? 3),
  repeats: Number(flags.repeats ?? 3),
  /** 0 skips the storm. */
  stormRouters: Number(flags['storm-routers'] ?? 50),
  stormGuests: Number(flags['storm-guests'] ?? 4),
  compare: flags.compare === undefined ? undefined : resolve(flags.compare),
  compareLabel: flags['compare-label'] ?? 'compared build',
};
if (cfg.stormGuests < 1 || cfg.stormGuests > 200) throw new Error('--storm-guests: 1 to 200 guests per router');
const PORT = 9697;
const SHARED_PORT = 9699;
const PERNS_PORT = 9698;
const SOLO_PORT = 9700;
const COMPARE_PORT = 9701;
const PERNS_SESSION_PORT = 9702;
const HAPROXY_PORT = 9703;
/** Seconds of idle CPU measured before the load phase. */
const IDLE_S = 10;
const PATH = '/latest/meta-data/instance-id';
const OUT = flags.out ?? (cfg.only === 'storm' ? 'tmp/shared-proxy-storm' : 'shared-proxy');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const say = (m: string) => process.stderr.write(`[shared-bench ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

interface MemRow {
  mode: string;
  routers: number;
  processes: number;
  pssKb: number;
  privateKb: number;
  rssKb: number;
}

interface StormRow extends StormResult {
  mode: string;
  /** -1: the warm-up storm of that mode. */
  rep: number;
  routers: number;
  /** utime+stime of the proxy process(es) during the storm. */
  proxyCpuS: number;
  /** The same for the metadata agent, quantum-server and nova-api. */
  chainCpuS: number;
}

const result = {
  when: new Date().toISOString(),
  commit: '',
  machine: '',
  loadStart: loadavg(),
  cfg,
  bind: [] as string[],
  memory: [] as MemRow[],
  sharedBaseKb: 0,
  sharedBasePrivateKb: 0,
  idle: [] as { mode: string; cpuMsPerS: number }[],
  load: [] as { mode: string; conns: number; rep: number; rps: number; p99Ms: number; cpuUsPerReq: number; errors: number }[],
  kill: [] as ({ mode: string; respawnMs: number } & LoopResult)[],
  storm: [] as StormRow[],
  stormSetup: '',
  notes: [] as string[],
};

let prefix = '';
let tmp = '';
const runner = new BenchRun(say, () => ({ prefix, tmp }));

/** One request from inside a namespace to its local listener; true on 200. */
async function probe(ns: string, port: number): Promise<boolean> {
  const { stdout } = await run(['curl', '-s', '-o', '/dev/null', '-m', '5', '-w', '%{http_code}', `http://127.0.0.1:${port}${PATH}`], { ns, allowFail: true });
  return stdout === '200';
}

async function waitServed(ns: string, port: number, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await probe(ns, port)) return;
    await sleep(50);
  }
  throw new Error(`nothing answers on ${ns} :${port}`);
}

const sumMem = (pids: number[]) => pids.map((p) => memory(p)).reduce((a, m) => ({ pssKb: a.pssKb + m.pssKb, privateKb: a.privateKb + m.privateKb, rssKb: a.rssKb + m.rssKb }), { pssKb: 0, privateKb: 0, rssKb: 0 });

async function main(): Promise<void> {
  prefix = runPrefix();
  tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  result.commit = execFileSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']).toString().trim();
  result.machine = `${cpus().length}× ${cpus()[0]?.model ?? '?'}, node ${process.version}`;
  say(`run ${prefix}, ${JSON.stringify(cfg)}`);
  if (cfg.only !== 'storm') await routerPhases();
  if (cfg.stormRouters > 0) await stormPhase();
  report();
}

/** Phases 1-3 (memory, load through one router, kill -9). */
async function routerPhases(): Promise<void> {
  const maxN = Math.max(0, ...cfg.sizes, ...cfg.perNs, cfg.haproxy);
  const names = Array.from({ length: maxN }, (_, i) => `${prefix}-n${i}`);
  const t0 = Date.now();
  await addNamespaces(names);
  say(`${maxN} namespaces in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const upNs = `${prefix}-up`;
  await run(['ip', 'netns', 'add', upNs]);
  const upstream = await startUpstream(resolve(here, 'lib/upstream.js'), upNs, tmp);
  const state = join(tmp, 'state');
  mkdirSync(state, { recursive: true });
  const conf = { state_path: state, metadata_proxy_socket: upstream.socket, debug: false, verbose: false };

  // ---- 1. memory: shared ----
  const m = new SharedMetadataProxy({ name: 'bench-l3', conf, log: silentLogger, pruneIntervalSec: 0 });
  runner.onCleanup(() => m.destroy());
  await m.start();
  await sleep(1000);
  const base = memory(m.pid!);
  result.sharedBaseKb = base.pssKb;
  result.sharedBasePrivateKb = base.privateKb;
  let have = 0;
  for (const n of [...cfg.sizes].sort((a, b) => a - b)) {
    const t = Date.now();
    const add = names.slice(have, n);
    await Promise.all(add.map((ns) => m.add({ kind: 'router', id: randomUUID(), namespace: ns, host: '0.0.0.0', port: PORT })));
    const addMs = Date.now() - t;
    await parallel(add, 16, async (ns) => {
      if (!(await probe(ns, PORT))) throw new Error(`shared listener in ${ns} did not answer`);
    });
    have = n;
    await sleep(6000); // past the quiet period: the agent connections close, as on an idle node
    const mem = sumMem([m.pid!]);
    result.memory.push({ mode: 'shared', routers: n, processes: 1, ...mem });
    say(`shared, ${n} listeners (added in ${addMs} ms): ${fmt(mem.pssKb / 1024)} MB Pss, ${fmt(mem.pssKb / n)} KB per router, marginal ${fmt((mem.pssKb - result.sharedBaseKb) / n)} KB Pss, ${fmt((mem.privateKb - result.sharedBasePrivateKb) / n)} KB private`);
  }

  // ---- 2. load through one router namespace: shared (next to the idle listeners) vs per-namespace ----
  const topo: Topology = await createTopology(prefix, SHARED_PORT);
  const routerId = randomUUID();
  await m.add({ kind: 'router', id: routerId, namespace: topo.router, host: '0.0.0.0', port: SHARED_PORT });
  const perNsArgv = (port: number) => [process.execPath, ...PROXY_NODE_FLAGS, defaultProxyMain, '--nodaemonize', `--router_id=${routerId}`, `--state_path=${state}`, `--metadata_port=${port}`, `--metadata_proxy_socket=${upstream.socket}`];
  // In its own session, as the agents start it (so is the shared proxy, by SharedMetadataProxy); and the same proxy
  // left in the benchmark's session, beside wrk and the upstream, which is how this phase ran before (see launch).
  const perNs = launch('perns-load', perNsArgv(PERNS_PORT), topo.router, tmp, {}, { detached: true });
  const perNsHere = launch('perns-load-session', perNsArgv(PERNS_SESSION_PORT), topo.router, tmp);
  runner.onCleanup(() => perNsHere.stop());
  await waitServed(topo.router, PERNS_PORT);
  await waitServed(topo.router, PERNS_SESSION_PORT);
  // The same process model with that one listener only: what the other idle listeners cost per request.
  const solo = new SharedMetadataProxy({ name: 'bench-solo', conf, log: silentLogger, pruneIntervalSec: 0 });
  runner.onCleanup(() => solo.destroy());
  await solo.start();
  await solo.add({ kind: 'router', id: routerId, namespace: topo.router, host: '0.0.0.0', port: SOLO_PORT });
  // haproxy as Neutron's L3 agent runs it, in the same router namespace: what the per-namespace proxy was measured
  // against, so the shared one is too, in the same run.
  const hap = await startHaproxy('haproxy-load', topo.router, tmp, { routerId, port: HAPROXY_PORT, socket: upstream.socket });
  runner.onCleanup(() => hap.stop());
  const targets = [
    { mode: `shared (1 of ${m.size} listeners)`, port: SHARED_PORT, pid: () => m.pid! },
    { mode: 'shared (its only listener)', port: SOLO_PORT, pid: () => solo.pid! },
    { mode: 'per-namespace', port: PERNS_PORT, pid: () => perNs.pid },
    { mode: "per-namespace, in the benchmark's session", port: PERNS_SESSION_PORT, pid: () => perNsHere.pid },
    { mode: 'haproxy (Neutron config)', port: HAPROXY_PORT, pid: () => hap.pid },
  ];
  let other: SharedMetadataProxy | undefined;
  if (cfg.compare) {
    // The same listeners (each answered once, then past the quiet period) served by the other build.
    const cmp = (other = new SharedMetadataProxy({ name: 'bench-compare', conf: { ...conf, metadata_proxy_cmd: [process.execPath, ...PROXY_NODE_FLAGS, cfg.compare].join(' ') }, log: silentLogger, pruneIntervalSec: 0 }));
    runner.onCleanup(() => cmp.destroy());
    await cmp.start();
    const idle = names.slice(0, have);
    await Promise.all(idle.map((ns) => cmp.add({ kind: 'router', id: randomUUID(), namespace: ns, host: '0.0.0.0', port: COMPARE_PORT })));
    await parallel(idle, 16, (ns) => waitServed(ns, COMPARE_PORT));
    await cmp.add({ kind: 'router', id: routerId, namespace: topo.router, host: '0.0.0.0', port: COMPARE_PORT });
    targets.push({ mode: `shared (1 of ${cmp.size} listeners), ${cfg.compareLabel}`, port: COMPARE_PORT, pid: () => cmp.pid! });
  }
  // Idle, past the quiet period: what the targets cost with nobody asking (their timers, the sweep over listeners).
  await sleep(6000);
  const idle0 = targets.map((t) => cpuSecondsPrecise(t.pid()));
  await sleep(IDLE_S * 1000);
  targets.forEach((t, i) => result.idle.push({ mode: t.mode, cpuMsPerS: ((cpuSecondsPrecise(t.pid()) - idle0[i]!) * 1000) / IDLE_S }));
  const url = `http://${METADATA_IP}${PATH}`;
  for (const t of targets) {
    await redirectTo(topo, t.port);
    await wrk(topo.guest, url, 16, 1);
  }
  for (let rep = 0; rep < cfg.repeats; rep++) {
    for (const c of cfg.conns) {
      // Rotated every repeat so drift in the machine's load does not favour one target.
      for (const t of [...targets.slice(rep % targets.length), ...targets.slice(0, rep % targets.length)]) {
        await redirectTo(topo, t.port);
        const pid = t.pid();
        const c0 = cpuSeconds(pid);
        const r = await wrk(topo.guest, url, c, cfg.duration);
        const cpu = ((cpuSeconds(pid) - c0) * 1e6) / Math.max(1, r.requests);
        result.load.push({ mode: t.mode, conns: c, rep, rps: r.rps, p99Ms: r.p99Ms, cpuUsPerReq: cpu, errors: r.non2xx + r.socketErrors });
        say(`${t.mode} c${c} rep ${rep}: ${fmt(r.rps, 0)} req/s, ${fmt(cpu)} µs CPU/req`);
      }
    }
  }

  // ---- 3. kill -9 under a guest loop ----
  {
    await redirectTo(topo, SHARED_PORT);
    const loop = guestLoop(topo.guest, url, 4000);
    await sleep(1500);
    const old = m.pid!;
    const k0 = Date.now();
    process.kill(old, 'SIGKILL');
    for (const end = Date.now() + 15_000; (!m.alive || m.pid === old) && Date.now() < end; ) await sleep(5);
    const respawnMs = Date.now() - k0;
    const r = await loop;
    result.kill.push({ mode: 'shared', respawnMs, ...r });
    say(`kill -9 shared: ${JSON.stringify(r)}, back in ${respawnMs} ms`);
  }
  await perNs.stop();
  await perNsHere.stop();
  {
    // As the agents supervise a per-namespace proxy: ProcessManager + ProcessMonitor, 1 s checks.
    const pm: ProcessManager = metadataProxyManager({ uuid: routerId, namespace: topo.router, conf, port: PERNS_PORT, routerId, log: silentLogger });
    runner.onCleanup(() => pm.disable());
    await pm.enable();
    const mon = new ProcessMonitor({ intervalSec: 1, action: 'respawn', log: silentLogger });
    mon.register(pm);
    runner.onCleanup(async () => mon.stop());
    await waitServed(topo.router, PERNS_PORT);
    await redirectTo(topo, PERNS_PORT);
    const loop = guestLoop(topo.guest, url, 4000);
    await sleep(1500);
    const old = pm.pid!;
    const k0 = Date.now();
    process.kill(old, 'SIGKILL');
    for (const end = Date.now() + 15_000; (!pm.active || pm.pid === old) && Date.now() < end; ) await sleep(5);
    const respawnMs = Date.now() - k0;
    const r = await loop;
    result.kill.push({ mode: 'per-namespace (ProcessMonitor, 1 s checks)', respawnMs, ...r });
    say(`kill -9 per-namespace: ${JSON.stringify(r)}, back in ${respawnMs} ms`);
    mon.stop();
    await pm.disable();
  }
  await solo.destroy();
  await other?.destroy();
  await m.destroy();

  // ---- 1b. memory: a proxy per namespace, and haproxy per namespace ----
  const procs: Proc[] = [];
  runner.onCleanup(async () => {
    for (const p of procs) await p.stop();
  });
  let started = 0;
  for (const n of [...cfg.perNs].sort((a, b) => a - b)) {
    const t = Date.now();
    const more = names.slice(started, n);
    await parallel(more, 4, async (ns, i) => {
      const p = launch(`perns-${started + i}`, [process.execPath, ...PROXY_NODE_FLAGS, defaultProxyMain, '--nodaemonize', `--router_id=${randomUUID()}`, `--state_path=${state}`, `--metadata_port=${PORT}`, `--metadata_proxy_socket=${upstream.socket}`], ns, tmp);
      procs.push(p);
      await waitServed(ns, PORT);
    });
    started = n;
    await sleep(6000);
    const mem = sumMem(procs.map((p) => p.pid));
    result.memory.push({ mode: 'per-namespace', routers: n, processes: procs.length, ...mem });
    say(`per-namespace, ${n} proxies (started in ${((Date.now() - t) / 1000).toFixed(1)} s): ${fmt(mem.pssKb / n / 1024)} MB Pss per router`);
  }
  for (const p of procs.splice(0)) await p.stop();
  if (cfg.haproxy > 0) {
    await parallel(names.slice(0, cfg.haproxy), 4, async (ns, i) => {
      const p = await startHaproxy(`haproxy-${i}`, ns, tmp, { routerId: randomUUID(), port: PORT, socket: upstream.socket });
      procs.push(p);
      await waitServed(ns, PORT);
    });
    await sleep(2000);
    const mem = sumMem(procs.map((p) => p.pid));
    result.memory.push({ mode: 'haproxy (Neutron config)', routers: cfg.haproxy, processes: procs.length, ...mem });
    say(`haproxy, ${cfg.haproxy} copies: ${fmt(mem.pssKb / cfg.haproxy / 1024)} MB Pss per router`);
    for (const p of procs.splice(0)) await p.stop();
  }
  await upstream.stop();
}

interface StormRouter {
  topo: Topology;
  routerId: string;
  /** Its guests: the topology's main guest, then its storm guests; each with its server's own instance-id. */
  guests: { ns: string; ip: string; serverId: string; instanceId: string }[];
}

/** Guest k of a router: netns.ts's main guest first, then 10.1.1.10 onwards (the same addresses behind every router). */
const stormGuestIp = (k: number) => (k === 0 ? GUEST_IP : `10.1.1.${9 + k}`);

/**
 * 4. Boot storm over many routers, through the whole chain. Every router has its own switch, network and guests, all
 * with the same addresses (tenants' networks overlap), so only the router id the proxy adds tells the agent whose
 * guest is asking: each guest's instance-id is checked against the one nova gives for its own server. Each storm
 * starts with cold caches (the agent's and nova's expire in between), as when new instances boot.
 */
async function stormPhase(): Promise<void> {
  const ready = chainReady(buildRoot);
  if (ready !== true) {
    result.notes.push(`boot storm not run: ${ready}`);
    return;
  }
  const R = cfg.stormRouters;
  const G = cfg.stormGuests;
  const t0 = Date.now();
  const chain = await startChainDaemons({ buildRoot, tmp, log: say });
  runner.onCleanup(() => chain.stop());
  const routers: StormRouter[] = [];
  await parallel(Array.from({ length: R }, (_, i) => i), 4, async (i) => {
    const topo = await createTopology(`${prefix}-r${i}`, SHARED_PORT);
    await addGuests(topo, Array.from({ length: G - 1 }, (_, k) => stormGuestIp(k + 1)));
    const net = await createRouterNetwork(chain, `storm-${i}`);
    const nss = [topo.guest, ...topo.guests.map((g) => g.ns)];
    const ips = nss.map((_, k) => stormGuestIp(k));
    const ids = await createServers(chain, net.networkId, ips.map((ip, k) => ({ name: `storm-${i}-${k}`, ip })), 1);
    routers[i] = { topo, routerId: net.routerId, guests: nss.map((ns, k) => ({ ns, ip: ips[k]!, serverId: ids[k]!, instanceId: '' })) };
  });
  const guests = routers.flatMap((r) => r.guests);
  for (const g of guests) {
    const r = await novaDirect(chain, g.serverId, g.ip, PATH);
    if (r.status !== 200) throw new Error(`nova answers ${r.status} for server ${g.serverId}'s instance-id: ${r.body}`);
    g.instanceId = r.body;
  }
  if (new Set(guests.map((g) => g.instanceId)).size !== guests.length) throw new Error('two servers have the same instance-id');
  const built = Date.now();
  say(`storm: ${R} routers × ${G} guests (namespaces, networks, routers, servers) in ${((built - t0) / 1000).toFixed(1)} s`);

  const state = join(tmp, 'state-storm');
  mkdirSync(state, { recursive: true });
  const shared = new SharedMetadataProxy({ name: 'bench-storm', conf: { state_path: state, metadata_proxy_socket: chain.socket, debug: false, verbose: false }, log: silentLogger, pruneIntervalSec: 0 });
  runner.onCleanup(() => shared.destroy());
  await shared.start();
  await Promise.all(routers.map((r) => shared.add({ kind: 'router', id: r.routerId, namespace: r.topo.router, host: '0.0.0.0', port: SHARED_PORT })));
  const perNs: Proc[] = [];
  runner.onCleanup(async () => {
    for (const p of perNs) await p.stop();
  });
  await parallel(routers, 4, async (r, i) => {
    perNs.push(await startOurProxy(`storm-perns-${i}`, defaultProxyMain, r.topo.router, tmp, { routerId: r.routerId, port: PERNS_PORT, socket: chain.socket, nodeArgs: [...PROXY_NODE_FLAGS], detached: true }));
  });
  const started = Date.now();
  say(`storm: shared proxy with ${shared.size} listeners and ${perNs.length} per-namespace proxies in ${((started - built) / 1000).toFixed(1)} s`);
  result.stormSetup = `${R} routers × ${G} guests: namespaces, networks, routers and servers in ${((built - t0) / 1000).toFixed(0)} s; the proxies in ${((started - built) / 1000).toFixed(0)} s`;

  const modes = [
    { mode: `shared (1 process, ${R} listeners)`, port: SHARED_PORT, pids: () => [shared.pid!] },
    { mode: `per-namespace (${R} processes)`, port: PERNS_PORT, pids: () => perNs.map((p) => p.pid) },
  ];
  const chainPids = chain.procs.map((p) => p.pid);
  const sumCpu = (pids: number[], f: (pid: number) => number) => pids.reduce((a, p) => a + f(p), 0);
  const check = { path: PATH, expected: guests.map((g) => g.instanceId) };
  let first = true;
  const storm = async (m: (typeof modes)[number], rep: number) => {
    await parallel(routers, 8, (r) => redirectTo(r.topo, m.port));
    if (!first) await sleep((chain.cacheExpirySec + 1) * 1000);
    first = false;
    const p0 = sumCpu(m.pids(), cpuSecondsSelf);
    const c0 = sumCpu(chainPids, cpuSeconds);
    const r = await bootStorm(guests.map((g) => g.ns), BOOT_CRAWL, { check });
    const row: StormRow = { ...r, mode: m.mode, rep, routers: R, proxyCpuS: sumCpu(m.pids(), cpuSecondsSelf) - p0, chainCpuS: sumCpu(chainPids, cpuSeconds) - c0 };
    result.storm.push(row);
    say(`storm ${m.mode} ${rep < 0 ? 'warm-up' : `rep ${rep}`}: ${r.requests} requests in ${fmt(r.totalMs, 0)} ms, p99 ${fmt(r.p99Ms, 1)} ms, errors ${r.errors} (mismatches ${r.mismatches}), ${JSON.stringify(r.statuses)}`);
  };
  for (const m of modes) await storm(m, -1);
  for (let rep = 0; rep < cfg.repeats; rep++) for (const m of [...modes.slice(rep % 2), ...modes.slice(0, rep % 2)]) await storm(m, rep);
  // A proxy that died during a storm would explain its errors: say so rather than let a respawn hide it.
  const died = perNs.filter((p) => p.exited()).length;
  if (shared.respawns > 0 || died > 0) result.notes.push(`boot storm: shared proxy respawned ${shared.respawns} time(s), ${died} per-namespace proxies exited`);
  for (const p of perNs.splice(0)) await p.stop();
  await shared.destroy();
  await chain.stop();
}

function stormSection(): string[] {
  if (result.storm.length === 0) return [];
  const s0 = result.storm[0]!;
  const guests = s0.guests;
  const perGuest = guests ? s0.requests / guests : 0;
  const modes = [...new Set(result.storm.map((r) => r.mode))];
  const ms = (x: number) => fmt(x, 0);
  const statuses = (st: Record<string, number>) => Object.entries(st).map(([k, v]) => `${k}: ${v}`).join(', ');
  return [
    `## Boot storm: ${guests} guests behind ${s0.routers} routers, through the whole chain`,
    '',
    `Each router namespace has its own switch, network and ${guests / s0.routers} guests (the same addresses 10.1.1.2, 10.1.1.10… behind every router: tenants' networks overlap, so only the router id the proxy adds tells the agent whose guest asks) and Neutron's REDIRECT to the mode's port. Every guest runs cloud-init's crawl (${perGuest} requests, a connection each, \`bench/lib/storm.ts\`), all released at once, through the proxy → quantum-metadata-agent → quantum-server → nova-api (\`bench/lib/chain.ts\`: ${s0.routers} networks, subnets and routers and ${guests} servers made through the APIs). A guest's \`instance-id\` must be its own server's (nova's answer for that server, asked directly before the storms); another one counts as a mismatch and an error. Between storms the agent's and nova's caches expire, so every storm's lookups are cold, as when new instances boot. Both modes run side by side in the same namespaces (REDIRECT switched in every router between storms): a warm-up storm each, then ${cfg.repeats} more each, the order swapped every round. ${result.stormSetup}.`,
    '',
    table(
      ['mode', 'storm', 'requests', 'errors', 'mismatches', 'statuses', 'total ms', 'request p50 ms', 'p99 ms', 'max ms', 'crawl p50 ms', 'crawl p99 ms', 'proxy CPU s', 'agent+quantum+nova CPU s'],
      result.storm.map((r) => [r.mode, r.rep < 0 ? 'warm-up' : String(r.rep + 1), r.requests, r.errors, r.mismatches, statuses(r.statuses), ms(r.totalMs), fmt(r.p50Ms), fmt(r.p99Ms), ms(r.maxMs), ms(r.crawlP50Ms), ms(r.crawlP99Ms), fmt(r.proxyCpuS, 2), fmt(r.chainCpuS, 2)]),
    ),
    '',
    `Medians of the ${cfg.repeats} storms after the warm-up (errors: all storms, warm-up included):`,
    '',
    table(
      ['mode', 'errors', 'total ms', 'request p50 ms', 'p99 ms', 'max ms', 'crawl p50 ms', 'crawl p99 ms', 'proxy CPU s'],
      modes.map((m) => {
        const all = result.storm.filter((r) => r.mode === m);
        const rs = all.filter((r) => r.rep >= 0);
        const med = (f: (r: StormRow) => number) => median(rs.map(f));
        return [m, all.reduce((a, r) => a + r.errors, 0), ms(med((r) => r.totalMs)), fmt(med((r) => r.p50Ms)), fmt(med((r) => r.p99Ms)), ms(med((r) => r.maxMs)), ms(med((r) => r.crawlP50Ms)), ms(med((r) => r.crawlP99Ms)), fmt(med((r) => r.proxyCpuS), 2)];
      }),
    ),
    '',
  ];
}

function report(): void {
  const byMode = new Map<string, typeof result.load>();
  for (const r of result.load) byMode.set(`${r.mode}|${r.conns}`, [...(byMode.get(`${r.mode}|${r.conns}`) ?? []), r]);
  const mb = (kb: number) => fmt(kb / 1024);
  const la = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  const head = [
    `# Shared metadata proxy vs one per namespace (${result.when})`,
    '',
    `Commit ${result.commit}, ${result.machine}, load average at the start ${la(result.loadStart)}, at the end ${la(loadavg())}. Proxies run as the agents run them (\`node ${PROXY_NODE_FLAGS.join(' ')} dist/proxy/ns-proxy/main.js\`)${cfg.only === 'storm' ? '. Only the boot storm (`--only storm`).' : '; every listener answered one request, then 6 s idle (past the quiet period) before memory is read from /proc/<pid>/smaps_rollup.'}`,
    '',
  ];
  const routerSections = [
    '## Memory per router (Pss of all proxy processes ÷ routers)',
    '',
    table(
      ['mode', 'routers', 'processes', 'Pss total MB', 'Pss per router', 'private per router', 'RSS total MB'],
      result.memory.map((r) => [r.mode, r.routers, r.processes, mb(r.pssKb), r.pssKb / r.routers >= 1024 ? `${mb(r.pssKb / r.routers)} MB` : `${fmt(r.pssKb / r.routers)} KB`, r.privateKb / r.routers >= 1024 ? `${mb(r.privateKb / r.routers)} MB` : `${fmt(r.privateKb / r.routers)} KB`, mb(r.rssKb)]),
    ),
    '',
    `Shared proxy with no listener: ${mb(result.sharedBaseKb)} MB Pss, ${mb(result.sharedBasePrivateKb)} MB private. Marginal cost per listener, (X(N) − X(0)) ÷ N, Pss / private: ${result.memory
      .filter((r) => r.mode === 'shared')
      .map((r) => `${fmt((r.pssKb - result.sharedBaseKb) / r.routers)} / ${fmt((r.privateKb - result.sharedBasePrivateKb) / r.routers)} KB at ${r.routers}`)
      .join(', ')}. Pss moves with the number of other node processes on the host sharing the node binary's pages; private memory does not. The agent's copies of the listening sockets are kernel memory (a socket each), not in any process's Pss.`,
    '',
    `## Load through one router namespace (Neutron's REDIRECT), \`${PATH}\`, medians of ${cfg.repeats}`,
    '',
    table(
      ['mode', 'connections', 'req/s', 'req/s min–max', 'p99 ms', 'proxy CPU µs/request', 'CPU min–max', 'errors'],
      [...byMode.values()].map((rs) => {
        const range = (xs: number[], d: number) => `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`;
        const rps = rs.map((r) => r.rps);
        const cpu = rs.map((r) => r.cpuUsPerReq);
        return [rs[0]!.mode, rs[0]!.conns, fmt(median(rps), 0), range(rps, 0), fmt(median(rs.map((r) => r.p99Ms)), 2), fmt(median(cpu)), range(cpu, 1), rs.reduce((a, r) => a + r.errors, 0)];
      }),
    ),
    '',
    `Idle, ${IDLE_S} s after 6 s of quiet, before the load: ${result.idle.map((r) => `${r.mode} ${fmt(r.cpuMsPerS, 2)} ms CPU per second`).join('; ')}.`,
    '',
    '## kill -9 under a guest loop (a new connection per request, 4 s, killed at 1.5 s)',
    '',
    table(
      ['mode', 'answers', 'failed', 'refused', 'errors', 'longest gap ms', 'proxy back after ms'],
      result.kill.map((k) => [k.mode, k.ok, k.failed, k.refused, JSON.stringify(k.errors), k.maxGapMs, k.respawnMs]),
    ),
    '',
  ];
  const md = [...head, ...(cfg.only === 'storm' ? [] : routerSections), ...stormSection(), ...result.notes.map((n) => `- ${n}`)].join('\n');
  const out = join(repoRoot, 'bench', 'results', `${OUT}.md`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${md}\n`);
  writeFileSync(join(repoRoot, 'bench', 'results', `${OUT}.json`), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${md}\nwrote ${out}\n`);
}

main()
  .catch((e: unknown) => {
    process.stderr.write(`shared-proxy bench: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await runner.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });
