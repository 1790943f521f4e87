// Boot storm: every guest namespace runs cloud-init's crawl at the same moment. One curl per guest fetches
// the whole list, one TCP connection per request (cloud-init opens a new requests.Session per URL).
import { nsArgv, track } from './exec.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { METADATA_IP } from './netns.js';

export interface StormResult {
  guests: number;
  requests: number;
  /** From the moment all guests are released until the last one has finished. */
  totalMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Per guest: the whole crawl (sum of its requests' times), the part of a boot spent on metadata. */
  crawlP50Ms: number;
  crawlP99Ms: number;
  crawlMaxMs: number;
  /** Transfers that failed (no HTTP answer) or answered with anything but 200, plus missing transfers, plus mismatches. */
  errors: number;
  /** With `check`: guests whose answer to `check.path` was a 200 with another body than theirs. */
  mismatches: number;
  statuses: Record<string, number>;
}

export interface StormOptions {
  timeoutMs?: number;
  /** Keep each guest's answer to `path` (one of the crawl's) and compare it with `expected[guest index]`. */
  check?: { path: string; expected: string[] };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export async function bootStorm(guestNs: string[], paths: string[], opts: StormOptions = {}): Promise<StormResult> {
  const { timeoutMs = 120_000, check } = opts;
  if (check && (!paths.includes(check.path) || check.expected.length !== guestNs.length)) throw new Error('bootStorm: check.path must be in the crawl, with one expected answer per guest');
  const dir = check ? mkdtempSync(join(tmpdir(), 'storm-')) : '';
  try {
    return await storm(guestNs, paths, timeoutMs, check && { ...check, dir });
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

async function storm(guestNs: string[], paths: string[], timeoutMs: number, check: (StormOptions['check'] & { dir: string }) | undefined): Promise<StormResult> {
  const curlFor = (i: number) => {
    const curl = ['curl', '-s', '-H', 'Connection: close', '--max-time', '30', '-w', '%{http_code} %{time_total}\\n'];
    for (const p of paths) curl.push('-o', p === check?.path ? join(check.dir, String(i)) : '/dev/null', `http://${METADATA_IP}${p}`);
    return `echo R; read _; exec ${curl.map((a) => `'${a}'`).join(' ')}`;
  };
  const procs: { p: ChildProcess; out: string; ready: boolean; done: Promise<void> }[] = [];
  for (const [i, ns] of guestNs.entries()) {
    const argv = nsArgv(ns, ['sh', '-c', curlFor(i)]);
    const p = track(spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'ignore'] }));
    const rec = { p, out: '', ready: false, done: new Promise<void>((r) => p.once('close', () => r())) };
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      rec.out += d;
      if (!rec.ready && rec.out.startsWith('R\n')) rec.ready = true;
    });
    p.stdin!.on('error', () => undefined);
    procs.push(rec);
  }
  const readyBy = Date.now() + 60_000;
  while (procs.some((r) => !r.ready) && Date.now() < readyBy) await new Promise((r) => setTimeout(r, 20));
  const t0 = process.hrtime.bigint();
  for (const r of procs) r.p.stdin!.end('\n');
  const killer = setTimeout(() => procs.forEach((r) => r.p.kill('SIGKILL')), timeoutMs);
  await Promise.all(procs.map((r) => r.done));
  clearTimeout(killer);
  const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const lat: number[] = [];
  const crawl: number[] = [];
  const statuses: Record<string, number> = {};
  let errors = 0;
  let mismatches = 0;
  const checkAt = check ? paths.indexOf(check.path) : -1;
  for (const [i, r] of procs.entries()) {
    const lines = r.out.split('\n').slice(1).filter((l) => l.trim());
    errors += Math.max(0, paths.length - lines.length);
    // curl writes a line per transfer, failed ones too (000), so line k is paths[k].
    if (check && lines[checkAt]?.startsWith('200 ')) {
      let body = '';
      try {
        body = readFileSync(join(check.dir, String(i)), 'utf8');
      } catch {
        /* no file: counted as a mismatch */
      }
      if (body !== check.expected[i]) mismatches++;
    }
    let sum = 0;
    for (const l of lines) sum += Number(l.split(' ')[1]) * 1000;
    crawl.push(sum);
    for (const l of lines) {
      const [code, t] = l.split(' ');
      statuses[code!] = (statuses[code!] ?? 0) + 1;
      if (code !== '200') errors++;
      lat.push(Number(t) * 1000);
    }
  }
  lat.sort((a, b) => a - b);
  crawl.sort((a, b) => a - b);
  return {
    guests: guestNs.length,
    requests: lat.length,
    totalMs,
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
    maxMs: lat[lat.length - 1] ?? NaN,
    crawlP50Ms: percentile(crawl, 50),
    crawlP99Ms: percentile(crawl, 99),
    crawlMaxMs: crawl[crawl.length - 1] ?? NaN,
    errors: errors + mismatches,
    mismatches,
    statuses,
  };
}
