// /images/{id}: Nova's image proxy over Glance (deprecated in Nova, still what older clients ask).
import type { FastifyPluginAsync } from 'fastify';
import { routes } from '../../common/fastify-app.js';
import { staticToken } from '../../common/quantum-client.js';
import { ctxOf, notAllowed, notFound, type ComputeDeps } from './context.js';

export const imagesApi: FastifyPluginAsync<ComputeDeps> = async (app, deps) => {
  routes(
    app,
    '/images/:id',
    {
      GET: async (req) => {
        const ctx = ctxOf(req, deps);
        const id = (req.params as { id: string }).id;
        const img = deps.glance ? await deps.glance.show(id, deps.keystone && ctx.token ? staticToken(ctx.token) : undefined) : undefined;
        if (!img) throw notFound(`Image ${id} could not be found.`);
        const root = ctx.base.replace('/v2.1', '');
        return {
          image: {
            id: img.id,
            name: img.name,
            status: img.status.toUpperCase(),
            minDisk: img.min_disk ?? 0,
            minRam: img.min_ram ?? 0,
            progress: img.status === 'active' ? 100 : 0,
            metadata: {},
            links: [
              { rel: 'self', href: `${ctx.base}/images/${img.id}` },
              { rel: 'bookmark', href: `${root}/images/${img.id}` },
            ],
          },
        };
      },
    },
    notAllowed,
  );
};
