// The whole chain, every piece a real daemon: quantum-server, nova-api (service_metadata_proxy=True with a
// shared secret), quantum-metadata-agent, quantum-l3-agent and quantum-dhcp-agent. Two tenants with the very
// same guest IP behind their own routers each get their own instance's metadata; a guest on an isolated
// network gets its address by dhclient and its metadata through the qdhcp proxy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QuantumClient, type Network, type Port } from '../src/common/quantum-client.js';
import { execute } from '../src/linux/exec.js';
import { bridgeName, dhcpNamespace, routerNamespace } from '../src/linux/names.js';
import { NetFixture, type Guest } from './helpers/netns.js';
import { killDhclients } from './helpers/agents.js';
import { startNodeStack, type NodeStack } from './helpers/node-stack.js';
import { waitFor } from './helpers/proc.js';

const fx = new NetFixture();
let stack: NodeStack;
let q: QuantumClient;
let state: string;
const dhclientPids: string[] = [];
const IMAGE = '9f1a0c52-6b6e-4d0e-9a55-2f4c3b1d7e10';
const nova = <T>(method: string, path: string, project: string, body?: unknown): Promise<T> => stack.nova<T>(method, path, project, body);

// A short connect timeout: while the router or its proxy is still being built, a SYN may go unanswered.
const curl = (g: Guest, url: string) => execute(['curl', '-s', '--connect-timeout', '1', '-m', '10', url], { netns: g.ns });

before(async () => {
  stack = await startNodeStack(fx, { host: `${fx.prefix}-e2e` });
  ({ q, state } = stack);
});

after(async () => {
  killDhclients(dhclientPids);
  await stack?.stop();
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
      const d = stack.daemon(main)!;
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
