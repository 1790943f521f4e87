// Long-running helpers (metadata proxies, dnsmasq) started inside namespaces and tracked by pid file, as
// neutron/agent/linux/external_process.py does: a process counts as ours and alive only when its pid is
// alive AND its /proc/<pid>/cmdline names our uuid, so a recycled pid is never mistaken for it.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { errorMessage } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/log.js';
import { launchDaemon, wrapNetns } from './exec.js';

export const externalPidsDir = (statePath: string) => join(statePath, 'external', 'pids');

export interface ProcessManagerOptions {
  uuid: string;
  /** $state_path; pid files go to $state_path/external/pids/<uuid>.pid[.<service>] unless pidFile is given. */
  statePath: string;
  namespace?: string | undefined;
  service?: string;
  /** Name used in logs (Neutron's service name, e.g. metadata-proxy); defaults to service, else "process". */
  label?: string;
  /** Explicit pid file (dnsmasq's is $state_path/dhcp/<net>/pid). */
  pidFile?: string;
  /** argv for the process, given its pid file. */
  cmd: (pidFile: string) => string[];
  /**
   * How the pid file gets written: 'manager' — the command stays in the foreground and we write its pid;
   * 'process' — the command writes the pid file itself (dnsmasq, a daemonizing proxy) and we wait for it.
   */
  pidFileWriter?: 'manager' | 'process';
  /**
   * The command daemonizes (forks and its launcher exits, as dnsmasq does): launched without forking the agent
   * (src/linux/exec.ts's launchDaemon); it writes its own pid file. Its exit is seen by the periodic check only.
   */
  daemonizes?: boolean;
  /** stdout/stderr of the process (append); default $state_path/external/logs/<uuid>[.<service>].log. */
  outputFile?: string;
  log?: Logger;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Is `pid` alive (and not a zombie)? */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The start time of a live, non-zombie `pid` (field 22 of /proc/<pid>/stat): with the pid, one process's identity. */
export function procStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the command (which may hold spaces and parentheses) start after its last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
  return rest[19];
}

/** The process's argv joined by spaces, or undefined if it is gone. */
export function readCmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return undefined;
  }
}

export class ProcessManager {
  readonly uuid: string;
  readonly service: string | undefined;
  readonly pidFile: string;
  private readonly log: Logger;
  constructor(readonly o: ProcessManagerOptions) {
    this.uuid = o.uuid;
    this.service = o.service;
    this.pidFile = o.pidFile ?? join(externalPidsDir(o.statePath), `${o.uuid}.pid${o.service ? `.${o.service}` : ''}`);
    this.log = o.log ?? silentLogger;
  }

  get label(): string {
    return this.o.label ?? this.o.service ?? 'process';
  }

  get namespace(): string | undefined {
    return this.o.namespace;
  }

  /** The pid in the pid file, or undefined when the file is missing or does not parse. */
  get pid(): number | undefined {
    try {
      const n = Number.parseInt(readFileSync(this.pidFile, 'utf8').trim(), 10);
      return Number.isInteger(n) && n > 0 ? n : undefined;
    } catch {
      return undefined;
    }
  }

  /** The process last found to be ours (its cmdline names our uuid): pid and start time. */
  private known: { pid: number; start: string } | undefined;

  /**
   * The pid file names a live process whose cmdline names our uuid (a recycled pid is not ours). The cmdline is
   * read once per process: later checks compare the start time, so the monitor's pass over a thousand dnsmasq
   * costs two small reads each.
   */
  get active(): boolean {
    const pid = this.pid;
    const start = pid === undefined ? undefined : procStartTime(pid);
    if (pid === undefined || start === undefined) {
      this.known = undefined;
      return false;
    }
    if (this.known?.pid === pid && this.known.start === start) return true;
    const cmd = readCmdline(pid);
    const ours = cmd !== undefined && cmd.includes(this.uuid);
    this.known = ours ? { pid, start } : undefined;
    return ours;
  }

  private enabling: Promise<void> | undefined;
  private readonly exitListeners = new Set<() => void>();

  /**
   * Be told when a process this manager started in the foreground (and still names in its pid file) exits,
   * e.g. killed with -9. Processes adopted from an earlier run, or that daemonize, are not our children:
   * only the periodic check sees those. Returns the unsubscribe function.
   */
  onExit(fn: () => void): () => void {
    this.exitListeners.add(fn);
    return () => this.exitListeners.delete(fn);
  }

  /**
   * Start the process unless it is already active. Resolves once the pid file names a live process.
   * Concurrent calls (an agent sync and the monitor) share one start instead of racing two copies.
   */
  enable(opts: { timeoutMs?: number; reloadCfg?: boolean } = {}): Promise<void> {
    if (!this.enabling) {
      this.enabling = this.doEnable(opts).finally(() => {
        this.enabling = undefined;
      });
    }
    return this.enabling;
  }

  private async doEnable(opts: { timeoutMs?: number; reloadCfg?: boolean }): Promise<void> {
    if (this.active) {
      if (opts.reloadCfg) this.reload();
      return;
    }
    mkdirSync(dirname(this.pidFile), { recursive: true });
    rmSync(this.pidFile, { force: true });
    const argv = wrapNetns(this.o.cmd(this.pidFile), this.o.namespace);
    const outFile = this.o.outputFile ?? join(this.o.statePath, 'external', 'logs', `${this.uuid}${this.service ? `.${this.service}` : ''}.log`);
    mkdirSync(dirname(outFile), { recursive: true });
    const fd = openSync(outFile, 'a');
    this.log.info({ uuid: this.uuid, service: this.label, argv }, `starting ${this.label}`);
    if (this.o.daemonizes) return this.launchDaemon(fd, outFile, argv, opts.timeoutMs ?? 10_000);
    let child;
    try {
      // `ip netns exec` execs the command in place, so the child's pid is the process's pid.
      child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    child.once('exit', () => {
      // A clean stop removes the pid file first; a pid file still naming this child means it died.
      if (child.pid !== undefined && this.pid === child.pid) for (const fn of this.exitListeners) fn();
    });
    child.unref();
    if ((this.o.pidFileWriter ?? 'manager') === 'manager') {
      if (child.pid === undefined) throw await spawnError;
      writeFileSync(this.pidFile, `${child.pid}\n`);
      return;
    }
    // A launcher that exits non-zero (bad flags, port in use) has failed: say so now, not at the deadline.
    let failed: string | undefined;
    child.once('exit', (code, signal) => {
      if (code !== 0) failed = `exited with ${code ?? signal}`;
    });
    child.once('error', (e) => {
      failed = e.message;
    });
    await this.awaitOwnPidFile(argv, outFile, Date.now() + (opts.timeoutMs ?? 10_000), opts.timeoutMs ?? 10_000, () => failed);
  }

  /**
   * For a command that writes its own pid file: resolves once it names a live process of ours; throws, with the
   * tail of the output, when `failed()` says the launcher failed or at the deadline.
   */
  private async awaitOwnPidFile(argv: readonly string[], outFile: string, deadline: number, timeoutMs: number, failed: () => string | undefined): Promise<void> {
    while (Date.now() < deadline && failed() === undefined) {
      if (this.active) return;
      await sleep(20);
    }
    if (this.active) return;
    let tail = '';
    try {
      tail = readFileSync(outFile, 'utf8').slice(-600).trim();
    } catch {
      /* no output */
    }
    const why = failed() ?? `no live process in ${this.pidFile} after ${timeoutMs} ms`;
    throw new Error(`${argv.join(' ')}: ${why}; output (${outFile}): ${tail}`);
  }

  /**
   * A process that daemonizes (its launcher exits once the daemon runs): launched without forking the agent, the
   * launcher's exit status says whether it started, then the pid file must name a live process.
   */
  private async launchDaemon(fd: number, outFile: string, argv: readonly string[], timeoutMs: number): Promise<void> {
    let failed: string | undefined;
    const deadline = Date.now() + timeoutMs;
    try {
      const r = await launchDaemon(this.o.cmd(this.pidFile), { netns: this.o.namespace, outputFd: fd, timeoutMs, log: this.log });
      if (r.exitCode !== 0) failed = `exited with ${r.exitCode ?? r.signal}`;
    } catch (e) {
      failed = errorMessage(e);
    } finally {
      closeSync(fd);
    }
    await this.awaitOwnPidFile(argv, outFile, deadline, timeoutMs, () => failed);
  }

  /** SIGHUP the process (dnsmasq re-reads its hosts and opts files). */
  reload(): void {
    const pid = this.pid;
    if (pid !== undefined && this.active) process.kill(pid, 'SIGHUP');
  }

  /** SIGTERM, wait up to `graceMs` (5 s), then SIGKILL; the pid file is removed. */
  async disable(graceMs = 5000): Promise<void> {
    const pid = this.pid;
    if (pid !== undefined && this.active) {
      this.log.info({ uuid: this.uuid, service: this.label, pid }, `stopping ${this.label}`);
      try {
        process.kill(pid, 'SIGTERM');
      } catch (e) {
        this.log.debug({ err: errorMessage(e), pid }, 'SIGTERM failed');
      }
      const deadline = Date.now() + graceMs;
      while (Date.now() < deadline && pidAlive(pid)) await sleep(25);
      if (pidAlive(pid)) {
        this.log.warn({ uuid: this.uuid, pid }, 'process ignored SIGTERM; sending SIGKILL');
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone meanwhile */
        }
        const d2 = Date.now() + 2000;
        while (Date.now() < d2 && pidAlive(pid)) await sleep(25);
      }
    } else if (pid !== undefined) {
      this.log.debug({ uuid: this.uuid, pid }, 'no active process for pid file; removing it');
    }
    rmSync(this.pidFile, { force: true });
  }
}

export type MonitorAction = 'respawn' | 'exit';

export interface ProcessMonitorOptions {
  /** Seconds between checks; 0 disables checking (Neutron's [AGENT] check_child_processes_interval). */
  intervalSec: number;
  action: MonitorAction;
  log?: Logger;
  /** Called for action=exit (default: process.exit(1), as Neutron raises SystemExit(1)). */
  onExit?: () => void;
}

/** Watches registered ProcessManagers and respawns (or exits) when one dies. */
export class ProcessMonitor {
  private readonly entries = new Map<string, ProcessManager>();
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private recheck = false;
  private readonly unsubscribe = new Map<string, () => void>();
  private readonly log: Logger;
  /** Respawns done, for state reports and tests. */
  respawns = 0;
  constructor(private readonly o: ProcessMonitorOptions) {
    this.log = o.log ?? silentLogger;
    if (o.intervalSec > 0) {
      this.timer = setInterval(() => void this.check(), o.intervalSec * 1000);
      this.timer.unref();
    }
  }

  private key(uuid: string, service?: string): string {
    return `${uuid}|${service ?? ''}`;
  }

  register(pm: ProcessManager): void {
    const key = this.key(pm.uuid, pm.service);
    if (this.entries.get(key) === pm) return;
    this.unsubscribe.get(key)?.();
    this.entries.set(key, pm);
    // Checking stays periodic as in Neutron; a child's death just brings the next check forward.
    if (this.o.intervalSec > 0) this.unsubscribe.set(key, pm.onExit(() => this.requestCheck()));
  }

  unregister(uuid: string, service?: string): void {
    const key = this.key(uuid, service);
    this.unsubscribe.get(key)?.();
    this.unsubscribe.delete(key);
    this.entries.delete(key);
  }

  private requestCheck(): void {
    if (this.checking) {
      this.recheck = true;
      return;
    }
    setImmediate(() => void this.check());
  }

  isRegistered(uuid: string, service?: string): boolean {
    return this.entries.has(this.key(uuid, service));
  }

  /** One pass over every registered process; exported so agents can run one at start. */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      for (const [key, pm] of [...this.entries]) {
        if (pm.active) continue;
        if (this.entries.get(key) !== pm) continue;
        this.log.error({ uuid: pm.uuid, service: pm.label, pid: pm.pid }, `${pm.label} with uuid ${pm.uuid} not found. The process should not have died`);
        if (this.o.action === 'exit') {
          this.log.error('Exiting agent as programmed in check_child_processes_actions');
          (this.o.onExit ?? (() => process.exit(1)))();
          return;
        }
        this.log.error({ uuid: pm.uuid, service: pm.label }, `respawning ${pm.label} for uuid ${pm.uuid}`);
        try {
          await pm.enable();
          this.respawns++;
        } catch (e) {
          this.log.error({ uuid: pm.uuid, err: errorMessage(e) }, 'respawn failed; will retry at the next check');
        }
      }
    } finally {
      this.checking = false;
      if (this.recheck && this.timer) {
        this.recheck = false;
        setImmediate(() => void this.check());
      }
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const u of this.unsubscribe.values()) u();
    this.unsubscribe.clear();
    this.entries.clear();
  }
}
