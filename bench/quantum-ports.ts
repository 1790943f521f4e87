// Benchmark: the metadata agent's port lookup on quantum-server at 1,000 and 10,000 ports.
//   npm run build && node dist/bench/quantum-ports.js [--mysql | --connection mysql+pymysql://root:@127.0.0.1/qm] [--rounds N]
// Fills the real schema directly (overlapping tenant CIDRs, as a real cloud has), runs the real quantum-server
// process, and drives  GET /v2.0/ports?network_id=A&network_id=B&fixed_ips=ip_address%3D<ip>  with wrk.
// The ratio rps(10k)/rps(1k) must stay >= 0.8: the lookup is an index seek, not a scan. Not a test.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createConnection } from 'mysql2/promise';
import { openQuantumDb } from '../src/quantum-server/app.js';
import type { QuantumDatabase } from '../src/db/quantum-schema.js';
import type { Db } from '../src/db/connection.js';

const here = dirname(fileURLToPath(import.meta.url));
const SERVER_MAIN = resolve(here, '../src/quantum-server/main.js');

const { values: flags } = parseArgs({
  options: {
    connection: { type: 'string' },
    mysql: { type: 'boolean', default: false },
    duration: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '9' },
    conns: { type: 'string', default: '16' },
    'ports-per-network': { type: 'string', default: '50' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  process.stdout.write('usage: node dist/bench/quantum-ports.js [--mysql | --connection mysql+pymysql://USER:PW@HOST/PREFIX] [--duration S] [--rounds N] [--conns N] [--ports-per-network N]\n');
  process.exit(0);
}
const DURATION = Number(flags.duration);
const ROUNDS = Number(flags.rounds);
const CONNS = Number(flags.conns);
const PER_NET = Number(flags['ports-per-network']);
const SIZES = [1000, 10000];

interface Placed {
  networkId: string;
  ip: string;
  /** Which of the four overlapping CIDRs (10.<family>.0.0/16) its network uses. */
  family: number;
}

const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });

function sh(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((res, rej) =>
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (e, out, err) => (e ? rej(new Error(`${cmd} failed: ${e.message}\n${err}`)) : res(out))),
  );
}

/**
 * Add ports until the database holds `target`. Network i gets 10.<i % 4>.0.0/16 (tenants overlap), so each guest
 * IP exists on a quarter of all networks: the lookup must seek (ip_address, network_id), not just the IP.
 */
async function fill(h: Db<QuantumDatabase>, target: number, placed: Placed[]): Promise<void> {
  const t = new Date().toISOString();
  while (placed.length < target) {
    const n = Math.min(PER_NET, target - placed.length);
    const netId = randomUUID();
    const subId = randomUUID();
    const family = Math.floor(placed.length / PER_NET) % 4;
    await h.db.transaction().execute(async (trx) => {
      await trx.insertInto('networks').values({ id: netId, tenant_id: `tenant-${placed.length / PER_NET}`, name: `bench-${placed.length}`, status: 'ACTIVE', admin_state_up: 1, shared: 0, mtu: 1500, created_at: t, updated_at: t }).execute();
      await trx
        .insertInto('subnets')
        .values({ id: subId, tenant_id: 'bench', network_id: netId, name: '', cidr: `10.${family}.0.0/16`, ip_version: 4, gateway_ip: `10.${family}.0.1`, enable_dhcp: 1, allocation_pools: JSON.stringify([{ start: `10.${family}.0.2`, end: `10.${family}.255.254` }]), dns_nameservers: '[]', host_routes: '[]', ipv6_ra_mode: null, ipv6_address_mode: null, created_at: t, updated_at: t })
        .execute();
      const ports = [];
      const allocs = [];
      for (let i = 0; i < n; i++) {
        const id = randomUUID();
        const k = i + 2;
        const ip = `10.${family}.${k >> 8}.${k & 255}`;
        const mac = `fa:16:3e:${[...randomBytes(3)].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
        ports.push({ id, tenant_id: 'bench', network_id: netId, name: '', mac_address: mac, device_id: randomUUID(), device_owner: 'compute:nova', admin_state_up: 1, status: 'ACTIVE', binding_host_id: 'compute-1', created_at: t, updated_at: t });
        allocs.push({ port_id: id, subnet_id: subId, network_id: netId, ip_address: ip });
        placed.push({ networkId: netId, ip, family });
      }
      await trx.insertInto('ports').values(ports).execute();
      await trx.insertInto('ipallocations').values(allocs).execute();
    });
  }
}

/** The agent's query for a guest on a router with two networks: its own and another one with a different CIDR. */
function lookupPath(p: Placed, other: string): string {
  return `/v2.0/ports?network_id=${p.networkId}&network_id=${other}&fixed_ips=ip_address%3D${p.ip}`;
}

function samplePaths(placed: Placed[], count: number): string[] {
  const byFamily = new Map<number, string[]>();
  for (const p of placed) {
    const l = byFamily.get(p.family) ?? [];
    if (l[l.length - 1] !== p.networkId) l.push(p.networkId);
    byFamily.set(p.family, l);
  }
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const p = placed[Math.floor(Math.random() * placed.length)]!;
    const others = byFamily.get((p.family + 1 + Math.floor(Math.random() * 3)) % 4) ?? byFamily.get(p.family)!;
    out.push(lookupPath(p, others[Math.floor(Math.random() * others.length)]!));
  }
  return out;
}

async function verify(base: string, paths: string[]): Promise<void> {
  for (const path of paths.slice(0, 100)) {
    const r = await fetch(`${base}${path}`);
    const body = (await r.json()) as { ports: unknown[] };
    if (r.status !== 200 || body.ports.length !== 1) throw new Error(`lookup ${path} answered ${r.status} with ${body.ports?.length} ports`);
  }
}

/** utime + stime of a process in seconds (/proc/<pid>/stat fields 14 and 15, in clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function runWrk(base: string, paths: string[], dir: string, seconds: number): Promise<{ rps: number; requests: number; p50: string; p99: string; non2xx: number }> {
  const lua = join(dir, 'paths.lua');
  writeFileSync(
    lua,
    `local paths = {\n${paths.map((p) => `  "${p}",`).join('\n')}\n}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format("GET", paths[(i % #paths) + 1])\nend\n`,
  );
  const out = await sh('wrk', ['-t1', `-c${CONNS}`, `-d${seconds}s`, '--timeout', '10s', '--latency', '-s', lua, base], (seconds + 30) * 1000);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!rps) throw new Error(`wrk output not understood:\n${out}`);
  return {
    rps: Number(rps[1]),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
    p50: /^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '?',
    p99: /^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '?',
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

async function startServer(connection: string, dir: string): Promise<{ proc: ChildProcess; base: string }> {
  const port = await freePort();
  const proc = spawn(process.execPath, [SERVER_MAIN, '--bind_host', '127.0.0.1', '--bind_port', String(port), '--state_path', dir, '--database-connection', connection, '--log-file', join(dir, 'server.log')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  const end = Date.now() + 15_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/`)).ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > end || proc.exitCode !== null) throw new Error('quantum-server did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, base };
}

async function stopServer(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  await new Promise<void>((r) => {
    proc.once('exit', () => r());
    proc.kill('SIGTERM');
  });
}

/** A database per size: a SQLite file in dir, or a fresh MariaDB database (--mysql), or --connection + suffix. */
async function makeDb(dir: string, size: number): Promise<{ url: string; drop: () => Promise<void> }> {
  if (flags.connection) {
    // The URL names a prefix: each size gets its own database (file) beside it, removed afterwards.
    if (flags.connection.startsWith('sqlite')) {
      const file = `${flags.connection.replace(/^sqlite:\/\/\//, '').replace(/\.(sqlite|db)$/, '')}-${size}-${process.pid}.sqlite`;
      return { url: `sqlite:///${file}`, drop: async () => rmSync(file.startsWith('/') ? file : resolve(file), { force: true }) };
    }
    const u = new URL(flags.connection.replace(/^mysql\+\w+:/, 'mysql:'));
    const name = `${u.pathname.replace(/^\//, '') || 'qm_bench'}_${size}_${process.pid}`;
    const admin = { host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username || 'root'), password: decodeURIComponent(u.password) };
    const c = await createConnection(admin);
    await c.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`);
    await c.end();
    u.pathname = `/${name}`;
    return {
      url: u.toString().replace(/^mysql:/, 'mysql+pymysql:'),
      drop: async () => {
        const d = await createConnection(admin);
        await d.query(`DROP DATABASE IF EXISTS \`${name}\``);
        await d.end();
      },
    };
  }
  if (flags.mysql) {
    const name = `qm_bench_${size}_${process.pid}`;
    const c = await createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
    await c.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`);
    await c.end();
    return {
      url: `mysql+pymysql://root:@127.0.0.1:3306/${name}`,
      drop: async () => {
        const d = await createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
        await d.query(`DROP DATABASE IF EXISTS \`${name}\``);
        await d.end();
      },
    };
  }
  return { url: `sqlite:///${join(dir, `bench-${size}.sqlite`)}`, drop: async () => {} };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'qm-bench-ports-'));
  const runs: Array<{ size: number; networks: number; db: { url: string; drop: () => Promise<void> }; server?: { proc: ChildProcess; base: string }; paths: string[]; rps: number[]; perCpu: number[]; p50: string[]; p99: string[] }> = [];
  let backend = 'sqlite';
  try {
    for (const size of SIZES) {
      const db = await makeDb(dir, size);
      backend = db.url.startsWith('sqlite') ? 'sqlite' : 'mysql';
      const h = await openQuantumDb(db.url);
      const placed: Placed[] = [];
      const t0 = Date.now();
      try {
        await fill(h, size, placed);
      } finally {
        await h.close();
      }
      const networks = new Set(placed.map((p) => p.networkId)).size;
      process.stdout.write(`${backend}: filled ${size} ports on ${networks} networks in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      runs.push({ size, networks, db, paths: samplePaths(placed, 2000), rps: [], perCpu: [], p50: [], p99: [] });
    }
    // One real quantum-server per database, both up at once; rounds alternate between them so background
    // load on the machine hits both sizes alike.
    for (const r of runs) {
      const sdir = join(dir, `srv-${r.size}`);
      r.server = await startServer(r.db.url, sdir);
      await verify(r.server.base, r.paths);
      await runWrk(r.server.base, r.paths, dir, 2); // warm-up
    }
    process.stdout.write(`wrk -t1 -c${CONNS}, ${ROUNDS} alternating rounds of ${DURATION} s per size\n`);
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 ? [...runs].reverse() : runs;
      for (const r of order) {
        const cpu0 = cpuSeconds(r.server!.proc.pid!);
        const w = await runWrk(r.server!.base, r.paths, dir, DURATION);
        const cpu = cpuSeconds(r.server!.proc.pid!) - cpu0;
        if (w.non2xx) throw new Error(`${w.non2xx} non-2xx answers at ${r.size} ports`);
        r.rps.push(w.rps);
        // Requests per second of quantum-server CPU: what one server process can do, whatever else the machine runs.
        r.perCpu.push(cpu > 0 ? w.requests / cpu : 0);
        r.p50.push(w.p50);
        r.p99.push(w.p99);
        process.stdout.write(`  round ${round + 1}: ${r.size} ports ${w.rps.toFixed(0)} requests/s, ${r.perCpu[r.perCpu.length - 1]!.toFixed(0)} per server CPU-second (p50 ${w.p50}, p99 ${w.p99})\n`);
      }
    }
  } finally {
    for (const r of runs) {
      if (r.server) await stopServer(r.server.proc);
      await r.db.drop();
    }
    rmSync(dir, { recursive: true, force: true });
  }
  const med = runs.map((r) => median(r.rps));
  const medCpu = runs.map((r) => median(r.perCpu));
  // Each round measures both sizes back to back: the median of the per-round ratios is robust to load swings.
  const ratio = median(runs[1]!.rps.map((x, i) => x / runs[0]!.rps[i]!));
  const cpuRatio = medCpu[1]! / medCpu[0]!;
  process.stdout.write(`\n| backend | ports | networks | requests/s (median of ${ROUNDS}) | requests per server CPU-second (median) | requests/s, all rounds |\n|---|---|---|---|---|---|\n`);
  runs.forEach((r, i) => process.stdout.write(`| ${backend} | ${r.size} | ${r.networks} | ${med[i]!.toFixed(0)} | ${medCpu[i]!.toFixed(0)} | ${r.rps.map((x) => x.toFixed(0)).join(', ')} |\n`));
  process.stdout.write(`\nratio 10k/1k: requests/s ${ratio.toFixed(3)} (median of per-round ratios; ratio of medians ${(med[1]! / med[0]!).toFixed(3)}), per server CPU-second ${cpuRatio.toFixed(3)}\n`);
  const ok = ratio >= 0.8;
  process.stdout.write(`${ok ? 'OK' : 'FAIL'}: requests/s at 10,000 ports ${ok ? 'is within' : 'dropped more than'} 20% of 1,000 ports\n`);
  if (!ok) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`quantum-ports bench: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
