// The namespace metadata proxy: guest HTTP on <bind_address>:<metadata_port> → the metadata agent over
// its Unix socket. Every upstream request carries a header set built from scratch (like the Grizzly
// Python proxy, unlike haproxy which lets guest headers through): X-Forwarded-For = the TCP peer, the
// router or network id under both the Quantum and Neutron names, and Content-Type/Length for a body.
//
// This is the hot path, so it sits directly on node:net with the small strict parser in http1.ts rather
// than node:http: per request one read and one (corked) write on each side, no stream objects, pooled
// keep-alive connections to the agent, and one sweeper timer for every deadline instead of a timer per
// socket. Measured against node:http on both sides it needs about a third of the CPU per request.
//
// Two levels, so that one process can serve many namespaces (shared mode, src/ns-proxy/shared.ts):
// a NamespaceListener is one namespace's listening socket with its guests, maxconn and parked queue and
// the id header lines; the ProxyRuntime is what a process has once: the pool of keep-alive connections
// to the agent (a pooled connection carries requests of any listener, the id lines are per request), the
// in-flight exchanges, the 250 ms sweeper and the quiet-period compaction.
import { randomUUID } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { LiteLogger } from '../common/lite-log.js';
import { ALLOW, ChunkedDecoder, HttpError, parseRequestHead, parseResponseHead, reason, type RequestHead, type ResponseHead } from './http1.js';
import { RateLimiter, TOO_MANY_BODY, type RateLimitConfig } from './rate-limit.js';
import { FairQueue, Flow } from './fair-queue.js';
import { SlotList } from './slot-list.js';

/** What the guests of a listener are held to (haproxy's frontend limits); one object for all listeners of a process. */
export interface GuestLimits {
  /** Milliseconds. */
  timeoutHttpRequest: number;
  timeoutClient: number;
  timeoutKeepAlive: number;
  maxconn: number;
  maxHeaderSize: number;
  maxBodySize: number;
  /** Connections one source address may hold (slots and parked) per listener; 0: max(8, maxconn / 10). */
  maxconnPerSource?: number;
  /** Neutron's [metadata_rate_limiting], when enabled. */
  rateLimit?: RateLimitConfig | undefined;
}

/** maxconn_per_source = 0: a tenth of maxconn, at least 8 (counting parked connections too). */
export function perSourceCap(l: Pick<GuestLimits, 'maxconn' | 'maxconnPerSource'>): number {
  const v = l.maxconnPerSource ?? 0;
  return v > 0 ? v : Math.max(8, Math.floor(l.maxconn / 10));
}

/**
 * upstream_connections_per_source = 0: a sixteenth of upstream_connections, at least 2 (4 of the default 64).
 * A request's time at the agent grows with the number in flight there, so this, not the total, bounds
 * what one flooding guest adds to a neighbour's latency (it applies only while another source asks too).
 */
export function upstreamPerSource(c: Pick<RuntimeConfig, 'upstreamConnections' | 'upstreamConnectionsPerSource'>): number {
  const v = c.upstreamConnectionsPerSource ?? 0;
  return Math.min(c.upstreamConnections, v > 0 ? v : Math.max(2, Math.floor(c.upstreamConnections / 16)));
}

/** Per process: the agent's socket and the pool's behaviour. */
export interface RuntimeConfig {
  socketPath: string;
  /** Milliseconds. */
  timeoutServer: number;
  /** A hard cap: connections to the agent open at once; more exchanges wait in a queue. */
  upstreamConnections: number;
  /** Exchanges that may wait for one of those connections (default 1024); beyond, 503 at once. */
  upstreamQueue?: number;
  /** Of those connections, how many one guest source may hold at once while others ask too; 0: upstreamPerSource's default. */
  upstreamConnectionsPerSource?: number;
  retries: number;
  /** Quiet this long (ms) after serving requests: close the idle agent connections (default 5 s). */
  quietMs?: number;
  /** ...and, if at least compactAfter requests came since the last time (default 1000), call compact. */
  compactAfter?: number;
  /** Gives memory back once a burst is over (main.ts: a full GC); without it only the connections close. */
  compact?: () => void;
}

/** Whose guests a listener serves: exactly one of the two. */
export interface ListenerIdentity {
  routerId?: string | undefined;
  networkId?: string | undefined;
}

/** Everything a one-namespace proxy process is given (per-namespace mode). */
export interface ProxyConfig extends RuntimeConfig, GuestLimits, ListenerIdentity {
  bindAddress: string;
  port: number;
}

/** Statuses the agent may answer that reach the guest as they are (Python proxy set + haproxy's 502/503/504). */
// 401: a missing, invalid or expired session token (X-aws-ec2-metadata-token).
const PASSED = new Set([200, 400, 401, 403, 404, 409, 500, 502, 503, 504]);
export const UNKNOWN_ERROR = 'An unknown error has occurred. Please try your request again.';
const TEXT = 'text/plain; charset=UTF-8';
const CRLF2 = Buffer.from('\r\n\r\n');
// Connection failures where the request certainly never reached the agent (safe to resend, even a POST).
const RETRYABLE_CONNECT = new Set(['ECONNREFUSED', 'ENOENT', 'EAGAIN']);
const SWEEP_MS = 250;
const QUIET_MS = 5_000;
const COMPACT_AFTER = 1_000;
/** On close, how long a connection that has not sent its first request yet may still send it. */
const FRESH_GRACE_MS = 1_000;
/**
 * Backpressure: while more than this of a guest's answers sit unread in its socket's buffer, nothing more
 * is read from it and no further pipelined request starts (node's http server and haproxy do the same).
 */
export const OUT_HIGH = 64 * 1024;
const UPSTREAM_QUEUE = 1024;
/** Repeated warnings (a source over its cap, rate-limited, a full queue) are logged at most this often each. */
const LOG_EVERY_MS = 10_000;

/** A warning that may repeat at the rate of a hostile guest: one line per LOG_EVERY_MS, with the count since the last. */
class Throttled {
  private n = 0;
  private at = 0;
  constructor(
    private readonly log: LiteLogger,
    private readonly msg: string,
  ) {}
  hit(fields: Record<string, unknown>): void {
    this.n++;
    const now = Date.now();
    if (now - this.at < LOG_EVERY_MS) return;
    this.log.warn({ ...fields, count: this.n }, this.msg);
    this.n = 0;
    this.at = now;
  }
}

/** The address a guest is known by: a dual-stack bind reports IPv4 guests as ::ffff:a.b.c.d. */
function peerOf(sock: Socket): string {
  const z = sock.remoteAddress ?? '';
  // A link-local peer comes with its zone (fe80::...%tap0): the metadata agent wants the address alone.
  const a = z.includes('%') ? z.slice(0, z.indexOf('%')) : z;
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

/**
 * What follows `at` in a read, or nothing. An empty view would still hold the read's memory, and a
 * reference kept across the agent round trip outlives young-generation GCs: under load that promoted
 * every read to the old generation, where only a full GC frees it (measured: 6 MB of dead reads).
 */
function rest(buf: Buffer, at: number): Buffer | undefined {
  return at < buf.length ? buf.subarray(at) : undefined;
}

const enum G {
  Idle,
  Head,
  Body,
  Upstream,
  Closing,
}

/** A guest address of one listener: its connections (maxconn_per_source) and its share of the agent connections. */
class Source extends Flow<Exchange> {
  conns = 0;
  constructor(
    readonly peer: string,
    listenerSeq: number,
  ) {
    super(`${listenerSeq} ${peer}`);
  }
}

let listenerSeq = 0;

/** One guest connection: reads requests one at a time (pipelined ones wait their turn). */
class Guest {
  state = G.Idle;
  buf: Buffer | undefined;
  deadline: number;
  drainDeadline = 0;
  head: RequestHead | undefined;
  path = '';
  need = 0;
  decoder: ChunkedDecoder | undefined;
  keepAlive = true;
  /** Bytes of `buf` already searched for the end of the head (a guest dripping bytes costs O(n), not O(n²)). */
  scanned = 0;
  /** No request answered yet on this connection. */
  fresh = true;
  /** Its answers wait unread (over OUT_HIGH): reading and pipelining resume on 'drain'. */
  blocked = false;
  /** The exchange in flight for it, ended if the guest goes away. */
  ex: Exchange | undefined;
  /** In its listener's guest list. */
  slot = -1;

  readonly peer: string;

  constructor(
    readonly sock: Socket,
    readonly l: NamespaceListener,
    readonly src: Source,
  ) {
    this.peer = src.peer;
    this.deadline = Date.now() + l.limits.timeoutHttpRequest;
  }

  onData(chunk: Buffer): void {
    this.buf = this.buf === undefined || this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.state === G.Upstream || this.state === G.Closing || this.blocked) {
      // Pipelined input waits; a guest that floods it is paused.
      if (this.buf.length > this.l.limits.maxHeaderSize + this.l.limits.maxBodySize) this.sock.pause();
      return;
    }
    this.process();
  }

  /** The guest read its answers: carry on with what it sent meanwhile. */
  onDrain(): void {
    this.drainDeadline = 0;
    if (!this.blocked) return;
    this.blocked = false;
    if (this.state === G.Idle) this.next();
  }

  /**
   * Between requests: parse what is already buffered first, and read from the guest again only once that
   * needs more bytes. Resuming after every answer instead let a pipelining guest append a read per answer
   * (measured: 30 MB of copies in a second).
   */
  private next(): void {
    if (this.buf !== undefined && this.buf.length > 0) this.process();
    else this.buf = undefined;
    if (!this.blocked && (this.state === G.Idle || this.state === G.Head || this.state === G.Body) && this.sock.isPaused()) this.sock.resume();
  }

  process(): void {
    try {
      for (;;) {
        if (this.state === G.Idle || this.state === G.Head) {
          let buf = this.buf;
          if (buf === undefined || buf.length === 0) return;
          // Tolerate stray CRLFs between requests (RFC 9112 2.2).
          let s = 0;
          while (s + 1 < buf.length && buf[s] === 13 && buf[s + 1] === 10) s += 2;
          if (s) {
            buf = this.buf = buf.subarray(s);
            this.scanned = 0;
          }
          if (buf.length === 0) return;
          if (this.state === G.Idle) {
            this.state = G.Head;
            this.scanned = 0;
            this.deadline = Date.now() + this.l.limits.timeoutHttpRequest;
          }
          const from = this.scanned > 3 ? this.scanned - 3 : 0;
          const end = buf.indexOf(CRLF2, from);
          const max = this.l.limits.maxHeaderSize;
          if (end < 0) {
            if (buf.length > max) throw new HttpError(431, 'request header block too large');
            // A head using bare LF line ends would never complete: refuse it now, not at the timeout.
            for (let i = buf.indexOf(10, from); i >= 0; i = buf.indexOf(10, i + 1)) if (i === 0 || buf[i - 1] !== 13) throw new HttpError(400, 'bare LF in head');
            this.scanned = buf.length;
            return;
          }
          if (end + 4 > max) throw new HttpError(431, 'request header block too large');
          const head = parseRequestHead(buf.toString('latin1', 0, end));
          this.buf = rest(buf, end + 4);
          this.scanned = 0;
          const path = upstreamPath(head.target);
          if (path === undefined) throw new HttpError(400, 'bad request target');
          this.head = head;
          this.path = path;
          this.keepAlive = head.keepAlive;
          // Neutron's `http-request deny deny_status 429`: counted and refused before the body is read; the
          // connection closes (haproxy's deny ends the transaction), so a pipelining flooder costs nothing more.
          const rl = this.l.rateLimiter;
          if (rl !== undefined && rl.hit(this.peer, Date.now())) {
            this.l.rateLimited(this.peer);
            this.keepAlive = false;
            this.state = G.Closing;
            this.reply(429, undefined, TOO_MANY_BODY, 'text/html');
            return;
          }
          if (head.contentLength > this.l.limits.maxBodySize) throw new HttpError(413, 'request body too large');
          if (head.expectContinue) this.sock.write('HTTP/1.1 100 Continue\r\n\r\n');
          if (head.chunked) {
            this.decoder = new ChunkedDecoder(this.l.limits.maxBodySize);
            this.state = G.Body;
          } else if (head.contentLength > 0) {
            this.need = head.contentLength;
            this.state = G.Body;
          } else {
            this.dispatch(undefined);
            return;
          }
        }
        if (this.state === G.Body) {
          const buf = this.buf;
          if (buf === undefined || buf.length === 0) return;
          if (this.decoder) {
            const used = this.decoder.feed(buf, 0);
            this.buf = rest(buf, used);
            if (!this.decoder.done) return;
            const body = this.decoder.body();
            this.decoder = undefined;
            this.dispatch(body);
          } else {
            if (buf.length < this.need) return;
            const body = buf.subarray(0, this.need);
            this.buf = rest(buf, this.need);
            this.dispatch(body);
          }
          return;
        }
        return;
      }
    } catch (e) {
      const he = e instanceof HttpError ? e : new HttpError(400, String(e));
      if (this.l.rt.log.isDebug) this.l.rt.log.debug({ peer: this.peer, status: he.status, err: he.message }, 'bad request from guest');
      this.keepAlive = false;
      this.state = G.Closing;
      this.reply(he.status, undefined, Buffer.from(`${reason(he.status)}\n`), TEXT);
    }
  }

  private dispatch(body: Buffer | undefined): void {
    const head = this.head!;
    // A token PUT that carries an X-Forwarded-For of the guest's own means the guest relays for someone else
    // (the SSRF case session tokens exist for): refused here, where what the guest sent is still known. The
    // metadata API serves no other PUT.
    if (head.method === 'PUT' && head.forwardedFor) {
      this.l.rt.log.warn({ peer: this.peer, path: this.path }, 'token request with an X-Forwarded-For from the guest refused');
      this.reply(403, undefined, Buffer.from(`${reason(403)}\n`), TEXT);
      return;
    }
    this.state = G.Upstream;
    this.deadline = 0;
    let extra = '';
    if (head.token !== undefined) extra += `X-aws-ec2-metadata-token: ${head.token}\r\n`;
    if (head.tokenTtl !== undefined) extra += `X-aws-ec2-metadata-token-ttl-seconds: ${head.tokenTtl}\r\n`;
    this.ex = this.l.rt.forward(this, head.method, this.path, body, head.contentType, extra);
  }

  /** Write the whole response at once; then the next request, or close. */
  reply(status: number, contentType: string | undefined, body: Buffer, bodyType?: string, tokenTtl?: string): void {
    const sock = this.sock;
    if (sock.destroyed) return;
    this.l.answered++;
    this.l.rt.count(status);
    const ct = contentType ?? bodyType;
    const closing = !this.keepAlive || this.l.closing;
    let h = `HTTP/1.1 ${status} ${reason(status)}\r\n`;
    if (ct !== undefined) h += `Content-Type: ${ct}\r\n`;
    h += `Content-Length: ${body.length}\r\n`;
    if (status === 405) h += `Allow: ${ALLOW}\r\n`;
    if (tokenTtl !== undefined) h += `X-aws-ec2-metadata-token-ttl-seconds: ${tokenTtl}\r\n`;
    if (closing) h += 'Connection: close\r\n';
    else if (this.head && this.head.minor === 0) h += 'Connection: keep-alive\r\n';
    h += '\r\n';
    const isHead = this.head?.method === 'HEAD';
    if (isHead || body.length === 0) sock.write(h, 'latin1');
    else if (body.length <= 16384) {
      // One buffer, one write(2): cheaper than a writev of two for metadata-sized answers.
      const out = Buffer.allocUnsafe(h.length + body.length);
      out.write(h, 0, 'latin1');
      body.copy(out, h.length);
      sock.write(out);
    } else {
      sock.cork();
      sock.write(h, 'latin1');
      sock.write(body);
      sock.uncork();
    }
    // A guest that stops reading its answers is closed after timeout_client ('drain' clears it: onDrain).
    if (sock.writableNeedDrain && this.drainDeadline === 0) this.drainDeadline = Date.now() + this.l.limits.timeoutClient;
    this.head = undefined;
    this.fresh = false;
    if (closing) {
      this.state = G.Closing;
      // A guest that never closes its side must not hold a maxconn slot for ever.
      this.deadline = Date.now() + this.l.limits.timeoutClient;
      sock.end();
      return;
    }
    this.state = G.Idle;
    this.deadline = Date.now() + this.l.limits.timeoutKeepAlive;
    if (sock.writableLength > OUT_HIGH) {
      // Backpressure: the next pipelined request waits until the guest has read (onDrain).
      this.blocked = true;
      sock.pause();
      return;
    }
    this.next();
  }
}

/** One keep-alive connection to the agent, carrying one exchange at a time. */
class Upstream {
  readonly sock: Socket;
  ex: Exchange | undefined;
  buf: Buffer | undefined;
  head: ResponseHead | undefined;
  need = 0;
  parts: Buffer[] = [];
  got = 0;
  decoder: ChunkedDecoder | undefined;
  /** Bytes of a response seen for the current exchange (a failure after that is not retried). */
  seen = false;
  used = 0;
  dead = false;

  /** Counted in the runtime's hard cap from here until gone() (created by ProxyRuntime.send only). */
  constructor(readonly rt: ProxyRuntime) {
    this.sock = connect({ path: rt.cfg.socketPath });
    this.sock.on('data', (d: Buffer) => this.onData(d));
    this.sock.on('end', () => this.onEnd());
    this.sock.on('error', (e: NodeJS.ErrnoException) => this.fail(e));
    this.sock.on('close', () => this.fail(Object.assign(new Error('agent closed the connection'), { code: 'ECONNRESET' })));
  }

  /** On a fresh connection, or one complete() put back in the pool with its references dropped. */
  start(ex: Exchange): void {
    this.ex = ex;
    this.used++;
    // A fresh array for this exchange's body: the one complete() left has waited in the pool and may be in the
    // old generation, where young reads pushed into it outlive young GCs (measured with bench/proxy-memory.js:
    // 4.7 MB more malloc heap after a burst when it was reused).
    this.parts = [];
    // The id lines are the listener's, whichever namespace's request this pooled connection carried before.
    let h = `${ex.method} ${ex.path} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Forwarded-For: ${ex.guest.peer}\r\nX-Openstack-Request-Id: ${ex.reqId}\r\n${ex.guest.l.idLines}${ex.extra}`;
    if (ex.body !== undefined) {
      if (ex.contentType !== undefined) h += `Content-Type: ${ex.contentType}\r\n`;
      h += `Content-Length: ${ex.body.length}\r\n\r\n`;
      this.sock.cork();
      this.sock.write(h, 'latin1');
      this.sock.write(ex.body);
      this.sock.uncork();
    } else this.sock.write(`${h}\r\n`, 'latin1');
  }

  private onData(d: Buffer): void {
    if (!this.ex) {
      // Bytes nobody asked for: the connection is out of step; drop it.
      this.sock.destroy();
      return;
    }
    this.seen = true;
    this.buf = this.buf === undefined || this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    try {
      this.parse();
    } catch (e) {
      this.abort(e instanceof HttpError ? e : new HttpError(502, String(e)));
    }
  }

  private parse(): void {
    for (;;) {
      const buf = this.buf;
      if (buf === undefined) return;
      if (!this.head) {
        const end = buf.indexOf(CRLF2);
        if (end < 0) {
          if (buf.length > 65536) throw new HttpError(502, 'response head too large');
          return;
        }
        const head = parseResponseHead(buf.toString('latin1', 0, end));
        this.buf = buf.subarray(end + 4);
        if (head.status >= 100 && head.status < 200) continue; // interim responses
        this.head = head;
        const noBody = this.ex!.method === 'HEAD' || head.status === 204 || head.status === 304;
        if (noBody) return this.complete(Buffer.alloc(0));
        if (head.chunked) this.decoder = new ChunkedDecoder(64 << 20, 502);
        else if (head.contentLength >= 0) {
          this.need = head.contentLength;
          if (this.need === 0) return this.complete(Buffer.alloc(0));
        } else this.need = -1; // until the agent closes
      }
      const rest = this.buf!;
      if (this.decoder) {
        const used = this.decoder.feed(rest, 0);
        this.buf = rest.subarray(used);
        if (this.decoder.done) return this.complete(this.decoder.body());
        return;
      }
      if (this.need < 0) {
        if (rest.length) this.parts.push(rest);
        this.buf = undefined;
        return;
      }
      const take = Math.min(rest.length, this.need - this.got);
      if (take > 0) this.parts.push(take === rest.length ? rest : rest.subarray(0, take));
      this.got += take;
      this.buf = rest.subarray(take);
      if (this.got === this.need) return this.complete(this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts));
      return;
    }
  }

  private complete(body: Buffer): void {
    const ex = this.ex!;
    const head = this.head!;
    this.ex = undefined;
    const reusable = head.keepAlive && (this.buf === undefined || this.buf.length === 0) && this.need >= 0;
    // Ready for the next exchange; and an idle connection in the pool must not hold its last answer (see rest()).
    this.buf = undefined;
    this.head = undefined;
    this.parts = [];
    this.got = 0;
    this.decoder = undefined;
    this.seen = false;
    this.rt.finish(ex, head.status, head.contentType, body, head.tokenTtl);
    if (reusable) this.rt.release(this);
    else this.destroy();
  }

  private onEnd(): void {
    // A close-delimited body ends here.
    if (this.ex && this.head && this.need < 0 && !this.decoder) {
      const body = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
      this.head.keepAlive = false;
      this.complete(body);
    }
  }

  /** Once per connection: it leaves the pool and the cap (a queued exchange may take its place). */
  private gone(): void {
    if (this.dead) return;
    this.dead = true;
    this.rt.upstreamGone(this);
  }

  fail(e: NodeJS.ErrnoException): void {
    const ex = this.ex;
    this.ex = undefined;
    if (!this.sock.destroyed) this.sock.destroy();
    this.gone();
    if (ex) this.rt.upstreamFailed(ex, e, this.used > 1, this.seen);
  }

  abort(e: HttpError): void {
    const ex = this.ex;
    this.ex = undefined;
    this.destroy();
    if (ex) this.rt.upstreamBroken(ex, e);
  }

  destroy(): void {
    this.sock.destroy();
    this.gone();
  }
}

interface Exchange {
  guest: Guest;
  method: string;
  path: string;
  body: Buffer | undefined;
  contentType: string | undefined;
  /** Guest headers passed on (the session token ones), as header lines. */
  extra: string;
  /** `req-<uuid>`, made here (the first hop) and carried to the agent and Nova, in every hop's log line. */
  reqId: string;
  attempt: number;
  deadline: number;
  up: Upstream | undefined;
  done: boolean;
  /** Waiting for a connection to the agent (the cap or its source's share is reached). */
  queued: boolean;
  /** Counted in its source's share of the agent connections (from its start, retries included, to its end). */
  running: boolean;
  /** In the runtime's in-flight list. */
  slot: number;
}

/** One namespace's listening socket: its guests, maxconn and parked queue, and the id it sends for them. */
export class NamespaceListener {
  readonly server: Server;
  /** The id header lines, the same on every request of this listener, never taken from the guest. */
  readonly idLines: string;
  closing = false;
  /** Holding a maxconn slot (a SlotList, not a Set: see slot-list.ts). */
  private readonly guests = new SlotList<Guest>();
  private onDrained: (() => void) | undefined;
  /** Connections (with a slot or parked) per source address: the fairness cap; and each one's agent share. */
  private readonly perSource = new Map<string, Source>();
  readonly maxPerSource: number;
  readonly rateLimiter: RateLimiter | undefined;
  private nextExpire = 0;
  /** In the runtime's sweep (watch): from a connection on, until a sweep finds no guest, parked one or rate-limiter entry. */
  swept = false;
  private readonly overCap: Throttled;
  private readonly limited: Throttled;
  /** Tells this listener's guest sources from another's with the same addresses (shared mode). */
  private readonly seq = ++listenerSeq;

  constructor(
    readonly rt: ProxyRuntime,
    readonly limits: GuestLimits,
    id: ListenerIdentity,
  ) {
    this.maxPerSource = perSourceCap(limits);
    this.rateLimiter = limits.rateLimit ? new RateLimiter(limits.rateLimit) : undefined;
    this.overCap = new Throttled(rt.log, 'guest over its connection limit (maxconn_per_source): connection closed');
    this.limited = new Throttled(rt.log, 'guest over the metadata rate limit: 429');
    if (!id.routerId === !id.networkId) throw new Error('exactly one of routerId and networkId is required');
    const uuid = (id.routerId ?? id.networkId)!;
    if (!/^[\x21-\x7e]+$/.test(uuid)) throw new Error('the router/network id must be printable ASCII without spaces');
    this.idLines = id.routerId
      ? `X-Quantum-Router-ID: ${uuid}\r\nX-Neutron-Router-ID: ${uuid}\r\n`
      : `X-Quantum-Network-ID: ${uuid}\r\nX-Neutron-Network-ID: ${uuid}\r\n`;
    // allowHalfOpen: a guest that shuts down its sending side after the request still gets the answer.
    // pauseOnConnect: nothing is read from a connection until it has one of the maxconn slots.
    this.server = createServer({ noDelay: true, allowHalfOpen: true, pauseOnConnect: true }, (sock) => this.accept(sock));
  }

  /** Guest connections holding a maxconn slot. */
  get connections(): number {
    return this.guests.size;
  }

  /** Answers written to this listener's guests (the shared proxy's status, then the agent's metrics). */
  answered = 0;

  /**
   * Beyond maxconn, haproxy stops accepting and connections wait in the kernel's backlog. Node cannot pause
   * accept(), so they wait here instead, unread, up to maxconn of them and timeout_http_request long each;
   * a slot freed by a closing guest goes to the oldest. More than that are closed at once.
   */
  private readonly parked: { sock: Socket; since: number; src: Source }[] = [];

  /** Requests refused by the rate limiter (counted by the limiter; logged here, throttled). */
  rateLimited(peer: string): void {
    this.limited.hit({ peer, id: this.idLines.slice(this.idLines.indexOf(':') + 2, this.idLines.indexOf('\r')) });
  }

  /** Guest connections refused for holding maxconn_per_source already. */
  refusedPerSource = 0;

  private accept(sock: Socket): void {
    if (this.closing) {
      sock.destroy();
      return;
    }
    // Every deadline of a listener starts with a connection: from here until a sweep finds nothing left.
    if (!this.swept) this.rt.watch(this);
    // Fairness: one source cannot hold every slot (and the parked queue) of a namespace others share.
    const peer = peerOf(sock);
    let src = this.perSource.get(peer);
    if (src !== undefined && src.conns >= this.maxPerSource) {
      this.refusedPerSource++;
      this.overCap.hit({ peer, maxconn_per_source: this.maxPerSource });
      sock.on('error', () => {});
      sock.destroy();
      return;
    }
    if (src === undefined) this.perSource.set(peer, (src = new Source(peer, this.seq)));
    src.conns++;
    if (this.guests.size >= this.limits.maxconn) {
      if (this.parked.length >= this.limits.maxconn) {
        this.release(src);
        sock.destroy();
        return;
      }
      sock.on('error', () => {});
      // Parked or admitted, the source's count drops when the socket closes (admit's handler for a guest).
      const s = src;
      sock.once('close', () => !this.admitted.has(sock) && this.release(s));
      this.parked.push({ sock, since: Date.now(), src });
      return;
    }
    this.admit(sock, src);
  }

  /** Sockets of parked connections that got a slot since (their count is then released by the guest). */
  private readonly admitted = new WeakSet<Socket>();

  /** The source stays in perSource until the next sweep: deleting it per connection churns the map's table (see slot-list.ts). */
  private release(src: Source): void {
    src.conns--;
  }

  /** Connections from `peer` now (tests, benchmarks). */
  sourceConnections(peer: string): number {
    return this.perSource.get(peer)?.conns ?? 0;
  }

  private unpark(): void {
    while (this.guests.size < this.limits.maxconn && this.parked.length > 0 && !this.closing) {
      const p = this.parked.shift()!;
      if (!p.sock.destroyed) {
        this.admitted.add(p.sock);
        this.admit(p.sock, p.src);
      }
    }
  }

  private admit(sock: Socket, src: Source): void {
    const g = new Guest(sock, this, src);
    this.guests.add(g);
    sock.on('data', (d: Buffer) => g.onData(d));
    sock.on('drain', () => g.onDrain());
    sock.on('error', () => {});
    // Half-closed guests are answered, then closed.
    sock.on('end', () => {
      g.keepAlive = false;
      if (g.state === G.Idle || g.state === G.Head || g.state === G.Body) sock.destroy();
    });
    sock.on('close', () => {
      this.guests.delete(g);
      this.release(src);
      // Work ends with the guest: its exchange (queued, or on an agent connection, which is closed rather
      // than reused with a half-read answer; the agent sees the close) is dropped.
      if (g.ex !== undefined) this.rt.abandon(g.ex);
      if (this.closing && this.guests.size === 0) this.onDrained?.();
      else this.unpark();
    });
    sock.resume();
  }

  /**
   * Bind host:port (per-namespace mode), or serve a socket already listening in its namespace, handed over
   * by the agent (shared mode). Resolves with the port.
   */
  listen(at: { host: string; port: number; ipv6Only?: boolean } | { fd: number }, backlog = 511): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      const done = () => {
        this.server.off('error', reject);
        this.rt.attach(this);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? a.port : 'port' in at ? at.port : 0);
      };
      if ('fd' in at) this.server.listen({ fd: at.fd, backlog }, done);
      else this.server.listen({ host: at.host, port: at.port, backlog, ipv6Only: at.ipv6Only ?? false }, done);
    });
  }

  /** This listener's deadlines (called by the runtime's sweeper); false once it has nothing left to watch. */
  sweep(now: number): boolean {
    if (this.rateLimiter !== undefined && now >= this.nextExpire) {
      this.nextExpire = now + 1000;
      this.rateLimiter.expire(now);
    }
    const parked = this.parked;
    while (parked.length > 0 && (parked[0]!.sock.destroyed || parked[0]!.since + this.limits.timeoutHttpRequest < now)) parked.shift()!.sock.destroy();
    for (const g of this.guests) {
      if (g.deadline !== 0 && g.deadline < now && (g.state === G.Idle || g.state === G.Head || g.state === G.Body)) {
        if (g.state === G.Idle) g.sock.destroy();
        else {
          g.keepAlive = false;
          g.reply(408, TEXT, Buffer.from('Request Timeout\n'));
        }
      } else if (g.state === G.Closing && g.deadline !== 0 && g.deadline < now) g.sock.destroy();
      else if (g.drainDeadline !== 0 && g.drainDeadline < now) g.sock.destroy();
    }
    for (const [peer, src] of this.perSource) if (src.conns <= 0) this.perSource.delete(peer);
    return this.guests.size > 0 || parked.length > 0 || (this.rateLimiter !== undefined && this.rateLimiter.size > 0);
  }

  /**
   * Stop accepting (the listening socket is closed at once), let in-flight requests finish (up to graceMs),
   * then drop what is left.
   */
  async close(graceMs = this.rt.cfg.timeoutServer + 1000): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const p of this.parked.splice(0)) p.sock.destroy();
    const now = Date.now();
    for (const g of this.guests) {
      // Idle keep-alive guests go now; busy ones after their answer (reply() sees `closing`). A connection
      // accepted an instant ago whose first request is still on its way (the sockets are shared with the
      // next proxy during a handover) gets a moment to send it: its guest would not retry.
      if (g.state === G.Idle && (g.buf === undefined || g.buf.length === 0)) {
        if (g.fresh) g.deadline = Math.min(g.deadline, now + FRESH_GRACE_MS);
        else g.sock.destroy();
      }
    }
    if (this.guests.size > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, graceMs);
        this.onDrained = () => {
          clearTimeout(t);
          resolve();
        };
      });
      for (const g of this.guests) g.sock.destroy();
    }
    await closed;
    this.rt.detach(this);
  }
}

/**
 * What a proxy process has once, however many namespaces it serves: the agent connection pool, the
 * exchanges in flight, one sweeper for every deadline of every listener with connections, and the quiet-period
 * compaction.
 */
export class ProxyRuntime {
  private readonly listeners = new Set<NamespaceListener>();
  /**
   * The listeners the sweeper visits: those with something to time out (see watch). A shared proxy's idle
   * listeners, most of its thousand, are not walked every 250 ms.
   */
  private readonly swept = new Set<NamespaceListener>();
  private readonly idle: Upstream[] = [];
  /** In flight (a SlotList, not a Set: see slot-list.ts). */
  private readonly exchanges = new SlotList<Exchange>();
  /** Agent connections open (busy or idle): never more than upstreamConnections. */
  private live = 0;
  /** Exchanges waiting for one, taken round-robin by guest source, each source within its share (fair-queue.ts). */
  private readonly sched: FairQueue<Exchange>;
  private kickPending = false;
  private queueFull: Throttled;
  /** Exchanges refused because the queue was full; ended because their guest went away. */
  queueRefused = 0;
  abandoned = 0;
  private sweeper: NodeJS.Timeout | undefined;
  /** When the last request came (0: none since the last quiet period began). */
  private lastRequest = 0;
  private sinceCompact = 0;
  private closed = false;

  constructor(
    readonly cfg: RuntimeConfig,
    readonly log: LiteLogger,
  ) {
    this.queueFull = new Throttled(log, 'too many requests waiting for a metadata agent connection: 503');
    this.sched = new FairQueue(upstreamPerSource(cfg), cfg.upstreamQueue ?? UPSTREAM_QUEUE);
  }

  /** Connections to the agent open now, and exchanges waiting for one. */
  get upstream(): { open: number; idle: number; queued: number } {
    return { open: this.live, idle: this.idle.length, queued: this.sched.size };
  }

  /** Requests being proxied right now. */
  get pending(): number {
    return this.exchanges.size;
  }

  /** Answers to guests by status code, this process's lifetime (a plain array: one increment per answer). */
  private readonly byStatus: number[] = new Array<number>(600).fill(0);
  count(status: number): void {
    if (status >= 100 && status < 600) this.byStatus[status]!++;
  }
  get responses(): Record<string, number> {
    const r: Record<string, number> = {};
    this.byStatus.forEach((n, code) => n > 0 && (r[code] = n));
    return r;
  }

  /** Guest connections holding a slot, over every listener. */
  get guests(): number {
    let n = 0;
    for (const l of this.listeners) n += l.connections;
    return n;
  }

  /** A listener started listening: its deadlines join the sweep (one timer for the whole process). */
  attach(l: NamespaceListener): void {
    this.listeners.add(l);
    if (this.sweeper === undefined && !this.closed) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
      this.sweeper.unref();
    }
  }

  detach(l: NamespaceListener): void {
    this.listeners.delete(l);
    this.swept.delete(l);
    l.swept = false;
  }

  /** A listener accepted a connection: it is swept until it has nothing left. */
  watch(l: NamespaceListener): void {
    l.swept = true;
    this.swept.add(l);
  }

  /** Listeners the sweeper visits now (tests). */
  get sweeping(): number {
    return this.swept.size;
  }

  /** Every deadline in one place: requests too slow to arrive, answers too slow to come, stuck writes. */
  private sweep(): void {
    const now = Date.now();
    for (const l of this.swept) {
      if (l.sweep(now)) continue;
      this.swept.delete(l);
      l.swept = false;
    }
    if (this.lastRequest !== 0 && this.exchanges.size === 0 && now - this.lastRequest >= (this.cfg.quietMs ?? QUIET_MS)) this.quiet();
    for (const ex of this.exchanges) {
      // Queued or sent, timeout_server runs from the moment the request was complete.
      if (ex.deadline < now && !ex.done) {
        const up = ex.up;
        ex.up = undefined;
        if (up) {
          up.ex = undefined;
          up.destroy();
        }
        this.log.error({ request_id: ex.reqId, peer: ex.guest.peer, path: ex.path, timeout_ms: this.cfg.timeoutServer }, 'metadata agent timed out');
        this.finishError(ex, 504, 'The metadata agent did not answer in time.');
      }
    }
  }

  /**
   * A burst is over: the kept-alive agent connections go (hundreds of proxies would otherwise hold them
   * open on the agent for its keep-alive timeout), and after enough requests the heap is compacted, since
   * V8 does not shrink an idle process's heap by itself.
   */
  private quiet(): void {
    this.lastRequest = 0;
    const idle = this.idle.splice(0);
    for (const up of idle) up.destroy();
    if (this.sinceCompact >= (this.cfg.compactAfter ?? COMPACT_AFTER) && this.cfg.compact) {
      const requests = this.sinceCompact;
      this.sinceCompact = 0;
      const t0 = process.hrtime.bigint();
      this.cfg.compact();
      if (this.log.isDebug) this.log.debug({ requests, closed_upstream: idle.length, ms: Number(process.hrtime.bigint() - t0) / 1e6 }, 'quiet after a burst: memory compacted');
    }
  }

  forward(guest: Guest, method: string, path: string, body: Buffer | undefined, contentType: string | undefined, extra = ''): Exchange {
    const now = Date.now();
    this.lastRequest = now;
    this.sinceCompact++;
    const ex: Exchange = { guest, method, path, body, contentType, extra, reqId: `req-${randomUUID()}`, attempt: 0, deadline: now + this.cfg.timeoutServer, up: undefined, done: false, queued: false, running: false, slot: -1 };
    this.exchanges.add(ex);
    this.sched.arrived(guest.src, now);
    if (this.sched.mayRun(guest.src, now)) this.send(ex);
    else this.enqueue(ex);
    return ex;
  }

  private send(ex: Exchange): void {
    let up: Upstream | undefined;
    while ((up = this.idle.pop()) !== undefined && (up.dead || up.sock.destroyed));
    if (up === undefined) {
      if (this.live >= this.cfg.upstreamConnections) return this.enqueue(ex);
      this.live++;
      up = new Upstream(this);
    }
    if (!ex.running) {
      ex.running = true;
      this.sched.started(ex.guest.src);
    }
    ex.up = up;
    up.start(ex);
  }

  /**
   * The cap or the source's share is reached: wait (haproxy's server maxconn + queue, but fair by source), or
   * 503 when the queue is full: to this request, or to the newest of a source with a longer backlog.
   */
  private enqueue(ex: Exchange): void {
    const src = ex.guest.src;
    // A retry that finds no free connection waits again, first of its source, out of its share meanwhile.
    const retry = ex.running;
    if (retry) {
      ex.running = false;
      this.sched.done(src);
    }
    const refused = this.sched.push(src, ex, Date.now(), retry);
    if (refused !== ex) ex.queued = true;
    if (refused === undefined) return;
    refused.queued = false;
    this.queueRefused++;
    this.queueFull.hit({ peer: refused.guest.peer, upstream_connections: this.cfg.upstreamConnections, queued: this.sched.size });
    this.finishError(refused, 503, 'The metadata agent is busy; try again.');
  }

  private dequeue(): Exchange | undefined {
    const ex = this.sched.size > 0 ? this.sched.take(Date.now()) : undefined;
    if (ex !== undefined) {
      ex.queued = false;
      ex.running = true;
    }
    return ex;
  }

  /**
   * A source dropped below its share with requests waiting: they may go now if a connection is free. Deferred,
   * so that an answer's own connection, about to be released, is the one they get.
   */
  private kick(): void {
    if (this.kickPending) return;
    this.kickPending = true;
    setImmediate(() => {
      this.kickPending = false;
      while (this.sched.size > 0 && (this.idle.length > 0 || this.live < this.cfg.upstreamConnections)) {
        const next = this.dequeue();
        if (next === undefined) break;
        this.send(next);
      }
    });
  }

  release(up: Upstream): void {
    if (up.dead) return;
    const next = this.dequeue();
    if (next !== undefined) {
      next.up = up;
      up.start(next);
    } else if (this.closed) up.destroy();
    else this.idle.push(up);
  }

  /** A connection closed: out of the pool and the cap; a waiting exchange gets a fresh one. */
  upstreamGone(up: Upstream): void {
    this.live--;
    const i = this.idle.indexOf(up);
    if (i >= 0) this.idle.splice(i, 1);
    while (this.live < this.cfg.upstreamConnections) {
      const next = this.dequeue();
      if (next === undefined) break;
      this.send(next);
    }
  }

  /** The guest went away (closed or reset): its exchange ends, its agent connection is closed, not reused. */
  abandon(ex: Exchange): void {
    if (!this.end(ex)) return;
    this.abandoned++;
    const up = ex.up;
    ex.up = undefined;
    if (up) {
      up.ex = undefined;
      up.destroy();
    }
  }

  /** Once per exchange: out of the in-flight set and the queue. */
  private end(ex: Exchange): boolean {
    if (ex.done) return false;
    ex.done = true;
    this.exchanges.delete(ex);
    if (ex.queued) {
      ex.queued = false;
      this.sched.remove(ex.guest.src, ex);
    } else if (ex.running) {
      ex.running = false;
      if (this.sched.done(ex.guest.src) && (this.idle.length > 0 || this.live < this.cfg.upstreamConnections)) this.kick();
    }
    if (ex.guest.ex === ex) ex.guest.ex = undefined;
    return true;
  }

  finish(ex: Exchange, status: number, contentType: string | undefined, body: Buffer, tokenTtl?: string): void {
    if (!this.end(ex)) return;
    if (!PASSED.has(status)) {
      this.log.error({ request_id: ex.reqId, status, peer: ex.guest.peer, path: ex.path }, 'Unexpected response code from the metadata agent');
      return ex.guest.reply(500, TEXT, Buffer.from(UNKNOWN_ERROR));
    }
    if (this.log.isDebug) this.log.debug({ request_id: ex.reqId, peer: ex.guest.peer, method: ex.method, path: ex.path, status, bytes: body.length }, 'proxied');
    ex.guest.reply(status, contentType, body, undefined, tokenTtl);
  }

  private finishError(ex: Exchange, status: number, text: string): void {
    if (!this.end(ex)) return;
    ex.guest.reply(status, TEXT, Buffer.from(text));
  }

  upstreamFailed(ex: Exchange, e: NodeJS.ErrnoException, reused: boolean, seen: boolean): void {
    if (ex.done) return;
    ex.up = undefined;
    const code = e.code ?? '';
    // A kept-alive connection the agent closed while idle: resend at once on a fresh one.
    if (reused && !seen && (code === 'ECONNRESET' || code === 'EPIPE') && ex.attempt <= this.cfg.retries) {
      ex.attempt++;
      return this.send(ex);
    }
    if (!reused && !seen && RETRYABLE_CONNECT.has(code) && ex.attempt < this.cfg.retries) {
      ex.attempt++;
      setTimeout(() => !ex.done && this.send(ex), ex.attempt * 10);
      return;
    }
    if (RETRYABLE_CONNECT.has(code) || code === 'EACCES') {
      this.log.error({ request_id: ex.reqId, peer: ex.guest.peer, path: ex.path, code, socket: this.cfg.socketPath }, 'metadata agent unreachable');
      return this.finishError(ex, 503, 'The metadata agent is not available.');
    }
    this.log.error({ request_id: ex.reqId, peer: ex.guest.peer, path: ex.path, code, err: e.message }, 'metadata agent connection failed');
    this.finishError(ex, 502, 'The metadata agent returned an invalid response.');
  }

  upstreamBroken(ex: Exchange, e: HttpError): void {
    this.log.error({ request_id: ex.reqId, peer: ex.guest.peer, path: ex.path, err: e.message }, 'invalid response from the metadata agent');
    this.finishError(ex, 502, 'The metadata agent returned an invalid response.');
  }

  /** After the listeners have closed: stop the sweeper and drop the idle agent connections. */
  close(): void {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const up of [...this.idle]) up.destroy();
  }
}

/** A one-namespace proxy (per-namespace mode): a runtime with a single listener. */
export function createProxy(cfg: ProxyConfig, log: LiteLogger): { runtime: ProxyRuntime; listener: NamespaceListener } {
  const runtime = new ProxyRuntime(cfg, log);
  return { runtime, listener: new NamespaceListener(runtime, cfg, cfg) };
}
