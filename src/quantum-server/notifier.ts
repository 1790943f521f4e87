// What quantum-server tells the agents when something they serve changes, as Neutron's
// L3AgentNotifyAPI / DhcpAgentNotifyAPI and its port notifications do: a cast to `<topic>.<host>` (or a fanout)
// over RabbitMQ when a transport is configured, and always a row in `agentnotifications`. The rows are what an
// agent without RabbitMQ polls (only what changed since its cursor), and what one whose broker was down catches
// up from, so a lost cast is never a lost change.
import type { Kysely } from 'kysely';
import type { Logger } from '../common/log.js';
import type { AgentNotificationRow, QuantumDatabase } from '../db/quantum-schema.js';
import type { ChangesReply } from '../common/quantum-client.js';
import { chunks, now } from './db-util.js';

export const TOPIC_L3 = 'l3_agent';
export const TOPIC_DHCP = 'dhcp_agent';
/** Port and network events for the metadata agents' caches (oslo's notifications topic, priority info). */
export const TOPIC_NOTIFICATIONS = 'notifications';

export type L3Method = 'routers_updated' | 'router_deleted' | 'router_added_to_agent' | 'router_removed_from_agent';
export type DhcpMethod =
  | 'network_create_end'
  | 'network_update_end'
  | 'network_delete_end'
  | 'subnet_create_end'
  | 'subnet_update_end'
  | 'subnet_delete_end'
  | 'port_create_end'
  | 'port_update_end'
  | 'port_delete_end';

/** The part of a messaging transport the notifier uses (src/common/messaging.ts's Transport has it). */
export interface Caster {
  cast(topic: string, method: string, args: Record<string, unknown>, server?: string): boolean;
  fanout(topic: string, method: string, args: Record<string, unknown>): boolean;
  notify(eventType: string, payload: Record<string, unknown>, publisherId: string): boolean;
}

export type { Change, ChangesReply } from '../common/quantum-client.js';

export interface NotifierOptions {
  log: Logger;
  /** publisher_id of notifications: network.<host>. */
  host: string;
  caster?: Caster | undefined;
  /** Seconds rows are kept. */
  retentionSec?: number;
  /**
   * MariaDB hands out auto-increment ids before commit, so a row can become visible after a higher one: a poll
   * only returns rows at least this old there. SQLite has one writer, ids become visible in order.
   */
  visibilityLagMs?: number;
}

const PAGE = 1000;

export class AgentNotifier {
  readonly retentionSec: number;
  private caster: Caster | undefined;
  private pruner: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Kysely<QuantumDatabase>,
    private readonly o: NotifierOptions,
  ) {
    this.caster = o.caster;
    this.retentionSec = o.retentionSec ?? 3600;
  }

  setCaster(c: Caster | undefined): void {
    this.caster = c;
  }

  private async record(rows: Array<Omit<AgentNotificationRow, 'id' | 'created_at'>>): Promise<void> {
    if (!rows.length) return;
    const t = now();
    try {
      for (const part of chunks(rows, 200)) await this.db.insertInto('agentnotifications').values(part.map((r) => ({ ...r, created_at: t }))).execute();
    } catch (e) {
      // The API call itself succeeded; agents without the row still converge at their next full sync.
      this.o.log.error({ err: e, rows: rows.length }, 'could not record agent notifications');
    }
  }

  /** L3AgentNotifyAPI: one cast per host, naming every router of that host. */
  async l3(method: L3Method, routerIds: readonly string[], hosts: readonly string[]): Promise<void> {
    if (!routerIds.length || !hosts.length) return;
    const rows = hosts.flatMap((host) => routerIds.map((id) => ({ topic: TOPIC_L3, host, method, resource_id: id, payload: null })));
    await this.record(rows);
    for (const host of hosts) {
      const args = method === 'router_deleted' || method === 'router_removed_from_agent' ? undefined : { routers: [...routerIds] };
      if (args) this.caster?.cast(TOPIC_L3, method, args, host);
      else for (const id of routerIds) this.caster?.cast(TOPIC_L3, method, { router_id: id }, host);
    }
    this.o.log.debug({ method, routers: routerIds.length, hosts }, 'notified L3 agents');
  }

  /** DhcpAgentNotifyAPI: a cast to each host serving the network, or a fanout when they are no longer known. */
  async dhcp(method: DhcpMethod, networkId: string, payload: Record<string, unknown>, hosts: readonly string[] | 'fanout'): Promise<void> {
    if (hosts === 'fanout') {
      await this.record([{ topic: TOPIC_DHCP, host: null, method, resource_id: networkId, payload: null }]);
      this.caster?.fanout(TOPIC_DHCP, method, payload);
      return;
    }
    if (!hosts.length) return;
    await this.record(hosts.map((host) => ({ topic: TOPIC_DHCP, host, method, resource_id: networkId, payload: null })));
    for (const host of hosts) this.caster?.cast(TOPIC_DHCP, method, payload, host);
    this.o.log.debug({ method, network_id: networkId, hosts }, 'notified DHCP agents');
  }

  /** port.create.end and friends, as Neutron emits them to its notifications topic. */
  async notification(eventType: string, resourceId: string, payload: Record<string, unknown>): Promise<void> {
    await this.record([{ topic: TOPIC_NOTIFICATIONS, host: null, method: eventType, resource_id: resourceId, payload: JSON.stringify(payload) }]);
    this.caster?.notify(eventType, payload, `network.${this.o.host}`);
  }

  /** What changed for an agent on `host` since its cursor; without a cursor, just where the log ends now. */
  async changes(topic: string, host: string | undefined, since: number | undefined): Promise<ChangesReply> {
    if (since === undefined) {
      const r = await this.db.selectFrom('agentnotifications').select((eb) => eb.fn.max('id').as('m')).executeTakeFirst();
      return { changes: [], last: Number(r?.m ?? 0), retention: this.retentionSec };
    }
    const lag = this.o.visibilityLagMs ?? 0;
    const visible = lag > 0 ? new Date(Date.now() - lag).toISOString() : undefined;
    // The head first, then the rows up to it: a row written in between is left for the next poll, never skipped.
    let h = this.db.selectFrom('agentnotifications').select((eb) => eb.fn.max('id').as('m')).where('topic', '=', topic);
    if (visible) h = h.where('created_at', '<=', visible);
    const head = Number((await h.executeTakeFirst())?.m ?? 0);
    if (head <= since) return { changes: [], last: since, retention: this.retentionSec };
    let q = this.db.selectFrom('agentnotifications').select(['id', 'method', 'resource_id', 'payload']).where('topic', '=', topic).where('id', '>', since).where('id', '<=', head);
    if (host !== undefined) q = q.where((eb) => eb.or([eb('host', '=', host), eb('host', 'is', null)]));
    const rows = await q.orderBy('id').limit(PAGE).execute();
    const changes = rows.map((r) => ({
      id: Number(r.id),
      method: r.method,
      resource_id: r.resource_id,
      ...(r.payload ? { payload: JSON.parse(r.payload) as Record<string, unknown> } : {}),
    }));
    // The cursor moves past other hosts' rows too, so an idle agent's poll stays two index seeks.
    const last = changes.length === PAGE ? changes[PAGE - 1]!.id : head;
    return { changes, last, retention: this.retentionSec };
  }

  async prune(): Promise<number> {
    const cutoff = new Date(Date.now() - this.retentionSec * 1000).toISOString();
    const r = await this.db.deleteFrom('agentnotifications').where('created_at', '<', cutoff).executeTakeFirst();
    return Number(r.numDeletedRows ?? 0);
  }

  /** Prune now and then (one process of a server with API workers does it). */
  startPruning(intervalMs = 60_000): void {
    this.pruner = setInterval(() => {
      this.prune().catch((e: unknown) => this.o.log.warn({ err: e }, 'pruning agent notifications failed'));
    }, intervalMs);
    this.pruner.unref();
  }

  stop(): void {
    if (this.pruner) clearInterval(this.pruner);
    this.pruner = undefined;
  }
}
