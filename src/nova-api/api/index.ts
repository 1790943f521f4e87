// The compute API subset (/v2.1, also /v2 and the legacy /v2.1/{project_id}/ form) on fastify: one plugin per
// resource group, the auth plugin in front, Nova's fault bodies ({"itemNotFound": {"code": 404, ...}}).
import type { Metrics } from '../../common/metrics.js';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { authPlugin, type KeystoneAuth } from '../../common/auth.js';
import { ApiError } from '../../common/errors.js';
import { createApiApp, routes } from '../../common/fastify-app.js';
import { bad, FAULT_NAMES, noauthNova, notAllowed, resourceNotFound, type ComputeDeps } from './context.js';
import { flavorsApi } from './flavors.js';
import { imagesApi } from './images.js';
import { keypairsApi } from './keypairs.js';
import { serverMetadataApi } from './server-metadata.js';
import { serverPasswordApi } from './server-password.js';
import { serversApi } from './servers.js';

const VERSION = { id: 'v2.1', status: 'CURRENT', version: '2.90', min_version: '2.1', updated: '2013-07-23T11:33:21Z' };

const versionsApi: FastifyPluginAsync = async (app) => {
  const self = (host: string | undefined) => [{ rel: 'self', href: `http://${host ?? '127.0.0.1:8774'}/v2.1/` }];
  routes(app, '/', { GET: async (req) => ({ versions: [{ ...VERSION, links: self(req.headers.host) }] }) }, notAllowed);
  for (const p of ['/v2.1', '/v2', '/v2.1/:project_id', '/v2/:project_id']) {
    routes(app, p, { GET: async (req) => ({ version: { id: VERSION.id, status: VERSION.status, version: VERSION.version, min_version: VERSION.min_version, links: self(req.headers.host) } }) }, notAllowed);
  }
};

export interface ComputeApiOptions extends Omit<ComputeDeps, 'keystone'> {
  authStrategy: string;
  keystone?: KeystoneAuth | undefined;
  metrics?: Metrics | undefined;
}

export async function buildComputeApi(o: ComputeApiOptions): Promise<FastifyInstance> {
  const app = createApiApp({
    log: o.log,
    faultBody: (e) => ({ [FAULT_NAMES[e.status] ?? 'computeFault']: { code: e.status, message: e.message } }),
    notFound: resourceNotFound,
    malformed: () => bad('Malformed request body'),
    internal: () => new ApiError(500, 'computeFault', 'Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova API log if possible.'),
    keepAliveTimeout: 5_000,
    metrics: o.metrics,
    fromStatus: (status, message) => (status === 413 ? new ApiError(413, 'overLimit', 'Request body too large') : bad(message)),
  });
  await app.register(authPlugin, {
    strategy: o.authStrategy,
    keystone: o.keystone,
    noauth: noauthNova,
    // Nova's paste serves / and /v2.1 (the version documents) without auth_token.
    isPublic: (req) => /^\/(v2(\.1)?\/?)?(\?.*)?$/.test(req.url),
    log: o.log,
  });
  await app.register(versionsApi);
  const deps: ComputeDeps = { db: o.db, quantum: o.quantum, glance: o.glance, log: o.log, keystone: o.authStrategy === 'keystone', opts: o.opts };
  for (const prefix of ['/v2.1', '/v2', '/v2.1/:project_id', '/v2/:project_id']) {
    for (const api of [serversApi, serverMetadataApi, serverPasswordApi, flavorsApi, keypairsApi, imagesApi]) await app.register(api, { ...deps, prefix });
  }
  return app;
}
