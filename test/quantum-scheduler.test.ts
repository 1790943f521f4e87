// quantum-server's agent scheduling (Neutron's l3_agent_scheduler / dhcp_agent_scheduler extensions, drivers,
// auto-scheduling, failover) and the agents' RPC calls and notification log, against the real HTTP server
// (in-process) on SQLite and MariaDB.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../src/common/errors.js';
import { silentLogger } from '../src/common/log.js';
import { DHCP_PLUGIN_TOPIC, L3_PLUGIN_TOPIC, QuantumClient, type AgentReport, type ChangesReply, type NetworkInfo, type SyncRouter } from '../src/common/quantum-client.js';
import { startQuantumServer, type RunningQuantumServer } from '../src/quantum-server/app.js';
import type { Caster } from '../src/quantum-server/notifier.js';
import { backends, type TestDb } from './helpers/db.js';

const l3 = (host: string): AgentReport => ({ binary: 'quantum-l3-agent', host, agent_type: 'L3 agent', topic: 'l3_agent', configurations: {}, start_flag: true });
const dhcp = (host: string): AgentReport => ({ binary: 'quantum-dhcp-agent', host, agent_type: 'DHCP agent', topic: 'dhcp_agent', configurations: {}, start_flag: true });

/** Records what the server casts, as a RabbitMQ transport would send it. */
class RecordingCaster implements Caster {
  casts: Array<{ topic: string; method: string; args: Record<string, unknown>; server?: string | undefined }> = [];
  fanouts: Array<{ topic: string; method: string; args: Record<string, unknown> }> = [];
  notes: Array<{ eventType: string; payload: Record<string, unknown> }> = [];
  cast(topic: string, method: string, args: Record<string, unknown>, server?: string): boolean {
    this.casts.push({ topic, method, args, server });
    return true;
  }
  fanout(topic: string, method: string, args: Record<string, unknown>): boolean {
    this.fanouts.push({ topic, method, args });
    return true;
  }
  notify(eventType: string, payload: Record<string, unknown>): boolean {
    this.notes.push({ eventType, payload });
    return true;
  }
}

/** Poll the log until `ok` holds (MariaDB rows become visible to polls one second after they are written). */
async function pollUntil(get: () => Promise<ChangesReply>, ok: (r: ChangesReply) => boolean): Promise<ChangesReply> {
  const until = Date.now() + 5000;
  for (;;) {
    const r = await get();
    if (ok(r) || Date.now() > until) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function expectApiError(p: Promise<unknown>, status: number, type: string, message?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ApiError, String(e));
    assert.equal(e.status, status, e.message);
    assert.equal(e.type, type);
    if (message) assert.equal(e.message, message);
    return true;
  });
}

for (const mk of backends()) {
  describe(`agent scheduling (${mk.name})`, () => {
    let tdb: TestDb;
    let srv: RunningQuantumServer;
    let qc: QuantumClient;
    const caster = new RecordingCaster();

    before(async () => {
      tdb = await mk();
      srv = await startQuantumServer({ connection: tdb.url, host: '127.0.0.1', port: 0, log: silentLogger, agentDownTime: 75, caster, periodicTasks: false });
      qc = new QuantumClient({ url: srv.url });
    });
    after(async () => {
      await qc?.close();
      await srv?.close();
      await tdb?.drop();
    });

    /** A network with a subnet (DHCP on unless said) and, if asked, a router with an interface on it. */
    async function tenantNet(name: string, o: { dhcp?: boolean; router?: boolean } = {}) {
      const net = await qc.createNetwork({ name });
      const sub = await qc.createSubnet({ network_id: net.id, cidr: '10.9.0.0/24', ip_version: 4, enable_dhcp: o.dhcp ?? true });
      let router;
      if (o.router) {
        router = await qc.createRouter({ name: `r-${name}` });
        await qc.addRouterInterface(router.id, { subnet_id: sub.id });
      }
      return { net, sub, router };
    }

    test('a router created while no L3 agent lives stays unhosted; the first agent to register gets it', async () => {
      const r = await qc.createRouter({ name: 'early' });
      assert.deepEqual(await qc.listL3AgentsHostingRouter(r.id), []);
      const a = await qc.reportState(l3('sched-a'));
      assert.deepEqual((await qc.listL3AgentsHostingRouter(r.id)).map((x) => x.id), [a.id]);
      assert.ok(caster.casts.some((c) => c.topic === 'l3_agent' && c.server === 'sched-a' && c.method === 'router_added_to_agent' && (c.args.routers as string[]).includes(r.id)));
      await qc.deleteRouter(r.id);
      assert.ok(caster.casts.some((c) => c.server === 'sched-a' && c.method === 'router_deleted' && c.args.router_id === r.id));
    });

    test('LeastRoutersScheduler spreads new routers over the live L3 agents', async () => {
      const a = await qc.reportState(l3('sched-a'));
      const b = await qc.reportState(l3('sched-b'));
      const start = new Map([[a.id, (await qc.listRoutersOnL3Agent(a.id)).length], [b.id, (await qc.listRoutersOnL3Agent(b.id)).length]]);
      const made = [];
      for (let i = 0; i < 6; i++) made.push(await qc.createRouter({ name: `spread-${i}` }));
      const onA = (await qc.listRoutersOnL3Agent(a.id)).length - start.get(a.id)!;
      const onB = (await qc.listRoutersOnL3Agent(b.id)).length - start.get(b.id)!;
      assert.equal(onA + onB, 6);
      assert.ok(Math.abs(start.get(a.id)! + onA - (start.get(b.id)! + onB)) <= 1, `unbalanced: ${onA} / ${onB}`);
      for (const r of made) await qc.deleteRouter(r.id);
    });

    test("the l3_agent_scheduler API: Neutron's paths, bodies, statuses and faults", async () => {
      const a = await qc.reportState(l3('sched-a'));
      const b = await qc.reportState(l3('sched-b'));
      const d = await qc.reportState(dhcp('sched-d'));
      const r = await qc.createRouter({ name: 'manual' });
      const [host] = await qc.listL3AgentsHostingRouter(r.id);
      assert.ok(host);
      const other = host.id === a.id ? b : a;
      // Already hosted elsewhere: Neutron's RouterHostedByL3Agent.
      await expectApiError(qc.addRouterToL3Agent(other.id, r.id), 409, 'RouterHostedByL3Agent', `The router ${r.id} has been already hosted by the L3 Agent ${host.id}.`);
      // Again on the same agent: a no-op, 201.
      const again = await fetch(`${srv.url}/v2.0/agents/${host.id}/l3-routers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ router_id: r.id }) });
      assert.equal(again.status, 201);
      assert.equal(await again.text(), 'null');
      await expectApiError(qc.addRouterToL3Agent(d.id, r.id), 404, 'InvalidL3Agent', `Agent ${d.id} is not a L3 Agent or has been disabled`);
      await expectApiError(qc.addRouterToL3Agent(a.id, '7b0dcbf5-5d1c-4d2d-8c5e-9d1c1f4a0000'), 404, 'RouterNotFound');
      await expectApiError(qc.listRoutersOnL3Agent('00000000-0000-0000-0000-000000000000'), 404, 'AgentNotFound');
      await expectApiError(qc.removeRouterFromL3Agent(other.id, r.id), 409, 'RouterNotHostedByL3Agent', `The router ${r.id} is not hosted by L3 agent ${other.id}.`);
      const body = await fetch(`${srv.url}/v2.0/agents/${other.id}/l3-routers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      assert.equal(body.status, 400);
      // Move it by hand: remove (the router is unhosted), add elsewhere.
      caster.casts = [];
      await qc.removeRouterFromL3Agent(host.id, r.id);
      assert.deepEqual(await qc.listL3AgentsHostingRouter(r.id), []);
      assert.ok(caster.casts.some((c) => c.server === host.host && c.method === 'router_removed_from_agent' && c.args.router_id === r.id));
      await qc.addRouterToL3Agent(other.id, r.id);
      assert.deepEqual((await qc.listL3AgentsHostingRouter(r.id)).map((x) => x.host), [other.host]);
      assert.ok((await qc.listRoutersOnL3Agent(other.id)).some((x) => x.id === r.id));
      assert.ok(caster.casts.some((c) => c.server === other.host && c.method === 'router_added_to_agent'));
      // A disabled agent takes nothing new.
      await qc.request('PUT', `/v2.0/agents/${host.id}`, { agent: { admin_state_up: false } });
      await expectApiError(qc.addRouterToL3Agent(host.id, r.id), 404, 'InvalidL3Agent');
      await qc.request('PUT', `/v2.0/agents/${host.id}`, { agent: { admin_state_up: true } });
      await qc.deleteRouter(r.id);
      const ext = await qc.request<{ extensions: Array<{ alias: string }> }>('GET', '/v2.0/extensions');
      assert.ok(ext.extensions.some((x) => x.alias === 'l3_agent_scheduler') && ext.extensions.some((x) => x.alias === 'dhcp_agent_scheduler'));
    });

    test('DHCP: a network is scheduled once it has a DHCP subnet; dhcp_agents_per_network; the dhcp_agent_scheduler API', async () => {
      const d = await qc.reportState(dhcp('sched-d'));
      const e = await qc.reportState(dhcp('sched-e'));
      const { net: noDhcp } = await tenantNet('nodhcp', { dhcp: false });
      assert.deepEqual(await qc.listDhcpAgentsHostingNetwork(noDhcp.id), []);
      caster.casts = [];
      const { net } = await tenantNet('withdhcp');
      const hosting = await qc.listDhcpAgentsHostingNetwork(net.id);
      assert.equal(hosting.length, 1, 'dhcp_agents_per_network = 1');
      const host = hosting[0]!;
      assert.ok(caster.casts.some((c) => c.topic === 'dhcp_agent' && c.server === host.host && c.method === 'network_create_end'));
      assert.ok(caster.casts.some((c) => c.server === host.host && c.method === 'subnet_create_end'));
      // Port events go to the hosting agent only, and to the notifications topic.
      caster.casts = [];
      caster.notes = [];
      const p = await qc.createPort({ network_id: net.id, device_id: 'vm-1', device_owner: 'compute:nova' });
      assert.deepEqual(caster.casts.filter((c) => c.method === 'port_create_end').map((c) => c.server), [host.host]);
      assert.deepEqual(caster.notes.map((n) => n.eventType), ['port.create.end']);
      await qc.deletePort(p.id);
      assert.ok(caster.casts.some((c) => c.method === 'port_delete_end' && c.args.port_id === p.id && c.args.network_id === net.id));
      const other = host.id === d.id ? e : d;
      await qc.addNetworkToDhcpAgent(other.id, net.id);
      assert.equal((await qc.listDhcpAgentsHostingNetwork(net.id)).length, 2);
      await expectApiError(qc.addNetworkToDhcpAgent(other.id, net.id), 409, 'NetworkHostedByDHCPAgent', `The network ${net.id} has been already hosted by the DHCP Agent ${other.id}.`);
      assert.ok((await qc.listNetworksOnDhcpAgent(other.id)).some((x) => x.id === net.id));
      caster.casts = [];
      await qc.removeNetworkFromDhcpAgent(other.id, net.id);
      assert.ok(caster.casts.some((c) => c.server === other.host && c.method === 'network_delete_end' && c.args.network_id === net.id));
      await expectApiError(qc.removeNetworkFromDhcpAgent(other.id, net.id), 409, 'NetworkNotHostedByDhcpAgent', `The network ${net.id} is not hosted by the DHCP Agent ${other.id}.`);
      const l3a = await qc.reportState(l3('sched-a'));
      await expectApiError(qc.addNetworkToDhcpAgent(l3a.id, net.id), 404, 'InvalidDHCPAgent', `Agent ${l3a.id} is not a valid DHCP Agent or has been disabled.`);
      caster.fanouts = [];
      await qc.deleteNetwork(net.id);
      assert.ok(caster.fanouts.some((f) => f.topic === 'dhcp_agent' && f.method === 'network_delete_end' && f.args.network_id === net.id));
      await qc.deleteNetwork(noDhcp.id);
    });

    test('sync_routers: only the host\'s routers, with their interfaces and subnets; router_ids narrows it', async () => {
      const a = await qc.reportState(l3('sched-a'));
      const { router, sub, net } = await tenantNet('synced', { router: true });
      const [host] = await qc.listL3AgentsHostingRouter(router!.id);
      const mine = await qc.rpc<SyncRouter[]>(L3_PLUGIN_TOPIC, 'sync_routers', { host: host!.host });
      const r = mine.find((x) => x.id === router!.id);
      assert.ok(r);
      assert.equal(r._interfaces.length, 1);
      assert.equal(r._interfaces[0]!.device_owner, 'network:router_interface');
      assert.deepEqual(r._interfaces[0]!.subnets, [{ id: sub.id, cidr: '10.9.0.0/24', gateway_ip: '10.9.0.1', ip_version: 4 }]);
      const otherHost = host!.host === 'sched-a' ? 'sched-b' : 'sched-a';
      assert.ok(!(await qc.rpc<SyncRouter[]>(L3_PLUGIN_TOPIC, 'sync_routers', { host: otherHost })).some((x) => x.id === router!.id));
      assert.deepEqual((await qc.rpc<SyncRouter[]>(L3_PLUGIN_TOPIC, 'sync_routers', { host: host!.host, router_ids: [router!.id] })).map((x) => x.id), [router!.id]);
      assert.deepEqual(await qc.rpc<SyncRouter[]>(L3_PLUGIN_TOPIC, 'sync_routers', { host: otherHost, router_ids: [router!.id] }), []);
      assert.deepEqual(await qc.rpc<SyncRouter[]>(L3_PLUGIN_TOPIC, 'sync_routers', { host: 'nobody' }), []);
      await expectApiError(qc.rpc(L3_PLUGIN_TOPIC, 'sync_routers', {}), 400, 'HTTPBadRequest', "RPC argument 'host' is required");
      await expectApiError(qc.rpc(L3_PLUGIN_TOPIC, 'sync_routers', { host: 'x', router_ids: Array.from({ length: 1001 }, (_, i) => String(i)) }), 400, 'HTTPBadRequest');
      await expectApiError(qc.rpc(L3_PLUGIN_TOPIC, 'no_such_method', {}), 404, 'HTTPNotFound');
      // The DHCP side: get_network_info with a host returns only what that host serves.
      const [dh] = await qc.listDhcpAgentsHostingNetwork(net.id);
      const info = await qc.rpc<NetworkInfo[]>(DHCP_PLUGIN_TOPIC, 'get_network_info', { network_ids: [net.id], host: dh!.host });
      assert.equal(info.length, 1);
      assert.deepEqual(info[0]!.subnets.map((s) => s.id), [sub.id]);
      assert.ok(info[0]!.ports.some((p) => p.device_owner === 'network:router_interface'));
      assert.deepEqual(await qc.rpc<NetworkInfo[]>(DHCP_PLUGIN_TOPIC, 'get_network_info', { network_ids: [net.id], host: 'nobody' }), []);
      assert.ok((await qc.rpc<NetworkInfo[]>(DHCP_PLUGIN_TOPIC, 'get_active_networks_info', { host: dh!.host })).some((n) => n.id === net.id));
      void a;
    });

    test('the notification log: a cursor, only the host\'s rows, fanouts for everyone, bounded replies', async () => {
      await qc.reportState(l3('log-a'));
      const start = await qc.rpc<ChangesReply>(L3_PLUGIN_TOPIC, 'get_changes', { host: 'log-a' });
      assert.deepEqual(start.changes, []);
      assert.equal(start.retention, 3600);
      // An idle poll: nothing, same cursor.
      const idle = await qc.rpc<ChangesReply>(L3_PLUGIN_TOPIC, 'get_changes', { host: 'log-a', since: start.last });
      assert.deepEqual(idle, { changes: [], last: start.last, retention: 3600 });
      // Only log-a is alive among L3 agents? Others may exist from earlier tests: pin the router by hand.
      const r = await qc.createRouter({ name: 'logged' });
      const [h] = await qc.listL3AgentsHostingRouter(r.id);
      const agents = await qc.listAgents({ host: 'log-a', agent_type: 'L3 agent' });
      if (h!.host !== 'log-a') {
        await qc.removeRouterFromL3Agent(h!.id, r.id);
        await qc.addRouterToL3Agent(agents[0]!.id, r.id);
      }
      const got = await pollUntil(() => qc.rpc<ChangesReply>(L3_PLUGIN_TOPIC, 'get_changes', { host: 'log-a', since: start.last }), (g) => g.changes.some((c) => c.method === 'router_added_to_agent' && c.resource_id === r.id));
      assert.ok(got.changes.some((c) => c.method === 'router_added_to_agent' && c.resource_id === r.id));
      assert.ok(got.last > start.last);
      const elsewhere = await qc.rpc<ChangesReply>(L3_PLUGIN_TOPIC, 'get_changes', { host: 'log-zzz', since: start.last });
      assert.ok(!elsewhere.changes.some((c) => c.resource_id === r.id), 'another host sees nothing of log-a');
      assert.equal(elsewhere.last, got.last, 'but its cursor moves past those rows');
      // Port notifications carry the port, for the metadata agents' caches.
      const net = await qc.createNetwork({ name: 'notes' });
      const n0 = await qc.rpc<ChangesReply>(DHCP_PLUGIN_TOPIC, 'get_notifications', {});
      await qc.createSubnet({ network_id: net.id, cidr: '10.8.0.0/24', ip_version: 4, enable_dhcp: false });
      const port = await qc.createPort({ network_id: net.id, device_id: 'vm-2', device_owner: 'compute:nova' });
      const n1 = await pollUntil(() => qc.rpc<ChangesReply>(DHCP_PLUGIN_TOPIC, 'get_notifications', { since: n0.last }), (n) => n.changes.some((c) => c.method === 'port.create.end'));
      const ev = n1.changes.find((c) => c.method === 'port.create.end');
      assert.ok(ev);
      assert.equal(ev.resource_id, port.id);
      assert.equal((ev.payload as { port: { fixed_ips: Array<{ ip_address: string }> } }).port.fixed_ips[0]!.ip_address, port.fixed_ips[0]!.ip_address);
      await expectApiError(qc.rpc(L3_PLUGIN_TOPIC, 'get_changes', { host: 'x', since: -1 }), 400, 'HTTPBadRequest');
      await qc.deletePort(port.id);
      await qc.deleteNetwork(net.id);
      await qc.deleteRouter(r.id);
    });
  });
}

describe('failover from agents that stopped reporting', () => {
  let tdb: TestDb;
  let srv: RunningQuantumServer;
  let qc: QuantumClient;

  before(async () => {
    tdb = await backends()[0]!();
    srv = await startQuantumServer({
      connection: tdb.url,
      host: '127.0.0.1',
      port: 0,
      log: silentLogger,
      agentDownTime: 1,
      periodicTasks: false,
      scheduling: { allowAutomaticL3agentFailover: true, allowAutomaticDhcpFailover: true },
    });
    qc = new QuantumClient({ url: srv.url });
  });
  after(async () => {
    await qc?.close();
    await srv?.close();
    await tdb?.drop();
  });

  test('routers and networks of a silent agent move to a live one; nothing lost, nothing doubled', async () => {
    const a = await qc.reportState(l3('fo-a'));
    await qc.reportState(dhcp('fo-d'));
    const routers = [];
    for (let i = 0; i < 4; i++) routers.push(await qc.createRouter({ name: `fo-${i}` }));
    const net = await qc.createNetwork({ name: 'fo-net' });
    await qc.createSubnet({ network_id: net.id, cidr: '10.7.0.0/24', ip_version: 4 });
    assert.equal((await qc.listRoutersOnL3Agent(a.id)).length, 4);
    const cursor = (await qc.rpc<ChangesReply>(L3_PLUGIN_TOPIC, 'get_changes', { host: 'fo-a' })).last;
    // fo-a and fo-d fall silent (DHCP agents get twice agent_down_time); fo-b and fo-e report.
    await new Promise((r) => setTimeout(r, 2100));
    const b = await qc.reportState(l3('fo-b'));
    const e = await qc.reportState(dhcp('fo-e'));
    const moved = await srv.plugin.scheduler.rescheduleFromDownAgents();
    assert.equal(moved.routers, 4);
    assert.equal(moved.networks, 1);
    assert.deepEqual(await qc.listRoutersOnL3Agent(a.id), []);
    const onB = await qc.listRoutersOnL3Agent(b.id);
    assert.deepEqual(onB.map((r) => r.id).sort(), routers.map((r) => r.id).sort());
    for (const r of routers) assert.equal((await qc.listL3AgentsHostingRouter(r.id)).length, 1);
    assert.deepEqual((await qc.listDhcpAgentsHostingNetwork(net.id)).map((x) => x.id), [e.id]);
    // The silent agent, should it come back, is told to tear them down.
    const told = await pollUntil(() => qc.rpc<ChangesReply>(L3_PLUGIN_TOPIC, 'get_changes', { host: 'fo-a', since: cursor }), (t) => t.changes.length >= 4);
    assert.equal(told.changes.filter((c) => c.method === 'router_removed_from_agent').length, 4);
    const sync = await qc.rpc<SyncRouter[]>(L3_PLUGIN_TOPIC, 'sync_routers', { host: 'fo-a' });
    assert.deepEqual(sync, []);
    // A second round with nothing down moves nothing.
    await qc.reportState(l3('fo-b'));
    await qc.reportState(dhcp('fo-e'));
    assert.deepEqual(await srv.plugin.scheduler.rescheduleFromDownAgents(), { routers: 0, networks: 0 });
  });
});
