// quantum-metadata-agent: one per network node; serves the namespace proxies on $state_path/metadata_proxy.
// metadata_workers > 1 forks node:cluster workers that share the socket (the primary owns it, applies
// its mode and sends the state reports); 0 or 1 serve in this process.
import cluster from 'node:cluster';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { Metrics, serveMetrics } from '../common/metrics.js';
import { runService } from '../common/service.js';
import { superviseWorkers } from '../common/workers.js';
import { buildAgent, createAgentServer, createReporter, startMetadataAgent } from './app.js';
import { agentSpec, PROG, resolveAgentConf } from './opts.js';
import { chmodSync } from 'node:fs';
import { QuantumClient } from '../common/quantum-client.js';
import { serviceSessionFrom } from '../common/auth.js';
import { prepareSocketPath, socketMode } from './socket.js';

runService(PROG, async (svc) => {
  const { conf, warnings, configFiles } = loadConfig(agentSpec, process.argv.slice(2), {
    prog: PROG,
    description: 'The Quantum metadata agent: identifies instances for the namespace metadata proxies and forwards their requests to Nova.',
    aliases: { 'log-file': 'log_file', 'log-dir': 'log_dir' },
  });
  const d = conf.DEFAULT;
  const log = createLogger({ name: PROG, debug: d.debug, verbose: d.verbose, log_file: d.log_file, log_dir: d.log_dir, defaultFile: 'metadata-agent.log' });
  svc.setLogger(log);
  for (const w of warnings) log.warn(w);
  const { socketPath, cacheTtlMs } = resolveAgentConf(conf);
  // Node's default for SIGHUP is to exit; an agent must survive a terminal hang-up or a stray reload signal.
  process.on('SIGHUP', () => log.info('SIGHUP received: configuration is read at start only; restart the agent to apply changes'));
  const workers = d.metadata_workers;

  const listen = conf.metrics.listen;
  const METRICS = 'quantum_metadata_agent';
  if (cluster.isWorker) {
    const parts = buildAgent(conf, log, undefined, listen ? new Metrics(METRICS) : undefined);
    parts.invalidator?.start();
    const server = createAgentServer(parts.handler);
    // In a worker, listen() asks the primary for the shared socket handle.
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: socketPath, backlog: d.metadata_backlog }, () => resolve());
    });
    svc.onShutdown(async () => {
      await parts.invalidator?.stop();
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeIdleConnections();
      });
    });
    return;
  }

  if (listen) {
    // With workers, the primary sums theirs (it serves no request itself: no metrics of its own beside them).
    const ms = await serveMetrics(listen, log, { aggregate: workers > 1 });
    svc.onShutdown(() => ms.close());
  }
  if (workers > 1) {
    const mode = socketMode(d.metadata_proxy_socket_mode, d.metadata_proxy_user, d.metadata_proxy_group);
    prepareSocketPath(socketPath);
    let chmodded = false;
    cluster.on('listening', () => {
      if (chmodded) return;
      chmodded = true;
      try {
        chmodSync(socketPath, mode);
      } catch (e) {
        log.error({ err: e, socket: socketPath }, 'cannot set the socket mode');
      }
    });
    const sup = superviseWorkers({ count: workers, name: 'metadata worker', log });
    const quantum = new QuantumClient({ url: d.quantum_url, timeoutMs: d.quantum_timeout * 1000, auth: serviceSessionFrom(d.auth_strategy, d) });
    const reporter = createReporter(conf, quantum, socketPath, log);
    reporter.start();
    log.info({ config_files: configFiles, socket: socketPath, mode: mode.toString(8), workers, cache_ttl_s: cacheTtlMs / 1000, nova: `${d.nova_metadata_protocol}://${d.nova_metadata_host}:${d.nova_metadata_port}` }, 'metadata agent started workers');
    svc.onShutdown(async () => {
      await reporter.stop();
      await sup.stop();
      await quantum.close();
    });
    return;
  }

  const running = await startMetadataAgent(conf, log, undefined, listen ? new Metrics(METRICS) : undefined);
  log.info(
    { config_files: configFiles, socket: socketPath, mode: running.parts.mode.toString(8), backlog: d.metadata_backlog, cache_ttl_s: cacheTtlMs / 1000, nova: running.parts.nova.origin, quantum_url: d.quantum_url },
    'metadata agent listening',
  );
  svc.onShutdown(() => running.close());
});
