// wrk run inside a namespace, and its --latency output parsed.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './exec.js';

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: number;
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) throw new Error(`wrk: cannot parse latency ${v}`);
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

export function parseWrk(out: string): WrkResult {
  const pct = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out);
    if (!m) throw new Error(`wrk: no ${p}% latency in output:\n${out}`);
    return toMs(m[1]!);
  };
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!req || !rps) throw new Error(`wrk: unexpected output:\n${out}`);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: Number(req[1]),
    seconds: toMs(`${req[2]}${req[3]}`) / 1000,
    rps: Number(rps[1]),
    p50Ms: pct('50'),
    p90Ms: pct('90'),
    p99Ms: pct('99'),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    socketErrors: se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
  };
}

export interface WrkOptions {
  /** Request method other than GET (wrk takes it only from a Lua script: one is written for the run). */
  method?: string;
}

export async function wrk(ns: string | undefined, url: string, conns: number, seconds: number, headers: Record<string, string> = {}, opts: WrkOptions = {}): Promise<WrkResult> {
  const argv = ['wrk', '-t1', `-c${conns}`, `-d${seconds}s`, '--timeout', '10s', '--latency'];
  for (const [k, v] of Object.entries(headers)) argv.push('-H', `${k}: ${v}`);
  let dir: string | undefined;
  if (opts.method && opts.method !== 'GET') {
    if (!/^[A-Z]+$/.test(opts.method)) throw new Error(`wrk: bad method ${opts.method}`);
    dir = mkdtempSync(join(tmpdir(), 'qm-wrk-'));
    writeFileSync(join(dir, 'method.lua'), `wrk.method = "${opts.method}"\n`);
    argv.push('-s', join(dir, 'method.lua'));
  }
  argv.push(url);
  try {
    const { stdout } = await run(argv, { ns, timeoutMs: (seconds + 30) * 1000 });
    return parseWrk(stdout);
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}
