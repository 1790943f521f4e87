// The all-in-one stack: config files for every daemon under one data directory, the daemons as detached
// processes with pid files, readiness waits, and a stop that ends only what this stack started.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pidAlive } from '../linux/external-process.js';

const here = dirname(fileURLToPath(import.meta.url));
/** <build>/src */
export const srcRoot = resolve(here, '..');

export interface StackPorts {
  quantum: number;
  compute: number;
  metadata: number;
}

export interface StackLayout {
  dataDir: string;
  etc: string;
  logs: string;
  run: string;
  quantumState: string;
  novaState: string;
  socket: string;
  ports: StackPorts;
  bindHost: string;
  guestPrefix: string;
}

export function layout(dataDir: string, ports: StackPorts = { quantum: 9696, compute: 8774, metadata: 8775 }, bindHost = '127.0.0.1', guestPrefix = ''): StackLayout {
  const d = resolve(dataDir);
  return {
    dataDir: d,
    etc: join(d, 'etc'),
    logs: join(d, 'log'),
    run: join(d, 'run'),
    quantumState: join(d, 'quantum'),
    novaState: join(d, 'nova'),
    socket: join(d, 'quantum', 'metadata_proxy'),
    ports,
    bindHost,
    guestPrefix,
  };
}

export interface DaemonDef {
  name: string;
  main: string;
  configs: string[];
  /** How to know it is up. */
  ready: { port: number } | { path: string };
}

/** Daemons in start order (stop runs in reverse). */
export function daemons(l: StackLayout): DaemonDef[] {
  const q = join(l.etc, 'quantum.conf');
  return [
    { name: 'quantum-server', main: 'quantum-server/main.js', configs: [q], ready: { port: l.ports.quantum } },
    { name: 'nova-api', main: 'nova-api/main.js', configs: [join(l.etc, 'nova.conf')], ready: { port: l.ports.metadata } },
    { name: 'quantum-metadata-agent', main: 'metadata-agent/main.js', configs: [q, join(l.etc, 'metadata_agent.ini')], ready: { path: l.socket } },
    { name: 'quantum-l3-agent', main: 'l3-agent/main.js', configs: [q, join(l.etc, 'l3_agent.ini')], ready: { path: '' } },
    { name: 'quantum-dhcp-agent', main: 'dhcp-agent/main.js', configs: [q, join(l.etc, 'dhcp_agent.ini')], ready: { path: '' } },
  ];
}

function secretFile(l: StackLayout): string {
  const p = join(l.etc, 'metadata_proxy_shared_secret');
  if (!existsSync(p)) {
    mkdirSync(l.etc, { recursive: true });
    writeFileSync(p, randomBytes(24).toString('hex'), { mode: 0o600 });
  }
  return readFileSync(p, 'utf8').trim();
}

/** Write the five config files (idempotent: the shared secret is made once and kept). */
export function writeConfigs(l: StackLayout): void {
  for (const d of [l.etc, l.logs, l.run, l.quantumState, l.novaState]) mkdirSync(d, { recursive: true });
  const secret = secretFile(l);
  const quantumUrl = `http://${l.bindHost}:${l.ports.quantum}`;
  const files: Record<string, string> = {
    'quantum.conf': `[DEFAULT]
state_path = ${l.quantumState}
bind_host = ${l.bindHost}
bind_port = ${l.ports.quantum}
auth_strategy = noauth
quantum_url = ${quantumUrl}
debug = False

[database]
connection = sqlite:///${join(l.quantumState, 'quantum.sqlite')}

[AGENT]
report_interval = 10
check_child_processes_interval = 1
check_child_processes_action = respawn
`,
    'metadata_agent.ini': `[DEFAULT]
metadata_proxy_socket = ${l.socket}
nova_metadata_host = ${l.bindHost}
nova_metadata_port = ${l.ports.metadata}
metadata_proxy_shared_secret = ${secret}
metadata_workers = 0

[cache]
enabled = True
expiration_time = 10
`,
    'l3_agent.ini': `[DEFAULT]
interface_driver = linuxbridge
polling_interval = 1
enable_metadata_proxy = True
metadata_port = 9697
metadata_proxy_socket = ${l.socket}
`,
    'dhcp_agent.ini': `[DEFAULT]
interface_driver = linuxbridge
polling_interval = 1
enable_isolated_metadata = True
metadata_proxy_socket = ${l.socket}
`,
    'nova.conf': `[DEFAULT]
state_path = ${l.novaState}
osapi_compute_listen = ${l.bindHost}
osapi_compute_listen_port = ${l.ports.compute}
metadata_listen = ${l.bindHost}
metadata_listen_port = ${l.ports.metadata}
enabled_apis = osapi_compute,metadata

[database]
connection = sqlite:///${join(l.novaState, 'nova.sqlite')}

[neutron]
url = ${quantumUrl}
service_metadata_proxy = True
metadata_proxy_shared_secret = ${secret}

[api]
metadata_cache_expiration = 15
dhcp_domain = novalocal
`,
  };
  for (const [name, text] of Object.entries(files)) writeFileSync(join(l.etc, name), text, { mode: 0o640 });
}

const pidFile = (l: StackLayout, name: string) => join(l.run, `${name}.pid`);

/** The pid of a daemon this stack started, if it is still that process (cmdline names our data dir). */
export function runningPid(l: StackLayout, name: string): number | undefined {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(pidFile(l, name), 'utf8').trim(), 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes(l.etc) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function startDaemon(l: StackLayout, d: DaemonDef): number {
  const existing = runningPid(l, d.name);
  if (existing) return existing;
  const log = join(l.logs, `${d.name}.log`);
  const out = openSync(join(l.logs, `${d.name}.stdout`), 'a');
  const args = [resolve(srcRoot, d.main), ...d.configs.flatMap((c) => ['--config-file', c]), '--log-file', log];
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out] });
  closeSync(out);
  child.unref();
  writeFileSync(pidFile(l, d.name), `${child.pid}\n`);
  return child.pid!;
}

export function waitReady(ready: DaemonDef['ready'], host: string, timeoutMs = 20_000): Promise<boolean> {
  if ('path' in ready && ready.path === '') return Promise.resolve(true);
  const end = Date.now() + timeoutMs;
  return new Promise((resolveP) => {
    const attempt = () => {
      const s = 'path' in ready ? connect(ready.path) : connect(ready.port, host);
      s.once('connect', () => {
        s.destroy();
        resolveP(true);
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > end) resolveP(false);
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** SIGTERM, wait up to 10 s, then SIGKILL. Only pids whose cmdline names this stack's etc dir. */
export async function stopDaemon(l: StackLayout, name: string): Promise<boolean> {
  const pid = runningPid(l, name);
  rmSync(pidFile(l, name), { force: true });
  if (!pid) return false;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100));
    if (!pidAlive(pid)) return true;
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
  return true;
}
