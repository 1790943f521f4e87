// /servers/{id}/metadata[/{key}]: GET, POST merge, PUT replace; one key: GET, PUT, DELETE.
import type { FastifyPluginAsync } from 'fastify';
import { objectBody, routes } from '../../common/fastify-app.js';
import { bad, ctxOf, isObj, notAllowed, notFound, type ComputeDeps } from './context.js';
import { getInstance } from './instances.js';

export function checkMetadata(md: unknown, what = 'metadata'): Record<string, string> {
  if (!isObj(md)) throw bad(`Invalid input for field/attribute ${what}. Value: ${JSON.stringify(md)}. ${JSON.stringify(md)} is not of type 'object'`);
  for (const [k, v] of Object.entries(md)) {
    if (k.length < 1 || k.length > 255) throw bad(`Invalid input for field/attribute ${what}. Value: ${JSON.stringify(md)}. '${k}' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'`);
    if (typeof v !== 'string') throw bad(`Invalid input for field/attribute ${k}. Value: ${JSON.stringify(v)}. ${JSON.stringify(v)} is not of type 'string'`);
    if (v.length > 255) throw bad(`Invalid input for field/attribute ${k}. Value: ${v}. '${v}' is too long`);
  }
  return md as Record<string, string>;
}

const malformed = () => bad('Malformed request body');

export const serverMetadataApi: FastifyPluginAsync<ComputeDeps> = async (app, deps) => {
  const db = deps.db;
  const readMeta = async (uuid: string): Promise<Record<string, string>> => {
    const rows = await db.selectFrom('instance_metadata').select(['key', 'value']).where('instance_uuid', '=', uuid).orderBy('id').execute();
    return Object.fromEntries(rows.map((r) => [r.key, r.value]));
  };
  const writeMeta = async (uuid: string, md: Record<string, string>, replace: boolean): Promise<void> => {
    await db.transaction().execute(async (tx) => {
      if (replace) await tx.deleteFrom('instance_metadata').where('instance_uuid', '=', uuid).execute();
      for (const [k, v] of Object.entries(md)) {
        const ex = await tx.selectFrom('instance_metadata').select('id').where('instance_uuid', '=', uuid).where('key', '=', k).executeTakeFirst();
        if (ex) await tx.updateTable('instance_metadata').set({ value: v }).where('id', '=', ex.id).execute();
        else await tx.insertInto('instance_metadata').values({ instance_uuid: uuid, key: k, value: v } as never).execute();
      }
      await tx.updateTable('instances').set({ updated_at: new Date().toISOString() }).where('uuid', '=', uuid).execute();
    });
    deps.opts.onInstanceChange?.(uuid);
  };
  const instance = async (req: Parameters<typeof ctxOf>[0]) => {
    const id = (req.params as { id: string }).id;
    await getInstance(deps, ctxOf(req, deps), id);
    return id;
  };
  const setAll = (replace: boolean) => async (req: Parameters<typeof ctxOf>[0]) => {
    const id = await instance(req);
    const b = objectBody(req, malformed);
    if (!('metadata' in b)) throw bad("Invalid input for field/attribute metadata. 'metadata' is a required property");
    const md = checkMetadata(b.metadata);
    await writeMeta(id, md, replace);
    return { metadata: replace ? md : await readMeta(id) };
  };

  routes(app, '/servers/:id/metadata', { GET: async (req) => ({ metadata: await readMeta(await instance(req)) }), POST: setAll(false), PUT: setAll(true) }, notAllowed);
  routes(
    app,
    '/servers/:id/metadata/:key',
    {
      GET: async (req) => {
        const k = (req.params as { key: string }).key;
        const md = await readMeta(await instance(req));
        if (!(k in md)) throw notFound('Metadata item was not found');
        return { meta: { [k]: md[k] } };
      },
      PUT: async (req) => {
        const id = await instance(req);
        const k = (req.params as { key: string }).key;
        const meta = checkMetadata(objectBody(req, malformed).meta, 'meta');
        const keys = Object.keys(meta);
        if (keys.length > 1) throw bad('Request body contains too many items');
        if (keys.length === 0 || !(k in meta)) throw bad('Request body and URI mismatch');
        await writeMeta(id, { [k]: meta[k]! }, false);
        return { meta: { [k]: meta[k] } };
      },
      DELETE: async (req, reply) => {
        const id = await instance(req);
        const k = (req.params as { key: string }).key;
        const md = await readMeta(id);
        if (!(k in md)) throw notFound('Metadata item was not found');
        await db.deleteFrom('instance_metadata').where('instance_uuid', '=', id).where('key', '=', k).execute();
        deps.opts.onInstanceChange?.(id);
        return reply.code(204).send();
      },
    },
    notAllowed,
  );
};
