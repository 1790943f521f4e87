// nova.conf options for nova-api / nova-api-metadata, named as Nova (Zed) names them.
import { metricsOpts } from '../common/metrics.js';
import { keystoneAuthtokenOpts } from '../common/auth.js';
import { bool, int, list, loggingOpts, mergeSpecs, optStr, str, type Spec } from '../common/config.js';

export const novaOpts = {
  DEFAULT: {
    state_path: str('/var/lib/nova', "Top-level directory for maintaining nova's state."),
    enabled_apis: list(['osapi_compute', 'metadata'], 'List of APIs to be enabled by default.'),
    osapi_compute_listen: str('0.0.0.0', 'IP address on which the OpenStack API will listen.'),
    osapi_compute_listen_port: int(8774, 'Port on which the OpenStack API will listen.', { min: 0, max: 65535 }),
    metadata_listen: str('0.0.0.0', 'IP address on which the metadata API will listen.'),
    metadata_listen_port: int(8775, 'Port on which the metadata API will listen.', { min: 0, max: 65535 }),
    metadata_workers: int(1, 'Number of workers for the metadata service (processes sharing the port; each keeps its own cache, as in Nova).', { min: 1 }),
  },
  // nova/conf/wsgi.py, applied to the metadata API's server (the guest-facing one).
  wsgi: {
    keep_alive: bool(true, 'If False, closes the client socket connection explicitly (every answer ends its connection).'),
    client_socket_timeout: int(900, 'Timeout for client connections\' socket operations: an idle keep-alive connection, or one that sends nothing, is closed after this many seconds. 0 means wait forever.', { min: 0 }),
    default_pool_size: int(1000, 'Size of the pool used by the WSGI servers: connections one metadata worker keeps at once; more are closed at once.', { min: 1, deprecated: [['DEFAULT', 'wsgi_default_pool_size']] }),
    max_header_line: int(16384, 'Maximum line size of message headers to be accepted (here: of the whole header block, which node bounds).', { min: 1024 }),
    tcp_keepidle: int(600, 'Sets the value of TCP_KEEPIDLE in seconds for each server socket.', { min: 1 }),
  },
  database: {
    connection: optStr('The SQLAlchemy-style connection string used to connect to the database (default sqlite:///$state_path/nova.sqlite).', { secret: true, cli: true }),
  },
  neutron: {
    url: str('http://127.0.0.1:9696', 'URL of the Neutron (quantum-server) endpoint.', { cli: true, deprecated: [['DEFAULT', 'quantum_url']] }),
    service_metadata_proxy: bool(false, 'When True, the metadata API trusts X-Instance-ID/X-Tenant-ID headers signed by the Neutron metadata proxy.', { cli: true }),
    metadata_proxy_shared_secret: str('', 'Shared secret to validate proxy requests to the metadata API.', { secret: true, cli: true }),
    timeout: int(30, 'Timeout in seconds for requests to Neutron.', { min: 1 }),
    auth_type: optStr("Authentication type nova uses with Neutron: password (keystoneauth's), or unset for none (noauth quantum-server)."),
    auth_url: optStr('Keystone URL for nova\'s Neutron credentials.'),
    username: optStr("Nova's user for Neutron."),
    password: optStr("That user's password.", { secret: true }),
    project_name: optStr("That user's project."),
    user_domain_name: str('Default', "That user's domain."),
    project_domain_name: str('Default', "That project's domain."),
    region_name: optStr('Region of the endpoints used.'),
  },
  glance: {
    api_servers: list([], 'Glance API servers (http://host:9292); empty: the image endpoint of the catalog when [keystone_authtoken] is set, else no image service (any image UUID is accepted).'),
  },
  api: {
    auth_strategy: str('noauth', 'Determine the strategy to use for authentication of the compute API: noauth (X-Project-Id, as before) or keystone ([keystone_authtoken]).', { choices: ['noauth', 'noauth2', 'keystone'] }),
    metadata_cache_expiration: int(15, 'Seconds to cache instance metadata in the metadata API; 0 disables the cache.', { min: 0, cli: true }),
    metadata_tokens: str('optional', 'IMDSv2-style session tokens (PUT /latest/api/token), as AWS\'s HttpTokens: optional serves requests without a token as before and refuses a bad one (401); required refuses (401) any request without a valid token; disabled answers the token path 404 as Nova does.', { choices: ['disabled', 'optional', 'required'], cli: true }),
    metadata_token_key: optStr('Key the session tokens are signed with; every metadata API that may serve an instance must share it. Unset: derived from [neutron] metadata_proxy_shared_secret, else a random key kept in $state_path/metadata_token.key.', { secret: true }),
    local_metadata_per_cell: bool(false, 'Accepted for compatibility; this deployment has a single cell.'),
    dhcp_domain: str('novalocal', 'Domain appended to the instance hostname in metadata; empty for none.', { cli: true }),
    use_forwarded_for: bool(false, 'Treat X-Forwarded-For as the canonical remote address (only with a trusted proxy in front). Deprecated in Nova 26.', { cli: true }),
    vendordata_providers: list(['StaticJSON'], 'Vendordata providers: StaticJSON, DynamicJSON.'),
    vendordata_jsonfile_path: optStr('File to load JSON formatted vendor data from.', { cli: true }),
    vendordata_dynamic_targets: list([], 'name@url targets for DynamicJSON vendordata.'),
    vendordata_dynamic_ssl_certfile: str('', 'CA bundle to verify https dynamic vendordata targets.'),
    vendordata_dynamic_connect_timeout: int(5, 'Connect timeout (s) for dynamic vendordata requests.', { min: 3 }),
    vendordata_dynamic_read_timeout: int(5, 'Read timeout (s) for dynamic vendordata requests.', { min: 0 }),
    vendordata_dynamic_failure_fatal: bool(false, 'Fail the vendor_data2.json request (500) when a dynamic target fails.'),
    config_drive_skip_versions: str('1.0 2007-01-19 2007-03-01 2007-08-29 2007-10-10 2007-12-15 2008-02-01 2008-09-01', 'Accepted for compatibility (there is no config drive here).'),
  },
} satisfies Spec;

export const novaSpec = mergeSpecs(mergeSpecs(mergeSpecs(loggingOpts, novaOpts), keystoneAuthtokenOpts), metricsOpts);
export type NovaSpec = typeof novaSpec;
