// Helpers for the metadata-path tests: a real quantum-server, the agent and proxy processes, a raw
// HTTP client that can send exactly the bytes a hostile guest would, and a Unix-socket HTTP server
// standing in for the agent the way Neutron's functional test_metadata_proxy does.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QuantumClient } from '../../src/common/quantum-client.js';
import { defaultProxyMain } from '../../src/linux/agent-common.js';
import { getFreePort, spawnDaemon, waitFor, waitForListen, type Daemon } from './proc.js';

export function tempDir(prefix = 'qm-mdpath-'): { path: string; rm(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, rm: () => rmSync(path, { recursive: true, force: true }) };
}

export { startQuantumServer, type RunningQuantum } from './quantum-server.js';

export interface TenantNet {
  tenantId: string;
  networkId: string;
  subnetId: string;
  routerId: string;
}

/** A tenant network with a subnet plugged into a router of that tenant (as `quantum router-interface-add`). */
export async function tenantNetwork(q: QuantumClient, tenantId: string, cidr: string): Promise<TenantNet> {
  const net = await q.createNetwork({ name: `net-${tenantId}`, tenant_id: tenantId });
  const sub = await q.createSubnet({ network_id: net.id, cidr, ip_version: 4, tenant_id: tenantId });
  const router = await q.createRouter({ name: `router-${tenantId}`, tenant_id: tenantId });
  await q.addRouterInterface(router.id, { subnet_id: sub.id });
  return { tenantId, networkId: net.id, subnetId: sub.id, routerId: router.id };
}

/** An instance's port: device_id = the instance, owner compute:nova, the given fixed IP. */
export async function instancePort(q: QuantumClient, t: TenantNet, instanceId: string, ip: string, mac?: string) {
  return q.createPort({
    network_id: t.networkId,
    tenant_id: t.tenantId,
    device_id: instanceId,
    device_owner: 'compute:nova',
    fixed_ips: [{ subnet_id: t.subnetId, ip_address: ip }],
    ...(mac ? { mac_address: mac } : {}),
  });
}

export interface Captured {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: string;
}

export interface UnixServer {
  server: Server;
  requests: Captured[];
  connections: number;
  close(): Promise<void>;
}

/**
 * What the fake upstreams of the proxy and agent tests answer: /status/<n> → status n, body `<tag>-<n>` with
 * `headers`; /slow/<ms> → the echo below after that long; anything else → 200 with what was received, as JSON.
 */
export function statusSlowOrEcho(c: Captured, res: ServerResponse, tag: string, headers: Record<string, string>): void {
  const m = /^\/status\/(\d{3})/.exec(c.url);
  if (m) {
    res.writeHead(Number(m[1]), headers);
    res.end(`${tag}-${m[1]}`);
    return;
  }
  const s = /^\/slow\/(\d+)/.exec(c.url);
  const answer = () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(c));
  };
  if (s) setTimeout(answer, Number(s[1]));
  else answer();
}

/** A real HTTP server on a Unix socket (or TCP when `path` is a number) that records what it got. */
export async function captureServer(path: string | number, respond: (c: Captured, res: ServerResponse) => void, host = '127.0.0.1'): Promise<UnixServer> {
  const requests: Captured[] = [];
  const st: UnixServer = {
    server: createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        const c: Captured = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body };
        requests.push(c);
        respond(c, res);
      });
    }),
    requests,
    connections: 0,
    close: () =>
      new Promise<void>((r) => {
        st.server.close(() => r());
        st.server.closeAllConnections();
      }),
  };
  st.server.keepAliveTimeout = 60_000;
  st.server.on('connection', () => st.connections++);
  await new Promise<void>((resolve, reject) => {
    st.server.once('error', reject);
    if (typeof path === 'number') st.server.listen(path, host, () => resolve());
    else st.server.listen(path, () => resolve());
  });
  return st;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  raw: string;
}

/**
 * Send raw bytes over one TCP connection (optionally from a chosen local address, e.g. 127.0.0.5, to
 * play a given guest) and read one HTTP/1.x response. Used for requests node's client will not write.
 */
export function rawRequest(port: number, data: string | Buffer, opts: { host?: string; localAddress?: string; timeoutMs?: number; halfClose?: boolean } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect({ port, host: opts.host ?? '127.0.0.1', ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no complete response within ${opts.timeoutMs ?? 10_000} ms; got ${JSON.stringify(buf.toString())}`));
    }, opts.timeoutMs ?? 10_000);
    const tryParse = (final: boolean) => {
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return final ? done(text) : undefined;
      const head = text.slice(0, end).split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '');
      const headers: Record<string, string> = {};
      for (const l of head.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      const len = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
      const body = text.slice(end + 4);
      if (len !== undefined && Buffer.byteLength(body, 'latin1') >= len) {
        clearTimeout(timer);
        s.destroy();
        resolve({ status: m ? Number(m[1]) : 0, headers, body: Buffer.from(body.slice(0, len), 'latin1').toString('utf8'), raw: text });
      } else if (final) {
        clearTimeout(timer);
        resolve({ status: m ? Number(m[1]) : 0, headers, body: Buffer.from(body, 'latin1').toString('utf8'), raw: text });
      }
    };
    const done = (text: string) => {
      clearTimeout(timer);
      resolve({ status: 0, headers: {}, body: '', raw: text });
    };
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      tryParse(false);
    });
    s.on('end', () => tryParse(true));
    s.on('error', (e) => {
      clearTimeout(timer);
      if (buf.length) tryParse(true);
      else reject(e);
    });
    if (opts.halfClose) s.end(data);
    else s.write(data);
  });
}

/** A GET through node's client from a chosen local address (a "guest"), with keep-alive off. */
export function guestGet(port: number, path: string, localAddress = '127.0.0.1', headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<{ status: number; body: string; headers: IncomingMessage['headers'] }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, localAddress, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, headers: res.headers }));
    });
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error('guest request timed out')));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Write an INI file from sections. */
export function writeIni(path: string, sections: Record<string, Record<string, string | number | boolean>>): string {
  const lines: string[] = [];
  for (const [s, kv] of Object.entries(sections)) {
    lines.push(`[${s}]`);
    for (const [k, v] of Object.entries(kv)) lines.push(`${k} = ${String(v)}`);
    lines.push('');
  }
  writeFileSync(path, lines.join('\n'));
  return path;
}

/** Start the real proxy in the foreground (--nodaemonize) and wait until it listens. */
export async function startProxy(args: string[], port: number, host = '127.0.0.1'): Promise<Daemon> {
  // The copy of the proxy the agents start (the CommonJS build).
  const d = spawnDaemon(defaultProxyMain, ['--nodaemonize', `--metadata_port=${port}`, `--bind_address=${host === '127.0.0.1' ? '0.0.0.0' : host}`, ...args]);
  try {
    await waitForListen({ host, port }, 10_000);
  } catch (e) {
    await d.stop();
    throw new Error(`proxy did not start: ${d.output()}`);
  }
  return d;
}

export { getFreePort, spawnDaemon, waitFor, waitForListen };
