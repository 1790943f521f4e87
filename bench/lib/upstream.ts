// The minimal upstream: a node:http server on a Unix socket (where the metadata agent would listen) and
// optionally on TCP (the "direct" ceiling), answering fixed Nova-shaped bodies. It runs as its own process so
// its CPU is not counted against the proxy. A control socket reports what it saw.
//   node upstream.js --socket <path> [--tcp <host:port>] --ctl <path>
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { unlinkSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BODIES } from './bodies.js';

const { values } = parseArgs({ options: { socket: { type: 'string' }, tcp: { type: 'string' }, ctl: { type: 'string' }, 'delay-ms': { type: 'string' } } });
/** Answer after this many ms (emulates the agent's lookup + Nova round trip); 0 = at once. */
const delayMs = Number(values['delay-ms'] ?? 0);
if (!values.socket || !values.ctl) {
  process.stderr.write('usage: upstream --socket <path> [--tcp host:port] --ctl <path>\n');
  process.exit(2);
}

const stats = {
  unixConns: 0,
  tcpConns: 0,
  requests: 0,
  notFound: 0,
  /** Requests that came over the socket without X-Forwarded-For or without X-Neutron-Router-ID. */
  missingHeaders: 0,
  last: { xff: '', routerId: '', networkId: '', path: '' },
};

const prepared = new Map<string, { type: string; body: Buffer }>();
for (const [p, [type, body]] of Object.entries(BODIES)) prepared.set(p, { type, body: Buffer.from(body) });

function handler(viaSocket: boolean) {
  const answer = handlerNow(viaSocket);
  return delayMs > 0 ? (req: IncomingMessage, res: ServerResponse) => void setTimeout(answer, delayMs, req, res) : answer;
}

function handlerNow(viaSocket: boolean) {
  return (req: IncomingMessage, res: ServerResponse) => {
    stats.requests++;
    const xff = req.headers['x-forwarded-for'];
    const rid = req.headers['x-neutron-router-id'];
    if (viaSocket) {
      if (!xff || !rid) stats.missingHeaders++;
      stats.last = { xff: String(xff ?? ''), routerId: String(rid ?? ''), networkId: String(req.headers['x-neutron-network-id'] ?? ''), path: req.url ?? '' };
    }
    // Drain any request body before answering so keep-alive stays usable.
    req.resume();
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/latest/meta-data/local-ipv4') {
      const ip = String(xff ?? req.socket.remoteAddress ?? '').split(',').pop()!.trim();
      res.writeHead(200, { 'content-type': 'text/plain; charset=UTF-8', 'content-length': Buffer.byteLength(ip) });
      res.end(ip);
      return;
    }
    const hit = prepared.get(path);
    if (!hit) {
      stats.notFound++;
      res.writeHead(404, { 'content-type': 'text/plain; charset=UTF-8', 'content-length': 0 });
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': hit.type, 'content-length': hit.body.length });
    res.end(hit.body);
  };
}

function listenUnix(path: string, server: ReturnType<typeof createServer>) {
  try {
    unlinkSync(path);
  } catch {
    /* no stale socket */
  }
  server.listen({ path, backlog: 4096 });
}

const unix = createServer({ keepAliveTimeout: 60_000 }, handler(true));
unix.on('connection', () => stats.unixConns++);
listenUnix(values.socket, unix);

if (values.tcp) {
  const i = values.tcp.lastIndexOf(':');
  const tcp = createServer({ keepAliveTimeout: 60_000 }, handler(false));
  tcp.on('connection', () => stats.tcpConns++);
  tcp.listen({ host: values.tcp.slice(0, i), port: Number(values.tcp.slice(i + 1)), backlog: 4096 });
}

const ctl = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(stats));
});
listenUnix(values.ctl, ctl);

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
