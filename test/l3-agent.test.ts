// quantum-l3-agent in real namespaces against a real quantum-server: a guest on the router's network reaches
// the router's metadata proxy at 169.254.169.254 (here the metadata agent's socket is served by a small
// stand-in that echoes the headers it got), the rules read back from iptables-save, kill -9 of the proxy,
// live interface changes, restart adoption, stale cleanup limited to our own namespaces, router delete.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/common/config.js';

import type { Network, Port, QuantumClient, Router, Subnet } from '../src/common/quantum-client.js';
import { IptablesManager } from '../src/linux/iptables.js';
import { execute } from '../src/linux/exec.js';
import { netnsPids } from '../src/linux/ip-lib.js';
import { bridgeName, routerDeviceName, routerNamespace, tapDeviceName } from '../src/linux/names.js';
import { L3Agent } from '../src/l3-agent/agent.js';
import { NS_OWNER_DIR } from '../src/linux/ns-owner.js';
import { l3AgentSpec, validateL3Conf } from '../src/l3-agent/opts.js';
import { ConfigError } from '../src/common/errors.js';
import { NetFixture, linkExistsSync, listNamespaces, nsExec, processGone, uuid, type Guest } from './helpers/netns.js';
import { agentTestLog as testLog, startAgentBackend, type AgentBackend } from './helpers/agents.js';
import { waitFor } from './helpers/proc.js';

const fx = new NetFixture();
let backend: AgentBackend | undefined;
let q: QuantumClient;
let state: string;
let confFile: string;
const agents: L3Agent[] = [];

function makeAgent(extra: string[] = []): L3Agent {
  const { conf } = loadConfig(l3AgentSpec, ['--config-file', confFile, ...extra], { prog: 'quantum-l3-agent', description: '' });
  validateL3Conf(conf);
  const a = new L3Agent(conf, testLog);
  agents.push(a);
  return a;
}

// Async on purpose: the stand-in metadata agent lives in this process, so a blocking exec would starve it.
function curl(g: Guest, url: string, args: string[] = []): Promise<string> {
  return execute(['curl', '-s', '-m', '5', ...args, url], { netns: g.ns });
}

before(async () => {
  state = fx.statePath();
  // quantum-server, and a stand-in for quantum-metadata-agent on the proxy socket echoing what the proxy sent.
  backend = await startAgentBackend(state);
  const port = backend.quantum.port;
  q = backend.quantum.client;
  confFile = join(state, 'l3_agent.ini');
  writeFileSync(
    confFile,
    `[DEFAULT]\nstate_path = ${state}\nquantum_url = http://127.0.0.1:${port}\nhost = ${fx.prefix}-net1\ninterface_driver = linuxbridge\npolling_interval = 1\n` +
      `[AGENT]\nreport_interval = 1\ncheck_child_processes_interval = 1\ncheck_child_processes_action = respawn\n`,
  );
});

after(async () => {
  for (const a of agents) await a.stop().catch(() => undefined);
  await backend?.stop();
  fx.cleanup();
});

describe('options', () => {
  test('only the linuxbridge interface driver is accepted; bad mark rejected', () => {
    assert.throws(() => makeAgent(['--interface_driver', 'quantum.agent.linux.interface.OVSInterfaceDriver']), ConfigError);
    assert.throws(() => makeAgent(['--metadata_access_mark', 'zz']), ConfigError);
    const { conf } = loadConfig(l3AgentSpec, [], { prog: 'x', description: '' });
    assert.equal(conf.DEFAULT.metadata_port, 9697);
    assert.equal(conf.DEFAULT.polling_interval, 2);
    assert.equal(conf.DEFAULT.enable_metadata_proxy, true);
    assert.equal(conf.AGENT.check_child_processes_interval, 60);
    assert.equal(conf.DEFAULT.state_path, '/var/lib/quantum');
  });
});

describe('router namespace with metadata proxy', () => {
  let net: Network;
  let sub: Subnet;
  let router: Router;
  let rport: Port;
  let vm: Port;
  let guest: Guest;
  let agent: L3Agent;
  let ns: string;

  before(async () => {
    net = await q.createNetwork({ name: `${fx.prefix}-n1` });
    fx.trackBridge(bridgeName(net.id));
    sub = await q.createSubnet({ network_id: net.id, cidr: '10.61.1.0/24', ip_version: 4 });
    router = await q.createRouter({ name: `${fx.prefix}-r1` });
    ns = fx.trackNamespace(routerNamespace(router.id));
    const info = await q.addRouterInterface(router.id, { subnet_id: sub.id });
    rport = await q.showPort(info.port_id);
    fx.trackLink(tapDeviceName(rport.id));
    vm = await q.createPort({ network_id: net.id, device_owner: 'compute:nova', device_id: uuid() });
    agent = makeAgent();
    agent.start();
    await waitFor(() => existsSync(join(state, 'external', 'pids', `${router.id}.pid`)) && agent.syncs > 0, 15_000, 50, 'router namespace and proxy');
    guest = fx.guest({ bridge: bridgeName(net.id), mac: vm.mac_address, cidr: `${vm.fixed_ips[0]!.ip_address}/24`, gateway: sub.gateway_ip! });
  });

  test('namespace, qr- device with MAC and address, forwarding on', () => {
    assert.ok(listNamespaces().includes(ns));
    const dev = routerDeviceName(rport.id);
    const link = JSON.parse(nsExec(ns, ['ip', '-j', 'addr', 'show', 'dev', dev])) as { address: string; addr_info: { local: string; prefixlen: number; family: string }[] }[];
    assert.equal(link[0]!.address, rport.mac_address);
    assert.ok(link[0]!.addr_info.some((a) => a.local === sub.gateway_ip && a.prefixlen === 24));
    assert.equal(nsExec(ns, ['sysctl', '-n', 'net.ipv4.ip_forward']).trim(), '1');
    assert.equal(readFileSync(`/sys/class/net/${tapDeviceName(rport.id)}/master/uevent`, 'utf8').includes(`INTERFACE=${bridgeName(net.id)}`), true);
    // Claimed machine-wide, so another agent on this machine never tears it down.
    assert.deepEqual(JSON.parse(readFileSync(join(NS_OWNER_DIR, ns), 'utf8')), { host: `${fx.prefix}-net1`, binary: 'quantum-l3-agent', state_path: state });
  });

  test('iptables rules read back from iptables-save exactly as Neutron writes them', async () => {
    const filter = await IptablesManager.readRules('filter', ns);
    const nat = await IptablesManager.readRules('nat', ns);
    const mangle = await IptablesManager.readRules('mangle', ns);
    for (const r of [
      '-A INPUT -j quantum-l3-agent-INPUT',
      '-A FORWARD -j quantum-l3-agent-FORWARD',
      '-A quantum-l3-agent-FORWARD -j quantum-l3-agent-scope',
      '-A quantum-l3-agent-INPUT -m mark --mark 0x1/0xffff -j ACCEPT',
      '-A quantum-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP',
      '-A quantum-l3-agent-scope -m mark --mark 0x1/0xffff -j DROP',
    ])
      assert.ok(filter.includes(r), `missing ${r} in\n${filter.join('\n')}`);
    assert.ok(nat.includes('-A quantum-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697'), nat.join('\n'));
    assert.ok(mangle.includes('-A quantum-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff'), mangle.join('\n'));
    // INPUT order matters: accept marked before dropping the port.
    assert.ok(filter.indexOf('-A quantum-l3-agent-INPUT -m mark --mark 0x1/0xffff -j ACCEPT') < filter.indexOf('-A quantum-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP'));
  });

  test('the guest reaches the proxy at 169.254.169.254, which forwards its address and the router id', async () => {
    const body = JSON.parse(await curl(guest, 'http://169.254.169.254/latest/meta-data/instance-id', ['-H', 'X-Forwarded-For: 6.6.6.6', '-H', `X-Neutron-Router-ID: ${uuid()}`])) as { path: string; headers: Record<string, string> };
    assert.equal(body.path, '/latest/meta-data/instance-id');
    assert.equal(body.headers['x-forwarded-for'], vm.fixed_ips[0]!.ip_address);
    assert.equal(body.headers['x-neutron-router-id'], router.id);
  });

  test('the proxy port itself is not reachable from the guest (INPUT drop), only through the redirect', async () => {
    const r = await curl(guest, `http://${sub.gateway_ip}:9697/`, ['-m', '2']).catch((e: Error) => `failed: ${e.message}`);
    assert.match(r, /^failed/);
  });

  test('kill -9 of the proxy: back within 2 s with a new pid, and serving', async (t) => {
    const pidFile = join(state, 'external', 'pids', `${router.id}.pid`);
    const old = Number(readFileSync(pidFile, 'utf8'));
    const t0 = Date.now();
    process.kill(old, 'SIGKILL');
    const pid = await waitFor(() => {
      const p = Number(readFileSync(pidFile, 'utf8'));
      return p !== old && !processGone(p) && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(router.id) ? p : undefined;
    }, 3000, 20, 'respawned proxy');
    const took = Date.now() - t0;
    t.diagnostic(`respawned in ${took} ms`);
    assert.ok(took < 2000, `respawn took ${took} ms`);
    assert.notEqual(pid, old);
    await waitFor(async () => JSON.parse(await curl(guest, 'http://169.254.169.254/x')).headers['x-neutron-router-id'] === router.id, 3000, 50, 'respawned proxy serving');
  });

  test('interfaces are added and removed live', async () => {
    const net2 = await q.createNetwork({ name: `${fx.prefix}-n2` });
    fx.trackBridge(bridgeName(net2.id));
    const sub2 = await q.createSubnet({ network_id: net2.id, cidr: '10.62.0.0/24', ip_version: 4 });
    const info = await q.addRouterInterface(router.id, { subnet_id: sub2.id });
    fx.trackLink(tapDeviceName(info.port_id));
    const dev = routerDeviceName(info.port_id);
    await waitFor(() => linkExistsSync(dev, ns), 5000, 50, 'second qr- device');
    await waitFor(() => nsExec(ns, ['ip', '-4', 'addr', 'show', 'dev', dev]).includes('10.62.0.1/24'), 5000, 50, 'address');
    assert.ok(linkExistsSync(bridgeName(net2.id)));
    await q.removeRouterInterface(router.id, { subnet_id: sub2.id });
    await waitFor(() => !linkExistsSync(dev, ns), 5000, 50, 'second qr- device gone');
    assert.equal(linkExistsSync(tapDeviceName(info.port_id)), false);
    await waitFor(() => !linkExistsSync(bridgeName(net2.id)), 3000, 50, 'empty bridge removed');
  });

  test('the agent reports its state as "L3 agent"', async () => {
    const list = await waitFor(async () => {
      const a = await q.listAgents({ host: `${fx.prefix}-net1` });
      return a.length ? a : undefined;
    }, 5000);
    assert.equal(list[0]!.agent_type, 'L3 agent');
    assert.equal(list[0]!.binary, 'quantum-l3-agent');
    assert.equal(list[0]!.topic, 'l3_agent');
  });

  test('a restarted agent adopts the namespace and the running proxy (no duplicate)', async () => {
    const pidFile = join(state, 'external', 'pids', `${router.id}.pid`);
    const before = Number(readFileSync(pidFile, 'utf8'));
    await agent.stop();
    agent = makeAgent();
    agent.start();
    await waitFor(() => agent.syncs > 0, 10_000);
    assert.equal(Number(readFileSync(pidFile, 'utf8')), before);
    const proxies = (await netnsPids(ns)).filter((p) => (readFileSync(`/proc/${p}/cmdline`, 'utf8') || '').includes('ns-proxy'));
    assert.deepEqual(proxies, [before]);
    assert.equal(JSON.parse(await curl(guest, 'http://169.254.169.254/')).headers['x-neutron-router-id'], router.id);
  });

  test('router delete: proxy, pid file, rules, devices and namespace are gone', async () => {
    const pidFile = join(state, 'external', 'pids', `${router.id}.pid`);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await q.removeRouterInterface(router.id, { subnet_id: sub.id });
    await q.deleteRouter(router.id);
    await waitFor(() => !listNamespaces().includes(ns), 10_000, 50, 'namespace removed');
    assert.equal(existsSync(pidFile), false);
    assert.ok(processGone(pid));
    assert.equal(linkExistsSync(tapDeviceName(rport.id)), false);
    // The claim goes last.
    await waitFor(() => !existsSync(join(NS_OWNER_DIR, ns)), 3000, 50, 'claim released');
  });
});

describe('restart cleanup touches only namespaces this agent made', () => {
  test('stale own namespace removed, a foreign qrouter- namespace kept', async () => {
    for (const a of agents) await a.stop();
    const net = await q.createNetwork({ name: `${fx.prefix}-n3` });
    fx.trackBridge(bridgeName(net.id));
    const sub = await q.createSubnet({ network_id: net.id, cidr: '10.63.0.0/24', ip_version: 4 });
    const router = await q.createRouter({ name: `${fx.prefix}-r3` });
    const ns = fx.trackNamespace(routerNamespace(router.id));
    const info = await q.addRouterInterface(router.id, { subnet_id: sub.id });
    fx.trackLink(tapDeviceName(info.port_id));
    // A router namespace of "another stack" on this machine, unknown to our state file.
    const foreign = fx.namespace(routerNamespace(uuid()));
    let a = makeAgent();
    a.start();
    await waitFor(() => existsSync(join(state, 'external', 'pids', `${router.id}.pid`)), 10_000, 50, 'proxy');
    const pid = Number(readFileSync(join(state, 'external', 'pids', `${router.id}.pid`), 'utf8'));
    await a.stop();
    // While the agent is down, the router goes away.
    await q.removeRouterInterface(router.id, { subnet_id: sub.id });
    await q.deleteRouter(router.id);
    a = makeAgent();
    a.start();
    await waitFor(() => !listNamespaces().includes(ns), 15_000, 50, 'stale namespace removed');
    assert.ok(listNamespaces().includes(foreign), 'foreign namespace kept');
    assert.ok(processGone(pid));
    assert.equal(linkExistsSync(tapDeviceName(info.port_id)), false);
    assert.equal(existsSync(join(state, 'external', 'pids', `${router.id}.pid`)), false);
    await a.stop();
  });
});


describe('enable_metadata_proxy = False', () => {
  test('only the mark and the scope drop are installed, no REDIRECT, no INPUT rules, no proxy (an adopted one is stopped)', async () => {
    for (const a of agents) await a.stop();
    const net = await q.createNetwork({ name: `${fx.prefix}-n4` });
    fx.trackBridge(bridgeName(net.id));
    const sub = await q.createSubnet({ network_id: net.id, cidr: '10.64.0.0/24', ip_version: 4 });
    const router = await q.createRouter({ name: `${fx.prefix}-r4` });
    const ns = fx.trackNamespace(routerNamespace(router.id));
    const info = await q.addRouterInterface(router.id, { subnet_id: sub.id });
    fx.trackLink(tapDeviceName(info.port_id));
    // First with the proxy on, then restarted with it off: the adopted proxy and its rules go.
    const on = makeAgent();
    on.start();
    const pidFile = join(state, 'external', 'pids', `${router.id}.pid`);
    await waitFor(() => existsSync(pidFile), 10_000, 50, 'proxy');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await on.stop();
    const a = makeAgent(['--noenable_metadata_proxy']);
    a.start();
    await waitFor(() => linkExistsSync(routerDeviceName(info.port_id), ns), 10_000, 50, 'router plumbing');
    await waitFor(() => a.syncs > 1, 5000);
    assert.ok(processGone(pid));
    const all = [...(await IptablesManager.readRules('filter', ns)), ...(await IptablesManager.readRules('nat', ns)), ...(await IptablesManager.readRules('mangle', ns))];
    const ours = all.filter((r) => /^-A quantum-l3-agent-\S+ /.test(r));
    assert.deepEqual(ours.sort(), [
      '-A quantum-l3-agent-FORWARD -j quantum-l3-agent-scope',
      '-A quantum-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff',
      '-A quantum-l3-agent-scope -m mark --mark 0x1/0xffff -j DROP',
    ]);
    assert.equal(existsSync(join(state, 'external', 'pids', `${router.id}.pid`)), false);
    await q.removeRouterInterface(router.id, { subnet_id: sub.id });
    await q.deleteRouter(router.id);
    await waitFor(() => !listNamespaces().includes(ns), 10_000, 50, 'namespace removed');
    await a.stop();
  });
});
