// What a result file says about its run: date, machine, load average at start and end, tool versions, commit.
import { cpus, loadavg } from 'node:os';
import { run } from './exec.js';

export interface RunMeta {
  date: string;
  host: { cpus: number; model?: string | undefined; kernel: string; loadavgStart: number[] };
  loadavgEnd?: number[];
  node: string;
  /** First line of `<tool> -v` for each tool asked for. */
  tools: Record<string, string>;
  commit: string;
  /** The build measured includes uncommitted changes under src/. */
  srcUncommitted: boolean;
}

async function firstLine(argv: string[]): Promise<string> {
  try {
    const r = await run(argv, { allowFail: true });
    return `${r.stdout}${r.stderr}`.split('\n')[0]!.trim();
  } catch (e) {
    return (e as Error).message.split('\n')[0]!;
  }
}

export async function runMeta(repoRoot: string, tools: string[]): Promise<RunMeta> {
  const versions: Record<string, string> = {};
  for (const t of tools) versions[t] = (await firstLine([t, '-v'])).replace(/ Copyright.*/, '');
  return {
    date: new Date().toISOString(),
    host: { cpus: cpus().length, model: cpus()[0]?.model, kernel: await firstLine(['uname', '-r']), loadavgStart: loadavg() },
    node: process.version,
    tools: versions,
    commit: await firstLine(['git', '-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
    srcUncommitted: (await firstLine(['git', '-C', repoRoot, 'status', '--porcelain', '--', 'src'])) !== '',
  };
}

/** The "Machine: …" line of a report, with the load average at start and end. */
export function machineLine(m: RunMeta): string {
  const la = (x?: number[]) => (x ?? []).map((v) => v.toFixed(2)).join(' ');
  const peak = Math.max(m.host.loadavgStart[0] ?? 0, m.loadavgEnd?.[0] ?? 0);
  return (
    `Machine: ${m.host.cpus} CPUs (${m.host.model ?? '?'}), kernel ${m.host.kernel}, node ${m.node}${Object.values(m.tools).map((t) => `, ${t}`).join('')}; ` +
    `commit ${m.commit}${m.srcUncommitted ? ' (+ uncommitted changes in src/)' : ''}. Load average (1/5/15 min) at start ${la(m.host.loadavgStart)}, at end ${la(m.loadavgEnd)}` +
    (peak >= m.host.cpus * 0.5 ? `: **a loaded ${m.host.cpus}-core machine** (other work was running), so single runs swing; the paired ratios are the figures to read.` : '.')
  );
}
