// What the L3 and DHCP agents share: their common options, the metadata proxy command line, the log
// arguments handed to spawned proxies, the periodic state report, and the loop (sync + report + child
// monitor) both agent classes run.
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bool, int, optStr, str, type Spec } from '../common/config.js';
import { ConfigError, errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { QuantumClient, type AgentReport } from '../common/quantum-client.js';
import { PROXY_NODE_FLAGS } from '../common/proxy-runtime.js';
import { ProcessManager, ProcessMonitor } from './external-process.js';

export const INTERFACE_DRIVERS = ['linuxbridge', 'quantum.agent.linux.interface.BridgeInterfaceDriver', 'neutron.agent.linux.interface.BridgeInterfaceDriver'];

/** Options both agents read (quantum.conf + their own ini). */
export const commonAgentOpts = {
  DEFAULT: {
    state_path: str('/var/lib/quantum', 'Top-level directory for maintaining the agent\'s state (pid files, dnsmasq files, the metadata proxy socket).'),
    quantum_url: str('http://127.0.0.1:9696', 'URL of quantum-server.'),
    auth_strategy: str('noauth', 'The type of authentication to use with quantum-server.', { choices: ['noauth'] }),
    host: str(hostname(), 'Hostname to be used by the agent when reporting its state and binding ports. Defaults to the machine\'s hostname.', { sample: '<hostname>' }),
    interface_driver: str('linuxbridge', 'The driver used to plug interfaces: linuxbridge (quantum.agent.linux.interface.BridgeInterfaceDriver) is the only one.'),
    polling_interval: int(2, 'Seconds between two syncs with quantum-server.', { min: 1 }),
    metadata_proxy_socket: optStr('Location of the metadata agent\'s Unix domain socket (passed to the proxies; default $state_path/metadata_proxy).'),
    metadata_proxy_cmd: optStr('Command that runs quantum-ns-metadata-proxy (split on spaces); default: this node (with --max-semi-space-size=1 --single-threaded) running this build\'s CommonJS copy of the proxy (dist/proxy/ns-proxy/main.js).'),
    metadata_proxy_user: optStr('User (uid or name) the metadata proxies run as after binding their port (default: unchanged).'),
    metadata_proxy_group: optStr('Group (gid or name) the metadata proxies run as after binding their port (default: unchanged).'),
  },
  AGENT: {
    report_interval: int(30, 'Seconds between state reports to quantum-server; 0 disables them.', { min: 0 }),
    check_child_processes_interval: int(60, 'Interval between checks of child process liveness (seconds), use 0 to disable.', { min: 0 }),
    check_child_processes_action: str('respawn', 'Action to be executed when a child process dies.', { choices: ['respawn', 'exit'] }),
    use_namespaces: bool(true, 'Allow overlapping IP (must be True: everything is built in namespaces).'),
  },
} satisfies Spec;

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
  user?: string | undefined;
  group?: string | undefined;
  log: LogConf;
}

/** quantum-ns-metadata-proxy's argv, in the foreground (the ProcessManager detaches it and it writes its pid file). */
export function proxyArgv(a: ProxyArgs): string[] {
  const uuid = (a.routerId ?? a.networkId)!;
  const argv = [...a.prefix, `--pid_file=${a.pidFile}`];
  argv.push(a.routerId ? `--router_id=${a.routerId}` : `--network_id=${a.networkId}`);
  argv.push(`--state_path=${a.statePath}`, `--metadata_port=${a.port}`);
  if (a.socket) argv.push(`--metadata_proxy_socket=${a.socket}`);
  if (a.bindAddress) argv.push(`--bind_address=${a.bindAddress}`);
  if (a.user) argv.push(`--metadata_proxy_user=${a.user}`);
  if (a.group) argv.push(`--metadata_proxy_group=${a.group}`);
  argv.push('--nodaemonize', ...proxyLogArgs(a.log, uuid));
  return argv;
}

/** The agent options a metadata proxy's command line is made from. */
export interface ProxyConf extends LogConf {
  state_path: string;
  metadata_proxy_cmd?: string | undefined;
  metadata_proxy_socket?: string | undefined;
  metadata_proxy_user?: string | undefined;
  metadata_proxy_group?: string | undefined;
}

/**
 * The supervised quantum-ns-metadata-proxy of a router (routerId) or an isolated network (networkId), in
 * `namespace`, keyed by `uuid`; it writes its own pid file.
 */
export function metadataProxyManager(o: { uuid: string; namespace: string; conf: ProxyConf; port: number; routerId?: string | undefined; networkId?: string | undefined; bindAddress?: string | undefined; log: Logger }): ProcessManager {
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
        user: d.metadata_proxy_user,
        group: d.metadata_proxy_group,
        log: d,
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

  start(): void {
    if (this.intervalSec <= 0) return;
    void this.report();
    this.timer = setInterval(() => void this.report(), this.intervalSec * 1000);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** A loop that runs `fn` every interval, never overlapping itself. */
export class Poller {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  constructor(
    private readonly intervalMs: number,
    private readonly fn: () => Promise<void>,
  ) {}

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      this.running = this.fn();
      await this.running.catch(() => undefined);
      this.running = undefined;
      if (!this.stopped) this.timer = setTimeout(() => void tick(), this.intervalMs);
    };
    void tick();
  }

  /** Stop and wait for a sync in progress to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }
}

/** The options AgentLoop reads (both agents' confs have them: commonAgentOpts + loggingOpts). */
export interface AgentLoopConf {
  DEFAULT: { quantum_url: string; host: string; state_path: string; polling_interval: number };
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

/**
 * The part both agents share: a Quantum client (their own unless injected), a child-process monitor, a
 * non-overlapping sync loop and the state reporter. Subclasses supply sync() and their report's
 * configurations.
 */
export abstract class AgentLoop<C extends AgentLoopConf> {
  readonly monitor: ProcessMonitor;
  protected readonly client: QuantumClient;
  private readonly ownClient: boolean;
  private readonly poller: Poller;
  private readonly reporter: StateReporter;
  private stopped = false;

  constructor(
    readonly conf: C,
    protected readonly log: Logger,
    private readonly identity: AgentIdentity,
    deps: { client?: QuantumClient | undefined } = {},
  ) {
    const d = conf.DEFAULT;
    this.client = deps.client ?? new QuantumClient({ url: d.quantum_url, timeoutMs: 15_000 });
    this.ownClient = !deps.client;
    this.monitor = new ProcessMonitor({ intervalSec: conf.AGENT.check_child_processes_interval, action: conf.AGENT.check_child_processes_action as 'respawn' | 'exit', log });
    this.poller = new Poller(d.polling_interval * 1000, () => this.sync());
    this.reporter = new StateReporter(
      this.client,
      conf.AGENT.report_interval,
      () => ({ binary: identity.binary, host: d.host, topic: identity.topic, agent_type: identity.agent_type, configurations: this.reportConfigurations() }),
      log,
    );
  }

  /** One pass bringing this host in step with quantum-server. */
  abstract sync(): Promise<void>;

  /** The `configurations` of the state report (called at each report). */
  protected abstract reportConfigurations(): Record<string, unknown>;

  start(): void {
    this.log.info({ host: this.conf.DEFAULT.host, state_path: this.conf.DEFAULT.state_path }, `${this.identity.name} started`);
    this.poller.start();
    this.reporter.start();
  }

  /** Stop syncing; children (dnsmasq, proxies) and namespaces stay and are adopted by the next start. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.reporter.stop();
    await this.poller.stop();
    this.monitor.stop();
    if (this.ownClient) await this.client.close();
  }
}
