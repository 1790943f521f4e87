// All command execution of the benchmark goes through here: short commands (ip, iptables, wrk) through
// src/linux's exec wrapper; long-running processes (proxies, upstream, storm guests) are spawned here and
// tracked so an interrupted run ends exactly the processes it started.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { executeFull, wrapNetns } from '../../src/linux/exec.js';

/** Every child this benchmark started, so an interrupted run can end exactly those (by pid). */
const children = new Set<ChildProcess>();

export function track(p: ChildProcess): ChildProcess {
  children.add(p);
  p.once('exit', () => children.delete(p));
  return p;
}

/** Signal every child still running (SIGINT/SIGTERM of the benchmark, or a failure). */
export function killChildren(signal: NodeJS.Signals = 'SIGTERM'): void {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill(signal);
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

export interface RunOptions {
  /** Run inside this network namespace (`ip netns exec <ns> ...`). */
  ns?: string;
  /** Written to stdin, then stdin is closed. */
  input?: string;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
  timeoutMs?: number;
}

/** argv prefixed with `ip netns exec <ns>` when ns is given. */
export const nsArgv = (ns: string | undefined, argv: readonly string[]): string[] => wrapNetns(argv, ns);

/** Run a command to completion (through src/linux's exec door); throws CommandError on failure unless allowFail. */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await executeFull(argv, { netns: opts.ns, input: opts.input ?? '', checkExit: !opts.allowFail, timeoutMs: opts.timeoutMs ?? 60_000 });
  return { stdout: r.stdout, stderr: r.stderr, code: r.exitCode };
}

/** fn over items, at most n at a time. */
export async function parallel<T>(items: readonly T[], n: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      for (let i = next++; i < items.length; i = next++) await fn(items[i]!, i);
    }),
  );
}

/** Start a long-running process (optionally in a namespace). `ip netns exec` execs, so the pid is the program's. */
export function start(argv: readonly string[], ns?: string, opts: SpawnOptions = {}): ChildProcess {
  const full = nsArgv(ns, argv);
  return track(spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...opts }));
}
