// A deliberately small and strict HTTP/1.x parser for the metadata proxy's hot path. Guests are
// untrusted, so anything ambiguous is rejected rather than interpreted: obs-fold, bare LF or CR,
// whitespace before a colon, non-token header names, control characters in values, duplicate or
// malformed Content-Length, Transfer-Encoding other than a lone "chunked", CL together with TE.
// Only the few headers the proxy needs are read; the rest are validated and then dropped.

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface RequestHead {
  method: string;
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  keepAlive: boolean;
  contentLength: number;
  chunked: boolean;
  contentType: string | undefined;
  expectContinue: boolean;
  /** X-aws-ec2-metadata-token and its -ttl-seconds twin (IMDSv2 session tokens), passed on as sent. */
  token: string | undefined;
  tokenTtl: string | undefined;
  /** The guest sent an X-Forwarded-For of its own (a token PUT with one is refused). */
  forwardedFor: boolean;
}

export interface ResponseHead {
  status: number;
  minor: number;
  keepAlive: boolean;
  /** -1 when absent. */
  contentLength: number;
  chunked: boolean;
  contentType: string | undefined;
  /** Nova's answer to a token PUT names the token's TTL; the guest gets it too, as from AWS. Digits only. */
  tokenTtl: string | undefined;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Control characters other than HTAB are never valid in a field value (RFC 9110 5.5).
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: [^\r\n]*)?$/;
/** What the metadata API serves: GET/HEAD, POST (the password), PUT (/latest/api/token). */
export const SERVED_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT']);
/** RFC 9110's other methods: known, so 405 (node's and haproxy's peers answer 501 to the unknown, as here). */
const KNOWN_METHODS = new Set(['DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);
export const ALLOW = 'GET, HEAD, POST, PUT';
/** A chunk-size line with its extensions (RFC 9112 7.1.1 sets no limit; node's llhttp and haproxy keep them short). */
export const MAX_CHUNK_LINE = 256;
/** The whole trailer section (haproxy counts it against the same buffer as the head). */
export const MAX_TRAILERS = 8192;

/** Strip optional whitespace (SP, HTAB only: String.trim() would also eat VT, FF and NBSP, hiding them). */
function ows(v: string): string {
  let a = 0;
  let b = v.length;
  while (a < b && (v.charCodeAt(a) === 32 || v.charCodeAt(a) === 9)) a++;
  while (b > a && (v.charCodeAt(b - 1) === 32 || v.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === v.length ? v : v.slice(a, b);
}

/** Split a head (without the final CRLFCRLF) into lines, refusing bare CR or LF. */
function lines(head: string): string[] {
  const ls = head.split('\r\n');
  for (const l of ls) if (l.includes('\n') || l.includes('\r')) throw new HttpError(400, 'bare CR or LF in head');
  return ls;
}

interface Fields {
  contentLength: number;
  chunked: boolean;
  contentType: string | undefined;
  connClose: boolean;
  connKeepAlive: boolean;
  expectContinue: boolean;
  token: string | undefined;
  tokenTtl: string | undefined;
  forwardedFor: boolean;
}

function fields(ls: string[]): Fields {
  const f: Fields = { contentLength: -1, chunked: false, contentType: undefined, connClose: false, connKeepAlive: false, expectContinue: false, token: undefined, tokenTtl: undefined, forwardedFor: false };
  let te = false;
  for (let i = 1; i < ls.length; i++) {
    const l = ls[i]!;
    const c = l.indexOf(':');
    if (c <= 0) throw new HttpError(400, 'malformed header line');
    const name = l.slice(0, c);
    // Also rejects obs-fold (a line starting with SP/HTAB) and "Name :" forms.
    if (!TOKEN.test(name)) throw new HttpError(400, 'invalid header name');
    const value = ows(l.slice(c + 1));
    if (BAD_VALUE.test(value)) throw new HttpError(400, 'invalid header value');
    // NBSP (latin1 0xa0) is obs-text inside a value, never whitespace around it.
    if (value.length > 0 && (value.charCodeAt(0) === 0xa0 || value.charCodeAt(value.length - 1) === 0xa0)) throw new HttpError(400, 'invalid header value');
    switch (name.length) {
      case 10:
        if (name.toLowerCase() === 'connection') {
          for (const t of value.toLowerCase().split(',')) {
            const tt = t.trim();
            if (tt === 'close') f.connClose = true;
            else if (tt === 'keep-alive') f.connKeepAlive = true;
          }
        }
        break;
      case 12:
        if (name.toLowerCase() === 'content-type' && f.contentType === undefined) f.contentType = value;
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          if (f.contentLength !== -1) throw new HttpError(400, 'duplicate Content-Length');
          if (!/^\d{1,15}$/.test(value)) throw new HttpError(400, 'invalid Content-Length');
          f.contentLength = Number(value);
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          if (te || value.toLowerCase() !== 'chunked') throw new HttpError(400, 'unsupported Transfer-Encoding');
          te = true;
          f.chunked = true;
        }
        break;
      case 15:
        if (name.toLowerCase() === 'x-forwarded-for') f.forwardedFor = true;
        break;
      case 24:
        if (name.toLowerCase() === 'x-aws-ec2-metadata-token') {
          if (f.token !== undefined) throw new HttpError(400, 'duplicate X-aws-ec2-metadata-token');
          f.token = value;
        }
        break;
      case 36:
        if (name.toLowerCase() === 'x-aws-ec2-metadata-token-ttl-seconds') {
          if (f.tokenTtl !== undefined) throw new HttpError(400, 'duplicate X-aws-ec2-metadata-token-ttl-seconds');
          f.tokenTtl = value;
        }
        break;
      case 6:
        if (name.toLowerCase() === 'expect') {
          if (value.toLowerCase() !== '100-continue') throw new HttpError(417, 'unsupported expectation');
          f.expectContinue = true;
        }
        break;
    }
  }
  if (f.chunked && f.contentLength !== -1) throw new HttpError(400, 'both Content-Length and Transfer-Encoding');
  return f;
}

/** Parse a request head: `head` is the latin1 text before the blank line. */
export function parseRequestHead(head: string): RequestHead {
  const ls = lines(head);
  const m = REQUEST_LINE.exec(ls[0]!);
  if (!m) throw new HttpError(400, 'malformed request line');
  const method = m[1]!;
  // Answered here, without a round trip to the agent: 405 for a known method the API does not serve, 501 for
  // any other token (methods are case-sensitive: "get" is not GET).
  if (!SERVED_METHODS.has(method)) throw KNOWN_METHODS.has(method) ? new HttpError(405, `method ${method} not allowed`) : new HttpError(501, 'unknown method');
  const minor = m[3] === '1' ? 1 : 0;
  const f = fields(ls);
  if (minor === 0 && f.chunked) throw new HttpError(400, 'chunked with HTTP/1.0');
  return {
    method,
    target: m[2]!,
    minor,
    keepAlive: minor === 1 ? !f.connClose : f.connKeepAlive && !f.connClose,
    contentLength: f.contentLength === -1 ? 0 : f.contentLength,
    chunked: f.chunked,
    contentType: f.contentType,
    expectContinue: f.expectContinue && minor === 1,
    token: f.token,
    tokenTtl: f.tokenTtl,
    forwardedFor: f.forwardedFor,
  };
}

/** Parse a response head from the (trusted, but still checked) agent. */
export function parseResponseHead(head: string): ResponseHead {
  const ls = lines(head);
  const m = STATUS_LINE.exec(ls[0]!);
  if (!m) throw new HttpError(502, 'malformed status line');
  const minor = m[1] === '1' ? 1 : 0;
  let f: Fields;
  try {
    f = fields(ls);
  } catch (e) {
    throw new HttpError(502, (e as Error).message);
  }
  return {
    status: Number(m[2]),
    minor,
    keepAlive: minor === 1 ? !f.connClose : f.connKeepAlive && !f.connClose,
    contentLength: f.contentLength,
    chunked: f.chunked,
    contentType: f.contentType,
    tokenTtl: f.tokenTtl !== undefined && /^\d{1,5}$/.test(f.tokenTtl) ? f.tokenTtl : undefined,
  };
}

/**
 * Incremental chunked-body decoder. feed() returns the number of bytes consumed from `buf` starting
 * at `off`; `done` turns true after the last chunk and its trailers. Sizes beyond `limit` throw 413.
 */
export class ChunkedDecoder {
  readonly parts: Buffer[] = [];
  size = 0;
  done = false;
  private state: 'size' | 'data' | 'data-crlf' | 'trailer' = 'size';
  private left = 0;
  /** Bytes taken off the wire (sizes, extensions, CRLFs, trailers too): bounded, not only the data. */
  private wire = 0;
  private trailers = 0;
  constructor(
    private readonly limit: number,
    private readonly errStatus = 400,
  ) {}

  feed(buf: Buffer, off: number): number {
    const n0 = this.feedInner(buf, off);
    this.wire += n0;
    // Framing around tiny chunks could otherwise make a small body cost unbounded input.
    if (this.wire > 2 * this.limit + 16384) throw new HttpError(this.errStatus === 400 ? 413 : this.errStatus, 'chunked framing too large');
    return n0;
  }

  private feedInner(buf: Buffer, off: number): number {
    let i = off;
    while (i < buf.length && !this.done) {
      if (this.state === 'size') {
        const nl = buf.indexOf('\r\n', i, 'latin1');
        if (nl < 0) {
          if (buf.length - i > MAX_CHUNK_LINE) throw new HttpError(this.errStatus, 'chunk size line too long');
          return i - off;
        }
        if (nl - i > MAX_CHUNK_LINE) throw new HttpError(this.errStatus, 'chunk extensions too long');
        const line = buf.toString('latin1', i, nl);
        const semi = line.indexOf(';');
        const hex = ows(semi < 0 ? line : line.slice(0, semi));
        if (!/^[0-9a-fA-F]{1,8}$/.test(hex)) throw new HttpError(this.errStatus, 'bad chunk size');
        this.left = Number.parseInt(hex, 16);
        i = nl + 2;
        if (this.left === 0) this.state = 'trailer';
        else {
          if (this.size + this.left > this.limit) throw new HttpError(413, 'body too large');
          this.state = 'data';
        }
      } else if (this.state === 'data') {
        const n = Math.min(this.left, buf.length - i);
        this.parts.push(buf.subarray(i, i + n));
        this.size += n;
        this.left -= n;
        i += n;
        if (this.left === 0) this.state = 'data-crlf';
      } else if (this.state === 'data-crlf') {
        if (buf.length - i < 2) return i - off;
        if (buf[i] !== 13 || buf[i + 1] !== 10) throw new HttpError(this.errStatus, 'missing CRLF after chunk');
        i += 2;
        this.state = 'size';
      } else {
        // Trailers: ignored lines until an empty one.
        const nl = buf.indexOf('\r\n', i, 'latin1');
        const tooLong = () => new HttpError(this.errStatus === 400 ? 431 : this.errStatus, 'trailer section too large');
        if (nl < 0) {
          if (this.trailers + buf.length - i > MAX_TRAILERS) throw tooLong();
          return i - off;
        }
        this.trailers += nl + 2 - i;
        if (this.trailers > MAX_TRAILERS) throw tooLong();
        if (nl === i) this.done = true;
        i = nl + 2;
      }
    }
    return i - off;
  }

  body(): Buffer {
    return this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
  }
}

const REASONS: Record<number, string> = {
  100: 'Continue', 200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 301: 'Moved Permanently', 302: 'Found', 304: 'Not Modified',
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 408: 'Request Timeout', 409: 'Conflict',
  411: 'Length Required', 413: 'Payload Too Large', 414: 'URI Too Long', 417: 'Expectation Failed', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large',
  500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

export function reason(status: number): string {
  return REASONS[status] ?? 'Unknown';
}
