// Where our proxy's memory goes, and whether a burst leaves any behind: one proxy in front of the minimal
// upstream, in a namespace of its own (loopback only), measured idle, right after a burst and after the
// quiet period, with its resident memory split by region. Not a test; quick (about 30 s). As root:
//   node dist/bench/proxy-memory.js [--node-flags="..."] [--proxy-main PATH] [--out NAME]
// --proxy-main runs another build's proxy main.js (e.g. an older commit's, for a before/after).
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { defaultProxyMain } from '../src/linux/agent-common.js';
import { run } from './lib/exec.js';
import { runPrefix } from './lib/netns.js';
import { startOurProxy, startUpstream, type Proc } from './lib/procs.js';
import { fmt, table } from './lib/stats.js';
import { wrk } from './lib/wrk.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const { values: flags } = parseArgs({ options: { 'node-flags': { type: 'string' }, 'proxy-main': { type: 'string' }, out: { type: 'string' } } });
const nodeFlags = flags['node-flags'] !== undefined ? flags['node-flags'].split(' ').filter(Boolean) : [...PROXY_NODE_FLAGS];
const proxyMain = resolve(flags['proxy-main'] ?? defaultProxyMain);
const PORT = 9697;
const ROUTER = '11111111-2222-4333-8444-555555555555';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resident KiB by region: the node binary's pages, the main malloc heap, other anonymous memory (V8's heap, thread arenas, stacks), other files. */
interface Regions {
  binary: number;
  mallocHeap: number;
  anon: number;
  files: number;
  private: number;
  pss: number;
}

function regions(pid: number): Regions {
  const r: Regions = { binary: 0, mallocHeap: 0, anon: 0, files: 0, private: 0, pss: 0 };
  let kind: 'binary' | 'mallocHeap' | 'anon' | 'files' = 'anon';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      const name = m[1]!;
      kind = name === process.execPath ? 'binary' : name === '[heap]' ? 'mallocHeap' : name === '' || name.startsWith('[') ? 'anon' : 'files';
      continue;
    }
    const f = /^(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+)/.exec(line);
    if (!f) continue;
    const kb = Number(f[2]);
    if (f[1] === 'Rss') r[kind] += kb;
    else if (f[1] === 'Pss') r.pss += kb;
    else r.private += kb;
  }
  return r;
}

async function main(): Promise<void> {
  const prefix = runPrefix();
  const ns = `${prefix}-mem`;
  const tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const procs: Proc[] = [];
  await run(['ip', 'netns', 'add', ns]);
  try {
    await run(['ip', 'link', 'set', 'lo', 'up'], { ns });
    const upstream = await startUpstream(resolve(here, 'lib/upstream.js'), ns, tmp);
    procs.push(upstream);
    const proxy = await startOurProxy('ours', proxyMain, ns, tmp, { routerId: ROUTER, port: PORT, socket: upstream.socket, nodeArgs: nodeFlags });
    procs.push(proxy);
    const url = `http://127.0.0.1:${PORT}/openstack/latest/meta_data.json`;
    const rows: [string, Regions, string][] = [];
    await sleep(1000);
    rows.push(['idle', regions(proxy.pid), '']);
    const keep = await wrk(ns, url, 64, 4);
    const close = await wrk(ns, url, 200, 4, { Connection: 'close' });
    rows.push(['right after the burst', regions(proxy.pid), `${fmt(keep.rps, 0)} req/s keep-alive (c64), ${fmt(close.rps, 0)} req/s a connection each (c200)`]);
    // The proxy compacts after 5 s without a request.
    await sleep(8000);
    rows.push(['8 s later (quiet)', regions(proxy.pid), '']);
    const mb = (kb: number) => fmt(kb / 1024);
    const md = [
      `# Proxy memory by region (${new Date().toISOString()})`,
      '',
      `node ${process.version}, proxy \`${proxyMain}\` with node flags \`${nodeFlags.join(' ') || '(none)'}\`. Resident MB; "node binary" pages are shared by every node process on the host, "malloc heap" is glibc's main arena, "other anon" holds V8's heap, thread stacks and arenas.`,
      '',
      table(
        ['when', 'RSS', 'node binary', 'malloc heap', 'other anon', 'other files', 'private', 'Pss', 'load'],
        rows.map(([w, r, note]) => [w, mb(r.binary + r.mallocHeap + r.anon + r.files), mb(r.binary), mb(r.mallocHeap), mb(r.anon), mb(r.files), mb(r.private), mb(r.pss), note]),
      ),
      '',
    ].join('\n');
    const out = join(repoRoot, 'bench', 'results', `${flags.out ?? 'proxy-memory'}.md`);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, md);
    process.stdout.write(`${md}\nwrote ${out}\n`);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await run(['ip', 'netns', 'delete', ns], { allowFail: true });
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`proxy-memory: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
