// Neutron's agent schedulers: which L3 agent hosts a router (routerl3agentbindings) and which DHCP agents serve
// a network (networkdhcpagentbindings); the drivers that choose (LeastRoutersScheduler, WeightScheduler,
// ChanceScheduler); auto-scheduling when a resource needs an agent or an agent comes up; the agent-scheduler
// API's operations; and the periodic failover that moves work off agents that stopped reporting.
import { randomInt } from 'node:crypto';
import type { Kysely } from 'kysely';
import { ApiError, ConfigError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Agent } from '../common/quantum-client.js';
import { isDuplicateKey } from '../db/connection.js';
import type { AgentRow, QuantumDatabase } from '../db/quantum-schema.js';
import { AGENT_TYPE_DHCP, AGENT_TYPE_L3, type AgentStore, type AgentUpReason } from './agents.js';
import { chunks } from './db-util.js';
import { faults } from './faults.js';
import type { AgentNotifier } from './notifier.js';

export type RouterSchedulerKind = 'LeastRoutersScheduler' | 'ChanceScheduler';
export type NetworkSchedulerKind = 'WeightScheduler' | 'ChanceScheduler';

// Grizzly had only ChanceScheduler (under quantum.); LeastRouters and Weight came with neutron. The AZ-aware
// variants choose as their plain parents do here: there is one availability zone.
const ROUTER_DRIVERS: Record<string, RouterSchedulerKind> = {
  'quantum.scheduler.l3_agent_scheduler.ChanceScheduler': 'ChanceScheduler',
  'neutron.scheduler.l3_agent_scheduler.ChanceScheduler': 'ChanceScheduler',
  'quantum.scheduler.l3_agent_scheduler.LeastRoutersScheduler': 'LeastRoutersScheduler',
  'neutron.scheduler.l3_agent_scheduler.LeastRoutersScheduler': 'LeastRoutersScheduler',
  'neutron.scheduler.l3_agent_scheduler.AZLeastRoutersScheduler': 'LeastRoutersScheduler',
  ChanceScheduler: 'ChanceScheduler',
  LeastRoutersScheduler: 'LeastRoutersScheduler',
};
const NETWORK_DRIVERS: Record<string, NetworkSchedulerKind> = {
  'quantum.scheduler.dhcp_agent_scheduler.ChanceScheduler': 'ChanceScheduler',
  'neutron.scheduler.dhcp_agent_scheduler.ChanceScheduler': 'ChanceScheduler',
  'neutron.scheduler.dhcp_agent_scheduler.WeightScheduler': 'WeightScheduler',
  'neutron.scheduler.dhcp_agent_scheduler.AZAwareWeightScheduler': 'WeightScheduler',
  ChanceScheduler: 'ChanceScheduler',
  WeightScheduler: 'WeightScheduler',
};

export function routerSchedulerKind(path: string): RouterSchedulerKind {
  const k = ROUTER_DRIVERS[path.trim()];
  if (!k) throw new ConfigError(`[DEFAULT] router_scheduler_driver = ${JSON.stringify(path)}: unknown; use neutron.scheduler.l3_agent_scheduler.LeastRoutersScheduler or ...ChanceScheduler`);
  return k;
}

export function networkSchedulerKind(path: string): NetworkSchedulerKind {
  const k = NETWORK_DRIVERS[path.trim()];
  if (!k) throw new ConfigError(`[DEFAULT] network_scheduler_driver = ${JSON.stringify(path)}: unknown; use neutron.scheduler.dhcp_agent_scheduler.WeightScheduler or ...ChanceScheduler`);
  return k;
}

/** Neutron's l3agentscheduler / dhcpagentscheduler exceptions. */
export const schedulerFaults = {
  invalidL3Agent: (id: string) => new ApiError(404, 'InvalidL3Agent', `Agent ${id} is not a L3 Agent or has been disabled`),
  routerHosted: (router: string, agent: string) => new ApiError(409, 'RouterHostedByL3Agent', `The router ${router} has been already hosted by the L3 Agent ${agent}.`),
  routerNotHosted: (router: string, agent: string) => new ApiError(409, 'RouterNotHostedByL3Agent', `The router ${router} is not hosted by L3 agent ${agent}.`),
  invalidDhcpAgent: (id: string) => new ApiError(404, 'InvalidDHCPAgent', `Agent ${id} is not a valid DHCP Agent or has been disabled.`),
  networkHosted: (net: string, agent: string) => new ApiError(409, 'NetworkHostedByDHCPAgent', `The network ${net} has been already hosted by the DHCP Agent ${agent}.`),
  networkNotHosted: (net: string, agent: string) => new ApiError(409, 'NetworkNotHostedByDhcpAgent', `The network ${net} is not hosted by the DHCP Agent ${agent}.`),
};

export interface SchedulerOptions {
  router: RouterSchedulerKind;
  network: NetworkSchedulerKind;
  dhcpAgentsPerNetwork: number;
  routerAutoSchedule: boolean;
  networkAutoSchedule: boolean;
  allowAutomaticL3agentFailover: boolean;
  allowAutomaticDhcpFailover: boolean;
  agentDownTime: number;
  log: Logger;
}

function pick<T>(xs: readonly T[]): T {
  return xs[randomInt(0, xs.length)]!;
}

/** The candidate with the fewest resources; ties broken at random so several servers spread their choices. */
function leastLoaded(cands: readonly AgentRow[], load: Map<string, number>): AgentRow {
  let min = Infinity;
  for (const a of cands) min = Math.min(min, load.get(a.id) ?? 0);
  return pick(cands.filter((a) => (load.get(a.id) ?? 0) === min));
}

export class AgentScheduler {
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  private checking = false;
  /** Failover rounds run, for tests and logs. */
  failoverChecks = 0;

  constructor(
    private readonly db: Kysely<QuantumDatabase>,
    private readonly agents: AgentStore,
    private readonly notifier: AgentNotifier,
    readonly o: SchedulerOptions,
  ) {
    agents.onUp((a, why) => this.agentUp(a, why));
    agents.onDown((a) => this.agentDisabled(a));
  }

  private get log(): Logger {
    return this.o.log;
  }

  /** Live, enabled agents of a type: the only ones new work goes to. */
  private async candidates(agentType: string): Promise<AgentRow[]> {
    const rows = await this.db.selectFrom('agents').selectAll().where('agent_type', '=', agentType).where('admin_state_up', '=', 1).execute();
    const at = Date.now();
    return rows.filter((r) => this.agents.alive(r, at));
  }

  // ------------------------------------------------------------------ L3

  /** Router → hosts of the agents hosting it. */
  async routerHosts(routerIds: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const part of chunks(routerIds)) {
      if (!part.length) continue;
      const rows = await this.db
        .selectFrom('routerl3agentbindings')
        .innerJoin('agents', 'agents.id', 'routerl3agentbindings.l3_agent_id')
        .select(['routerl3agentbindings.router_id as router_id', 'agents.host as host'])
        .where('routerl3agentbindings.router_id', 'in', part)
        .execute();
      for (const r of rows) out.set(r.router_id, [...(out.get(r.router_id) ?? []), r.host]);
    }
    return out;
  }

  async hostsOfRouter(routerId: string): Promise<string[]> {
    return (await this.routerHosts([routerId])).get(routerId) ?? [];
  }

  private async routerLoad(): Promise<Map<string, number>> {
    const rows = await this.db.selectFrom('routerl3agentbindings').select(['l3_agent_id', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('l3_agent_id').execute();
    return new Map(rows.map((r) => [r.l3_agent_id, Number(r.n)]));
  }

  /** Bind a router to agent, unless another scheduler got there first; returns who hosts it. */
  private async bindRouter(routerId: string, agent: AgentRow): Promise<AgentRow | undefined> {
    try {
      await this.db.insertInto('routerl3agentbindings').values({ router_id: routerId, l3_agent_id: agent.id }).execute();
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      const cur = await this.db.selectFrom('routerl3agentbindings').innerJoin('agents', 'agents.id', 'routerl3agentbindings.l3_agent_id').selectAll('agents').where('router_id', '=', routerId).executeTakeFirst();
      return cur;
    }
    this.log.info({ router_id: routerId, l3_agent_id: agent.id, host: agent.host }, 'scheduled router to L3 agent');
    await this.notifier.l3('router_added_to_agent', [routerId], [agent.host]);
    return agent;
  }

  /** Schedule an unhosted router with the configured driver; undefined when no live L3 agent exists. */
  async scheduleRouter(routerId: string, cands?: AgentRow[]): Promise<AgentRow | undefined> {
    const bound = await this.db.selectFrom('routerl3agentbindings').select('l3_agent_id').where('router_id', '=', routerId).executeTakeFirst();
    if (bound) return undefined;
    const c = cands ?? (await this.candidates(AGENT_TYPE_L3));
    if (!c.length) {
      this.log.warn({ router_id: routerId }, 'No active L3 agents: router not scheduled');
      return undefined;
    }
    const agent = this.o.router === 'ChanceScheduler' ? pick(c) : leastLoaded(c, await this.routerLoad());
    return this.bindRouter(routerId, agent);
  }

  /** POST /v2.0/agents/{id}/l3-routers. */
  async addRouterToAgent(agentId: string, routerId: string): Promise<void> {
    const agent = await this.agents.row(agentId);
    const router = await this.db.selectFrom('routers').select('id').where('id', '=', routerId).executeTakeFirst();
    if (!router) throw faults.routerNotFound(routerId);
    if (agent.agent_type !== AGENT_TYPE_L3 || agent.admin_state_up !== 1) throw schedulerFaults.invalidL3Agent(agentId);
    const cur = await this.db.selectFrom('routerl3agentbindings').select('l3_agent_id').where('router_id', '=', routerId).executeTakeFirst();
    if (cur) {
      if (cur.l3_agent_id === agentId) return;
      throw schedulerFaults.routerHosted(routerId, cur.l3_agent_id);
    }
    const got = await this.bindRouter(routerId, agent);
    if (got && got.id !== agentId) throw schedulerFaults.routerHosted(routerId, got.id);
  }

  /** DELETE /v2.0/agents/{id}/l3-routers/{router_id}: the router stays unhosted until it is scheduled again. */
  async removeRouterFromAgent(agentId: string, routerId: string): Promise<void> {
    const agent = await this.agents.row(agentId);
    const r = await this.db.deleteFrom('routerl3agentbindings').where('router_id', '=', routerId).where('l3_agent_id', '=', agentId).executeTakeFirst();
    if (!Number(r.numDeletedRows)) throw schedulerFaults.routerNotHosted(routerId, agentId);
    this.log.info({ router_id: routerId, l3_agent_id: agentId, host: agent.host }, 'removed router from L3 agent');
    await this.notifier.l3('router_removed_from_agent', [routerId], [agent.host]);
  }

  async routersOnAgent(agentId: string): Promise<string[]> {
    await this.agents.row(agentId);
    const rows = await this.db.selectFrom('routerl3agentbindings').select('router_id').where('l3_agent_id', '=', agentId).execute();
    return rows.map((r) => r.router_id);
  }

  /**
   * Routers hosted by the L3 agent on `host` (nothing when it is unknown or disabled, as Neutron's sync); only
   * among `among` when given, so a call about a few routers costs the same however many the host has.
   */
  async routerIdsOnHost(host: string, among?: readonly string[]): Promise<string[]> {
    const agent = await this.agents.byTypeAndHost(AGENT_TYPE_L3, host);
    if (!agent || agent.admin_state_up !== 1) return [];
    const q = this.db.selectFrom('routerl3agentbindings').select('router_id').where('l3_agent_id', '=', agent.id);
    if (!among) return (await q.execute()).map((r) => r.router_id);
    const out: string[] = [];
    for (const part of chunks(among)) if (part.length) out.push(...(await q.where('router_id', 'in', part).execute()).map((r) => r.router_id));
    return out;
  }

  async agentsHostingRouter(routerId: string): Promise<Agent[]> {
    if (!(await this.db.selectFrom('routers').select('id').where('id', '=', routerId).executeTakeFirst())) throw faults.routerNotFound(routerId);
    const rows = await this.db.selectFrom('routerl3agentbindings').innerJoin('agents', 'agents.id', 'routerl3agentbindings.l3_agent_id').selectAll('agents').where('router_id', '=', routerId).execute();
    return rows.map((r) => this.agents.agentOut(r));
  }

  /** Every router without an agent goes to this one (Neutron's auto_schedule_routers for a syncing host). */
  async autoScheduleRouters(agent: AgentRow): Promise<number> {
    if (!this.o.routerAutoSchedule || agent.admin_state_up !== 1) return 0;
    const rows = await this.db
      .selectFrom('routers')
      .leftJoin('routerl3agentbindings', 'routerl3agentbindings.router_id', 'routers.id')
      .select('routers.id as id')
      .where('routerl3agentbindings.router_id', 'is', null)
      .execute();
    let n = 0;
    const ids: string[] = [];
    for (const part of chunks(rows.map((r) => r.id), 200)) {
      for (const id of part) {
        try {
          await this.db.insertInto('routerl3agentbindings').values({ router_id: id, l3_agent_id: agent.id }).execute();
          ids.push(id);
          n++;
        } catch (e) {
          if (!isDuplicateKey(e)) throw e;
        }
      }
    }
    if (n) {
      this.log.info({ host: agent.host, routers: n }, 'auto-scheduled unhosted routers to L3 agent');
      await this.notifier.l3('router_added_to_agent', ids, [agent.host]);
    }
    return n;
  }

  // ------------------------------------------------------------------ DHCP

  async networkHosts(networkIds: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const part of chunks(networkIds)) {
      if (!part.length) continue;
      const rows = await this.db
        .selectFrom('networkdhcpagentbindings')
        .innerJoin('agents', 'agents.id', 'networkdhcpagentbindings.dhcp_agent_id')
        .select(['networkdhcpagentbindings.network_id as network_id', 'agents.host as host'])
        .where('networkdhcpagentbindings.network_id', 'in', part)
        .execute();
      for (const r of rows) out.set(r.network_id, [...(out.get(r.network_id) ?? []), r.host]);
    }
    return out;
  }

  async hostsOfNetwork(networkId: string): Promise<string[]> {
    return (await this.networkHosts([networkId])).get(networkId) ?? [];
  }

  private async networkLoad(): Promise<Map<string, number>> {
    const rows = await this.db.selectFrom('networkdhcpagentbindings').select(['dhcp_agent_id', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('dhcp_agent_id').execute();
    return new Map(rows.map((r) => [r.dhcp_agent_id, Number(r.n)]));
  }

  private async hasDhcpSubnet(networkId: string): Promise<boolean> {
    return !!(await this.db.selectFrom('subnets').select('id').where('network_id', '=', networkId).where('enable_dhcp', '=', 1).limit(1).executeTakeFirst());
  }

  private async bindNetwork(networkId: string, agent: AgentRow): Promise<boolean> {
    try {
      await this.db.insertInto('networkdhcpagentbindings').values({ network_id: networkId, dhcp_agent_id: agent.id }).execute();
    } catch (e) {
      if (isDuplicateKey(e)) return false;
      throw e;
    }
    this.log.info({ network_id: networkId, dhcp_agent_id: agent.id, host: agent.host }, 'scheduled network to DHCP agent');
    // How a DHCP agent learns of a network it now serves (Neutron casts network_create_end to it).
    await this.notifier.dhcp('network_create_end', networkId, { network: { id: networkId } }, [agent.host]);
    return true;
  }

  /** Bring a network with DHCP up to dhcp_agents_per_network agents; returns the hosts added. */
  async scheduleNetwork(networkId: string, cands?: AgentRow[]): Promise<string[]> {
    if (!(await this.hasDhcpSubnet(networkId))) return [];
    const bound = new Set((await this.db.selectFrom('networkdhcpagentbindings').select('dhcp_agent_id').where('network_id', '=', networkId).execute()).map((r) => r.dhcp_agent_id));
    const need = this.o.dhcpAgentsPerNetwork - bound.size;
    if (need <= 0) return [];
    let c = (cands ?? (await this.candidates(AGENT_TYPE_DHCP))).filter((a) => !bound.has(a.id));
    if (!c.length) {
      if (!bound.size) this.log.warn({ network_id: networkId }, 'No active DHCP agents: network not scheduled');
      return [];
    }
    const load = this.o.network === 'WeightScheduler' ? await this.networkLoad() : new Map<string, number>();
    const added: string[] = [];
    for (let i = 0; i < need && c.length; i++) {
      const a = this.o.network === 'ChanceScheduler' ? pick(c) : leastLoaded(c, load);
      c = c.filter((x) => x.id !== a.id);
      if (await this.bindNetwork(networkId, a)) added.push(a.host);
    }
    return added;
  }

  /** POST /v2.0/agents/{id}/dhcp-networks. */
  async addNetworkToAgent(agentId: string, networkId: string): Promise<void> {
    const agent = await this.agents.row(agentId);
    if (!(await this.db.selectFrom('networks').select('id').where('id', '=', networkId).executeTakeFirst())) throw faults.networkNotFound(networkId);
    if (agent.agent_type !== AGENT_TYPE_DHCP || agent.admin_state_up !== 1) throw schedulerFaults.invalidDhcpAgent(agentId);
    if (!(await this.bindNetwork(networkId, agent))) throw schedulerFaults.networkHosted(networkId, agentId);
  }

  /** DELETE /v2.0/agents/{id}/dhcp-networks/{network_id}: the agent is told the network is gone for it. */
  async removeNetworkFromAgent(agentId: string, networkId: string): Promise<void> {
    const agent = await this.agents.row(agentId);
    const r = await this.db.deleteFrom('networkdhcpagentbindings').where('network_id', '=', networkId).where('dhcp_agent_id', '=', agentId).executeTakeFirst();
    if (!Number(r.numDeletedRows)) throw schedulerFaults.networkNotHosted(networkId, agentId);
    this.log.info({ network_id: networkId, dhcp_agent_id: agentId, host: agent.host }, 'removed network from DHCP agent');
    await this.notifier.dhcp('network_delete_end', networkId, { network_id: networkId }, [agent.host]);
  }

  async networksOnAgent(agentId: string): Promise<string[]> {
    await this.agents.row(agentId);
    const rows = await this.db.selectFrom('networkdhcpagentbindings').select('network_id').where('dhcp_agent_id', '=', agentId).execute();
    return rows.map((r) => r.network_id);
  }

  async networkIdsOnHost(host: string, among?: readonly string[]): Promise<string[]> {
    const agent = await this.agents.byTypeAndHost(AGENT_TYPE_DHCP, host);
    if (!agent || agent.admin_state_up !== 1) return [];
    const q = this.db.selectFrom('networkdhcpagentbindings').select('network_id').where('dhcp_agent_id', '=', agent.id);
    if (!among) return (await q.execute()).map((r) => r.network_id);
    const out: string[] = [];
    for (const part of chunks(among)) if (part.length) out.push(...(await q.where('network_id', 'in', part).execute()).map((r) => r.network_id));
    return out;
  }

  async agentsHostingNetwork(networkId: string): Promise<Agent[]> {
    if (!(await this.db.selectFrom('networks').select('id').where('id', '=', networkId).executeTakeFirst())) throw faults.networkNotFound(networkId);
    const rows = await this.db.selectFrom('networkdhcpagentbindings').innerJoin('agents', 'agents.id', 'networkdhcpagentbindings.dhcp_agent_id').selectAll('agents').where('network_id', '=', networkId).execute();
    return rows.map((r) => this.agents.agentOut(r));
  }

  /** Networks with DHCP short of dhcp_agents_per_network agents get this one (Neutron's auto_schedule_networks). */
  async autoScheduleNetworks(agent: AgentRow): Promise<number> {
    if (!this.o.networkAutoSchedule || agent.admin_state_up !== 1) return 0;
    const rows = await this.db
      .selectFrom('networks')
      .leftJoin('networkdhcpagentbindings', 'networkdhcpagentbindings.network_id', 'networks.id')
      .select(['networks.id as id', (eb) => eb.fn.count<number>('networkdhcpagentbindings.dhcp_agent_id').as('n'), (eb) => eb.fn.sum<number>(eb.case().when('networkdhcpagentbindings.dhcp_agent_id', '=', agent.id).then(1).else(0).end()).as('mine')])
      .where('networks.id', 'in', (eb) => eb.selectFrom('subnets').select('subnets.network_id').where('subnets.enable_dhcp', '=', 1))
      .groupBy('networks.id')
      .execute();
    let n = 0;
    for (const r of rows) {
      if (Number(r.n) >= this.o.dhcpAgentsPerNetwork || Number(r.mine) > 0) continue;
      if (await this.bindNetwork(r.id, agent)) n++;
    }
    if (n) this.log.info({ host: agent.host, networks: n }, 'auto-scheduled networks to DHCP agent');
    return n;
  }

  // ------------------------------------------------------------------ agents coming and going

  private async agentUp(a: Agent, why: AgentUpReason): Promise<void> {
    const row = await this.agents.row(a.id);
    if (a.agent_type === AGENT_TYPE_L3) await this.autoScheduleRouters(row);
    else if (a.agent_type === AGENT_TYPE_DHCP) await this.autoScheduleNetworks(row);
    this.log.debug({ agent_id: a.id, host: a.host, why }, 'agent up');
  }

  /** An agent an admin disabled keeps its bindings (Neutron), but is told to stop serving them. */
  private async agentDisabled(a: Agent): Promise<void> {
    if (a.agent_type === AGENT_TYPE_L3) {
      const ids = await this.routersOnAgent(a.id);
      for (const id of ids) await this.notifier.l3('router_removed_from_agent', [id], [a.host]);
    } else if (a.agent_type === AGENT_TYPE_DHCP) {
      for (const id of await this.networksOnAgent(a.id)) await this.notifier.dhcp('network_delete_end', id, { network_id: id }, [a.host]);
    }
  }

  /**
   * One failover round: routers of L3 agents silent for agent_down_time move to live agents
   * (allow_automatic_l3agent_failover), networks of silent DHCP agents are taken from them and scheduled again
   * (allow_automatic_dhcp_failover). Nothing moves in the server's first agent_down_time: the agents may simply
   * not have reported to a server that was down.
   */
  async rescheduleFromDownAgents(): Promise<{ routers: number; networks: number }> {
    const res = { routers: 0, networks: 0 };
    if (Date.now() - this.startedAt < this.o.agentDownTime * 1000) return res;
    this.failoverChecks++;
    const at = Date.now();
    const all = await this.db.selectFrom('agents').selectAll().where('agent_type', 'in', [AGENT_TYPE_L3, AGENT_TYPE_DHCP]).execute();
    // DHCP agents get twice agent_down_time, as Neutron's agent_dead_limit: one busy with many networks may miss a report.
    const silentFor = (a: AgentRow) => (at - Date.parse(a.heartbeat_timestamp)) / 1000;
    const down = all.filter((a) => a.admin_state_up === 1 && silentFor(a) > this.o.agentDownTime * (a.agent_type === AGENT_TYPE_DHCP ? 2 : 1));
    if (!down.length) return res;
    const live = (t: string) => all.filter((a) => a.agent_type === t && a.admin_state_up === 1 && this.agents.alive(a, at));
    if (this.o.allowAutomaticL3agentFailover) {
      const cands = live(AGENT_TYPE_L3);
      for (const agent of down.filter((a) => a.agent_type === AGENT_TYPE_L3)) {
        const ids = (await this.db.selectFrom('routerl3agentbindings').select('router_id').where('l3_agent_id', '=', agent.id).execute()).map((r) => r.router_id);
        if (!ids.length) continue;
        if (!cands.length) {
          this.log.warn({ host: agent.host, routers: ids.length }, 'L3 agent is down and no other is alive: its routers stay where they are');
          continue;
        }
        this.log.warn({ host: agent.host, l3_agent_id: agent.id, routers: ids.length }, 'Rescheduling routers from down L3 agent');
        for (const part of chunks(ids, 200)) await this.db.deleteFrom('routerl3agentbindings').where('l3_agent_id', '=', agent.id).where('router_id', 'in', part).execute();
        // Told too, in case it is only cut off and comes back: it must tear them down.
        for (const id of ids) await this.notifier.l3('router_removed_from_agent', [id], [agent.host]);
        const load = await this.routerLoad();
        const byHost = new Map<string, string[]>();
        for (const id of ids) {
          const target = this.o.router === 'ChanceScheduler' ? pick(cands) : leastLoaded(cands, load);
          try {
            await this.db.insertInto('routerl3agentbindings').values({ router_id: id, l3_agent_id: target.id }).execute();
          } catch (e) {
            if (isDuplicateKey(e)) continue;
            throw e;
          }
          load.set(target.id, (load.get(target.id) ?? 0) + 1);
          byHost.set(target.host, [...(byHost.get(target.host) ?? []), id]);
          res.routers++;
        }
        for (const [host, rids] of byHost) await this.notifier.l3('router_added_to_agent', rids, [host]);
      }
    }
    if (this.o.allowAutomaticDhcpFailover) {
      const cands = live(AGENT_TYPE_DHCP);
      for (const agent of down.filter((a) => a.agent_type === AGENT_TYPE_DHCP)) {
        const ids = (await this.db.selectFrom('networkdhcpagentbindings').select('network_id').where('dhcp_agent_id', '=', agent.id).execute()).map((r) => r.network_id);
        if (!ids.length) continue;
        if (!cands.length) {
          this.log.warn({ host: agent.host, networks: ids.length }, 'No DHCP agents available, skipping rescheduling');
          continue;
        }
        this.log.warn({ host: agent.host, dhcp_agent_id: agent.id, networks: ids.length }, 'Removing networks from down DHCP agent');
        for (const part of chunks(ids, 200)) await this.db.deleteFrom('networkdhcpagentbindings').where('dhcp_agent_id', '=', agent.id).where('network_id', 'in', part).execute();
        for (const id of ids) {
          await this.notifier.dhcp('network_delete_end', id, { network_id: id }, [agent.host]);
          res.networks += (await this.scheduleNetwork(id, cands)).length;
        }
      }
    }
    return res;
  }

  /** Run the failover check every interval (one process of a server with API workers runs it). */
  startFailoverChecks(intervalMs = Math.max(1000, Math.min(this.o.agentDownTime * 500, 15_000))): void {
    if (!this.o.allowAutomaticL3agentFailover && !this.o.allowAutomaticDhcpFailover) return;
    this.timer = setInterval(() => {
      if (this.checking) return;
      this.checking = true;
      this.rescheduleFromDownAgents()
        .catch((e: unknown) => this.log.error({ err: e }, 'rescheduling from down agents failed'))
        .finally(() => (this.checking = false));
    }, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
