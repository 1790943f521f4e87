// The one door every external command (ip, iptables, sysctl, dnsmasq, kill...) goes through: argv is
// logged at debug, a non-zero exit becomes a typed CommandError carrying stderr.
//
// Commands run through the qm_netns addon's spawner (src/linux/native/spawn.c) when it is built: posix_spawn on a
// thread of its own, entering the namespace with setns instead of an `ip netns exec` process. node's own spawn
// fork()s the agent on its main thread; bench/spawn-cost.ts measures both (the agent's CPU per command falls
// 5-10x at 100 MB of agent, 10-20x at 300 MB: a fork's cost grows with the process, a posix_spawn's does not).
// Without the addon (before `npm run build` has compiled it, e.g. while it compiles itself) node's spawn runs them.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CommandError } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/log.js';
import { nativeAddon } from './native-addon.js';
import { isErrno, netnsPath } from './netns-socket.js';

export interface ExecOptions {
  /** Run inside this network namespace (as `ip netns exec <ns> ...` would). */
  netns?: string | undefined;
  /** Written to the command's stdin. */
  input?: string;
  /** Throw on a non-zero exit (default true). */
  checkExit?: boolean;
  /** Exit codes that count as success besides 0. */
  extraOkCodes?: readonly number[];
  log?: Logger;
  /** Kill the command after this many ms (default 30 s): a hung `ip` must not wedge an agent. */
  timeoutMs?: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
}

/** argv as `ip netns exec` runs it: for node's spawn, for namespaces with /etc/netns files, and for messages. */
export function wrapNetns(argv: readonly string[], netns?: string): string[] {
  return netns ? ['ip', 'netns', 'exec', netns, ...argv] : [...argv];
}

/** Per-namespace files `ip netns exec` bind-mounts over /etc (ip-netns(8)). */
const ETC_NETNS = '/etc/netns';

interface Outcome extends ExecResult {
  signal: string | null;
}

/**
 * The addon's spawner: the child is born in the namespace (setns on the spawning thread), no `ip netns exec`.
 * A namespace with an /etc/netns/<ns> directory (a test guest's resolv.conf) still goes through `ip netns exec`,
 * which bind-mounts those files: dhclient-script must write the guest's resolv.conf, not the host's.
 */
function nativeTarget(argv: readonly string[], ns: string | undefined): { argv: readonly string[]; nsPath: string | null } {
  if (ns === undefined || ns === '') return { argv, nsPath: null };
  if (existsSync(join(ETC_NETNS, ns))) return { argv: wrapNetns(argv, ns), nsPath: null };
  return { argv, nsPath: netnsPath(ns) };
}

async function runNative(argv: readonly string[], opts: ExecOptions, timeoutMs: number): Promise<Outcome> {
  const addon = nativeAddon()!;
  const t = nativeTarget(argv, opts.netns);
  try {
    const r = await addon.spawnCommand(t.argv, t.nsPath, opts.input ?? '', timeoutMs);
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, signal: r.signal };
  } catch (e) {
    // A namespace that is not there fails as `ip netns exec` fails, exit 1, so that checkExit: false still holds.
    if (opts.netns && isErrno(e) && (e.syscall === 'open' || e.syscall === 'setns')) {
      return { stdout: '', stderr: `Cannot open network namespace "${opts.netns}": ${e.message}\n`, exitCode: 1, signal: null };
    }
    throw e;
  }
}

function runForked(argv: readonly string[], opts: ExecOptions, timeoutMs: number): Promise<Outcome> {
  const full = wrapNetns(argv, opts.netns);
  return new Promise((resolve, reject) => {
    const child = spawn(full[0]!, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(Object.assign(e, { stderr: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout: out, stderr: err, exitCode: code, signal });
    });
    child.stdin.on('error', () => {
      /* the command may exit before reading its input; its exit status tells the story */
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Run a command and return its full result; throws CommandError on failure unless checkExit is false. */
export async function executeFull(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const full = wrapNetns(argv, opts.netns);
  const log = opts.log ?? silentLogger;
  log.debug({ argv: full }, 'running command');
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let r: Outcome;
  try {
    r = nativeAddon() ? await runNative(argv, opts, timeoutMs) : await runForked(argv, opts, timeoutMs);
  } catch (e) {
    // It did not start: not found, not executable, no such namespace.
    const stderr = (e as { stderr?: string }).stderr ?? '';
    const why = isErrno(e) ? e.message : String(e);
    log.debug({ argv: full, error: why }, 'command did not start');
    throw new CommandError(full, null, `${stderr}${why}`);
  }
  const ok = r.exitCode === 0 || (r.exitCode !== null && (opts.extraOkCodes ?? []).includes(r.exitCode));
  if (!ok && opts.checkExit !== false) {
    log.debug({ argv: full, exitCode: r.exitCode, signal: r.signal, stderr: r.stderr.trim() }, 'command failed');
    throw new CommandError(full, r.exitCode, r.stderr, r.signal);
  }
  return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
}

/** Run a command and return its stdout; throws CommandError (with stderr) on a non-zero exit. */
export async function execute(argv: readonly string[], opts: ExecOptions = {}): Promise<string> {
  return (await executeFull(argv, opts)).stdout;
}

export interface LaunchResult {
  exitCode: number | null;
  signal: string | null;
}

/**
 * Start a process that daemonizes (dnsmasq): its launcher runs in a session of its own with stdout and stderr on
 * `outputFd` (held open until this settles) and stdin on /dev/null, inside `netns` when given; resolves when the
 * launcher exits (a non-zero exit is the daemon failing to start), rejects when it cannot start. Through the
 * addon's spawner when built (no fork of the agent: at a thousand networks the DHCP agent spent a quarter of
 * its busy time forking itself for dnsmasq), else node's spawn.
 */
export async function launchDaemon(argv: readonly string[], o: { netns?: string | undefined; outputFd: number; timeoutMs?: number; log?: Logger }): Promise<LaunchResult> {
  const full = wrapNetns(argv, o.netns);
  (o.log ?? silentLogger).debug({ argv: full }, 'launching daemon');
  const timeoutMs = o.timeoutMs ?? 30_000;
  const addon = nativeAddon();
  if (addon) {
    const t = nativeTarget(argv, o.netns);
    const r = await addon.spawnCommand(t.argv, t.nsPath, '', timeoutMs, { outputFd: o.outputFd, setsid: true });
    return { exitCode: r.exitCode, signal: r.signal };
  }
  return new Promise((resolve, reject) => {
    const child = spawn(full[0]!, full.slice(1), { detached: true, stdio: ['ignore', o.outputFd, o.outputFd] });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ exitCode: code, signal });
    });
  });
}
