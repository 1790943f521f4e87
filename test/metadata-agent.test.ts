// quantum-metadata-agent: Neutron's test_agent.py checklist (reference §8) against a real quantum-server.
// Nova's side is a real HTTP server on loopback that records what it receives and answers the status a
// path asks for (the real nova-api cannot be made to answer 302 or 409; the full chain with the real
// nova-api is test/metadata-path.test.ts).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { request } from 'node:http';
import { join } from 'node:path';
import { loadConfig } from '../src/common/config.js';
import { ConfigError } from '../src/common/errors.js';
import { signInstanceId } from '../src/common/hmac.js';
import { createLogger } from '../src/common/log.js';
import { QuantumClient, type Filters, type Port } from '../src/common/quantum-client.js';
import { startMetadataAgent, type RunningAgent } from '../src/metadata-agent/app.js';
import { MetadataProxyHandler, readProxyHeaders, INTERNAL_ERROR, UNKNOWN_ERROR } from '../src/metadata-agent/handler.js';
import { CacheInvalidator } from '../src/metadata-agent/invalidation.js';
import { InstanceLookup, ipv6Groups, isIPv6LinkLocal, macFromEui64, unmapAddress } from '../src/metadata-agent/lookup.js';
import { NovaClient } from '../src/metadata-agent/nova.js';
import { agentSpec, resolveAgentConf } from '../src/metadata-agent/opts.js';
import { StateReporter } from '../src/metadata-agent/report.js';
import { ALL_MODE, GROUP_MODE, USER_MODE, prepareSocketPath, socketMode } from '../src/metadata-agent/socket.js';
import { captureServer, getFreePort, instancePort, spawnDaemon, startQuantumServer, statusSlowOrEcho, tempDir, tenantNetwork, waitFor, writeIni, type Captured, type RunningQuantum, type TenantNet, type UnixServer } from './helpers/mdpath.js';

/** The real client, counting calls (the cache tests assert how often quantum-server is asked). */
class CountingLister {
  calls: Filters[] = [];
  constructor(private readonly q: QuantumClient) {}
  listPorts(f: Filters): Promise<Port[]> {
    this.calls.push(f);
    return this.q.listPorts(f);
  }
}

/** A request to the agent over its Unix socket, as the proxy sends it. */
function viaSocket(path: string, url: string, headers: Record<string, string>, method = 'GET', body?: string): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: path, path: url, method, headers: { host: '169.254.169.254', connection: 'close', ...headers }, agent: false }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, headers: res.headers }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** An instance this Nova has forgotten (deleted): it answers 404 for it on /status-by-instance. */
const FORGOTTEN = '44444444-dddd-4ddd-8ddd-000000000004';

function novaBehaviour(c: Captured, res: import('node:http').ServerResponse): void {
  if (c.url === '/status-by-instance' && c.headers['x-instance-id'] === FORGOTTEN) {
    res.writeHead(404);
    res.end();
    return;
  }
  statusSlowOrEcho(c, res, 'nova', { 'content-type': 'text/x-nova' });
}

describe('pure helpers', () => {
  test('HMAC test vector (secret "secret", id "foo")', () => {
    assert.equal(signInstanceId('secret', 'foo'), '773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4');
  });

  test('IPv6 link-local → EUI-64 MAC; IPv4-mapped → IPv4', () => {
    assert.equal(macFromEui64('fe80::5054:ff:fede:5bbf'), '52:54:00:de:5b:bf');
    assert.equal(macFromEui64('fe80::f816:3eff:fe12:3456'), 'fa:16:3e:12:34:56');
    assert.equal(macFromEui64('fe80::1234:5678:9abc:def0'), undefined, 'privacy/random ids are not EUI-64');
    assert.ok(isIPv6LinkLocal('fe80::5054:ff:fede:5bbf'));
    assert.ok(!isIPv6LinkLocal('2001:db8::1'));
    assert.ok(!isIPv6LinkLocal('192.168.1.1'));
    assert.deepEqual(ipv6Groups('::ffff:192.168.1.1'), [0, 0, 0, 0, 0, 0xffff, 0xc0a8, 0x0101]);
    assert.equal(unmapAddress('::ffff:192.168.1.1'), '192.168.1.1');
    assert.equal(unmapAddress('192.168.1.1'), '192.168.1.1');
    assert.equal(unmapAddress('fe80::1'), 'fe80::1');
  });

  test('proxy headers: both spellings, last X-Forwarded-For element, contradictions flagged', () => {
    assert.deepEqual(readProxyHeaders({ 'x-forwarded-for': '10.0.0.5', 'x-neutron-router-id': 'r', 'x-quantum-router-id': 'r' }), { remoteAddress: '10.0.0.5', routerId: 'r', networkId: undefined, conflict: false });
    assert.deepEqual(readProxyHeaders({ 'x-forwarded-for': '6.6.6.6, 10.0.0.5', 'x-quantum-network-id': 'n' }), { remoteAddress: '10.0.0.5', routerId: undefined, networkId: 'n', conflict: false });
    assert.equal(readProxyHeaders({ 'x-neutron-router-id': 'a', 'x-quantum-router-id': 'b' }).conflict, true);
    assert.equal(readProxyHeaders({ 'x-neutron-router-id': 'a, b' }).conflict, true);
  });

  test('socket mode: user/group/all and the deduce rules', () => {
    assert.equal(socketMode('user', 'x', 'y'), USER_MODE);
    assert.equal(socketMode('group', '', ''), GROUP_MODE);
    assert.equal(socketMode('all', '', ''), ALL_MODE);
    assert.equal(socketMode('deduce', '', ''), 0o644);
    assert.equal(socketMode('deduce', 'root', 'nogroup'), 0o644);
    assert.equal(socketMode('deduce', '0', 'nogroup'), 0o644);
    const me = String(process.geteuid!());
    assert.equal(socketMode('deduce', me, '65534'), 0o644, 'the agent effective user');
    if (process.geteuid!() === 0) {
      assert.equal(socketMode('deduce', '65534', ''), 0o664);
      assert.equal(socketMode('deduce', '65534', String(process.getegid!())), 0o664, 'the agent effective group');
      assert.equal(socketMode('deduce', 'nobody', 'root'), 0o664);
      assert.equal(socketMode('deduce', '65534', '65534'), 0o666);
      assert.equal(socketMode('deduce', 'nobody', 'nogroup'), 0o666);
    }
  });

  test('socket path: directory 0755, stale socket unlinked, a regular file is an error', async () => {
    const d = tempDir();
    try {
      const path = join(d.path, 'a', 'b', 'metadata_proxy');
      prepareSocketPath(path);
      assert.equal(statSync(join(d.path, 'a', 'b')).mode & 0o777, 0o755);
      const s = createNetServer();
      await new Promise<void>((r) => s.listen(path, () => r()));
      // A dead agent's socket file stays behind when it is killed; simulate by keeping the file.
      assert.ok(statSync(path).isSocket());
      prepareSocketPath(path);
      assert.equal(existsSync(path), false);
      s.close();
      writeFileSync(path, 'not a socket');
      assert.throws(() => prepareSocketPath(path), (e: unknown) => e instanceof ConfigError && /exists and is not a socket/.test(e.message));
      assert.equal(readFileSync(path, 'utf8'), 'not a socket', 'never removed');
    } finally {
      d.rm();
    }
  });

  test('options: names, defaults, deprecated nova_metadata_ip, cache settings', () => {
    const d = tempDir();
    try {
      const f = writeIni(join(d.path, 'metadata_agent.ini'), { DEFAULT: { nova_metadata_ip: '10.9.9.9', cache_url: 'memory://?default_ttl=5', state_path: '/srv/q' } });
      const { conf } = loadConfig(agentSpec, ['--config-file', f], { prog: 't', description: '' });
      assert.equal(conf.DEFAULT.nova_metadata_host, '10.9.9.9');
      assert.equal(conf.DEFAULT.nova_metadata_port, 8775);
      assert.equal(conf.DEFAULT.metadata_backlog, 4096);
      assert.equal(conf.DEFAULT.metadata_proxy_socket_mode, 'deduce');
      assert.equal(conf.AGENT.report_interval, 30);
      assert.equal(conf.cache.expiration_time, 600);
      assert.deepEqual(resolveAgentConf(conf), { socketPath: '/srv/q/metadata_proxy', cacheTtlMs: 5000 });
      const g = writeIni(join(d.path, 'b.ini'), { cache: { enabled: 'True', expiration_time: 10 } });
      assert.equal(resolveAgentConf(loadConfig(agentSpec, ['--config-file', g], { prog: 't', description: '' }).conf).cacheTtlMs, 10_000);
      const none = loadConfig(agentSpec, [], { prog: 't', description: '' }).conf;
      assert.equal(resolveAgentConf(none).cacheTtlMs, 0, 'off unless enabled (Neutron since Queens)');
      const bad = writeIni(join(d.path, 'c.ini'), { DEFAULT: { nova_metadata_protocol: 'ftp' } });
      assert.throws(() => loadConfig(agentSpec, ['--config-file', bad], { prog: 't', description: '' }), /must be one of http, https/);
    } finally {
      d.rm();
    }
  });
});

describe('lookup and proxying against a real quantum-server', () => {
  const dir = tempDir();
  let qs: RunningQuantum;
  let a: TenantNet;
  let b: TenantNet;
  let nova: UnixServer;
  let novaPort: number;
  const INST_A = '11111111-aaaa-4aaa-8aaa-000000000001';
  const INST_B = '22222222-bbbb-4bbb-8bbb-000000000002';
  const INST_LL = '33333333-cccc-4ccc-8ccc-000000000003';

  before(async () => {
    qs = await startQuantumServer(dir.path);
    a = await tenantNetwork(qs.client, 'tenant-a', '10.0.0.0/24');
    b = await tenantNetwork(qs.client, 'tenant-b', '10.0.0.0/24');
    await instancePort(qs.client, a, INST_A, '10.0.0.5');
    await instancePort(qs.client, b, INST_B, '10.0.0.5');
    await instancePort(qs.client, a, INST_LL, '10.0.0.6', '52:54:00:de:5b:bf');
    novaPort = await getFreePort();
    nova = await captureServer(novaPort, novaBehaviour);
  });
  after(async () => {
    await nova?.close();
    await qs?.stop();
    dir.rm();
  });

  test('router and network lookups: hit, miss, IPv4-mapped, link-local MAC, both ids', async () => {
    const lister = new CountingLister(qs.client);
    const l = new InstanceLookup(lister, 0);
    assert.deepEqual((await l.find('10.0.0.5', a.routerId, undefined)).identity, { instanceId: INST_A, tenantId: 'tenant-a' });
    assert.deepEqual((await l.find('10.0.0.5', b.routerId, undefined)).identity, { instanceId: INST_B, tenantId: 'tenant-b' });
    assert.deepEqual((await l.find('::ffff:10.0.0.5', a.routerId, undefined)).identity, { instanceId: INST_A, tenantId: 'tenant-a' });
    assert.equal((await l.find('10.0.0.99', a.routerId, undefined)).identity, undefined);
    assert.deepEqual((await l.find('10.0.0.5', undefined, b.networkId)).identity, { instanceId: INST_B, tenantId: 'tenant-b' });
    assert.equal((await l.find('10.0.0.99', undefined, b.networkId)).identity, undefined);
    assert.equal((await l.find('10.0.0.5', 'no-such-router', undefined)).identity, undefined);
    lister.calls = [];
    assert.deepEqual((await l.find('fe80::5054:ff:fede:5bbf', undefined, a.networkId)).identity, { instanceId: INST_LL, tenantId: 'tenant-a' });
    assert.deepEqual(lister.calls, [{ network_id: [a.networkId], mac_address: '52:54:00:de:5b:bf' }], 'MAC filter for link-local');
    lister.calls = [];
    assert.equal((await l.find('10.0.0.5', a.routerId, a.networkId)).identity, undefined);
    assert.equal(lister.calls.length, 0, 'both ids: no lookup at all');
    await l.find('10.0.0.5', a.routerId, undefined);
    assert.deepEqual(lister.calls, [
      { device_id: a.routerId, device_owner: ['network:router_interface', 'network:router_interface_distributed', 'network:ha_router_replicated_interface'] },
      { network_id: [a.networkId], fixed_ips: 'ip_address=10.0.0.5' },
    ]);
  });

  test('with the cache on, router networks and ports are fetched once across two calls', async () => {
    const lister = new CountingLister(qs.client);
    const l = new InstanceLookup(lister, 5000);
    const r1 = await l.find('10.0.0.5', a.routerId, undefined);
    const r2 = await l.find('10.0.0.5', a.routerId, undefined);
    assert.deepEqual(r1.identity, r2.identity);
    assert.equal(lister.calls.length, 2);
    assert.equal(r1.cached, false);
    assert.equal(r2.cached, true);
    await l.find('10.0.0.5', a.routerId, undefined, true);
    assert.equal(lister.calls.length, 4, 'skip_cache asks again');
    const nc = new CountingLister(qs.client);
    const l0 = new InstanceLookup(nc, 0);
    await l0.find('10.0.0.5', a.routerId, undefined);
    await l0.find('10.0.0.5', a.routerId, undefined);
    assert.equal(nc.calls.length, 4, 'no cache: asked every time');
    // Concurrent identical lookups share one request.
    const nc2 = new CountingLister(qs.client);
    const l2 = new InstanceLookup(nc2, 0);
    await Promise.all(Array.from({ length: 20 }, () => l2.find('10.0.0.5', a.routerId, undefined)));
    assert.equal(nc2.calls.length, 2);
  });

  test('the cache follows the ports: an address given to a new instance, a 404 for a new one, a moved router interface', async () => {
    const l = new InstanceLookup(new CountingLister(qs.client), 600_000);
    const inv = new CacheInvalidator({ lookup: l, client: qs.client, log: createLogger({ name: 'inv', debug: false }), pollIntervalSec: 1 });
    inv.start();
    const cleanup: string[] = [];
    try {
      await waitFor(async () => (await l.find('10.0.0.5', a.routerId, undefined)).identity !== undefined, 3000);
      // A 404 is cached for 10.0.0.177 ...
      assert.equal((await l.find('10.0.0.177', a.routerId, undefined)).identity, undefined);
      assert.equal((await l.find('10.0.0.177', a.routerId, undefined)).cached, true);
      // ... until an instance gets that address: its port's notification drops the entry.
      const NEW = '44444444-dddd-4ddd-8ddd-000000000004';
      const p = await instancePort(qs.client, a, NEW, '10.0.0.177');
      await waitFor(async () => (await l.find('10.0.0.177', a.routerId, undefined)).identity?.instanceId === NEW, 5000, 100, 'the new instance, not the cached 404');
      // The address moves to another instance within the TTL: the new owner is answered, not the old one.
      await qs.client.deletePort(p.id);
      const NEXT = '55555555-eeee-4eee-8eee-000000000005';
      const q = await instancePort(qs.client, a, NEXT, '10.0.0.177');
      cleanup.push(q.id);
      await waitFor(async () => (await l.find('10.0.0.177', a.routerId, undefined)).identity?.instanceId === NEXT, 5000, 100, 'the new owner of 10.0.0.177');
      assert.ok(l.invalidated >= 2, `invalidated ${l.invalidated}`);
      assert.ok(inv.events >= 3);
    } finally {
      await inv.stop();
      for (const id of cleanup) await qs.client.deletePort(id);
    }
  });

  describe('the agent in-process on its socket', () => {
    let agent: RunningAgent;
    let sock: string;
    const logFile = join(dir.path, 'agent.log');
    const SECRET = 's3cr3t';

    before(async () => {
      sock = join(dir.path, 'state', 'metadata_proxy');
      const f = writeIni(join(dir.path, 'agent.ini'), {
        DEFAULT: { quantum_url: qs.url, nova_metadata_host: '127.0.0.1', nova_metadata_port: novaPort, metadata_proxy_shared_secret: SECRET, metadata_proxy_socket: sock, host: 'net-node-1' },
        cache: { enabled: true, expiration_time: 30 },
        AGENT: { report_interval: 0 },
      });
      const { conf } = loadConfig(agentSpec, ['--config-file', f], { prog: 't', description: '' });
      agent = await startMetadataAgent(conf, createLogger({ name: 'quantum-metadata-agent', log_file: logFile }));
    });
    after(async () => {
      await agent?.close();
    });

    test('forwards with exactly the four identity headers, path, query and body; signs with the secret', async () => {
      const r = await viaSocket(sock, '/openstack/latest/meta_data.json?x=1', { 'x-forwarded-for': '10.0.0.5', 'x-neutron-router-id': b.routerId, 'x-quantum-router-id': b.routerId });
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'application/json');
      const got = JSON.parse(r.body) as Captured;
      assert.equal(got.url, '/openstack/latest/meta_data.json?x=1');
      assert.equal(got.method, 'GET');
      // Neutron's four, and the request id (issue 16): one made here since the proxy sent none.
      assert.deepEqual(Object.keys(got.headers).filter((h) => h !== 'host' && h !== 'connection').sort(), ['x-forwarded-for', 'x-instance-id', 'x-instance-id-signature', 'x-openstack-request-id', 'x-tenant-id']);
      assert.match(String(got.headers['x-openstack-request-id']), /^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      assert.equal(r.headers['x-openstack-request-id'], got.headers['x-openstack-request-id'], 'echoed to the proxy');
      assert.equal(got.headers['x-forwarded-for'], '10.0.0.5');
      assert.equal(got.headers['x-instance-id'], INST_B);
      assert.equal(got.headers['x-tenant-id'], 'tenant-b');
      assert.equal(got.headers['x-instance-id-signature'], signInstanceId(SECRET, INST_B));
      const p = await viaSocket(sock, '/openstack/2013-04-04/password', { 'x-forwarded-for': '10.0.0.5', 'x-quantum-router-id': a.routerId, 'content-type': 'text/plain' }, 'POST', 'pw!');
      const pg = JSON.parse(p.body) as Captured;
      assert.equal(pg.method, 'POST');
      assert.equal(pg.body, 'pw!');
      assert.equal(pg.headers['content-length'], '3');
      assert.equal(pg.headers['x-instance-id'], INST_A);
      assert.equal(pg.headers['content-type'], undefined, 'only the identity headers, as Neutron');
    });

    test("Nova's status mapping (Zed + 25.0.0)", async () => {
      const hdr = { 'x-forwarded-for': '10.0.0.5', 'x-neutron-router-id': a.routerId };
      const r200 = await viaSocket(sock, '/status/200', hdr);
      assert.deepEqual([r200.status, r200.body, r200.headers['content-type']], [200, 'nova-200', 'text/x-nova']);
      for (const s of [400, 403, 404, 409]) {
        const r = await viaSocket(sock, `/status/${s}`, hdr);
        assert.deepEqual([r.status, r.body], [s, ''], `status ${s}`);
      }
      const r500 = await viaSocket(sock, '/status/500', hdr);
      assert.deepEqual([r500.status, r500.body], [500, INTERNAL_ERROR]);
      for (const s of [502, 503, 504]) assert.equal((await viaSocket(sock, `/status/${s}`, hdr)).status, s);
      for (const s of [201, 302, 418]) {
        const r = await viaSocket(sock, `/status/${s}`, hdr);
        assert.deepEqual([r.status, r.body], [500, UNKNOWN_ERROR], `status ${s}`);
      }
      await waitFor(() => readFileSync(logFile, 'utf8').includes('This response usually occurs when shared secrets do not match.'), 3000, 50, 'the 403 log line');
    });

    test('no match, several ids, missing headers', async () => {
      assert.equal((await viaSocket(sock, '/x', { 'x-forwarded-for': '10.0.0.77', 'x-neutron-router-id': a.routerId })).status, 404);
      assert.equal((await viaSocket(sock, '/x', { 'x-forwarded-for': '10.0.0.5', 'x-neutron-router-id': a.routerId, 'x-neutron-network-id': a.networkId })).status, 404);
      assert.equal((await viaSocket(sock, '/x', { 'x-forwarded-for': '10.0.0.5', 'x-neutron-router-id': a.routerId, 'x-quantum-router-id': b.routerId })).status, 404);
      assert.equal((await viaSocket(sock, '/x', { 'x-neutron-router-id': a.routerId })).status, 400);
      assert.equal((await viaSocket(sock, '/x', { 'x-forwarded-for': 'not-an-ip', 'x-neutron-router-id': a.routerId })).status, 400);
      assert.equal((await viaSocket(sock, '/x', { 'x-forwarded-for': '10.0.0.5' })).status, 400);
    });

    test('a Nova 404 on a cached identity triggers one fresh lookup (IP reuse, bug 1868867)', async () => {
      const net = await tenantNetwork(qs.client, 'tenant-c', '10.3.0.0/24');
      const OLD = FORGOTTEN;
      const NEW = '55555555-eeee-4eee-8eee-000000000005';
      const old = await instancePort(qs.client, net, OLD, '10.3.0.9');
      const hdr = { 'x-forwarded-for': '10.3.0.9', 'x-neutron-router-id': net.routerId };
      const first = JSON.parse((await viaSocket(sock, '/latest/meta-data/instance-id', hdr)).body) as Captured;
      assert.equal(first.headers['x-instance-id'], OLD);
      // The instance is deleted and its IP handed to a new one; the cache still says OLD.
      await qs.client.deletePort(old.id);
      await instancePort(qs.client, net, NEW, '10.3.0.9');
      const before = nova.requests.length;
      // This Nova knows OLD no more.
      const r = await viaSocket(sock, '/status-by-instance', hdr);
      assert.equal(r.status, 200);
      assert.equal((JSON.parse(r.body) as Captured).headers['x-instance-id'], NEW);
      assert.deepEqual(nova.requests.slice(before).map((c) => c.headers['x-instance-id']), [OLD, NEW]);
    });

    test('quantum-server unreachable → 503; Nova unreachable → 503; Nova too slow → 504', async () => {
      const deadPort = await getFreePort();
      const log = createLogger({ name: 't', log_file: join(dir.path, 't.log') });
      const deadQ = new QuantumClient({ url: `http://127.0.0.1:${deadPort}` });
      const liveNova = new NovaClient({ host: '127.0.0.1', port: novaPort, protocol: 'http', insecure: false, sharedSecret: SECRET, timeoutMs: 500 });
      const deadNova = new NovaClient({ host: '127.0.0.1', port: deadPort, protocol: 'http', insecure: false, sharedSecret: SECRET });
      const run = async (h: MetadataProxyHandler, url: string) => {
        const { createServer } = await import('node:http');
        const s = createServer(h.listener);
        const p = join(dir.path, `h-${Math.random().toString(36).slice(2)}.sock`);
        await new Promise<void>((r) => s.listen(p, () => r()));
        try {
          return await viaSocket(p, url, { 'x-forwarded-for': '10.0.0.5', 'x-neutron-router-id': a.routerId });
        } finally {
          s.close();
        }
      };
      assert.equal((await run(new MetadataProxyHandler({ lookup: new InstanceLookup(deadQ, 0), nova: liveNova, log }), '/x')).status, 503);
      assert.equal((await run(new MetadataProxyHandler({ lookup: new InstanceLookup(qs.client, 0), nova: deadNova, log }), '/x')).status, 503);
      const t0 = Date.now();
      assert.equal((await run(new MetadataProxyHandler({ lookup: new InstanceLookup(qs.client, 0), nova: liveNova, log }), '/slow/2000')).status, 504);
      assert.ok(Date.now() - t0 < 1800);
      await Promise.all([deadQ.close(), liveNova.close(), deadNova.close()]);
    });
  });

  test('an unexpected lookup failure is a 500 "unknown error", logged as Unexpected error.', async () => {
    // Something that answers HTTP but is not quantum-server: the lookup cannot make sense of it.
    const notQuantum = await captureServer(await getFreePort(), (c, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"not":"ports"}');
    });
    const port = (notQuantum.server.address() as import('node:net').AddressInfo).port;
    const logFile = join(dir.path, 'unexpected.log');
    const q = new QuantumClient({ url: `http://127.0.0.1:${port}` });
    const n = new NovaClient({ host: '127.0.0.1', port: novaPort, protocol: 'http', insecure: false, sharedSecret: 'x' });
    const h = new MetadataProxyHandler({ lookup: new InstanceLookup(q, 0), nova: n, log: createLogger({ name: 't', log_file: logFile }) });
    const { createServer } = await import('node:http');
    const s = createServer(h.listener);
    const p = join(dir.path, 'unexpected.sock');
    await new Promise<void>((r) => s.listen(p, () => r()));
    try {
      const r = await viaSocket(p, '/x', { 'x-forwarded-for': '10.0.0.5', 'x-neutron-network-id': a.networkId });
      assert.deepEqual([r.status, r.body], [500, UNKNOWN_ERROR]);
      await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('Unexpected error.'), 3000, 50, 'the log line');
    } finally {
      s.close();
      await notQuantum.close();
      await Promise.all([q.close(), n.close()]);
    }
  });

  test('state reports: start_flag until accepted, the payload Neutron sends, failures not fatal', async () => {
    const logs: string[] = [];
    const log = createLogger({ name: 't', log_file: join(dir.path, 'report.log') });
    const deadQ = new QuantumClient({ url: `http://127.0.0.1:${await getFreePort()}` });
    const opts = { host: 'net-node-9', socketPath: '/var/lib/quantum/metadata_proxy', novaHost: '10.1.1.1', novaPort: 8775, intervalMs: 30_000, logHeartbeats: false, log };
    const failing = new StateReporter({ ...opts, client: deadQ });
    assert.equal(await failing.reportOnce(), false);
    assert.equal(failing.payload().start_flag, true, 'kept after a failed report');
    const r = new StateReporter({ ...opts, client: qs.client });
    assert.deepEqual(r.payload(), {
      binary: 'quantum-metadata-agent',
      host: 'net-node-9',
      topic: 'N/A',
      agent_type: 'Metadata agent',
      configurations: { metadata_proxy_socket: '/var/lib/quantum/metadata_proxy', nova_metadata_host: '10.1.1.1', nova_metadata_port: 8775, log_agent_heartbeats: false },
      start_flag: true,
    });
    assert.equal(await r.reportOnce(), true);
    assert.equal(r.payload().start_flag, undefined, 'dropped after the first accepted report');
    const agents = await qs.client.listAgents({ host: 'net-node-9' });
    assert.equal(agents.length, 1);
    assert.equal(agents[0]!.agent_type, 'Metadata agent');
    assert.equal(agents[0]!.binary, 'quantum-metadata-agent');
    assert.equal(agents[0]!.alive, true);
    assert.equal(agents[0]!.configurations.nova_metadata_port, 8775);
    await deadQ.close();
    void logs;
  });

  test('the agent process: socket mode, stale socket replaced, state reported, workers; a file in the way is fatal', async () => {
    const state = join(dir.path, 'proc-state');
    mkdirSync(state, { recursive: true });
    const sockPath = join(state, 'metadata_proxy');
    // A stale socket from a killed agent.
    const stale = createNetServer();
    await new Promise<void>((r) => stale.listen(sockPath, () => r()));
    const conf = writeIni(join(dir.path, 'quantum.conf'), { DEFAULT: { state_path: state, quantum_url: qs.url, host: 'proc-node' } });
    const ini = writeIni(join(dir.path, 'metadata_agent.ini'), {
      DEFAULT: { nova_metadata_host: '127.0.0.1', nova_metadata_port: novaPort, metadata_proxy_shared_secret: 'x', metadata_workers: 2, metadata_backlog: 77, metadata_proxy_user: '65534', metadata_proxy_group: '65534' },
      AGENT: { report_interval: 1 },
    });
    const d = spawnDaemon('metadata-agent/main.js', ['--config-file', conf, '--config-file', ini]);
    try {
      await waitFor(() => {
        try {
          return (statSync(sockPath).mode & 0o777) === 0o666;
        } catch {
          return false;
        }
      }, 10_000, 50, `socket mode 0666: ${d.output()}`);
      // The listen backlog is the Send-Q of a listening Unix socket in ss.
      // (The stale listener this test left behind is listed under the same name with node's default 511.)
      // Each worker applies it in its own listen() on the shared socket, so give both a moment under load.
      let ss: string[] = [];
      await waitFor(() => {
        // node:cluster binds a pipe by its path relative to the cwd when that is shorter, so ss may show
        // "../qm-mdpath-x/proc-state/metadata_proxy": match the unique tail.
        ss = execFileSync('ss', ['-xl'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(sockPath.split('/').slice(-3).join('/')));
        return ss.some((l) => l.trim().split(/\s+/)[3] === '77');
      }, 5000, 100, 'the listen backlog').catch(() => undefined);
      assert.ok(ss.some((l) => l.trim().split(/\s+/)[3] === '77'), `backlog: ${ss.join('\n')}`);
      const hdr = { 'x-forwarded-for': '10.0.0.5', 'x-neutron-router-id': a.routerId };
      for (let i = 0; i < 6; i++) assert.equal(JSON.parse((await viaSocket(sockPath, '/x', hdr)).body).headers['x-instance-id'], INST_A);
      const ag = await waitFor(async () => (await qs.client.listAgents({ host: 'proc-node' }))[0], 5000, 100, 'the state report');
      assert.equal(ag.agent_type, 'Metadata agent');
      assert.equal(ag.configurations.metadata_proxy_socket, sockPath);
    } finally {
      await d.stop();
      stale.close();
    }
    assert.equal(existsSync(sockPath), false, 'socket removed at exit');
    writeFileSync(sockPath, 'precious');
    const bad = spawnDaemon('metadata-agent/main.js', ['--config-file', conf, '--config-file', ini, '--metadata_workers=1']);
    const code = await new Promise<number | null>((r) => bad.proc.once('exit', (c) => r(c)));
    assert.equal(code, 1);
    assert.match(bad.output(), /exists and is not a socket/);
  });
});

describe('https to Nova: CA, insecure, client certificate', () => {
  const d = tempDir();
  const f = (n: string) => join(d.path, n);
  let hasOpenssl = true;
  before(() => {
    try {
      const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
      ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.crt'), '-subj', '/CN=mdpath-test-ca', '-days', '2');
      for (const who of ['server', 'client']) {
        ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', `/CN=${who === 'server' ? '127.0.0.1' : 'metadata-agent'}`);
        writeFileSync(f(`${who}.ext`), who === 'server' ? 'subjectAltName=IP:127.0.0.1\n' : 'extendedKeyUsage=clientAuth\n');
        ossl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${who}.crt`), '-days', '2', '-extfile', f(`${who}.ext`));
      }
    } catch {
      hasOpenssl = false;
    }
  });
  after(() => d.rm());

  async function httpsNova(requireClientCert: boolean): Promise<{ port: number; close(): Promise<void> }> {
    const { createServer } = await import('node:https');
    const s = createServer({ key: readFileSync(f('server.key')), cert: readFileSync(f('server.crt')), ca: readFileSync(f('ca.crt')), requestCert: requireClientCert, rejectUnauthorized: requireClientCert }, (req, res) => {
      const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ client: peer?.subject?.CN ?? null, instance: req.headers['x-instance-id'] }));
    });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    return { port: (s.address() as import('node:net').AddressInfo).port, close: () => new Promise<void>((r) => { s.close(() => r()); s.closeAllConnections(); }) };
  }

  test('verify with auth_ca_cert; refuse an unknown CA; insecure skips the check; client cert when both files are set', async (t) => {
    if (!hasOpenssl) return t.skip('openssl not available');
    const id = { instanceId: 'i-1', tenantId: 't-1' };
    const plain = await httpsNova(false);
    const mutual = await httpsNova(true);
    const clients: NovaClient[] = [];
    const mk = (port: number, o: Partial<ConstructorParameters<typeof NovaClient>[0]>) => {
      const c = new NovaClient({ host: '127.0.0.1', port, protocol: 'https', insecure: false, sharedSecret: 's', ...o });
      clients.push(c);
      return c;
    };
    try {
      const ok = await mk(plain.port, { caCert: f('ca.crt') }).forward('GET', '/', '10.0.0.5', id, undefined);
      assert.equal(ok.kind, 'response');
      assert.equal(ok.kind === 'response' && JSON.parse(ok.body.toString()).instance, 'i-1');
      const unknownCa = await mk(plain.port, {}).forward('GET', '/', '10.0.0.5', id, undefined);
      assert.equal(unknownCa.kind, 'unreachable', 'the system CAs do not know the test CA');
      const insecure = await mk(plain.port, { insecure: true }).forward('GET', '/', '10.0.0.5', id, undefined);
      assert.equal(insecure.kind, 'response');
      const noClientCert = await mk(mutual.port, { caCert: f('ca.crt') }).forward('GET', '/', '10.0.0.5', id, undefined);
      assert.notEqual(noClientCert.kind === 'response' && noClientCert.status, 200, 'a server that requires a client certificate refuses us without one');
      const withCert = await mk(mutual.port, { caCert: f('ca.crt'), clientCert: f('client.crt'), clientKey: f('client.key') }).forward('GET', '/', '10.0.0.5', id, undefined);
      assert.equal(withCert.kind, 'response');
      assert.equal(withCert.kind === 'response' && JSON.parse(withCert.body.toString()).client, 'metadata-agent');
      assert.throws(() => new NovaClient({ host: '127.0.0.1', port: 1, protocol: 'https', insecure: false, sharedSecret: 's', caCert: f('missing.crt') }), /auth_ca_cert .*missing\.crt: ENOENT/);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await plain.close();
      await mutual.close();
    }
  });
});
