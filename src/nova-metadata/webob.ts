// webob 1.8's default error responses, byte for byte, as Nova's metadata handler sends them:
// the body is negotiated on Accept between text/html and application/json, else text/plain.
import { pyDumps } from './pyjson.js';

export const STATUS_TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** webob.exc default explanations (used when the raiser gives none). */
export const DEFAULT_EXPLANATIONS: Record<number, string> = {
  400: 'The server could not comply with the request since it is either malformed or otherwise incorrect.',
  401: 'This server could not verify that you are authorized to access the document you requested.  Either you supplied the wrong credentials (e.g., bad password), or your browser does not understand how to supply the credentials required.',
  403: 'Access was denied to this resource.',
  404: 'The resource could not be found.',
  405: 'The method is not allowed for this resource.',
  409: 'There was a conflict when trying to complete your request.',
  500: 'The server has either erred or is incapable of performing the requested operation.',
  503: 'The server is currently unavailable. Please try again at a later time.',
};

/** An HTTP error as webob.exc raises it: a status and an explanation. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly explanation: string = DEFAULT_EXPLANATIONS[status] ?? '',
  ) {
    super(`${status} ${STATUS_TITLES[status] ?? ''}: ${explanation}`);
    this.name = 'HttpError';
  }
}

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const PARAM = `${TOKEN}\\s*=\\s*(?:${TOKEN}|"(?:[^"\\\\]|\\\\.)*")`;
const RANGE_RE = new RegExp(`^(${TOKEN})/(${TOKEN})((?:\\s*;\\s*${PARAM})*)$`);
const QVALUE_RE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

interface Range {
  type: string;
  subtype: string;
  params: number;
  q: number;
}

/** Parse an Accept header the way webob does; undefined when it is invalid (then every offer is acceptable). */
function parseAccept(value: string): Range[] | undefined {
  const out: Range[] = [];
  for (const raw of value.split(',')) {
    const el = raw.trim();
    if (el === '') continue;
    const m = RANGE_RE.exec(el);
    if (!m) return undefined;
    let q = 1;
    let params = 0;
    const p = m[3]!;
    if (p) {
      for (const part of p.split(';').map((x) => x.trim()).filter((x) => x)) {
        const eq = part.indexOf('=');
        const k = part.slice(0, eq).trim().toLowerCase();
        const v = part.slice(eq + 1).trim();
        if (k === 'q') {
          if (!QVALUE_RE.test(v)) return undefined;
          q = Number(v);
          break; // anything after q is an accept-extension
        }
        params++;
      }
    }
    const type = m[1]!.toLowerCase();
    const subtype = m[2]!.toLowerCase();
    if (type === '*' && subtype !== '*') return undefined;
    out.push({ type, subtype, params, q });
  }
  return out;
}

/** webob's acceptable_offers(['text/html', 'application/json'])[0], or undefined. */
export function negotiateErrorType(accept: string | undefined): 'text/html' | 'application/json' | undefined {
  if (accept === undefined || accept === '') return undefined;
  const ranges = parseAccept(accept);
  if (!ranges) return 'text/html';
  let best: ['text/html' | 'application/json', number] | undefined;
  for (const offer of ['text/html', 'application/json'] as const) {
    const [t, s] = offer.split('/') as [string, string];
    let spec = -1;
    let q = 0;
    for (const r of ranges) {
      let sp: number;
      if (r.type === '*' && r.subtype === '*') sp = 0;
      else if (r.type === t && r.subtype === '*') sp = 1;
      else if (r.type === t && r.subtype === s && r.params === 0) sp = 2;
      else continue;
      if (sp > spec) {
        spec = sp;
        q = r.q;
      }
    }
    if (spec < 0 || q === 0) continue;
    if (!best || q > best[1]) best = [offer, q];
  }
  return best?.[0];
}

function htmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
}

function stripTags(s: string): string {
  return s
    .replace(/\n/g, ' ')
    .replace(/\r/g, '')
    .replace(/<br.*?>/gis, '\n')
    .replace(/<!--|-->/g, '')
    .replace(/<.*?>/gs, '');
}

export interface ErrorBody {
  contentType: string;
  body: Buffer;
}

/** The body webob generates for `status` with `explanation` for a request with this Accept header. */
export function webobErrorBody(status: number, explanation: string, accept: string | undefined): ErrorBody {
  const title = STATUS_TITLES[status] ?? 'Error';
  const statusLine = `${status} ${title}`;
  const match = negotiateErrorType(accept);
  if (match === 'text/html') {
    const body = `${htmlEscape(explanation)}<br /><br />\n\n\n`;
    const html = `<html>\n <head>\n  <title>${statusLine}</title>\n </head>\n <body>\n  <h1>${statusLine}</h1>\n  ${body}\n </body>\n</html>`;
    return { contentType: 'text/html; charset=UTF-8', body: Buffer.from(html, 'utf8') };
  }
  if (match === 'application/json') {
    const body = `${explanation}<br /><br />\n\n\n`;
    return { contentType: 'application/json', body: Buffer.from(pyDumps({ message: body, code: statusLine, title }), 'utf8') };
  }
  const plain = stripTags(`${explanation}<br /><br />\n\n\n`);
  return { contentType: 'text/plain; charset=UTF-8', body: Buffer.from(`${statusLine}\n\n${plain}`, 'utf8') };
}
