// Several network nodes on one machine: a real quantum-server scheduling routers over two real
// quantum-l3-agent processes (distinct hosts), changes cast over a real RabbitMQ (a private broker node),
// guests in real namespaces reaching each router's metadata proxy (a stand-in on the metadata socket echoes
// what the proxy sent). Covers: each agent builds only its own routers, a change is applied within a second,
// the queues an operator sees, a broker outage (polling, nothing lost), and failover after kill -9 of one
// agent and its proxies, with the returning agent tearing down nothing of the other's.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { QuantumClient } from '../src/common/quantum-client.js';
import { execute } from '../src/linux/exec.js';
import { bridgeName, routerDeviceName, routerNamespace, tapDeviceName } from '../src/linux/names.js';
import { NS_OWNER_DIR } from '../src/linux/ns-owner.js';
import { NetFixture, linkExistsSync, listNamespaces, uuid, type Guest } from './helpers/netns.js';
import { spawnDaemon, waitFor, type Daemon } from './helpers/proc.js';
import { startQuantumServer, type RunningQuantum } from './helpers/quantum-server.js';
import { rabbitSkipReason, startRabbit, type TestRabbit } from './helpers/rabbitmq.js';

const skip = rabbitSkipReason();

function suite(mode: 'per-namespace' | 'shared'): void {
    const fx = new NetFixture();
  const HOSTS = [`${fx.prefix}-na`, `${fx.prefix}-nb`];
  let rabbit: TestRabbit;
  let qs: RunningQuantum;
  let q: QuantumClient;
  let standIn: Server;
  let dir: string;
  const agents = new Map<string, Daemon>();
  const states = new Map<string, string>();

  function writeAgentConf(host: string, socket: string): string {
    const st = states.get(host) ?? fx.statePath();
    states.set(host, st);
    const f = join(st, 'l3_agent.ini');
    writeFileSync(
      f,
      `[DEFAULT]\nstate_path = ${st}\nquantum_url = ${qs.url}\nhost = ${host}\npolling_interval = 1\nperiodic_interval = 5\nmetadata_proxy_socket = ${socket}\ntransport_url = ${rabbit.url}\nmetadata_proxy_mode = ${mode}\n` +
        `[AGENT]\nreport_interval = 1\ncheck_child_processes_interval = 1\n[oslo_messaging_rabbit]\nrabbit_retry_interval = 1\nrabbit_retry_backoff = 0\nrabbit_interval_max = 1\nheartbeat_timeout_threshold = 2\n`,
    );
    return f;
  }

  function startAgent(host: string): Daemon {
    const d = spawnDaemon('l3-agent/main.js', ['--config-file', writeAgentConf(host, join(dir, 'metadata_proxy'))]);
    agents.set(host, d);
    return d;
  }

  interface Tenant {
    routerId: string;
    networkId: string;
    subnetId: string;
    guest: Guest;
  }
  const tenants: Tenant[] = [];

  /** A network, subnet (the same CIDR for everyone), router + interface, and a guest plugged on the network. */
  async function tenant(i: number): Promise<Tenant> {
    const net = await q.createNetwork({ name: `${fx.prefix}-n${i}` });
    fx.trackBridge(bridgeName(net.id));
    const sub = await q.createSubnet({ network_id: net.id, cidr: '10.77.0.0/24', ip_version: 4, enable_dhcp: false });
    const r = await q.createRouter({ name: `${fx.prefix}-r${i}` });
    fx.trackNamespace(routerNamespace(r.id));
    const info = await q.addRouterInterface(r.id, { subnet_id: sub.id });
    fx.trackLink(tapDeviceName(info.port_id));
    const vm = await q.createPort({ network_id: net.id, device_owner: 'compute:nova', device_id: uuid() });
    const guest = fx.guest({ bridge: bridgeName(net.id), mac: vm.mac_address, cidr: `${vm.fixed_ips[0]!.ip_address}/24`, gateway: sub.gateway_ip! });
    const t = { routerId: r.id, networkId: net.id, subnetId: sub.id, guest };
    tenants.push(t);
    return t;
  }

  /** The router id the guest's metadata request arrives with, or undefined when it gets no answer. */
  async function servedBy(g: Guest): Promise<string | undefined> {
    try {
      const out = await execute(['curl', '-s', '-m', '2', 'http://169.254.169.254/latest/meta-data/instance-id'], { netns: g.ns });
      return (JSON.parse(out) as { headers: Record<string, string> }).headers['x-neutron-router-id'];
    } catch {
      return undefined;
    }
  }

  async function hostOf(routerId: string): Promise<string | undefined> {
    return (await q.listL3AgentsHostingRouter(routerId))[0]?.host;
  }

  const owner = (routerId: string) => {
    try {
      return (JSON.parse(readFileSync(join(NS_OWNER_DIR, routerNamespace(routerId)), 'utf8')) as { host: string }).host;
    } catch {
      return undefined;
    }
  };

  describe(`two network nodes, scheduling and RabbitMQ (metadata_proxy_mode = ${mode})`, { skip }, () => {
    before(async () => {
      if (skip) return;
      dir = fx.statePath();
      rabbit = await startRabbit();
      qs = await startQuantumServer(dir, ['--transport_url', rabbit.url, '--agent_down_time', '3', '--allow_automatic_l3agent_failover']);
      q = qs.client;
      standIn = createServer((req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ path: req.url, headers: req.headers }));
      });
      await new Promise<void>((r) => standIn.listen(join(dir, 'metadata_proxy'), r));
      for (const h of HOSTS) startAgent(h);
      await waitFor(async () => (await q.listAgents({ agent_type: 'L3 agent' })).filter((a) => a.alive).length === 2, 20_000, 100, 'both L3 agents registered');
    });

    after(async () => {
      for (const d of agents.values()) await d.stop().catch(() => undefined);
      standIn?.close();
      await qs?.stop();
      await rabbit?.stop();
      fx.cleanup();
    });

    test('routers are spread over both agents; each agent builds only the routers scheduled to it', async () => {
      for (let i = 0; i < 4; i++) await tenant(i);
      for (const t of tenants) {
        const h = await hostOf(t.routerId);
        assert.ok(h && HOSTS.includes(h), `router ${t.routerId} hosted by ${h}`);
        await waitFor(async () => (await servedBy(t.guest)) === t.routerId, 15_000, 100, `guest behind router on ${h} served`);
        assert.equal(owner(t.routerId), h, 'the namespace was built by the hosting agent');
      }
      const hosts = new Set(await Promise.all(tenants.map((t) => hostOf(t.routerId))));
      assert.equal(hosts.size, 2, 'LeastRoutersScheduler used both agents');
    });

    test('a change is applied within a second over RabbitMQ', async (t) => {
      const times: number[] = [];
      for (let i = 0; i < 3; i++) {
        const tn = tenants[i]!;
        const net = await q.createNetwork({ name: `${fx.prefix}-x${i}` });
        fx.trackBridge(bridgeName(net.id));
        const sub = await q.createSubnet({ network_id: net.id, cidr: `10.78.${i}.0/24`, ip_version: 4, enable_dhcp: false });
        const t0 = Date.now();
        const info = await q.addRouterInterface(tn.routerId, { subnet_id: sub.id });
        fx.trackLink(tapDeviceName(info.port_id));
        await waitFor(() => linkExistsSync(routerDeviceName(info.port_id), routerNamespace(tn.routerId)), 5000, 10, 'new qr- device');
        times.push(Date.now() - t0);
      }
      times.sort((a, b) => a - b);
      t.diagnostic(`interface add → qr- device in the namespace: ${times.join(', ')} ms`);
      assert.ok(times[1]! < 1000, `median ${times[1]} ms`);
    });

    test('rabbitmqctl list_queues shows the agents\' topic, per-host and fanout queues, consumed', async () => {
      const qs2 = await rabbit.listQueues();
      const names = qs2.map((x) => x.name);
      for (const h of HOSTS) {
        const mine = qs2.find((x) => x.name === `l3_agent.${h}`);
        assert.ok(mine, `l3_agent.${h} in ${names.join(', ')}`);
        assert.equal(mine.consumers, 1);
      }
      assert.ok(names.includes('l3_agent'));
      assert.equal(names.filter((n) => /^l3_agent_fanout_[0-9a-f]{32}$/.test(n)).length, 2);
    });

    test('RabbitMQ down: the API keeps serving, agents poll and build; back: they reconnect and changes are pushed again', async () => {
      await rabbit.down();
      try {
        const tn = await tenant(10);
        const h = await hostOf(tn.routerId);
        // polling_interval = 1: well within polling_interval + 2 s of the agent noticing.
        await waitFor(async () => (await servedBy(tn.guest)) === tn.routerId, 15_000, 100, `router on ${h} built while RabbitMQ is down`);
      } finally {
        await rabbit.up();
      }
      await waitFor(async () => (await rabbit.listQueues()).filter((x) => x.name.startsWith('l3_agent.') && x.consumers === 1).length === 2, 20_000, 200, 'both agents consuming again');
      const tn = tenants[0]!;
      const net = await q.createNetwork({ name: `${fx.prefix}-after` });
      fx.trackBridge(bridgeName(net.id));
      const sub = await q.createSubnet({ network_id: net.id, cidr: '10.79.0.0/24', ip_version: 4, enable_dhcp: false });
      const t0 = Date.now();
      const info = await q.addRouterInterface(tn.routerId, { subnet_id: sub.id });
      fx.trackLink(tapDeviceName(info.port_id));
      await waitFor(() => linkExistsSync(routerDeviceName(info.port_id), routerNamespace(tn.routerId)), 5000, 10, 'change after the outage');
      assert.ok(Date.now() - t0 < 1500, `${Date.now() - t0} ms`);
    });

    test('failover: kill -9 of an agent and its proxies moves its routers to the other, served again; the returning agent tears nothing down', async (t) => {
      const victim = HOSTS[0]!;
      const survivor = HOSTS[1]!;
      const mine: Tenant[] = [];
      for (const tn of tenants) if ((await hostOf(tn.routerId)) === victim) mine.push(tn);
      assert.ok(mine.length > 0, 'the victim hosts some routers');
      const st = states.get(victim)!;
      const proxies = fx.pidsFromStatePath(st);
      const t0 = Date.now();
      agents.get(victim)!.proc.kill('SIGKILL');
      for (const p of proxies) process.kill(p, 'SIGKILL');
      for (const tn of mine) await waitFor(async () => (await servedBy(tn.guest)) === tn.routerId, 30_000, 200, 'guest served again after failover');
      t.diagnostic(`${mine.length} routers served again ${Date.now() - t0} ms after the kill (agent_down_time = 3 s)`);
      // Their namespaces were on this machine: the survivor served them before checking them.
      const adopted = [...agents.get(survivor)!.output().matchAll(/"routers":(\d+),"ms":\d+,"msg":"serving adopted routers; checking them next"/g)].reduce((n, m) => n + Number(m[1]), 0);
      assert.equal(adopted, mine.length, 'adopted routers served ahead of their checks');
      for (const tn of tenants) {
        const hosting = await q.listL3AgentsHostingRouter(tn.routerId);
        assert.equal(hosting.length, 1, 'hosted exactly once');
      }
      for (const tn of mine) {
        assert.equal(await hostOf(tn.routerId), survivor);
        assert.equal(owner(tn.routerId), survivor, 'the survivor took the namespace over');
      }
      // The victim comes back: it gives up what is no longer its own without tearing it down.
      await agents.get(victim)!.stop();
      startAgent(victim);
      await waitFor(async () => {
        const a = (await q.listAgents({ host: victim, agent_type: 'L3 agent' }))[0];
        return a?.alive && (a.configurations as { routers?: number }).routers === 0 && Date.parse(`${a.started_at.replace(' ', 'T')}Z`) > t0;
      }, 20_000, 200, 'the returning agent synced');
      await new Promise((r) => setTimeout(r, 1500));
      for (const tn of mine) {
        assert.ok(listNamespaces().includes(routerNamespace(tn.routerId)), 'namespace kept');
        assert.equal(await servedBy(tn.guest), tn.routerId, 'still served by the survivor');
      }
      assert.ok(!existsSync(join(st, 'external', 'pids', `${mine[0]!.routerId}.pid`)));
    });
  });
}

suite('per-namespace');
suite('shared');
