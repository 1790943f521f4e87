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
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Control characters other than HTAB are never valid in a field value (RFC 9110 5.5).
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: [^\r\n]*)?$/;

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
    const value = l.slice(c + 1).trim();
    if (BAD_VALUE.test(value)) throw new HttpError(400, 'invalid header value');
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
  const minor = m[3] === '1' ? 1 : 0;
  const f = fields(ls);
  if (minor === 0 && f.chunked) throw new HttpError(400, 'chunked with HTTP/1.0');
  return {
    method: m[1]!,
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
  constructor(
    private readonly limit: number,
    private readonly errStatus = 400,
  ) {}

  feed(buf: Buffer, off: number): number {
    let i = off;
    while (i < buf.length && !this.done) {
      if (this.state === 'size') {
        const nl = buf.indexOf('\r\n', i, 'latin1');
        if (nl < 0) {
          if (buf.length - i > 1024) throw new HttpError(this.errStatus, 'chunk size line too long');
          return i - off;
        }
        const line = buf.toString('latin1', i, nl);
        const semi = line.indexOf(';');
        const hex = (semi < 0 ? line : line.slice(0, semi)).trim();
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
        if (nl < 0) {
          if (buf.length - i > 8192) throw new HttpError(this.errStatus, 'trailers too long');
          return i - off;
        }
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
