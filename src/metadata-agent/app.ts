// Wiring: config → QuantumClient + NovaClient + lookup → handler → node:http on the Unix socket.
import { createServer, type Server } from 'node:http';
import { serviceSessionFrom } from '../common/auth.js';
import type { Logger } from '../common/log.js';
import { Transport, transportOptionsFrom } from '../common/messaging.js';
import { QuantumClient } from '../common/quantum-client.js';
import type { Metrics } from '../common/metrics.js';
import { RequestSlots } from './bounds.js';
import { MetadataProxyHandler } from './handler.js';
import { agentStats } from './metrics.js';
import { CacheInvalidator, type NotificationListener } from './invalidation.js';
import { InstanceLookup } from './lookup.js';
import { NovaClient } from './nova.js';
import { PROG, resolveAgentConf, type AgentConf } from './opts.js';
import { StateReporter } from './report.js';
import { listenUnix, prepareSocketPath, socketMode } from './socket.js';

export interface AgentParts {
  socketPath: string;
  mode: number;
  cacheTtlMs: number;
  quantum: QuantumClient;
  nova: NovaClient;
  lookup: InstanceLookup;
  slots: RequestSlots;
  handler: MetadataProxyHandler;
  /** With the cache on: drops cached lookups when ports change. */
  invalidator: CacheInvalidator | undefined;
}

export function buildAgent(conf: AgentConf, log: Logger, transport: NotificationListener | undefined = defaultTransport(conf, log), metrics?: Metrics): AgentParts {
  const d = conf.DEFAULT;
  const { socketPath, cacheTtlMs } = resolveAgentConf(conf);
  const mode = socketMode(d.metadata_proxy_socket_mode, d.metadata_proxy_user, d.metadata_proxy_group);
  // auth_strategy = keystone: one token per process, renewed before expiry; a guest request never waits for Keystone
  // (except the first after start or renewal).
  const quantum = new QuantumClient({ url: d.quantum_url, timeoutMs: d.quantum_timeout * 1000, auth: serviceSessionFrom(d.auth_strategy, d) });
  const nova = new NovaClient({
    host: d.nova_metadata_host,
    port: d.nova_metadata_port,
    protocol: d.nova_metadata_protocol as 'http' | 'https',
    insecure: d.nova_metadata_insecure,
    caCert: d.auth_ca_cert,
    clientCert: d.nova_client_cert || undefined,
    clientKey: d.nova_client_priv_key || undefined,
    sharedSecret: d.metadata_proxy_shared_secret,
    // One connection per slot: undici never queues behind our own bound.
    connections: d.wsgi_default_pool_size,
  });
  const lookup = new InstanceLookup(quantum, cacheTtlMs);
  const slots = new RequestSlots(d.wsgi_default_pool_size, d.metadata_queue_size);
  const stats = metrics ? agentStats(metrics, slots) : undefined;
  const handler = new MetadataProxyHandler({ lookup, nova, log, slots, stats });
  const invalidator = cacheTtlMs > 0 ? new CacheInvalidator({ lookup, client: quantum, log, pollIntervalSec: conf.cache.notification_poll_interval, transport, pool: `${PROG}.${d.host}.${process.pid}` }) : undefined;
  return { socketPath, mode, cacheTtlMs, quantum, nova, lookup, slots, handler, invalidator };
}

/** With the cache on and a broker configured, this process listens to port notifications over RabbitMQ. */
function defaultTransport(conf: AgentConf, log: Logger): NotificationListener | undefined {
  if (resolveAgentConf(conf).cacheTtlMs <= 0) return undefined;
  const o = transportOptionsFrom(conf, { log, name: PROG });
  return o ? new Transport(o) : undefined;
}

export function createAgentServer(handler: MetadataProxyHandler): Server {
  // Proxies keep connections open to us: idle ones live longer than theirs so they close first.
  return createServer({ keepAliveTimeout: 65_000, requestTimeout: 120_000, headersTimeout: 60_000 }, handler.listener);
}

export function createReporter(conf: AgentConf, quantum: QuantumClient, socketPath: string, log: Logger): StateReporter {
  const d = conf.DEFAULT;
  return new StateReporter({
    client: quantum,
    host: d.host,
    socketPath,
    novaHost: d.nova_metadata_host,
    novaPort: d.nova_metadata_port,
    intervalMs: conf.AGENT.report_interval * 1000,
    logHeartbeats: conf.AGENT.log_agent_heartbeats,
    log,
  });
}

export interface RunningAgent {
  parts: AgentParts;
  server: Server;
  reporter: StateReporter;
  close(): Promise<void>;
}

/** The whole agent in this process (metadata_workers 0 or 1): socket, server, state reports. */
export async function startMetadataAgent(conf: AgentConf, log: Logger, transport: NotificationListener | undefined = defaultTransport(conf, log), metrics?: Metrics): Promise<RunningAgent> {
  const parts = buildAgent(conf, log, transport, metrics);
  prepareSocketPath(parts.socketPath);
  const server = createAgentServer(parts.handler);
  await listenUnix(server, parts.socketPath, conf.DEFAULT.metadata_backlog, parts.mode);
  const reporter = createReporter(conf, parts.quantum, parts.socketPath, log);
  reporter.start();
  parts.invalidator?.start();
  return {
    parts,
    server,
    reporter,
    async close() {
      await reporter.stop();
      await parts.invalidator?.stop();
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeIdleConnections();
      });
      await Promise.allSettled([parts.quantum.close(), parts.nova.close()]);
    },
  };
}
