// The one door every external command (ip, iptables, sysctl, dnsmasq, kill...) goes through: argv is
// logged at debug, a non-zero exit becomes a typed CommandError carrying stderr.
import { spawn } from 'node:child_process';
import { CommandError } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/log.js';

export interface ExecOptions {
  /** Run inside this network namespace (`ip netns exec <ns> ...`). */
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

/** argv as it will really run: wrapped in `ip netns exec` when a namespace is given. */
export function wrapNetns(argv: readonly string[], netns?: string): string[] {
  return netns ? ['ip', 'netns', 'exec', netns, ...argv] : [...argv];
}

/** Run a command and return its full result; throws CommandError on failure unless checkExit is false. */
export function executeFull(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const full = wrapNetns(argv, opts.netns);
  const log = opts.log ?? silentLogger;
  log.debug({ argv: full }, 'running command');
  return new Promise((resolve, reject) => {
    const child = spawn(full[0]!, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CommandError(full, null, `${err}${(e as Error).message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const ok = code === 0 || (code !== null && (opts.extraOkCodes ?? []).includes(code));
      if (!ok && opts.checkExit !== false) {
        const e = new CommandError(full, code, err, signal);
        log.debug({ argv: full, exitCode: code, stderr: err.trim() }, 'command failed');
        reject(e);
        return;
      }
      resolve({ stdout: out, stderr: err, exitCode: code });
    });
    child.stdin.on('error', () => {
      /* the command may exit before reading its input; its exit status tells the story */
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Run a command and return its stdout; throws CommandError (with stderr) on a non-zero exit. */
export async function execute(argv: readonly string[], opts: ExecOptions = {}): Promise<string> {
  return (await executeFull(argv, opts)).stdout;
}
