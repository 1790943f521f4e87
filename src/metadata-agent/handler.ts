// Neutron's MetadataProxyHandler: the request from a namespace proxy (over the Unix socket) → identify
// the instance → sign → Nova → map Nova's answer. Status mapping is Zed's plus 25.0.0's (503 when Nova
// is unreachable, 502/503/504 passed through); quantum-server being down is a 503 too, not a 500.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { ApiError, errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { unmapAddress, type Identity, type InstanceLookup } from './lookup.js';
import type { NovaAnswer, NovaClient } from './nova.js';

export const INTERNAL_ERROR = 'Remote metadata server experienced an internal server error.';
export const UNKNOWN_ERROR = 'An unknown error has occurred. Please try your request again.';
const TEXT = 'text/plain; charset=UTF-8';
const MAX_BODY = 1 << 20;

/** Nova's codes that reach the guest unchanged with an empty body (Zed). */
const EMPTY_PASS = new Set([400, 403, 404, 409]);
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
}

export class MetadataProxyHandler {
  constructor(private readonly d: HandlerDeps) {}

  /** node:http request listener. */
  readonly listener = (req: IncomingMessage, res: ServerResponse): void => {
    this.handle(req, res).catch((e: unknown) => {
      this.d.log.error({ err: e }, 'Unexpected error.');
      send(res, 500, UNKNOWN_ERROR);
    });
  };

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '';
    const hdr = readProxyHeaders(req.headers);
    let body: Buffer | undefined;
    try {
      body = await readBodyLimited(req);
    } catch (e) {
      if (e instanceof ApiError) return send(res, e.status, e.message);
      throw e;
    }
    if (!url.startsWith('/')) {
      this.d.log.warn({ url }, 'bad request path from metadata proxy');
      return send(res, 400, 'Bad request path');
    }
    const ip = hdr.remoteAddress === undefined ? undefined : unmapAddress(hdr.remoteAddress);
    if (ip === undefined || !isIP(ip)) {
      this.d.log.warn({ x_forwarded_for: hdr.remoteAddress, url }, 'request without a valid X-Forwarded-For');
      return send(res, 400, 'X-Forwarded-For must carry the instance address');
    }
    if (hdr.conflict || (hdr.routerId !== undefined && hdr.networkId !== undefined)) {
      this.d.log.warn({ ip, router_id: hdr.routerId, network_id: hdr.networkId }, 'conflicting router/network id headers: not proxying');
      return send(res, 404, '');
    }
    if (hdr.routerId === undefined && hdr.networkId === undefined) {
      this.d.log.warn({ ip, url }, 'request without X-Neutron-Router-ID or X-Neutron-Network-ID');
      return send(res, 400, 'X-Neutron-Router-ID or X-Neutron-Network-ID is required');
    }

    let found;
    try {
      found = await this.d.lookup.find(ip, hdr.routerId, hdr.networkId);
    } catch (e) {
      return this.lookupFailed(res, e, ip);
    }
    if (!found.identity) {
      this.d.log.info({ ip, router_id: hdr.routerId, network_id: hdr.networkId, ports: found.matches }, found.matches > 1 ? 'several ports match the remote address: not proxying' : 'no port matches the remote address');
      return send(res, 404, '');
    }
    let identity: Identity = found.identity;
    let answer = await this.d.nova.forward(req.method ?? 'GET', url, ip, identity, body);
    if (answer.kind === 'response' && answer.status === 404 && found.cached) {
      // Bug 1868867: the cached port may be stale (IP reused); look again without the cache, once.
      let fresh;
      try {
        fresh = await this.d.lookup.find(ip, hdr.routerId, hdr.networkId, true);
      } catch (e) {
        return this.lookupFailed(res, e, ip);
      }
      if (!fresh.identity) return send(res, 404, '');
      if (fresh.identity.instanceId !== identity.instanceId || fresh.identity.tenantId !== identity.tenantId) {
        identity = fresh.identity;
        answer = await this.d.nova.forward(req.method ?? 'GET', url, ip, identity, body);
      }
    }
    this.reply(res, answer, ip, identity, url);
  }

  private lookupFailed(res: ServerResponse, e: unknown, ip: string): void {
    if (e instanceof ApiError && e.status === 503) {
      this.d.log.error({ ip, err: e.message }, 'quantum-server unreachable: cannot identify the instance');
      return send(res, 503, 'The networking service is not available.');
    }
    this.d.log.error({ ip, err: errorMessage(e) }, 'Unexpected error.');
    return send(res, 500, UNKNOWN_ERROR);
  }

  private reply(res: ServerResponse, a: NovaAnswer, ip: string, id: Identity, url: string): void {
    const ctx = { ip, instance_id: id.instanceId, tenant_id: id.tenantId, url };
    if (a.kind === 'unreachable') {
      this.d.log.error({ ...ctx, err: a.error }, 'Nova metadata server unreachable');
      return send(res, 503, 'The metadata service is not available.');
    }
    if (a.kind === 'timeout') {
      this.d.log.error({ ...ctx, err: a.error }, 'Nova metadata server timed out');
      return send(res, 504, 'The metadata service did not answer in time.');
    }
    const s = a.status;
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

function readBodyLimited(req: IncomingMessage): Promise<Buffer | undefined> {
  if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) {
    req.resume();
    return Promise.resolve(undefined);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        if (!failed) reject(new ApiError(413, 'RequestEntityTooLarge', 'Request body too large'));
        failed = true;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}
