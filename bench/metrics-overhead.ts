// Benchmark: what Prometheus metrics cost on the metadata hot path. Two whole chains side by side (guest →
// quantum-ns-metadata-proxy → quantum-metadata-agent → quantum-server → nova-api), one without and one with
// `[metrics] listen` in every daemon, measured with wrk through Neutron's REDIRECT, which is pointed at one
// chain's proxy or the other's, alternating off/on per pair; during the "on" runs every daemon's /metrics is
// scraped once per second, as Prometheus would.
//   npm run build && node dist/bench/metrics-overhead.js [--repeats 3] [--duration 3] [--conns 16] [--quick] [--out NAME]
// See bench/README.md. Not part of the test suite.
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir, loadavg, cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { request } from 'undici';
import { BenchRun, writeResults } from './lib/lifecycle.js';
import { run } from './lib/exec.js';
import { createTopology, METADATA_IP, redirectTo, runPrefix, type Topology } from './lib/netns.js';
import { cpuSeconds, memory } from './lib/procstat.js';
import { wrk } from './lib/wrk.js';
import { median, fmt, table } from './lib/stats.js';
import { buildChain, chainReady, cpuPerRequest, hopPids, HOPS, type Chain, type Hop } from './lib/chain.js';
import { logTail } from './lib/procs.js';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { defaultProxyMain } from '../src/linux/agent-common.js';

const here = dirname(fileURLToPath(import.meta.url));
const buildRoot = resolve(here, '..');
const repoRoot = resolve(buildRoot, '..');

/** Ports inside the run's own router namespace (nothing else listens there). */
const PORTS = { off: { ours: 9697, haproxy: 9698 }, on: { ours: 9699, haproxy: 9700 } };
const DAEMONS = HOPS;
type Daemon = Hop;
type Mode = 'off' | 'on';

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    repeats: { type: 'string' },
    duration: { type: 'string' },
    conns: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  process.stdout.write('usage: node dist/bench/metrics-overhead.js [--repeats N] [--duration S] [--conns 16[,64]] [--quick] [--out NAME]\n');
  process.exit(0);
}
const quick = flags.quick!;
const cfg = {
  quick,
  /** Off/on pairs. */
  repeats: Math.max(1, Number(flags.repeats ?? (quick ? 2 : 3))),
  duration: Number(flags.duration ?? (quick ? 1 : 3)),
  /** Seconds of wrk per path and chain before the first pair (the first seconds run cold JIT code). */
  warmup: quick ? 1 : 3,
  conns: (flags.conns ?? '16').split(',').map(Number),
  paths: quick ? ['/latest/meta-data/instance-id'] : ['/latest/meta-data/instance-id', '/openstack/latest/meta_data.json'],
  scrapeIntervalMs: 1000,
  /** Seconds of each idle window (no guest load) for the CPU of a scrape alone. */
  idleWindow: quick ? 3 : 10,
  out: flags.out ?? (quick ? 'metrics-overhead-quick' : 'metrics-overhead'),
};

function say(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface RunRecord {
  mode: Mode;
  pair: number;
  path: string;
  conns: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  /** utime+stime of each daemon's process tree during the run ÷ requests, µs. */
  cpuUsPerReq: Record<Daemon, number>;
  /** Scrapes made during this run (0 for "off"). */
  scrapes: number;
}

interface ScrapeStat {
  port: number;
  scrapes: number;
  failures: number;
  lastBytes: number;
  /** Sample lines (not comments) in the last answer. */
  lastSeries: number;
  totalMs: number;
  lastError?: string;
  /** CPU ms of the daemon's tree per scrape, with no guest load (idle window with scrapes minus one without). */
  cpuMsPerScrape?: number;
}

const result = {
  meta: {} as Record<string, unknown>,
  config: cfg,
  notes: [] as string[],
  sanity: [] as { target: string; ok: boolean; detail: string }[],
  runs: [] as RunRecord[],
  scrape: {} as Record<string, ScrapeStat>,
  /** VmRSS (MB) of each daemon's tree at the end, per chain. */
  rssMb: {} as Record<Mode, Partial<Record<Daemon, number>>>,
};

let topo: Topology | undefined;
let prefix = '';
let tmp = '';
let scraper: Scraper | undefined;
const chains = {} as Partial<Record<Mode, Chain>>;

const runner = new BenchRun(say, () => ({ prefix, tmp }));
runner.onCleanup(() => scraper?.stop());

/** One GET /metrics; throws on a connection error or a non-200. */
async function scrapeOnce(port: number): Promise<{ bytes: number; series: number; body: string }> {
  const res = await request(`http://127.0.0.1:${port}/metrics`, { headersTimeout: 5000, bodyTimeout: 5000 });
  const body = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  return { bytes: Buffer.byteLength(body), series: body.split('\n').filter((l) => l && !l.startsWith('#')).length, body };
}

/** Prometheus's part: every target scraped every interval while running (one scrape at a time per target). */
class Scraper {
  private timer: NodeJS.Timeout | undefined;
  private busy = new Set<string>();
  count = 0;
  constructor(readonly stats: Record<string, ScrapeStat>) {}
  start(): void {
    if (this.timer) return;
    this.count = 0;
    this.tick();
    this.timer = setInterval(() => this.tick(), cfg.scrapeIntervalMs);
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
  private tick(): void {
    for (const [name, s] of Object.entries(this.stats)) {
      if (this.busy.has(name)) continue;
      this.busy.add(name);
      this.count++;
      const t0 = performance.now();
      scrapeOnce(s.port).then(
        (r) => {
          s.scrapes++;
          s.lastBytes = r.bytes;
          s.lastSeries = r.series;
          s.totalMs += performance.now() - t0;
        },
        (e: unknown) => {
          s.failures++;
          s.lastError = (e as Error).message;
        },
      ).finally(() => this.busy.delete(name));
    }
  }
}

async function measure(c: Chain, mode: Mode, path: string, conns: number, pair: number): Promise<RunRecord> {
  await redirectTo(topo!, PORTS[mode].ours);
  const { r, cpuUsPerReq } = await cpuPerRequest(c, async () => {
    if (mode === 'on') scraper!.start();
    try {
      return await wrk(topo!.guest, `http://${METADATA_IP}${path}`, conns, cfg.duration);
    } finally {
      scraper!.stop();
    }
  });
  return {
    mode,
    pair,
    path,
    conns,
    rps: r.rps,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    requests: r.requests,
    errors: r.non2xx + r.socketErrors,
    cpuUsPerReq,
    scrapes: mode === 'on' ? scraper!.count : 0,
  };
}

async function curlOnce(ns: string, url: string): Promise<{ code: string; body: string }> {
  const { stdout } = await run(['curl', '-s', '--max-time', '10', '-w', '\n%{http_code}', url], { ns, allowFail: true });
  const i = stdout.lastIndexOf('\n');
  return { body: stdout.slice(0, i), code: stdout.slice(i + 1) };
}

/** meta_data.json through this chain's proxy must be the chain's own server. */
async function chainSanity(c: Chain, mode: Mode): Promise<void> {
  await redirectTo(topo!, PORTS[mode].ours);
  const r = await curlOnce(topo!.guest, `http://${METADATA_IP}/openstack/latest/meta_data.json`);
  let uuid = '';
  try {
    uuid = (JSON.parse(r.body) as { uuid?: string }).uuid ?? '';
  } catch {
    /* not JSON: reported below */
  }
  const ok = r.code === '200' && uuid === c.serverId;
  result.sanity.push({ target: `chain-${mode}`, ok, detail: `status ${r.code}, meta_data.json uuid "${uuid}" (server ${c.serverId})` });
  if (!ok) throw new Error(`sanity check through chain-${mode} failed: ${JSON.stringify(result.sanity.at(-1))}`);
}

/** Sum of a counter family's samples in a scrape (any labels). */
function counterSum(body: string, name: string): number {
  let s = 0;
  for (const l of body.split('\n')) if (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) s += Number(l.slice(l.lastIndexOf(' ') + 1));
  return s;
}

/** Which daemons of the "on" chain really serve /metrics; an agent without the option only warns about it. */
async function probeMetrics(c: Chain): Promise<Record<string, ScrapeStat>> {
  const stats: Record<string, ScrapeStat> = {};
  for (const [daemon, port] of Object.entries(c.metricsPorts)) {
    try {
      const r = await scrapeOnce(port);
      stats[daemon] = { port, scrapes: 0, failures: 0, lastBytes: r.bytes, lastSeries: r.series, totalMs: 0 };
    } catch (e) {
      const proc = c.procs.find((p) => p.name === daemon);
      let warned = '';
      try {
        warned = proc ? readFileSync(proc.logPath, 'utf8').split('\n').find((l) => /unknown option \[metrics\]/.test(l)) ?? '' : '';
      } catch {
        /* no log */
      }
      result.notes.push(
        `${daemon}: no metrics listener on 127.0.0.1:${port} (${(e as Error).message})${warned ? `; its log says: ${warned.trim().slice(0, 200)}` : ''}: not scraped, its metrics are not part of this measurement`,
      );
    }
  }
  return stats;
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
    wrk: v('wrk', ['-v']),
    commit: v('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
    srcUncommitted: v('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src']) !== '',
  };
}

async function main(): Promise<void> {
  result.meta = meta();
  if (process.getuid?.() !== 0) throw new Error('the benchmark builds namespaces and iptables rules: run it as root');
  const ready = chainReady(buildRoot);
  if (ready !== true) throw new Error(`the chain is ${ready}`);
  prefix = runPrefix();
  tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  say(`run ${prefix}, tmp ${tmp}, ${JSON.stringify(cfg)}`);
  if (cfg.repeats < 3) result.notes.push(`only ${cfg.repeats} pair(s): medians of fewer than 3 pairs are not robust on a shared machine`);
  topo = await createTopology(prefix, PORTS.off.ours);
  for (const mode of ['off', 'on'] as const) {
    say(`building chain "${mode}" (quantum-server, nova-api, metadata agent${mode === 'on' ? ', each with [metrics] listen' : ''}; network, subnet, router, server via the APIs)`);
    const dir = join(tmp, mode);
    mkdirSync(dir, { recursive: true });
    chains[mode] = await buildChain({
      buildRoot,
      tmp: dir,
      topo,
      proxyMain: defaultProxyMain,
      nodeFlags: [...PROXY_NODE_FLAGS],
      ports: PORTS[mode],
      stormIps: [],
      log: say,
      metrics: mode === 'on',
    });
  }
  await new Promise((r) => setTimeout(r, 1000));
  for (const mode of ['off', 'on'] as const) await chainSanity(chains[mode]!, mode);
  result.scrape = await probeMetrics(chains.on!);
  if (Object.keys(result.scrape).length === 0) throw new Error('no daemon of the "on" chain serves /metrics');
  const sc = new Scraper(result.scrape);
  scraper = sc;
  say(`sanity ok; scraping ${Object.entries(result.scrape).map(([d, s]) => `${d}:${s.port}`).join(', ')}`);

  // What a scrape costs by itself: the "on" chain idle without, then with the scraper; the difference ÷ scrapes.
  {
    const p = hopPids(chains.on!);
    const names = Object.keys(result.scrape);
    const pidFor = (d: string) => p[d as Daemon];
    const window = async (scrape: boolean) => {
      const c0 = names.map((d) => cpuSeconds(pidFor(d)));
      if (scrape) sc.start();
      await new Promise((r) => setTimeout(r, cfg.idleWindow * 1000));
      sc.stop();
      const n = scrape ? sc.count : 0;
      return { cpu: names.map((d, k) => cpuSeconds(pidFor(d)) - c0[k]!), n };
    };
    const quiet = await window(false);
    const busy = await window(true);
    await new Promise((r) => setTimeout(r, 300));
    names.forEach((d, k) => {
      // count covers all targets; each target got count ÷ targets scrapes.
      const per = busy.n / names.length;
      result.scrape[d]!.cpuMsPerScrape = per ? ((busy.cpu[k]! - quiet.cpu[k]!) * 1000) / per : NaN;
    });
    say(`CPU per scrape (idle chain): ${names.map((d) => `${d} ${fmt(result.scrape[d]!.cpuMsPerScrape, 2)} ms`).join(', ')}`);
  }

  // Warm both chains on every path (JIT, the agent's and nova's caches) before the first pair.
  for (const mode of ['off', 'on'] as const) {
    await redirectTo(topo, PORTS[mode].ours);
    for (const path of cfg.paths) await wrk(topo.guest, `http://${METADATA_IP}${path}`, 16, cfg.warmup).catch(() => undefined);
  }
  // After the warm-up, so the counter's delta covers the measured runs only.
  const novaCount = async () => (result.scrape['nova-api'] ? counterSum((await scrapeOnce(result.scrape['nova-api'].port)).body, 'nova_api_metadata_requests_total') : NaN);
  const nova0 = await novaCount();
  const plan = cfg.paths.flatMap((path) => cfg.conns.map((c) => ({ path, c })));
  const total = cfg.repeats * plan.length * 2;
  let i = 0;
  for (let pair = 0; pair < cfg.repeats; pair++) {
    for (const { path, c } of plan) {
      // off→on, then on→off, ...: a steady drift (warm-up, other work on the machine) then favours neither.
      for (const mode of pair % 2 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
        i++;
        const r = await measure(chains[mode]!, mode, path, c, pair);
        result.runs.push(r);
        const all = DAEMONS.reduce((a, d) => a + r.cpuUsPerReq[d], 0);
        say(`${i}/${total} ${mode} ${path} c${c}: ${fmt(r.rps, 0)} req/s p99 ${fmt(r.p99Ms, 2)} ms, CPU µs/req ${DAEMONS.map((d) => `${d} ${fmt(r.cpuUsPerReq[d])}`).join(', ')}, all ${fmt(all)}${r.errors ? ` ERRORS ${r.errors}` : ''}`);
      }
    }
  }

  // The metrics really counted the load (nova-api's metadata counter moved by about the requests the "on" chain served).
  if (result.scrape['nova-api']) {
    const nova1 = await novaCount();
    const onReqs = result.runs.filter((r) => r.mode === 'on').reduce((a, r) => a + r.requests, 0);
    result.sanity.push({
      target: 'metrics',
      // Every answer through the agent is one request to nova (the agent caches port lookups, not answers).
      ok: nova1 - nova0 >= onReqs,
      detail: `nova_api_metadata_requests_total moved by ${nova1 - nova0} during the runs, wrk counted ${onReqs} answers through the "on" chain`,
    });
  }
  for (const mode of ['off', 'on'] as const) {
    const p = hopPids(chains[mode]!);
    result.rssMb[mode] = Object.fromEntries(DAEMONS.map((d) => [d, memory(p[d]).rssKb / 1024]));
  }
  for (const [d, s] of Object.entries(result.scrape)) if (s.failures) result.notes.push(`${d}: ${s.failures} failed scrapes (last: ${s.lastError})`);
  (result.meta as { loadavgEnd?: number[] }).loadavgEnd = loadavg();
  for (const mode of ['off', 'on'] as const) await chains[mode]!.stop();
}

// ---------- report ----------

type Field = 'rps' | 'p50Ms' | 'p99Ms' | Daemon | 'all';
const val = (r: RunRecord, f: Field): number =>
  f === 'rps' || f === 'p50Ms' || f === 'p99Ms' ? r[f] : f === 'all' ? DAEMONS.reduce((a, d) => a + r.cpuUsPerReq[d], 0) : r.cpuUsPerReq[f];
const FIELDS: Field[] = ['rps', 'p50Ms', 'p99Ms', ...DAEMONS, 'all'];

function summary() {
  return cfg.paths.flatMap((path) =>
    cfg.conns.flatMap((conns) =>
      (['off', 'on'] as const).map((mode) => {
        const rs = result.runs.filter((r) => r.mode === mode && r.path === path && r.conns === conns);
        return { mode, path, conns, runs: rs.length, errors: rs.reduce((a, r) => a + r.errors, 0), ...Object.fromEntries(FIELDS.map((f) => [f, median(rs.map((r) => val(r, f)))])) } as {
          mode: Mode;
          path: string;
          conns: number;
          runs: number;
          errors: number;
        } & Record<Field, number>;
      }),
    ),
  );
}

/** Per pair on ÷ off (the two runs seconds apart), then the median, min and max over the pairs. */
function ratios() {
  return cfg.paths.flatMap((path) =>
    cfg.conns.map((conns) => {
      const per = (f: Field) => {
        const xs: number[] = [];
        const ds: number[] = [];
        for (let pair = 0; pair < cfg.repeats; pair++) {
          const off = result.runs.find((r) => r.mode === 'off' && r.pair === pair && r.path === path && r.conns === conns);
          const on = result.runs.find((r) => r.mode === 'on' && r.pair === pair && r.path === path && r.conns === conns);
          if (off && on) {
            xs.push(val(on, f) / val(off, f));
            ds.push(val(on, f) - val(off, f));
          }
        }
        const v = xs.filter(Number.isFinite);
        // The difference too: quantum-server's CPU per request is about 0 without metrics (the agent caches
        // its lookups), so for it only on − off (the scrapes, spread over the requests) means something.
        return { median: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN, delta: median(ds) };
      };
      return { path, conns, ...Object.fromEntries(FIELDS.map((f) => [f, per(f)])) } as { path: string; conns: number } & Record<Field, { median: number; min: number; max: number; delta: number }>;
    }),
  );
}

function markdown(sum: ReturnType<typeof summary>, rat: ReturnType<typeof ratios>): string {
  const m = result.meta as { date: string; host: { cpus: number; model?: string; kernel: string; loadavgStart: number[] }; loadavgEnd?: number[]; node: string; wrk: string; commit: string; srcUncommitted: boolean };
  const la = (x?: number[]) => (x ?? []).map((v) => v.toFixed(2)).join(' ');
  const peak = Math.max(m.host.loadavgStart[0] ?? 0, m.loadavgEnd?.[0] ?? 0);
  const loaded = peak >= m.host.cpus * 0.5;
  const L: string[] = [];
  L.push(`# Metrics overhead on the metadata hot path (${m.date})`, '');
  L.push(
    `Machine: ${m.host.cpus} CPUs (${m.host.model ?? '?'}), kernel ${m.host.kernel}, node ${m.node}, ${m.wrk.replace(/ Copyright.*/, '')}; commit ${m.commit}${m.srcUncommitted ? ' (+ uncommitted changes in src/)' : ''}. ` +
      `Load average (1/5/15 min) at start ${la(m.host.loadavgStart)}, at end ${la(m.loadavgEnd)}` +
      (loaded ? `: **a loaded ${m.host.cpus}-core machine** (other helpers' builds and tests were running), so single runs swing; the paired ratios are the figure to read.` : '.'),
  );
  L.push(
    '',
    `Two whole chains side by side (guest → quantum-ns-metadata-proxy → quantum-metadata-agent → quantum-server → nova-api), "off" without and "on" with \`[metrics] listen = 127.0.0.1:<port>\` in quantum.conf, nova.conf and metadata_agent.ini; ` +
      `Neutron's REDIRECT is pointed at one chain's proxy or the other's. ${cfg.repeats} off/on pairs × ${cfg.duration} s per run, wrk -t1 -c${cfg.conns.join('/')} from the guest namespace, keep-alive; ` +
      `during each "on" run every daemon that serves /metrics is scraped once per second (${Object.keys(result.scrape).join(', ') || 'none'}). ` +
      `CPU is utime+stime of each daemon's process tree from /proc ÷ requests. Ratios are on ÷ off per pair (runs seconds apart), median over the pairs, [min–max] beside it. ${cfg.quick ? '**Quick run.**' : ''}`,
  );
  if (result.notes.length) L.push('', ...result.notes.map((n) => `- Note: ${n}`));
  L.push(
    '',
    '## Ratios on ÷ off',
    '',
    table(
      ['path', 'conns', 'req/s', 'p50', 'p99', ...DAEMONS.map((d) => `CPU/req ${d}`), 'CPU/req all hops'],
      rat.map((r) => [
        `\`${r.path}\``,
        r.conns,
        ...(['rps', 'p50Ms', 'p99Ms', ...DAEMONS, 'all'] as Field[]).map((f) => (Number.isFinite(r[f].median) ? `**${fmt(r[f].median, 3)}** [${fmt(r[f].min, 2)}–${fmt(r[f].max, 2)}]` : '–')),
      ]),
    ),
  );
  L.push(
    '',
    '## CPU µs per request, on − off (median of the pairs)',
    '',
    table(
      ['path', 'conns', ...DAEMONS, 'all hops'],
      rat.map((r) => [`\`${r.path}\``, r.conns, ...([...DAEMONS, 'all'] as Field[]).map((f) => `${r[f].delta >= 0 ? '+' : ''}${fmt(r[f].delta)}`)]),
    ),
  );
  L.push(
    '',
    '## Medians',
    '',
    table(
      ['metrics', 'path', 'conns', 'req/s', 'p50 ms', 'p99 ms', ...DAEMONS.map((d) => `${d} CPU µs/req`), 'all hops CPU µs/req', 'errors'],
      sum.map((s) => [s.mode, `\`${s.path}\``, s.conns, fmt(s.rps, 0), fmt(s.p50Ms, 2), fmt(s.p99Ms, 2), ...DAEMONS.map((d) => fmt(s[d])), fmt(s.all), s.errors]),
    ),
  );
  L.push(
    '',
    '## Scrapes (the "on" chain)',
    '',
    table(
      ['daemon', 'scrapes', 'failures', 'mean wall ms per scrape', 'CPU ms per scrape (idle chain)', 'bytes (last)', 'samples (last)'],
      Object.entries(result.scrape).map(([d, s]) => [d, s.scrapes, s.failures, fmt(s.scrapes ? s.totalMs / s.scrapes : NaN, 2), fmt(s.cpuMsPerScrape, 2), s.lastBytes, s.lastSeries]),
    ),
  );
  if (result.rssMb.off && result.rssMb.on)
    L.push('', '## RSS at the end (MB, process tree)', '', table(['daemon', 'off', 'on'], DAEMONS.map((d) => [d, fmt(result.rssMb.off[d]), fmt(result.rssMb.on[d])])));
  L.push('', '## Sanity', '', ...result.sanity.map((s) => `- ${s.target}: ${s.ok ? 'ok' : 'FAILED'}: ${s.detail}`));
  return L.join('\n') + '\n';
}

function writeReport(): void {
  const sum = summary();
  const rat = ratios();
  writeResults(repoRoot, cfg.out, { ...result, summary: sum, ratios: rat }, markdown(sum, rat), say);
}

await runner.finish(main, {
  notes: result.notes,
  report: writeReport,
  onFailure: () => {
    for (const c of Object.values(chains)) for (const p of c.procs) say(`${p.name} log:\n${logTail(p)}`);
  },
  beforeReport: () => {
    (result.meta as { loadavgEnd?: number[] }).loadavgEnd ??= loadavg();
  },
});
