// /servers/{id}/os-server-password: what the guest posted to the metadata API (GET), cleared by DELETE.
import type { FastifyPluginAsync } from 'fastify';
import { routes } from '../../common/fastify-app.js';
import { extractPassword } from '../../nova-metadata/base.js';
import { setSystemPassword } from '../../nova-metadata/store.js';
import { ctxOf, notAllowed, type ComputeDeps } from './context.js';
import { getInstance } from './instances.js';

export const serverPasswordApi: FastifyPluginAsync<ComputeDeps> = async (app, deps) => {
  routes(
    app,
    '/servers/:id/os-server-password',
    {
      GET: async (req) => {
        const id = (req.params as { id: string }).id;
        await getInstance(deps, ctxOf(req, deps), id);
        const rows = await deps.db.selectFrom('instance_system_metadata').select(['key', 'value']).where('instance_uuid', '=', id).execute();
        return { password: extractPassword(new Map(rows.map((r) => [r.key, r.value]))) ?? '' };
      },
      DELETE: async (req, reply) => {
        const id = (req.params as { id: string }).id;
        await getInstance(deps, ctxOf(req, deps), id);
        await setSystemPassword(deps.db, id, '');
        deps.opts.onInstanceChange?.(id);
        return reply.code(204).send();
      },
    },
    notAllowed,
  );
};
