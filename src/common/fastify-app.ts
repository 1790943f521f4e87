// What every REST API of the stack shares on fastify: one JSON body reader (any content type, the API's own
// "malformed" fault), one error handler turning ApiErrors, schema failures and fastify's own errors into the
// API's fault body, 404/405 as the API words them, and the oslo-style request log line.
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest, type RouteHandlerMethod, type RouteShorthandOptions } from 'fastify';
import { ApiError } from './errors.js';
import type { Logger } from './log.js';
import { LATENCY_BUCKETS, type Metrics } from './metrics.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The API's fault for a body that fails the route's JSON schema. */
    invalidBody?: (req: FastifyRequest) => ApiError;
  }
}

export interface ApiAppOptions {
  log: Logger;
  /** The API's fault body (NeutronError, Nova's {"itemNotFound": …}, …). */
  faultBody: (e: ApiError) => unknown;
  notFound: () => ApiError;
  /** A body that is not a JSON object. */
  malformed: () => ApiError;
  internal: () => ApiError;
  /** Neutron accepts a .json suffix on every path. */
  stripJsonSuffix?: boolean;
  bodyLimit?: number;
  keepAliveTimeout?: number;
  /** Statuses fastify itself raises (413, 415, …) as the API's faults. */
  fromStatus?: (status: number, message: string) => ApiError;
  /** Count requests and their latency by route (the route's template, so the labels stay few). */
  metrics?: Metrics | undefined;
}

export const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const;
export type Method = (typeof METHODS)[number];

export function createApiApp(o: ApiAppOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: o.bodyLimit ?? 1 << 20,
    keepAliveTimeout: o.keepAliveTimeout ?? 30_000,
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
    // Bodies are checked by the routes' schemas and then by the APIs' own attribute rules, which word the
    // messages as Neutron / Nova do: no coercion, no defaults, nothing removed behind their back.
    ajv: { customOptions: { coerceTypes: false, useDefaults: false, removeAdditional: false, allErrors: false } },
    rewriteUrl: o.stripJsonSuffix
      ? (req) => {
          const u = req.url ?? '/';
          const q = u.indexOf('?');
          const path = q < 0 ? u : u.slice(0, q);
          const bare = path.replace(/\/+$/, '');
          return bare.endsWith('.json') ? bare.slice(0, -5) + (q < 0 ? '' : u.slice(q)) : u;
        }
      : undefined,
  });

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      done(o.malformed());
    }
  });

  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if ((err as FastifyError).validation) e = req.routeOptions.config?.invalidBody?.(req) ?? o.malformed();
    else if ((err as FastifyError).statusCode && (err as FastifyError).statusCode! < 500) e = o.fromStatus?.((err as FastifyError).statusCode!, err.message) ?? new ApiError((err as FastifyError).statusCode!, 'HTTPError', err.message);
    else {
      o.log.error({ err, method: req.method, url: req.url }, 'unexpected error while processing request');
      e = o.internal();
    }
    if (e.status >= 500) o.log.error({ err: e }, e.message);
    else o.log.info({ type: e.type }, e.message);
    return reply.code(e.status).send(o.faultBody(e));
  });
  app.setNotFoundHandler((_req, reply) => {
    const e = o.notFound();
    return reply.code(e.status).send(o.faultBody(e));
  });

  const requests = o.metrics?.counter('http_requests_total', 'API requests answered, by method, route and status.', ['method', 'route', 'status']);
  const latency = o.metrics?.histogram('http_request_duration_seconds', 'API request latency, by method and route.', ['method', 'route'], LATENCY_BUCKETS);
  // oslo.service's wsgi access log: `<ip> "GET /v2.0/ports?... HTTP/1.1" status: 200  len: 512 time: 0.0021`.
  app.addHook('onResponse', (req, reply, done) => {
    const ms = reply.elapsedTime;
    if (requests) {
      const route = req.routeOptions.url ?? 'unmatched';
      requests.inc({ method: req.method, route, status: String(reply.statusCode) });
      latency!.observe({ method: req.method, route }, ms / 1000);
    }
    const raw = req.raw;
    const len = Number(reply.getHeader('content-length') ?? 0);
    const remote = raw.socket?.remoteAddress;
    o.log.info(
      { method: raw.method, url: req.originalUrl, status: reply.statusCode, ms: Math.round(ms * 100) / 100, remote },
      `${remote ?? '-'} "${raw.method} ${req.originalUrl} HTTP/${raw.httpVersion}" status: ${reply.statusCode}  len: ${len} time: ${(ms / 1000).toFixed(7)}`,
    );
    done();
  });
  return app;
}

export type Handlers = Partial<Record<Method, RouteHandlerMethod | { opts: RouteShorthandOptions; handler: RouteHandlerMethod }>>;

/** Register a path's methods; the other methods answer the API's 405 (fastify alone would say 404). */
export function routes(app: FastifyInstance, path: string, handlers: Handlers, notAllowed: (method: string) => ApiError): void {
  for (const m of METHODS) {
    const h = handlers[m];
    if (!h) {
      app.route({ method: m, url: path, handler: async () => { throw notAllowed(m); } });
      continue;
    }
    if (typeof h === 'function') app.route({ method: m, url: path, handler: h });
    else app.route({ ...h.opts, method: m, url: path, handler: h.handler });
  }
}

/** The body as a JSON object (the schema said so) or the API's malformed fault. */
export function objectBody(req: FastifyRequest, malformed: () => ApiError): Record<string, unknown> {
  const b = req.body;
  if (b === null || typeof b !== 'object' || Array.isArray(b)) throw malformed();
  return b as Record<string, unknown>;
}

/** The query string as URLSearchParams (repeated keys, '+' as space: what the routers always read). */
export function searchParams(req: FastifyRequest): URLSearchParams {
  const u = req.url;
  const q = u.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : u.slice(q + 1));
}
