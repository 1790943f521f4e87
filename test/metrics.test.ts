// The daemons' Prometheus metrics ([metrics] listen), scraped from the real processes while they do real work:
// quantum-server (one process, then with API workers whose counts the parent sums), nova-api (compute and
// metadata APIs), and the L3 agent building a router in a real namespace.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { execute } from '../src/linux/exec.js';
import { QuantumClient } from '../src/common/quantum-client.js';
import { signInstanceId } from '../src/common/hmac.js';
import { bridgeName, routerNamespace, tapDeviceName } from '../src/linux/names.js';
import { NetFixture, uuid } from './helpers/netns.js';
import { getFreePort, httpGet, spawnDaemon, waitFor, waitForListen, type Daemon } from './helpers/proc.js';
import { sample } from './helpers/prom.js';

const fx = new NetFixture();
const daemons: Daemon[] = [];

after(async () => {
  for (const d of daemons.reverse()) await d.stop().catch(() => undefined);
  fx.cleanup();
});

async function scrape(port: number): Promise<string> {
  const r = await httpGet(`http://127.0.0.1:${port}/metrics`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  return r.body;
}

/** Every metric family appears once (the exposition format wants each family as one group). */
function familiesOnce(text: string): void {
  const names = text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]);
  assert.equal(new Set(names).size, names.length, `a family appears twice: ${names.filter((n, i) => names.indexOf(n) !== i).join(', ')}`);
}

async function quantumServer(dir: string, workers?: number): Promise<{ url: string; metricsPort: number; client: QuantumClient }> {
  const [port, metricsPort] = [await getFreePort(), await getFreePort()];
  const conf = join(dir, `quantum-${port}.conf`);
  writeFileSync(conf, `[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = ${port}\nstate_path = ${dir}\n${workers ? `api_workers = ${workers}\n` : ''}[database]\nconnection = sqlite:///${join(dir, `q-${port}.sqlite`)}\n[metrics]\nlisten = 127.0.0.1:${metricsPort}\n`);
  const d = spawnDaemon('quantum-server/main.js', ['--config-file', conf]);
  daemons.push(d);
  await waitForListen({ host: '127.0.0.1', port }, 30_000);
  await waitForListen({ host: '127.0.0.1', port: metricsPort }, 30_000);
  if (workers) await waitFor(() => [...d.output().matchAll(/quantum-server listening on/g)].length >= workers, 30_000, 100, 'every API worker');
  const url = `http://127.0.0.1:${port}`;
  return { url, metricsPort, client: new QuantumClient({ url }) };
}

describe('metrics', () => {
  let dir: string;
  before(() => {
    dir = fx.statePath();
  });

  test('quantum-server: requests by route and status, latency, DB time, agents; off unless [metrics] listen', async () => {
    const { metricsPort, client } = await quantumServer(dir);
    const net = await client.createNetwork({ name: 'm' });
    await client.showNetwork(net.id);
    await client.showNetwork('00000000-0000-0000-0000-000000000000').catch(() => undefined);
    await client.reportState({ binary: 'quantum-l3-agent', host: 'm-node', agent_type: 'L3 agent', topic: 'l3_agent', configurations: { metadata_proxies: { expected: 3, alive: 2 } }, start_flag: true });
    const t = await scrape(metricsPort);
    familiesOnce(t);
    assert.equal(sample(t, 'quantum_server_http_requests_total', { method: 'POST', route: '/v2.0/networks', status: '201' }), 1);
    assert.equal(sample(t, 'quantum_server_http_requests_total', { method: 'GET', route: '/v2.0/networks/:id', status: '200' }), 1);
    assert.equal(sample(t, 'quantum_server_http_requests_total', { method: 'GET', route: '/v2.0/networks/:id', status: '404' }), 1);
    assert.ok((sample(t, 'quantum_server_http_request_duration_seconds_count', { method: 'POST', route: '/v2.0/networks' }) ?? 0) >= 1);
    assert.ok((sample(t, 'quantum_server_db_query_duration_seconds_count') ?? 0) > 5);
    assert.equal(sample(t, 'quantum_server_agents', { agent_type: 'L3 agent', alive: 'true' }), 1);
    assert.equal(sample(t, 'quantum_server_agent_metadata_proxies', { host: 'm-node', state: 'expected' }), 3);
    assert.equal(sample(t, 'quantum_server_agent_metadata_proxies', { host: 'm-node', state: 'alive' }), 2);
    assert.ok(sample(t, 'quantum_server_process_cpu_seconds_total') !== undefined);
    // Counters move with the requests.
    await client.showNetwork(net.id);
    assert.equal(sample(await scrape(metricsPort), 'quantum_server_http_requests_total', { method: 'GET', route: '/v2.0/networks/:id', status: '200' }), 2);
    assert.equal((await httpGet(`http://127.0.0.1:${metricsPort}/nope`)).status, 404);
    await client.close();
  });

  test('quantum-server with api_workers: the parent serves every worker\'s counts summed', async () => {
    const { metricsPort, client } = await quantumServer(dir, 2);
    const net = await client.createNetwork({ name: 'w' });
    await Promise.all(Array.from({ length: 20 }, () => client.showNetwork(net.id)));
    const t = await scrape(metricsPort);
    familiesOnce(t);
    assert.equal(sample(t, 'quantum_server_http_requests_total', { method: 'GET', route: '/v2.0/networks/:id', status: '200' }), 20);
    await client.close();
  });

  test('nova-api: compute requests by route, metadata answers by status', async () => {
    const q = await quantumServer(dir);
    const [cPort, mPort, metricsPort] = [await getFreePort(), await getFreePort(), await getFreePort()];
    const conf = join(dir, 'nova.conf');
    writeFileSync(
      conf,
      `[DEFAULT]\nstate_path = ${join(dir, 'nova')}\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = ${cPort}\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\n[database]\nconnection = sqlite:///${join(dir, 'nova.sqlite')}\n[neutron]\nurl = ${q.url}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = s\n[metrics]\nlisten = 127.0.0.1:${metricsPort}\n`,
    );
    const d = spawnDaemon('nova-api/main.js', ['--config-file', conf]);
    daemons.push(d);
    await waitForListen({ host: '127.0.0.1', port: cPort }, 30_000);
    await waitForListen({ host: '127.0.0.1', port: metricsPort }, 30_000);
    assert.equal((await httpGet(`http://127.0.0.1:${cPort}/v2.1/flavors`, { 'x-project-id': 'p' })).status, 200);
    const id = '5a1d6c2e-8b0f-4e3a-9c7d-2f6e1b4a8c90';
    assert.equal((await httpGet(`http://127.0.0.1:${mPort}/latest/meta-data/`, { 'x-forwarded-for': '10.0.0.9', 'x-instance-id': id, 'x-tenant-id': 'p', 'x-instance-id-signature': signInstanceId('s', id) })).status, 404);
    assert.equal((await httpGet(`http://127.0.0.1:${mPort}/latest/meta-data/`, { 'x-forwarded-for': '10.0.0.9', 'x-instance-id': id, 'x-tenant-id': 'p', 'x-instance-id-signature': 'bad' })).status, 403);
    const t = await scrape(metricsPort);
    familiesOnce(t);
    assert.equal(sample(t, 'nova_api_http_requests_total', { method: 'GET', route: '/v2.1/flavors', status: '200' }), 1);
    assert.equal(sample(t, 'nova_api_metadata_requests_total', { status: '404' }), 1);
    assert.equal(sample(t, 'nova_api_metadata_requests_total', { status: '403' }), 1);
    assert.ok((sample(t, 'nova_api_metadata_request_duration_seconds_count') ?? 0) >= 2);
    await q.client.close();
  });

  test('quantum-l3-agent: routers served, proxies expected vs alive, syncs and notifications', async () => {
    const q = await quantumServer(dir);
    const state = fx.statePath();
    const metricsPort = await getFreePort();
    const conf = join(state, 'l3_agent.ini');
    writeFileSync(conf, `[DEFAULT]\nstate_path = ${state}\nquantum_url = ${q.url}\nhost = ${fx.prefix}-m\npolling_interval = 1\n[AGENT]\nreport_interval = 1\ncheck_child_processes_interval = 1\n[metrics]\nlisten = 127.0.0.1:${metricsPort}\n`);
    const net = await q.client.createNetwork({ name: `${fx.prefix}-m` });
    fx.trackBridge(bridgeName(net.id));
    const sub = await q.client.createSubnet({ network_id: net.id, cidr: '10.44.0.0/24', ip_version: 4, enable_dhcp: false });
    const r = await q.client.createRouter({ name: `${fx.prefix}-m` });
    fx.trackNamespace(routerNamespace(r.id));
    const info = await q.client.addRouterInterface(r.id, { subnet_id: sub.id });
    fx.trackLink(tapDeviceName(info.port_id));
    const d = spawnDaemon('l3-agent/main.js', ['--config-file', conf]);
    daemons.push(d);
    await waitForListen({ host: '127.0.0.1', port: metricsPort }, 30_000);
    const t = await waitFor(async () => {
      const x = await scrape(metricsPort);
      // The proxy can be alive before the full sync that started it has ended and recorded its duration.
      return sample(x, 'quantum_l3_agent_metadata_proxies', { state: 'alive' }) === 1 && (sample(x, 'quantum_l3_agent_sync_duration_seconds_count', { kind: 'full' }) ?? 0) >= 1 ? x : undefined;
    }, 20_000, 200, 'the router built, its proxy alive and the full sync done');
    familiesOnce(t);
    assert.equal(sample(t, 'quantum_l3_agent_routers'), 1);
    assert.equal(sample(t, 'quantum_l3_agent_router_interfaces'), 1);
    assert.equal(sample(t, 'quantum_l3_agent_metadata_proxies', { state: 'expected' }), 1);
    assert.ok((sample(t, 'quantum_l3_agent_sync_duration_seconds_count', { kind: 'full' }) ?? 0) >= 1);
    // A second router arrives through the notification log (no RabbitMQ here).
    const r2 = await q.client.createRouter({ name: `${fx.prefix}-m2` });
    fx.trackNamespace(routerNamespace(r2.id));
    const t2 = await waitFor(async () => {
      const x = await scrape(metricsPort);
      return sample(x, 'quantum_l3_agent_routers') === 2 && (sample(x, 'quantum_l3_agent_sync_duration_seconds_count', { kind: 'resources' }) ?? 0) >= 1 ? x : undefined;
    }, 20_000, 200, 'the second router');
    assert.ok((sample(t2, 'quantum_l3_agent_notifications_total', { source: 'log' }) ?? 0) >= 1);
    assert.ok((sample(t2, 'quantum_l3_agent_sync_duration_seconds_count', { kind: 'resources' }) ?? 0) >= 1);
    assert.equal(sample(t2, 'quantum_l3_agent_child_respawns_total'), 0);
    await q.client.close();
  });
  test('the shared proxy: answers by status and per router, guest connections, pending (asked over IPC at each scrape)', async () => {
    const q = await quantumServer(dir);
    const state = fx.statePath();
    const metricsPort = await getFreePort();
    const socket = join(state, 'metadata_proxy');
    // A stand-in for the metadata agent on its socket: 200 for one path, 404 for the rest.
    const standIn = createServer((req, res) => {
      res.writeHead(req.url === '/latest/meta-data/instance-id' ? 200 : 404, { 'content-type': 'text/plain' });
      res.end('i-00000001');
    });
    await new Promise<void>((r) => standIn.listen(socket, r));
    try {
      const conf = join(state, 'l3_agent.ini');
      writeFileSync(conf, `[DEFAULT]\nstate_path = ${state}\nquantum_url = ${q.url}\nhost = ${fx.prefix}-s\npolling_interval = 1\nmetadata_proxy_mode = shared\nmetadata_proxy_socket = ${socket}\n[AGENT]\nreport_interval = 1\ncheck_child_processes_interval = 1\n[metrics]\nlisten = 127.0.0.1:${metricsPort}\n`);
      const net = await q.client.createNetwork({ name: `${fx.prefix}-s` });
      fx.trackBridge(bridgeName(net.id));
      const sub = await q.client.createSubnet({ network_id: net.id, cidr: '10.45.0.0/24', ip_version: 4, enable_dhcp: false });
      const r = await q.client.createRouter({ name: `${fx.prefix}-s` });
      fx.trackNamespace(routerNamespace(r.id));
      const info = await q.client.addRouterInterface(r.id, { subnet_id: sub.id });
      fx.trackLink(tapDeviceName(info.port_id));
      const vm = await q.client.createPort({ network_id: net.id, device_owner: 'compute:nova', device_id: uuid() });
      const g = fx.guest({ bridge: bridgeName(net.id), mac: vm.mac_address, cidr: `${vm.fixed_ips[0]!.ip_address}/24`, gateway: sub.gateway_ip! });
      const d = spawnDaemon('l3-agent/main.js', ['--config-file', conf]);
      daemons.push(d);
      await waitForListen({ host: '127.0.0.1', port: metricsPort }, 30_000);
      const get = (path: string) => execute(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '2', `http://169.254.169.254${path}`], { netns: g.ns, checkExit: false });
      await waitFor(async () => (await get('/latest/meta-data/instance-id')) === '200', 20_000, 200, 'the guest served by the shared proxy');
      for (let i = 0; i < 4; i++) assert.equal(await get('/latest/meta-data/instance-id'), '200');
      for (let i = 0; i < 2; i++) assert.equal(await get('/nothing'), '404');
      const t = await scrape(metricsPort);
      familiesOnce(t);
      assert.ok((sample(t, 'quantum_l3_agent_shared_proxy_responses_total', { code: '200' }) ?? 0) >= 5, t);
      assert.equal(sample(t, 'quantum_l3_agent_shared_proxy_responses_total', { code: '404' }), 2);
      assert.ok((sample(t, 'quantum_l3_agent_shared_proxy_listener_responses_total', { kind: 'router', id: r.id }) ?? 0) >= 7);
      assert.equal(sample(t, 'quantum_l3_agent_shared_proxy_pending_requests'), 0);
      assert.equal(sample(t, 'quantum_l3_agent_metadata_proxies', { state: 'alive' }), 1);
      // Moves with real requests.
      assert.equal(await get('/nothing'), '404');
      assert.equal(sample(await scrape(metricsPort), 'quantum_l3_agent_shared_proxy_responses_total', { code: '404' }), 3);
    } finally {
      standIn.close();
      await q.client.close();
    }
  });
});
