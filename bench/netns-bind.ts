// What it costs an agent to get a listening socket inside a namespace for the shared proxy, two ways:
//  - addon: qm_netns.listenInNamespace (setns on the agent's thread, socket/bind/listen, setns back);
//  - helper: `ip netns exec <ns> node helper.js`, which binds and passes the handle over node's IPC channel.
// Wall time and CPU per namespace. Not a test. As root: node dist/bench/netns-bind.js [--n 50] [--helpers 20]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadNetnsSocket, netnsPath } from '../src/linux/netns-socket.js';
import { nativeAddonPath } from '../src/linux/native-addon.js';
import { run } from './lib/exec.js';
import { runPrefix } from './lib/netns.js';
import { CLK_TCK } from './lib/procstat.js';
import { fmt, median, table } from './lib/stats.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const { values: flags } = parseArgs({ options: { n: { type: 'string' }, helpers: { type: 'string' }, out: { type: 'string' } } });
const N = Number(flags.n ?? 50);
const HELPERS = Number(flags.helpers ?? 20);
const PORT = 9697;

const HELPER = `
const s = require('net').createServer();
s.listen({ host: process.argv[2], port: Number(process.argv[3]), backlog: 511 }, () => process.send({ ok: true }, s, () => process.exit(0)));
s.on('error', (e) => { process.send({ ok: false, err: e.message }); process.exit(1); });
`;

/** CPU seconds of this process's waited-for children (cutime + cstime). */
function childrenCpu(): number {
  const f = readFileSync('/proc/self/stat', 'utf8');
  const v = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(v[13]) + Number(v[14])) / CLK_TCK;
}

function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function helperBind(ns: string, script: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, script, '0.0.0.0', String(PORT)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    p.once('message', (m: { ok: boolean; err?: string }, handle: unknown) => (m.ok ? resolve(handle as Server) : reject(new Error(m.err))));
    p.once('error', reject);
    p.once('exit', (code) => code !== 0 && reject(new Error(`helper in ${ns} exited ${code}`)));
  });
}

async function main(): Promise<void> {
  const netns = loadNetnsSocket(nativeAddonPath);
  const prefix = runPrefix();
  const names = Array.from({ length: N }, (_, i) => `${prefix}-b${i}`);
  const tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const script = join(tmp, 'helper.cjs');
  writeFileSync(script, HELPER);
  await run(['ip', '-batch', '-'], { input: names.map((n) => `netns add ${n}`).join('\n') + '\n' });
  try {
    // Addon: three rounds over every namespace, sockets closed between rounds.
    const per: number[] = [];
    const cpu0 = ownCpu();
    const t0 = process.hrtime.bigint();
    for (let round = 0; round < 3; round++) {
      const fds: number[] = [];
      for (const n of names) {
        const a = process.hrtime.bigint();
        fds.push(netns.listenInNamespace(netnsPath(n), '0.0.0.0', PORT, 511));
        per.push(Number(process.hrtime.bigint() - a) / 1000);
      }
      for (const fd of fds) netns.closeFd(fd);
    }
    const addonWallUs = Number(process.hrtime.bigint() - t0) / 1000 / (3 * N);
    const addonCpuUs = ((ownCpu() - cpu0) * 1e6) / (3 * N);

    // Helper process per namespace (sequential, as an agent's sync would do them).
    const k = Math.min(HELPERS, N);
    const hPer: number[] = [];
    const c0 = childrenCpu();
    const own0 = ownCpu();
    const servers: Server[] = [];
    for (const n of names.slice(0, k)) {
      const a = process.hrtime.bigint();
      servers.push(await helperBind(n, script));
      hPer.push(Number(process.hrtime.bigint() - a) / 1e6);
    }
    await new Promise((r) => setTimeout(r, 200));
    const helperCpuMs = ((childrenCpu() - c0) * 1000) / k;
    const helperOwnMs = ((ownCpu() - own0) * 1000) / k;
    for (const s of servers) s.close();

    const md = [
      `# Binding a listening socket inside a namespace (${new Date().toISOString()})`,
      '',
      `node ${process.version}, kernel ${readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, ${N} namespaces. Load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}.`,
      '',
      table(
        ['way', 'namespaces', 'wall per namespace (median)', 'wall per namespace (mean)', 'CPU per namespace'],
        [
          ['addon: listenInNamespace (setns, socket, bind, listen, setns back)', 3 * N, `${fmt(median(per), 1)} µs`, `${fmt(addonWallUs, 1)} µs`, `${fmt(addonCpuUs, 1)} µs (the agent)`],
          ['helper: ip netns exec <ns> node helper.js, handle over IPC', k, `${fmt(median(hPer), 1)} ms`, `${fmt(hPer.reduce((a, b) => a + b, 0) / k, 1)} ms`, `${fmt(helperCpuMs, 1)} ms (the helper) + ${fmt(helperOwnMs, 1)} ms (the agent)`],
        ],
      ),
      '',
      `Ratio (median wall): ${fmt((median(hPer) * 1000) / median(per), 0)}×.`,
      '',
    ].join('\n');
    const out = join(repoRoot, 'bench', 'results', `${flags.out ?? 'netns-bind'}.md`);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, md);
    process.stdout.write(`${md}\nwrote ${out}\n`);
  } finally {
    await run(['ip', '-force', '-batch', '-'], { input: names.map((n) => `netns delete ${n}`).join('\n') + '\n', allowFail: true });
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`netns-bind: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
