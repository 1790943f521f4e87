// One network node and its controller, every piece a real daemon started from its config files as an operator
// would: quantum-server, nova-api (service_metadata_proxy = True with a shared secret), quantum-metadata-agent,
// quantum-l3-agent and quantum-dhcp-agent (enable_isolated_metadata = True), all in the fixture's state path.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { QuantumClient } from '../../src/common/quantum-client.js';
import type { NetFixture } from './netns.js';
import { getFreePort, spawnDaemon, waitForListen, type Daemon } from './proc.js';

export interface NodeStack {
  state: string;
  q: QuantumClient;
  computeUrl: string;
  daemons: Daemon[];
  /** The daemon whose main module ends with `main` (e.g. 'dhcp-agent/main.js'). */
  daemon(main: string): Daemon | undefined;
  /** A Nova compute API call as `project` (noauth: x-project-id); throws on a 4xx/5xx with its body. */
  nova<T>(method: string, path: string, project: string, body?: unknown): Promise<T>;
  stop(): Promise<void>;
}

export interface NodeStackOptions {
  /** The agents' `host`. */
  host: string;
  /** metadata_proxy_mode of both agents (default: theirs, per-namespace). */
  mode?: string;
}

export async function startNodeStack(fx: NetFixture, o: NodeStackOptions): Promise<NodeStack> {
  const state = fx.statePath();
  const [qPort, cPort, mPort] = [await getFreePort(), await getFreePort(), await getFreePort()];
  const computeUrl = `http://127.0.0.1:${cPort}`;
  const secret = `stack-secret-${fx.prefix}`;
  const socket = join(state, 'metadata_proxy');
  const etc = join(state, 'etc');
  mkdirSync(etc, { recursive: true });
  mkdirSync(join(state, 'nova'), { recursive: true });
  const qconf = join(etc, 'quantum.conf');
  writeFileSync(qconf, `[DEFAULT]\nstate_path = ${state}\nbind_host = 127.0.0.1\nbind_port = ${qPort}\nquantum_url = http://127.0.0.1:${qPort}\n[database]\nconnection = sqlite:///${join(state, 'quantum.sqlite')}\n[AGENT]\nreport_interval = 5\ncheck_child_processes_interval = 1\n`);
  writeFileSync(join(etc, 'nova.conf'), `[DEFAULT]\nstate_path = ${join(state, 'nova')}\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = ${cPort}\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\nenabled_apis = osapi_compute,metadata\n[database]\nconnection = sqlite:///${join(state, 'nova', 'nova.sqlite')}\n[neutron]\nurl = http://127.0.0.1:${qPort}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = ${secret}\n`);
  writeFileSync(join(etc, 'metadata_agent.ini'), `[DEFAULT]\nmetadata_proxy_socket = ${socket}\nnova_metadata_host = 127.0.0.1\nnova_metadata_port = ${mPort}\nmetadata_proxy_shared_secret = ${secret}\nmetadata_workers = 0\n`);
  const agentIni = `[DEFAULT]\ninterface_driver = linuxbridge\npolling_interval = 1\nhost = ${o.host}\nmetadata_proxy_socket = ${socket}\n${o.mode ? `metadata_proxy_mode = ${o.mode}\n` : ''}`;
  writeFileSync(join(etc, 'l3_agent.ini'), agentIni);
  writeFileSync(join(etc, 'dhcp_agent.ini'), `${agentIni}enable_isolated_metadata = True\n`);

  const daemons: Daemon[] = [];
  const start = (name: string, main: string, args: string[]) => {
    const d = spawnDaemon(main, args);
    daemons.push(d);
    d.proc.once('exit', (code) => {
      if (code) process.stderr.write(`${name} exited ${code}:\n${d.output().slice(-3000)}\n`);
    });
  };
  start('quantum-server', 'quantum-server/main.js', ['--config-file', qconf]);
  await waitForListen({ host: '127.0.0.1', port: qPort }, 20_000);
  start('nova-api', 'nova-api/main.js', ['--config-file', join(etc, 'nova.conf')]);
  start('quantum-metadata-agent', 'metadata-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'metadata_agent.ini')]);
  start('quantum-l3-agent', 'l3-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'l3_agent.ini')]);
  start('quantum-dhcp-agent', 'dhcp-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'dhcp_agent.ini')]);
  const q = new QuantumClient({ url: `http://127.0.0.1:${qPort}` });
  const stop = async () => {
    for (const d of [...daemons].reverse()) await d.stop();
    await q.close();
  };
  try {
    await waitForListen({ host: '127.0.0.1', port: mPort }, 20_000);
    await waitForListen({ host: '127.0.0.1', port: cPort }, 20_000);
    await waitForListen({ path: socket }, 20_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    state,
    q,
    computeUrl,
    daemons,
    daemon: (main) => daemons.find((d) => d.proc.spawnargs.some((a) => a.endsWith(main))),
    async nova<T>(method: string, path: string, project: string, body?: unknown): Promise<T> {
      const res = await request(`${computeUrl}/v2.1${path}`, {
        method: method as 'GET',
        headers: { 'x-project-id': project, 'content-type': 'application/json', accept: 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.body.text();
      if (res.statusCode >= 400) throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
      return JSON.parse(text) as T;
    },
    stop,
  };
}
