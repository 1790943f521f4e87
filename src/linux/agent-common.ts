// What the L3 and DHCP agents share: their common options, the metadata proxy command line, the log
// arguments handed to spawned proxies, the periodic state report, and the loop (sync + report + child
// monitor) both agent classes run.
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serviceCredentialOpts, serviceSessionFrom, type ServiceCredentialConf } from '../common/auth.js';
import { bool, int, mergeSpecs, optStr, str, type Spec } from '../common/config.js';
import type { KeystoneSession } from '../common/keystone.js';
import { ConfigError, errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { QuantumClient, type AgentReport, type ChangesReply } from '../common/quantum-client.js';
import type { Counter, Histogram } from 'prom-client';
import type { Metrics } from '../common/metrics.js';
import { PROXY_NODE_FLAGS } from '../common/proxy-runtime.js';
import { rateLimitArgs, type MetadataRateLimitingConf } from '../common/metadata-rate-limiting.js';
import { ProcessManager, ProcessMonitor } from './external-process.js';

export const INTERFACE_DRIVERS = ['linuxbridge', 'quantum.agent.linux.interface.BridgeInterfaceDriver', 'neutron.agent.linux.interface.BridgeInterfaceDriver'];

/** Options both agents read (quantum.conf + their own ini). */
const agentBaseOpts = {
  DEFAULT: {
    state_path: str('/var/lib/quantum', 'Top-level directory for maintaining the agent\'s state (pid files, dnsmasq files, the metadata proxy socket).'),
    quantum_url: str('http://127.0.0.1:9696', 'URL of quantum-server.'),
    auth_strategy: str('noauth', 'The type of authentication to use with quantum-server: keystone authenticates with auth_url and the service credentials (a token kept and renewed).', { choices: ['noauth', 'keystone'] }),
    host: str(hostname(), 'Hostname to be used by the agent when reporting its state and binding ports. Defaults to the machine\'s hostname.', { sample: '<hostname>' }),
    interface_driver: str('linuxbridge', 'The driver used to plug interfaces: linuxbridge (quantum.agent.linux.interface.BridgeInterfaceDriver) is the only one.'),
    polling_interval: int(2, 'Seconds between two polls of quantum-server for changes when RabbitMQ is not configured or not reachable (and between retries after a failed sync).', { min: 1 }),
    periodic_interval: int(40, 'Seconds between periodic tasks: with RabbitMQ, the agent reads the notification log this often, so a cast lost while the broker was away is never lost.', { min: 1 }),
    full_sync_interval: int(600, 'Seconds between full resyncs of everything this agent serves (a safety net; an unchanged router or network costs no command); 0 disables them.', { min: 0 }),
    metadata_proxy_socket: optStr('Location of the metadata agent\'s Unix domain socket (passed to the proxies; default $state_path/metadata_proxy).'),
    metadata_proxy_cmd: optStr('Command that runs quantum-ns-metadata-proxy (split on spaces); default: this node (with --max-semi-space-size=1 --single-threaded) running this build\'s CommonJS copy of the proxy (dist/proxy/ns-proxy/main.js).'),
    metadata_proxy_user: optStr('User (uid or name) the metadata proxies run as after binding their port (default: unchanged).'),
    metadata_proxy_group: optStr('Group (gid or name) the metadata proxies run as after binding their port (default: unchanged).'),
    metadata_proxy_mode: str('per-namespace', 'per-namespace: one quantum-ns-metadata-proxy process per router / isolated network (the Grizzly shape); shared: one proxy process for the whole agent, serving every namespace through a listening socket made inside each (kilobytes per router instead of megabytes).', { choices: ['per-namespace', 'shared'] }),
  },
  AGENT: {
    report_interval: int(30, 'Seconds between state reports to quantum-server; 0 disables them.', { min: 0 }),
    check_child_processes_interval: int(60, 'Interval between checks of child process liveness (seconds), use 0 to disable.', { min: 0 }),
    check_child_processes_action: str('respawn', 'Action to be executed when a child process dies.', { choices: ['respawn', 'exit'] }),
    use_namespaces: bool(true, 'Allow overlapping IP (must be True: everything is built in namespaces).'),
  },
} satisfies Spec;

/** With the service credentials (auth_strategy = keystone) the agents authenticate with. */
export const commonAgentOpts = mergeSpecs(agentBaseOpts, serviceCredentialOpts);

export interface CommonAgentConf {
  state_path: string;
  interface_driver: string;
}

export function validateCommon(d: { interface_driver: string }, a: { use_namespaces: boolean }): void {
  if (!INTERFACE_DRIVERS.includes(d.interface_driver)) {
    throw new ConfigError(`[DEFAULT] interface_driver = ${JSON.stringify(d.interface_driver)}: only linuxbridge (quantum.agent.linux.interface.BridgeInterfaceDriver) is supported`);
  }
  if (!a.use_namespaces) throw new ConfigError('[AGENT] use_namespaces = False: not supported, every router and network lives in its own namespace');
}

/** This build's CommonJS copy of the proxy (tsconfig.ns-proxy.json: dist/proxy, next to dist/src). */
export const defaultProxyMain = resolve(dirname(fileURLToPath(import.meta.url)), '../../proxy/ns-proxy/main.js');

export function proxyCommandPrefix(cmd: string | undefined): string[] {
  if (cmd && cmd.trim()) return cmd.trim().split(/\s+/);
  // One proxy runs per router: node flags that keep each copy small and cheap (src/common/proxy-runtime.ts);
  // the proxy cannot set them on itself after start-up.
  return [process.execPath, ...PROXY_NODE_FLAGS, defaultProxyMain];
}

export interface LogConf {
  debug: boolean;
  verbose: boolean;
  log_file?: string | undefined;
  log_dir?: string | undefined;
}

/** Neutron's get_log_args: proxies log next to the agent's log, one file per uuid. */
export function proxyLogArgs(c: LogConf, uuid: string): string[] {
  const args: string[] = [];
  if (c.debug) args.push('--debug');
  if (c.verbose) args.push('--verbose');
  const name = `quantum-ns-metadata-proxy-${uuid}.log`;
  if (c.log_dir) args.push(`--log-file=${name}`, `--log-dir=${c.log_dir}`);
  else if (c.log_file) args.push(`--log-file=${name}`, `--log-dir=${dirname(c.log_file)}`);
  return args;
}

export interface ProxyArgs {
  prefix: string[];
  pidFile: string;
  routerId?: string | undefined;
  networkId?: string | undefined;
  statePath: string;
  port: number;
  socket?: string | undefined;
  bindAddress?: string | undefined;
  /** Neutron's bind_address_v6 / bind_interface: a second, v6-only listener (scoped to the device). */
  bindAddressV6?: string | undefined;
  bindInterface?: string | undefined;
  user?: string | undefined;
  group?: string | undefined;
  log: LogConf;
  /** More proxy flags ([metadata_rate_limiting]). */
  extra?: readonly string[];
}

/** quantum-ns-metadata-proxy's argv, in the foreground (the ProcessManager detaches it and it writes its pid file). */
export function proxyArgv(a: ProxyArgs): string[] {
  const uuid = (a.routerId ?? a.networkId)!;
  const argv = [...a.prefix, `--pid_file=${a.pidFile}`];
  argv.push(a.routerId ? `--router_id=${a.routerId}` : `--network_id=${a.networkId}`);
  argv.push(`--state_path=${a.statePath}`, `--metadata_port=${a.port}`);
  if (a.socket) argv.push(`--metadata_proxy_socket=${a.socket}`);
  if (a.bindAddress) argv.push(`--bind_address=${a.bindAddress}`);
  if (a.bindAddressV6) argv.push(`--bind_address_v6=${a.bindAddressV6}`);
  if (a.bindAddressV6 && a.bindInterface) argv.push(`--bind_interface=${a.bindInterface}`);
  if (a.user) argv.push(`--metadata_proxy_user=${a.user}`);
  if (a.group) argv.push(`--metadata_proxy_group=${a.group}`);
  argv.push('--nodaemonize', ...proxyLogArgs(a.log, uuid), ...(a.extra ?? []));
  return argv;
}

/** The agent options a metadata proxy's command line is made from. */
export interface ProxyConf extends LogConf {
  state_path: string;
  metadata_proxy_cmd?: string | undefined;
  metadata_proxy_socket?: string | undefined;
  metadata_proxy_user?: string | undefined;
  metadata_proxy_group?: string | undefined;
  /** The agent's [metadata_rate_limiting] group, passed to its proxies as flags. */
  metadata_rate_limiting?: MetadataRateLimitingConf | undefined;
}

/**
 * The supervised quantum-ns-metadata-proxy of a router (routerId) or an isolated network (networkId), in
 * `namespace`, keyed by `uuid`; it writes its own pid file.
 */
export function metadataProxyManager(o: { uuid: string; namespace: string; conf: ProxyConf; port: number; routerId?: string | undefined; networkId?: string | undefined; bindAddress?: string | undefined; bindAddressV6?: string | undefined; bindInterface?: string | undefined; log: Logger }): ProcessManager {
  const d = o.conf;
  return new ProcessManager({
    uuid: o.uuid,
    statePath: d.state_path,
    namespace: o.namespace,
    pidFileWriter: 'process',
    label: 'metadata-proxy',
    log: o.log,
    cmd: (pidFile) =>
      proxyArgv({
        prefix: proxyCommandPrefix(d.metadata_proxy_cmd),
        pidFile,
        ...(o.routerId ? { routerId: o.routerId } : { networkId: o.networkId }),
        statePath: d.state_path,
        port: o.port,
        socket: d.metadata_proxy_socket,
        bindAddress: o.bindAddress,
        bindAddressV6: o.bindAddressV6,
        bindInterface: o.bindInterface,
        user: d.metadata_proxy_user,
        group: d.metadata_proxy_group,
        log: d,
        extra: rateLimitArgs(d.metadata_rate_limiting),
      }),
  });
}

/** Heartbeats: the first carries start_flag; failures are logged and retried at the next interval. */
export class StateReporter {
  private timer: NodeJS.Timeout | undefined;
  private first = true;
  constructor(
    private readonly client: QuantumClient,
    private readonly intervalSec: number,
    private readonly build: () => Omit<AgentReport, 'start_flag'>,
    private readonly log: Logger,
  ) {}

  async report(): Promise<void> {
    const body: AgentReport = { ...this.build(), ...(this.first ? { start_flag: true } : {}) };
    try {
      await this.client.reportState(body);
      this.first = false;
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, 'Failed reporting state!');
    }
  }

  /** Report every interval; `skipFirst` when a report was just sent. */
  start(skipFirst = false): void {
    if (this.intervalSec <= 0) return;
    if (!skipFirst) void this.report();
    this.timer = setInterval(() => void this.report(), this.intervalSec * 1000);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** The options AgentLoop reads (both agents' confs have them: commonAgentOpts + loggingOpts). */
export interface AgentLoopConf {
  DEFAULT: { quantum_url: string; auth_strategy: string; host: string; state_path: string; polling_interval: number; periodic_interval: number; full_sync_interval: number } & ServiceCredentialConf;
  AGENT: { report_interval: number; check_child_processes_interval: number; check_child_processes_action: string };
}

/** Who an agent says it is in its state reports. */
export interface AgentIdentity {
  binary: string;
  topic: string;
  agent_type: string;
  /** Name in the "<name> started" log line. */
  name: string;
}

/** What the loop needs of a messaging transport (src/common/messaging.ts's Transport). */
export interface CastListener {
  readonly connected: boolean;
  start(): void;
  close(): Promise<void>;
  on(ev: 'up' | 'down', fn: () => void): unknown;
  consume(topic: string, server: string, handler: (method: string, args: Record<string, unknown>) => void | Promise<void>): void;
}

/** After a broker (re)connect, poll this long unless a cast shows quantum-server is connected too (its reconnect backoff tops out at 30 s). */
const RECONNECT_GRACE_MS = 60_000;

/** Resources whose sync failed are retried this many times before the agent falls back to a full sync. */
const MAX_ATTEMPTS = 5;
const CHUNK = 100;

/**
 * The part both agents share. A full sync at start (and after errors, a lost cursor, or every
 * full_sync_interval); after that only what changed: the resources named by casts from quantum-server over
 * RabbitMQ while a transport is connected, else those named in the server's notification log, polled every
 * polling_interval with a cursor (an idle poll is one small request). With RabbitMQ the log is read once after
 * every (re)connect and every periodic_interval, so a cast lost in an outage is caught up. Plus the child
 * process monitor and the state reporter. Subclasses say how to sync everything and how to sync some resources.
 */
export abstract class AgentLoop<C extends AgentLoopConf> {
  readonly monitor: ProcessMonitor;
  protected readonly client: QuantumClient;
  private readonly ownClient: boolean;
  /** auth_strategy = keystone: the agent's token, renewed as it goes. */
  private readonly session: KeystoneSession | undefined;
  private readonly reporter: StateReporter;
  protected readonly transport: CastListener | undefined;
  private stopped = false;
  private cursor: number | undefined;
  private lastRead = 0;
  private retentionMs = 3600_000;
  private lastFull = 0;
  private nextPeriodic = 0;
  /** The transport came (back) up: read the log once before trusting casts alone. */
  private catchUp = true;
  /**
   * Until then, keep polling after a (re)connect unless a cast arrives first: quantum-server may reconnect to
   * the broker later than this agent does, and its casts are lost until it has.
   */
  private pollUntil = 0;
  private needFull = true;
  private readonly pending = new Map<string, number>();
  private wakeTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private loopDone: Promise<void> | undefined;
  /** Full syncs, change polls and resource syncs done (tests, benchmarks, state reports). */
  readonly stats = { fullSyncs: 0, polls: 0, resourceSyncs: 0, casts: 0 };
  /** [metrics] listen set: the agent's metrics (subclasses add theirs). */
  protected readonly metrics: Metrics | undefined;
  private m: { syncSeconds: Histogram<'kind'>; syncErrors: Counter<'kind'>; notifications: Counter<'source'> } | undefined;
  syncs = 0;
  lastError: string | undefined;

  constructor(
    readonly conf: C,
    protected readonly log: Logger,
    private readonly identity: AgentIdentity,
    deps: { client?: QuantumClient | undefined; transport?: CastListener | undefined; metrics?: Metrics | undefined } = {},
  ) {
    const d = conf.DEFAULT;
    this.metrics = deps.metrics;
    if (deps.metrics) {
      const m = deps.metrics;
      this.m = {
        syncSeconds: m.histogram('sync_duration_seconds', 'Syncs with quantum-server: full, or of the resources a notification named.', ['kind'], [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300]),
        syncErrors: m.counter('sync_errors_total', 'Syncs that failed (retried; a resource failing five times brings a full sync).', ['kind']),
        notifications: m.counter('notifications_total', 'Changes learned of, by where from: a RabbitMQ cast or the notification log.', ['source']),
      };
    }
    this.session = deps.client ? undefined : serviceSessionFrom(d.auth_strategy, d);
    this.client = deps.client ?? new QuantumClient({ url: d.quantum_url, timeoutMs: 60_000, auth: this.session });
    this.ownClient = !deps.client;
    this.transport = deps.transport;
    this.monitor = new ProcessMonitor({ intervalSec: conf.AGENT.check_child_processes_interval, action: conf.AGENT.check_child_processes_action as 'respawn' | 'exit', log });
    deps.metrics?.counter('child_respawns_total', 'Child processes (per-namespace metadata proxies, dnsmasq) found dead and respawned by the process monitor.', [], (c) => {
      c.reset();
      c.inc(this.monitor.respawns);
    });
    this.reporter = new StateReporter(
      this.client,
      conf.AGENT.report_interval,
      () => ({ binary: identity.binary, host: d.host, topic: identity.topic, agent_type: identity.agent_type, configurations: this.reportConfigurations() }),
      log,
    );
  }

  /** The plugin's RPC topic (q-l3-plugin, q-plugin) for get_changes. */
  protected abstract readonly rpcTopic: string;

  /** Bring everything this host serves in step with quantum-server; throws if that failed. */
  abstract fullSync(): Promise<void>;

  /** Bring these resources in step (each fetched, built, or torn down if no longer ours); returns those that failed. */
  abstract syncResources(ids: string[]): Promise<Set<string>>;

  /** The resources a cast (or notification log row) names; 'full' when it cannot be narrowed. */
  protected abstract resourcesOfCast(method: string, args: Record<string, unknown>): string[] | 'full';

  /** The `configurations` of the state report (called at each report). */
  protected abstract reportConfigurations(): Record<string, unknown>;

  /**
   * Called once with every resource of a round before they are synced CHUNK by CHUNK (the L3 agent serves adopted
   * routers there first); default nothing.
   */
  protected async beforeResourceSync(_ids: string[]): Promise<void> {}

  /** Set up before the first sync (e.g. the shared metadata proxy); default none. */
  protected async prepare(): Promise<void> {}

  start(): void {
    const d = this.conf.DEFAULT;
    this.log.info({ host: d.host, state_path: d.state_path, messaging: !!this.transport }, `${this.identity.name} started`);
    if (this.transport) {
      this.transport.on('up', () => {
        this.catchUp = true;
        this.pollUntil = Date.now() + RECONNECT_GRACE_MS;
        this.kick();
      });
      this.transport.on('down', () => {
        this.catchUp = true;
        this.log.warn('messaging down: polling quantum-server for changes until it is back');
        this.kick();
      });
      this.transport.consume(this.identity.topic, d.host, (method, args) => this.onCast(method, args));
      this.transport.start();
    }
    this.loopDone = this.loop();
  }

  /** A cast from quantum-server: queue what it names and wake the loop (a short delay batches a burst). */
  protected onCast(method: string, args: Record<string, unknown>): void {
    this.stats.casts++;
    this.m?.notifications.inc({ source: 'cast' });
    // The server reaches the broker too: casts alone are enough from now on.
    this.pollUntil = 0;
    const ids = this.resourcesOfCast(method, args);
    if (ids === 'full') this.needFull = true;
    else for (const id of ids) if (!this.pending.has(id)) this.pending.set(id, 0);
    this.log.debug({ method, resources: ids === 'full' ? 'all' : ids.length }, 'notification received');
    this.kick(10);
  }

  private kick(delayMs = 0): void {
    if (this.wakeTimer) return;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined;
      this.wake?.();
    }, delayMs);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = () => {
        this.wake = undefined;
        done();
      };
    });
  }

  private get messagingUp(): boolean {
    return !!this.transport?.connected && !this.catchUp && Date.now() >= this.pollUntil;
  }

  private async loop(): Promise<void> {
    if (this.conf.AGENT.report_interval > 0) await this.reporter.report();
    try {
      await this.prepare();
    } catch (e) {
      this.log.error({ err: errorMessage(e) }, 'agent set-up failed; retrying at every sync');
    }
    this.reporter.start(true);
    while (!this.stopped) {
      let again = false;
      try {
        again = await this.step();
      } catch (e) {
        this.lastError = errorMessage(e);
      }
      if (this.stopped) break;
      await this.sleep(again ? 0 : this.delay());
    }
  }

  private delay(): number {
    const d = this.conf.DEFAULT;
    if (this.needFull || this.pending.size) return d.polling_interval * 1000;
    if (!this.messagingUp) return d.polling_interval * 1000;
    return Math.max(0, this.nextPeriodic - Date.now());
  }

  /** One round; true when there is more to do at once (a full page of changes). */
  private async step(): Promise<boolean> {
    const d = this.conf.DEFAULT;
    const now = Date.now();
    const cursorTooOld = this.cursor !== undefined && now - this.lastRead > this.retentionMs / 2;
    const fullDue = d.full_sync_interval > 0 && now - this.lastFull > d.full_sync_interval * 1000;
    let more = false;
    if (this.needFull || cursorTooOld || fullDue) {
      await this.doFullSync();
    } else if (!this.messagingUp || now >= this.nextPeriodic) {
      more = await this.poll();
    }
    if (this.pending.size && !this.needFull) await this.processPending();
    this.syncs++;
    return more;
  }

  private async doFullSync(): Promise<void> {
    const d = this.conf.DEFAULT;
    const started = Date.now();
    // Where the log ends before reading the state: whatever changes meanwhile is replayed, never missed.
    let head: ChangesReply;
    try {
      head = await this.client.rpc<ChangesReply>(this.rpcTopic, 'get_changes', { host: d.host });
      // Resources queued so far are covered by the full sync.
      this.pending.clear();
      await this.fullSync();
    } catch (e) {
      this.m?.syncErrors.inc({ kind: 'full' });
      this.needFull = true;
      this.lastError = errorMessage(e);
      this.log.error({ err: this.lastError }, `Failed synchronizing with quantum-server; full resync in ${d.polling_interval} s`);
      return;
    }
    this.cursor = head.last;
    this.retentionMs = head.retention * 1000;
    this.lastRead = this.lastFull = Date.now();
    this.nextPeriodic = this.lastRead + d.periodic_interval * 1000;
    this.catchUp = !this.transport?.connected;
    this.needFull = false;
    this.lastError = undefined;
    this.stats.fullSyncs++;
    this.m?.syncSeconds.observe({ kind: 'full' }, (Date.now() - started) / 1000);
    this.log.info({ ms: Date.now() - started, cursor: this.cursor }, 'full sync done');
  }

  private async poll(): Promise<boolean> {
    const d = this.conf.DEFAULT;
    const wasCatchUp = this.catchUp && !!this.transport?.connected;
    let r: ChangesReply;
    try {
      r = await this.client.rpc<ChangesReply>(this.rpcTopic, 'get_changes', { host: d.host, since: this.cursor });
    } catch (e) {
      this.lastError = errorMessage(e);
      this.log.error({ err: this.lastError }, 'Failed reading changes from quantum-server; retrying');
      return false;
    }
    this.stats.polls++;
    if (r.changes.length) this.m?.notifications.inc({ source: 'log' }, r.changes.length);
    for (const c of r.changes) {
      const ids = this.resourcesOfCast(c.method, { ...(c.payload ?? {}), _resource_id: c.resource_id });
      if (ids === 'full') this.needFull = true;
      else for (const id of ids) if (!this.pending.has(id)) this.pending.set(id, 0);
    }
    this.cursor = r.last;
    this.retentionMs = r.retention * 1000;
    this.lastRead = Date.now();
    this.nextPeriodic = this.lastRead + d.periodic_interval * 1000;
    if (wasCatchUp) {
      this.catchUp = false;
      if (r.changes.length) this.log.info({ changes: r.changes.length }, 'caught up with changes cast while messaging was down');
    }
    return r.changes.length >= 1000;
  }

  private async processPending(): Promise<void> {
    const batch = [...this.pending.entries()];
    this.pending.clear();
    try {
      await this.beforeResourceSync(batch.map(([id]) => id));
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, 'preparing a resource sync failed; syncing anyway');
    }
    for (let i = 0; i < batch.length && !this.stopped; i += CHUNK) {
      const part = batch.slice(i, i + CHUNK);
      let failed: Set<string>;
      const t0 = Date.now();
      try {
        failed = await this.syncResources(part.map(([id]) => id));
        this.stats.resourceSyncs += part.length;
        this.m?.syncSeconds.observe({ kind: 'resources' }, (Date.now() - t0) / 1000);
        if (failed.size) this.m?.syncErrors.inc({ kind: 'resources' }, failed.size);
      } catch (e) {
        this.m?.syncErrors.inc({ kind: 'resources' }, part.length);
        this.lastError = errorMessage(e);
        this.log.error({ err: this.lastError, resources: part.length }, 'Failed synchronizing resources; retrying');
        failed = new Set(part.map(([id]) => id));
      }
      for (const [id, attempts] of part) {
        if (!failed.has(id)) continue;
        if (attempts + 1 >= MAX_ATTEMPTS) {
          this.log.error({ resource: id, attempts: attempts + 1 }, 'resource keeps failing; full resync');
          this.needFull = true;
        } else this.pending.set(id, attempts + 1);
      }
    }
  }

  /** Stop syncing; children (dnsmasq, proxies) and namespaces stay and are adopted by the next start. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.reporter.stop();
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wake?.();
    await this.loopDone?.catch(() => undefined);
    this.monitor.stop();
    await this.transport?.close().catch(() => undefined);
    await this.release();
    if (this.ownClient) await this.client.close();
    await this.session?.close();
  }

  /** Let go of what the agent holds besides its children (e.g. the shared proxy's channel); default none. */
  protected async release(): Promise<void> {}
}

/** Run `fn` over items with at most `n` at a time (Neutron's L3 agent processes routers in a pool of 8). */
export async function inPool<T>(items: readonly T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const x = items[next++]!;
      await fn(x);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}
