// quantum-dhcp-agent in real namespaces against a real quantum-server: dnsmasq serves a guest running the real
// dhclient, which gets its address and the 169.254.169.254 route by option 121, and its curl reaches the
// qdhcp proxy (the metadata agent's socket is served by a stand-in echoing the headers). Also: files, SIGHUP
// reloads, kill -9 respawn, the isolated → routed transition, and the teardown when DHCP goes away.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomUUID } from 'node:crypto';
import { loadConfig } from '../src/common/config.js';

import { ConfigError } from '../src/common/errors.js';
import type { Network, Port, QuantumClient, Subnet } from '../src/common/quantum-client.js';
import { execute } from '../src/linux/exec.js';
import { bridgeName, dhcpNamespace, dhcpRootDeviceName, routerNamespace, tapDeviceName } from '../src/linux/names.js';
import { DhcpAgent, dhcpDeviceId, uuid5, NAMESPACE_DNS } from '../src/dhcp-agent/agent.js';
import { dhcpAgentSpec, validateDhcpConf } from '../src/dhcp-agent/opts.js';
import { NetFixture, linkExistsSync, listNamespaces, processGone, type Guest } from './helpers/netns.js';
import { agentTestLog as testLog, killDhclients, startAgentBackend, type AgentBackend } from './helpers/agents.js';
import { waitFor } from './helpers/proc.js';

const fx = new NetFixture();
let backend: AgentBackend | undefined;
let q: QuantumClient;
let state: string;
let confFile: string;
const agents: DhcpAgent[] = [];
const dhclientPids: string[] = [];

function makeAgent(extra: string[] = []): DhcpAgent {
  const { conf } = loadConfig(dhcpAgentSpec, ['--config-file', confFile, ...extra], { prog: 'quantum-dhcp-agent', description: '' });
  validateDhcpConf(conf);
  const a = new DhcpAgent(conf, testLog);
  agents.push(a);
  return a;
}

const inNs = (ns: string, argv: string[]) => execute(argv, { netns: ns });

before(async () => {
  state = fx.statePath();
  backend = await startAgentBackend(state);
  const port = backend.quantum.port;
  q = backend.quantum.client;
  confFile = join(state, 'dhcp_agent.ini');
  writeFileSync(
    confFile,
    `[DEFAULT]\nstate_path = ${state}\nquantum_url = http://127.0.0.1:${port}\nhost = ${fx.prefix}-dhcp1\ninterface_driver = linuxbridge\npolling_interval = 1\nenable_isolated_metadata = True\n` +
      `[AGENT]\nreport_interval = 1\ncheck_child_processes_interval = 1\n`,
  );
});

after(async () => {
  killDhclients(dhclientPids);
  for (const a of agents) await a.stop().catch(() => undefined);
  await backend?.stop();
  fx.cleanup();
});

describe('options and ids', () => {
  test('defaults as Neutron; only dnsmasq and linuxbridge', () => {
    const { conf } = loadConfig(dhcpAgentSpec, [], { prog: 'x', description: '' });
    assert.equal(conf.DEFAULT.dhcp_lease_duration, 86400);
    assert.equal(conf.DEFAULT.dhcp_domain, 'openstacklocal');
    assert.equal(conf.DEFAULT.enable_isolated_metadata, false);
    assert.equal(conf.DEFAULT.force_metadata, false);
    assert.equal(conf.DEFAULT.enable_metadata_network, false);
    assert.equal(conf.AGENT.check_child_processes_action, 'respawn');
    assert.throws(() => makeAgent(['--dhcp_driver', 'quantum.agent.linux.dhcp.Udhcpd']), ConfigError);
    assert.throws(() => makeAgent(['--interface_driver', 'ovs']), ConfigError);
  });

  test('device_id is dhcp<uuid5(DNS, host)>-<network> like Neutron', () => {
    assert.equal(uuid5(NAMESPACE_DNS, 'python.org'), '886313e1-3b8a-5372-9b90-0c9aee199e5d');
    assert.equal(dhcpDeviceId('net', 'python.org'), 'dhcp886313e1-3b8a-5372-9b90-0c9aee199e5d-net');
  });
});

describe('isolated network: dnsmasq, dhclient, option 121, metadata proxy on 169.254.169.254:80', () => {
  let net: Network;
  let sub: Subnet;
  let vm: Port;
  let dport: Port;
  let guest: Guest;
  let agent: DhcpAgent;
  let ns: string;
  let tmp: string;

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), `${fx.prefix}-dhc-`));
    net = await q.createNetwork({ name: `${fx.prefix}-iso` });
    fx.trackBridge(bridgeName(net.id));
    ns = fx.trackNamespace(dhcpNamespace(net.id));
    sub = await q.createSubnet({ network_id: net.id, cidr: '10.71.0.0/24', ip_version: 4, dns_nameservers: ['192.0.2.53'] });
    vm = await q.createPort({ network_id: net.id, device_owner: 'compute:nova', device_id: fx.prefix });
    agent = makeAgent();
    agent.start();
    await waitFor(async () => {
      const ports = await q.listPorts({ network_id: net.id, device_owner: 'network:dhcp' });
      if (ports.length !== 1) return undefined;
      dport = ports[0]!;
      fx.trackLink(dhcpRootDeviceName(dport.id));
      return existsSync(join(state, 'dhcp', net.id, 'pid')) && existsSync(join(state, 'external', 'pids', `${net.id}.pid`));
    }, 15_000, 100, 'dnsmasq and proxy');
  });

  test('DHCP port, namespace, tap device with its IP and 169.254.169.254/32', async () => {
    assert.equal(dport.device_id, dhcpDeviceId(net.id, `${fx.prefix}-dhcp1`));
    assert.equal(dport['binding:host_id'], `${fx.prefix}-dhcp1`);
    const dev = tapDeviceName(dport.id);
    const addrs = await inNs(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', dev]);
    assert.match(addrs, new RegExp(`${dport.fixed_ips[0]!.ip_address.replace(/\./g, '\\.')}/24`));
    assert.match(addrs, /169\.254\.169\.254\/32/);
    assert.ok(linkExistsSync(dhcpRootDeviceName(dport.id)));
    // The default route through the subnet's gateway, set in the same batch as the device.
    assert.match(await inNs(ns, ['ip', '-4', 'route', 'show', 'default']), new RegExp(`default via ${sub.gateway_ip!.replace(/\./g, '\\.')} dev ${dev}`));
  });

  test('hosts and opts files as Neutron writes them; dnsmasq argv', () => {
    const hosts = readFileSync(join(state, 'dhcp', net.id, 'host'), 'utf8');
    const ip = vm.fixed_ips[0]!.ip_address;
    assert.ok(hosts.includes(`${vm.mac_address},host-${ip.replace(/\./g, '-')}.openstacklocal,${ip}\n`), hosts);
    const dip = dport.fixed_ips[0]!.ip_address;
    assert.equal(
      readFileSync(join(state, 'dhcp', net.id, 'opts'), 'utf8'),
      `tag:tag0,option:dns-server,192.0.2.53\ntag:tag0,option:classless-static-route,169.254.169.254/32,${dip},0.0.0.0/0,10.71.0.1\n` +
        `tag:tag0,249,169.254.169.254/32,${dip},0.0.0.0/0,10.71.0.1\ntag:tag0,option:router,10.71.0.1\n`,
    );
    const pid = Number(readFileSync(join(state, 'dhcp', net.id, 'pid'), 'utf8'));
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    for (const a of ['dnsmasq', '--no-hosts', '--no-resolv', '--strict-order', '--except-interface=lo', '--leasefile-ro', '--bind-interfaces', `--interface=${tapDeviceName(dport.id)}`, '--dhcp-range=set:tag0,10.71.0.0,static,86400s', '--domain=openstacklocal'])
      assert.ok(cmd.includes(a), `${a} missing in ${cmd.join(' ')}`);
  });

  test('a guest running dhclient gets its address and the metadata route by option 121, and reaches the proxy', async () => {
    const resolvBefore = readFileSync('/etc/resolv.conf', 'utf8');
    guest = fx.guest({ bridge: bridgeName(net.id), mac: vm.mac_address });
    const pf = join(tmp, 'dhclient.pid');
    dhclientPids.push(pf);
    await inNs(guest.ns, ['dhclient', '-1', '-v', '-pf', pf, '-lf', join(tmp, 'dhclient.leases'), 'eth0']);
    const addr = await inNs(guest.ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    assert.match(addr, new RegExp(`inet ${vm.fixed_ips[0]!.ip_address.replace(/\./g, '\\.')}/24`));
    const routes = await inNs(guest.ns, ['ip', '-4', 'route', 'show']);
    assert.match(routes, new RegExp(`169\\.254\\.169\\.254 via ${dport.fixed_ips[0]!.ip_address.replace(/\./g, '\\.')} dev eth0`), routes);
    assert.match(routes, /default via 10\.71\.0\.1 dev eth0/);
    assert.equal(readFileSync('/etc/resolv.conf', 'utf8'), resolvBefore, 'host resolv.conf untouched');
    const body = JSON.parse(await inNs(guest.ns, ['curl', '-s', '-m', '5', '-H', 'X-Forwarded-For: 6.6.6.6', 'http://169.254.169.254/latest/meta-data/local-ipv4'])) as { path: string; headers: Record<string, string> };
    assert.equal(body.path, '/latest/meta-data/local-ipv4');
    assert.equal(body.headers['x-forwarded-for'], vm.fixed_ips[0]!.ip_address);
    assert.equal(body.headers['x-neutron-network-id'], net.id);
    assert.equal(body.headers['x-neutron-router-id'], undefined);
  });

  test('a new port reaches the hosts file and dnsmasq is reloaded in place (SIGHUP, same pid)', async () => {
    const pidFile = join(state, 'dhcp', net.id, 'pid');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const p2 = await q.createPort({ network_id: net.id, device_owner: 'compute:nova', device_id: `${fx.prefix}-2` });
    const ip = p2.fixed_ips[0]!.ip_address;
    await waitFor(() => readFileSync(join(state, 'dhcp', net.id, 'host'), 'utf8').includes(`${p2.mac_address},host-${ip.replace(/\./g, '-')}.openstacklocal,${ip}`), 5000, 50, 'hosts line');
    assert.equal(Number(readFileSync(pidFile, 'utf8')), pid);
    // The reload is real: a second guest with that MAC gets that address from the same dnsmasq.
    const g2 = fx.guest({ bridge: bridgeName(net.id), mac: p2.mac_address });
    const pf = join(tmp, 'dhclient2.pid');
    dhclientPids.push(pf);
    await waitFor(async () => {
      await inNs(g2.ns, ['dhclient', '-1', '-pf', pf, '-lf', join(tmp, 'dhclient2.leases'), 'eth0']).catch(() => undefined);
      return (await inNs(g2.ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])).includes(`inet ${ip}/24`);
    }, 20_000, 200, 'second guest lease');
    assert.equal(Number(readFileSync(pidFile, 'utf8')), pid);
  });

  test('kill -9 of dnsmasq and of the proxy: both back within 2 s', async (t) => {
    const dmPidFile = join(state, 'dhcp', net.id, 'pid');
    const pxPidFile = join(state, 'external', 'pids', `${net.id}.pid`);
    const dm = Number(readFileSync(dmPidFile, 'utf8'));
    const px = Number(readFileSync(pxPidFile, 'utf8'));
    const t0 = Date.now();
    process.kill(dm, 'SIGKILL');
    process.kill(px, 'SIGKILL');
    const alive = (f: string, old: number) => {
      try {
        const p = Number(readFileSync(f, 'utf8'));
        return p !== old && !processGone(p) && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(net.id);
      } catch {
        return false;
      }
    };
    await waitFor(() => alive(dmPidFile, dm) && alive(pxPidFile, px), 3000, 20, 'respawns');
    const took = Date.now() - t0;
    t.diagnostic(`respawned in ${took} ms`);
    assert.ok(took < 2000, `respawn took ${took} ms`);
    await waitFor(async () => JSON.parse(await inNs(guest.ns, ['curl', '-s', '-m', '2', 'http://169.254.169.254/'])).headers['x-neutron-network-id'] === net.id, 3000, 50, 'proxy serving again');
  });

  test('the agent reports its state as "DHCP agent"', async () => {
    const list = await waitFor(async () => {
      const a = await q.listAgents({ host: `${fx.prefix}-dhcp1` });
      return a.length ? a : undefined;
    }, 5000);
    assert.equal(list[0]!.agent_type, 'DHCP agent');
    assert.equal(list[0]!.binary, 'quantum-dhcp-agent');
    assert.equal(list[0]!.topic, 'dhcp_agent');
  });

  test('a router on the gateway makes the subnet routed: proxy stopped, 169.254.169.254 removed, route via the gateway', async () => {
    const router = await q.createRouter({ name: `${fx.prefix}-r` });
    fx.trackNamespace(routerNamespace(router.id));
    const info = await q.addRouterInterface(router.id, { subnet_id: sub.id });
    fx.trackLink(tapDeviceName(info.port_id));
    const pxPidFile = join(state, 'external', 'pids', `${net.id}.pid`);
    const px = Number(readFileSync(pxPidFile, 'utf8'));
    await waitFor(() => !existsSync(pxPidFile), 10_000, 50, 'proxy stopped');
    // The proxy removes its own pid file on SIGTERM just before it exits.
    await waitFor(() => processGone(px), 3000, 20, 'proxy process gone');
    const addrs = await inNs(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', tapDeviceName(dport.id)]);
    assert.doesNotMatch(addrs, /169\.254\.169\.254/);
    assert.equal(
      readFileSync(join(state, 'dhcp', net.id, 'opts'), 'utf8').split('\n')[1],
      'tag:tag0,option:classless-static-route,169.254.169.254/32,10.71.0.1,0.0.0.0/0,10.71.0.1',
    );
    await q.removeRouterInterface(router.id, { subnet_id: sub.id });
    await q.deleteRouter(router.id);
    await waitFor(() => existsSync(pxPidFile), 10_000, 50, 'proxy back once isolated again');
  });

  let sub2: Subnet | undefined;
  test('a second subnet: the DHCP port gets an IP on it, dnsmasq restarts with a second range, routes are on-link', async () => {
    const pidFile = join(state, 'dhcp', net.id, 'pid');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    sub2 = await q.createSubnet({ network_id: net.id, cidr: '10.72.0.0/24', ip_version: 4, gateway_ip: null });
    const p2 = await waitFor(async () => {
      const p = (await q.listPorts({ network_id: net.id, device_owner: 'network:dhcp' }))[0];
      return p && p.fixed_ips.some((f) => f.subnet_id === sub2!.id) ? p : undefined;
    }, 10_000, 100, 'DHCP port on the second subnet');
    const ip2 = p2.fixed_ips.find((f) => f.subnet_id === sub2!.id)!.ip_address;
    await waitFor(() => {
      try {
        const n = Number(readFileSync(pidFile, 'utf8'));
        return n !== pid && !processGone(n) && readFileSync(`/proc/${n}/cmdline`, 'utf8').includes('set:tag1,10.72.0.0,static,86400s');
      } catch {
        return false;
      }
    }, 10_000, 50, 'dnsmasq restarted with two ranges');
    assert.ok(processGone(pid));
    assert.match(await inNs(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', tapDeviceName(dport.id)]), new RegExp(`${ip2.replace(/\./g, '\\.')}/24`));
    const opts = readFileSync(join(state, 'dhcp', net.id, 'opts'), 'utf8').split('\n');
    const dip = dport.fixed_ips[0]!.ip_address;
    assert.ok(opts.includes(`tag:tag0,option:classless-static-route,10.72.0.0/24,0.0.0.0,169.254.169.254/32,${dip},0.0.0.0/0,10.71.0.1`), opts.join('\n'));
    assert.ok(opts.includes(`tag:tag1,option:classless-static-route,10.71.0.0/24,0.0.0.0,169.254.169.254/32,${ip2}`), opts.join('\n'));
    assert.ok(opts.includes('tag:tag1,option:router'), opts.join('\n'));
  });

  test('a restarted agent adopts dnsmasq and the proxy (same pids)', async () => {
    const dm = Number(readFileSync(join(state, 'dhcp', net.id, 'pid'), 'utf8'));
    const px = Number(readFileSync(join(state, 'external', 'pids', `${net.id}.pid`), 'utf8'));
    await agent.stop();
    // Another stack's DHCP namespace on this machine: not ours (no conf dir under our state path), never touched.
    const foreign = fx.namespace(dhcpNamespace(randomUUID()));
    agent = makeAgent();
    agent.start();
    await waitFor(() => agent.syncs > 1, 10_000);
    assert.ok(listNamespaces().includes(foreign));
    assert.equal(Number(readFileSync(join(state, 'dhcp', net.id, 'pid'), 'utf8')), dm);
    assert.equal(Number(readFileSync(join(state, 'external', 'pids', `${net.id}.pid`), 'utf8')), px);
  });

  test('DHCP disabled on the subnet: dnsmasq, proxy, port, devices, namespace and files are gone', async () => {
    const dm = Number(readFileSync(join(state, 'dhcp', net.id, 'pid'), 'utf8'));
    const px = Number(readFileSync(join(state, 'external', 'pids', `${net.id}.pid`), 'utf8'));
    await q.updateSubnet(sub.id, { enable_dhcp: false });
    if (sub2) await q.updateSubnet(sub2.id, { enable_dhcp: false });
    // The conf dir goes last.
    await waitFor(() => !existsSync(join(state, 'dhcp', net.id)), 10_000, 50, 'network torn down');
    assert.ok(!listNamespaces().includes(ns));
    assert.ok(processGone(dm));
    assert.ok(processGone(px));
    assert.equal(existsSync(join(state, 'dhcp', net.id)), false);
    assert.equal(existsSync(join(state, 'external', 'pids', `${net.id}.pid`)), false);
    assert.equal(linkExistsSync(dhcpRootDeviceName(dport.id)), false);
    assert.deepEqual(await q.listPorts({ network_id: net.id, device_owner: 'network:dhcp' }), []);
  });
});

describe('metadata_proxy_mode = shared: the isolated network is served by the agent\'s one proxy process', () => {
  test('a guest reaches 169.254.169.254 through the shared listener; no per-network process; teardown frees it', async () => {
    for (const a of agents) await a.stop();
    const net = await q.createNetwork({ name: `${fx.prefix}-shared` });
    fx.trackBridge(bridgeName(net.id));
    const ns = fx.trackNamespace(dhcpNamespace(net.id));
    const sub = await q.createSubnet({ network_id: net.id, cidr: '10.73.0.0/24', ip_version: 4 });
    const vm = await q.createPort({ network_id: net.id, device_owner: 'compute:nova', device_id: `${fx.prefix}-s` });
    const a = makeAgent(['--metadata_proxy_mode', 'shared']);
    a.start();
    const stateFile = join(state, 'external', 'shared-proxy', 'quantum-dhcp-agent.json');
    const listed = () => {
      try {
        return (JSON.parse(readFileSync(stateFile, 'utf8')) as { listeners: Array<{ tag: string }> }).listeners.some((l) => l.tag === `network:${net.id}`);
      } catch {
        return false;
      }
    };
    await waitFor(listed, 15_000, 100, 'the network listed by the shared proxy');
    const dport = (await q.listPorts({ network_id: net.id, device_owner: 'network:dhcp' }))[0]!;
    fx.trackLink(dhcpRootDeviceName(dport.id));
    const g = fx.guest({ bridge: bridgeName(net.id), mac: vm.mac_address, cidr: `${vm.fixed_ips[0]!.ip_address}/24`, gateway: sub.gateway_ip! });
    await inNs(g.ns, ['ip', 'route', 'add', '169.254.169.254/32', 'via', dport.fixed_ips[0]!.ip_address]);
    const body = JSON.parse(await inNs(g.ns, ['curl', '-s', '-m', '5', 'http://169.254.169.254/latest/meta-data/instance-id'])) as { headers: Record<string, string> };
    assert.equal(body.headers['x-neutron-network-id'], net.id);
    assert.equal(body.headers['x-forwarded-for'], vm.fixed_ips[0]!.ip_address);
    assert.equal(existsSync(join(state, 'external', 'pids', `${net.id}.pid`)), false, 'no per-network proxy process');
    const conf = (await q.listAgents({ host: `${fx.prefix}-dhcp1` }))[0]!.configurations as { metadata_proxy_mode?: string };
    await waitFor(async () => ((await q.listAgents({ host: `${fx.prefix}-dhcp1` }))[0]!.configurations as { metadata_proxies?: { alive: number } }).metadata_proxies?.alive === 1, 5000, 100, 'reported alive');
    assert.equal(conf.metadata_proxy_mode, 'shared');
    await q.updateSubnet(sub.id, { enable_dhcp: false });
    await waitFor(() => !listed() && !listNamespaces().includes(ns), 10_000, 50, 'listener removed and namespace gone');
    await a.stop();
    // The shared proxy outlives its agent (as haproxy outlives Neutron's): end it by its pid file.
    const pid = Number(readFileSync(join(state, 'external', 'pids', 'quantum-dhcp-agent-shared.pid'), 'utf8'));
    process.kill(pid, 'SIGTERM');
    await waitFor(() => processGone(pid), 5000, 50, 'shared proxy stopped');
  });
});
