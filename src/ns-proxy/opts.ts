// quantum-ns-metadata-proxy's flags. Like the original it reads no config file: the agent that spawns it
// passes everything on the command line. The timeout/maxconn knobs are the haproxy template's values.
// Type-only import: config.ts loads yargs and ini, which this small process never needs at run time.
import type { Opt, Spec } from '../common/config.js';
import { metadataRateLimitingOpts } from '../common/metadata-rate-limiting.js';

type Extra = Partial<Pick<Opt<unknown>, 'min' | 'max' | 'choices'>>;
const str = (def: string, help: string): Opt<string> => ({ kind: 'str', default: def, help });
const optStr = (help: string): Opt<string | undefined> => ({ kind: 'str', default: undefined, help });
const int = (def: number, help: string, extra: Extra = {}): Opt<number> => ({ kind: 'int', default: def, help, ...extra });
const bool = (def: boolean, help: string): Opt<boolean> => ({ kind: 'bool', default: def, help });

export const PROG = 'quantum-ns-metadata-proxy';

export const proxyOpts = {
  DEFAULT: {
    router_id: optStr('Router id this proxy serves (sent as X-Quantum-Router-ID / X-Neutron-Router-ID). Exactly one of router_id, network_id.'),
    network_id: optStr('Network id this proxy serves (sent as X-Quantum-Network-ID / X-Neutron-Network-ID). Exactly one of router_id, network_id.'),
    shared: bool(false, 'Shared mode: one process for all of an agent\'s namespaces, serving the listening sockets the agent binds in each and hands over (IPC channel on fd 3, descriptors on fd 4). Started by the agent with --nodaemonize; no --router_id/--network_id.'),
    shared_name: optStr('Shared mode: the agent this process serves (e.g. quantum-l3-agent); names its state file $state_path/external/shared-proxy/<name>.json and its default pid file $state_path/external/pids/<name>-shared.pid.'),
    pid_file: optStr('Pid file of this process.'),
    daemonize: bool(true, 'Run as a detached daemon (--nodaemonize to stay in the foreground, e.g. under systemd).'),
    state_path: str('/var/lib/quantum', 'Top-level directory for maintaining the agents\' state.'),
    metadata_port: int(9697, 'TCP port the proxy listens on.', { min: 0, max: 65535 }),
    bind_address: str('0.0.0.0', 'Address the proxy listens on (the DHCP agent passes 169.254.169.254).'),
    bind_address_v6: optStr('Also listen on this IPv6 address, v6-only, on the same port (Neutron\'s bind_address_v6: the L3 agent passes :: for a router with an IPv6 interface, the DHCP agent fe80::a9fe:a9fe with --bind_interface).'),
    bind_interface: optStr('The device whose link --bind_address_v6 is on (Neutron\'s bind_interface): the listener is bound to [<bind_address_v6>%<bind_interface>], as a link-local address needs.'),
    metadata_proxy_socket: optStr('Location of the metadata agent\'s Unix domain socket (default: $state_path/metadata_proxy).'),
    metadata_proxy_user: optStr('User (uid or name) to run as after binding the port (default: do not change).'),
    metadata_proxy_group: optStr('Group (gid or name) to run as after binding the port (default: do not change).'),
    metadata_proxy_watch_log: bool(true, 'Accepted for compatibility with Neutron\'s proxy; the log file is opened once.'),
    timeout_http_request: int(30, 'Seconds a guest has to send a complete request (haproxy timeout http-request).', { min: 1 }),
    timeout_client: int(32, 'Seconds of guest inactivity before its connection is closed (haproxy timeout client).', { min: 1 }),
    timeout_server: int(32, 'Seconds to wait for the metadata agent\'s answer (haproxy timeout server).', { min: 1 }),
    timeout_http_keep_alive: int(30, 'Seconds an idle keep-alive guest connection is kept (haproxy timeout http-keep-alive).', { min: 1 }),
    maxconn: int(1024, 'Maximum concurrent guest connections (haproxy maxconn); up to as many more wait, unread, for a free slot (at most timeout_http_request), the rest are closed.', { min: 1 }),
    max_header_size: int(16384, 'Maximum size in bytes of a guest request\'s header block (haproxy tune.bufsize).', { min: 1024 }),
    max_body_size: int(65536, 'Maximum size in bytes of a guest request body (metadata POSTs are tiny: the password).', { min: 0 }),
    maxconn_per_source: int(0, 'Maximum concurrent connections from one guest address (held or waiting for a slot); more are closed at once, with a log line. 0: a tenth of maxconn, at least 8. Keeps one guest from starving the others behind the same router or network.', { min: 0 }),
    upstream_connections: int(64, 'Hard cap on connections to the metadata agent (kept alive between requests); further requests wait for one (round-robin by guest address, see upstream_connections_per_source).', { min: 1 }),
    upstream_queue: int(1024, 'Requests that may wait for one of the upstream_connections; beyond that 503 at once, to the newest request of the guest address with the most waiting (each waits at most timeout_server).', { min: 0 }),
    upstream_connections_per_source: int(0, 'Of the upstream_connections, how many one guest address (per listener) may hold at once; its further requests wait, and what waits is served round-robin by guest address. 0: a sixteenth of upstream_connections, at least 2. Keeps a flooding guest from slowing down the others at the agent.', { min: 0 }),
    retries: int(3, 'Times a failed connection to the metadata agent is retried (haproxy retries).', { min: 0 }),
    debug: bool(false, 'Print debugging output (set logging level to DEBUG instead of default INFO level).'),
    verbose: bool(false, 'Print more verbose output (accepted; the level is INFO unless --debug).'),
    log_file: optStr('(Optional) Name of log file to send logging output to (relative to --log-dir). Default with --log-dir: quantum-ns-metadata-proxy-<uuid>.log.'),
    log_dir: optStr('(Optional) The base directory used for relative log_file paths.'),
  },
  ...metadataRateLimitingOpts(true),
} satisfies Spec;

/** oslo.log's dashed spellings, which the agents pass. */
export const proxyAliases = { 'log-file': 'log_file', 'log-dir': 'log_dir', 'pid-file': 'pid_file' };
