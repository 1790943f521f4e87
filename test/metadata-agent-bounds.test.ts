// Issue 13, the agent's side: work ends with the guest and the queue toward Nova is bounded. Nova is the real
// nova-api made slow by the one thing in it that waits on a peer: a DynamicJSON vendordata target (a small
// HTTP server here) that holds its answers, so /openstack/latest/vendor_data2.json takes as long as we like.
// With wsgi_default_pool_size = 4 and metadata_queue_size = 8, a flood gets fast 503s, Nova sees 4 requests at
// a time, the agent's memory stays flat; a proxy that leaves ends the Nova request (nova-api logs the close).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, request, type ServerResponse, type Server } from 'node:http';
import { readLog, startChain, type Chain, type Reply } from './helpers/chain.js';
import { sleep, waitFor } from './helpers/proc.js';
import { sample, scrape } from './helpers/prom.js';

const POOL = 4;
const QUEUE = 8;
const PATH = '/openstack/latest/vendor_data2.json';

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

describe('metadata agent bounds toward Nova', () => {
  let c: Chain;
  let target: Server;
  const held: ServerResponse[] = [];
  let hold = true;
  let seen = 0;

  const releaseAll = () => {
    for (const r of held.splice(0)) r.end('{"slow": true}');
  };

  before(async () => {
    target = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        seen++;
        res.writeHead(200, { 'content-type': 'application/json' });
        if (hold) held.push(res);
        else res.end('{"slow": false}');
      });
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
    const tport = (target.address() as { port: number }).port;
    c = await startChain({
      tenants: ['tenant-a'],
      agentIni: { DEFAULT: { wsgi_default_pool_size: POOL, metadata_queue_size: QUEUE } },
      agentMetrics: true,
      novaIni: { api: { vendordata_providers: 'StaticJSON,DynamicJSON', vendordata_dynamic_targets: `slow@http://127.0.0.1:${tport}/`, vendordata_dynamic_read_timeout: 60 } },
    });
    await c.boot('guest-a', 'tenant-a', '10.9.0.5');
  });
  after(async () => {
    hold = false;
    releaseAll();
    await c?.stop();
    target?.closeAllConnections();
    target?.close();
  });

  test('a flood while Nova is slow: fast 503s beyond pool + queue, Nova sees only the pool, one log line, memory flat', async () => {
    hold = true;
    seen = 0;
    // Warm up (first lookups, connections) and take the idle figure.
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/instance-id')).status, 200);
    const idle = rssKb(c.agent.pid);
    const t0 = Date.now();
    const times: number[] = [];
    const all: Promise<Reply>[] = [];
    for (let i = 0; i < 100; i++) {
      all.push(
        c.viaAgent('tenant-a', '10.9.0.5', PATH).then((r) => {
          times.push(Date.now() - t0);
          return r;
        }),
      );
    }
    // Everything beyond pool + queue is answered while Nova still holds the rest.
    await waitFor(() => times.length >= 100 - POOL - QUEUE, 10_000, 20, 'the 503s');
    const fast = Date.now() - t0;
    await sleep(300);
    assert.equal(times.length, 100 - POOL - QUEUE, 'the others wait: pool + queue');
    assert.equal(seen, POOL, 'Nova (its vendordata target) has exactly the pool in progress');
    // A sustained flood on top: still bounded.
    for (let wave = 0; wave < 10; wave++) {
      const rs = await Promise.all(Array.from({ length: 200 }, () => c.viaAgent('tenant-a', '10.9.0.5', PATH)));
      assert.ok(rs.every((r) => r.status === 503));
    }
    const flooded = rssKb(c.agent.pid);
    assert.equal(seen, POOL);
    const m = await scrape(c.agentMetricsPort!);
    assert.equal(sample(m, 'quantum_metadata_agent_nova_requests_in_flight'), POOL);
    assert.equal(sample(m, 'quantum_metadata_agent_queue_length'), QUEUE);
    assert.equal(sample(m, 'quantum_metadata_agent_nova_errors_total', { reason: 'queue_full' }), 100 - POOL - QUEUE + 2000);
    hold = false;
    releaseAll();
    const first = await Promise.all(all);
    const codes = first.map((r) => r.status);
    assert.equal(codes.filter((s) => s === 503).length, 100 - POOL - QUEUE);
    assert.equal(codes.filter((s) => s === 200).length, POOL + QUEUE, 'the queued ones are served once Nova answers');
    const busy = first.find((r) => r.status === 503)!;
    assert.equal(busy.headers['retry-after'], '1');
    assert.ok(fast < 3000, `the 503s took ${fast} ms`);
    const lines = await waitFor(() => readLog(c.agentLog).split('\n').filter((l) => l.includes('metadata requests refused (503)')), 3000, 50, 'the refusal line');
    assert.ok(lines.length >= 1 && lines.length <= 2, `rate-limited: ${lines.length} lines for ${100 - POOL - QUEUE + 2000} refusals`);
    const growthMb = (flooded - idle) / 1024;
    console.log(`# agent RSS idle ${Math.round(idle / 1024)} MB, after 2088 refused requests ${Math.round(flooded / 1024)} MB (+${growthMb.toFixed(1)} MB); 503s for the first 88 within ${fast} ms`);
    assert.ok(growthMb < 48, `agent RSS grew ${growthMb.toFixed(1)} MB`);
  });

  test('a proxy that closes its connection ends the Nova request behind it, and frees its slot', async () => {
    hold = true;
    seen = 0;
    const ids = Array.from({ length: POOL }, () => `req-${randomUUID()}`);
    const reqs = ids.map((rid) => {
      const n = c.nets['tenant-a']!;
      const req = request({ socketPath: c.sock, path: PATH, agent: false, headers: { host: '169.254.169.254', 'x-forwarded-for': '10.9.0.5', 'x-neutron-router-id': n.routerId, 'x-quantum-router-id': n.routerId, 'x-openstack-request-id': rid } });
      req.on('error', () => undefined);
      req.end();
      return req;
    });
    await waitFor(() => seen >= POOL, 10_000, 20, 'the requests at Nova');
    for (const r of reqs) r.destroy();
    // Nova's side saw each connection close before its answer (its line for that request id says so).
    for (const rid of ids) {
      await waitFor(() => readLog(c.novaLog).split('\n').some((l) => l.includes(rid) && l.includes('the client closed the connection before the answer')), 5000, 50, `nova's close line for ${rid}`);
      assert.ok(readLog(c.agentLog).split('\n').some((l) => l.includes(rid) && l.includes('Nova request aborted')), `agent line for ${rid}`);
    }
    assert.equal(sample(await scrape(c.agentMetricsPort!), 'quantum_metadata_agent_client_aborts_total'), POOL);
    // The slots are free again: a full pool of new requests reaches Nova at once, while it still holds.
    const again = Array.from({ length: POOL }, () => c.viaAgent('tenant-a', '10.9.0.5', PATH));
    await waitFor(() => seen >= 2 * POOL, 10_000, 20, 'the new requests at Nova');
    hold = false;
    releaseAll();
    assert.deepEqual((await Promise.all(again)).map((r) => r.status), Array(POOL).fill(200));
  });
});
