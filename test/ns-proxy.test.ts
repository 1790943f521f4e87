// quantum-ns-metadata-proxy as a real process in front of a real HTTP server on a Unix socket that
// stands in for the metadata agent (as Neutron's functional test_metadata_proxy does).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { daemonArgv, repoRoot } from './helpers/paths.js';
import { defaultProxyMain, proxyCommandPrefix } from '../src/linux/agent-common.js';
import { PROXY_NODE_FLAGS } from '../src/common/proxy-runtime.js';
import { captureServer, getFreePort, guestGet, rawRequest, startProxy, statusSlowOrEcho, tempDir, waitFor, waitForListen, type Captured, type UnixServer } from './helpers/mdpath.js';
import { sleep } from './helpers/proc.js';
import { PROXY_MODES, startProxyIn, type RunningProxy } from './helpers/proxy-modes.js';
import { upstreamPath } from '../src/ns-proxy/proxy.js';
import { parseFlags } from '../src/common/flags.js';
import { proxyAliases, proxyOpts } from '../src/ns-proxy/opts.js';

const ROUTER = '5a1e0c9e-1d2b-4c1e-9b8e-7d2f3a4b5c6d';
const NETWORK = 'a4d1b2c3-0000-4000-8000-00000000beef';
const UNKNOWN = 'An unknown error has occurred. Please try your request again.';

/** The fake agent: /status/<n> answers n, /slow/<ms> waits, anything else echoes what it received. */
function agentBehaviour(c: Captured, res: import('node:http').ServerResponse): void {
  statusSlowOrEcho(c, res, 'body', { 'content-type': 'text/x-test', 'x-agent-secret': 'not-for-guests' });
}

function runCli(args: string[], timeoutMs = 15_000): Promise<{ code: number | null; out: string }> {
  return runArgv(daemonArgv(defaultProxyMain, ...args), timeoutMs);
}

function runArgv([cmd, ...argv]: string[], timeoutMs = 15_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

/** n requests to the proxy on `port` from 8 keep-alive guests at once (paths `<path>/<i>`); each must be a 200. */
function keepAliveBurst(port: number, ka: Agent, n: number, path: string): Promise<void> {
  const one = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: `${path}/${i}`, agent: ka }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end();
    });
  return Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = w; i < n; i += 8) await one(i);
    }),
  ).then(() => undefined);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

for (const mode of PROXY_MODES) {
  // Per-namespace: a process per router, as before. Shared: a listener of SharedMetadataProxy's process.
  const start = (args: string[], port: number) => startProxyIn(mode, args, port);

  describe(`quantum-ns-metadata-proxy (${mode}): forwarding`, () => {
    const dir = tempDir();
    const sock = join(dir.path, 'metadata_proxy');
    let agent: UnixServer;
    let proxy: RunningProxy;
    let netProxy: RunningProxy;
    let port: number;
    let netPort: number;

    before(async () => {
      agent = await captureServer(sock, agentBehaviour);
      port = await getFreePort();
      netPort = await getFreePort();
      proxy = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--max_header_size=4096', '--max_body_size=1024'], port);
      netProxy = await start([`--network_id=${NETWORK}`, `--state_path=${dir.path}`], netPort);
    });
    after(async () => {
      await proxy?.stop();
      await netProxy?.stop();
      await agent?.close();
      dir.rm();
    });

    test('builds a fresh header set: XFF = peer, both router id names, nothing the guest sent', async () => {
      const spoof = {
        'X-Forwarded-For': '10.0.0.99',
        'X-Instance-ID': 'someone-else',
        'X-Instance-ID-Signature': 'f'.repeat(64),
        'X-Tenant-ID': 'other-tenant',
        'X-Neutron-Router-ID': 'evil-router',
        'X-Quantum-Router-ID': 'evil-router',
        'X-Neutron-Network-ID': 'evil-net',
        'X-Quantum-Network-ID': 'evil-net',
        'X-OVN-Network-ID': 'evil-net',
        Forwarded: 'for=10.0.0.99',
        'X-Real-IP': '10.0.0.99',
        Authorization: 'Bearer x',
        Cookie: 'a=b',
        'Metadata-Flavor': 'Google',
        'X-Openstack-Request-Id': 'req-00000000-0000-0000-0000-000000000000',
        Host: 'evil.example',
      };
      const r = await guestGet(port, '/latest/meta-data/instance-id?x=1&y=2', '127.0.0.7', spoof);
      assert.equal(r.status, 200);
      const got = JSON.parse(r.body) as Captured;
      assert.equal(got.method, 'GET');
      assert.equal(got.url, '/latest/meta-data/instance-id?x=1&y=2');
      assert.deepEqual(Object.keys(got.headers).sort(), ['host', 'x-forwarded-for', 'x-neutron-router-id', 'x-openstack-request-id', 'x-quantum-router-id']);
      // The request id is made here, the first hop, never taken from the guest.
      assert.match(String(got.headers['x-openstack-request-id']), /^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.notEqual(got.headers['x-openstack-request-id'], 'req-00000000-0000-0000-0000-000000000000');
      assert.equal(got.headers['x-forwarded-for'], '127.0.0.7');
      assert.equal(got.headers['x-neutron-router-id'], ROUTER);
      assert.equal(got.headers['x-quantum-router-id'], ROUTER);
      assert.equal(got.headers.host, '169.254.169.254');
      // Each header exactly once on the wire.
      assert.equal(got.rawHeaders.length, 10);
      // Agent-only headers do not reach the guest.
      assert.equal(r.headers['x-agent-secret'], undefined);
    });

    test('session tokens: the token headers pass on as sent; a token PUT with a guest-sent X-Forwarded-For is a 403 here', async () => {
      const before = agent.requests.length;
      const put = await guestGet(port, '/latest/api/token', '127.0.0.7', { 'X-aws-ec2-metadata-token-ttl-seconds': '300' }, 'PUT');
      assert.equal(put.status, 200);
      const got = JSON.parse(put.body) as Captured;
      assert.equal(got.method, 'PUT');
      assert.equal(got.headers['x-aws-ec2-metadata-token-ttl-seconds'], '300');
      const r = await guestGet(port, '/latest/meta-data/', '127.0.0.7', { 'X-aws-ec2-metadata-token': 'v1.abc' });
      assert.equal((JSON.parse(r.body) as Captured).headers['x-aws-ec2-metadata-token'], 'v1.abc');
      const n = agent.requests.length;
      assert.equal(n, before + 2);
      const relayed = await guestGet(port, '/latest/api/token', '127.0.0.7', { 'X-aws-ec2-metadata-token-ttl-seconds': '300', 'X-Forwarded-For': '203.0.113.9' }, 'PUT');
      assert.equal(relayed.status, 403);
      assert.equal(agent.requests.length, n, 'refused without an agent round trip');
      const dup = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: a\r\nX-aws-ec2-metadata-token: b\r\nConnection: close\r\n\r\n');
      assert.equal(dup.status, 400);
    });

    test('network proxies send the network id pair and never a router id', async () => {
      const r = await guestGet(netPort, '/openstack', '127.0.0.9', { 'X-Neutron-Router-ID': 'evil', 'x-quantum-router-id': 'evil' });
      assert.equal(r.status, 200);
      const got = JSON.parse(r.body) as Captured;
      assert.equal(got.headers['x-neutron-network-id'], NETWORK);
      assert.equal(got.headers['x-quantum-network-id'], NETWORK);
      assert.equal(got.headers['x-neutron-router-id'], undefined);
      assert.equal(got.headers['x-quantum-router-id'], undefined);
      assert.equal(got.headers['x-forwarded-for'], '127.0.0.9');
    });

    test('POST carries the body and only Content-Type/Content-Length', async () => {
      const r = await guestGet(port, '/openstack/2013-04-04/password', '127.0.0.1', { 'content-type': 'text/plain', 'x-instance-id': 'evil' }, 'POST', 'secret-password');
      const got = JSON.parse(r.body) as Captured;
      assert.equal(got.method, 'POST');
      assert.equal(got.body, 'secret-password');
      assert.equal(got.headers['content-type'], 'text/plain');
      assert.equal(got.headers['content-length'], '15');
      assert.equal(got.headers['x-instance-id'], undefined);
    });

    test('chunked guest bodies are re-sent with a Content-Length', async () => {
      const r = await rawRequest(port, 'POST /pw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n');
      assert.equal(r.status, 200);
      const got = JSON.parse(r.body) as Captured;
      assert.equal(got.body, 'abcde');
      assert.equal(got.headers['content-length'], '5');
      assert.equal(got.headers['transfer-encoding'], undefined);
    });

    test('absolute-form targets are reduced to path and query', async () => {
      assert.equal(upstreamPath('http://evil.example:81/latest/meta-data?a=1'), '/latest/meta-data?a=1');
      assert.equal(upstreamPath('*'), undefined);
      const r = await rawRequest(port, 'GET http://evil.example/latest/meta-data?q=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n');
      assert.equal(r.status, 200);
      assert.equal((JSON.parse(r.body) as Captured).url, '/latest/meta-data?q=1');
    });

    test('status mapping: known codes pass with body and content type, others become 500', async () => {
      for (const code of [200, 400, 401, 403, 404, 409, 500, 502, 503, 504]) {
        const r = await guestGet(port, `/status/${code}`);
        assert.equal(r.status, code, `status ${code}`);
        assert.equal(r.body, `body-${code}`);
        assert.equal(r.headers['content-type'], 'text/x-test');
      }
      for (const code of [201, 302, 418, 501]) {
        const r = await guestGet(port, `/status/${code}`);
        assert.equal(r.status, 500, `status ${code}`);
        assert.equal(r.body, UNKNOWN);
      }
    });

    test('keeps guest connections alive and reuses upstream connections', async () => {
      const before = agent.connections;
      const ka = new Agent({ keepAlive: true, maxSockets: 1 });
      const sockets = new Set<unknown>();
      for (let i = 0; i < 40; i++) {
        await new Promise<void>((resolve, reject) => {
          const req = request({ host: '127.0.0.1', port, path: `/n/${i}`, agent: ka }, (res) => {
            sockets.add(res.socket);
            res.resume();
            res.on('end', () => resolve());
          });
          req.on('error', reject);
          req.end();
        });
      }
      ka.destroy();
      assert.equal(sockets.size, 1, 'one guest connection for 40 requests');
      assert.ok(agent.connections - before <= 2, `upstream connections opened: ${agent.connections - before}`);
    });

    test('oversized headers get 431, malformed requests 400, and the proxy keeps serving', async () => {
      const big = await rawRequest(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`);
      assert.equal(big.status, 431);
      const fold = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n 5.6.7.8\r\n\r\n');
      assert.equal(fold.status, 400, 'obs-fold is rejected');
      const dupCl = await rawRequest(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab');
      assert.equal(dupCl.status, 400, 'conflicting Content-Length is rejected');
      const clte = await rawRequest(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
      assert.equal(clte.status, 400, 'CL+TE smuggling form is rejected');
      const garbage = await rawRequest(port, 'HELLO\r\n\r\n');
      assert.equal(garbage.status, 400);
      const big2 = await guestGet(port, '/x', '127.0.0.1', {}, 'POST', 'x'.repeat(2000));
      assert.equal(big2.status, 413);
      const ok = await guestGet(port, '/still-fine');
      assert.equal(ok.status, 200);
    });

    test('HEAD, Expect: 100-continue, a half-closed guest and pipelined requests', async () => {
      const head = await rawRequest(port, 'HEAD /latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.equal(head.status, 200);
      assert.equal(head.body, '');
      const cont = await new Promise<string>((resolve, reject) => {
        const s = connect(port, '127.0.0.1');
        let got = '';
        s.on('data', (d: Buffer) => {
          got += d.toString();
          if (got === 'HTTP/1.1 100 Continue\r\n\r\n') s.write('hello');
        });
        s.on('end', () => resolve(got));
        s.on('error', reject);
        s.write('POST /pw HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
      });
      assert.match(cont, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
      assert.match(cont, /"body":"hello"/);
      // A guest that shuts down its sending side right after the request still gets the answer.
      const half = await new Promise<string>((resolve, reject) => {
        const s = connect(port, '127.0.0.1');
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString()));
        s.on('end', () => resolve(got));
        s.on('error', reject);
        s.end('GET /half HTTP/1.1\r\nHost: x\r\n\r\n');
      });
      assert.match(half, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(half, /"url":"\/half"/);
      // Three pipelined requests in one write: three answers, in order.
      const piped = await new Promise<string>((resolve, reject) => {
        const s = connect(port, '127.0.0.1');
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString()));
        s.on('end', () => resolve(got));
        s.on('error', reject);
        s.write('GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p/2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      });
      assert.deepEqual([...piped.matchAll(/"url":"(\/p\/\d)"/g)].map((m) => m[1]), ['/p/1', '/p/2', '/p/3']);
    });

    test('fuzz: 400 mutated requests never crash the proxy nor smuggle a header to the agent', async () => {
      const base = 'POST /openstack/latest/password?a=b HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Instance-ID: evil\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello';
      const alphabet = ['\r', '\n', '\0', ' ', '\t', ':', ',', '\x7f', '\xff', 'X-Forwarded-For: 7.7.7.7\r\n', '\r\n', '\r\n\r\n', 'Transfer-Encoding: chunked\r\n', 'Content-Length: 0\r\n', '0\r\n\r\n', 'GET / HTTP/1.1\r\n'];
      let seed = 12345;
      const rnd = (n: number) => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return seed % n;
      };
      const before = agent.requests.length;
      const statuses = new Map<number, number>();
      for (let i = 0; i < 400; i++) {
        let m = base;
        for (let k = 0, n = 1 + rnd(4); k < n; k++) {
          const at = rnd(m.length);
          const op = rnd(3);
          if (op === 0) m = m.slice(0, at) + alphabet[rnd(alphabet.length)]! + m.slice(at);
          else if (op === 1) m = m.slice(0, at) + m.slice(at + 1 + rnd(4));
          else m = m.slice(0, at) + String.fromCharCode(rnd(256)) + m.slice(at + 1);
        }
        const r = await rawRequest(port, Buffer.from(m, 'latin1'), { timeoutMs: 1500, halfClose: true }).catch(() => ({ status: -1 }));
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      }
      const allowed = new Set(['host', 'x-forwarded-for', 'x-openstack-request-id', 'x-quantum-router-id', 'x-neutron-router-id', 'content-type', 'content-length']);
      for (const c of agent.requests.slice(before)) {
        for (const h of Object.keys(c.headers)) assert.ok(allowed.has(h), `header ${h} reached the agent`);
        assert.equal(c.headers['x-forwarded-for'], '127.0.0.1');
        assert.equal(c.headers['x-neutron-router-id'], ROUTER);
        assert.equal(c.rawHeaders.length / 2, new Set(c.rawHeaders.filter((_, i) => i % 2 === 0).map((h) => h.toLowerCase())).size, 'no duplicated header');
      }
      assert.ok((statuses.get(400) ?? 0) > 50, `statuses: ${JSON.stringify([...statuses])}`);
      assert.equal((await guestGet(port, '/still-alive')).status, 200);
    });

    test('a request dripped byte by byte is still parsed right', async () => {
      const req = 'GET /drip?x=1 HTTP/1.1\r\nHost: x\r\nX-Instance-ID: evil\r\nConnection: close\r\n\r\n';
      const got = await new Promise<string>((resolve, reject) => {
        const s = connect(port, '127.0.0.1');
        s.setNoDelay(true);
        let out = '';
        s.on('data', (d: Buffer) => (out += d.toString()));
        s.on('end', () => resolve(out));
        s.on('error', reject);
        s.on('connect', async () => {
          for (const ch of req) {
            s.write(ch);
            await sleep(2);
          }
        });
      });
      assert.match(got, /^HTTP\/1\.1 200 OK\r\n/);
      const body = JSON.parse(got.slice(got.indexOf('\r\n\r\n') + 4)) as Captured;
      assert.equal(body.url, '/drip?x=1');
      assert.equal(body.headers['x-instance-id'], undefined);
    });

    // Shared mode binds v6-only sockets (IPV6_V6ONLY), so :: and 0.0.0.0 can both be bound on one port; the
    // per-namespace proxy binds :: dual-stack, as node does.
    test(mode === 'shared' ? 'a v6-only :: listener next to 0.0.0.0 on the same port: each peer as it is' : 'IPv4-mapped peers are reported as IPv4 on a dual-stack bind', async (t) => {
      const p6 = await getFreePort();
      if (mode === 'shared') {
        let d6: RunningProxy;
        try {
          d6 = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--bind_address=::'], p6);
        } catch (e) {
          t.skip(`no IPv6 on loopback: ${String(e)}`);
          return;
        }
        const d4 = await start([`--network_id=${NETWORK}`, `--metadata_proxy_socket=${sock}`, '--bind_address=0.0.0.0'], p6);
        try {
          const v4 = JSON.parse((await guestGet(p6, '/x', '127.0.0.3')).body) as Captured;
          assert.equal(v4.headers['x-forwarded-for'], '127.0.0.3');
          assert.equal(v4.headers['x-neutron-network-id'], NETWORK);
          const v6 = await new Promise<Captured>((resolve, reject) => {
            const req = request({ host: '::1', port: p6, path: '/x6', agent: false }, (res) => {
              let b = '';
              res.setEncoding('utf8').on('data', (c: string) => (b += c));
              res.on('end', () => resolve(JSON.parse(b) as Captured));
            });
            req.on('error', reject);
            req.end();
          });
          assert.equal(v6.headers['x-forwarded-for'], '::1');
          assert.equal(v6.headers['x-neutron-router-id'], ROUTER);
        } finally {
          await d4.stop();
          await d6.stop();
        }
        return;
      }
      let d: RunningProxy;
      try {
        d = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--bind_address=::'], p6);
      } catch (e) {
        t.skip(`no IPv6 on loopback: ${String(e)}`);
        return;
      }
      try {
        const r = await guestGet(p6, '/x', '127.0.0.3');
        assert.equal((JSON.parse(r.body) as Captured).headers['x-forwarded-for'], '127.0.0.3');
      } finally {
        await d.stop();
      }
    });
  });

  describe(`quantum-ns-metadata-proxy (${mode}): failures and limits`, () => {
    const dir = tempDir();
    const sock = join(dir.path, 'agent.sock');
    after(() => dir.rm());

    test('agent not there → fast 503; agent back → served again without restarting the proxy', async () => {
      const port = await getFreePort();
      const proxy = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`], port);
      try {
        const t0 = Date.now();
        const r = await guestGet(port, '/latest');
        assert.equal(r.status, 503);
        assert.ok(Date.now() - t0 < 1000, `503 took ${Date.now() - t0} ms`);
        let agent = await captureServer(sock, agentBehaviour);
        assert.equal((await guestGet(port, '/latest')).status, 200);
        // Keep-alive upstream connections die with the agent; the next requests must not fail for it.
        const ka = new Agent({ keepAlive: true });
        await agent.close();
        agent = await captureServer(sock, agentBehaviour);
        for (let i = 0; i < 5; i++) assert.equal((await guestGet(port, `/again/${i}`)).status, 200);
        ka.destroy();
        await agent.close();
        assert.equal((await guestGet(port, '/latest')).status, 503);
      } finally {
        await proxy.stop();
      }
    });

    test('a silent agent → 504 after timeout_server, never a hang', async () => {
      const port = await getFreePort();
      const agent = await captureServer(sock, agentBehaviour);
      const proxy = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--timeout_server=1'], port);
      try {
        const t0 = Date.now();
        const r = await guestGet(port, '/slow/3000');
        assert.equal(r.status, 504);
        const took = Date.now() - t0;
        assert.ok(took >= 900 && took < 2500, `504 after ${took} ms`);
        assert.equal((await guestGet(port, '/slow/10')).status, 200);
      } finally {
        await proxy.stop();
        await agent.close();
      }
    });

    test('slow clients are cut off after timeout_http_request without affecting others; maxconn bounds connections', async () => {
      const port = await getFreePort();
      const agent = await captureServer(sock, agentBehaviour);
      const proxy = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--timeout_http_request=1', '--maxconn=3'], port);
      try {
        // Slowloris: half a request, never finished.
        const slow = connect(port, '127.0.0.1');
        slow.write('GET /latest HTTP/1.1\r\nHost: x\r\n');
        let answer = '';
        slow.on('data', (d: Buffer) => (answer += d.toString()));
        const closed = new Promise<number>((r) => {
          const t0 = Date.now();
          slow.on('close', () => r(Date.now() - t0));
          slow.on('error', () => {});
        });
        assert.equal((await guestGet(port, '/other')).status, 200, 'others are served meanwhile');
        const took = await closed;
        assert.ok(took < 4000, `slow client cut after ${took} ms`);
        assert.match(answer, /^HTTP\/1\.1 408 /);

        // maxconn=3: three held connections; the fourth waits unread (as in haproxy's backlog) and is served
        // as soon as one of the three closes; beyond another maxconn waiting, connections are closed at once.
        const held = await Promise.all([0, 1, 2].map(() => new Promise<import('node:net').Socket>((res) => {
          const s = connect(port, '127.0.0.1', () => res(s));
          s.on('error', () => {});
        })));
        await sleep(100);
        let fourthDone = false;
        const fourth = rawRequest(port, 'GET /fourth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { timeoutMs: 5000 }).finally(() => (fourthDone = true));
        const waiting = await Promise.all([0, 1].map(() => new Promise<import('node:net').Socket>((res) => {
          const s = connect(port, '127.0.0.1', () => res(s));
          s.on('error', () => {});
        })));
        await sleep(300);
        assert.equal(fourthDone, false, 'the fourth waits for a slot');
        const overflow = await rawRequest(port, 'GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { timeoutMs: 3000 }).catch((e: Error) => e);
        assert.ok(overflow instanceof Error || overflow.status === 0, 'beyond maxconn waiting, closed at once');
        held[0]!.destroy();
        const r4 = await fourth;
        assert.equal(r4.status, 200);
        assert.match(r4.body, /"url":"\/fourth"/);
        for (const s of [...held, ...waiting]) s.destroy();
        await waitFor(async () => (await guestGet(port, '/after')).status === 200, 5000, 100, 'a free slot');
      } finally {
        await proxy.stop();
        await agent.close();
      }
    });
  });

  describe(`quantum-ns-metadata-proxy (${mode}): quiet after a burst`, () => {
    const dir = tempDir();
    const sock = join(dir.path, 'agent.sock');
    after(() => dir.rm());

    test('closes its idle agent connections and compacts its heap once load stops, then serves on', async () => {
      const agent = await captureServer(sock, agentBehaviour);
      // Like the real agent (65 s): the agent side would not close them within this test.
      agent.server.keepAliveTimeout = 60_000;
      const port = await getFreePort();
      const proxy = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--debug'], port);
      const open = () => new Promise<number>((resolve, reject) => agent.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
      try {
        // 1000 requests (the compaction threshold) from 8 keep-alive guests at once: several agent connections.
        const ka = new Agent({ keepAlive: true, maxSockets: 8 });
        await keepAliveBurst(port, ka, 1000, '/burst');
        ka.destroy();
        const busy = await open();
        assert.ok(busy >= 2, `agent connections kept alive after the burst: ${busy}`);
        assert.doesNotMatch(proxy.output(), /memory compacted/, 'nothing happens while requests still come');
        const t0 = Date.now();
        await waitFor(async () => (await open()) === 0, 10_000, 100, 'the idle agent connections to close');
        const quietMs = Date.now() - t0;
        assert.ok(quietMs > 3000, `closed after the quiet period, not at once (${quietMs} ms)`);
        await waitFor(() => /memory compacted/.test(proxy.output()), 2000, 50, 'the compaction log line');
        const line = proxy.output().split('\n').find((l) => l.includes('memory compacted'))!;
        const rec = JSON.parse(line) as { requests: number; closed_upstream: number; ms: number };
        assert.ok(rec.requests >= 1000, line);
        assert.equal(rec.closed_upstream, busy, line);
        // The next request opens a fresh agent connection and is served as before.
        const r = await guestGet(port, '/after/quiet');
        assert.equal(r.status, 200);
        assert.equal(JSON.parse(r.body).url, '/after/quiet');
      } finally {
        await proxy.stop();
        await agent.close();
      }
    });
  });

  describe(`quantum-ns-metadata-proxy (${mode}): half-closed guests`, () => {
    const dir = tempDir();
    const sock = join(dir.path, 'agent.sock');
    after(() => dir.rm());

    test('a guest that never closes after "Connection: close" frees its maxconn slot after timeout_client', async () => {
      const port = await getFreePort();
      const agent = await captureServer(sock, agentBehaviour);
      const proxy = await start([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--maxconn=1', '--timeout_client=1'], port);
      try {
        // startProxy's readiness probe held the only slot for a moment; wait until it is free again.
        await waitFor(async () => (await guestGet(port, '/warm').catch(() => ({ status: 0 }))).status === 200, 5000, 100, 'a free slot');
        // Open the lingering guest (retrying while the probe's connection still holds the slot).
        const linger = () =>
          new Promise<{ s: import('node:net').Socket; answer: string }>((resolve) => {
            const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
            let answer = '';
            s.on('data', (d: Buffer) => (answer += d.toString()));
            s.on('error', () => {});
            // 'end': the proxy answered and ended its side, ours stays open. 'close': refused.
            s.once('end', () => resolve({ s, answer }));
            s.once('close', () => resolve({ s, answer }));
            s.write('GET /linger HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
          });
        const lingering = await waitFor(async () => {
          const l = await linger();
          if (/^HTTP\/1\.1 200 OK/.test(l.answer) && !l.s.destroyed) return l.s;
          l.s.destroy();
          await sleep(100);
          return undefined;
        }, 5000, 0, 'the lingering guest to be served');
        const t0 = Date.now();
        await waitFor(async () => (await guestGet(port, '/next').catch(() => ({ status: 0 }))).status === 200, 5000, 100, 'the slot to be freed');
        assert.ok(Date.now() - t0 < 4000);
        lingering.destroy();
      } finally {
        await proxy.stop();
        await agent.close();
      }
    });
  });
}

describe('quantum-ns-metadata-proxy: command line and daemon', () => {
  const dir = tempDir();
  const sock = join(dir.path, 'metadata_proxy');
  let agent: UnixServer;
  before(async () => {
    agent = await captureServer(sock, agentBehaviour);
    // A proxy running as nobody must be able to reach the socket (what metadata_proxy_socket_mode is for).
    chmodSync(dir.path, 0o755);
    chmodSync(sock, 0o666);
  });
  after(async () => {
    await agent.close();
    dir.rm();
  });

  test('exactly one of --router_id / --network_id, known flags only', async () => {
    let r = await runCli(['--nodaemonize']);
    assert.equal(r.code, 1);
    assert.match(r.out, /Either one of parameter network_id or router_id must be passed in/);
    r = await runCli(['--nodaemonize', '--router_id=a', '--network_id=b']);
    assert.equal(r.code, 1);
    assert.match(r.out, /network_id or router_id/);
    r = await runCli(['--router_id=a', '--no-such-flag']);
    assert.equal(r.code, 1);
    assert.match(r.out, /unrecognized arguments: --no-such-flag/);
    r = await runCli(['--router_id=a', '--metadata_port=http']);
    assert.equal(r.code, 1);
    assert.match(r.out, /--metadata_port="http": not an integer/);
    r = await runCli(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.out, /--metadata_proxy_socket/);
    assert.match(r.out, /--daemonize, --nodaemonize/);
  });

  test('--shared: no router/network id, only in the foreground, only under an agent', async () => {
    let r = await runCli(['--shared', '--nodaemonize', `--router_id=${ROUTER}`]);
    assert.equal(r.code, 1);
    assert.match(r.out, /--shared serves the namespaces its agent hands over: --router_id and --network_id do not apply/);
    r = await runCli(['--shared', `--state_path=${dir.path}`]);
    assert.equal(r.code, 1);
    assert.match(r.out, /pass --nodaemonize/);
    r = await runCli(['--shared', '--nodaemonize', `--state_path=${dir.path}`]);
    assert.equal(r.code, 1);
    assert.match(r.out, /--shared must be started by its agent: an IPC channel on fd 3 and a descriptor socket on fd 4/);
    r = await runCli(['--shared', '--nodaemonize', '--shared_name=../x']);
    assert.equal(r.code, 1);
    assert.match(r.out, /--shared_name="\.\.\/x": letters, digits/);
  });

  test('flag parsing: dashed log flags, --noX, separate values', () => {
    const p = parseFlags(proxyOpts, ['--router_id', 'r1', '--log-file=x.log', '--log-dir', '/tmp/l', '--nodaemonize', '--debug', '--verbose'], { prog: 'p', description: '', aliases: proxyAliases });
    assert.ok('conf' in p);
    const c = p.conf.DEFAULT;
    assert.equal(c.router_id, 'r1');
    assert.equal(c.log_file, 'x.log');
    assert.equal(c.log_dir, '/tmp/l');
    assert.equal(c.daemonize, false);
    assert.equal(c.debug, true);
    assert.equal(c.metadata_port, 9697);
    assert.equal(c.bind_address, '0.0.0.0');
    assert.equal(c.maxconn, 1024);
    assert.equal(c.timeout_http_request, 30);
    assert.equal(c.timeout_server, 32);
  });

  test('--daemonize detaches, writes the pid file and the log; a live twin is refused; SIGTERM cleans up', async () => {
    const port = await getFreePort();
    const pidFile = join(dir.path, 'external', 'pids', `${ROUTER}.pid`);
    const logDir = join(dir.path, 'log');
    const args = [`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, `--pid_file=${pidFile}`, `--metadata_port=${port}`, `--log-dir=${logDir}`, `--state_path=${dir.path}`];
    const t0 = Date.now();
    const r = await runCli(args);
    assert.equal(r.code, 0, r.out);
    assert.ok(Date.now() - t0 < 5000);
    await waitForListen({ host: '127.0.0.1', port }, 1000);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    assert.ok(alive(pid));
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      assert.match(cmdline, new RegExp(ROUTER));
      assert.match(cmdline, /--max-semi-space-size=1\0/, 'the detached child runs with a small young generation');
      assert.match(cmdline, /--single-threaded\0/, 'and without V8 background threads');
      assert.equal((await guestGet(port, '/latest')).status, 200);
      // Same uuid, live pid → refused.
      const twin = await runCli([...args.filter((a) => !a.startsWith('--metadata_port')), `--metadata_port=${await getFreePort()}`]);
      assert.equal(twin.code, 1);
      assert.match(twin.out, /already exist\. Daemon already running\?/);
      const logFile = join(logDir, `quantum-ns-metadata-proxy-${ROUTER}.log`);
      await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('metadata proxy listening'), 3000, 50, 'the log line');
      // logrotate: the file is moved away, SIGHUP makes the proxy write a new one (and not die).
      renameSync(logFile, `${logFile}.1`);
      process.kill(pid, 'SIGHUP');
      await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('log file reopened'), 3000, 50, 'the reopened log');
      assert.ok(alive(pid));
      // In-flight request survives SIGTERM.
      const slow = guestGet(port, '/slow/700');
      await sleep(150);
      process.kill(pid, 'SIGTERM');
      const sr = await slow;
      assert.equal(sr.status, 200, 'in-flight request completed');
      await waitFor(() => !alive(pid), 5000, 50, 'proxy exit');
      assert.equal(existsSync(pidFile), false, 'pid file removed');
    } finally {
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  test('a stale pid file (live pid without the uuid) does not block the start', async () => {
    const port = await getFreePort();
    const pidFile = join(dir.path, 'stale.pid');
    writeFileSync(pidFile, `${process.pid}\n`); // this test runner: alive, but not a proxy for ROUTER
    const proxy = await startProxy([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, `--pid_file=${pidFile}`], port);
    try {
      assert.equal(Number(readFileSync(pidFile, 'utf8')), proxy.pid);
    } finally {
      await proxy.stop();
    }
    assert.equal(existsSync(pidFile), false);
  });

  test('drops to --metadata_proxy_user/group after binding; unknown names are a clear error', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root');
    const port = await getFreePort();
    const proxy = await startProxy([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--metadata_proxy_user=65534', '--metadata_proxy_group=65534'], port);
    try {
      // Listening comes first, the drop right after it.
      const status = await waitFor(() => {
        const st = readFileSync(`/proc/${proxy.pid}/status`, 'utf8');
        return /^Uid:\s+65534\s/m.test(st) && st;
      }, 3000, 20, 'the privilege drop');
      assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534/m);
      assert.match(status, /^Gid:\s+65534\s+65534\s+65534\s+65534/m);
      assert.match(status, /^Groups:\s+65534\s*$/m);
      assert.equal((await guestGet(port, '/latest')).status, 200);
    } finally {
      await proxy.stop();
    }
    const bad = await runCli(['--nodaemonize', `--router_id=${ROUTER}`, `--metadata_port=${await getFreePort()}`, '--metadata_proxy_user=no-such-user-qm']);
    assert.equal(bad.code, 1);
    assert.match(bad.out, /cannot switch to user "no-such-user-qm"/);
    const badD = await runCli([`--router_id=${ROUTER}`, `--metadata_port=${await getFreePort()}`, '--metadata_proxy_group=no-such-group-qm']);
    assert.equal(badD.code, 1, 'the daemonizing parent reports the child failure');
    assert.match(badD.out, /cannot switch to group "no-such-group-qm"/);
  });

  test('the agents start the CommonJS build with the small-footprint flags; the bin shim runs it too', async () => {
    const prefix = proxyCommandPrefix(undefined);
    assert.deepEqual(prefix.slice(1, -1), [...PROXY_NODE_FLAGS]);
    const main = prefix.at(-1)!;
    assert.match(main, /\/proxy\/ns-proxy\/main\.js$/);
    assert.ok(existsSync(main), main);
    // Without this marker node would load dist/proxy as ES modules (the repository's package.json says "module").
    assert.equal((JSON.parse(readFileSync(join(main, '../../package.json'), 'utf8')) as { type: string }).type, 'commonjs');
    const help = await runArgv([process.execPath, join(repoRoot, 'bin', 'quantum-ns-metadata-proxy.cjs'), '--help']);
    assert.equal(help.code, 0, help.out);
    assert.match(help.out, /--router_id/);
  });

  test('a port already in use is reported and exits 1', async () => {
    const port = await getFreePort();
    const first = await startProxy([`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`], port);
    try {
      const r = await runCli(['--nodaemonize', `--network_id=${NETWORK}`, `--metadata_port=${port}`]);
      assert.equal(r.code, 1);
      assert.match(r.out, /cannot listen on 0\.0\.0\.0:\d+: .*EADDRINUSE/);
    } finally {
      await first.stop();
    }
  });
});

describe('quantum-ns-metadata-proxy: garbage collection under load', () => {
  const dir = tempDir();
  const sock = join(dir.path, 'agent.sock');
  after(() => dir.rm());

  /** Bytes each young GC promoted (V8's --trace-gc-nvp lines in `out`, from `from` on). */
  const promotedPerYoungGc = (out: string, from: number): number[] =>
    out
      .slice(from)
      .split('\n')
      .filter((l) => / gc=s /.test(l))
      .map((l) => Number(/ promoted=(\d+)/.exec(l)?.[1] ?? NaN));

  // A request's objects die young, before and after the compaction's full GCs. Its in-flight bookkeeping once
  // was a Set, whose rebuilt tables (once one was old) kept each other and the requests in them alive through
  // young GCs: ~75 KB promoted per young GC and a full GC a second, for good (src/ns-proxy/slot-list.ts).
  test('after the quiet-period compaction, young GCs under keep-alive load promote (almost) nothing', async () => {
    const agent = await captureServer(sock, agentBehaviour);
    const port = await getFreePort();
    const argv = [...PROXY_NODE_FLAGS, '--trace-gc-nvp', defaultProxyMain, '--nodaemonize', `--metadata_port=${port}`, `--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--debug'];
    const p = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitForListen({ host: '127.0.0.1', port }, 10_000);
      const ka = new Agent({ keepAlive: true, maxSockets: 8 });
      await keepAliveBurst(port, ka, 1000, '/gc');
      await waitFor(() => /memory compacted/.test(out), 10_000, 50, 'the quiet-period compaction');
      const from = out.length;
      await keepAliveBurst(port, ka, 4000, '/gc');
      ka.destroy();
      const promoted = promotedPerYoungGc(out, from);
      assert.ok(promoted.length >= 5, `young GCs during 4000 requests: ${promoted.length}`);
      const sorted = [...promoted].sort((a, b) => a - b);
      const median = sorted[sorted.length >> 1]!;
      assert.ok(median < 4 * 1024, `bytes promoted per young GC after the compaction: median ${median} (${promoted.join(' ')})`);
    } finally {
      p.kill('SIGTERM');
      await new Promise<void>((r) => (p.exitCode !== null ? r() : p.once('exit', () => r())));
      await agent.close();
    }
  });
});
