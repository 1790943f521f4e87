// The proxy's one sweeper visits only the listeners with something to time out: a shared proxy's idle
// namespaces (most of its thousand) are not walked every 250 ms, and a listener that takes a connection again
// has its deadlines enforced as before. In process, over real sockets and a real agent stand-in.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createLiteLogger } from '../src/common/lite-log.js';
import { NamespaceListener, ProxyRuntime, type GuestLimits } from '../src/ns-proxy/proxy.js';
import { captureServer, guestGet, rawRequest, statusSlowOrEcho, tempDir, waitFor, type UnixServer } from './helpers/mdpath.js';

const LISTENERS = 200;

describe('ProxyRuntime: the sweeper visits listeners with connections only', () => {
  const dir = tempDir('qm-sweep-');
  const log = createLiteLogger({ name: 'sweep-test', path: join(dir.path, 'proxy.log') });
  const limits: GuestLimits = {
    timeoutHttpRequest: 400,
    timeoutClient: 1000,
    timeoutKeepAlive: 1000,
    maxconn: 4,
    maxHeaderSize: 8192,
    maxBodySize: 1024,
    // Entries expire after 2 × 300 ms: a listener stays swept while its limiter remembers a source.
    rateLimit: { ipVersions: [4], baseWindowMs: 300, baseLimit: 1000, burstWindowMs: 300, burstLimit: 1000 },
  };
  let agent: UnixServer;
  let rt: ProxyRuntime;
  const ls: NamespaceListener[] = [];
  const ports: number[] = [];

  before(async () => {
    const sock = join(dir.path, 'agent.sock');
    agent = await captureServer(sock, (c, res) => statusSlowOrEcho(c, res, 'body', {}));
    rt = new ProxyRuntime({ socketPath: sock, timeoutServer: 5000, upstreamConnections: 8, retries: 1 }, log);
    for (let i = 0; i < LISTENERS; i++) {
      const l = new NamespaceListener(rt, limits, { routerId: randomUUID() });
      ports.push(await l.listen({ host: '127.0.0.1', port: 0 }));
      ls.push(l);
    }
  });
  after(async () => {
    await Promise.all(ls.map((l) => l.close(0)));
    rt?.close();
    await agent?.close();
    await log.close();
    dir.rm();
  });

  test('idle listeners leave the sweep; one that takes a connection is swept again, its request deadline holds', async () => {
    assert.equal(rt.sweeping, 0, 'no listener has had a connection yet');
    // Every listener answers once, as a shared proxy's namespaces do when their guests boot.
    for (let i = 0; i < LISTENERS; i += 50) await Promise.all(ports.slice(i, i + 50).map((p) => guestGet(p, '/status/200').then((r) => assert.equal(r.status, 200))));
    assert.ok(rt.sweeping > LISTENERS / 2, `listeners with guests or limiter entries are swept (${rt.sweeping})`);
    // Guests gone, limiter entries expired (once a second): nothing left to visit.
    await waitFor(() => rt.sweeping === 0, 5000, 50, 'every idle listener out of the sweep');

    // A guest that never finishes its head on an idle listener: still 408 after timeout_http_request.
    const t0 = Date.now();
    const slow = rawRequest(ports[137]!, 'GET /status/200 HTTP/1.1\r\nHost: 169.254.169.254\r\n', { timeoutMs: 5000 });
    await waitFor(() => rt.sweeping === 1, 1000, 10, 'the listener with a connection in the sweep');
    const r = await slow;
    assert.equal(r.status, 408);
    assert.ok(Date.now() - t0 >= limits.timeoutHttpRequest, 'not before the deadline');
    await waitFor(() => rt.sweeping === 0, 5000, 50, 'that listener out of the sweep again');
    // And it serves on.
    assert.equal((await guestGet(ports[137]!, '/status/200')).status, 200);
  });
});
