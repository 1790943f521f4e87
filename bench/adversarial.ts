// What a hostile guest costs the node and its neighbours, through the real chain (proxy → metadata agent →
// quantum-server → nova-api) with guests in namespaces (test/helpers/hostile.ts, the topology of
// test/adversarial.test.ts), in either metadata_proxy_mode or both. Not a test; about 2 minutes per mode. As root:
//   node dist/bench/adversarial.js [--mode per-namespace|shared|both] [--before PATH/TO/other/dist/proxy/ns-proxy/main.js] [--out NAME]
// --before also measures another build's proxy (e.g. the commit before a change) in the same run: the
// neighbour beside a reading flood, and the per-request CPU. Results: bench/results/<NAME or adversarial>.md.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CLOUDINIT_PYTHON } from '../test/helpers/cloudinit.js';
import { AnswerReader, GET, ROUTER_IP, cloudInitCrawl, guestRequest, latency, quietVsFlood, readingFlood, rssKb, startHostileChain, type HostileChain, type HostileGuest, type Latency, type RunningProxyProc } from '../test/helpers/hostile.js';
import { PROXY_MODES, type ProxyMode } from '../test/helpers/proxy-modes.js';
import { cpuSeconds } from './lib/procstat.js';
import { fmt, median, table } from './lib/stats.js';
import { wrk } from './lib/wrk.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const { values: flags } = parseArgs({ options: { before: { type: 'string' }, out: { type: 'string' }, mode: { type: 'string', default: 'both' } } });
const modes: readonly ProxyMode[] = flags.mode === 'both' ? PROXY_MODES : PROXY_MODES.filter((m) => m === flags.mode);
if (modes.length === 0) throw new Error(`--mode: per-namespace, shared or both, not ${flags.mode}`);
const MD = '/openstack/latest/meta_data.json';
const FLOOD_CONNS = 64;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mb = (kb: number) => fmt(kb / 1024, 1);
const ms = (l: Latency) => `${fmt(l.p50, 0)} / ${fmt(l.p99, 0)}`;
const ratio = (a: number, b: number) => `${fmt(a / b, 2)}×`;
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
const log = (m: string) => process.stderr.write(`[adversarial] ${m}\n`);

async function warm(c: HostileChain, g: HostileGuest, p: RunningProxyProc): Promise<void> {
  const w = await c.connect(g, p.port);
  const r = new AnswerReader(w);
  w.write(Buffer.concat(Array.from({ length: 2000 }, () => Buffer.from(`GET ${MD} HTTP/1.1\r\nHost: x\r\n\r\n`))));
  await r.wait(2000, 30_000);
  w.destroy();
}

/** One connection pipelining 50,000 GETs, never reading. */
async function pipelineFlood(c: HostileChain, g: HostileGuest, p: RunningProxyProc) {
  const s = await c.connect(g, p.port);
  s.pause();
  const one = Buffer.from(`GET ${MD} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n`);
  s.write(Buffer.concat(Array.from({ length: 50_000 }, () => one)));
  return s;
}

/** The neighbour beside a guest reading as fast as it can, quiet and flooded phases interleaved (6 × 50 each). */
async function besideReadingFlood(c: HostileChain, flooder: HostileGuest, neighbour: HostileGuest, p: RunningProxyProc) {
  const flood = readingFlood(c, flooder, p.port, FLOOD_CONNS);
  try {
    const r = await quietVsFlood(c, neighbour, p.port, flood, { rounds: 6, perPhase: 50 });
    const running = flood.runningMs;
    const { requests } = await flood.stop();
    return { ...r, floodRps: requests / (running / 1000) };
  } finally {
    await flood.stop();
  }
}

type Rows = (string | number)[][];
interface Tables {
  pipe: Rows;
  neighbour: Rows;
  reading: Rows;
  reset: Rows;
  rate: Rows;
  cpu: Rows;
  cpuRatio: string[];
}

async function runMode(c: HostileChain, mode: ProxyMode, t: Tables): Promise<void> {
  const [flooder, neighbour, crawler] = c.guests as [HostileGuest, HostileGuest, HostileGuest];
  const mains: [string, string | undefined][] = [['this build', undefined]];
  if (flags.before) mains.push(['before', resolve(flags.before)]);
  const p = await c.proxy([], undefined, mode);
  // 1. Pipelining without reading: the proxy's RSS idle, at peak during 5 s, after.
  await warm(c, neighbour, p);
  await sleep(5600);
  const idle = rssKb(p.pid);
  const s = await pipelineFlood(c, flooder, p);
  let peak = 0;
  for (let i = 0; i < 50; i++) {
    await sleep(100);
    peak = Math.max(peak, rssKb(p.pid));
  }
  const fr = new AnswerReader(s);
  s.resume();
  await sleep(500);
  const answered = fr.answers.length;
  s.destroy();
  await sleep(6000);
  const afterKb = rssKb(p.pid);
  log(`${mode} pipelining: idle ${idle} peak ${peak} after ${afterKb} answered ${answered}`);
  t.pipe.push([mode, `${mb(idle)} MB`, `${mb(peak)} MB`, `+${mb(peak - idle)} MB (target ≤ +16)`, `${mb(afterKb)} MB`, answered]);

  // 2. A neighbour, quiet, while another guest pipelines without reading, and beside a reading flood.
  const quiet = await latency(c, neighbour, p.port, 300);
  const s2 = await pipelineFlood(c, flooder, p);
  await sleep(300);
  const duringPipe = await latency(c, neighbour, p.port, 300);
  s2.destroy();
  await sleep(500);
  log(`${mode} neighbour: quiet ${JSON.stringify(quiet)} pipe ${JSON.stringify(duringPipe)}`);
  t.neighbour.push([mode, ms(quiet), ms(duringPipe), ratio(duringPipe.p99, quiet.p99), quiet.errors + duringPipe.errors]);

  // The reading flood, for this build and --before, each on a fresh proxy, the order alternating by mode.
  const order = PROXY_MODES.indexOf(mode) % 2 ? [...mains].reverse() : mains;
  for (const [name, main] of order) {
    const q = await c.proxy([], main, mode);
    const r = await besideReadingFlood(c, flooder, neighbour, q);
    log(`${mode} ${name} reading flood: quiet ${JSON.stringify(r.quiet)} flood ${JSON.stringify(r.flood)} ${fmt(r.floodRps, 0)} req/s`);
    t.reading.push([mode, name, ms(r.quiet), ms(r.flood), ratio(r.flood.p99, r.quiet.p99), r.quiet.errors + r.flood.errors, fmt(r.floodRps, 0)]);
    await q.stop();
  }

  // 3. Connect-send-reset loop: agent connections and agent memory.
  const agentIdle = rssKb(c.agent.pid);
  let maxConns = 0;
  let agentPeak = 0;
  let resets = 0;
  const t0 = Date.now();
  while (Date.now() - t0 < 5000) {
    const batch = await Promise.all(Array.from({ length: 16 }, () => c.connect(flooder, p.port)));
    for (const x of batch) x.write(GET(MD).replace('Connection: close\r\n', ''));
    await sleep(2);
    for (const x of batch) x.resetAndDestroy();
    resets += batch.length;
    if (resets % 128 === 0) {
      maxConns = Math.max(maxConns, p.agentConnections());
      agentPeak = Math.max(agentPeak, rssKb(c.agent.pid));
    }
  }
  await sleep(1000);
  const agentAfter = rssKb(c.agent.pid);
  log(`${mode} reset loop: ${resets} resets, max agent conns ${maxConns}, agent rss ${agentIdle} ${agentPeak} ${agentAfter}`);
  t.reset.push([mode, resets, maxConns, `${mb(agentIdle)} MB`, `${mb(agentPeak)} MB`, `${mb(agentAfter)} MB`]);
  await p.stop();

  // 4. Rate limiting: Neutron's defaults, and ours (windows sized for a boot crawl).
  for (const [name, rf] of [
    ['Neutron defaults (10 per 10 s, burst 10 per 10 s)', ['--metadata_rate_limiting-rate_limit_enabled', ...['base_window_duration=10', 'base_query_rate_limit=10', 'burst_window_duration=10', 'burst_query_rate_limit=10'].map((o) => `--metadata_rate_limiting-${o}`)]],
    ['base 80 per 10 s, burst 50 per 2 s (our defaults)', ['--metadata_rate_limiting-rate_limit_enabled']],
  ] as const) {
    const rp = await c.proxy([...rf], undefined, mode);
    const counts: Record<number, number> = {};
    const flood = (async () => {
      const start = Date.now();
      while (Date.now() - start < 5000) {
        const r = await guestRequest(c, flooder, rp.port, GET('/latest/meta-data/instance-id'));
        counts[r.status] = (counts[r.status] ?? 0) + 1;
      }
    })();
    await sleep(200);
    const crawl = existsSync(CLOUDINIT_PYTHON) ? await cloudInitCrawl(crawler, rp.port, CLOUDINIT_PYTHON) : [];
    await flood;
    const c429 = crawl.filter(([, code]) => code === 429).length;
    t.rate.push([mode, name, counts[200] ?? 0, counts[429] ?? 0, crawl.length, c429]);
    log(`${mode} rate limit ${name}: flooder ${JSON.stringify(counts)} crawl ${crawl.length} (${c429} × 429)`);
    await rp.stop();
    await sleep(200);
  }

  // 5. Per-request cost of the proxy (this build and --before), 3 rounds interleaved.
  const cpu: Record<string, number[]> = {};
  for (let round = 0; round < 3; round++) {
    for (const [name, m] of round % 2 ? [...mains].reverse() : mains) {
      const q = await c.proxy([], m, mode);
      await warm(c, neighbour, q);
      const c0 = cpuSeconds(q.pid);
      const r = await wrk(neighbour.ns, `http://${ROUTER_IP}:${q.port}${MD}`, 16, 3);
      const us = ((cpuSeconds(q.pid) - c0) * 1e6) / r.requests;
      (cpu[name] ??= []).push(us);
      log(`${mode} cpu ${name}: ${fmt(us, 1)} µs/request at ${fmt(r.rps, 0)} req/s`);
      await q.stop();
    }
  }
  for (const [n, xs] of Object.entries(cpu)) t.cpu.push([mode, n, fmt(median(xs), 1), xs.map((x) => fmt(x, 1)).join(', ')]);
  if (cpu.before) t.cpuRatio.push(`${mode}: ${fmt(median(cpu['this build']!) / median(cpu.before), 2)}`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (namespaces)');
  const loadStart = load();
  const c = await startHostileChain({ guests: 3 });
  const t: Tables = { pipe: [], neighbour: [], reading: [], reset: [], rate: [], cpu: [], cpuRatio: [] };
  try {
    for (const mode of modes) await runMode(c, mode, t);
  } finally {
    await c.stop();
  }
  const out: string[] = [
    '# Hostile guests: what they cost the node and a neighbour',
    '',
    `Run: ${new Date().toISOString()}, \`node dist/bench/adversarial.js --mode ${flags.mode}${flags.before ? ' --before …' : ''}\`; load average (1, 5, 15 min) at the start ${loadStart}, at the end ${load()} (2 CPUs shared with other work). Whole chain (proxy → agent → quantum-server → nova-api), guests in namespaces, the proxy at its defaults unless said; per-namespace: a proxy process in the router namespace, shared: a listener of a shared proxy (bound in the router namespace by SharedMetadataProxy).`,
    '',
    '## One connection pipelining 50,000 `GET /openstack/latest/meta_data.json`, never reading',
    '',
    table(['mode', 'proxy RSS idle (after a 2,000-request warm-up and the quiet period)', 'peak during 5 s of flood', 'over idle', 'after (guest gone, +6 s)', 'answers written before backpressure held'], t.pipe),
    '',
    '## A neighbour guest (sequential requests, a connection each) while another guest floods',
    '',
    'Quiet, then while the other guest pipelines 50,000 requests on one connection without reading (300 requests each):',
    '',
    table(['mode', 'quiet p50 / p99 ms', 'flooded p50 / p99 ms', 'p99 flooded ÷ quiet (target ≤ 3×)', 'errors'], t.neighbour),
    '',
    `Beside a guest reading every answer as fast as it can (wrk, ${FLOOD_CONNS} keep-alive connections): quiet and flooded phases interleaved, 6 × 50 requests each, so other load on the machine weighs on both alike${flags.before ? '; `before` is the --before build, measured in the same run' : ''}:`,
    '',
    table(['mode', 'proxy', 'quiet p50 / p99 ms', 'flooded p50 / p99 ms', 'p99 flooded ÷ quiet (target ≤ 3×)', 'errors', 'flooder req/s (while running)'], t.reading),
    '',
    'The flood is work the agent and Nova really do (2 cores here for every daemon); what bounds it for the neighbour is the per-source share of the agent connections (`upstream_connections_per_source`, 4 of 64 while another source asks) and round-robin by source of what waits; rate limiting (below) bounds it for the node.',
    '',
    '## Connect, send, reset, in a loop for 5 s (16 at a time)',
    '',
    table(['mode', 'resets', 'agent connections (max sampled; cap upstream_connections = 64)', 'agent RSS before', 'agent RSS peak', 'agent RSS 1 s after'], t.reset),
    '',
    '## Rate limiting: a flooder (connection per request, 5 s) and a cloud-init crawl beside it',
    '',
    table(['mode', 'limits', 'flooder 200', 'flooder 429', 'cloud-init crawl requests', 'crawl 429'], t.rate),
    '',
    "At Neutron's literal defaults the crawl itself is limited: cloud-init's OpenStack reader plus its EC2 crawl make more than 10 requests within a second (haproxy with the same settings refuses the 11th too). See README, \"Hostile guests\".",
    '',
    '## Proxy CPU per request (wrk -c16 -d3s keep-alive through the chain, 3 rounds interleaved, median)',
    '',
    table(['mode', 'proxy', 'µs/request', 'rounds'], t.cpu),
    '',
  ];
  if (t.cpuRatio.length) out.push(`Ratio this build / before: ${t.cpuRatio.join('; ')}.`, '');
  const dir = join(repoRoot, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${flags.out ?? 'adversarial'}.md`);
  writeFileSync(file, `${out.join('\n')}\n`);
  process.stdout.write(`${out.join('\n')}\n`);
  log(`wrote ${file}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
