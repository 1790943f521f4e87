// The agents' calls (agent-rpc.ts): POST /v2.0/rpc/<topic>/<method>, the args as the body. Admin only: the
// agents' service users have the admin role, as Neutron's RPC is open only to services.
import type { FastifyPluginAsync } from 'fastify';
import { objectBody, routes } from '../../common/fastify-app.js';
import { faults } from '../faults.js';
import { malformed } from './collection.js';
import type { ApiDeps } from './deps.js';

export const rpcApi: FastifyPluginAsync<ApiDeps> = async (app, { policy, rpc }) => {
  routes(
    app,
    '/v2.0/rpc/:topic/:method',
    {
      POST: async (req) => {
        policy.requireAdmin(req.auth, 'rpc');
        const { topic, method } = req.params as { topic: string; method: string };
        return { result: await rpc.call(topic, method, objectBody(req, malformed)) };
      },
    },
    faults.notAllowed,
  );
};
