// /v2.0/agents (state reports are POSTs, as Neutron's report_state RPC), and the agent-scheduler extensions
// (l3_agent_scheduler, dhcp_agent_scheduler): the bindings as sub-resources. Admin only, reads included.
import type { FastifyPluginAsync } from 'fastify';
import { ApiError } from '../../common/errors.js';
import { objectBody, routes } from '../../common/fastify-app.js';
import { faults } from '../faults.js';
import { collectionRoutes, malformed, wrap, wrapList } from './collection.js';
import type { ApiDeps } from './deps.js';

export const agentsApi: FastifyPluginAsync<ApiDeps> = async (app, { plugin, policy }) => {
  const agents = plugin.agents;
  const sched = plugin.scheduler;
  collectionRoutes(app, {
    plural: 'agents',
    singular: 'agent',
    list: wrapList((c, f) => policy.listAgents(c, f)),
    show: wrap((c, id) => policy.getAgent(c, id)),
    // Agents report state by POSTing themselves (Neutron does this over RPC): an upsert, not a plain create.
    create: wrap(async (c, b) => (policy.requireAdmin(c, 'create_agent'), agents.reportAgent(b))),
    update: wrap(async (c, id, b) => (policy.requireAdmin(c, 'update_agent'), agents.updateAgent(id, b))),
    remove: async (c, id) => (policy.requireAdmin(c, 'delete_agent'), agents.deleteAgent(id)),
  });

  for (const l3 of [true, false]) {
    const sub = l3 ? 'l3-routers' : 'dhcp-networks';
    const key = l3 ? 'router_id' : 'network_id';
    routes(
      app,
      `/v2.0/agents/:id/${sub}`,
      {
        GET: async (req) => {
          policy.requireAdmin(req.auth, l3 ? 'get_l3-routers' : 'get_dhcp-networks');
          const id = (req.params as { id: string }).id;
          const ids = l3 ? await sched.routersOnAgent(id) : await sched.networksOnAgent(id);
          const items = ids.length ? (l3 ? await plugin.store.listRouters({ id: ids }) : await plugin.store.listNetworks({ id: ids })) : [];
          return { [l3 ? 'routers' : 'networks']: items };
        },
        POST: async (req, reply) => {
          policy.requireAdmin(req.auth, l3 ? 'create_l3-router' : 'create_dhcp-network');
          const id = (req.params as { id: string }).id;
          const rid = objectBody(req, malformed)[key];
          if (typeof rid !== 'string' || rid === '') throw new ApiError(400, 'HTTPBadRequest', `Failed to parse request. Required attribute '${key}' not specified`);
          if (l3) await sched.addRouterToAgent(id, rid);
          else await sched.addNetworkToAgent(id, rid);
          return reply.code(201).send(null);
        },
      },
      faults.notAllowed,
    );
    routes(
      app,
      `/v2.0/agents/:id/${sub}/:sub`,
      {
        DELETE: async (req, reply) => {
          policy.requireAdmin(req.auth, l3 ? 'delete_l3-router' : 'delete_dhcp-network');
          const { id, sub: rid } = req.params as { id: string; sub: string };
          if (l3) await sched.removeRouterFromAgent(id, rid);
          else await sched.removeNetworkFromAgent(id, rid);
          return reply.code(204).send();
        },
      },
      faults.notAllowed,
    );
  }
  for (const [coll, sub] of [['routers', 'l3-agents'], ['networks', 'dhcp-agents']] as const) {
    routes(
      app,
      `/v2.0/${coll}/:id/${sub}`,
      {
        GET: async (req) => {
          policy.requireAdmin(req.auth, `get_${sub}`);
          const id = (req.params as { id: string }).id;
          return { agents: coll === 'routers' ? await sched.agentsHostingRouter(id) : await sched.agentsHostingNetwork(id) };
        },
      },
      faults.notAllowed,
    );
  }
};
