// Neutron's MetadataProxyHandler: the request from a namespace proxy (over the Unix socket) → identify
// the instance → sign → Nova → map Nova's answer. Status mapping is Zed's plus 25.0.0's (503 when Nova
// is unreachable, 502/503/504 passed through); quantum-server being down is a 503 too, not a 500.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { ApiError, errorMessage } from '../common/errors.js';
import { readBody } from '../common/http.js';
import type { Logger } from '../common/log.js';
import { REQUEST_ID_HEADER, requestIdFrom } from '../common/request-id.js';
import { RateLimitedLog, type Release, type RequestSlots } from './bounds.js';
import { unmapAddress, type Identity, type InstanceLookup } from './lookup.js';
import type { AgentStats } from './metrics.js';
import type { ForwardExtras, NovaAnswer, NovaClient } from './nova.js';

/** The session-token headers (issue 14), as src/nova-metadata/tokens.ts names them. */
const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
const TOKEN_TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';

export const INTERNAL_ERROR = 'Remote metadata server experienced an internal server error.';
export const UNKNOWN_ERROR = 'An unknown error has occurred. Please try your request again.';
const TEXT = 'text/plain; charset=UTF-8';
const MAX_BODY = 1 << 20;

/**
 * Nova's codes that reach the guest unchanged with an empty body (Zed), plus the session tokens' 401 (bad or
 * missing token) and 405 (token path not PUT, with its Allow), which Nova never answers on Neutron's paths.
 */
const EMPTY_PASS = new Set([400, 401, 403, 404, 405, 409]);
/** Passed through since Neutron 25.0.0 (bug 2059032). */
const GATEWAY_PASS = new Set([502, 503, 504]);

export interface ProxyRequestHeaders {
  remoteAddress: string | undefined;
  routerId: string | undefined;
  networkId: string | undefined;
  /** Set when the id headers contradict each other (duplicates, Quantum vs Neutron spellings). */
  conflict: boolean;
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

/** One id from the Quantum and Neutron spellings; both present must agree, and no list (",") is accepted. */
function pickId(neutron: string | undefined, quantum: string | undefined): { id: string | undefined; conflict: boolean } {
  const vals = [neutron, quantum].filter((v): v is string => v !== undefined).map((v) => v.trim());
  if (vals.length === 0) return { id: undefined, conflict: false };
  const id = vals[0]!;
  const conflict = vals.some((v) => v !== id) || id === '' || id.includes(',');
  return { id, conflict };
}

/**
 * The identity headers the proxy sent. X-Forwarded-For may be a chain when a haproxy-style proxy that
 * appends (rather than replaces) sits in front: the last element is the one that proxy added itself,
 * so it is the only one a guest cannot forge.
 */
export function readProxyHeaders(h: IncomingMessage['headers']): ProxyRequestHeaders {
  const xff = one(h['x-forwarded-for']);
  let remoteAddress: string | undefined;
  if (xff !== undefined) {
    const parts = xff.split(',');
    remoteAddress = parts[parts.length - 1]!.trim();
  }
  const r = pickId(one(h['x-neutron-router-id']), one(h['x-quantum-router-id']));
  const n = pickId(one(h['x-neutron-network-id']), one(h['x-quantum-network-id']));
  return { remoteAddress, routerId: r.id, networkId: n.id, conflict: r.conflict || n.conflict };
}

export interface HandlerDeps {
  lookup: InstanceLookup;
  nova: NovaClient;
  log: Logger;
  /** The bound on requests in progress and waiting ([DEFAULT] wsgi_default_pool_size, metadata_queue_size). */
  slots?: RequestSlots | undefined;
  stats?: AgentStats | undefined;
}

/** What the access line of a request says (filled in as the request goes). */
interface RequestContext {
  request_id: string;
  ip?: string | undefined;
  router_id?: string | undefined;
  network_id?: string | undefined;
  instance_id?: string | undefined;
  tenant_id?: string | undefined;
}

/** Headers of the proxy's request passed on to Nova besides the identity headers (session tokens, issue 14). */
const FORWARDED = [TOKEN_HEADER, TOKEN_TTL_HEADER] as const;

export class MetadataProxyHandler {
  private readonly queueFullLog = new RateLimitedLog(10_000);
  constructor(private readonly d: HandlerDeps) {}

  /** node:http request listener. */
  readonly listener = (req: IncomingMessage, res: ServerResponse): void => {
    const t0 = process.hrtime.bigint();
    const ctx: RequestContext = { request_id: requestIdFrom(req.headers[REQUEST_ID_HEADER]) };
    res.setHeader('X-Openstack-Request-Id', ctx.request_id);
    // The proxy (and the guest behind it) went away before the answer: stop the work behind it.
    const ac = new AbortController();
    res.once('close', () => {
      const finished = res.writableFinished;
      if (!finished) ac.abort();
      this.accessLine(req, res, ctx, t0, finished);
    });
    this.handle(req, res, ctx, ac.signal).catch((e: unknown) => {
      this.d.log.error({ ...ctx, err: e }, 'Unexpected error.');
      send(res, 500, UNKNOWN_ERROR);
    });
  };

  /** One line per request, as eventlet.wsgi writes it for Neutron's agent, with the request id. */
  private accessLine(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, t0: bigint, finished: boolean): void {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const status = finished ? res.statusCode : 0;
    this.d.stats?.answered(ctx.router_id !== undefined ? 'router' : ctx.network_id !== undefined ? 'network' : 'none', status);
    const len = Number(res.getHeader('content-length') ?? 0);
    this.d.log.info(
      { ...ctx, method: req.method, url: req.url, status, ms: Math.round(s * 1e5) / 100 },
      `${ctx.ip ?? '-'} "${req.method ?? '-'} ${req.url ?? ''} HTTP/${req.httpVersion}" status: ${finished ? status : 'closed by the proxy'} len: ${len} time: ${s.toFixed(7)}`,
    );
  }

  private async handle(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, signal: AbortSignal): Promise<void> {
    const url = req.url ?? '';
    const hdr = readProxyHeaders(req.headers);
    let body: Buffer | undefined;
    try {
      // A GET has no body: nothing to wait for.
      if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) body = await readBody(req, MAX_BODY);
      else req.resume();
    } catch (e) {
      if (e instanceof ApiError) return send(res, e.status, e.message);
      if (signal.aborted) return; // the proxy left in the middle of the body
      throw e;
    }
    if (!url.startsWith('/')) {
      this.d.log.warn({ ...ctx, url }, 'bad request path from metadata proxy');
      return send(res, 400, 'Bad request path');
    }
    const ip = hdr.remoteAddress === undefined ? undefined : unmapAddress(hdr.remoteAddress);
    if (ip === undefined || !isIP(ip)) {
      this.d.log.warn({ ...ctx, x_forwarded_for: hdr.remoteAddress, url }, 'request without a valid X-Forwarded-For');
      return send(res, 400, 'X-Forwarded-For must carry the instance address');
    }
    ctx.ip = ip;
    if (hdr.conflict || (hdr.routerId !== undefined && hdr.networkId !== undefined)) {
      this.d.log.warn({ ...ctx, router_id: hdr.routerId, network_id: hdr.networkId }, 'conflicting router/network id headers: not proxying');
      return send(res, 404, '');
    }
    if (hdr.routerId === undefined && hdr.networkId === undefined) {
      this.d.log.warn({ ...ctx, url }, 'request without X-Neutron-Router-ID or X-Neutron-Network-ID');
      return send(res, 400, 'X-Neutron-Router-ID or X-Neutron-Network-ID is required');
    }
    if (hdr.routerId !== undefined) ctx.router_id = hdr.routerId;
    else ctx.network_id = hdr.networkId;

    // The bound toward Nova: a slot, a place in the queue, or a fast 503.
    let release: Release | undefined;
    const slots = this.d.slots;
    if (slots) {
      const got = slots.acquire(signal);
      if (got === 'full') {
        this.d.stats?.failure('queue_full');
        const n = this.queueFullLog.hit();
        if (n > 0) this.d.log.warn({ ...ctx, refused: n, in_flight: slots.inFlight, queued: slots.queued }, `metadata requests refused (503): ${slots.inFlight} in progress and ${slots.queued} queued toward Nova (wsgi_default_pool_size = ${slots.size}, metadata_queue_size = ${slots.queue}); ${n} refused since the last such line`);
        res.setHeader('Retry-After', '1');
        return send(res, 503, 'The metadata service is busy.');
      }
      release = typeof got === 'function' ? got : await got;
      if (!release) return; // the proxy left while queued
    }
    try {
      await this.serve(req, res, ctx, signal, url, ip, hdr, body);
    } finally {
      release?.();
    }
  }

  private async serve(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, signal: AbortSignal, url: string, ip: string, hdr: ProxyRequestHeaders, body: Buffer | undefined): Promise<void> {
    let found;
    try {
      found = await this.d.lookup.find(ip, hdr.routerId, hdr.networkId);
    } catch (e) {
      return this.lookupFailed(res, e, ctx);
    }
    this.d.stats?.cache(found.cached);
    if (!found.identity) {
      this.d.log.info({ ...ctx, ports: found.matches }, found.matches > 1 ? 'several ports match the remote address: not proxying' : 'no port matches the remote address');
      return send(res, 404, '');
    }
    let identity: Identity = found.identity;
    const extras = { headers: this.forwardedHeaders(req, ctx), signal };
    let answer = await this.callNova(req.method ?? 'GET', url, ip, identity, body, extras);
    if (answer.kind === 'response' && answer.status === 404 && found.cached) {
      // Bug 1868867: the cached port may be stale (IP reused); look again without the cache, once.
      let fresh;
      try {
        fresh = await this.d.lookup.find(ip, hdr.routerId, hdr.networkId, true);
      } catch (e) {
        return this.lookupFailed(res, e, ctx);
      }
      if (!fresh.identity) return send(res, 404, '');
      if (fresh.identity.instanceId !== identity.instanceId || fresh.identity.tenantId !== identity.tenantId) {
        identity = fresh.identity;
        answer = await this.callNova(req.method ?? 'GET', url, ip, identity, body, extras);
      }
    }
    ctx.instance_id = identity.instanceId;
    ctx.tenant_id = identity.tenantId;
    if (hdr.routerId !== undefined) this.d.stats?.owner('router', hdr.routerId);
    else if (hdr.networkId !== undefined) this.d.stats?.owner('network', hdr.networkId);
    this.reply(res, answer, ctx, url);
  }

  private async callNova(method: string, url: string, ip: string, id: Identity, body: Buffer | undefined, x: ForwardExtras): Promise<NovaAnswer> {
    const t0 = process.hrtime.bigint();
    const a = await this.d.nova.forward(method, url, ip, id, body, x);
    if (a.kind !== 'aborted') this.d.stats?.nova(Number(process.hrtime.bigint() - t0) / 1e9);
    return a;
  }

  /** The request id, and the token headers when the proxy passed them (each only once, values as sent). */
  private forwardedHeaders(req: IncomingMessage, ctx: RequestContext): Record<string, string> {
    const out: Record<string, string> = { 'x-openstack-request-id': ctx.request_id };
    for (const h of FORWARDED) {
      const v = req.headers[h];
      if (typeof v === 'string') out[h] = v;
    }
    return out;
  }

  private lookupFailed(res: ServerResponse, e: unknown, ctx: RequestContext): void {
    if (e instanceof ApiError && e.status === 503) {
      this.d.log.error({ ...ctx, err: e.message }, 'quantum-server unreachable: cannot identify the instance');
      return send(res, 503, 'The networking service is not available.');
    }
    this.d.log.error({ ...ctx, err: errorMessage(e) }, 'Unexpected error.');
    return send(res, 500, UNKNOWN_ERROR);
  }

  private reply(res: ServerResponse, a: NovaAnswer, rctx: RequestContext, url: string): void {
    const ctx = { ...rctx, url };
    const stats = this.d.stats;
    if (a.kind === 'aborted') {
      stats?.aborted();
      this.d.log.info(ctx, 'the metadata proxy closed the connection before the answer: Nova request aborted');
      return;
    }
    if (a.kind === 'unreachable') {
      stats?.failure('unreachable');
      this.d.log.error({ ...ctx, err: a.error }, 'Nova metadata server unreachable');
      return send(res, 503, 'The metadata service is not available.');
    }
    if (a.kind === 'timeout') {
      stats?.failure('timeout');
      this.d.log.error({ ...ctx, err: a.error }, 'Nova metadata server timed out');
      return send(res, 504, 'The metadata service did not answer in time.');
    }
    const s = a.status;
    if (s !== 200) stats?.failure(s === 403 ? 'signature' : s === 404 ? 'not_found' : s < 500 ? 'client_error' : 'server_error');
    for (const [k, v] of Object.entries(a.passHeaders)) res.setHeader(k, v);
    if (s === 200) {
      if (this.d.log.isLevelEnabled('debug')) this.d.log.debug({ ...ctx, status: s }, 'proxied');
      res.writeHead(200, a.contentType ? { 'content-type': a.contentType, 'content-length': a.body.length } : { 'content-length': a.body.length });
      res.end(a.body);
      return;
    }
    if (EMPTY_PASS.has(s)) {
      if (s === 403) {
        this.d.log.warn(ctx, 'The remote metadata server responded with Forbidden. This response usually occurs when shared secrets do not match.');
      } else this.d.log.info({ ...ctx, status: s }, 'Nova metadata server answered an error');
      return send(res, s, '');
    }
    if (s === 500) {
      this.d.log.warn(ctx, 'Remote metadata server experienced an internal server error.');
      return send(res, 500, INTERNAL_ERROR);
    }
    if (GATEWAY_PASS.has(s)) {
      this.d.log.warn({ ...ctx, status: s }, 'Nova metadata server is not available');
      return send(res, s, '');
    }
    this.d.log.error({ ...ctx, status: s }, 'Unexpected error: unexpected response code from the Nova metadata server');
    return send(res, 500, UNKNOWN_ERROR);
  }
}

function send(res: ServerResponse, status: number, text: string): void {
  if (res.headersSent || res.destroyed) return;
  const data = Buffer.from(text);
  res.writeHead(status, data.length ? { 'content-type': TEXT, 'content-length': data.length } : { 'content-length': 0 });
  res.end(data);
}

