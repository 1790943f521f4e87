// Agents and their heartbeats (Neutron's agents_db): report_state as an upsert keyed by (agent_type, host),
// the alive flag from agent_down_time, and the hooks the scheduler hangs on an agent coming up or going away.
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../common/log.js';
import type { Agent } from '../common/quantum-client.js';
import { isDuplicateKey } from '../db/connection.js';
import type { AgentRow, QuantumDatabase } from '../db/quantum-schema.js';
import { applyFilters, b, neutronTime, now, Retry, rowById, sortRows, txRetry, type Filters } from './db-util.js';
import { faults } from './faults.js';
import { checkAttrs, toBool, toDict, toStr, type Body } from './validate.js';

export const AGENT_TYPE_L3 = 'L3 agent';
export const AGENT_TYPE_DHCP = 'DHCP agent';

/** Why an agent is (again) ready for work: first report, restart (start_flag), heartbeats back, admin up. */
export type AgentUpReason = 'registered' | 'started' | 'revived' | 'enabled';

export interface AgentStoreOptions {
  agentDownTime: number;
  log: Logger;
}

export class AgentStore {
  private readonly log: Logger;
  private readonly upHooks: Array<(a: Agent, why: AgentUpReason) => Promise<void>> = [];
  private readonly downHooks: Array<(a: Agent) => Promise<void>> = [];
  constructor(
    readonly db: Kysely<QuantumDatabase>,
    private readonly opts: AgentStoreOptions,
  ) {
    this.log = opts.log;
  }

  /** Called (awaited) when an agent registers, restarts, revives or is enabled. */
  onUp(fn: (a: Agent, why: AgentUpReason) => Promise<void>): void {
    this.upHooks.push(fn);
  }

  /** Called (awaited) when an admin disables an agent. */
  onDown(fn: (a: Agent) => Promise<void>): void {
    this.downHooks.push(fn);
  }

  private async notifyUp(a: Agent, why: AgentUpReason): Promise<void> {
    for (const h of this.upHooks) {
      try {
        await h(a, why);
      } catch (e) {
        this.log.error({ err: e, agent_id: a.id, host: a.host }, 'scheduling for an agent that came up failed');
      }
    }
  }

  private async notifyDown(a: Agent): Promise<void> {
    for (const h of this.downHooks) {
      try {
        await h(a);
      } catch (e) {
        this.log.error({ err: e, agent_id: a.id, host: a.host }, 'unscheduling from a disabled agent failed');
      }
    }
  }

  /** Heartbeat no older than agent_down_time. */
  alive(r: Pick<AgentRow, 'heartbeat_timestamp'>, at = Date.now()): boolean {
    return at - Date.parse(r.heartbeat_timestamp) <= this.opts.agentDownTime * 1000;
  }

  /** The agent of a type on a host (Neutron's _get_agent_by_type_and_host), if it ever reported. */
  async byTypeAndHost(agentType: string, host: string): Promise<AgentRow | undefined> {
    return this.db.selectFrom('agents').selectAll().where('agent_type', '=', agentType).where('host', '=', host).executeTakeFirst();
  }

  async row(id: string): Promise<AgentRow> {
    return rowById(this.db, 'agents', id, faults.agentNotFound);
  }

  agentOut(r: AgentRow, at = Date.now()): Agent {
    return {
      id: r.id,
      agent_type: r.agent_type,
      binary: r.binary,
      topic: r.topic,
      host: r.host,
      admin_state_up: b(r.admin_state_up),
      alive: this.alive(r, at),
      created_at: neutronTime(r.created_at),
      started_at: neutronTime(r.started_at),
      heartbeat_timestamp: neutronTime(r.heartbeat_timestamp),
      configurations: JSON.parse(r.configurations) as Record<string, unknown>,
      description: r.description,
    };
  }

  async listAgents(filters: Filters): Promise<Agent[]> {
    const rows = await applyFilters(this.db.selectFrom('agents').selectAll(), 'agents', filters).execute();
    let out = sortRows(rows).map((r) => this.agentOut(r));
    const alive = filters.alive;
    if (alive && alive.length) {
      const want = alive.map((v) => toBool('alive', v));
      out = out.filter((x) => want.includes(x.alive));
    }
    return out;
  }

  async getAgent(id: string): Promise<Agent> {
    return this.agentOut(await rowById(this.db, 'agents', id, faults.agentNotFound));
  }

  /** report_state: upsert keyed by (agent_type, host); started_at resets when start_flag is set. */
  async reportAgent(body: Body): Promise<Agent> {
    const a = checkAttrs(body, ['binary', 'host', 'agent_type', 'topic', 'configurations', 'start_flag', 'description', 'admin_state_up']);
    for (const k of ['binary', 'host', 'agent_type', 'topic'] as const) if (a[k] === undefined) throw faults.missingAttr(k);
    const report = {
      binary: toStr('binary', a.binary),
      host: toStr('host', a.host),
      agent_type: toStr('agent_type', a.agent_type),
      topic: toStr('topic', a.topic),
      configurations: JSON.stringify(a.configurations === undefined ? {} : toDict('configurations', a.configurations)),
    };
    const start = a.start_flag === undefined ? false : toBool('start_flag', a.start_flag);
    const was = await this.db.selectFrom('agents').selectAll().where('agent_type', '=', report.agent_type).where('host', '=', report.host).executeTakeFirst();
    const id = await txRetry(this.db, this.log, 'report agent state', async (trx) => {
      const t = now();
      const cur = await trx.selectFrom('agents').select('id').where('agent_type', '=', report.agent_type).where('host', '=', report.host).executeTakeFirst();
      if (cur) {
        await trx
          .updateTable('agents')
          .set({ ...report, heartbeat_timestamp: t, ...(start ? { started_at: t } : {}) })
          .where('id', '=', cur.id)
          .execute();
        return cur.id;
      }
      const nid = randomUUID();
      try {
        await trx
          .insertInto('agents')
          .values({ id: nid, ...report, admin_state_up: 1, created_at: t, started_at: t, heartbeat_timestamp: t, description: a.description === undefined || a.description === null ? null : toStr('description', a.description) })
          .execute();
      } catch (e) {
        if (isDuplicateKey(e)) throw new Retry(); // another report from the same agent won the insert: update instead
        throw e;
      }
      this.log.info({ agent_type: report.agent_type, host: report.host, id: nid }, 'registered agent');
      return nid;
    });
    const agent = await this.getAgent(id);
    // Neutron schedules unhosted routers and networks to an agent when it syncs; here, when it comes up.
    const why = !was ? 'registered' : start ? 'started' : !this.alive(was) ? 'revived' : undefined;
    if (why && agent.admin_state_up) await this.notifyUp(agent, why);
    return agent;
  }

  async updateAgent(id: string, body: Body): Promise<Agent> {
    const a = checkAttrs(body, ['admin_state_up', 'description'], ['id', 'agent_type', 'binary', 'topic', 'host', 'alive', 'configurations', 'heartbeat_timestamp', 'started_at', 'created_at']);
    const before = await this.getAgent(id);
    const set: Partial<AgentRow> = {};
    if (a.admin_state_up !== undefined) set.admin_state_up = toBool('admin_state_up', a.admin_state_up) ? 1 : 0;
    if (a.description !== undefined) set.description = a.description === null ? null : toStr('description', a.description);
    if (Object.keys(set).length) await this.db.updateTable('agents').set(set).where('id', '=', id).execute();
    const agent = await this.getAgent(id);
    if (a.admin_state_up !== undefined && agent.admin_state_up && !before.admin_state_up && agent.alive) await this.notifyUp(agent, 'enabled');
    if (a.admin_state_up !== undefined && !agent.admin_state_up && before.admin_state_up) await this.notifyDown(agent);
    return agent;
  }

  async deleteAgent(id: string): Promise<void> {
    await this.getAgent(id);
    await this.db.deleteFrom('agents').where('id', '=', id).execute();
  }
}
