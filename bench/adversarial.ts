// What a hostile guest costs the node and its neighbours, through the real chain (proxy → metadata agent →
// quantum-server → nova-api) with guests in namespaces (test/helpers/hostile.ts, the topology of
// test/adversarial.test.ts). Not a test; about 2 minutes. As root:
//   node dist/bench/adversarial.js [--before PATH/TO/other/dist/proxy/ns-proxy/main.js] [--out NAME]
// --before also measures another build's proxy (e.g. the commit before these limits) for the per-request
// CPU figure, in the same run. Results: bench/results/<NAME or adversarial>.md.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CLOUDINIT_PYTHON } from '../test/helpers/cloudinit.js';
import { AnswerReader, GET, ROUTER_IP, agentConnections, cloudInitCrawl, guestRequest, percentile, rssKb, startHostileChain, type HostileChain, type HostileGuest, type RunningProxyProc } from '../test/helpers/hostile.js';
import { cpuSeconds } from './lib/procstat.js';
import { fmt, table } from './lib/stats.js';
import { wrk } from './lib/wrk.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const { values: flags } = parseArgs({ options: { before: { type: 'string' }, out: { type: 'string' } } });
const MD = '/openstack/latest/meta_data.json';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mb = (kb: number) => fmt(kb / 1024, 1);
const log = (m: string) => process.stderr.write(`[adversarial] ${m}\n`);

interface Lat {
  n: number;
  p50: number;
  p99: number;
  errors: number;
}

/** `n` sequential GETs from the neighbour, a new connection each (as cloud-init makes them). */
async function neighbourLatency(c: HostileChain, g: HostileGuest, port: number, n: number): Promise<Lat> {
  const ms: number[] = [];
  let errors = 0;
  for (let i = 0; i < n; i++) {
    const r = await guestRequest(c, g, port, GET(MD), 10_000);
    if (r.status !== 200) errors++;
    ms.push(r.ms);
  }
  ms.sort((a, b) => a - b);
  return { n, p50: percentile(ms, 50), p99: percentile(ms, 99), errors };
}

async function warm(c: HostileChain, g: HostileGuest, p: RunningProxyProc): Promise<void> {
  const w = await c.connect(g, p.port);
  const r = new AnswerReader(w);
  w.write(Buffer.concat(Array.from({ length: 2000 }, () => Buffer.from(`GET ${MD} HTTP/1.1\r\nHost: x\r\n\r\n`))));
  await r.wait(2000, 30_000);
  w.destroy();
}

/** One connection pipelining 50,000 GETs, never reading: the proxy's RSS idle, at peak during 5 s, after. */
async function pipelineFlood(c: HostileChain, g: HostileGuest, p: RunningProxyProc) {
  const s = await c.connect(g, p.port);
  s.pause();
  const one = Buffer.from(`GET ${MD} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n`);
  s.write(Buffer.concat(Array.from({ length: 50_000 }, () => one)));
  return s;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (namespaces)');
  const c = await startHostileChain({ guests: 3 });
  const [flooder, neighbour, crawler] = c.guests as [HostileGuest, HostileGuest, HostileGuest];
  const out: string[] = ['# Hostile guests: what they cost the node and a neighbour', '', `Run: ${new Date().toISOString()}, \`node dist/bench/adversarial.js${flags.before ? ' --before …' : ''}\`. Whole chain (proxy → agent → quantum-server → nova-api), guests in namespaces, the proxy at its defaults unless said.`, ''];
  try {
    const p = await c.proxy([]);
    // 1. Pipelining without reading.
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
    log(`pipelining: idle ${idle} peak ${peak} after ${afterKb} answered ${answered}`);
    out.push('## One connection pipelining 50,000 `GET /openstack/latest/meta_data.json`, never reading', '');
    out.push(table(['proxy RSS idle (after a 2,000-request warm-up and the quiet period)', 'peak during 5 s of flood', 'over idle', 'after (guest gone, +6 s)', 'answers written before backpressure held'], [[`${mb(idle)} MB`, `${mb(peak)} MB`, `+${mb(peak - idle)} MB (target ≤ +16)`, `${mb(afterKb)} MB`, answered]]), '');

    // 2. A neighbour's latency, quiet and while another guest floods.
    const quiet = await neighbourLatency(c, neighbour, p.port, 300);
    const s2 = await pipelineFlood(c, flooder, p);
    await sleep(300);
    const duringPipe = await neighbourLatency(c, neighbour, p.port, 300);
    s2.destroy();
    await sleep(500);
    const wrkFlood = wrk(flooder.ns, `http://${ROUTER_IP}:${p.port}${MD}`, 64, 8);
    await sleep(500);
    const duringWrk = await neighbourLatency(c, neighbour, p.port, 300);
    const wf = await wrkFlood;
    log(`neighbour: quiet ${JSON.stringify(quiet)} pipe ${JSON.stringify(duringPipe)} wrk ${JSON.stringify(duringWrk)} flood ${wf.rps} rps`);
    const ratio = (l: Lat) => `${fmt(l.p99 / quiet.p99, 2)}×`;
    out.push('## A neighbour guest (300 sequential requests, a connection each) while another guest floods', '');
    out.push(table(['neighbour', 'p50 ms', 'p99 ms', 'p99 vs quiet (target ≤ 3×)', 'errors'], [
      ['quiet', fmt(quiet.p50, 1), fmt(quiet.p99, 1), '1×', quiet.errors],
      ['flooder pipelines 50,000 without reading', fmt(duringPipe.p50, 1), fmt(duringPipe.p99, 1), ratio(duringPipe), duringPipe.errors],
      [`flooder reads as fast as it can (wrk, 64 connections: ${fmt(wf.rps, 0)} req/s, ${wf.non2xx} non-2xx)`, fmt(duringWrk.p50, 1), fmt(duringWrk.p99, 1), ratio(duringWrk), duringWrk.errors],
    ]), '');
    out.push('The reading flood is work the agent and Nova really do (2 cores here for every daemon); rate limiting is what bounds it (below).', '');

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
        maxConns = Math.max(maxConns, agentConnections(p.pid));
        agentPeak = Math.max(agentPeak, rssKb(c.agent.pid));
      }
    }
    await sleep(1000);
    const agentAfter = rssKb(c.agent.pid);
    log(`reset loop: ${resets} resets, max agent conns ${maxConns}, agent rss ${agentIdle} ${agentPeak} ${agentAfter}`);
    out.push('## Connect, send, reset, in a loop for 5 s (16 at a time)', '');
    out.push(table(['resets', 'agent connections (max sampled; cap upstream_connections = 64)', 'agent RSS before', 'agent RSS peak', 'agent RSS 1 s after'], [[resets, maxConns, `${mb(agentIdle)} MB`, `${mb(agentPeak)} MB`, `${mb(agentAfter)} MB`]]), '');
    await p.stop();

    // 4. Rate limiting: Neutron's defaults, and windows sized for a boot crawl.
    out.push('## Rate limiting: a flooder (connection per request, 5 s) and a cloud-init crawl beside it', '');
    const rows: (string | number)[][] = [];
    for (const [name, rf] of [
      ['Neutron defaults (10 per 10 s, burst 10 per 10 s)', ['--metadata_rate_limiting-rate_limit_enabled']],
      ['base 80 per 10 s, burst 50 per 2 s', ['--metadata_rate_limiting-rate_limit_enabled', '--metadata_rate_limiting-base_query_rate_limit=80', '--metadata_rate_limiting-burst_window_duration=2', '--metadata_rate_limiting-burst_query_rate_limit=50']],
    ] as const) {
      const rp = await c.proxy([...rf]);
      const counts: Record<number, number> = {};
      const flood = (async () => {
        const t = Date.now();
        while (Date.now() - t < 5000) {
          const r = await guestRequest(c, flooder, rp.port, GET('/latest/meta-data/instance-id'));
          counts[r.status] = (counts[r.status] ?? 0) + 1;
        }
      })();
      await sleep(200);
      const crawl = existsSync(CLOUDINIT_PYTHON) ? await cloudInitCrawl(crawler, rp.port, CLOUDINIT_PYTHON) : [];
      await flood;
      const c429 = crawl.filter(([, code]) => code === 429).length;
      rows.push([name, counts[200] ?? 0, counts[429] ?? 0, crawl.length, c429]);
      log(`rate limit ${name}: flooder ${JSON.stringify(counts)} crawl ${crawl.length} (${c429} × 429)`);
      await rp.stop();
      await sleep(200);
    }
    out.push(table(['limits', 'flooder 200', 'flooder 429', 'cloud-init crawl requests', 'crawl 429'], rows), '');
    out.push("At Neutron's literal defaults the crawl itself is limited: cloud-init's OpenStack reader plus its EC2 crawl make more than 10 requests within a second (haproxy with the same settings refuses the 11th too). See README, \"Hostile guests\".", '');

    // 5. Per-request cost of the proxy, before and after, in one run.
    const mains: [string, string][] = [['this build', join(repoRoot, 'dist/proxy/ns-proxy/main.js')]];
    if (flags.before) mains.push(['before', resolve(flags.before)]);
    const cpu: Record<string, number[]> = {};
    for (let round = 0; round < 3; round++) {
      for (const [name, m] of round % 2 ? [...mains].reverse() : mains) {
        const q = await c.proxy([], m);
        await warm(c, neighbour, q);
        const c0 = cpuSeconds(q.pid);
        const r = await wrk(neighbour.ns, `http://${ROUTER_IP}:${q.port}${MD}`, 16, 3);
        const us = ((cpuSeconds(q.pid) - c0) * 1e6) / r.requests;
        (cpu[name] ??= []).push(us);
        log(`cpu ${name}: ${fmt(us, 1)} µs/request at ${fmt(r.rps, 0)} req/s`);
        await q.stop();
      }
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    out.push('## Proxy CPU per request (wrk -c16 -d3s keep-alive through the chain, 3 rounds interleaved, median)', '');
    const crow = Object.entries(cpu).map(([n, xs]) => [n, fmt(med(xs), 1), xs.map((x) => fmt(x, 1)).join(', ')]);
    out.push(table(['proxy', 'µs/request', 'rounds'], crow), '');
    if (cpu.before) out.push(`Ratio this build / before: ${fmt(med(cpu['this build']!) / med(cpu.before), 2)}.`, '');
  } finally {
    await c.stop();
  }
  const dir = join(repoRoot, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${flags.out ?? 'adversarial'}.md`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${out.join('\n')}\n`);
  process.stdout.write(`${out.join('\n')}\n`);
  log(`wrote ${file}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
