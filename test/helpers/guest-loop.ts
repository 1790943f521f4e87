// A guest inside a namespace fetching metadata in a loop, a new TCP connection per request (as cloud-init
// does), for a bounded time: how many answers, failures, refused connections, and the longest time
// without an answer. Used by the shared proxy's kill -9 and adoption tests and by the benchmark.
import { spawn } from 'node:child_process';

export interface LoopResult {
  ok: number;
  failed: number;
  refused: number;
  /** Failures by error code or status. */
  errors: Record<string, number>;
  /** Longest time between two answers (or from the start to the first), ms. */
  maxGapMs: number;
  /** Router/network ids the upstream saw (when it echoes headers as JSON). */
  ids: string[];
}

const SCRIPT = `
const http = require('http');
const [url, ms] = [process.argv[1], Number(process.argv[2])];
const r = { ok: 0, failed: 0, refused: 0, errors: {}, maxGapMs: 0, ids: [] };
const t0 = Date.now();
let last = t0;
const ids = new Set();
const fail = (k) => { r.failed++; r.errors[k] = (r.errors[k] || 0) + 1; if (k === 'ECONNREFUSED') r.refused++; };
const one = () => new Promise((resolve) => {
  const req = http.get(url, { agent: false, headers: { connection: 'close' }, timeout: 10000 }, (res) => {
    let b = '';
    res.setEncoding('utf8').on('data', (c) => (b += c));
    res.on('end', () => {
      if (res.statusCode === 200) {
        const now = Date.now();
        r.maxGapMs = Math.max(r.maxGapMs, now - last);
        last = now;
        r.ok++;
        try { const h = JSON.parse(b).headers || {}; ids.add(h['x-neutron-router-id'] || h['x-neutron-network-id'] || ''); } catch {}
      } else fail('HTTP ' + res.statusCode);
      resolve();
    });
    res.on('error', (e) => { fail(e.code || e.message); resolve(); });
  });
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  req.on('error', (e) => { fail(e.code || e.message); resolve(); });
});
(async () => {
  while (Date.now() - t0 < ms) await one();
  r.maxGapMs = Math.max(r.maxGapMs, Date.now() - last);
  r.ids = [...ids];
  process.stdout.write(JSON.stringify(r));
})();
`;

/** Run the loop in `ns` for `ms`; resolves with its counts. `onPid` sees the loop's pid (to track it). */
export function guestLoop(ns: string, url: string, ms: number, onPid?: (pid: number) => void): Promise<LoopResult> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', SCRIPT, url, String(ms)], { stdio: ['ignore', 'pipe', 'pipe'] });
    if (p.pid !== undefined) onPid?.(p.pid);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), ms + 30_000);
    p.on('exit', (code) => {
      clearTimeout(t);
      try {
        resolve(JSON.parse(out) as LoopResult);
      } catch {
        reject(new Error(`guest loop in ${ns} exited ${code}: ${err || out}`));
      }
    });
  });
}
