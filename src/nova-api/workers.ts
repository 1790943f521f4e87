// [DEFAULT] metadata_workers > 1: the metadata API runs in that many worker processes sharing the port
// (node:cluster), each with its own cache, as Nova's WSGI workers are. The primary supervises them.
import cluster from 'node:cluster';
import type { Logger } from '../common/log.js';
import { Metrics, serveMetrics } from '../common/metrics.js';
import type { Service } from '../common/service.js';
import { superviseWorkers } from '../common/workers.js';
import { migrate, openDatabase } from '../db/connection.js';
import { novaMigrations, type NovaDatabase } from '../db/nova-schema.js';
import { databaseUrl, startNova, validateNovaConf, type NovaConf } from './app.js';

/**
 * Start nova's APIs, forking metadata workers when asked. `apis` are the APIs this program serves.
 * In the primary with workers: the compute API (if enabled) runs here and the metadata API in the workers.
 */
export async function runNova(svc: Service, conf: NovaConf, log: Logger, apis: string[]): Promise<void> {
  const workers = conf.DEFAULT.metadata_workers;
  const listen = conf.metrics.listen;
  if (cluster.isWorker) {
    const app = await startNova(conf, log, ['metadata'], listen ? new Metrics('nova_api') : undefined);
    svc.onShutdown(() => app.close());
    return;
  }
  // The primary serves the metrics: its own, plus its metadata workers' summed. Beside workers, it keeps to
  // names theirs do not use (no process metrics of its own, the compute API's DB time apart): one scrape must
  // not carry a metric family twice.
  const aggregate = workers > 1 && apis.includes('metadata');
  const metrics = listen ? new Metrics('nova_api', { defaults: !aggregate }) : undefined;
  if (listen) {
    const ms = await serveMetrics(listen, log, { aggregate });
    svc.onShutdown(() => ms.close());
  }
  if (workers <= 1 || !apis.includes('metadata')) {
    const app = await startNova(conf, log, apis, metrics);
    svc.onShutdown(() => app.close());
    return;
  }
  validateNovaConf(conf);
  // Migrate once here so the workers do not race each other over it.
  const db = openDatabase<NovaDatabase>(databaseUrl(conf));
  try {
    await migrate(db, 'nova', novaMigrations);
  } finally {
    await db.close();
  }
  const rest = apis.filter((a) => a !== 'metadata');
  if (rest.length) {
    const app = await startNova(conf, log, rest, metrics, { dbMetric: 'compute_db_query_duration_seconds' });
    svc.onShutdown(() => app.close());
  }
  const sup = superviseWorkers({ count: workers, name: 'metadata worker', log, respawnDelayMs: 1000 });
  log.info(`metadata API: ${workers} workers on ${conf.DEFAULT.metadata_listen}:${conf.DEFAULT.metadata_listen_port}`);
  svc.onShutdown(() => sup.stop());
}
