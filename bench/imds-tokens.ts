// Benchmark: what IMDSv2-style session tokens cost per request, through the whole chain (guest → Neutron's
// REDIRECT → quantum-ns-metadata-proxy → quantum-metadata-agent → nova-api, quantum-server behind the agent's
// cache), side by side in one run: a plain GET of instance-id, the token PUT, the same GET with a token
// (`[api] metadata_tokens = optional`, the default) and with a token on a second chain whose nova.conf says
// `required`. Plus the token functions alone (µs per call of the real code), in the same process and run.
//   npm run build && node dist/bench/imds-tokens.js [--repeats 3] [--duration 4] [--conns 1,16] [--quick] [--out NAME]
// See bench/README.md. Not part of the test suite.
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomBytes, randomUUID } from 'node:crypto';
import { BenchRun, writeResults } from './lib/lifecycle.js';
import { createTopology, METADATA_IP, redirectTo, runPrefix, type Topology } from './lib/netns.js';
import { wrk } from './lib/wrk.js';
import { curl } from './lib/curl.js';
import { median, fmt, table } from './lib/stats.js';
import { buildChain, chainReady, cpuPerRequest, HOPS, type Chain, type Hop } from './lib/chain.js';
import { logTail } from './lib/procs.js';
import { machineLine, runMeta, type RunMeta } from './lib/runmeta.js';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { defaultProxyMain } from '../src/linux/agent-common.js';
import { signInstanceId, verifyInstanceSignature } from '../src/common/hmac.js';
import { MAX_TTL, MetadataTokens, TOKEN_HEADER, TOKEN_PATH, TOKEN_TTL_HEADER, tokenKey } from '../src/nova-metadata/tokens.js';

const here = dirname(fileURLToPath(import.meta.url));
const buildRoot = resolve(here, '..');
const repoRoot = resolve(buildRoot, '..');

type Mode = 'optional' | 'required';
/** Ports inside the run's own router namespace (nothing else listens there). */
const PORTS: Record<Mode, { ours: number; haproxy: number }> = { optional: { ours: 9697, haproxy: 9698 }, required: { ours: 9699, haproxy: 9700 } };
const DAEMONS = HOPS;
type Daemon = Hop;
const INSTANCE_ID = '/latest/meta-data/instance-id';

interface Case {
  id: 'plain' | 'put' | 'token' | 'required';
  label: string;
  chain: Mode;
  method: 'GET' | 'PUT';
  path: string;
  /** Send this chain's token. */
  token: boolean;
}
const CASES: Case[] = [
  { id: 'plain', label: `GET instance-id, no token`, chain: 'optional', method: 'GET', path: INSTANCE_ID, token: false },
  { id: 'put', label: `PUT ${TOKEN_PATH} (TTL ${MAX_TTL})`, chain: 'optional', method: 'PUT', path: TOKEN_PATH, token: false },
  { id: 'token', label: 'GET instance-id with a token (`optional`)', chain: 'optional', method: 'GET', path: INSTANCE_ID, token: true },
  { id: 'required', label: 'GET instance-id with a token (`required`)', chain: 'required', method: 'GET', path: INSTANCE_ID, token: true },
];

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
  process.stdout.write('usage: node dist/bench/imds-tokens.js [--repeats N] [--duration S] [--conns 1,16] [--quick] [--out NAME]\n');
  process.exit(0);
}
const quick = flags.quick!;
const cfg = {
  quick,
  repeats: Math.max(1, Number(flags.repeats ?? (quick ? 1 : 3))),
  duration: Number(flags.duration ?? (quick ? 1 : 4)),
  /** Seconds of wrk per case before the first repeat (cold JIT, the agent's and nova's caches). */
  warmup: quick ? 1 : 3,
  /** Seconds of unmeasured wrk right before each measured run, on the same chain and connections. */
  settle: 1,
  conns: (flags.conns ?? '1,16').split(',').map(Number),
  /** The token functions alone: rounds × calls per round. */
  micro: { rounds: quick ? 3 : 9, calls: quick ? 20_000 : 200_000 },
  out: flags.out ?? (quick ? 'imds-tokens-quick' : 'imds-tokens'),
};

function say(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface RunRecord {
  case: Case['id'];
  rep: number;
  conns: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  /** utime+stime of each daemon's process tree during the run ÷ requests, µs. */
  cpuUsPerReq: Record<Daemon, number>;
}

interface MicroRecord {
  name: string;
  what: string;
  /** µs per call, one value per round. */
  /** CPU µs per call (user+system of this process), one value per round. */
  rounds: number[];
  usPerCall: number;
  /** Wall-clock µs per call, median of the rounds (includes time other processes took the core). */
  wallUsPerCall: number;
}

const result = {
  meta: undefined as RunMeta | undefined,
  config: cfg,
  notes: [] as string[],
  sanity: [] as { check: string; ok: boolean; detail: string }[],
  micro: [] as MicroRecord[],
  runs: [] as RunRecord[],
};

let topo: Topology | undefined;
let prefix = '';
let tmp = '';
const chains: Partial<Record<Mode, Chain>> = {};
const tokens: Partial<Record<Mode, string>> = {};

const runner = new BenchRun(say, () => ({ prefix, tmp }));

/** Where the micro-benchmark's results go, so V8 cannot drop the calls as unused. */
let sink = 0;

/**
 * CPU µs per call of `fn` (and wall µs), one figure per round, after a warm-up round (V8 optimises the loop
 * first). CPU time, because on a shared machine wall time also counts whoever else had the core.
 */
function perCall(fn: () => number): { cpu: number[]; wall: number[] } {
  const round = () => {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < cfg.micro.calls; i++) sink += fn();
    const c = process.cpuUsage(c0);
    return { cpu: (c.user + c.system) / cfg.micro.calls, wall: Number(process.hrtime.bigint() - t0) / 1e3 / cfg.micro.calls };
  };
  round();
  const rs = Array.from({ length: cfg.micro.rounds }, round);
  return { cpu: rs.map((r) => r.cpu), wall: rs.map((r) => r.wall) };
}

/** The functions nova runs per request: the token check and issue, and (for scale) the proxy signature check. */
function microBench(): void {
  const secret = randomBytes(24).toString('hex');
  const uuid = randomUUID();
  // The key as nova-api derives it from metadata_proxy_shared_secret (no key file is touched then).
  const issuer = new MetadataTokens(tokenKey({ sharedSecret: secret, keyFile: '/nonexistent' }));
  const token = issuer.issue(uuid, MAX_TTL);
  if (issuer.check(token, uuid) !== 'valid') throw new Error('micro-benchmark: a fresh token does not check as valid');
  const sig = signInstanceId(secret, uuid);
  const items: [string, string, () => number][] = [
    ['MetadataTokens.check', 'a valid token (HMAC-SHA256 + timingSafeEqual), per GET that carries one', () => (issuer.check(token, uuid) === 'valid' ? 1 : 0)],
    ['MetadataTokens.issue', 'a new token (8 random bytes + HMAC-SHA256), per PUT', () => issuer.issue(uuid, MAX_TTL).length],
    ['verifyInstanceSignature', "the X-Instance-ID-Signature check nova makes on every request (for scale)", () => (verifyInstanceSignature(secret, uuid, sig) ? 1 : 0)],
  ];
  for (const [name, what, fn] of items) {
    const { cpu, wall } = perCall(fn);
    result.micro.push({ name, what, rounds: cpu, usPerCall: median(cpu), wallUsPerCall: median(wall) });
    say(`${name}: ${fmt(median(cpu), 3)} CPU µs per call (rounds ${cpu.map((x) => x.toFixed(3)).join(' ')}), wall ${fmt(median(wall), 3)} µs`);
  }
}

function caseHeaders(k: Case): Record<string, string> {
  if (k.method === 'PUT') return { [TOKEN_TTL_HEADER]: String(MAX_TTL) };
  return k.token ? { [TOKEN_HEADER]: tokens[k.chain]! } : {};
}

/** wrk with the case's method and headers, through the REDIRECT as it points now. */
function fire(k: Case, conns: number, seconds: number) {
  return wrk(topo!.guest, `http://${METADATA_IP}${k.path}`, conns, seconds, caseHeaders(k), { method: k.method });
}

async function measure(k: Case, conns: number, rep: number): Promise<RunRecord> {
  await redirectTo(topo!, PORTS[k.chain].ours);
  // The chain not measured last sat idle for a few runs: its proxy closed its agent connections and compacted
  // (5 s), the agent's port cache expired (10 s). Unmeasured load first, so no case starts cold.
  await fire(k, conns, cfg.settle);
  const { r, cpuUsPerReq } = await cpuPerRequest(chains[k.chain]!, () => fire(k, conns, cfg.duration));
  return {
    case: k.id,
    rep,
    conns,
    rps: r.rps,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    requests: r.requests,
    errors: r.non2xx + r.socketErrors,
    cpuUsPerReq,
  };
}

function check(name: string, ok: boolean, detail: string): void {
  result.sanity.push({ check: name, ok, detail });
  if (!ok) throw new Error(`sanity check failed: ${name}: ${detail}`);
}

/** Through each chain from the guest: the answers the measured cases expect, and that tokens are bound to their chain. */
async function sanity(): Promise<void> {
  const url = (p: string) => `http://${METADATA_IP}${p}`;
  const g = topo!.guest;
  let instanceId = '';
  for (const mode of ['optional', 'required'] as const) {
    await redirectTo(topo!, PORTS[mode].ours);
    const put = await curl(g, url(TOKEN_PATH), { method: 'PUT', headers: { [TOKEN_TTL_HEADER]: String(MAX_TTL) } });
    const ttl = put.headers[TOKEN_TTL_HEADER];
    check(`${mode}: PUT ${TOKEN_PATH}`, put.status === 200 && /^v1\.[A-Za-z0-9_-]+$/.test(put.body), `status ${put.status}, body "${put.body.slice(0, 60)}", ${TOKEN_TTL_HEADER}: ${ttl ?? '(not in the answer)'}`);
    // Nova echoes the TTL; whether the guest sees it depends on the proxy passing answer headers on.
    if (ttl !== String(MAX_TTL)) result.notes.push(`${mode}: the guest's PUT answer carries no ${TOKEN_TTL_HEADER}: ${ttl ?? 'none'} (not part of what is measured)`);
    tokens[mode] = put.body;
    const plain = await curl(g, url(INSTANCE_ID));
    const withToken = await curl(g, url(INSTANCE_ID), { headers: { [TOKEN_HEADER]: put.body } });
    if (mode === 'optional') {
      instanceId = plain.body;
      check('optional: GET without a token', plain.status === 200 && /^i-[0-9a-f]{8}$/.test(plain.body), `status ${plain.status}, body "${plain.body}"`);
      check('optional: GET with the token', withToken.status === 200 && withToken.body === instanceId, `status ${withToken.status}, body "${withToken.body}"`);
      const forged = put.body.slice(0, -2) + (put.body.endsWith('AA') ? 'BB' : 'AA');
      const bad = await curl(g, url(INSTANCE_ID), { headers: { [TOKEN_HEADER]: forged } });
      check('optional: GET with an altered token', bad.status === 401, `status ${bad.status}`);
    } else {
      check('required: GET without a token', plain.status === 401, `status ${plain.status}`);
      check('required: GET with the token', withToken.status === 200 && /^i-[0-9a-f]{8}$/.test(withToken.body), `status ${withToken.status}, body "${withToken.body}"`);
      const other = await curl(g, url(INSTANCE_ID), { headers: { [TOKEN_HEADER]: tokens.optional! } });
      check("required: GET with the other chain's token", other.status === 401, `status ${other.status}`);
    }
  }
}

async function main(): Promise<void> {
  result.meta = await runMeta(repoRoot, ['wrk']);
  if (process.getuid?.() !== 0) throw new Error('the benchmark builds namespaces and iptables rules: run it as root');
  const ready = chainReady(buildRoot);
  if (ready !== true) throw new Error(`the chain is ${ready}`);
  prefix = runPrefix();
  tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  say(`run ${prefix}, tmp ${tmp}, ${JSON.stringify(cfg)}`);
  if (cfg.repeats < 3) result.notes.push(`only ${cfg.repeats} repeat(s): medians of fewer than 3 are not robust on a shared machine`);

  // Before any chain runs, so the loop has the CPU to itself as far as this run goes.
  microBench();

  topo = await createTopology(prefix, PORTS.optional.ours);
  for (const mode of ['optional', 'required'] as const) {
    say(`building chain "${mode}" (quantum-server, nova-api with [api] metadata_tokens = ${mode}, metadata agent; network, subnet, router, server via the APIs)`);
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
      novaApi: { metadata_tokens: mode },
    });
  }
  await sanity();
  say('sanity ok');

  for (const k of CASES) {
    await redirectTo(topo, PORTS[k.chain].ours);
    await fire(k, 16, cfg.warmup).catch(() => undefined);
  }
  const total = cfg.repeats * cfg.conns.length * CASES.length;
  let i = 0;
  for (let rep = 0; rep < cfg.repeats; rep++) {
    for (const conns of cfg.conns) {
      // Rotated per repeat, so a drift (warm-up, other work on the machine) favours no case.
      const order = CASES.map((_, j) => CASES[(j + rep) % CASES.length]!);
      for (const k of order) {
        const r = await measure(k, conns, rep);
        result.runs.push(r);
        i++;
        say(`${i}/${total} ${k.id} c${conns}: ${fmt(r.rps, 0)} req/s p99 ${fmt(r.p99Ms, 2)} ms, CPU µs/req ${DAEMONS.map((d) => `${d} ${fmt(r.cpuUsPerReq[d])}`).join(', ')}${r.errors ? ` ERRORS ${r.errors}` : ''}`);
      }
    }
  }
  const errs = result.runs.filter((r) => r.errors);
  if (errs.length) result.notes.push(`runs with non-2xx answers or socket errors: ${errs.map((r) => `${r.case} c${r.conns} rep ${r.rep}: ${r.errors}`).join('; ')}`);
  result.meta.loadavgEnd = loadavg();
  for (const mode of ['optional', 'required'] as const) await chains[mode]!.stop();
}

// ---------- report ----------

type Field = 'rps' | 'p50Ms' | 'p99Ms' | Daemon | 'all';
const FIELDS: Field[] = ['rps', 'p50Ms', 'p99Ms', ...DAEMONS, 'all'];
const val = (r: RunRecord, f: Field): number =>
  f === 'rps' || f === 'p50Ms' || f === 'p99Ms' ? r[f] : f === 'all' ? DAEMONS.reduce((a, d) => a + r.cpuUsPerReq[d], 0) : r.cpuUsPerReq[f];

function summary() {
  return cfg.conns.flatMap((conns) =>
    CASES.map((k) => {
      const rs = result.runs.filter((r) => r.case === k.id && r.conns === conns);
      return { case: k.id, conns, runs: rs.length, errors: rs.reduce((a, r) => a + r.errors, 0), ...Object.fromEntries(FIELDS.map((f) => [f, median(rs.map((r) => val(r, f)))])) } as {
        case: Case['id'];
        conns: number;
        runs: number;
        errors: number;
      } & Record<Field, number>;
    }),
  );
}

/** Each case ÷ the plain GET of the same repeat and connection count (runs seconds apart); median, min, max, and the median difference. */
function ratios() {
  return cfg.conns.flatMap((conns) =>
    CASES.filter((k) => k.id !== 'plain').map((k) => {
      const per = (f: Field) => {
        const xs: number[] = [];
        const ds: number[] = [];
        for (let rep = 0; rep < cfg.repeats; rep++) {
          const base = result.runs.find((r) => r.case === 'plain' && r.rep === rep && r.conns === conns);
          const x = result.runs.find((r) => r.case === k.id && r.rep === rep && r.conns === conns);
          if (base && x) {
            xs.push(val(x, f) / val(base, f));
            ds.push(val(x, f) - val(base, f));
          }
        }
        const v = xs.filter(Number.isFinite);
        return { median: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN, delta: median(ds) };
      };
      return { case: k.id, conns, ...Object.fromEntries(FIELDS.map((f) => [f, per(f)])) } as { case: Case['id']; conns: number } & Record<Field, { median: number; min: number; max: number; delta: number }>;
    }),
  );
}

function markdown(sum: ReturnType<typeof summary>, rat: ReturnType<typeof ratios>): string {
  const label = (id: Case['id']) => CASES.find((k) => k.id === id)!.label;
  const L: string[] = [];
  L.push(`# Session tokens (IMDSv2) through the whole chain (${result.meta?.date ?? '?'})`, '');
  if (result.meta) L.push(machineLine(result.meta));
  L.push(
    '',
    'Two whole chains side by side (`bench/lib/chain.ts`: guest → Neutron\'s REDIRECT → quantum-ns-metadata-proxy → quantum-metadata-agent → nova-api, ' +
      "quantum-server behind the agent's 10 s cache), identical but for nova.conf's `[api] metadata_tokens`: `optional` (the default) and `required`. " +
      `The REDIRECT is pointed at one chain's proxy or the other's between runs, and each measured run follows ${cfg.settle} s of unmeasured load of the same case (the other chain idled meanwhile: its proxy had closed its agent connections, its agent's cache had expired). Tokens come from a \`PUT\` made from the guest before the runs (TTL 21600). ` +
      `${cfg.repeats} repeat(s) × ${cfg.duration} s per run, wrk -t1 -c${cfg.conns.join('/')} from the guest namespace, keep-alive, the cases rotated per repeat (a Lua script sets wrk's method for the PUT). ` +
      "CPU is utime+stime of each daemon's process tree from /proc ÷ requests. Ratios are case ÷ plain GET of the same repeat and connection count, median over the repeats, [min–max] beside it. " +
      `The \`required\` case runs on the second chain, so its ratio also holds that chain's difference from the first; nova does the same work for a token GET in both modes. ${cfg.quick ? '**Quick run.**' : ''}`,
  );
  if (result.notes.length) L.push('', ...result.notes.map((n) => `- Note: ${n}`));
  const cell = (x: { median: number; min: number; max: number }) => (Number.isFinite(x.median) ? `**${fmt(x.median, 3)}** [${fmt(x.min, 2)}–${fmt(x.max, 2)}]` : '–');
  L.push(
    '',
    '## Ratios vs the plain GET',
    '',
    table(
      ['case', 'conns', 'req/s', 'p99', ...DAEMONS.map((d) => `CPU/req ${d}`), 'CPU/req all hops'],
      rat.map((r) => [label(r.case), r.conns, ...(['rps', 'p99Ms', ...DAEMONS, 'all'] as Field[]).map((f) => cell(r[f]))]),
    ),
  );
  L.push(
    '',
    '## CPU µs per request, case − plain GET (median over the repeats)',
    '',
    table(
      ['case', 'conns', ...DAEMONS, 'all hops'],
      rat.map((r) => [label(r.case), r.conns, ...([...DAEMONS, 'all'] as Field[]).map((f) => `${r[f].delta >= 0 ? '+' : ''}${fmt(r[f].delta)}`)]),
    ),
  );
  L.push(
    '',
    '## Medians',
    '',
    table(
      ['case', 'conns', 'req/s', 'p50 ms', 'p99 ms', ...DAEMONS.map((d) => `${d} CPU µs/req`), 'all hops CPU µs/req', 'errors'],
      sum.map((s) => [label(s.case), s.conns, fmt(s.rps, 0), fmt(s.p50Ms, 2), fmt(s.p99Ms, 2), ...DAEMONS.map((d) => fmt(s[d])), fmt(s.all), s.errors]),
    ),
  );
  L.push(
    '',
    `## The token functions alone (this process, median of ${cfg.micro.rounds} rounds of ${cfg.micro.calls.toLocaleString('en-US')} calls)`,
    '',
    table(
      ['function', 'what', 'CPU µs per call', 'rounds min–max', 'wall µs per call'],
      result.micro.map((m) => [`\`${m.name}\``, m.what, fmt(m.usPerCall, 3), `${fmt(Math.min(...m.rounds), 3)}–${fmt(Math.max(...m.rounds), 3)}`, fmt(m.wallUsPerCall, 3)]),
    ),
  );
  L.push('', '## Sanity (curl from the guest, before the runs)', '', ...result.sanity.map((s) => `- ${s.check}: ${s.ok ? 'ok' : 'FAILED'}: ${s.detail}`));
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
    if (result.meta) result.meta.loadavgEnd ??= loadavg();
  },
});
