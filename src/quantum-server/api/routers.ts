// /v2.0/routers and their interfaces (PUT add_router_interface / remove_router_interface).
import type { FastifyPluginAsync } from 'fastify';
import { objectBody, routes } from '../../common/fastify-app.js';
import { faults } from '../faults.js';
import { collectionRoutes, malformed, wrap, wrapList } from './collection.js';
import type { ApiDeps } from './deps.js';

export const routersApi: FastifyPluginAsync<ApiDeps> = async (app, { policy }) => {
  collectionRoutes(app, {
    plural: 'routers',
    singular: 'router',
    list: wrapList((c, f) => policy.listRouters(c, f)),
    show: wrap((c, id) => policy.getRouter(c, id)),
    create: wrap((c, b) => policy.createRouter(c, b)),
    update: wrap((c, id, b) => policy.updateRouter(c, id, b)),
    remove: (c, id) => policy.deleteRouter(c, id),
  });
  for (const [op, add] of [['add_router_interface', true], ['remove_router_interface', false]] as const) {
    routes(app, `/v2.0/routers/:id/${op}`, { PUT: async (req) => policy.routerInterface(req.auth, (req.params as { id: string }).id, objectBody(req, malformed), add) }, faults.notAllowed);
  }
};
