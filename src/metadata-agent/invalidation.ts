// The lookup cache follows the ports: with [cache] on, port and network notifications (Neutron's port.*.end,
// network.delete.end) drop the cached lookups they touch. Over RabbitMQ each agent process listens with its own
// queue; without it (or while the broker is away) the process polls the server's notification log with a cursor.
// Without this, an address given to a new instance within the TTL would be answered with its previous owner's
// metadata, and a 404 cached for an address would outlive the instance that then gets it.
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { DHCP_PLUGIN_TOPIC, type ChangesReply, type Port, type QuantumClient } from '../common/quantum-client.js';
import type { InstanceLookup } from './lookup.js';

/** What the invalidator needs of a messaging transport (src/common/messaging.ts's Transport). */
export interface NotificationListener {
  readonly connected: boolean;
  start(): void;
  close(): Promise<void>;
  on(ev: 'up' | 'down', fn: () => void): unknown;
  consumeNotifications(pool: string, handler: (eventType: string, payload: Record<string, unknown>) => void | Promise<void>): void;
}

export interface InvalidatorOptions {
  lookup: InstanceLookup;
  client: QuantumClient;
  log: Logger;
  /** Seconds between polls of the notification log when no broker is connected. */
  pollIntervalSec: number;
  transport?: NotificationListener | undefined;
  /** The queue name of this process's listener (per process: every worker keeps its own cache). */
  pool?: string;
}

type PortLike = Partial<Pick<Port, 'fixed_ips' | 'mac_address' | 'device_owner' | 'device_id'>>;

const asPort = (v: unknown): PortLike | undefined => (v && typeof v === 'object' ? (v as PortLike) : undefined);

export class CacheInvalidator {
  private cursor: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The transport came (back) up: one poll of the log covers what was cast while it was away. */
  private catchUp = true;
  private polling: Promise<void> | undefined;
  events = 0;

  constructor(private readonly o: InvalidatorOptions) {}

  /** One notification: drop what it touches. */
  apply(eventType: string, payload: Record<string, unknown>): void {
    this.events++;
    const l = this.o.lookup;
    if (eventType.startsWith('port.')) l.portChanged(asPort(payload.port), asPort(payload.original_port));
    else if (eventType === 'network.delete.end' && typeof payload.network_id === 'string') l.networkDeleted(payload.network_id);
  }

  start(): void {
    const t = this.o.transport;
    if (t) {
      t.on('up', () => {
        this.catchUp = true;
        void this.poll();
      });
      t.on('down', () => {
        this.catchUp = true;
      });
      t.consumeNotifications(this.o.pool ?? `quantum-metadata-agent.${process.pid}`, (ev, payload) => this.apply(ev, payload));
      t.start();
    }
    const tick = async () => {
      if (this.stopped) return;
      if (!t?.connected || this.catchUp) await this.poll();
      if (!this.stopped) this.timer = setTimeout(() => void tick(), this.o.pollIntervalSec * 1000);
    };
    void tick();
  }

  private poll(): Promise<void> {
    this.polling ??= this.doPoll().finally(() => (this.polling = undefined));
    return this.polling;
  }

  private async doPoll(): Promise<void> {
    const wasCatchUp = this.catchUp && !!this.o.transport?.connected;
    try {
      const r = await this.o.client.rpc<ChangesReply>(DHCP_PLUGIN_TOPIC, 'get_notifications', this.cursor === undefined ? {} : { since: this.cursor });
      // The first read only finds where the log ends: the cache is empty then anyway.
      if (this.cursor !== undefined) for (const c of r.changes) this.apply(c.method, c.payload ?? {});
      this.cursor = r.last;
      if (wasCatchUp) this.catchUp = false;
    } catch (e) {
      this.o.log.warn({ err: errorMessage(e) }, 'could not read port notifications; cached lookups may be stale until the next poll');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.polling;
    await this.o.transport?.close().catch(() => undefined);
  }
}
