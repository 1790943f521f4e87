// quantum-ns-metadata-proxy: one per router (in qrouter-<id>) or isolated network (in qdhcp-<id>).
// Deliberately light: flags only (no yargs/ini), a tiny pino-format logger, raw node:net, so each of the
// hundreds of copies on a network node costs little memory (see README "metadata-path").
import { isAbsolute, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { daemonize, dropPrivileges, notifyParent, removePidFile, runningDaemon, writePidFile } from '../common/daemon.js';
import { ConfigError, errorMessage } from '../common/errors.js';
import type { Resolved } from '../common/config.js';
import { parseFlags } from '../common/flags.js';
import { PROXY_NODE_FLAGS } from '../common/proxy-runtime.js';
import { createLiteLogger, type LiteLogger } from '../common/lite-log.js';
import { PROG, proxyAliases, proxyOpts } from './opts.js';
import { createProxy, NamespaceListener, type GuestLimits, type RuntimeConfig } from './proxy.js';
import { rateLimitIpVersions } from '../common/metadata-rate-limiting.js';
import type { RateLimitConfig } from './rate-limit.js';

// Keep the young generation at its initial size instead of letting it grow to 16 MB semi-spaces under
// load: ~5 MB less private memory after a burst, no measurable CPU cost for a proxy's short-lived garbage.
// (One of the few heap flags V8 honours after start-up; --max-semi-space-size is not.)
setFlagsFromString('--semi-space-growth-factor=1');
// Full GCs when a burst is over (MetadataProxy's compact): V8 leaves an idle process's heap as the burst
// left it. gc() comes from a context created after --expose-gc, so this one does not expose it. Twice: the
// first frees the dead objects, the second moves the survivors off pages the first left sparse, which are
// then returned (after a connection-per-request burst: heap 11.5 -> 6 MB committed, ~15 ms in all).
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const fullGc = (): void => {
  gc();
  gc();
};

let log: LiteLogger | undefined;

type Conf = Resolved<typeof proxyOpts>['DEFAULT'];
type RateConf = Resolved<typeof proxyOpts>['metadata_rate_limiting'];

function rateLimit(r: RateConf): RateLimitConfig | undefined {
  if (!r.rate_limit_enabled) return undefined;
  const v = rateLimitIpVersions(r);
  if ('error' in v) throw new ConfigError(v.error);
  return { ipVersions: v.versions, baseWindowMs: r.base_window_duration * 1000, baseLimit: r.base_query_rate_limit, burstWindowMs: r.burst_window_duration * 1000, burstLimit: r.burst_query_rate_limit };
}

const limits = (c: Conf, r: RateConf): GuestLimits => ({
  timeoutHttpRequest: c.timeout_http_request * 1000,
  timeoutClient: c.timeout_client * 1000,
  timeoutKeepAlive: c.timeout_http_keep_alive * 1000,
  maxconn: c.maxconn,
  maxHeaderSize: c.max_header_size,
  maxBodySize: c.max_body_size,
  maxconnPerSource: c.maxconn_per_source,
  rateLimit: rateLimit(r),
});

const runtimeConfig = (c: Conf, socketPath: string): RuntimeConfig => ({
  socketPath,
  timeoutServer: c.timeout_server * 1000,
  upstreamConnections: c.upstream_connections,
  upstreamQueue: c.upstream_queue,
  upstreamConnectionsPerSource: c.upstream_connections_per_source,
  retries: c.retries,
  compact: fullGc,
});

function logFile(c: Conf, uuid: string): string | undefined {
  if (c.log_file) return c.log_dir && !isAbsolute(c.log_file) ? join(c.log_dir, c.log_file) : c.log_file;
  if (c.log_dir) return join(c.log_dir, `${PROG}-${uuid}.log`);
  return undefined;
}

/** Common to both modes once listening: SIGTERM/SIGINT drain and exit 0, SIGHUP reopens the log. */
function onSignals(stop: () => Promise<void>, pendingNow: () => number): void {
  let stopping = false;
  const onStop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    log!.info({ signal: sig, inflight: pendingNow() }, 'stopping: finishing in-flight requests');
    await stop();
    log!.info('stopped');
    await log!.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void onStop('SIGTERM'));
  process.on('SIGINT', () => void onStop('SIGINT'));
  // SIGHUP would kill a node process by default; here it reopens the log file (logrotate's postrotate).
  process.on('SIGHUP', () => {
    log!.reopen();
    log!.info('SIGHUP: log file reopened');
  });
  // A daemon with stdio closed must not die on EPIPE writing to stderr.
  process.stderr.on('error', () => {});
}

/** --shared: the namespaces' listening sockets come from the agent (src/ns-proxy/shared.ts). */
async function shared(c: Conf, r: RateConf): Promise<void> {
  if (c.router_id || c.network_id) throw new ConfigError('--shared serves the namespaces its agent hands over: --router_id and --network_id do not apply');
  if (c.daemonize) throw new ConfigError('--shared runs under its agent, which supervises it: pass --nodaemonize');
  const name = c.shared_name ?? PROG;
  if (!/^[\w.-]+$/.test(name)) throw new ConfigError(`--shared_name=${JSON.stringify(name)}: letters, digits, '.', '_' and '-' only`);
  // Loaded here only: a per-namespace proxy never pays for shared mode's code.
  const sh = await import('./shared.js');
  log = createLiteLogger({ name: PROG, debug: c.debug, path: logFile(c, sh.sharedUuid(name)) });
  const proxy = await sh.runShared({
    name,
    statePath: c.state_path,
    pidFile: c.pid_file ?? sh.sharedPidFile(c.state_path, name),
    runtime: runtimeConfig(c, c.metadata_proxy_socket ?? join(c.state_path, 'metadata_proxy')),
    limits: limits(c, r),
    user: c.metadata_proxy_user,
    group: c.metadata_proxy_group,
    log,
  });
  onSignals(() => proxy.stop(), () => proxy.pending);
}

async function fatal(msg: string): Promise<never> {
  process.stderr.write(`${PROG}: ${msg}\n`);
  log?.error(msg);
  await notifyParent({ qmDaemon: 'error', message: msg });
  await log?.close();
  process.exit(1);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const parsed = parseFlags(proxyOpts, argv, { prog: PROG, description: 'Metadata proxy for one router or network namespace (or, with --shared, for all of an agent\'s namespaces).', aliases: proxyAliases });
  if ('help' in parsed) {
    process.stdout.write(parsed.help);
    return;
  }
  const c = parsed.conf.DEFAULT;
  const r = parsed.conf.metadata_rate_limiting;
  // Checked before daemonizing, so a bad value is the agent's start error, not a dead child.
  const guestLimits = limits(c, r);
  if (c.shared) return shared(c, r);
  if (!c.router_id === !c.network_id) throw new ConfigError('Either one of parameter network_id or router_id must be passed in.');
  const uuid = (c.router_id ?? c.network_id)!;
  const socketPath = c.metadata_proxy_socket ?? join(c.state_path, 'metadata_proxy');
  if (c.pid_file) {
    const other = runningDaemon(c.pid_file, uuid);
    if (other !== undefined) throw new ConfigError(`Pidfile ${c.pid_file} already exist. Daemon already running? (pid ${other})`);
  }
  if (c.daemonize) {
    // The same small-footprint node flags as the agents' default command (unless already given).
    await daemonize([...argv, '--nodaemonize'], PROG, 15_000, PROXY_NODE_FLAGS);
    return;
  }

  log = createLiteLogger({ name: PROG, debug: c.debug, path: logFile(c, uuid) });

  const { runtime, listener } = createProxy({ routerId: c.router_id, networkId: c.network_id, bindAddress: c.bind_address, port: c.metadata_port, ...guestLimits, ...runtimeConfig(c, socketPath) }, log);
  let port: number;
  try {
    port = await listener.listen({ host: c.bind_address, port: c.metadata_port });
  } catch (e) {
    return fatal(`cannot listen on ${c.bind_address}:${c.metadata_port}: ${errorMessage(e)}`);
  }
  // Neutron's `bind <v6>:<port> interface <dev>`, bracketed and scoped as it must be (its Zed template wrote
  // fe80::a9fe:a9fe:80, one address, so it never listened there): a second listener with the same id lines.
  const listeners = [listener];
  let bind6: string | undefined;
  if (c.bind_address_v6) {
    bind6 = c.bind_interface ? `${c.bind_address_v6}%${c.bind_interface}` : c.bind_address_v6;
    const l6 = new NamespaceListener(runtime, guestLimits, c.router_id ? { routerId: c.router_id } : { networkId: c.network_id });
    try {
      await l6.listen({ host: bind6, port, ipv6Only: true });
    } catch (e) {
      return fatal(`cannot listen on [${bind6}]:${port}: ${errorMessage(e)}`);
    }
    listeners.push(l6);
  } else if (c.bind_interface) throw new ConfigError('--bind_interface applies to --bind_address_v6 only');
  // The pid file is written while still privileged (its directory is usually root's), then privileges go.
  if (c.pid_file) writePidFile(c.pid_file);
  dropPrivileges(c.metadata_proxy_user, c.metadata_proxy_group);

  onSignals(async () => {
    await Promise.all(listeners.map((l) => l.close()));
    runtime.close();
    if (c.pid_file && !removePidFile(c.pid_file)) log!.warn({ pid_file: c.pid_file }, 'could not remove the pid file');
  }, () => runtime.pending);
  log.info({ bind: c.bind_address, ...(bind6 ? { bind_v6: `[${bind6}]` } : {}), port, socket: socketPath, router_id: c.router_id, network_id: c.network_id, uid: process.getuid?.(), gid: process.getgid?.() }, 'metadata proxy listening');
  await notifyParent({ qmDaemon: 'ready' });
}

process.on('uncaughtException', (e) => {
  // One bad request must not take the proxy down; say so loudly.
  if (log) log.error({ err: e }, 'uncaught exception');
  else process.stderr.write(`${PROG}: uncaught exception: ${e.stack ?? String(e)}\n`);
});

main().catch((e: unknown) => fatal(e instanceof ConfigError ? e.message : `failed to start: ${errorMessage(e)}`));
