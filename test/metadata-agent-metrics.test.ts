// The metadata agent's metrics ([metrics] listen), scraped from the real process while real requests go
// through it to the real nova-api: requests by kind and status, per router and per network, the lookup cache,
// Nova's latency, Nova's failures by reason (404, unreachable); and with metadata_workers = 2 the primary
// serving both workers' counts summed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startChain, type Chain } from './helpers/chain.js';
import { sample, scrape } from './helpers/prom.js';

const P = 'quantum_metadata_agent_';

describe('metadata agent metrics', () => {
  let c: Chain;
  let a: string;

  before(async () => {
    c = await startChain({ tenants: ['tenant-a', 'tenant-b'], agentMetrics: true, agentIni: { cache: { enabled: true, expiration_time: 30 } } });
    a = await c.boot('guest-a', 'tenant-a', '10.9.0.5');
    await c.boot('guest-b', 'tenant-b', '10.9.0.7');
  });
  after(async () => {
    await c?.stop();
  });

  test('counters move with real requests', async () => {
    const port = c.agentMetricsPort!;
    const ra = c.nets['tenant-a']!.routerId;
    const nb = c.nets['tenant-b']!.networkId;
    const before = await scrape(port);
    assert.equal(sample(before, `${P}requests_total`, { kind: 'router', status: '200' }) ?? 0, 0);
    assert.equal(sample(before, `${P}nova_requests_in_flight`), 0);
    for (let i = 0; i < 3; i++) {
      const r = await c.viaAgent('tenant-a', '10.9.0.5', '/openstack/latest/meta_data.json');
      assert.equal((JSON.parse(r.body) as { uuid: string }).uuid, a);
    }
    assert.equal((await c.viaAgent('tenant-b', '10.9.0.7', '/latest/meta-data/hostname', { network: true })).status, 200);
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/no-such-key')).status, 404, "Nova's 404");
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.99', '/latest/meta-data/')).status, 404, 'no port: the agent answers, Nova is not asked');
    const t = await scrape(port);
    assert.equal(sample(t, `${P}requests_total`, { kind: 'router', status: '200' }), 3);
    assert.equal(sample(t, `${P}requests_total`, { kind: 'router', status: '404' }), 2);
    assert.equal(sample(t, `${P}requests_total`, { kind: 'network', status: '200' }), 1);
    assert.equal(sample(t, `${P}router_requests_total`, { router_id: ra }), 4, 'the three 200s and the Nova 404; not the portless address');
    assert.equal(sample(t, `${P}network_requests_total`, { network_id: nb }), 1);
    // The first lookups of guest-a and guest-b ask quantum-server for everything; guest-a's next three hit the
    // cache, and so does the portless address behind the same router (its router's networks are cached).
    assert.equal(sample(t, `${P}lookup_cache_misses_total`), 2);
    assert.equal(sample(t, `${P}lookup_cache_hits_total`), 4);
    assert.equal(sample(t, `${P}nova_request_duration_seconds_count`), 5);
    assert.equal(sample(t, `${P}nova_errors_total`, { reason: 'not_found' }), 1);
    assert.equal(sample(t, `${P}nova_errors_total`, { reason: 'unreachable' }) ?? 0, 0);
    assert.ok((sample(t, `${P}process_resident_memory_bytes`) ?? 0) > 0, 'the process metrics');
    // Nova goes away: 503 to the guest, counted as unreachable.
    await c.nova.stop();
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/instance-id')).status, 503);
    const t2 = await scrape(port);
    assert.equal(sample(t2, `${P}nova_errors_total`, { reason: 'unreachable' }), 1);
    assert.equal(sample(t2, `${P}requests_total`, { kind: 'router', status: '503' }), 1);
  });
});

describe('metadata agent metrics with metadata_workers = 2', () => {
  let c: Chain;

  before(async () => {
    c = await startChain({ tenants: ['tenant-a'], agentMetrics: true, agentIni: { DEFAULT: { metadata_workers: 2 } } });
    await c.boot('guest-a', 'tenant-a', '10.9.0.5');
  });
  after(async () => {
    await c?.stop();
  });

  test("the primary serves the workers' counts summed", async () => {
    for (let i = 0; i < 10; i++) assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/hostname')).status, 200);
    const t = await scrape(c.agentMetricsPort!);
    assert.equal(sample(t, `${P}requests_total`, { kind: 'router', status: '200' }), 10);
    assert.equal(sample(t, `${P}router_requests_total`, { router_id: c.nets['tenant-a']!.routerId }), 10);
    const names = t.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]);
    assert.equal(new Set(names).size, names.length, 'every family once');
  });
});
