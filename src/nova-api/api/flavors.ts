// /flavors: Nova's classic flavors, listing and show for everyone, create and delete for admins.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { routes, objectBody } from '../../common/fastify-app.js';
import { isDuplicateKey } from '../../db/connection.js';
import type { FlavorRow } from '../../db/nova-schema.js';
import { bad, conflict, ctxOf, forbidden, isObj, notAllowed, notFound, type ComputeDeps, type Ctx, type Json } from './context.js';

export function flavorView(ctx: Ctx, f: FlavorRow, detail: boolean): Json {
  const links = [
    { rel: 'self', href: `${ctx.base}/flavors/${f.flavorid}` },
    { rel: 'bookmark', href: `${ctx.base.replace('/v2.1', '')}/flavors/${f.flavorid}` },
  ];
  if (!detail) return { id: f.flavorid, links, name: f.name };
  return {
    'OS-FLV-DISABLED:disabled': !!Number(f.disabled),
    disk: Number(f.root_gb),
    'OS-FLV-EXT-DATA:ephemeral': Number(f.ephemeral_gb),
    'os-flavor-access:is_public': !!Number(f.is_public),
    id: f.flavorid,
    links,
    name: f.name,
    ram: Number(f.memory_mb),
    swap: Number(f.swap) ? Number(f.swap) : '',
    vcpus: Number(f.vcpus),
    rxtx_factor: Number(f.rxtx_factor),
  };
}

const malformed = () => bad('Malformed request body');

export const flavorsApi: FastifyPluginAsync<ComputeDeps> = async (app, deps) => {
  const db = deps.db;
  const getFlavor = async (flavorid: string): Promise<FlavorRow> => {
    const f = await db.selectFrom('flavors').selectAll().where('flavorid', '=', flavorid).executeTakeFirst();
    if (!f) throw notFound(`Flavor ${flavorid} could not be found.`);
    return f;
  };
  const listFlavors = async (ctx: Ctx, detail: boolean): Promise<Json> => {
    const rows = await db.selectFrom('flavors').selectAll().where('disabled', '=', 0).orderBy('flavorid').execute();
    // Nova orders by flavorid as a string, which puts "10" before "2"; sort numerically when both are numbers.
    rows.sort((a, b) => (/^\d+$/.test(a.flavorid) && /^\d+$/.test(b.flavorid) ? Number(a.flavorid) - Number(b.flavorid) : a.flavorid < b.flavorid ? -1 : 1));
    return { flavors: rows.map((f) => flavorView(ctx, f, detail)) };
  };

  const createFlavor = async (ctx: Ctx, body: Json): Promise<Json> => {
    if (!ctx.elevated) throw forbidden('os_compute_api:os-flavor-manage:create');
    const f = body.flavor;
    if (!isObj(f)) throw bad("Invalid input for field/attribute flavor. 'flavor' is a required property");
    const name = f.name;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 255) throw bad('Invalid input for field/attribute name.');
    const intField = (k: string, def: number | undefined, min: number): number => {
      const v = f[k];
      if (v === undefined || v === '') {
        if (def === undefined) throw bad(`Invalid input for field/attribute flavor. '${k}' is a required property`);
        return def;
      }
      const num = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
      if (typeof num !== 'number' || !Number.isInteger(num) || num < min) throw bad(`Invalid input for field/attribute ${k}. Value: ${JSON.stringify(v)}.`);
      return num;
    };
    const ram = intField('ram', undefined, 1);
    const vcpus = intField('vcpus', undefined, 1);
    const disk = intField('disk', undefined, 0);
    const swap = intField('swap', 0, 0);
    const eph = intField('OS-FLV-EXT-DATA:ephemeral', 0, 0);
    const rxtx = typeof f.rxtx_factor === 'number' ? f.rxtx_factor : 1.0;
    const isPublic = f['os-flavor-access:is_public'] === undefined ? true : !!f['os-flavor-access:is_public'];
    let flavorid = f.id === undefined || f.id === null ? randomUUID() : String(f.id);
    if (!/^[a-zA-Z0-9._ -]{1,255}$/.test(flavorid)) throw bad(`Invalid input for field/attribute id.`);
    flavorid = flavorid.trim();
    if (await db.selectFrom('flavors').select('id').where('name', '=', name).executeTakeFirst()) throw conflict(`Flavor with name ${name} already exists.`);
    try {
      await db
        .insertInto('flavors')
        .values({ flavorid, name, memory_mb: ram, vcpus, root_gb: disk, ephemeral_gb: eph, swap, rxtx_factor: rxtx, is_public: isPublic ? 1 : 0, disabled: 0, description: typeof f.description === 'string' ? f.description : null, created_at: new Date().toISOString() } as never)
        .execute();
    } catch (e) {
      if (isDuplicateKey(e)) throw conflict(`Flavor with ID ${flavorid} already exists.`);
      throw e;
    }
    return { flavor: flavorView(ctx, await getFlavor(flavorid), true) };
  };

  routes(app, '/flavors', { GET: async (req) => listFlavors(ctxOf(req, deps), false), POST: async (req) => createFlavor(ctxOf(req, deps), objectBody(req, malformed)) }, notAllowed);
  routes(app, '/flavors/detail', { GET: async (req) => listFlavors(ctxOf(req, deps), true) }, notAllowed);
  // Flavor extra specs (openstackclient reads them for every flavor it lists): none are kept here.
  routes(app, '/flavors/:id/os-extra_specs', { GET: async (req) => (await getFlavor((req.params as { id: string }).id), { extra_specs: {} }) }, notAllowed);
  routes(
    app,
    '/flavors/:id/os-extra_specs/:key',
    {
      GET: async (req) => {
        const { id, key } = req.params as { id: string; key: string };
        await getFlavor(id);
        throw notFound(`Flavor ${id} has no extra specs with key ${key}.`);
      },
    },
    notAllowed,
  );
  routes(
    app,
    '/flavors/:id',
    {
      GET: async (req) => {
        const ctx = ctxOf(req, deps);
        return { flavor: flavorView(ctx, await getFlavor((req.params as { id: string }).id), true) };
      },
      DELETE: async (req, reply) => {
        const ctx = ctxOf(req, deps);
        if (!ctx.elevated) throw forbidden('os_compute_api:os-flavor-manage:delete');
        const id = (req.params as { id: string }).id;
        await getFlavor(id);
        await db.deleteFrom('flavors').where('flavorid', '=', id).execute();
        return reply.code(202).send();
      },
    },
    notAllowed,
  );
};
