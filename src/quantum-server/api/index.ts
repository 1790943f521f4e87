// The Neutron v2.0 REST API on fastify: one plugin per resource group, the keystone (or noauth) plugin in
// front of them all, NeutronError bodies from one error handler.
import type { FastifyInstance } from 'fastify';
import { authPlugin, type KeystoneAuth } from '../../common/auth.js';
import { ApiError } from '../../common/errors.js';
import { createApiApp } from '../../common/fastify-app.js';
import type { Logger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { AgentRpc } from '../agent-rpc.js';
import { noauthContext } from '../auth.js';
import { faults } from '../faults.js';
import type { QuantumPlugin } from '../plugin.js';
import { QuantumPolicy } from '../policy.js';
import { agentsApi } from './agents.js';
import { malformed } from './collection.js';
import type { ApiDeps } from './deps.js';
import { networksApi } from './networks.js';
import { portsApi } from './ports.js';
import { routersApi } from './routers.js';
import { rpcApi } from './rpc.js';
import { subnetsApi } from './subnets.js';
import { versionsApi } from './versions.js';

export interface ApiOptions {
  plugin: QuantumPlugin;
  rpc: AgentRpc;
  log: Logger;
  authStrategy: string;
  keystone?: KeystoneAuth | undefined;
  metrics?: Metrics | undefined;
}

export async function buildQuantumApi(o: ApiOptions): Promise<FastifyInstance> {
  const app = createApiApp({
    log: o.log,
    faultBody: (e) => ({ NeutronError: { type: e.type, message: e.message, detail: e.detail } }),
    notFound: faults.notFoundPath,
    malformed,
    internal: () => new ApiError(500, 'HTTPInternalServerError', 'Request Failed: internal server error while processing your request.'),
    stripJsonSuffix: true,
    metrics: o.metrics,
    fromStatus: (status, message) => (status === 413 ? new ApiError(413, 'RequestEntityTooLarge', 'Request body too large') : new ApiError(status, 'HTTPBadRequest', message)),
  });
  await app.register(authPlugin, {
    strategy: o.authStrategy,
    keystone: o.keystone,
    noauth: noauthContext,
    // Neutron's paste pipeline serves the version document without auth_token.
    isPublic: (req) => req.url === '/' || req.url.startsWith('/?'),
    log: o.log,
  });
  const deps: ApiDeps = { plugin: o.plugin, policy: new QuantumPolicy(o.plugin), rpc: o.rpc };
  await app.register(versionsApi);
  for (const api of [networksApi, subnetsApi, portsApi, routersApi, agentsApi, rpcApi]) await app.register(api, deps);
  return app;
}
