// Building nova-api from resolved options: database, quantum client, compute API and metadata API.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { ConfigError } from '../common/errors.js';
import { closeServer, listen } from '../common/http.js';
import type { Logger } from '../common/log.js';
import { QuantumClient } from '../common/quantum-client.js';
import { migrate, openDatabase, type Db } from '../db/connection.js';
import { LATENCY_BUCKETS, type Metrics } from '../common/metrics.js';
import { MetadataTokens, tokenKey } from '../nova-metadata/tokens.js';
import { novaMigrations, type NovaDatabase } from '../db/nova-schema.js';
import { checkProxySecret, MetadataHandler } from '../nova-metadata/handler.js';
import { DbMetadataStore } from '../nova-metadata/store.js';
import { DynamicVendorData } from '../nova-metadata/vendordata.js';
import type { FastifyInstance } from 'fastify';
import { keystoneAuthFrom, type KeystoneAuth } from '../common/auth.js';
import { KeystoneSession } from '../common/keystone.js';
import { buildComputeApi } from './api/index.js';
import { GlanceClient } from './glance.js';
import type { NovaSpec } from './opts.js';
import type { Resolved } from '../common/config.js';

export type NovaConf = Resolved<NovaSpec>;

export interface NovaApp {
  db: Db<NovaDatabase>;
  quantum: QuantumClient;
  compute?: { server: Server; port: number; app: FastifyInstance };
  /** Nova's own Keystone session for Neutron ([neutron] auth_type = password). */
  neutronSession?: KeystoneSession | undefined;
  metadata?: { server: Server; port: number; handler: MetadataHandler };
  close(): Promise<void>;
}

export function databaseUrl(conf: NovaConf): string {
  const url = conf.database.connection ?? `sqlite:///${join(conf.DEFAULT.state_path, 'nova.sqlite')}`;
  // oslo.config interpolation, as nova.conf samples write it: sqlite:///$state_path/nova.sqlite
  return url.replace(/\$\{state_path\}|\$state_path/g, conf.DEFAULT.state_path);
}

/** Validate what loadConfig cannot: provider names and the proxy secret. */
export function validateNovaConf(conf: NovaConf): void {
  for (const p of conf.api.vendordata_providers) {
    if (p !== 'StaticJSON' && p !== 'DynamicJSON') throw new ConfigError(`[api] vendordata_providers: unknown provider ${JSON.stringify(p)} (use StaticJSON, DynamicJSON)`);
  }
  const msg = checkProxySecret(conf.neutron.service_metadata_proxy, conf.neutron.metadata_proxy_shared_secret);
  if (msg) throw new ConfigError(msg);
  const n = conf.neutron;
  if (n.auth_type !== undefined && n.auth_type !== 'password') throw new ConfigError(`[neutron] auth_type = ${JSON.stringify(n.auth_type)}: only password is supported`);
  if (n.auth_type === 'password') {
    const missing = (['auth_url', 'username', 'password', 'project_name'] as const).filter((k) => !n[k]);
    if (missing.length) throw new ConfigError(`[neutron] auth_type = password needs ${missing.join(', ')}`);
  }
  if (conf.api.auth_strategy === 'keystone') {
    const k = conf.keystone_authtoken;
    const missing = (['auth_url', 'username', 'password', 'project_name'] as const).filter((x) => !k[x]);
    if (missing.length) throw new ConfigError(`[api] auth_strategy = keystone needs [keystone_authtoken] ${missing.join(', ')}`);
  }
  for (const a of conf.DEFAULT.enabled_apis) {
    if (a !== 'osapi_compute' && a !== 'metadata') throw new ConfigError(`[DEFAULT] enabled_apis: unknown API ${JSON.stringify(a)} (use osapi_compute, metadata)`);
  }
}

export function metadataHandlerFor(conf: NovaConf, db: Db<NovaDatabase>, quantum: QuantumClient, log: Logger, metrics?: Metrics): MetadataHandler {
  const answered = metrics?.counter('metadata_requests_total', 'Metadata API answers, by status.', ['status']);
  const latency = metrics?.histogram('metadata_request_duration_seconds', 'Metadata API latency.', [], LATENCY_BUCKETS);
  const dynamic = conf.api.vendordata_providers.includes('DynamicJSON')
    ? new DynamicVendorData(
        {
          targets: conf.api.vendordata_dynamic_targets,
          connectTimeoutS: conf.api.vendordata_dynamic_connect_timeout,
          readTimeoutS: conf.api.vendordata_dynamic_read_timeout,
          failureFatal: conf.api.vendordata_dynamic_failure_fatal,
          sslCertfile: conf.api.vendordata_dynamic_ssl_certfile || undefined,
        },
        log,
      )
    : undefined;
  return new MetadataHandler(
    {
      serviceMetadataProxy: conf.neutron.service_metadata_proxy,
      sharedSecret: conf.neutron.metadata_proxy_shared_secret,
      useForwardedFor: conf.api.use_forwarded_for,
      cacheExpiration: conf.api.metadata_cache_expiration,
      dhcpDomain: conf.api.dhcp_domain,
      vendordataProviders: conf.api.vendordata_providers,
      vendordataJsonfilePath: conf.api.vendordata_jsonfile_path,
      tokens: {
        mode: conf.api.metadata_tokens as 'disabled' | 'optional' | 'required',
        issuer: new MetadataTokens(tokenKey({ configured: conf.api.metadata_token_key, sharedSecret: conf.neutron.metadata_proxy_shared_secret, keyFile: join(conf.DEFAULT.state_path, 'metadata_token.key') })),
      },
      onAnswer: answered
        ? (status, seconds) => {
            answered.inc({ status: String(status) });
            latency!.observe(seconds);
          }
        : undefined,
    },
    new DbMetadataStore(db.db),
    quantum,
    log,
    dynamic,
  );
}

/**
 * The metadata API's HTTP server bounded as Nova's [wsgi] options bound eventlet's: connections per worker
 * (default_pool_size; beyond it node closes new ones at once, where eventlet leaves them in the backlog), idle
 * and silent connections (client_socket_timeout), header size, keep-alive on or off, TCP keepidle.
 */
export function metadataServer(w: NovaConf['wsgi'], listener: (req: IncomingMessage, res: ServerResponse) => void): Server {
  const timeout = w.client_socket_timeout * 1000;
  const server = createServer(
    {
      keepAlive: true,
      keepAliveInitialDelay: w.tcp_keepidle * 1000,
      maxHeaderSize: w.max_header_line,
      // Headers must come within a minute (node's default) and never later than the socket timeout.
      headersTimeout: timeout ? Math.min(60_000, timeout) : 60_000,
      requestTimeout: timeout,
      // An idle keep-alive connection is closed after the socket timeout too (0: kept, as eventlet would).
      keepAliveTimeout: timeout,
    },
    w.keep_alive
      ? listener
      : (req, res) => {
          res.shouldKeepAlive = false;
          listener(req, res);
        },
  );
  server.maxConnections = w.default_pool_size;
  server.timeout = timeout;
  return server;
}

/** Start the enabled APIs. `apis` overrides enabled_apis (nova-api-metadata passes ['metadata']). */
export async function startNova(conf: NovaConf, log: Logger, apis: string[] = conf.DEFAULT.enabled_apis, metrics?: Metrics, o: { dbMetric?: string } = {}): Promise<NovaApp> {
  validateNovaConf(conf);
  const dbTime = metrics?.histogram(o.dbMetric ?? 'db_query_duration_seconds', 'Database query latency.', [], LATENCY_BUCKETS);
  const db = openDatabase<NovaDatabase>(databaseUrl(conf), { onQuery: dbTime ? (ms) => dbTime.observe(ms / 1000) : undefined });
  try {
    await migrate(db, 'nova', novaMigrations);
  } catch (e) {
    await db.close();
    throw e;
  }
  const n = conf.neutron;
  // Nova's credentials for Neutron: a token fetched once, renewed before expiry and after a 401.
  const neutronSession =
    n.auth_type === 'password'
      ? new KeystoneSession({ authUrl: n.auth_url!, username: n.username!, password: n.password!, projectName: n.project_name!, userDomainName: n.user_domain_name, projectDomainName: n.project_domain_name, regionName: n.region_name })
      : undefined;
  const quantum = new QuantumClient({ url: n.url, timeoutMs: n.timeout * 1000, auth: neutronSession });
  let keystone: KeystoneAuth | undefined;
  let glance: GlanceClient | undefined;
  const app: NovaApp = {
    db,
    quantum,
    neutronSession,
    async close() {
      if (app.compute) {
        app.compute.server.closeIdleConnections();
        await app.compute.app.close();
      }
      if (app.metadata) {
        await closeServer(app.metadata.server);
        app.metadata.handler.close();
      }
      await quantum.close();
      await glance?.close();
      await neutronSession?.close();
      await keystone?.session.close();
      await db.close();
    },
  };
  try {
    if (apis.includes('metadata')) {
      const handler = metadataHandlerFor(conf, db, quantum, log, metrics);
      const server = metadataServer(conf.wsgi, handler.handle);
      const port = await listen(server, conf.DEFAULT.metadata_listen, conf.DEFAULT.metadata_listen_port, 4096);
      app.metadata = { server, port, handler };
      log.info(`metadata API listening on ${conf.DEFAULT.metadata_listen}:${port}`);
    }
    if (apis.includes('osapi_compute')) {
      const strategy = conf.api.auth_strategy === 'keystone' ? 'keystone' : 'noauth';
      if (strategy === 'keystone') keystone = keystoneAuthFrom(conf.keystone_authtoken, log);
      const catalogSession = neutronSession ?? keystone?.session;
      if (conf.glance.api_servers.length) glance = new GlanceClient(conf.glance.api_servers[0]!);
      else if (catalogSession) glance = new GlanceClient(() => catalogSession.endpoint('image'));
      const compute = await buildComputeApi({ db: db.db, quantum, glance, log, opts: {}, authStrategy: strategy, keystone, metrics });
      await compute.listen({ host: conf.DEFAULT.osapi_compute_listen, port: conf.DEFAULT.osapi_compute_listen_port });
      const addr = compute.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : conf.DEFAULT.osapi_compute_listen_port;
      app.compute = { server: compute.server, port, app: compute };
      log.info(`compute API listening on ${conf.DEFAULT.osapi_compute_listen}:${port}`);
    }
  } catch (e) {
    await app.close();
    throw e;
  }
  return app;
}
