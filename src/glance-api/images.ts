// /v2/images as Glance v2 serves them: list (filters, sort, marker/limit), create, show, JSON-patch update,
// delete, and the image data (PUT/GET /file, kept on the filesystem store). Glance's default policy: the
// admin role sees all; anyone else sees public images and their project's; only admins publicize.
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { RequestAuth } from '../common/auth.js';
import { ApiError } from '../common/errors.js';
import { routes, searchParams } from '../common/fastify-app.js';
import type { Logger } from '../common/log.js';
import type { GlanceDatabase, ImageRow } from '../db/glance-schema.js';

export interface ImagesDeps {
  db: Kysely<GlanceDatabase>;
  dataDir: string;
  sizeCap: number;
  log: Logger;
}

type Json = Record<string, unknown>;

const e = (status: number, type: string, m: string) => new ApiError(status, type, m);
export const glanceFaults = {
  badRequest: (m: string) => e(400, 'HTTPBadRequest', m),
  forbidden: (m: string) => e(403, 'HTTPForbidden', m),
  notFound: (m: string) => e(404, 'HTTPNotFound', m),
  conflict: (m: string) => e(409, 'HTTPConflict', m),
  notAllowed: () => e(405, 'HTTPMethodNotAllowed', 'The method specified is not allowed for this resource.'),
  unsupported: (m: string) => e(415, 'HTTPUnsupportedMediaType', m),
};
const noImage = (id: string) => glanceFaults.notFound(`No image found with ID ${id}`);

const READ_ONLY = new Set(['status', 'size', 'checksum', 'self', 'file', 'schema', 'created_at', 'updated_at', 'virtual_size', 'os_hash_algo', 'os_hash_value', 'direct_url', 'locations']);
const CORE = new Set(['id', 'name', 'visibility', 'owner', 'disk_format', 'container_format', 'min_disk', 'min_ram', 'protected', 'os_hidden', 'tags']);
const VISIBILITIES = ['public', 'private', 'shared', 'community'];
const DISK_FORMATS = ['ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop'];
const CONTAINER_FORMATS = ['ami', 'ari', 'aki', 'bare', 'ovf', 'ova', 'docker', 'compressed'];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const ts = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');

export function imageView(r: ImageRow): Json {
  return {
    ...(JSON.parse(r.properties) as Json),
    name: r.name,
    disk_format: r.disk_format,
    container_format: r.container_format,
    visibility: r.visibility,
    size: r.size === null ? null : Number(r.size),
    virtual_size: null,
    status: r.status,
    checksum: r.checksum,
    protected: !!Number(r.protected),
    min_ram: Number(r.min_ram),
    min_disk: Number(r.min_disk),
    owner: r.owner,
    os_hidden: !!Number(r.os_hidden),
    os_hash_algo: r.os_hash_algo,
    os_hash_value: r.os_hash_value,
    id: r.id,
    created_at: ts(r.created_at),
    updated_at: ts(r.updated_at),
    tags: JSON.parse(r.tags) as string[],
    self: `/v2/images/${r.id}`,
    file: `/v2/images/${r.id}/file`,
    schema: '/v2/schemas/image',
  };
}

const visible = (ctx: RequestAuth, r: ImageRow) => ctx.isAdmin || r.visibility === 'public' || r.visibility === 'community' || r.owner === ctx.projectId;
const mayChange = (ctx: RequestAuth, r: ImageRow) => ctx.isAdmin || r.owner === ctx.projectId;

/** The core attributes and extra properties of a create or patch, checked as Glance checks them. */
function applyAttrs(ctx: RequestAuth, row: ImageRow, attrs: Json): void {
  const props = JSON.parse(row.properties) as Json;
  for (const [k, v] of Object.entries(attrs)) {
    if (READ_ONLY.has(k)) throw glanceFaults.forbidden(`Attribute '${k}' is read-only.`);
    if (!CORE.has(k)) {
      if (v === undefined) delete props[k];
      else if (typeof v !== 'string' && v !== null) throw glanceFaults.badRequest(`Provided object does not match schema 'image': ${JSON.stringify(v)} is not of type 'string'`);
      else props[k] = v;
      continue;
    }
    switch (k) {
      case 'id':
        throw glanceFaults.forbidden("Attribute 'id' is read-only.");
      case 'name':
        if (v !== null && (typeof v !== 'string' || v.length > 255)) throw glanceFaults.badRequest("Provided object does not match schema 'image': name");
        row.name = v as string | null;
        break;
      case 'visibility':
        if (typeof v !== 'string' || !VISIBILITIES.includes(v)) throw glanceFaults.badRequest(`Provided object does not match schema 'image': '${String(v)}' is not one of ${JSON.stringify(VISIBILITIES)}`);
        if (v === 'public' && !ctx.isAdmin) throw glanceFaults.forbidden('You are not authorized to complete publicize_image action.');
        row.visibility = v;
        break;
      case 'owner':
        if (v !== null && typeof v !== 'string') throw glanceFaults.badRequest("Provided object does not match schema 'image': owner");
        if (!ctx.isAdmin && v !== ctx.projectId) throw glanceFaults.forbidden(`You are not permitted to create images owned by '${String(v)}'.`);
        row.owner = v as string | null;
        break;
      case 'disk_format':
        if (v !== null && (typeof v !== 'string' || !DISK_FORMATS.includes(v))) throw glanceFaults.badRequest(`Invalid disk format '${String(v)}' for image.`);
        row.disk_format = v as string | null;
        break;
      case 'container_format':
        if (v !== null && (typeof v !== 'string' || !CONTAINER_FORMATS.includes(v))) throw glanceFaults.badRequest(`Invalid container format '${String(v)}' for image.`);
        row.container_format = v as string | null;
        break;
      case 'min_disk':
      case 'min_ram':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw glanceFaults.badRequest(`Provided object does not match schema 'image': ${JSON.stringify(v)} is not of type 'integer'`);
        row[k] = v;
        break;
      case 'protected':
      case 'os_hidden':
        if (typeof v !== 'boolean') throw glanceFaults.badRequest(`Provided object does not match schema 'image': ${JSON.stringify(v)} is not of type 'boolean'`);
        row[k] = v ? 1 : 0;
        break;
      case 'tags':
        if (!Array.isArray(v) || !v.every((t) => typeof t === 'string')) throw glanceFaults.badRequest("Provided object does not match schema 'image': tags");
        row.tags = JSON.stringify([...new Set(v)]);
        break;
    }
  }
  row.properties = JSON.stringify(props);
}

/** A JSON pointer of an image patch ("/name", "/hw_disk_bus"): one level only. */
function patchKey(path: unknown): string {
  if (typeof path !== 'string' || !/^\/[^/]+$/.test(path)) throw glanceFaults.badRequest(`Invalid JSON pointer for this resource: '${String(path)}'`);
  return path.slice(1).replace(/~1/g, '/').replace(/~0/g, '~');
}

export const imagesApi: FastifyPluginAsync<ImagesDeps> = async (app, deps) => {
  const { db, log } = deps;
  mkdirSync(deps.dataDir, { recursive: true });
  // Image data is streamed to the store, never parsed.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  const row = async (ctx: RequestAuth, id: string): Promise<ImageRow> => {
    const r = UUID_RE.test(id) ? await db.selectFrom('images').selectAll().where('id', '=', id).executeTakeFirst() : undefined;
    if (!r || !visible(ctx, r)) throw noImage(id);
    return r;
  };
  const save = async (r: ImageRow) => {
    r.updated_at = new Date().toISOString();
    await db.updateTable('images').set(r).where('id', '=', r.id).execute();
  };
  const id = (req: FastifyRequest) => (req.params as { id: string }).id;

  routes(
    app,
    '/v2/images',
    {
      GET: async (req) => {
        const q = searchParams(req);
        let qb = db.selectFrom('images').selectAll();
        for (const k of ['name', 'status', 'owner', 'disk_format', 'container_format'] as const) {
          const v = q.get(k);
          if (v !== null) qb = qb.where(k, '=', v);
        }
        const vis = q.get('visibility');
        if (vis !== null && vis !== 'all') qb = qb.where('visibility', '=', vis);
        const sortKey = q.get('sort_key') ?? 'created_at';
        if (!['created_at', 'updated_at', 'name', 'id', 'status', 'size'].includes(sortKey)) throw glanceFaults.badRequest(`Invalid sort key: ${sortKey}. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at.`);
        const dir = q.get('sort_dir') ?? 'desc';
        if (dir !== 'asc' && dir !== 'desc') throw glanceFaults.badRequest(`Invalid sort direction: ${dir}`);
        const ctx = req.auth;
        let rows = (await qb.orderBy(sortKey as 'created_at', dir).orderBy('id', dir).execute()).filter((r) => (vis === null ? visible(ctx, r) && (r.visibility !== 'community' || r.owner === ctx.projectId) : visible(ctx, r)));
        const tag = q.getAll('tag');
        if (tag.length) rows = rows.filter((r) => tag.every((t) => (JSON.parse(r.tags) as string[]).includes(t)));
        if (!q.has('os_hidden') || q.get('os_hidden') === 'false') rows = rows.filter((r) => !Number(r.os_hidden));
        const marker = q.get('marker');
        if (marker) {
          const i = rows.findIndex((r) => r.id === marker);
          if (i < 0) throw glanceFaults.badRequest(`Invalid marker. Image ${marker} could not be found.`);
          rows = rows.slice(i + 1);
        }
        const limitRaw = q.get('limit');
        const limit = limitRaw === null ? 25 : Number(limitRaw);
        if (!Number.isInteger(limit) || limit < 0) throw glanceFaults.badRequest('limit param must be positive');
        const page = rows.slice(0, limit);
        const body: Json = { images: page.map(imageView), first: '/v2/images', schema: '/v2/schemas/images' };
        if (rows.length > limit && page.length) {
          const next = new URLSearchParams(q);
          next.set('marker', page[page.length - 1]!.id);
          body.next = `/v2/images?${next.toString()}`;
        }
        return body;
      },
      POST: async (req, reply) => {
        const b = req.body;
        if (b === null || typeof b !== 'object' || Array.isArray(b)) throw glanceFaults.badRequest('Body expected in request.');
        const ctx = req.auth;
        const attrs = { ...(b as Json) };
        const given = attrs.id;
        delete attrs.id;
        if (given !== undefined && (typeof given !== 'string' || !UUID_RE.test(given))) throw glanceFaults.badRequest(`Provided object does not match schema 'image': '${String(given)}' is not a 'uuid'`);
        const t = new Date().toISOString();
        const r: ImageRow = {
          id: (given as string | undefined) ?? randomUUID(),
          name: null,
          status: 'queued',
          visibility: 'shared',
          owner: ctx.projectId || null,
          disk_format: null,
          container_format: null,
          size: null,
          checksum: null,
          os_hash_algo: null,
          os_hash_value: null,
          min_disk: 0,
          min_ram: 0,
          protected: 0,
          os_hidden: 0,
          tags: '[]',
          properties: '{}',
          created_at: t,
          updated_at: t,
        };
        applyAttrs(ctx, r, attrs);
        try {
          await db.insertInto('images').values(r).execute();
        } catch {
          throw glanceFaults.conflict(`Image with identifier ${r.id} already exists!`);
        }
        log.info({ image_id: r.id, owner: r.owner }, 'created image');
        return reply.code(201).header('Location', `/v2/images/${r.id}`).send(imageView(r));
      },
    },
    glanceFaults.notAllowed,
  );

  routes(
    app,
    '/v2/images/:id',
    {
      GET: async (req) => imageView(await row(req.auth, id(req))),
      PATCH: async (req) => {
        const ctx = req.auth;
        const ct = String(req.headers['content-type'] ?? '');
        if (!ct.startsWith('application/openstack-images-v2.')) throw glanceFaults.unsupported(`Unsupported Content-Type`);
        const r = await row(ctx, id(req));
        if (!mayChange(ctx, r)) throw glanceFaults.forbidden('You are not authorized to complete modify_image action.');
        const ops = req.body;
        if (!Array.isArray(ops)) throw glanceFaults.badRequest('Request body must be a JSON array of operation objects.');
        const attrs: Json = {};
        for (const op of ops as unknown[]) {
          const o = op as { op?: unknown; path?: unknown; value?: unknown };
          const k = patchKey(o.path);
          if (o.op === 'add' || o.op === 'replace') attrs[k] = o.value;
          else if (o.op === 'remove') {
            if (CORE.has(k)) throw glanceFaults.forbidden(`Properties ${k} must be set prior to saving data.`);
            attrs[k] = undefined;
          } else throw glanceFaults.badRequest(`Operation objects must contain exactly one member named "add", "remove", or "replace".`);
        }
        applyAttrs(ctx, r, attrs);
        await save(r);
        return imageView(r);
      },
      DELETE: async (req, reply) => {
        const ctx = req.auth;
        const r = await row(ctx, id(req));
        if (!mayChange(ctx, r)) throw glanceFaults.forbidden('You are not authorized to complete delete_image action.');
        if (Number(r.protected)) throw glanceFaults.forbidden(`Image ${r.id} is protected and cannot be deleted.`);
        await db.deleteFrom('images').where('id', '=', r.id).execute();
        rmSync(join(deps.dataDir, r.id), { force: true });
        return reply.code(204).send();
      },
    },
    glanceFaults.notAllowed,
  );

  routes(
    app,
    '/v2/images/:id/file',
    {
      PUT: async (req, reply) => {
        const ctx = req.auth;
        const r = await row(ctx, id(req));
        if (!mayChange(ctx, r)) throw glanceFaults.forbidden('You are not authorized to complete upload_image action.');
        if (r.status !== 'queued') throw glanceFaults.conflict(`Image status transition from ${r.status} to saving is not allowed`);
        const body = req.body as Readable | undefined;
        if (!body || typeof (body as Readable).pipe !== 'function') throw glanceFaults.unsupported('Unsupported Content-Type; image data is application/octet-stream');
        const md5 = createHash('md5');
        const sha = createHash('sha512');
        let size = 0;
        const count = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            size += chunk.length;
            if (size > deps.sizeCap) return cb(e(413, 'HTTPRequestEntityTooLarge', `Image exceeds the storage quota: the image is larger than ${deps.sizeCap} bytes`));
            md5.update(chunk);
            sha.update(chunk);
            cb(null, chunk);
          },
        });
        const path = join(deps.dataDir, r.id);
        try {
          await pipeline(body, count, createWriteStream(path));
        } catch (err) {
          rmSync(path, { force: true });
          throw err instanceof ApiError ? err : glanceFaults.badRequest(`Error uploading image data: ${(err as Error).message}`);
        }
        Object.assign(r, { status: 'active', size, checksum: md5.digest('hex'), os_hash_algo: 'sha512', os_hash_value: sha.digest('hex') });
        await save(r);
        log.info({ image_id: r.id, size }, 'image data stored');
        return reply.code(204).send();
      },
      GET: async (req, reply) => {
        const r = await row(req.auth, id(req));
        if (r.status !== 'active') return reply.code(204).send();
        return reply
          .header('Content-Type', 'application/octet-stream')
          .header('Content-MD5', r.checksum ?? '')
          .header('Content-Length', String(r.size ?? 0))
          .send(createReadStream(join(deps.dataDir, r.id)));
      },
    },
    glanceFaults.notAllowed,
  );
};
