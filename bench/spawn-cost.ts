// What one short command (`ip link show`, as the agents run hundreds per converge) costs the process that runs
// it, node's child_process.spawn against the qm_netns addon's spawner (src/linux/native/spawn.c), in the root
// namespace and inside one (`ip netns exec` against setns), as the running process grows (node's fork copies
// its page tables: the cost follows the agent's size). One run, the two ways interleaved at each size.
//   node dist/bench/spawn-cost.js [--sizes 100,300,1000] [--commands 300] [--out bench/results/spawn-cost]
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { nativeAddon } from '../src/linux/native-addon.js';
import { netnsPath } from '../src/linux/netns-socket.js';
import { run } from './lib/exec.js';
import { runPrefix } from './lib/netns.js';
import { machineLine, runMeta } from './lib/runmeta.js';

const { values: flags } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100,300,1000' },
    commands: { type: 'string', default: '300' },
    out: { type: 'string', default: 'bench/results/spawn-cost' },
  },
});
const SIZES_MB = flags.sizes.split(',').map(Number);
const N = Number(flags.commands);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const addon = nativeAddon();
if (!addon) {
  process.stderr.write('spawn-cost: the qm_netns addon is not built (npm run build)\n');
  process.exit(1);
}

/** CPU of this process, and of its reaped children, in ms. */
function cpu(): { self: number; children: number } {
  const u = process.cpuUsage();
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  // cutime, cstime: fields 16 and 17 of stat(5), the 14th and 15th after the command name; 100 ticks a second.
  return { self: (u.user + u.system) / 1000, children: (Number(f[13]) + Number(f[14])) * 10 };
}

function forked(argv: string[]): Promise<void> {
  return new Promise((res, rej) => {
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    c.stdout.resume();
    c.stderr.resume();
    c.on('error', rej);
    c.on('close', (code) => (code === 0 ? res() : rej(new Error(`${argv.join(' ')}: exit ${code}`))));
    c.stdin.end();
  });
}

async function native(argv: string[], ns: string | null): Promise<void> {
  const r = await addon!.spawnCommand(argv, ns, '', 30_000);
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')}: exit ${r.exitCode}: ${r.stderr}`);
}

interface Cell {
  wallMs: number;
  selfMs: number;
  childMs: number;
}

async function measure(fn: () => Promise<void>): Promise<Cell> {
  await fn();
  const c0 = cpu();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await fn();
  const wall = performance.now() - t0;
  const c1 = cpu();
  return { wallMs: wall / N, selfMs: (c1.self - c0.self) / N, childMs: (c1.children - c0.children) / N };
}

const ballast: Buffer[] = [];
/** Grow this process to about `mb` MB resident (touched memory: page tables to copy, as an agent's heap). */
function growTo(mb: number): number {
  while (process.memoryUsage().rss < mb * 1e6) ballast.push(Buffer.alloc(8 << 20, 1));
  return process.memoryUsage().rss / 1e6;
}

async function main(): Promise<void> {
  const meta = await runMeta(repo, []);
  const ns = `${runPrefix()}-spawn`;
  await run(['ip', 'netns', 'add', ns]);
  const rows: string[] = [];
  const json: unknown[] = [];
  try {
    for (const mb of SIZES_MB) {
      const rss = growTo(mb);
      const cells = {
        forkRoot: await measure(() => forked(['ip', 'link', 'show', 'lo'])),
        nativeRoot: await measure(() => native(['ip', 'link', 'show', 'lo'], null)),
        forkNs: await measure(() => forked(['ip', 'netns', 'exec', ns, 'ip', 'link', 'show', 'lo'])),
        nativeNs: await measure(() => native(['ip', 'link', 'show', 'lo'], netnsPath(ns))),
      };
      json.push({ rssMB: rss, ...cells });
      const f = (x: number) => x.toFixed(2);
      const r = (a: number, b: number) => `${(a / b).toFixed(1)}×`;
      for (const [where, fk, nt] of [
        ['root namespace', cells.forkRoot, cells.nativeRoot],
        ['in a namespace', cells.forkNs, cells.nativeNs],
      ] as const) {
        rows.push(
          `| ${rss.toFixed(0)} | ${where} | ${f(fk.selfMs)} / ${f(nt.selfMs)} (${r(fk.selfMs, nt.selfMs)}) | ${f(fk.childMs)} / ${f(nt.childMs)} | ${f(fk.wallMs)} / ${f(nt.wallMs)} (${r(fk.wallMs, nt.wallMs)}) |`,
        );
      }
      process.stdout.write(`${rows.slice(-2).join('\n')}\n`);
    }
  } finally {
    await run(['ip', 'netns', 'delete', ns], { allowFail: true });
  }
  meta.loadavgEnd = (await import('node:os')).loadavg();
  const md = [
    `# spawn cost: node's child_process.spawn against the qm_netns spawner, ${meta.date}`,
    '',
    `${N} runs of \`ip link show lo\` per cell, one after another, in one process grown to the size shown (touched memory, as an agent's heap). "in a namespace": \`ip netns exec NS ip link show lo\` against the spawner's setns. Each cell is spawn / spawner.`,
    '',
    '| process RSS MB | where | this process CPU ms per command | children CPU ms per command | wall ms per command |',
    '|---:|---|---:|---:|---:|',
    ...rows,
    '',
    'Children CPU is from cutime + cstime, counted in 10 ms ticks: coarse, but summed over all the runs of a cell.',
    '',
    machineLine(meta),
    '',
  ].join('\n');
  writeFileSync(`${resolve(flags.out)}.md`, md);
  writeFileSync(`${resolve(flags.out)}.json`, `${JSON.stringify({ meta, commands: N, results: json }, null, 1)}\n`);
  process.stdout.write(md);
}

main().catch((e: unknown) => {
  process.stderr.write(`spawn-cost: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
