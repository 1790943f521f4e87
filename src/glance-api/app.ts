// glance-api from resolved options: database, the images plugin behind the auth plugin, the listener.
import { STATUS_CODES } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { authPlugin, type KeystoneAuth } from '../common/auth.js';
import { ApiError } from '../common/errors.js';
import { createApiApp, routes } from '../common/fastify-app.js';
import { LATENCY_BUCKETS, type Metrics } from '../common/metrics.js';
import type { Logger } from '../common/log.js';
import { migrate, openDatabase, type Db } from '../db/connection.js';
import { glanceMigrations, type GlanceDatabase } from '../db/glance-schema.js';
import { glanceFaults, imagesApi } from './images.js';

export interface GlanceOptions {
  connection: string;
  host: string;
  port: number;
  dataDir: string;
  sizeCap?: number;
  authStrategy: string;
  keystone?: KeystoneAuth | undefined;
  log: Logger;
  metrics?: Metrics | undefined;
}

export interface RunningGlance {
  app: FastifyInstance;
  port: number;
  url: string;
  db: Db<GlanceDatabase>;
  close(): Promise<void>;
}

/** Glance v2's version list (what keystoneauth's discovery reads at the catalog endpoint). */
function versions(host: string | undefined) {
  const href = `http://${host ?? '127.0.0.1:9292'}/v2/`;
  return {
    versions: ['2.9', '2.8', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'].map((v, i) => ({ id: `v${v}`, status: i === 0 ? 'CURRENT' : 'SUPPORTED', links: [{ rel: 'self', href }] })),
  };
}

export async function startGlance(o: GlanceOptions): Promise<RunningGlance> {
  const dbTime = o.metrics?.histogram('db_query_duration_seconds', 'Database query latency.', [], LATENCY_BUCKETS);
  const db = openDatabase<GlanceDatabase>(o.connection, { onQuery: dbTime ? (ms) => dbTime.observe(ms / 1000) : undefined });
  await migrate(db, 'glance', glanceMigrations);
  const app = createApiApp({
    log: o.log,
    // webob's plain-text error page, which glance-api answers with.
    faultBody: (e) => `${e.status} ${STATUS_CODES[e.status] ?? ''}\n\n${e.message}\n\n   `,
    notFound: () => glanceFaults.notFound('The resource could not be found.'),
    malformed: () => glanceFaults.badRequest('Malformed JSON in request body.'),
    internal: () => new ApiError(500, 'HTTPInternalServerError', 'The server has either erred or is incapable of performing the requested operation.'),
    bodyLimit: 1 << 20,
    metrics: o.metrics,
  });
  await app.register(authPlugin, {
    strategy: o.authStrategy,
    keystone: o.keystone,
    // Glance without keystone runs an admin context (UnauthenticatedContextMiddleware); the owner is the project header.
    noauth: (req) => {
      const h = req.headers['x-project-id'] ?? req.headers['x-tenant-id'];
      const p = (Array.isArray(h) ? h[0] : h) ?? '';
      return { projectId: p, userId: p, roles: ['admin'], isAdmin: true };
    },
    isPublic: (req) => /^\/(versions)?\/?(\?.*)?$/.test(req.url),
    log: o.log,
  });
  const versionsReply = async (req: { headers: { host?: string } }, reply: { code(n: number): { send(b: unknown): unknown } }) => reply.code(300).send(versions(req.headers.host));
  routes(app, '/', { GET: versionsReply }, glanceFaults.notAllowed);
  routes(app, '/versions', { GET: async (req) => versions(req.headers.host) }, glanceFaults.notAllowed);
  await app.register(imagesApi, { db: db.db, dataDir: o.dataDir, sizeCap: o.sizeCap ?? 1099511627776, log: o.log });
  try {
    await app.listen({ host: o.host, port: o.port });
  } catch (e) {
    await db.close();
    throw e;
  }
  const a = app.server.address();
  const port = typeof a === 'object' && a ? a.port : o.port;
  const host = o.host === '0.0.0.0' || o.host === '::' ? '127.0.0.1' : o.host;
  return {
    app,
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    db,
    async close() {
      app.server.closeIdleConnections();
      await app.close();
      await o.keystone?.session.close();
      await db.close();
    },
  };
}
