// The all-in-one stack: config files for every daemon under one data directory, the daemons as detached
// processes with pid files, readiness waits, and a stop that ends only what this stack started.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pidAlive } from '../linux/external-process.js';
import { keystoneServeArgv } from './keystone.js';

const here = dirname(fileURLToPath(import.meta.url));
/** <build>/src */
export const srcRoot = resolve(here, '..');

export interface StackPorts {
  quantum: number;
  compute: number;
  metadata: number;
  image: number;
  keystone: number;
}

export const DEFAULT_PORTS: StackPorts = { quantum: 9696, compute: 8774, metadata: 8775, image: 9292, keystone: 5000 };

/** noauth (the default: no Keystone needed) or keystone (a local Keystone the stack starts and registers with). */
export type AuthMode = 'noauth' | 'keystone';

export interface StackLayout {
  dataDir: string;
  etc: string;
  logs: string;
  run: string;
  quantumState: string;
  novaState: string;
  glanceState: string;
  /** keystone.conf, the fernet and credential keys, the stack's credentials (inside etc: the daemon's cmdline names it). */
  keystoneDir: string;
  socket: string;
  ports: StackPorts;
  bindHost: string;
  guestPrefix: string;
  auth: AuthMode;
}

export function layout(dataDir: string, ports: StackPorts = DEFAULT_PORTS, bindHost = '127.0.0.1', guestPrefix = '', auth: AuthMode = 'noauth'): StackLayout {
  const d = resolve(dataDir);
  return {
    dataDir: d,
    etc: join(d, 'etc'),
    logs: join(d, 'log'),
    run: join(d, 'run'),
    quantumState: join(d, 'quantum'),
    novaState: join(d, 'nova'),
    glanceState: join(d, 'glance'),
    keystoneDir: join(d, 'etc', 'keystone'),
    socket: join(d, 'quantum', 'metadata_proxy'),
    ports,
    bindHost,
    guestPrefix,
    auth,
  };
}

const stackFile = (dataDir: string) => join(resolve(dataDir), 'etc', 'stack.json');

/** What a data directory was set up with: its auth mode (its databases hold that mode's project ids) and ports. */
export interface RecordedStack {
  auth: AuthMode;
  ports: StackPorts;
}

export function recordedStack(dataDir: string): RecordedStack | undefined {
  try {
    const r = JSON.parse(readFileSync(stackFile(dataDir), 'utf8')) as Partial<RecordedStack>;
    if (r.auth !== 'keystone' && r.auth !== 'noauth') return undefined;
    return { auth: r.auth, ports: { ...DEFAULT_PORTS, ...r.ports } };
  } catch {
    return undefined;
  }
}

/** Kept so that stop and status (and the next start) need no flags to find this stack again. */
export function recordStack(l: StackLayout): void {
  mkdirSync(l.etc, { recursive: true });
  writeFileSync(stackFile(l.dataDir), `${JSON.stringify({ auth: l.auth, ports: l.ports }, null, 2)}\n`);
}

export const baseUrl = (l: StackLayout, port: number) => `http://${l.bindHost}:${port}`;
export const keystoneUrlOf = (l: StackLayout) => `${baseUrl(l, l.ports.keystone)}/v3`;

export interface DaemonDef {
  name: string;
  /** The process to run (a node daemon of this build, or Keystone's server); its cmdline names l.etc. */
  argv: string[];
  /** How to know it is up. */
  ready: { port: number } | { path: string };
}

/** Daemons in start order (stop runs in reverse): Keystone first, so every service can authenticate. */
export function daemons(l: StackLayout): DaemonDef[] {
  const q = join(l.etc, 'quantum.conf');
  const node = (name: string, main: string, configs: string[], ready: DaemonDef['ready']): DaemonDef => ({
    name,
    argv: [process.execPath, resolve(srcRoot, main), ...configs.flatMap((c) => ['--config-file', c]), '--log-file', join(l.logs, `${name}.log`)],
    ready,
  });
  return [
    ...(l.auth === 'keystone' ? [{ name: 'keystone', argv: keystoneServeArgv({ dir: l.keystoneDir, host: l.bindHost, port: l.ports.keystone }), ready: { port: l.ports.keystone } }] : []),
    node('quantum-server', 'quantum-server/main.js', [q], { port: l.ports.quantum }),
    node('glance-api', 'glance-api/main.js', [join(l.etc, 'glance-api.conf')], { port: l.ports.image }),
    node('nova-api', 'nova-api/main.js', [join(l.etc, 'nova.conf')], { port: l.ports.metadata }),
    node('quantum-metadata-agent', 'metadata-agent/main.js', [q, join(l.etc, 'metadata_agent.ini')], { path: l.socket }),
    node('quantum-l3-agent', 'l3-agent/main.js', [q, join(l.etc, 'l3_agent.ini')], { path: '' }),
    node('quantum-dhcp-agent', 'dhcp-agent/main.js', [q, join(l.etc, 'dhcp_agent.ini')], { path: '' }),
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

/** The Keystone users the services run as, and what their configs need to authenticate. */
export interface ServiceAuth {
  url: string;
  region: string;
  passwords: { quantum: string; nova: string; glance: string };
}

/** keystoneauth's password options (the agents' [DEFAULT], nova's [neutron]) for a service user. */
function credentialLines(a: ServiceAuth, user: keyof ServiceAuth['passwords']): string {
  return `auth_url = ${a.url}
auth_type = password
username = ${user}
password = ${a.passwords[user]}
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = ${a.region}
`;
}

/** [keystone_authtoken] of an API (keystonemiddleware's names) for its service user. */
function authtoken(a: ServiceAuth, user: keyof ServiceAuth['passwords']): string {
  return `
[keystone_authtoken]
www_authenticate_uri = ${a.url}
${credentialLines(a, user)}token_cache_time = 300
`;
}

/**
 * Write every daemon's config file (idempotent: the shared secret is made once and kept). With Keystone (auth given):
 * auth_strategy = keystone, [keystone_authtoken] for the three APIs and the service credentials of each client.
 */
export function writeConfigs(l: StackLayout, auth?: ServiceAuth): void {
  for (const d of [l.etc, l.logs, l.run, l.quantumState, l.novaState, l.glanceState]) mkdirSync(d, { recursive: true });
  if (l.auth === 'keystone' && !auth) throw new Error('writeConfigs: auth_strategy = keystone needs the service credentials');
  const ks = l.auth === 'keystone' ? auth : undefined;
  const secret = secretFile(l);
  const quantumUrl = baseUrl(l, l.ports.quantum);
  // The agents read quantum.conf too; their own credentials go in their ini files, as the operators' guides do.
  const agentCreds = ks ? credentialLines(ks, 'quantum') : '';
  const files: Record<string, string> = {
    'quantum.conf': `[DEFAULT]
state_path = ${l.quantumState}
bind_host = ${l.bindHost}
bind_port = ${l.ports.quantum}
auth_strategy = ${ks ? 'keystone' : 'noauth'}
quantum_url = ${quantumUrl}
debug = False

[database]
connection = sqlite:///${join(l.quantumState, 'quantum.sqlite')}

[AGENT]
report_interval = 10
check_child_processes_interval = 1
check_child_processes_action = respawn
${ks ? authtoken(ks, 'quantum') : ''}`,
    'metadata_agent.ini': `[DEFAULT]
metadata_proxy_socket = ${l.socket}
nova_metadata_host = ${l.bindHost}
nova_metadata_port = ${l.ports.metadata}
metadata_proxy_shared_secret = ${secret}
metadata_workers = 0
${agentCreds}
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
${agentCreds}`,
    'dhcp_agent.ini': `[DEFAULT]
interface_driver = linuxbridge
polling_interval = 1
enable_isolated_metadata = True
metadata_proxy_socket = ${l.socket}
${agentCreds}`,
    'glance-api.conf': `[DEFAULT]
bind_host = ${l.bindHost}
bind_port = ${l.ports.image}
state_path = ${l.glanceState}
${ks ? `\n[paste_deploy]\nflavor = keystone\n${authtoken(ks, 'glance')}` : ''}`,
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
${ks ? credentialLines(ks, 'nova') : ''}
[api]
auth_strategy = ${ks ? 'keystone' : 'noauth'}
metadata_cache_expiration = 15
dhcp_domain = novalocal
${
  // With Keystone nova finds glance in the catalog, as a deployment's nova does.
  ks ? authtoken(ks, 'nova') : `\n[glance]\napi_servers = ${baseUrl(l, l.ports.image)}\n`
}`,
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
  const out = openSync(join(l.logs, `${d.name}.stdout`), 'a');
  // A daemon outlives this command: detached, with a pid file (exec.ts runs commands to completion).
  const child = spawn(d.argv[0]!, d.argv.slice(1), { detached: true, stdio: ['ignore', out, out] });
  closeSync(out);
  child.on('error', () => undefined); // reported below: no pid
  child.unref();
  if (!child.pid) throw new Error(`${d.name}: cannot run ${d.argv[0]}`);
  writeFileSync(pidFile(l, d.name), `${child.pid}\n`);
  return child.pid;
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
