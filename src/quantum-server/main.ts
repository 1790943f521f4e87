// quantum-server: the Neutron v2.0 API subset (networks, subnets, ports, routers, agents) on bind_port 9696.
import cluster from 'node:cluster';
import { keystoneAuthFrom } from '../common/auth.js';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { maskUrl, Transport, transportOptionsFrom } from '../common/messaging.js';
import { Metrics, serveMetrics } from '../common/metrics.js';
import { runService } from '../common/service.js';
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
    let stopping = false;
    const born = new Map<number, number>();
    let quickDeaths = 0;
    const fork = () => {
      const w = cluster.fork();
      born.set(w.id, Date.now());
    };
    cluster.on('exit', (w, code, signal) => {
      if (stopping) return;
      // A worker that cannot even start (port taken, database gone) would otherwise be respawned forever.
      quickDeaths = Date.now() - (born.get(w.id) ?? 0) < 10_000 ? quickDeaths + 1 : 0;
      born.delete(w.id);
      if (quickDeaths >= 5) {
        log.error({ pid: w.process.pid, code, signal }, 'API workers keep dying at start; giving up');
        stopping = true;
        for (const o of Object.values(cluster.workers ?? {})) o?.kill('SIGTERM');
        process.exitCode = 1;
        setTimeout(() => process.exit(1), 2000).unref();
        return;
      }
      log.error({ pid: w.process.pid, code, signal }, 'API worker died, starting a new one');
      setTimeout(fork, 500);
    });
    for (let i = 0; i < workers; i++) fork();
    log.info({ config_files: configFiles, workers, bind_host: d.bind_host, bind_port: d.bind_port }, 'quantum-server started API workers');
    svc.onShutdown(async () => {
      stopping = true;
      periodic.scheduler.stop();
      periodic.notifier.stop();
      const all = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
      await Promise.all(all.map((w) => new Promise<void>((r) => {
        w.once('exit', () => r());
        w.kill('SIGTERM');
      })));
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
