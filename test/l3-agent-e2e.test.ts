// The whole chain, every piece a real daemon: quantum-server, nova-api (service_metadata_proxy=True with a
// shared secret), quantum-metadata-agent, quantum-l3-agent and quantum-dhcp-agent. Two tenants with the very
// same guest IP behind their own routers each get their own instance's metadata; a guest on an isolated
// network gets its address by dhclient and its metadata through the qdhcp proxy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { QuantumClient, type Network, type Port } from '../src/common/quantum-client.js';
import { execute } from '../src/linux/exec.js';
import { bridgeName, dhcpNamespace, routerNamespace } from '../src/linux/names.js';
import { NetFixture, type Guest } from './helpers/netns.js';
import { killDhclients } from './helpers/agents.js';
import { getFreePort, spawnDaemon, waitFor, waitForListen, type Daemon } from './helpers/proc.js';

const fx = new NetFixture();
const daemons: Daemon[] = [];
let q: QuantumClient;
let state: string;
let computeUrl: string;
const dhclientPids: string[] = [];
const IMAGE = '9f1a0c52-6b6e-4d0e-9a55-2f4c3b1d7e10';

async function nova<T>(method: string, path: string, project: string, body?: unknown): Promise<T> {
  const res = await request(`${computeUrl}/v2.1${path}`, {
    method: method as 'GET',
    headers: { 'x-project-id': project, 'content-type': 'application/json', accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode >= 400) throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
  return JSON.parse(text) as T;
}

function start(name: string, main: string, args: string[]): Daemon {
  const d = spawnDaemon(main, args);
  daemons.push(d);
  d.proc.once('exit', (code) => {
    if (code) process.stderr.write(`${name} exited ${code}:\n${d.output().slice(-3000)}\n`);
  });
  return d;
}

// A short connect timeout: while the router or its proxy is still being built, a SYN may go unanswered.
const curl = (g: Guest, url: string) => execute(['curl', '-s', '--connect-timeout', '1', '-m', '10', url], { netns: g.ns });

before(async () => {
  state = fx.statePath();
  const [qPort, cPort, mPort] = [await getFreePort(), await getFreePort(), await getFreePort()];
  computeUrl = `http://127.0.0.1:${cPort}`;
  const secret = 'e2e-secret-' + fx.prefix;
  const socket = join(state, 'metadata_proxy');
  const etc = join(state, 'etc');
  await execute(['mkdir', '-p', etc, join(state, 'nova')]);
  const qconf = join(etc, 'quantum.conf');
  writeFileSync(qconf, `[DEFAULT]\nstate_path = ${state}\nbind_host = 127.0.0.1\nbind_port = ${qPort}\nquantum_url = http://127.0.0.1:${qPort}\n[database]\nconnection = sqlite:///${join(state, 'quantum.sqlite')}\n[AGENT]\nreport_interval = 5\ncheck_child_processes_interval = 1\n`);
  writeFileSync(join(etc, 'nova.conf'), `[DEFAULT]\nstate_path = ${join(state, 'nova')}\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = ${cPort}\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\nenabled_apis = osapi_compute,metadata\n[database]\nconnection = sqlite:///${join(state, 'nova', 'nova.sqlite')}\n[neutron]\nurl = http://127.0.0.1:${qPort}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = ${secret}\n`);
  writeFileSync(join(etc, 'metadata_agent.ini'), `[DEFAULT]\nmetadata_proxy_socket = ${socket}\nnova_metadata_host = 127.0.0.1\nnova_metadata_port = ${mPort}\nmetadata_proxy_shared_secret = ${secret}\nmetadata_workers = 0\n`);
  writeFileSync(join(etc, 'l3_agent.ini'), `[DEFAULT]\ninterface_driver = linuxbridge\npolling_interval = 1\nhost = ${fx.prefix}-e2e\nmetadata_proxy_socket = ${socket}\n`);
  writeFileSync(join(etc, 'dhcp_agent.ini'), `[DEFAULT]\ninterface_driver = linuxbridge\npolling_interval = 1\nhost = ${fx.prefix}-e2e\nenable_isolated_metadata = True\nmetadata_proxy_socket = ${socket}\n`);

  start('quantum-server', 'quantum-server/main.js', ['--config-file', qconf]);
  await waitForListen({ host: '127.0.0.1', port: qPort }, 20_000);
  start('nova-api', 'nova-api/main.js', ['--config-file', join(etc, 'nova.conf')]);
  start('quantum-metadata-agent', 'metadata-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'metadata_agent.ini')]);
  start('quantum-l3-agent', 'l3-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'l3_agent.ini')]);
  start('quantum-dhcp-agent', 'dhcp-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'dhcp_agent.ini')]);
  await waitForListen({ host: '127.0.0.1', port: mPort }, 20_000);
  await waitForListen({ host: '127.0.0.1', port: cPort }, 20_000);
  await waitForListen({ path: socket }, 20_000);
  q = new QuantumClient({ url: `http://127.0.0.1:${qPort}` });
});

after(async () => {
  killDhclients(dhclientPids);
  for (const d of daemons.reverse()) await d.stop();
  await q?.close();
  fx.cleanup();
});

async function tenantNetwork(project: string, name: string, cidr: string, gateway: string | null): Promise<{ net: Network; subnetId: string }> {
  const net = await q.createNetwork({ name: `${fx.prefix}-${name}` }, project);
  fx.trackBridge(bridgeName(net.id));
  fx.trackNamespace(dhcpNamespace(net.id));
  const sub = await q.createSubnet({ network_id: net.id, cidr, ip_version: 4, gateway_ip: gateway }, project);
  return { net, subnetId: sub.id };
}

async function boot(project: string, name: string, networkId: string, fixedIp?: string): Promise<{ id: string; port: Port }> {
  const created = await nova<{ server: { id: string } }>('POST', '/servers', project, {
    server: { name, flavorRef: '1', imageRef: IMAGE, networks: [fixedIp ? { uuid: networkId, fixed_ip: fixedIp } : { uuid: networkId }] },
  });
  const port = await waitFor(async () => (await q.listPorts({ device_id: created.server.id }))[0], 10_000, 100, 'server port');
  return { id: created.server.id, port };
}

describe('router path, two tenants with the same guest IP', () => {
  test('each guest gets its own instance-id through its router proxy, the metadata agent and nova-api', async (t) => {
    const t0 = Date.now();
    const guests: Array<{ g: Guest; id: string; name: string }> = [];
    for (const t of ['tenant-a', 'tenant-b']) {
      const { net, subnetId } = await tenantNetwork(t, `net-${t}`, '10.1.1.0/24', '10.1.1.1');
      const router = await q.createRouter({ name: `${fx.prefix}-r-${t}` }, t);
      fx.trackNamespace(routerNamespace(router.id));
      await q.addRouterInterface(router.id, { subnet_id: subnetId });
      const { id, port } = await boot(t, `vm-${t}`, net.id, '10.1.1.5');
      const g = fx.guest({ bridge: bridgeName(net.id), mac: port.mac_address, cidr: '10.1.1.5/24', gateway: '10.1.1.1' });
      guests.push({ g, id, name: `vm-${t}` });
    }
    for (const { g, id, name } of guests) {
      const got = await waitFor(async () => {
        const r = await curl(g, 'http://169.254.169.254/latest/meta-data/instance-id').catch(() => '');
        return r.startsWith('i-') ? r : undefined;
      }, 30_000, 200, 'instance-id via the router');
      assert.match(got, /^i-[0-9a-f]{8}$/);
      t.diagnostic(`${name}: first metadata answer ${Date.now() - t0} ms after creating the networks`);
      const meta = JSON.parse(await curl(g, 'http://169.254.169.254/openstack/latest/meta_data.json')) as { uuid: string; name: string };
      assert.equal(meta.uuid, id);
      assert.equal(meta.name, name);
      assert.equal(await curl(g, 'http://169.254.169.254/latest/meta-data/local-ipv4'), '10.1.1.5');
    }
    assert.notEqual(guests[0]!.id, guests[1]!.id);
  });
});

describe('isolated network path', () => {
  test('dhclient gets the address and option 121 route; metadata comes through the qdhcp proxy', async (t) => {
    const t0 = Date.now();
    const { net } = await tenantNetwork('tenant-a', 'iso', '172.17.17.0/24', null);
    const { id, port } = await boot('tenant-a', 'vm-iso', net.id);
    const g = fx.guest({ bridge: bridgeName(net.id), mac: port.mac_address });
    const tmp = mkdtempSync(join(tmpdir(), `${fx.prefix}-e2e-`));
    const pf = join(tmp, 'dhclient.pid');
    dhclientPids.push(pf);
    // The DHCP agent needs a moment to start dnsmasq for the new network; dhclient -1 tries once per call.
    await waitFor(async () => {
      await execute(['dhclient', '-1', '-pf', pf, '-lf', join(tmp, 'leases'), 'eth0'], { netns: g.ns, timeoutMs: 20_000 }).catch(() => undefined);
      return (await execute(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'], { netns: g.ns })).includes(port.fixed_ips[0]!.ip_address);
    }, 40_000, 500, 'DHCP lease');
    t.diagnostic(`isolated guest leased ${Date.now() - t0} ms after creating the network`);
    const routes = await execute(['ip', '-4', 'route'], { netns: g.ns });
    assert.match(routes, /169\.254\.169\.254 via 172\.17\.17\.\d+ dev eth0/);
    const meta = JSON.parse(await waitFor(() => curl(g, 'http://169.254.169.254/openstack/latest/meta_data.json').catch(() => ''), 15_000, 200, 'metadata')) as { uuid: string };
    assert.equal(meta.uuid, id);
  });
});

describe('agent shutdown', () => {
  test('SIGTERM stops each agent promptly and leaves its proxies and dnsmasq serving (adopted on the next start)', async (t) => {
    const pidsDir = join(state, 'external', 'pids');
    const children = readdirSync(pidsDir).map((f) => Number(readFileSync(join(pidsDir, f), 'utf8')));
    assert.ok(children.length >= 3, `proxies: ${children.length}`);
    for (const name of ['quantum-l3-agent', 'quantum-dhcp-agent']) {
      const main = name === 'quantum-l3-agent' ? 'l3-agent/main.js' : 'dhcp-agent/main.js';
      const d = daemons.find((x) => x.proc.spawnargs.some((a) => a.endsWith(main)))!;
      const t0 = Date.now();
      const exited = new Promise<number | null>((r) => d.proc.once('exit', (code) => r(code)));
      d.proc.kill('SIGTERM');
      const code = await exited;
      const took = Date.now() - t0;
      t.diagnostic(`${name} stopped in ${took} ms`);
      assert.equal(code, 0);
      assert.ok(took < 3000, `${name} took ${took} ms to stop`);
    }
    for (const p of children) assert.ok(readFileSync(`/proc/${p}/cmdline`, 'utf8').length > 0, `child ${p} still running`);
  });
});
