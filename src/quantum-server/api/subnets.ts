// /v2.0/subnets (addresses are allocated from them by the ports' create and update).
import type { FastifyPluginAsync } from 'fastify';
import { collectionRoutes, wrap, wrapList } from './collection.js';
import type { ApiDeps } from './deps.js';

export const subnetsApi: FastifyPluginAsync<ApiDeps> = async (app, { policy }) => {
  collectionRoutes(app, {
    plural: 'subnets',
    singular: 'subnet',
    list: wrapList((c, f) => policy.listSubnets(c, f)),
    show: wrap((c, id) => policy.getSubnet(c, id)),
    create: wrap((c, b) => policy.createSubnet(c, b)),
    update: wrap((c, id, b) => policy.updateSubnet(c, id, b)),
    remove: (c, id) => policy.deleteSubnet(c, id),
  });
};
