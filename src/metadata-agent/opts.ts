// quantum-metadata-agent options (quantum.conf + metadata_agent.ini), named as Neutron names them.
import { cpus, hostname } from 'node:os';
import { serviceCredentialOpts } from '../common/auth.js';
import { bool, int, loggingOpts, mergeSpecs, optStr, str, type Resolved, type Spec } from '../common/config.js';
import { ConfigError } from '../common/errors.js';
import { messagingOpts } from '../common/messaging.js';
import { metricsOpts } from '../common/metrics.js';

export const PROG = 'quantum-metadata-agent';
export const SOCKET_MODES = ['deduce', 'user', 'group', 'all'] as const;

export const agentOpts = {
  DEFAULT: {
    host: str(hostname(), 'Hostname to be used by the agent when reporting its state.', { sample: '<hostname>' }),
    state_path: str('/var/lib/quantum', 'Where to store Quantum state files. This directory must be writable by the agent.'),
    quantum_url: str('http://127.0.0.1:9696', 'URL of quantum-server (the Neutron v2.0 API) used for port lookups and state reports.'),
    auth_strategy: str('noauth', 'The type of authentication to use with quantum-server: keystone authenticates with auth_url and the service credentials below (a token kept and renewed, never fetched per request).', { choices: ['noauth', 'keystone'] }),
    quantum_timeout: int(30, 'Seconds to wait for quantum-server to answer a lookup.', { min: 1 }),
    metadata_proxy_socket: str('$state_path/metadata_proxy', 'Location for Metadata Proxy UNIX domain socket.'),
    metadata_proxy_socket_mode: str('deduce', "Metadata Proxy UNIX domain socket mode, 4 values allowed: 'deduce': deduce mode from metadata_proxy_user/group values, 'user': set metadata proxy socket mode to 0o644, to use when metadata_proxy_user is agent effective user or root, 'group': set metadata proxy socket mode to 0o664, to use when metadata_proxy_group is agent effective group or root, 'all': set metadata proxy socket mode to 0o666, to use otherwise.", { choices: [...SOCKET_MODES] }),
    metadata_proxy_user: str('', 'User (uid or name) running metadata proxy after its initialization (if empty: agent effective user).'),
    metadata_proxy_group: str('', 'Group (gid or name) running metadata proxy after its initialization (if empty: agent effective group).'),
    metadata_workers: int(Math.max(1, Math.floor(cpus().length / 2)), 'Number of separate worker processes for metadata server (defaults to half of the number of CPUs). 0 or 1 serve in the agent process itself.', { min: 0, sample: '<half the CPUs, at least 1>' }),
    metadata_backlog: int(4096, 'Number of backlog requests to configure the metadata server socket with.', { min: 1 }),
    wsgi_default_pool_size: int(100, 'Size of the pool of requests one metadata worker serves at once (lookup and Nova call), as Neutron\'s greenthread pool; also the most connections a worker opens to Nova.', { min: 1 }),
    metadata_queue_size: int(100, 'Requests one metadata worker keeps waiting for a free slot of wsgi_default_pool_size; beyond that it answers 503 at once (one log line per 10 s) instead of growing a backlog. 0: no queue.', { min: 0 }),
    nova_metadata_host: str('127.0.0.1', 'IP address or DNS name of Nova metadata server.', { deprecated: [['DEFAULT', 'nova_metadata_ip']] }),
    nova_metadata_port: int(8775, 'TCP Port used by Nova metadata server.', { min: 1, max: 65535 }),
    nova_metadata_protocol: str('http', 'Protocol to access nova metadata, http or https.', { choices: ['http', 'https'] }),
    nova_metadata_insecure: bool(false, 'Allow to perform insecure SSL (https) requests to nova metadata.'),
    auth_ca_cert: optStr('Certificate Authority public key (CA cert) file for ssl.'),
    nova_client_cert: str('', 'Client certificate for nova metadata api server.'),
    nova_client_priv_key: str('', 'Private key of client certificate.'),
    metadata_proxy_shared_secret: str('', 'When proxying metadata requests, Quantum signs the Instance-ID header with a shared secret to prevent spoofing. You may select any string for a secret, but it must match here and in the configuration used by the Nova Metadata Server.', { secret: true }),
    cache_url: str('', "URL to connect to the cache back end (deprecated, as in Neutron before Queens): 'memory://?default_ttl=5' caches lookups for 5 seconds. Empty: use [cache]."),
  },
  cache: {
    enabled: bool(false, 'Global toggle for caching (router networks and port lookups).'),
    expiration_time: int(600, 'Default TTL, in seconds, for any cached item. Neutron recommends about 10 for the metadata agent.', { min: 1 }),
    notification_poll_interval: int(2, 'With the cache on and no RabbitMQ (transport_url) connected: seconds between reads of quantum-server\'s port notifications, which drop the cached lookups a port or network change touches.', { min: 1 }),
  },
  AGENT: {
    report_interval: int(30, 'Seconds between nodes reporting state to server; should be less than agent_down_time. 0 disables.', { min: 0 }),
    log_agent_heartbeats: bool(false, 'Log agent heartbeats.'),
  },
} satisfies Spec;

export const agentSpec = mergeSpecs(mergeSpecs(mergeSpecs(mergeSpecs(agentOpts, serviceCredentialOpts), messagingOpts), loggingOpts), metricsOpts);
export type AgentConf = Resolved<typeof agentSpec>;

/** Resolve $state_path in the socket path and read the cache settings into one TTL (0 = off). */
export function resolveAgentConf(conf: AgentConf): { socketPath: string; cacheTtlMs: number } {
  const d = conf.DEFAULT;
  const socketPath = d.metadata_proxy_socket.replace(/\$\{state_path\}|\$state_path/g, d.state_path);
  let cacheTtlMs = 0;
  if (conf.cache.enabled) cacheTtlMs = conf.cache.expiration_time * 1000;
  else if (d.cache_url) {
    const m = /^memory:\/\/(?:\?(.*))?$/.exec(d.cache_url);
    if (!m) throw new ConfigError(`[DEFAULT] cache_url = ${JSON.stringify(d.cache_url)}: only memory:// is supported`);
    const ttl = new URLSearchParams(m[1] ?? '').get('default_ttl');
    if (ttl !== null && !/^\d+$/.test(ttl)) throw new ConfigError(`[DEFAULT] cache_url: default_ttl must be an integer`);
    // oslo's memory backend without a ttl keeps items forever; bound it by [cache] expiration_time.
    cacheTtlMs = (ttl === null ? conf.cache.expiration_time : Number(ttl)) * 1000;
  }
  // Neutron silently skips a half-configured client certificate; say so instead.
  if (!d.nova_client_cert !== !d.nova_client_priv_key) throw new ConfigError('nova_client_cert and nova_client_priv_key must be set together');
  return { socketPath, cacheTtlMs };
}
