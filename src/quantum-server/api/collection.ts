// The shape every Neutron collection shares: GET list (filters, fields, sort, pagination), POST (one or bulk),
// GET/PUT/DELETE by id, with the envelope ({"network": {...}}) checked by a JSON schema.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '../../common/errors.js';
import { objectBody, routes, searchParams } from '../../common/fastify-app.js';
import { faults } from '../faults.js';
import type { Ctx, Filters } from '../store.js';
import type { Body } from '../validate.js';

export type Obj = Record<string, unknown>;

export interface CollectionDef {
  plural: string;
  singular: string;
  list(ctx: Ctx, f: Filters): Promise<Obj[]>;
  show(ctx: Ctx, id: string): Promise<Obj>;
  create?(ctx: Ctx, body: Body): Promise<Obj>;
  update?(ctx: Ctx, id: string, body: Body): Promise<Obj>;
  remove?(ctx: Ctx, id: string): Promise<void>;
}

/** Query keys that are not attribute filters (Neutron's pagination, sorting and field selection). */
const NON_FILTERS = new Set(['fields', 'limit', 'marker', 'sort_key', 'sort_dir', 'page_reverse']);

export const malformed = () => faults.malformed('Cannot understand JSON');
const unableToFind = (singular: string) => new ApiError(400, 'HTTPBadRequest', `Unable to find '${singular}' in request body`);
const isObj = (b: unknown) => b !== null && typeof b === 'object' && !Array.isArray(b);
/** A body that is no JSON object is malformed; one without the resource's key is "Unable to find". */
const envelopeFault = (singular: string) => (req: FastifyRequest) => (isObj(req.body) ? unableToFind(singular) : malformed());

const asObj = <T>(x: T) => x as unknown as Obj;
export const asObjs = <T>(x: T[]) => x as unknown as Obj[];
export const wrap = <A extends unknown[], T>(f: (...a: A) => Promise<T>) => async (...a: A): Promise<Obj> => asObj(await f(...a));
export const wrapList = <A extends unknown[], T>(f: (...a: A) => Promise<T[]>) => async (...a: A): Promise<Obj[]> => asObjs(await f(...a));

function trimFields(o: Obj, fields: string[]): Obj {
  if (!fields.length) return o;
  const out: Obj = {};
  for (const f of fields) if (f in o) out[f] = o[f];
  return out;
}

function cmp(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  return String(a) < String(b) ? -1 : 1;
}

/** sort_key/sort_dir (repeatable), marker and limit as Neutron's pagination takes them. */
function paginate(items: Obj[], q: URLSearchParams): Obj[] {
  const keys = q.getAll('sort_key');
  const dirs = q.getAll('sort_dir');
  for (const d of dirs) if (d !== 'asc' && d !== 'desc') throw new ApiError(400, 'HTTPBadRequest', `Sort direction ${d} is invalid, must be 'asc' or 'desc'`);
  if (keys.length) {
    if (items[0]) for (const k of keys) if (!(k in items[0])) throw new ApiError(400, 'HTTPBadRequest', `${k} is an invalid attribute for sort_key`);
    items = [...items].sort((a, b) => {
      for (let i = 0; i < keys.length; i++) {
        const c = cmp(a[keys[i]!], b[keys[i]!]);
        if (c) return dirs[i] === 'desc' ? -c : c;
      }
      return 0;
    });
  }
  const marker = q.get('marker');
  if (marker) {
    const i = items.findIndex((x) => x.id === marker);
    items = i >= 0 ? items.slice(i + 1) : items;
  }
  const limitRaw = q.get('limit');
  if (limitRaw !== null && limitRaw !== '') {
    const limit = Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 0) throw new ApiError(400, 'HTTPBadRequest', `Limit must be an integer 0 or greater and not '${limitRaw}'`);
    if (limit > 0) items = items.slice(0, limit);
  }
  return items;
}

export function fieldsOf(q: URLSearchParams): string[] {
  return q.getAll('fields').flatMap((f) => f.split(',')).filter(Boolean);
}

export function origin(req: FastifyRequest): string {
  return `http://${req.headers.host ?? 'localhost:9696'}`;
}

/** {"<singular>": {...}} for create and update, or {"<plural>": [...]} for a bulk create. */
function envelopeSchema(singular: string, plural?: string) {
  const one = { type: 'object', required: [singular], properties: { [singular]: { type: 'object' } } };
  return plural ? { anyOf: [{ type: 'object', required: [plural], properties: { [plural]: { type: 'array' } } }, one] } : one;
}

export function collectionRoutes(app: FastifyInstance, c: CollectionDef): void {
  const base = `/v2.0/${c.plural}`;
  routes(
    app,
    base,
    {
      GET: async (req) => {
        const q = searchParams(req);
        const filters: Filters = {};
        for (const key of new Set(q.keys())) {
          if (NON_FILTERS.has(key)) continue;
          const vals = q.getAll(key).filter((v) => v !== '');
          if (vals.length) filters[key] = vals;
        }
        const fields = fieldsOf(q);
        const items = paginate(await c.list(req.auth, filters), q);
        const body: Obj = { [c.plural]: fields.length ? items.map((x) => trimFields(x, fields)) : items };
        const limit = Number(q.get('limit'));
        if (limit > 0 && items.length === limit) {
          const next = new URLSearchParams(q);
          next.set('marker', String(items[items.length - 1]!.id));
          const path = req.originalUrl.split('?')[0];
          body[`${c.plural}_links`] = [{ href: `${origin(req)}${path}?${next.toString()}`, rel: 'next' }];
        }
        return body;
      },
      ...(c.create && {
        POST: {
          opts: { schema: { body: envelopeSchema(c.singular, c.plural) }, config: { invalidBody: envelopeFault(c.singular) } },
          handler: async (req, reply) => {
            const body = objectBody(req, malformed);
            const fields = fieldsOf(searchParams(req));
            if (Array.isArray(body[c.plural])) {
              // Bulk create, as Neutron's emulated bulk: one by one, the first failure answers.
              const out: Obj[] = [];
              for (const item of body[c.plural] as unknown[]) {
                if (item === null || typeof item !== 'object' || Array.isArray(item)) throw faults.malformed(`Bulk operation requires a list of ${c.singular} objects`);
                out.push(await c.create!(req.auth, item as Body));
              }
              return reply.code(201).send({ [c.plural]: out.map((x) => trimFields(x, fields)) });
            }
            return reply.code(201).send({ [c.singular]: trimFields(await c.create!(req.auth, body[c.singular] as Body), fields) });
          },
        },
      }),
    },
    faults.notAllowed,
  );
  routes(
    app,
    `${base}/:id`,
    {
      GET: async (req) => ({ [c.singular]: trimFields(await c.show(req.auth, (req.params as { id: string }).id), fieldsOf(searchParams(req))) }),
      ...(c.update && {
        PUT: {
          opts: { schema: { body: envelopeSchema(c.singular) }, config: { invalidBody: envelopeFault(c.singular) } },
          handler: async (req) => ({ [c.singular]: await c.update!(req.auth, (req.params as { id: string }).id, objectBody(req, malformed)[c.singular] as Body) }),
        },
      }),
      ...(c.remove && {
        DELETE: async (req, reply) => {
          await c.remove!(req.auth, (req.params as { id: string }).id);
          return reply.code(204).send();
        },
      }),
    },
    faults.notAllowed,
  );
}
