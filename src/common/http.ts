// Small helpers shared by the HTTP daemons (no framework on the metadata hot path).
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { isIPv6 } from 'node:net';
import { ApiError } from './errors.js';

/**
 * Read a request body of at most `limit` bytes; a larger one is a 413 ApiError at once. The rest of it is still
 * read and dropped (`drain`, the default) so the answer can go back on the same keep-alive connection; without
 * it the request is destroyed.
 */
export function readBody(req: IncomingMessage, limit = 1 << 20, opts: { drain?: boolean } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        reject(new ApiError(413, 'RequestEntityTooLarge', 'Request body too large'));
        if (opts.drain === false) req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!over) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': data.length, ...extra });
  res.end(data);
}

/** Bracket an IPv6 literal for a URL authority. */
export function hostForUrl(host: string): string {
  return isIPv6(host) ? `[${host}]` : host;
}

/** IPv4-mapped IPv6 (::ffff:a.b.c.d) → a.b.c.d; anything else unchanged. */
export function unmapIPv4(addr: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1]! : addr;
}

/** Listen and resolve with the bound port (port 0 picks a free one, which tests rely on). */
export function listen(server: Server, host: string, port: number, backlog = 511): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    server.listen({ host, port, backlog }, () => {
      server.off('error', onError);
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : port);
    });
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections?.();
  });
}
