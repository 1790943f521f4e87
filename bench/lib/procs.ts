// The processes under test: the minimal upstream, our proxy, haproxy. Each runs in the router namespace with
// its output in a log file under the run's tmp dir, and is stopped by its own pid.
import { openSync, closeSync, readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { run, start } from './exec.js';
import { haproxyArgv, neutronHaproxyConfig } from './haproxy.js';

export interface Proc {
  name: string;
  pid: number;
  child: ChildProcess;
  logPath: string;
  stop(): Promise<void>;
  exited(): boolean;
}

/**
 * `detached`: in a session of its own, as the agents start the proxies (ProcessManager, SharedMetadataProxy). With
 * the kernel's autogroup scheduling (sched_autogroup_enabled) a session is a scheduling group: a process left in the
 * benchmark's session shares it with wrk and the upstream, which measurably changes its CPU per request.
 */
export function launch(name: string, argv: string[], ns: string | undefined, tmp: string, env: Record<string, string> = {}, o: { detached?: boolean } = {}): Proc {
  const logPath = join(tmp, `${name}.log`);
  const fd = openSync(logPath, 'a');
  const child = start(argv, ns, { stdio: ['ignore', fd, fd], env: { ...process.env, ...env }, detached: o.detached ?? false });
  closeSync(fd);
  let done = false;
  const exitedP = new Promise<void>((r) =>
    child.once('exit', () => {
      done = true;
      r();
    }),
  );
  if (!child.pid) throw new Error(`${name}: could not start ${argv.join(' ')}`);
  return {
    name,
    pid: child.pid,
    child,
    logPath,
    exited: () => done,
    async stop() {
      if (done) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exitedP;
      clearTimeout(t);
    },
  };
}

export function logTail(p: Proc, lines = 15): string {
  try {
    return readFileSync(p.logPath, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Wait until something listens on TCP `port` inside `ns` (ss in the namespace), or the process died. */
export async function waitTcpListen(p: Proc, ns: string, port: number, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (p.exited()) throw new Error(`${p.name} exited during start-up:\n${logTail(p)}`);
    const { stdout } = await run(['ss', '-Hltn', `sport = :${port}`], { ns, allowFail: true });
    if (stdout.trim()) return;
    await sleep(50);
  }
  throw new Error(`${p.name} did not listen on port ${port} within ${timeoutMs} ms:\n${logTail(p)}`);
}

export async function waitUnixListen(p: Proc, path: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (p.exited()) throw new Error(`${p.name} exited during start-up:\n${logTail(p)}`);
    if (existsSync(path)) {
      try {
        await unixGet(path, '/');
        return;
      } catch {
        /* not yet accepting */
      }
    }
    await sleep(50);
  }
  throw new Error(`${p.name} did not listen on ${path} within ${timeoutMs} ms:\n${logTail(p)}`);
}

export function unixGet(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, agent: false, headers: { connection: 'close' } }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => (b += d));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

export interface UpstreamStats {
  unixConns: number;
  tcpConns: number;
  requests: number;
  notFound: number;
  missingHeaders: number;
  last: { xff: string; routerId: string; networkId: string; path: string };
}

export async function upstreamStats(ctl: string): Promise<UpstreamStats> {
  return JSON.parse(await unixGet(ctl, '/stats')) as UpstreamStats;
}

export interface UpstreamHandle extends Proc {
  socket: string;
  ctl: string;
}

export async function startUpstream(main: string, ns: string, tmp: string, tcp?: string): Promise<UpstreamHandle> {
  const socket = join(tmp, 'upstream.sock');
  const ctl = join(tmp, 'upstream-ctl.sock');
  const argv = [process.execPath, main, '--socket', socket, '--ctl', ctl, ...(tcp ? ['--tcp', tcp] : [])];
  const p = launch('upstream', argv, ns, tmp);
  await waitUnixListen(p, ctl);
  return { ...p, socket, ctl };
}

export async function startOurProxy(
  name: string,
  main: string,
  ns: string,
  tmp: string,
  a: { routerId: string; port: number; socket: string; nodeArgs?: string[]; detached?: boolean },
): Promise<Proc> {
  const state = join(tmp, `state-${name}`);
  mkdirSync(state, { recursive: true });
  const argv = [
    process.execPath,
    ...(a.nodeArgs ?? []),
    main,
    '--nodaemonize',
    `--router_id=${a.routerId}`,
    `--state_path=${state}`,
    `--metadata_port=${a.port}`,
    `--metadata_proxy_socket=${a.socket}`,
  ];
  const p = launch(name, argv, ns, tmp, {}, { detached: a.detached ?? false });
  await waitTcpListen(p, ns, a.port);
  return p;
}

export async function startHaproxy(name: string, ns: string, tmp: string, a: { routerId: string; port: number; socket: string }): Promise<Proc> {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, `${a.routerId}.conf`);
  writeFileSync(conf, neutronHaproxyConfig({ routerId: a.routerId, port: a.port, socketPath: a.socket, pidFile: join(dir, `${a.routerId}.pid.haproxy`) }));
  const p = launch(name, haproxyArgv(conf), ns, tmp);
  await waitTcpListen(p, ns, a.port);
  return p;
}
