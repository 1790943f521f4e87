// /v2.0/networks.
import type { FastifyPluginAsync } from 'fastify';
import { collectionRoutes, wrap, wrapList } from './collection.js';
import type { ApiDeps } from './deps.js';

export const networksApi: FastifyPluginAsync<ApiDeps> = async (app, { policy }) => {
  collectionRoutes(app, {
    plural: 'networks',
    singular: 'network',
    list: wrapList((c, f) => policy.listNetworks(c, f)),
    show: wrap((c, id) => policy.getNetwork(c, id)),
    create: wrap((c, b) => policy.createNetwork(c, b)),
    update: wrap((c, id, b) => policy.updateNetwork(c, id, b)),
    remove: (c, id) => policy.deleteNetwork(c, id),
  });
};
