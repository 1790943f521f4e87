// What a thousand other listeners cost a shared proxy per request: instructions per request through one router
// namespace, that router the proxy's only listener or one of 1001 (each of the others served once, then quiet),
// counted by callgrind, so the figure does not depend on how busy the machine is (shared-proxy.js has the timed
// figures, which on a loaded machine cannot resolve a few per cent). The real shared proxy, started by
// SharedMetadataProxy as an agent starts it but under `valgrind --tool=callgrind` (instrumentation switched on only
// for the measured load); the load is wrk in a guest namespace behind Neutron's REDIRECT, 16 keep-alive
// connections: warm-up, the quiet period (the proxy's compaction), a short load, quiet again, then the count.
// Not a test; about 3 minutes per variant. As root:
//   node dist/bench/listener-cost.js [--listeners 0,1000] [--seconds 30] [--warmup 40]
//     [--compare OTHER/dist/proxy/ns-proxy/main.js [--compare-label NAME]] [--keep DIR] [--out NAME]
// --keep DIR: callgrind's output files go there (for callgrind_annotate), not to the run's temporary directory.
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { silentLogger } from '../src/common/log.js';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { defaultProxyMain } from '../src/linux/agent-common.js';
import { SharedMetadataProxy } from '../src/linux/shared-proxy.js';
import { curl } from './lib/curl.js';
import { parallel, run } from './lib/exec.js';
import { BenchRun, writeResults } from './lib/lifecycle.js';
import { addNamespaces, createTopology, METADATA_IP, redirectTo, runPrefix } from './lib/netns.js';
import { startUpstream, type Proc } from './lib/procs.js';
import { fmt, table } from './lib/stats.js';
import { wrk } from './lib/wrk.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const { values: flags } = parseArgs({
  options: { listeners: { type: 'string' }, seconds: { type: 'string' }, warmup: { type: 'string' }, compare: { type: 'string' }, 'compare-label': { type: 'string' }, out: { type: 'string' }, keep: { type: 'string' } },
});
const LISTENERS = (flags.listeners ?? '0,1000').split(',').map(Number);
const SECONDS = Number(flags.seconds ?? 30);
const WARMUP = Number(flags.warmup ?? 40);
const OTHERS_PORT = 9697;
const TARGET_PORT = 9700;
const PATH = '/latest/meta-data/instance-id';
const QUIET_MS = 7000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const say = (m: string) => process.stdout.write(`[listener-cost ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

const builds: { label: string; main: string }[] = [{ label: 'this build', main: defaultProxyMain }];
if (flags.compare) builds.push({ label: flags['compare-label'] ?? 'compared build', main: resolve(flags.compare) });

let prefix = '';
let tmp = '';
const runner = new BenchRun(say, () => ({ prefix, tmp }));

interface Row {
  build: string;
  others: number;
  requests: number;
  instructions: number;
  perRequest: number;
  /** Of those, in V8's optimizing compiler (a cost per burst, not per request: see compiling()). */
  compiling: number;
  perRequestServing: number;
}

/**
 * Instructions spent in TurboFan (v8::internal::compiler::*), from callgrind_annotate's per-function list. V8 still
 * compiles during the counted window, after the warm-up and the quiet periods: about the same amount whatever the
 * window held (230-270 M instructions here), so a cost per window, which valgrind's slowness spreads over a few
 * thousand requests instead of the hundreds of thousands a native window would hold. Reported apart, so that what
 * serving a request costs can be compared.
 */
function compiling(file: string): number {
  const out = execFileSync('callgrind_annotate', ['--inclusive=no', '--threshold=100', file], { maxBuffer: 256 << 20 }).toString();
  let n = 0;
  for (const line of out.split('\n')) {
    const m = /^\s*([\d,]+) \([^)]*\)\s+(.*)$/.exec(line);
    if (m && m[2]!.includes('v8::internal::compiler::')) n += Number(m[1]!.replace(/,/g, ''));
  }
  return n;
}

async function main(): Promise<void> {
  execFileSync('valgrind', ['--version']);
  prefix = runPrefix();
  tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const commit = execFileSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']).toString().trim();
  const maxN = Math.max(0, ...LISTENERS);
  const names = Array.from({ length: maxN }, (_, i) => `${prefix}-n${i}`);
  await addNamespaces(names);
  const upNs = `${prefix}-up`;
  await run(['ip', 'netns', 'add', upNs]);
  const upstream: Proc & { socket: string } = await startUpstream(resolve(here, 'lib/upstream.js'), upNs, tmp);
  runner.onCleanup(() => upstream.stop());
  const topo = await createTopology(prefix, TARGET_PORT);
  await redirectTo(topo, TARGET_PORT);
  const url = `http://${METADATA_IP}${PATH}`;
  const rows: Row[] = [];
  const outDir = flags.keep ?? tmp;
  let k = 0;
  for (const b of builds) {
    for (const n of LISTENERS) {
      const state = join(tmp, `state-${k}`);
      mkdirSync(state, { recursive: true });
      const cmd = ['valgrind', '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${join(outDir, `cg-${k}`)}.%p`, process.execPath, ...PROXY_NODE_FLAGS, b.main].join(' ');
      const m = new SharedMetadataProxy({ name: `cost-${k++}`, conf: { state_path: state, metadata_proxy_socket: upstream.socket, metadata_proxy_cmd: cmd, debug: false, verbose: false }, log: silentLogger, pruneIntervalSec: 0 });
      runner.onCleanup(() => m.destroy());
      await m.start();
      const others = names.slice(0, n);
      await Promise.all(others.map((ns) => m.add({ kind: 'router', id: randomUUID(), namespace: ns, host: '0.0.0.0', port: OTHERS_PORT })));
      await parallel(others, 8, async (ns) => {
        const a = await curl(ns, `http://127.0.0.1:${OTHERS_PORT}${PATH}`);
        if (a.status !== 200) throw new Error(`${ns}: the listener on :${OTHERS_PORT} answered ${a.status || 'nothing'}`);
      });
      await m.add({ kind: 'router', id: randomUUID(), namespace: topo.router, host: '0.0.0.0', port: TARGET_PORT });
      say(`${b.label}, ${n} other listeners served once: warming up (${WARMUP} s)`);
      await wrk(topo.guest, url, 16, WARMUP);
      await sleep(QUIET_MS);
      await wrk(topo.guest, url, 16, 3);
      await sleep(QUIET_MS);
      const pid = String(m.pid!);
      execFileSync('callgrind_control', ['-i', 'on', pid], { stdio: 'ignore' });
      const r = await wrk(topo.guest, url, 16, SECONDS);
      execFileSync('callgrind_control', ['-i', 'off', pid], { stdio: 'ignore' });
      await m.destroy();
      // Valgrind's own summary at exit, in the proxy's log ("I refs: 1,234,567").
      let total = NaN;
      for (const end = Date.now() + 30_000; Date.now() < end && Number.isNaN(total); await sleep(200)) {
        const refs = [...readFileSync(m.logFile, 'utf8').matchAll(/I\s+refs:\s+([\d,]+)/g)].at(-1)?.[1];
        if (refs !== undefined) total = Number(refs.replace(/,/g, ''));
      }
      if (Number.isNaN(total)) throw new Error(`no callgrind summary for ${b.label}, ${n} listeners in ${m.logFile}`);
      if (r.non2xx + r.socketErrors > 0) throw new Error(`${b.label}, ${n} listeners: ${r.non2xx + r.socketErrors} errors`);
      let file: string | undefined;
      for (const end = Date.now() + 10_000; Date.now() < end && !file; await sleep(200)) file = readdirSync(outDir).find((f) => f.startsWith(`cg-${k - 1}.`));
      if (!file) throw new Error(`no callgrind output file for ${b.label}, ${n} listeners in ${outDir}`);
      const jit = compiling(join(outDir, file));
      const reqs = Math.max(1, r.requests);
      rows.push({ build: b.label, others: n, requests: r.requests, instructions: total, perRequest: total / reqs, compiling: jit, perRequestServing: (total - jit) / reqs });
      say(`${b.label}, ${n} others: ${r.requests} requests, ${fmt(total / reqs, 0)} instructions per request, ${fmt((total - jit) / reqs, 0)} without compiling`);
    }
  }
  await runner.cleanup();
  rmSync(tmp, { recursive: true, force: true });
  const base = (b: string) => rows.find((r) => r.build === b && r.others === Math.min(...LISTENERS));
  const md = [
    `# Instructions per request of the shared proxy, by how many other listeners it has (${new Date().toISOString()})`,
    '',
    `Commit ${commit}, node ${process.version}, \`valgrind --tool=callgrind\` around \`node ${PROXY_NODE_FLAGS.join(' ')} <main.js>\` started by SharedMetadataProxy; each other listener in a namespace of its own and served one request; through one router namespace (Neutron's REDIRECT), wrk with 16 keep-alive connections, \`${PATH}\`: ${WARMUP} s warm-up, ${QUIET_MS / 1000} s quiet, 3 s, ${QUIET_MS / 1000} s quiet, then ${SECONDS} s counted. Builds: ${builds.map((b) => `${b.label} \`${b.main}\``).join(', ')}.`,
    '',
    'TurboFan is V8\'s optimizing compiler. It still compiles in the counted window, after the warm-up and the quiet periods, about as much whatever the window held: a cost per window, which valgrind\'s slowness spreads over only the window\'s few thousand requests, so it is set apart.',
    '',
    table(
      ['build', 'other listeners', 'requests counted', 'instructions', 'per request', 'of which TurboFan', 'per request without it', `÷ ${Math.min(...LISTENERS)} others, same build (all / without TurboFan)`],
      rows.map((r) => [r.build, r.others, r.requests, r.instructions.toLocaleString('en-US'), fmt(r.perRequest, 0), r.compiling.toLocaleString('en-US'), fmt(r.perRequestServing, 0), `${fmt(r.perRequest / (base(r.build)?.perRequest ?? NaN), 3)} / ${fmt(r.perRequestServing / (base(r.build)?.perRequestServing ?? NaN), 3)}`]),
    ),
    '',
  ].join('\n');
  writeResults(repoRoot, flags.out ?? 'listener-cost', { commit, listeners: LISTENERS, seconds: SECONDS, warmup: WARMUP, builds, rows }, md, say);
}

main().catch(async (e: unknown) => {
  process.stderr.write(`listener-cost: ${e instanceof Error ? e.stack : String(e)}\n`);
  await runner.cleanup();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  process.exit(1);
});
