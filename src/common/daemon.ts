// Daemon plumbing in the manner of neutron/agent/linux/daemon.py: pid files whose liveness is checked
// against /proc/<pid>/cmdline and a uuid (bug 1177416: a stale pid must not pass for the daemon),
// detaching, and dropping privileges after the privileged bind.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from './errors.js';

/** The pid a pid file names, or undefined when the file is missing or does not parse (ProcessManager.pid). */
export function readPidFile(path: string): number | undefined {
  try {
    const n = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** /proc/<pid>/cmdline with its NULs as spaces, or undefined if the process is gone. */
export function processCmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return undefined;
  }
}

/** The pid from `pidFile` when that process is alive, is not us, and its command line holds `uuid`. */
export function runningDaemon(pidFile: string, uuid: string): number | undefined {
  const pid = readPidFile(pidFile);
  if (pid === undefined || pid === process.pid) return undefined;
  const cmd = processCmdline(pid);
  return cmd !== undefined && cmd.includes(uuid) ? pid : undefined;
}

/** Write the pid atomically (temp file + rename), creating the directory. */
export function writePidFile(path: string, pid = process.pid): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${pid}.tmp`;
  writeFileSync(tmp, `${pid}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Remove the pid file if it still names `pid` (a successor may already have replaced it). */
export function removePidFile(path: string, pid = process.pid): boolean {
  if (readPidFile(path) !== pid) return false;
  try {
    unlinkSync(path);
    return true;
  } catch {
    return false;
  }
}

export type ReadyMessage = { qmDaemon: 'ready' } | { qmDaemon: 'error'; message: string };

/**
 * Re-run this same program detached with `childArgs` (the caller adds --nodaemonize) and `nodeFlags`, stdio closed, and
 * wait until the child reports ready (exit 0) or fails (its message on stderr, exit 1).
 */
export function daemonize(childArgs: readonly string[], prog: string, timeoutMs = 15_000, nodeFlags: readonly string[] = []): Promise<never> {
  return new Promise<never>(() => {
    // Extra node flags (e.g. a smaller young generation) unless the caller already chose them.
    const extra = nodeFlags.filter((f) => !process.execArgv.some((a) => a.split('=')[0] === f.split('=')[0]));
    const child = spawn(process.execPath, [...process.execArgv, ...extra, process.argv[1]!, ...childArgs], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    const fail = (msg: string) => {
      process.stderr.write(`${prog}: ${msg}\n`);
      process.exit(1);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(`daemon did not become ready within ${timeoutMs} ms`);
    }, timeoutMs);
    child.on('message', (m: ReadyMessage) => {
      if (m?.qmDaemon === 'ready') {
        clearTimeout(timer);
        child.unref();
        child.disconnect();
        process.exit(0);
      } else if (m?.qmDaemon === 'error') {
        clearTimeout(timer);
        fail(m.message);
      }
    });
    child.on('exit', (code, sig) => fail(`daemon exited during start-up (${code ?? sig})`));
    child.on('error', (e) => fail(`cannot start daemon: ${e.message}`));
  });
}

/** In a daemonized child: tell the waiting parent, then let go of the IPC channel. No-op otherwise. */
export function notifyParent(m: ReadyMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(m, undefined, {}, () => {
      if (process.connected) process.disconnect();
      resolve();
    });
  });
}

const idOrName = (v: string): string | number => (/^\d+$/.test(v) ? Number(v) : v);

/**
 * setgid/setuid to the given user and group (names or numbers), group first. Supplementary groups are
 * reset so root's do not leak. Unknown names are ConfigErrors.
 */
export function dropPrivileges(user: string | undefined, group: string | undefined): void {
  if (!user && !group) return;
  if (typeof process.setuid !== 'function') throw new ConfigError('dropping privileges is not supported on this platform');
  if (group) {
    const g = idOrName(group);
    try {
      if (process.getuid!() === 0) process.setgroups!([g]);
      process.setgid!(g);
    } catch (e) {
      throw new ConfigError(`cannot switch to group ${JSON.stringify(group)}: ${(e as Error).message}`);
    }
  }
  if (user) {
    const u = idOrName(user);
    try {
      if (!group && process.getuid!() === 0) process.setgroups!([]);
      process.setuid!(u);
    } catch (e) {
      throw new ConfigError(`cannot switch to user ${JSON.stringify(user)}: ${(e as Error).message}`);
    }
  }
}
