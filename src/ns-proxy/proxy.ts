// The namespace metadata proxy: guest HTTP on <bind_address>:<metadata_port> → the metadata agent over
// its Unix socket. Every upstream request carries a header set built from scratch (like the Grizzly
// Python proxy, unlike haproxy which lets guest headers through): X-Forwarded-For = the TCP peer, the
// router or network id under both the Quantum and Neutron names, and Content-Type/Length for a body.
// This is the hot path: node:http only, no per-request logging unless --debug, pooled keep-alive
// connections to the agent, and the response buffered (metadata answers are small).
import { Agent, createServer, request, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { LiteLogger } from '../common/lite-log.js';

export interface ProxyConfig {
  routerId?: string | undefined;
  networkId?: string | undefined;
  socketPath: string;
  bindAddress: string;
  port: number;
  /** Milliseconds. */
  timeoutHttpRequest: number;
  timeoutClient: number;
  timeoutServer: number;
  timeoutKeepAlive: number;
  maxconn: number;
  maxHeaderSize: number;
  maxBodySize: number;
  upstreamConnections: number;
  retries: number;
}

/** Statuses the agent may answer that reach the guest as they are (Python proxy set + haproxy's 502/503/504). */
const PASSED = new Set([200, 400, 403, 404, 409, 500, 502, 503, 504]);
export const UNKNOWN_ERROR = 'An unknown error has occurred. Please try your request again.';
const TEXT = 'text/plain; charset=UTF-8';

/** IPv4-mapped IPv6 → IPv4 (a dual-stack bind reports IPv4 guests as ::ffff:a.b.c.d). */
function peerAddress(sock: Socket): string {
  const a = sock.remoteAddress ?? '';
  return a.startsWith('::ffff:') && a.indexOf('.') > 0 ? a.slice(7) : a;
}

/** origin-form path + query; absolute-form is reduced to its path (the host is the guest's to invent). */
export function upstreamPath(url: string): string | undefined {
  if (url.startsWith('/')) return url;
  if (!/^https?:\/\//i.test(url)) return undefined;
  try {
    const u = new URL(url);
    return `${u.pathname}${u.search}`;
  } catch {
    return undefined;
  }
}

// Connection failures where the request certainly never reached the agent (safe to resend, even a POST).
const RETRYABLE_CONNECT = new Set(['ECONNREFUSED', 'ENOENT', 'EAGAIN']);

export class MetadataProxy {
  readonly server: Server;
  private readonly agent: Agent;
  private readonly idHeaders: [string, string][];
  private inflight = 0;

  constructor(
    private readonly cfg: ProxyConfig,
    private readonly log: LiteLogger,
  ) {
    if (!cfg.routerId === !cfg.networkId) throw new Error('exactly one of routerId and networkId is required');
    this.idHeaders = cfg.routerId
      ? [['x-quantum-router-id', cfg.routerId], ['x-neutron-router-id', cfg.routerId]]
      : [['x-quantum-network-id', cfg.networkId!], ['x-neutron-network-id', cfg.networkId!]];
    // One upstream connection per in-flight request at most (bounded by maxconn, as haproxy does);
    // idle ones are kept for reuse, newest first so the rest can time out.
    this.agent = new Agent({ keepAlive: true, maxFreeSockets: cfg.upstreamConnections, scheduling: 'lifo', keepAliveMsecs: 1000 });
    this.server = createServer(
      { maxHeaderSize: cfg.maxHeaderSize, requestTimeout: cfg.timeoutHttpRequest, headersTimeout: cfg.timeoutHttpRequest, keepAliveTimeout: cfg.timeoutKeepAlive, connectionsCheckingInterval: 1000 },
      (req, res) => this.handle(req, res),
    );
    this.server.maxConnections = cfg.maxconn;
    this.server.timeout = cfg.timeoutClient;
    this.server.on('clientError', (err: NodeJS.ErrnoException, sock: Socket) => {
      // Malformed or oversized requests (llhttp rejects obs-fold, duplicate Content-Length, smuggling forms).
      if (this.log.isDebug) this.log.debug({ code: err.code, peer: sock.remoteAddress }, 'bad request from guest');
      if (sock.writable && !sock.destroyed) {
        const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
        sock.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      }
      sock.destroy();
    });
  }

  /** Requests being proxied right now. */
  get pending(): number {
    return this.inflight;
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.cfg.bindAddress, port: this.cfg.port, backlog: 511 }, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? a.port : this.cfg.port);
      });
    });
  }

  /** Stop accepting, let in-flight requests finish (up to graceMs), then drop what is left. */
  async close(graceMs = this.cfg.timeoutServer + 1000): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    const t = setTimeout(() => this.server.closeAllConnections(), graceMs);
    t.unref();
    // Idle keep-alive guests are closed as their current request ends (server.close sets Connection: close).
    await closed;
    clearTimeout(t);
    this.agent.destroy();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = upstreamPath(req.url ?? '');
    if (path === undefined) {
      req.resume();
      return this.reply(res, 400, 'Bad request');
    }
    const sock = req.socket;
    // While the agent works the guest is silent: its inactivity timer must not fire before ours does.
    sock.setTimeout(this.cfg.timeoutServer + this.cfg.timeoutClient);
    const h = req.headers;
    if (h['content-length'] === undefined && h['transfer-encoding'] === undefined) {
      req.resume();
      this.forward(req.method!, path, peerAddress(sock), undefined, undefined, res, 0);
      return;
    }
    const limit = this.cfg.maxBodySize;
    const declared = h['content-length'] === undefined ? 0 : Number(h['content-length']);
    if (declared > limit) {
      res.shouldKeepAlive = false;
      req.resume();
      return this.reply(res, 413, 'Request body too large');
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        if (!tooBig) {
          tooBig = true;
          res.shouldKeepAlive = false;
          this.reply(res, 413, 'Request body too large');
        }
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (tooBig) return;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const ct = h['content-type'];
      this.forward(req.method!, path, peerAddress(sock), body, ct, res, 0);
    });
  }

  private forward(method: string, path: string, peer: string, body: Buffer | undefined, contentType: string | undefined, res: ServerResponse, attempt: number): void {
    // The whole upstream header set. Nothing the guest sent is copied except a body's type.
    const headers: OutgoingHttpHeaders = { host: '169.254.169.254', 'x-forwarded-for': peer };
    for (const [k, v] of this.idHeaders) headers[k] = v;
    if (body !== undefined) {
      headers['content-length'] = body.length;
      if (contentType !== undefined) headers['content-type'] = contentType;
    }
    if (attempt === 0) this.inflight++;
    const up = request({ agent: this.agent, socketPath: this.cfg.socketPath, method, path, headers, timeout: this.cfg.timeoutServer });
    let done = false;
    up.on('response', (ur) => {
      const chunks: Buffer[] = [];
      ur.on('data', (c: Buffer) => chunks.push(c));
      ur.on('end', () => {
        if (done) return;
        done = true;
        this.inflight--;
        const status = ur.statusCode ?? 0;
        if (!PASSED.has(status)) {
          this.log.error({ status, peer, path }, 'Unexpected response code from the metadata agent');
          return this.reply(res, 500, UNKNOWN_ERROR);
        }
        const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        if (this.log.isDebug) this.log.debug({ peer, method, path, status, bytes: data.length }, 'proxied');
        const ct = ur.headers['content-type'];
        res.writeHead(status, ct ? { 'content-type': ct, 'content-length': data.length } : { 'content-length': data.length });
        res.end(data);
        res.socket?.setTimeout(this.cfg.timeoutClient);
      });
      ur.on('error', (e) => fail(e));
    });
    up.on('timeout', () => {
      const e: NodeJS.ErrnoException = new Error(`no answer from the metadata agent within ${this.cfg.timeoutServer} ms`);
      e.code = 'ETIMEDOUT';
      up.destroy(e);
    });
    const fail = (e: NodeJS.ErrnoException) => {
      if (done) return;
      done = true;
      const code = e.code ?? '';
      // A keep-alive connection the agent closed while idle: resend at once on a fresh one.
      if (up.reusedSocket && code === 'ECONNRESET' && attempt <= this.cfg.retries) {
        return this.forward(method, path, peer, body, contentType, res, attempt + 1);
      }
      if (RETRYABLE_CONNECT.has(code) && !up.reusedSocket && attempt < this.cfg.retries) {
        setTimeout(() => this.forward(method, path, peer, body, contentType, res, attempt + 1), attempt * 10);
        return;
      }
      this.inflight--;
      if (code === 'ETIMEDOUT') {
        this.log.error({ peer, path, timeout_ms: this.cfg.timeoutServer }, 'metadata agent timed out');
        return this.reply(res, 504, 'The metadata agent did not answer in time.');
      }
      if (code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'EAGAIN' || code === 'EACCES') {
        this.log.error({ peer, path, code, socket: this.cfg.socketPath }, 'metadata agent unreachable');
        return this.reply(res, 503, 'The metadata agent is not available.');
      }
      this.log.error({ peer, path, code, err: e.message }, 'metadata agent connection failed');
      return this.reply(res, 502, 'The metadata agent returned an invalid response.');
    };
    up.on('error', fail);
    up.end(body);
  }

  private reply(res: ServerResponse, status: number, text: string): void {
    if (res.headersSent || res.destroyed) return;
    const data = Buffer.from(text);
    res.writeHead(status, { 'content-type': TEXT, 'content-length': data.length });
    res.end(data);
    res.socket?.setTimeout(this.cfg.timeoutClient);
  }
}
