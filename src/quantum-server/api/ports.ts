// /v2.0/ports: also the metadata agent's lookup (GET with network_id and fixed_ips filters), the hot path.
import type { FastifyPluginAsync } from 'fastify';
import { collectionRoutes, wrap, wrapList } from './collection.js';
import type { ApiDeps } from './deps.js';

export const portsApi: FastifyPluginAsync<ApiDeps> = async (app, { policy }) => {
  collectionRoutes(app, {
    plural: 'ports',
    singular: 'port',
    list: wrapList((c, f) => policy.listPorts(c, f)),
    show: wrap((c, id) => policy.getPort(c, id)),
    create: wrap((c, b) => policy.createPort(c, b)),
    update: wrap((c, id, b) => policy.updatePort(c, id, b)),
    remove: (c, id) => policy.deletePort(c, id),
  });
};
