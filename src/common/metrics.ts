// Prometheus metrics for every long-running daemon (prom-client), served on an opt-in listener
// (`[metrics] listen = host:port`, off by default). One registry per process: the daemon's own metrics under
// its prefix (quantum_server_, nova_api_, quantum_l3_agent_ …) plus prom-client's process metrics. A daemon
// with node:cluster workers serves the workers' metrics aggregated, from its primary.
import cluster from 'node:cluster';
import { createServer, type Server } from 'node:http';
import client from 'prom-client';
import { optStr, type Spec } from './config.js';
import { ConfigError, errorMessage } from './errors.js';
import type { Logger } from './log.js';

export const metricsOpts = {
  metrics: {
    listen: optStr('host:port to serve Prometheus metrics on at /metrics (e.g. 127.0.0.1:9106, [::1]:9106); unset: no metrics listener.'),
  },
} satisfies Spec;

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(listen) ?? /^([^:[\]]+):(\d+)$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`[metrics] listen = ${JSON.stringify(listen)}: not host:port (IPv6 as [addr]:port)`);
  return { host: m[1]!, port };
}

export type Labels = Record<string, string | number>;

/** A daemon's metrics: typed constructors that name everything `<prefix>_<name>` in one registry. */
export class Metrics {
  readonly registry: client.Registry;

  constructor(
    readonly prefix: string,
    o: { defaults?: boolean } = {},
  ) {
    // The global registry, so prom-client's cluster aggregation (which reads it in workers) sees them.
    this.registry = client.register;
    // In a worker, constructing an aggregator installs prom-client's answer to the primary's requests.
    if (cluster.isWorker && !workerListening) {
      workerListening = true;
      new client.AggregatorRegistry();
    }
    if (o.defaults !== false && !defaultsCollected) {
      defaultsCollected = true;
      client.collectDefaultMetrics({ register: this.registry, prefix: `${prefix}_` });
    }
  }

  /** A counter; `collect` sets it at each scrape from a count kept elsewhere (reset, then inc). */
  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = [], collect?: (c: client.Counter<L>) => void | Promise<void>): client.Counter<L> {
    const existing = this.registry.getSingleMetric(`${this.prefix}_${name}`) as client.Counter<L> | undefined;
    if (existing) return existing;
    return new client.Counter({
      name: `${this.prefix}_${name}`,
      help,
      labelNames: [...labelNames],
      registers: [this.registry],
      ...(collect ? { collect(this: client.Counter<L>) { return collect(this); } } : {}),
    });
  }

  gauge<L extends string>(name: string, help: string, labelNames: readonly L[] = [], collect?: (g: client.Gauge<L>) => void | Promise<void>): client.Gauge<L> {
    const existing = this.registry.getSingleMetric(`${this.prefix}_${name}`) as client.Gauge<L> | undefined;
    if (existing) return existing;
    return new client.Gauge({
      name: `${this.prefix}_${name}`,
      help,
      labelNames: [...labelNames],
      registers: [this.registry],
      ...(collect ? { collect(this: client.Gauge<L>) { return collect(this); } } : {}),
    });
  }

  histogram<L extends string>(name: string, help: string, labelNames: readonly L[] = [], buckets?: number[]): client.Histogram<L> {
    return (
      (this.registry.getSingleMetric(`${this.prefix}_${name}`) as client.Histogram<L> | undefined) ??
      new client.Histogram({ name: `${this.prefix}_${name}`, help, labelNames: [...labelNames], registers: [this.registry], ...(buckets ? { buckets } : {}) })
    );
  }
}
let defaultsCollected = false;
let workerListening = false;

/** Latency buckets for requests: 0.5 ms to 10 s. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/**
 * Serve /metrics on `listen`. In a node:cluster primary (`aggregate`), the workers' registries are collected
 * over IPC and summed, so one scrape sees the whole daemon.
 */
export async function serveMetrics(listen: string, log: Logger, o: { aggregate?: boolean } = {}): Promise<MetricsServer> {
  const { host, port } = parseListen(listen);
  const aggregator = o.aggregate && cluster.isPrimary ? new client.AggregatorRegistry() : undefined;
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('only GET /metrics here\n');
      return;
    }
    const text = aggregator
      ? Promise.all([aggregator.clusterMetrics(), client.register.metrics()]).then(([w, mine]) => `${w}\n${mine}`)
      : client.register.metrics();
    text.then(
      (body) => {
        res.writeHead(200, { 'content-type': client.register.contentType });
        res.end(body);
      },
      (e: unknown) => {
        log.warn({ err: errorMessage(e) }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('metrics collection failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  server.unref();
  const a = server.address();
  const bound = typeof a === 'object' && a ? a.port : port;
  log.info({ listen: `${host.includes(':') ? `[${host}]` : host}:${bound}` }, 'serving Prometheus metrics at /metrics');
  return {
    port: bound,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
