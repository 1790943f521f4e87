// What the proxy's garbage collector does under load, on a fresh process and after 10 s without a request (the
// proxy's quiet-period compaction, two full GCs after any burst of 1000 requests or more, and V8's memory reducer
// have run by then, as on any node between boot storms): young GCs, what
// each promotes to the old generation, full GCs, the time in both, and the proxy's CPU per request. V8's own
// counters (--trace-gc-nvp, read from the proxy's log), so the GC figures hold on a busy machine too; the CPU
// column does not. One proxy in a namespace of its own with the minimal upstream, loopback only; keep-alive
// guests and a connection per request (cloud-init's way); a fresh proxy for each. Not a test; about 25 s per
// build and pattern. As root:
//   node dist/bench/proxy-gc.js [--compare <another build's dist/proxy/ns-proxy/main.js> [--compare-label NAME]]
//     [--seconds 4] [--conns 16] [--out NAME]
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { defaultProxyMain } from '../src/linux/agent-common.js';
import { run } from './lib/exec.js';
import { writeResults } from './lib/lifecycle.js';
import { runPrefix } from './lib/netns.js';
import { startOurProxy, startUpstream, type Proc } from './lib/procs.js';
import { cpuSecondsPrecise } from './lib/procstat.js';
import { fmt, median, table } from './lib/stats.js';
import { wrk } from './lib/wrk.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const { values: flags } = parseArgs({
  options: { compare: { type: 'string' }, 'compare-label': { type: 'string' }, seconds: { type: 'string' }, conns: { type: 'string' }, out: { type: 'string' } },
});
const SECONDS = Number(flags.seconds ?? 4);
const CONNS = Number(flags.conns ?? 16);
const PORT = 9697;
const ROUTER = '11111111-2222-4333-8444-555555555555';
/** Past the proxy's quiet period (5 s, then its compaction) and V8's memory reducer (8 s after the allocation stops). */
const QUIET_WAIT_MS = 10_000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const builds: { label: string; main: string }[] = [{ label: 'this build', main: defaultProxyMain }];
if (flags.compare) builds.push({ label: flags['compare-label'] ?? 'compared build', main: resolve(flags.compare) });
const patterns = [
  { label: 'keep-alive', headers: {} as Record<string, string> },
  { label: 'a connection per request', headers: { Connection: 'close' } },
];

interface GcLine {
  kind: 'young' | 'full';
  pauseMs: number;
  promoted: number;
}

/** The --trace-gc-nvp lines written to the proxy's log from byte `from` on. */
function gcLines(log: string, from: number): GcLine[] {
  const out: GcLine[] = [];
  for (const line of readFileSync(log).subarray(from).toString('latin1').split('\n')) {
    const kind = / gc=(s|mc) /.exec(line)?.[1];
    if (!kind) continue;
    const num = (k: string) => Number(new RegExp(`\\b${k}=([\\d.]+)`).exec(line)?.[1] ?? 0);
    out.push({ kind: kind === 's' ? 'young' : 'full', pauseMs: num('pause'), promoted: num('promoted') });
  }
  return out;
}

interface Row {
  build: string;
  pattern: string;
  phase: string;
  requests: number;
  rps: number;
  errors: number;
  youngPer10k: number;
  promotedKbMedian: number;
  promotedKbPerRequest: number;
  fullPer100k: number;
  gcMsPer10k: number;
  cpuUsPerRequest: number;
}

async function phase(proxy: Proc, ns: string, url: string, headers: Record<string, string>): Promise<Omit<Row, 'build' | 'pattern' | 'phase'>> {
  const from = statSync(proxy.logPath).size;
  const c0 = cpuSecondsPrecise(proxy.pid);
  const r = await wrk(ns, url, CONNS, SECONDS, headers);
  const cpu = cpuSecondsPrecise(proxy.pid) - c0;
  await sleep(200); // the log is written by the proxy's stdout stream
  const gc = gcLines(proxy.logPath, from);
  const young = gc.filter((g) => g.kind === 'young');
  const full = gc.filter((g) => g.kind === 'full');
  const n = Math.max(1, r.requests);
  return {
    requests: r.requests,
    rps: r.rps,
    errors: r.non2xx + r.socketErrors,
    youngPer10k: (young.length * 1e4) / n,
    promotedKbMedian: young.length ? median(young.map((g) => g.promoted / 1024)) : 0,
    promotedKbPerRequest: young.reduce((a, g) => a + g.promoted, 0) / 1024 / n,
    fullPer100k: (full.length * 1e5) / n,
    gcMsPer10k: (gc.reduce((a, g) => a + g.pauseMs, 0) * 1e4) / n,
    cpuUsPerRequest: (cpu * 1e6) / n,
  };
}

async function main(): Promise<void> {
  const prefix = runPrefix();
  const ns = `${prefix}-gc`;
  const tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const procs: Proc[] = [];
  const rows: Row[] = [];
  const commit = execFileSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']).toString().trim();
  await run(['ip', 'netns', 'add', ns]);
  try {
    await run(['ip', 'link', 'set', 'lo', 'up'], { ns });
    const upstream = await startUpstream(resolve(here, 'lib/upstream.js'), ns, tmp);
    procs.push(upstream);
    const url = `http://127.0.0.1:${PORT}/latest/meta-data/instance-id`;
    let k = 0;
    for (const p of patterns) {
      for (const b of builds) {
        const proxy = await startOurProxy(`proxy-${k++}`, b.main, ns, tmp, { routerId: ROUTER, port: PORT, socket: upstream.socket, nodeArgs: [...PROXY_NODE_FLAGS, '--trace-gc-nvp'] });
        try {
          await sleep(500);
          rows.push({ build: b.label, pattern: p.label, phase: 'fresh process', ...(await phase(proxy, ns, url, p.headers)) });
          await sleep(QUIET_WAIT_MS);
          rows.push({ build: b.label, pattern: p.label, phase: 'after the quiet period', ...(await phase(proxy, ns, url, p.headers)) });
          process.stdout.write(`${p.label}, ${b.label}: ${JSON.stringify(rows.slice(-2))}\n`);
        } finally {
          await proxy.stop();
        }
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await run(['ip', 'netns', 'delete', ns], { allowFail: true });
    rmSync(tmp, { recursive: true, force: true });
  }
  const md = [
    `# The proxy's garbage collection under load (${new Date().toISOString()})`,
    '',
    `Commit ${commit}, node ${process.version}. Proxies run as the agents run them (\`${PROXY_NODE_FLAGS.join(' ')}\`, plus --trace-gc-nvp for these counters), one at a time, each fresh: ${SECONDS} s of wrk at ${CONNS} connections, \`/latest/meta-data/instance-id\`; ${QUIET_WAIT_MS / 1000} s without a request (past the quiet period, when the proxy compacts its heap with two full GCs, and V8's memory reducer); ${SECONDS} s more. Builds: ${builds.map((b) => `${b.label} \`${b.main}\``).join(', ')}.`,
    '',
    'Young GCs and full GCs counted per requests served; "promoted" is what a young GC moved to the old generation (median over the phase) and per request on average; GC ms is the pauses, young and full. The GC columns are V8\'s counts; CPU per request depends on how busy the machine was.',
    '',
    table(
      ['guests', 'build', 'phase', 'requests', 'req/s', 'errors', 'young GCs per 10k', 'promoted KB per young GC', 'promoted KB per request', 'full GCs per 100k', 'GC ms per 10k', 'proxy CPU µs/request'],
      rows.map((r) => [r.pattern, r.build, r.phase, r.requests, fmt(r.rps, 0), r.errors, fmt(r.youngPer10k), fmt(r.promotedKbMedian), fmt(r.promotedKbPerRequest, 2), fmt(r.fullPer100k), fmt(r.gcMsPer10k), fmt(r.cpuUsPerRequest)]),
    ),
    '',
  ].join('\n');
  writeResults(repoRoot, flags.out ?? 'proxy-gc', { commit, seconds: SECONDS, conns: CONNS, builds, rows }, md, (m) => process.stdout.write(`${m}\n`));
}

main().catch((e: unknown) => {
  process.stderr.write(`proxy-gc: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
