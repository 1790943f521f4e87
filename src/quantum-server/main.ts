// quantum-server: the Neutron v2.0 API subset (networks, subnets, ports, routers, agents) on bind_port 9696.
import cluster from 'node:cluster';
import { keystoneAuthFrom } from '../common/auth.js';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { maskUrl, Transport, transportOptionsFrom } from '../common/messaging.js';
import { Metrics, serveMetrics } from '../common/metrics.js';
import { runService } from '../common/service.js';
import { superviseWorkers } from '../common/workers.js';
import { hostname } from 'node:os';
import { buildPlugin, startQuantumServer, openQuantumDb } from './app.js';
import { quantumServerSpec, resolveConnection, schedulingOf, validateServerConf } from './opts.js';

runService('quantum-server', async (svc) => {
  const { conf, warnings, configFiles } = loadConfig(quantumServerSpec, process.argv.slice(2), {
    prog: 'quantum-server',
    description: 'The Quantum (Neutron v2.0) API server.',
    aliases: { 'log-file': 'log_file', 'log-dir': 'log_dir' },
  });
  validateServerConf(conf);
  const d = conf.DEFAULT;
  const log = createLogger({ name: 'quantum-server', debug: d.debug, verbose: d.verbose, log_file: d.log_file, log_dir: d.log_dir, defaultFile: 'server.log' });
  svc.setLogger(log);
  for (const w of warnings) log.warn(w);
  const connection = resolveConnection(conf);
  const workers = d.api_workers ?? 1;
  // Casts to the agents (Neutron's notifiers) when a broker is configured; each process has its own connection.
  const topts = transportOptionsFrom(conf, { log, name: 'quantum-server' });
  const transport = topts ? new Transport(topts) : undefined;
  transport?.start();
  if (transport) svc.onShutdown(() => transport.close());
  // The process that serves requests counts them; with API workers the parent serves their sum.
  const metrics = conf.metrics.listen && (cluster.isWorker || workers <= 1) ? new Metrics('quantum_server') : undefined;
  if (conf.metrics.listen && !cluster.isWorker) {
    const ms = await serveMetrics(conf.metrics.listen, log, { aggregate: workers > 1 });
    svc.onShutdown(() => ms.close());
  }

  if (workers > 1 && cluster.isPrimary) {
    // Migrate once, then fork the API workers; they share the listening socket. The parent keeps the database
    // open for the periodic tasks (failover, notification log pruning), so they run once, not once per worker.
    const h = await openQuantumDb(connection);
    const periodic = buildPlugin(h, { baseMac: d.base_mac, agentDownTime: d.agent_down_time, log, scheduling: schedulingOf(conf), hostname: hostname(), notificationRetentionSec: d.agent_notification_retention, caster: transport });
    periodic.scheduler.startFailoverChecks();
    periodic.notifier.startPruning();
    const sup = superviseWorkers({ count: workers, name: 'API worker', log });
    log.info({ config_files: configFiles, workers, bind_host: d.bind_host, bind_port: d.bind_port }, 'quantum-server started API workers');
    svc.onShutdown(async () => {
      periodic.scheduler.stop();
      periodic.notifier.stop();
      await sup.stop();
      await h.close();
    });
    return;
  }

  const running = await startQuantumServer({
    connection,
    host: d.bind_host,
    port: d.bind_port,
    baseMac: d.base_mac,
    agentDownTime: d.agent_down_time,
    authStrategy: d.auth_strategy,
    keystone: d.auth_strategy === 'keystone' ? keystoneAuthFrom(conf.keystone_authtoken, log) : undefined,
    log,
    skipMigrations: cluster.isWorker,
    scheduling: schedulingOf(conf),
    periodicTasks: !cluster.isWorker,
    hostname: hostname(),
    notificationRetentionSec: d.agent_notification_retention,
    caster: transport,
    metrics,
  });
  log.info({ config_files: configFiles, bind_host: d.bind_host, bind_port: running.port, database: connection.replace(/\/\/[^@/]*@/, '//***@'), messaging: topts ? maskUrl(topts.url) : 'none (agents poll)', auth_strategy: d.auth_strategy }, `quantum-server listening on ${d.bind_host}:${running.port}`);
  svc.onShutdown(() => running.close());
});
