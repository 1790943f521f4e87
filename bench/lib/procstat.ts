// CPU time and memory of a process tree, straight from /proc.
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

function statFields(pid: number): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may contain spaces: field 3 (state) is index 0 here.
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** pid and all its live descendants. */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const f = statFields(Number(d));
    if (f) parent.set(Number(d), Number(f[1]));
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [c, p] of parent) if (p === out[i]) out.push(c);
  return out.filter((p) => parent.has(p));
}

/** utime+stime in seconds of this process alone (all its threads), not its children. */
export function cpuSecondsSelf(pid: number): number {
  const f = statFields(pid);
  return f ? (Number(f[11]) + Number(f[12])) / CLK_TCK : 0;
}

/**
 * Time on CPU in seconds of the live threads of pid, in nanoseconds from /proc/<pid>/task/<tid>/schedstat: utime+stime
 * comes in 10 ms ticks, too coarse for an idle process's milliseconds per second.
 */
export function cpuSecondsPrecise(pid: number): number {
  let ns = 0;
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        /* thread gone */
      }
    }
  } catch {
    /* process gone */
  }
  return ns / 1e9;
}

/** utime+stime+cutime+cstime: the process and the children it has waited for (an agent and its `ip` commands). */
export function cpuSecondsWithReaped(pid: number): number {
  const f = statFields(pid);
  return f ? (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK : 0;
}

/** utime+stime in seconds of the whole tree (all threads, including finished ones of live processes). */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    const f = statFields(p);
    if (f) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / CLK_TCK;
}

export interface Mem {
  /** VmRSS, KiB, summed over the tree. */
  rssKb: number;
  /** VmHWM (peak RSS), KiB, summed over the tree. */
  hwmKb: number;
  /** Private_Clean + Private_Dirty (smaps_rollup), KiB: what the process costs beyond shared pages. */
  privateKb: number;
  /** Pss (smaps_rollup): shared pages divided among the processes sharing them, i.e. the fair per-process cost. */
  pssKb: number;
}

export function memory(pid: number): Mem {
  const m: Mem = { rssKb: 0, hwmKb: 0, privateKb: 0, pssKb: 0 };
  for (const p of processTree(pid)) {
    try {
      const st = readFileSync(`/proc/${p}/status`, 'utf8');
      m.rssKb += Number(/VmRSS:\s+(\d+)/.exec(st)?.[1] ?? 0);
      m.hwmKb += Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0);
      const sm = readFileSync(`/proc/${p}/smaps_rollup`, 'utf8');
      m.privateKb += Number(/Private_Clean:\s+(\d+)/.exec(sm)?.[1] ?? 0) + Number(/Private_Dirty:\s+(\d+)/.exec(sm)?.[1] ?? 0);
      m.pssKb += Number(/^Pss:\s+(\d+)/m.exec(sm)?.[1] ?? 0);
    } catch {
      /* exited between listing and reading */
    }
  }
  return m;
}
