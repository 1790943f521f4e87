// Build a running quantum-server from resolved options: database, migrations, HTTP listener.
import type { Server } from 'node:http';
import type { KeystoneAuth } from '../common/auth.js';
import type { Logger } from '../common/log.js';
import { migrate, openDatabase, type Db } from '../db/connection.js';
import { quantumMigrations, type QuantumDatabase } from '../db/quantum-schema.js';
import { LATENCY_BUCKETS, type Metrics } from '../common/metrics.js';
import { AgentRpc } from './agent-rpc.js';
import { AgentStore } from './agents.js';
import { buildQuantumApi } from './api/index.js';
import { AgentNotifier, type Caster } from './notifier.js';
import { QuantumPlugin } from './plugin.js';
import { AgentScheduler, type SchedulerOptions } from './scheduler.js';
import { QuantumStore } from './store.js';

export interface QuantumServerOptions {
  connection: string;
  host: string;
  port: number;
  baseMac?: string;
  agentDownTime?: number;
  authStrategy?: string;
  /** Token validation under auth_strategy = keystone. */
  keystone?: KeystoneAuth | undefined;
  log: Logger;
  /** Skip migrations (api_workers children: the parent already ran them). */
  skipMigrations?: boolean;
  /** Scheduler drivers and switches (defaults: Neutron's). */
  scheduling?: Partial<Omit<SchedulerOptions, 'log' | 'agentDownTime'>>;
  /** Casts notifications over RabbitMQ when given. */
  caster?: Caster | undefined;
  /** This server process runs the periodic failover check and the notification log pruning (one of the API workers' processes does). */
  periodicTasks?: boolean;
  /** publisher_id host of notifications. */
  hostname?: string;
  /** agent_notification_retention. */
  notificationRetentionSec?: number;
  /** [metrics] listen set: requests by route and status, latency, DB time, agents and their work. */
  metrics?: Metrics | undefined;
}

export interface RunningQuantumServer {
  server: Server;
  port: number;
  url: string;
  store: QuantumStore;
  plugin: QuantumPlugin;
  handle: Db<QuantumDatabase>;
  close(): Promise<void>;
}

export const DEFAULT_SCHEDULING: Omit<SchedulerOptions, 'log' | 'agentDownTime'> = {
  router: 'LeastRoutersScheduler',
  network: 'WeightScheduler',
  dhcpAgentsPerNetwork: 1,
  routerAutoSchedule: true,
  networkAutoSchedule: true,
  allowAutomaticL3agentFailover: false,
  allowAutomaticDhcpFailover: true,
};

/** What quantum-server knows of its agents, at each scrape: how many, alive or not, and what they serve. */
function agentMetrics(m: Metrics, plugin: QuantumPlugin): void {
  m.gauge('agents', 'Agents registered, by type and liveness.', ['agent_type', 'alive'], async (g) => {
    g.reset();
    for (const a of await plugin.agents.listAgents({})) g.inc({ agent_type: a.agent_type, alive: String(a.alive) });
  });
  m.gauge('agent_metadata_proxies', 'Metadata proxies each L3/DHCP agent reports it should run and runs.', ['host', 'agent_type', 'state'], async (g) => {
    g.reset();
    for (const a of await plugin.agents.listAgents({})) {
      const p = (a.configurations as { metadata_proxies?: { expected?: number; alive?: number } }).metadata_proxies;
      if (!p) continue;
      g.set({ host: a.host, agent_type: a.agent_type, state: 'expected' }, p.expected ?? 0);
      g.set({ host: a.host, agent_type: a.agent_type, state: 'alive' }, p.alive ?? 0);
    }
  });
}

/** The plugin over an open database: tables, agents, scheduler, notifier (also what api_workers' parent runs periodic tasks with). */
export function buildPlugin(handle: Db<QuantumDatabase>, o: Pick<QuantumServerOptions, 'baseMac' | 'agentDownTime' | 'log' | 'scheduling' | 'caster' | 'hostname' | 'notificationRetentionSec'>): QuantumPlugin {
  const agentDownTime = o.agentDownTime ?? 75;
  const store = new QuantumStore(handle, { baseMac: o.baseMac ?? 'fa:16:3e:00:00:00', log: o.log });
  const agents = new AgentStore(handle.db, { agentDownTime, log: o.log });
  const notifier = new AgentNotifier(handle.db, { log: o.log, host: o.hostname ?? 'localhost', caster: o.caster, retentionSec: o.notificationRetentionSec, visibilityLagMs: handle.dialect === 'mysql' ? 1000 : 0 });
  const scheduler = new AgentScheduler(handle.db, agents, notifier, { ...DEFAULT_SCHEDULING, ...o.scheduling, agentDownTime, log: o.log });
  return new QuantumPlugin(store, agents, scheduler, notifier, o.log);
}

/** DB time per query, when metrics are on. */
export function dbTimer(metrics: Metrics | undefined): ((ms: number) => void) | undefined {
  if (!metrics) return undefined;
  const h = metrics.histogram('db_query_duration_seconds', 'Database query latency.', [], LATENCY_BUCKETS);
  return (ms) => h.observe(ms / 1000);
}

export async function openQuantumDb(connection: string, metrics?: Metrics): Promise<Db<QuantumDatabase>> {
  const handle = openDatabase<QuantumDatabase>(connection, { poolSize: 10, onQuery: dbTimer(metrics) });
  await migrate(handle, 'quantum', quantumMigrations);
  return handle;
}

export async function startQuantumServer(o: QuantumServerOptions): Promise<RunningQuantumServer> {
  const handle = o.skipMigrations ? openDatabase<QuantumDatabase>(o.connection, { poolSize: 10, onQuery: dbTimer(o.metrics) }) : await openQuantumDb(o.connection, o.metrics);
  const plugin = buildPlugin(handle, o);
  const rpc = new AgentRpc(plugin.store, plugin.agents, plugin.scheduler, plugin.notifier);
  const app = await buildQuantumApi({ plugin, rpc, log: o.log, authStrategy: o.authStrategy ?? 'noauth', keystone: o.keystone, metrics: o.metrics });
  if (o.metrics) agentMetrics(o.metrics, plugin);
  let port: number;
  try {
    await app.listen({ host: o.host, port: o.port });
    const a = app.server.address();
    port = typeof a === 'object' && a ? a.port : o.port;
  } catch (e) {
    await app.close().catch(() => undefined);
    await handle.close();
    throw e;
  }
  const server = app.server;
  if (o.periodicTasks !== false) {
    plugin.scheduler.startFailoverChecks();
    plugin.notifier.startPruning();
  }
  const host = o.host === '0.0.0.0' || o.host === '::' ? '127.0.0.1' : o.host;
  return {
    server,
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    store: plugin.store,
    plugin,
    handle,
    async close() {
      plugin.scheduler.stop();
      plugin.notifier.stop();
      server.closeIdleConnections();
      await app.close();
      server.closeAllConnections();
      await o.keystone?.session.close();
      await handle.close();
    },
  };
}
