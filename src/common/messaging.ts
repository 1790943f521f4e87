// oslo.messaging's RabbitMQ driver as the Quantum/Neutron daemons speak it: casts, fanout casts and
// notifications in oslo's envelope, on the exchanges and queues an OpenStack operator expects to see in
// `rabbitmqctl list_queues` / `list_exchanges`. Casts only: nothing here waits for a reply.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { connect, type Channel, type ChannelModel, type ConsumeMessage, type Options } from 'amqplib';
import { int, list, optStr, str, type Resolved, type Spec } from './config.js';
import { ConfigError, errorMessage } from './errors.js';
import type { Logger } from './log.js';

const rabbitDeprecated = (name: string) => ({ deprecated: [['oslo_messaging_rabbit', name]] as [string, string][] });

export const messagingOpts = {
  DEFAULT: {
    transport_url: optStr(
      'The network address and optional user credentials for connecting to the messaging backend, in URL format: ' +
        'rabbit://user:pass@host:port[,userN:passN@hostN:portN]/virtual_host. Unset, the rabbit_* options are read; ' +
        'with neither, the daemon runs without RabbitMQ and only polls.',
      { secret: true },
    ),
    control_exchange: str('quantum', 'The default exchange under which topics are scoped.'),
    rabbit_host: optStr('The RabbitMQ broker address where a single node is used. Deprecated: use transport_url.', rabbitDeprecated('rabbit_host')),
    rabbit_port: int(5672, 'The RabbitMQ broker port where a single node is used. Deprecated: use transport_url.', { min: 1, max: 65535, ...rabbitDeprecated('rabbit_port') }),
    rabbit_hosts: list([], 'RabbitMQ HA cluster host:port pairs, tried in order. Deprecated: use transport_url.', rabbitDeprecated('rabbit_hosts')),
    rabbit_userid: str('guest', 'The RabbitMQ userid. Deprecated: use transport_url.', rabbitDeprecated('rabbit_userid')),
    rabbit_password: str('guest', 'The RabbitMQ password. Deprecated: use transport_url.', { secret: true, ...rabbitDeprecated('rabbit_password') }),
    rabbit_virtual_host: str('/', 'The RabbitMQ virtual host. Deprecated: use transport_url.', rabbitDeprecated('rabbit_virtual_host')),
  },
  oslo_messaging_rabbit: {
    heartbeat_timeout_threshold: int(60, "Number of seconds after which the Rabbit broker is considered down if heartbeat's keep-alive fails (0 disables heartbeat).", { min: 0 }),
    rabbit_retry_interval: int(1, 'How frequently to retry connecting with RabbitMQ.', { min: 0, deprecated: [['DEFAULT', 'rabbit_retry_interval']] }),
    rabbit_retry_backoff: int(2, 'How long to backoff for between retries when connecting to RabbitMQ.', { min: 0, deprecated: [['DEFAULT', 'rabbit_retry_backoff']] }),
    rabbit_interval_max: int(30, 'Maximum interval of RabbitMQ connection retries.', { min: 1 }),
  },
} satisfies Spec;

export interface TransportHost {
  hostname: string;
  port: number;
  username: string;
  password: string;
}

export interface TransportUrl {
  /** 'rabbit' (oslo's 'kombu' alias is read as 'rabbit'). */
  transport: 'rabbit';
  hosts: TransportHost[];
  virtualHost: string;
  /** `?ssl=1`: AMQP over TLS. Other query options are accepted and ignored. */
  ssl: boolean;
  query: Record<string, string>;
}

const URL_RE = /^([A-Za-z][A-Za-z0-9+.-]*):(?:\/\/([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#.*)?$/;

// Python's unquote: valid %XX sequences decoded as UTF-8, anything else left as it is.
function unquote(s: string): string {
  return s.replace(/(?:%[0-9A-Fa-f]{2})+/g, (m) => {
    try {
      return decodeURIComponent(m);
    } catch {
      return m;
    }
  });
}

// oslo_utils.netutils.parse_host_port: "[v6]:port", "host:port", "host", or a bare IPv6 address.
function parseHostPort(s: string, defaultPort: number, where: string): { hostname: string; port: number } {
  let hostname = s;
  let port: string | undefined;
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) throw new ConfigError(`${where}: unterminated [ in host ${JSON.stringify(s)}`);
    hostname = s.slice(1, end);
    const rest = s.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) throw new ConfigError(`${where}: bad host ${JSON.stringify(s)}`);
      port = rest.slice(1);
    }
  } else if (s.split(':').length === 2) {
    [hostname, port] = s.split(':') as [string, string];
  }
  if (hostname === '') throw new ConfigError(`${where}: empty host name in ${JSON.stringify(s)}`);
  if (port === undefined || port === '') return { hostname, port: defaultPort };
  const n = /^\d+$/.test(port) ? Number(port) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new ConfigError(`${where}: bad port ${JSON.stringify(port)} for host ${hostname}`);
  return { hostname, port: n };
}

/** Parse a transport_url as oslo.messaging's TransportURL.parse does. Throws ConfigError. */
export function parseTransportUrl(url: string): TransportUrl {
  const m = URL_RE.exec(url.trim());
  if (!m) throw new ConfigError(`invalid transport_url ${JSON.stringify(maskUrl(url))}: no scheme specified (expected rabbit://user:pass@host:port/vhost)`);
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'rabbit' && scheme !== 'kombu') {
    throw new ConfigError(`invalid transport_url ${JSON.stringify(maskUrl(url))}: transport '${scheme}' is not supported, only rabbit:// (RabbitMQ)`);
  }
  const query: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(m[4] ?? '')) query[k] = query[k] === undefined ? v : `${query[k]},${v}`;
  const path = m[3] ?? '';
  const virtualHost = path.startsWith('/') && path.length > 1 ? unquote(path.slice(1)) : '/';
  const hosts: TransportHost[] = [];
  for (const part of (m[2] ?? '').split(',')) {
    if (part === '') continue;
    let hostPart = part;
    let username = 'guest';
    let password = 'guest';
    const at = part.lastIndexOf('@');
    if (at >= 0) {
      const cred = part.slice(0, at);
      hostPart = part.slice(at + 1);
      const colon = cred.indexOf(':');
      username = unquote(colon >= 0 ? cred.slice(0, colon) : cred);
      if (colon >= 0) password = unquote(cred.slice(colon + 1));
    }
    hosts.push({ ...parseHostPort(hostPart, 5672, `invalid transport_url ${JSON.stringify(maskUrl(url))}`), username, password });
  }
  // oslo (kombu) connects to localhost with the default credentials when the URL names no host.
  if (hosts.length === 0) hosts.push({ hostname: 'localhost', port: 5672, username: 'guest', password: 'guest' });
  const ssl = ['1', 'true', 'yes', 'on'].includes((query.ssl ?? '').toLowerCase());
  return { transport: 'rabbit', hosts, virtualHost, ssl, query };
}

/** The URL with the password masked, for logs. */
export function maskUrl(url: string): string {
  const m = /^([^:/?#]*:\/\/)([^/?#]*)(.*)$/s.exec(url);
  // Not URL-shaped: still never show what looks like user:password@.
  if (!m) return url.replace(/([^:/?#@,]+):[^@/?#,]*@/g, '$1:***@');
  const netloc = m[2]!
    .split(',')
    .map((h) => {
      const at = h.lastIndexOf('@');
      if (at < 0) return h;
      const cred = h.slice(0, at);
      const colon = cred.indexOf(':');
      return colon < 0 ? h : `${cred.slice(0, colon)}:***${h.slice(at)}`;
    })
    .join(',');
  return `${m[1]}${netloc}${m[3]}`;
}

const hostPort = (h: string, port: number) => (h.includes(':') ? `[${h}]:${port}` : `${h}:${port}`);

/**
 * The URL to connect to, or undefined when nothing is configured (then daemons keep polling without RabbitMQ).
 * transport_url wins; else any rabbit_host/rabbit_hosts set builds one. Malformed URL or non-rabbit scheme → ConfigError.
 * `warn` hears that the deprecated rabbit_* options were used.
 */
export function transportUrlFrom(conf: Resolved<typeof messagingOpts>, warn?: (msg: string) => void): string | undefined {
  const d = conf.DEFAULT;
  const url = d.transport_url?.trim();
  if (url) {
    parseTransportUrl(url);
    return url;
  }
  const where = d.rabbit_hosts.length ? 'rabbit_hosts' : 'rabbit_host';
  const raw = d.rabbit_hosts.length ? d.rabbit_hosts : d.rabbit_host ? [d.rabbit_host] : [];
  if (raw.length === 0) return undefined;
  const cred = `${encodeURIComponent(d.rabbit_userid)}:${encodeURIComponent(d.rabbit_password)}`;
  const hosts = raw.map((h) => {
    const p = d.rabbit_hosts.length ? parseHostPort(h.trim(), d.rabbit_port, `[DEFAULT] ${where}`) : { hostname: h.trim(), port: d.rabbit_port };
    if (p.hostname === '') throw new ConfigError(`[DEFAULT] ${where}: empty host name`);
    return `${cred}@${hostPort(p.hostname, p.port)}`;
  });
  const vhost = d.rabbit_virtual_host === '/' ? '' : encodeURIComponent(d.rabbit_virtual_host);
  const built = `rabbit://${hosts.join(',')}/${vhost}`;
  warn?.(`[DEFAULT] ${where} and the other rabbit_* options are deprecated: set [DEFAULT] transport_url = ${maskUrl(built)}`);
  return built;
}

/** TransportOptions from the [DEFAULT] / [oslo_messaging_rabbit] options, or undefined when no broker is configured. */
export function transportOptionsFrom(
  conf: Resolved<typeof messagingOpts>,
  o: { log: Logger; name: string },
): TransportOptions | undefined {
  const url = transportUrlFrom(conf, (msg) => o.log.warn(msg));
  if (url === undefined) return undefined;
  const r = conf.oslo_messaging_rabbit;
  return {
    url,
    exchange: conf.DEFAULT.control_exchange,
    log: o.log,
    name: o.name,
    retryIntervalMs: r.rabbit_retry_interval * 1000,
    retryBackoffMs: r.rabbit_retry_backoff * 1000,
    retryMaxMs: r.rabbit_interval_max * 1000,
    heartbeatSec: r.heartbeat_timeout_threshold,
  };
}

// ---- oslo's wire format --------------------------------------------------------------------------

/** Python's json.dumps with its defaults (", " and ": " separators, ensure_ascii), so bodies read as oslo's do. */
export function pyJson(v: unknown): string {
  if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') v = (v as { toJSON(): unknown }).toJSON();
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    case 'number':
      return Number.isFinite(v) ? String(v) : 'null';
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return v.toString();
    case 'object':
      if (v === null) return 'null';
      if (Array.isArray(v)) return `[${v.map((x) => (x === undefined || typeof x === 'function' ? 'null' : pyJson(x))).join(', ')}]`;
      return `{${Object.entries(v as Record<string, unknown>)
        .filter(([, x]) => x !== undefined && typeof x !== 'function')
        .map(([k, x]) => `${pyJson(k)}: ${pyJson(x)}`)
        .join(', ')}}`;
    default:
      return 'null';
  }
}

/** str(datetime.utcnow()) as oslo writes timestamps: '%Y-%m-%d %H:%M:%S.%f' (microseconds from a millisecond clock). */
export function pyUtcTimestamp(d = new Date()): string {
  return `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 23)}000`;
}

export const ENVELOPE_VERSION = '2.0';

/** oslo's serialize_msg: the message as a JSON string inside {"oslo.version", "oslo.message"}. */
export function serializeMsg(msg: Args): string {
  return pyJson({ 'oslo.version': ENVELOPE_VERSION, 'oslo.message': pyJson(msg) });
}

/** An admin context (neutron_lib get_admin_context()) flattened as oslo's pack_context does, plus Grizzly's tenant keys. */
export function adminContext(): Args {
  const ctx: Args = {
    user: null,
    project_id: null,
    system_scope: null,
    project: null,
    domain: null,
    user_domain: null,
    project_domain: null,
    is_admin: true,
    read_only: false,
    show_deleted: false,
    auth_token: null,
    request_id: `req-${randomUUID()}`,
    global_request_id: null,
    resource_uuid: null,
    roles: ['admin'],
    user_identity: '- - - - -',
    is_admin_project: true,
    user_id: null,
    timestamp: pyUtcTimestamp(),
    project_name: null,
    user_name: null,
    has_global_access: true,
    can_set_project_id: true,
    // Grizzly's quantum context read these names.
    tenant_id: null,
    tenant_name: null,
    read_deleted: 'no',
  };
  return Object.fromEntries(Object.entries(ctx).map(([k, v]) => [`_context_${k}`, v]));
}

const uniqueId = () => randomUUID().replace(/-/g, '');

/** The body of an oslo cast: {method, args, version, _unique_id, _context_*...} in the envelope. */
export function castBody(method: string, args: Args): string {
  return serializeMsg({ method, args, version: '1.0', _unique_id: uniqueId(), ...adminContext() });
}

/** The body of an oslo (messagingv2) notification. */
export function notificationBody(eventType: string, payload: Args, publisherId: string, priority = 'INFO'): string {
  return serializeMsg({
    message_id: randomUUID(),
    publisher_id: publisherId,
    event_type: eventType,
    priority,
    payload,
    timestamp: pyUtcTimestamp(),
    _unique_id: uniqueId(),
    ...adminContext(),
  });
}

/** oslo's deserialize_msg: unwrap the envelope if there is one (older senders and v1 notifications send the bare dict). */
export function deserializeMsg(body: Buffer): Args {
  const outer: unknown = JSON.parse(body.toString('utf8'));
  if (!isObject(outer)) throw new Error('message is not a JSON object');
  if (!('oslo.version' in outer && 'oslo.message' in outer)) return outer;
  const version = String(outer['oslo.version']);
  if (version.split('.')[0] !== ENVELOPE_VERSION.split('.')[0]) throw new Error(`unsupported RPC envelope version ${version}`);
  if (typeof outer['oslo.message'] !== 'string') throw new Error('oslo.message is not a string');
  const inner: unknown = JSON.parse(outer['oslo.message']);
  if (!isObject(inner)) throw new Error('oslo.message is not a JSON object');
  return inner;
}

function isObject(v: unknown): v is Args {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// ---- the transport -------------------------------------------------------------------------------

export interface TransportOptions {
  url: string;
  /** The control exchange ([DEFAULT] control_exchange). */
  exchange: string;
  log: Logger;
  /** Shown in RabbitMQ as connection_name "<name>:<pid>:<connection uuid>", as oslo names its connections. */
  name: string;
  retryIntervalMs?: number;
  retryBackoffMs?: number;
  retryMaxMs?: number;
  heartbeatSec?: number;
}

export type Args = Record<string, unknown>;

interface ExchangeDecl {
  name: string;
  type: 'topic' | 'fanout';
  durable: boolean;
  autoDelete: boolean;
}

interface QueueDecl {
  name: string;
  options: Options.AssertQueue;
}

interface Binding {
  exchange: ExchangeDecl;
  /** A function because a fanout queue gets a fresh unique name on every connection. */
  queue: () => QueueDecl;
  routingKey: string;
}

interface Subscription {
  what: string;
  bindings: Binding[];
  handle(msg: Args): Promise<void>;
  /** Messages of one subscription are handled one after the other, in delivery order. */
  chain: Promise<void>;
  /** oslo's duplicate check: the last 16 _unique_ids seen. */
  seen: string[];
}

interface Outgoing {
  exchange: ExchangeDecl;
  routingKey: string;
  body: Buffer;
}

/** While the publish channel pushes back, at most this many messages wait; more are refused, never buffered without bound. */
export const OUTBOX_MAX = 10_000;
const PREFETCH = 64;
const POOL_QUEUE_EXPIRES_MS = 10 * 60_000;
const CONNECT_TIMEOUT_MS = 10_000;
const PUBLISH_PROPS: Options.Publish = { contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 2, priority: 0, headers: {} };

interface Live {
  conn: ChannelModel;
  host: TransportHost;
  pub?: Channel;
  consume?: Channel;
  decl?: Promise<Channel>;
  /** Exchanges declared (or found) on this connection. */
  declared: Set<string>;
  lost: boolean;
}

const sleepFor = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Transport {
  private readonly o: Required<Omit<TransportOptions, 'log'>> & { log: Logger };
  private readonly parsed: TransportUrl;
  private readonly control: ExchangeDecl;
  private readonly events = new EventEmitter();
  private readonly subs: Subscription[] = [];
  private live: Live | undefined;
  private up = false;
  private started = false;
  private closed = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private hostIdx = 0;
  private everConnected = false;
  private outageLogged = false;
  private dropLogged = false;
  private fullLogged = false;
  private outbox: Outgoing[] = [];
  private pumping = false;
  private waitingDrain = false;

  constructor(o: TransportOptions) {
    this.parsed = parseTransportUrl(o.url);
    this.o = {
      ...o,
      retryIntervalMs: o.retryIntervalMs ?? 1000,
      retryBackoffMs: o.retryBackoffMs ?? 2000,
      retryMaxMs: o.retryMaxMs ?? 30_000,
      heartbeatSec: o.heartbeatSec ?? 60,
    };
    this.control = { name: o.exchange, type: 'topic', durable: false, autoDelete: false };
  }

  get connected(): boolean {
    return this.up;
  }

  /** 'up' after every (re)connect once all consumers are declared and consuming; 'down' when the connection is lost (not on close()). */
  on(ev: 'up' | 'down', fn: () => void): this {
    this.events.on(ev, () => {
      try {
        fn();
      } catch (e) {
        this.o.log.error({ err: e }, `messaging '${ev}' listener failed`);
      }
    });
    return this;
  }

  /** Connect in the background and keep reconnecting for ever (backoff between retries); never throws, never exits the process. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.loop = this.connectLoop();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    await this.loop;
    const live = this.live;
    this.live = undefined;
    this.up = false;
    this.outbox = [];
    if (!live) return;
    // Let running handlers finish so their messages are acked, but do not hang a shutdown on one.
    await Promise.race([Promise.allSettled(this.subs.map((s) => s.chain)), sleepFor(2000)]);
    try {
      await live.conn.close();
    } catch {
      // Already gone.
    }
  }

  /** oslo cast to `topic` (or `topic.server`) on the control exchange. False when dropped (not connected, or the outbox is full). */
  cast(topic: string, method: string, args: Args, server?: string): boolean {
    const key = server ? `${topic}.${server}` : topic;
    return this.send(this.control, key, () => castBody(method, args), `cast ${method} to ${key}`);
  }

  /** oslo fanout cast: exchange `<topic>_fanout` (fanout type). */
  fanout(topic: string, method: string, args: Args): boolean {
    return this.send(fanoutExchange(topic), topic, () => castBody(method, args), `fanout cast ${method} to ${topic}_fanout`);
  }

  /** oslo notification, priority INFO, to routing key `notifications.info` on the control exchange. */
  notify(eventType: string, payload: Args, publisherId: string): boolean {
    return this.send(this.control, 'notifications.info', () => notificationBody(eventType, payload, publisherId), `notification ${eventType}`);
  }

  /**
   * An oslo RPC server's three consumers: queues `topic` and `topic.server` on the control exchange, and an
   * exclusive auto-delete queue `topic_fanout_<uuid hex>` on fanout exchange `topic_fanout`. Re-declared on
   * every reconnect. Each message is acked once the handler's promise settles.
   */
  consume(topic: string, server: string, handler: (method: string, args: Args) => void | Promise<void>): void {
    // amqp_durable_queues / amqp_auto_delete are False by default in oslo: so are these.
    const topicQueue = (name: string) => () => ({ name, options: { durable: false, autoDelete: false, exclusive: false } });
    this.subscribe({
      what: `RPC server ${topic}.${server}`,
      bindings: [
        { exchange: this.control, queue: topicQueue(topic), routingKey: topic },
        { exchange: this.control, queue: topicQueue(`${topic}.${server}`), routingKey: `${topic}.${server}` },
        { exchange: fanoutExchange(topic), queue: () => ({ name: `${topic}_fanout_${uniqueId()}`, options: { durable: false, autoDelete: true, exclusive: true } }), routingKey: topic },
      ],
      handle: async (msg) => {
        const method = msg.method;
        if (typeof method !== 'string' || method === '') throw new Malformed('no method');
        const args = msg.args ?? {};
        if (!isObject(args)) throw new Malformed('args is not an object');
        if (msg._msg_id !== undefined && msg._msg_id !== null) {
          this.o.log.warn({ topic, method }, 'received an RPC call, but only casts are supported: no reply will be sent');
        }
        await handler(method, args);
      },
    });
  }

  /**
   * A notification listener with its own queue named `pool` (not exclusive, so it survives reconnects; it
   * expires after 10 minutes without a consumer so a gone listener does not pile messages up for ever),
   * bound to `notifications.info` on the control exchange.
   */
  consumeNotifications(pool: string, handler: (eventType: string, payload: Args) => void | Promise<void>): void {
    this.subscribe({
      what: `notification listener ${pool}`,
      bindings: [
        {
          exchange: this.control,
          queue: () => ({ name: pool, options: { durable: false, autoDelete: false, exclusive: false, arguments: { 'x-expires': POOL_QUEUE_EXPIRES_MS } } }),
          routingKey: 'notifications.info',
        },
      ],
      handle: async (msg) => {
        const { event_type: eventType, payload } = msg;
        if (typeof eventType !== 'string' || eventType === '') throw new Malformed('no event_type');
        if (!isObject(payload)) throw new Malformed('payload is not an object');
        await handler(eventType, payload);
      },
    });
  }

  // ---- publishing ----

  private send(exchange: ExchangeDecl, routingKey: string, body: () => string, what: string): boolean {
    const live = this.live;
    if (!this.up || !live) {
      if (!this.dropLogged) {
        this.dropLogged = true;
        this.o.log.warn({ exchange: exchange.name, routing_key: routingKey }, `not connected to the AMQP server: dropped ${what} (further drops until reconnected are logged at debug)`);
      } else this.o.log.debug({ exchange: exchange.name, routing_key: routingKey }, `not connected to the AMQP server: dropped ${what}`);
      return false;
    }
    const msg: Outgoing = { exchange, routingKey, body: Buffer.from(body(), 'utf8') };
    // Fanout exchanges are auto-delete and may have gone with their last queue: declare before each use.
    const direct = this.outbox.length === 0 && !this.pumping && !this.waitingDrain && live.pub !== undefined && exchange.type === 'topic' && live.declared.has(exchange.name);
    if (direct) return this.publish(live, msg, what);
    if (this.outbox.length >= OUTBOX_MAX) {
      if (!this.fullLogged) {
        this.fullLogged = true;
        this.o.log.warn({ queued: this.outbox.length }, `the AMQP server is not keeping up: dropped ${what} (outbox full)`);
      }
      return false;
    }
    this.outbox.push(msg);
    void this.pump();
    return true;
  }

  private publish(live: Live, m: Outgoing, what = 'message'): boolean {
    try {
      if (!live.pub) throw new Error('no publish channel');
      if (!live.pub.publish(m.exchange.name, m.routingKey, m.body, PUBLISH_PROPS)) this.waitingDrain = true;
      return true;
    } catch (e) {
      // The channel closed under us; its 'close' handler opens a new one.
      this.o.log.warn({ err: errorMessage(e), exchange: m.exchange.name, routing_key: m.routingKey }, `could not publish ${what}`);
      return false;
    }
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      // A publish channel being replaced pumps again once the new one is open.
      while (this.outbox.length > 0 && this.up && !this.waitingDrain && !this.closed && this.live?.pub) {
        const live = this.live;
        const m = this.outbox[0]!;
        if (m.exchange.type === 'fanout' || !live.declared.has(m.exchange.name)) {
          try {
            await this.ensureExchange(live, m.exchange);
          } catch (e) {
            if (live !== this.live) break;
            this.o.log.error({ err: errorMessage(e), exchange: m.exchange.name }, 'could not declare exchange: message dropped');
            this.outbox.shift();
            continue;
          }
          if (live !== this.live || live.lost || !live.pub) break;
        }
        this.outbox.shift();
        this.publish(live, m);
      }
      if (this.outbox.length < OUTBOX_MAX / 2) this.fullLogged = false;
    } finally {
      this.pumping = false;
    }
  }

  // ---- declarations ----

  /** The channel declarations run on: a failed declare closes it, so it is apart from publishing and consuming. */
  private declChannel(live: Live): Promise<Channel> {
    if (live.decl) return live.decl;
    const p = live.conn.createChannel().then((ch) => {
      ch.on('error', () => {
        // Reported by the operation that failed.
      });
      ch.on('close', () => {
        if (live.decl === p) live.decl = undefined;
      });
      return ch;
    });
    live.decl = p;
    p.catch(() => {
      if (live.decl === p) live.decl = undefined;
    });
    return p;
  }

  private async ensureExchange(live: Live, x: ExchangeDecl): Promise<void> {
    const ch = await this.declChannel(live);
    try {
      await ch.assertExchange(x.name, x.type, { durable: x.durable, autoDelete: x.autoDelete });
    } catch (e) {
      if (codeOf(e) !== 406) throw e;
      // Someone declared it first with other flags (e.g. amqp_durable_queues = True): use it as it is.
      this.o.log.error(
        { exchange: x.name, err: errorMessage(e) },
        `exchange '${x.name}' already exists with flags other than this service declares (type ${x.type}, durable ${x.durable}, auto_delete ${x.autoDelete}); ` +
          'using it as it is. Declare it alike in every service (amqp_durable_queues) or delete it so it is declared afresh.',
      );
      await (await this.declChannel(live)).checkExchange(x.name);
    }
    live.declared.add(x.name);
  }

  private async ensureQueue(live: Live, q: QueueDecl): Promise<void> {
    const ch = await this.declChannel(live);
    try {
      await ch.assertQueue(q.name, q.options);
    } catch (e) {
      if (codeOf(e) !== 406) throw e;
      this.o.log.error(
        { queue: q.name, err: errorMessage(e) },
        `queue '${q.name}' already exists with arguments other than this service declares (durable ${q.options.durable}, auto_delete ${q.options.autoDelete}` +
          `${q.options.arguments ? `, ${JSON.stringify(q.options.arguments)}` : ''}); consuming from it as it is. Delete it so it is declared afresh.`,
      );
      await (await this.declChannel(live)).checkQueue(q.name);
    }
  }

  private async bindAndConsume(live: Live, sub: Subscription, b: Binding): Promise<void> {
    const q = b.queue();
    await this.ensureExchange(live, b.exchange);
    await this.ensureQueue(live, q);
    await (await this.declChannel(live)).bindQueue(q.name, b.exchange.name, b.routingKey);
    const ch = live.consume;
    if (!ch) throw new Error('no consumer channel');
    await ch.consume(q.name, (msg) => this.deliver(live, ch, sub, b, msg), { noAck: false });
    this.o.log.debug({ queue: q.name, exchange: b.exchange.name, routing_key: b.routingKey }, `consuming for ${sub.what}`);
  }

  private subscribe(sub: Omit<Subscription, 'chain' | 'seen'>): void {
    if (this.closed) {
      this.o.log.warn(`transport closed: not starting ${sub.what}`);
      return;
    }
    const s: Subscription = { ...sub, chain: Promise.resolve(), seen: [] };
    this.subs.push(s);
    const live = this.live;
    if (this.up && live) {
      void (async () => {
        try {
          for (const b of s.bindings) await this.bindAndConsume(live, s, b);
        } catch (e) {
          this.recycle(live, `could not start ${s.what}: ${errorMessage(e)}`);
        }
      })();
    }
  }

  // ---- consuming ----

  private deliver(live: Live, ch: Channel, sub: Subscription, b: Binding, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // basic.cancel from the server: the queue was deleted or failed over. Declare it again and go on.
      if (live !== this.live || live.lost || this.closed) return;
      this.o.log.warn({ routing_key: b.routingKey, exchange: b.exchange.name }, `the server cancelled a consumer of ${sub.what}: declaring its queue again`);
      void this.bindAndConsume(live, sub, b).catch((e: unknown) => this.recycle(live, `could not consume again for ${sub.what}: ${errorMessage(e)}`));
      return;
    }
    sub.chain = sub.chain.then(() => this.handleOne(ch, sub, msg));
  }

  private async handleOne(ch: Channel, sub: Subscription, msg: ConsumeMessage): Promise<void> {
    const where = { queue: msg.fields.routingKey, exchange: msg.fields.exchange, redelivered: msg.fields.redelivered };
    try {
      let body: Args;
      try {
        body = deserializeMsg(msg.content);
      } catch (e) {
        throw new Malformed(errorMessage(e));
      }
      const id = body._unique_id;
      if (typeof id === 'string') {
        if (sub.seen.includes(id)) {
          this.o.log.info({ ...where, unique_id: id }, 'ignoring duplicate message');
          return;
        }
        sub.seen.push(id);
        if (sub.seen.length > 16) sub.seen.shift();
      }
      await sub.handle(body);
    } catch (e) {
      if (e instanceof Malformed) {
        this.o.log.warn({ ...where, err: e.message, body: msg.content.subarray(0, 200).toString('utf8') }, `malformed message for ${sub.what} dropped`);
      } else this.o.log.error({ ...where, err: e }, `${sub.what}: handler failed; message dropped`);
    } finally {
      try {
        ch.ack(msg);
      } catch {
        // The channel is gone: the broker requeues the message for the next consumer.
      }
    }
  }

  // ---- connection life cycle ----

  private async connectLoop(): Promise<void> {
    let failures = 0;
    let cycles = 0;
    while (!this.closed) {
      const host = this.parsed.hosts[this.hostIdx]!;
      try {
        await this.open(host);
        return;
      } catch (e) {
        if (this.closed) return;
        failures++;
        this.hostIdx = (this.hostIdx + 1) % this.parsed.hosts.length;
        // kombu's retry_over_time: interval_start, then +interval_step each time, at most interval_max.
        const pause = failures % this.parsed.hosts.length === 0;
        const delay = pause ? Math.min(this.o.retryIntervalMs + cycles * this.o.retryBackoffMs, this.o.retryMaxMs) : 0;
        if (pause) cycles++;
        const err = errorMessage(e);
        const line = `AMQP server on ${hostPort(host.hostname, host.port)} is unreachable: ${err}. Trying again in ${delay / 1000} seconds.`;
        if (!this.outageLogged) {
          this.outageLogged = true;
          if (/ACCESS[-_ ]REFUSED|NOT[-_ ]ALLOWED|\b40[35]\b|\b530\b/.test(err)) this.o.log.error(line);
          else this.o.log.warn(`${line} (further attempts until connected are logged at debug)`);
        } else this.o.log.debug(line);
        if (delay > 0) {
          await new Promise<void>((r) => {
            const t = setTimeout(r, delay);
            this.wake = () => {
              clearTimeout(t);
              r();
            };
          });
          this.wake = undefined;
        }
      }
    }
  }

  private async open(host: TransportHost): Promise<void> {
    const connectionId = randomUUID();
    const conn = await connect(
      {
        protocol: this.parsed.ssl ? 'amqps' : 'amqp',
        hostname: host.hostname,
        port: host.port,
        username: host.username,
        password: host.password,
        // amqplib unescapes the vhost once more.
        vhost: this.parsed.virtualHost.replace(/%/g, '%25'),
        heartbeat: this.o.heartbeatSec,
      },
      { timeout: CONNECT_TIMEOUT_MS, noDelay: true, clientProperties: { connection_name: `${this.o.name}:${process.pid}:${connectionId}` } },
    );
    const live: Live = { conn, host, declared: new Set(), lost: false };
    let lostErr: string | undefined;
    conn.on('error', (e: Error) => {
      lostErr = e.message;
    });
    conn.on('close', (e?: Error) => this.onConnectionClosed(live, lostErr ?? e?.message));
    conn.on('blocked', (reason: string) => this.o.log.warn({ reason }, `the AMQP server on ${hostPort(host.hostname, host.port)} blocked this connection (resource alarm): publishing waits`));
    conn.on('unblocked', () => this.o.log.info(`the AMQP server on ${hostPort(host.hostname, host.port)} unblocked this connection`));
    try {
      if (this.closed) throw new Error('transport closed');
      live.pub = await this.openPublishChannel(live);
      const consume = await conn.createChannel();
      let consumeErr: string | undefined;
      consume.on('error', (e: Error) => {
        consumeErr = e.message;
      });
      // Channels close just before their connection does: look again once the connection had its say.
      consume.on('close', () => setImmediate(() => this.recycle(live, `the consumer channel closed${consumeErr ? ` (${consumeErr})` : ''}`)));
      await consume.prefetch(PREFETCH);
      live.consume = consume;
      await this.ensureExchange(live, this.control);
      for (const sub of this.subs) for (const b of sub.bindings) await this.bindAndConsume(live, sub, b);
      if (live.lost) throw new Error(lostErr ?? 'connection closed during setup');
      if (this.closed) throw new Error('transport closed');
    } catch (e) {
      live.lost = true;
      conn.close().catch(() => undefined);
      throw e;
    }
    this.live = live;
    this.up = true;
    this.dropLogged = false;
    this.fullLogged = false;
    const again = this.everConnected;
    this.everConnected = true;
    this.outageLogged = false;
    this.o.log.info({ connection_id: connectionId, exchange: this.o.exchange }, `${again ? 'Reconnected' : 'Connected'} to AMQP server on ${hostPort(host.hostname, host.port)}`);
    this.events.emit('up');
  }

  private async openPublishChannel(live: Live): Promise<Channel> {
    const ch = await live.conn.createChannel();
    let err: string | undefined;
    ch.on('error', (e: Error) => {
      err = e.message;
    });
    ch.on('drain', () => {
      this.waitingDrain = false;
      void this.pump();
    });
    ch.on('close', () => setImmediate(() => this.onPublishChannelClosed(live, ch, err)));
    return ch;
  }

  private onPublishChannelClosed(live: Live, ch: Channel, err: string | undefined): void {
    if (live.lost || this.closed || live.pub !== ch) return;
    // e.g. a publish to an exchange that vanished: messages behind it on this channel are lost.
    this.o.log.error({ err }, 'the AMQP publish channel closed: opening a new one');
    live.pub = undefined;
    this.waitingDrain = false;
    live.declared.clear();
    this.openPublishChannel(live).then(
      (c) => {
        live.pub = c;
        void this.pump();
      },
      (e: unknown) => this.recycle(live, `could not open a new publish channel: ${errorMessage(e)}`),
    );
  }

  /** Give up on a connection whose state we can no longer trust; the reconnect path rebuilds everything. */
  private recycle(live: Live, why: string): void {
    if (live.lost || this.closed) return;
    this.o.log.error(`${why}: reconnecting`);
    live.conn.close().catch(() => undefined);
    // 'close' follows and runs onConnectionClosed.
  }

  private onConnectionClosed(live: Live, err: string | undefined): void {
    if (live.lost) return;
    live.lost = true;
    if (this.live !== live) return;
    this.live = undefined;
    this.up = false;
    this.waitingDrain = false;
    if (this.closed) return;
    const dropped = this.outbox.length;
    this.outbox = [];
    this.outageLogged = true;
    this.o.log.warn(
      { err, dropped },
      `lost the connection to AMQP server on ${hostPort(live.host.hostname, live.host.port)}${dropped ? `; ${dropped} queued messages dropped` : ''}: reconnecting (further attempts until connected are logged at debug)`,
    );
    this.events.emit('down');
    this.hostIdx = (this.hostIdx + 1) % this.parsed.hosts.length;
    this.loop = this.connectLoop();
  }
}

class Malformed extends Error {}

function fanoutExchange(topic: string): ExchangeDecl {
  // As oslo declares it: not durable, auto-delete.
  return { name: `${topic}_fanout`, type: 'fanout', durable: false, autoDelete: true };
}

function codeOf(e: unknown): number | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'number' ? c : undefined;
}
