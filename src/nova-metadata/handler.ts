// nova/api/metadata/handler.py over node:http: identification (remote address, signed proxy headers,
// metadata providers), the cache, the password handler, and webob-shaped errors.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Filters, Port, Subnet } from '../common/quantum-client.js';
import { constantTimeEqual, signInstanceId } from '../common/hmac.js';
import type { Logger } from '../common/log.js';
import { readBody, unmapIPv4 } from '../common/http.js';
import { ApiError } from '../common/errors.js';
import {
  InstanceMetadata,
  InvalidMetadataPath,
  MIME_JSON,
  PASSWORD_HANDLER,
  PASSWORD_MAX_SIZE,
  VERSIONS,
  ec2MdPrint,
  pyNormpath,
  type MetadataConfig,
  type VendorDataSources,
} from './base.js';
import { TtlCache } from '../common/ttl-cache.js';
import { REQUEST_ID_HEADER, requestIdFrom } from '../common/request-id.js';
import { parseTtl, TOKEN_HEADER, TOKEN_PATH, TOKEN_TTL_HEADER, type MetadataTokens } from './tokens.js';
import type { MetadataStore } from './store.js';
import { DEFAULT_EXPLANATIONS, HttpError, webobErrorBody } from './webob.js';
import { loadStaticVendorData, type DynamicVendorData } from './vendordata.js';

export const MAX_QUERY_NETWORKS = 160;
const UNKNOWN_ERROR = 'An unknown error has occurred. Please try your request again.';

/** The two Neutron calls the metadata API makes (QuantumClient satisfies it). */
export interface NeutronLookup {
  listPorts(f: Filters): Promise<Port[]>;
  listSubnets(f: Filters): Promise<Subnet[]>;
}

export interface HandlerOptions {
  serviceMetadataProxy: boolean;
  sharedSecret: string;
  useForwardedFor: boolean;
  cacheExpiration: number;
  dhcpDomain: string;
  vendordataProviders: string[];
  vendordataJsonfilePath?: string | undefined;
  /** Told each answer's status and latency (the daemon's metrics). */
  onAnswer?: ((status: number, seconds: number) => void) | undefined;
  /** Session tokens ([api] metadata_tokens): disabled (Nova's behaviour), optional (default) or required. */
  tokens?: { mode: 'disabled' | 'optional' | 'required'; issuer: MetadataTokens } | undefined;
}

class NotFound extends Error {}

type ProviderEntry = { instanceId: string; tenantId: string };

export class MetadataHandler {
  readonly cache: TtlCache<InstanceMetadata>;
  readonly providerCache: TtlCache<ProviderEntry>;
  private readonly mdConf: MetadataConfig;
  /** Backend lookups, counted as Nova's tests count get_metadata_by_* calls. */
  backendLookups = 0;

  constructor(
    private readonly opts: HandlerOptions,
    private readonly store: MetadataStore,
    private readonly neutron: NeutronLookup,
    private readonly log: Logger,
    private readonly dynamic?: DynamicVendorData,
  ) {
    this.cache = new TtlCache(opts.cacheExpiration * 1000, { sweep: true });
    this.providerCache = new TtlCache(opts.cacheExpiration * 1000, { sweep: true });
    this.mdConf = { dhcpDomain: opts.dhcpDomain, vendordataProviders: opts.vendordataProviders };
  }

  close(): void {
    this.cache.close();
    this.providerCache.close();
  }

  /** base.get_metadata_by_instance_id: builds InstanceMetadata (reads the static vendordata file). */
  private async buildMetadata(instanceId: string, address: string | null): Promise<InstanceMetadata | null> {
    this.backendLookups++;
    const inst = await this.store.getInstance(instanceId);
    if (!inst) return null;
    const vendor: VendorDataSources = {
      staticData: loadStaticVendorData(this.opts.vendordataJsonfilePath, this.log),
      ...(this.dynamic ? { dynamic: this.dynamic } : {}),
    };
    return new InstanceMetadata(inst, address, this.mdConf, vendor);
  }

  /** neutron.API().get_fixed_ip_by_address → instance uuid. */
  private async instanceByAddress(address: string): Promise<string> {
    const ports = await this.neutron.listPorts({ fixed_ips: `ip_address=${address}` });
    const uuids = ports.filter((p) => p.device_id).map((p) => p.device_id);
    if (uuids.length === 0) throw new NotFound(`Fixed IP not found for address ${address}.`);
    if (uuids.length > 1) throw new Error(`Fixed IP address ${address} is associated with multiple instances.`);
    return uuids[0]!;
  }

  async getMetadataByRemoteAddress(address: string): Promise<InstanceMetadata | null> {
    if (!address) throw new Error('Fixed IP not found for address .');
    const key = `metadata-${address}`;
    const cached = this.cache.get(key);
    if (cached) return cached;
    let data: InstanceMetadata | null;
    try {
      const uuid = await this.instanceByAddress(address);
      data = await this.buildMetadata(uuid, address);
    } catch (e) {
      if (e instanceof NotFound) {
        this.log.error(`Failed to get metadata for IP ${address}: ${e.message}`);
        return null;
      }
      throw e;
    }
    if (data) this.cache.set(key, data);
    return data;
  }

  async getMetadataByInstanceId(instanceId: string, address: string | null): Promise<InstanceMetadata | null> {
    const key = `metadata-${instanceId}`;
    const cached = this.cache.get(key);
    if (cached) return cached;
    const data = await this.buildMetadata(instanceId, address);
    if (data) this.cache.set(key, data);
    return data;
  }

  private async handleRemoteIp(req: IncomingMessage): Promise<InstanceMetadata | null> {
    let remote = unmapIPv4(req.socket.remoteAddress ?? '');
    if (this.opts.useForwardedFor) {
      const xff = req.headers['x-forwarded-for'];
      if (xff !== undefined) remote = Array.isArray(xff) ? xff.join(', ') : xff;
    }
    let md: InstanceMetadata | null;
    try {
      md = await this.getMetadataByRemoteAddress(remote);
    } catch (e) {
      this.log.error({ err: e }, `Failed to get metadata for IP ${remote}`);
      throw new HttpError(500, UNKNOWN_ERROR);
    }
    if (!md) this.log.error(`Failed to get metadata for IP ${remote}: no metadata`);
    return md;
  }

  private validateSharedSecret(requestorId: string, signature: string | undefined, requestorAddress: string | undefined, header: string): void {
    const expected = signInstanceId(this.opts.sharedSecret, requestorId);
    if (!signature || !constantTimeEqual(expected, signature)) {
      // Never log the expected value: it is a valid signature for this id (bug 2150094).
      if (requestorId) this.log.warn(`${header}: ${signature ?? 'None'} does not match the expected value for id: ${requestorId}. Request From: ${requestorAddress ?? 'None'}`);
      throw new HttpError(403, 'Invalid proxy request signature.');
    }
  }

  private async metaByInstanceId(instanceId: string, tenantId: string, address: string | null): Promise<InstanceMetadata | null> {
    let md: InstanceMetadata | null;
    try {
      md = await this.getMetadataByInstanceId(instanceId, address);
    } catch (e) {
      this.log.error({ err: e }, `Failed to get metadata for instance id: ${instanceId}`);
      throw new HttpError(500, UNKNOWN_ERROR);
    }
    if (!md) {
      this.log.error(`Failed to get metadata for instance id: ${instanceId}`);
      return null;
    }
    if (md.projectId !== tenantId) {
      this.log.warn(`Tenant_id ${tenantId} does not match tenant_id of instance ${instanceId}.`);
      return null;
    }
    return md;
  }

  private async handleInstanceIdRequest(req: IncomingMessage): Promise<InstanceMetadata | null> {
    const h = req.headersDistinct;
    const instanceIds = h['x-instance-id'];
    const tenantIds = h['x-tenant-id'];
    const signature = header(req, 'x-instance-id-signature');
    const xff = header(req, 'x-forwarded-for');
    let msg: string | undefined;
    if (instanceIds === undefined) msg = 'X-Instance-ID header is missing from request.';
    else if (signature === undefined) msg = 'X-Instance-ID-Signature header is missing from request.';
    else if (tenantIds === undefined) msg = 'X-Tenant-ID header is missing from request.';
    else if (instanceIds.length > 1) msg = 'Multiple X-Instance-ID headers found within request.';
    else if (tenantIds.length > 1) msg = 'Multiple X-Tenant-ID headers found within request.';
    if (msg) {
      this.log.warn({ remote: req.socket.remoteAddress }, msg);
      throw new HttpError(400, msg);
    }
    const instanceId = instanceIds![0]!;
    this.validateSharedSecret(instanceId, signature, xff, 'X-Instance-ID-Signature');
    return this.metaByInstanceId(instanceId, tenantIds![0]!, xff ?? null);
  }

  private async instanceIdFromProvider(providerId: string, address: string): Promise<ProviderEntry> {
    const subnets = await this.neutron.listSubnets({ advanced_service_providers: [providerId], fields: ['network_id'] });
    if (!subnets || subnets.length === 0) {
      const msg = `Could not find any subnets for provider ${providerId}`;
      this.log.error(msg);
      throw new HttpError(400, msg);
    }
    let networks = subnets.map((s) => s.network_id);
    const ports: Port[] = [];
    try {
      while (networks.length) {
        ports.push(...(await this.neutron.listPorts({ fixed_ips: `ip_address=${address}`, network_id: networks.slice(0, MAX_QUERY_NETWORKS), fields: ['device_id', 'tenant_id'] })));
        networks = networks.slice(MAX_QUERY_NETWORKS);
      }
    } catch (e) {
      this.log.error(`Failed to get instance id for metadata request, provider ${providerId} networks ${networks.join(',')} requester ${address}. Error: ${(e as Error).message}`);
      throw new HttpError(400, UNKNOWN_ERROR);
    }
    if (ports.length !== 1) {
      const msg = `Expected a single port matching provider ${providerId} and IP ${address}. Found ${ports.length}.`;
      this.log.error(msg);
      throw new HttpError(400, msg);
    }
    return { instanceId: ports[0]!.device_id, tenantId: ports[0]!.tenant_id };
  }

  private async handleProviderRequest(req: IncomingMessage): Promise<InstanceMetadata | null> {
    const xff = header(req, 'x-forwarded-for');
    if (xff === undefined) throw new HttpError(400, 'X-Forwarded-For is missing from request.');
    const providerId = String(req.headers['x-metadata-provider']);
    const address = xff.split(',')[0]!;
    if (this.opts.sharedSecret) {
      const sig = req.headers['x-metadata-provider-signature'];
      this.validateSharedSecret(providerId, Array.isArray(sig) ? sig[0] : sig, address, 'X-Metadata-Provider-Signature');
    }
    const key = `provider-${providerId}-${address}`;
    let entry = this.providerCache.get(key);
    if (!entry) {
      this.backendLookups++;
      entry = await this.instanceIdFromProvider(providerId, address);
      this.providerCache.set(key, entry);
    }
    return this.metaByInstanceId(entry.instanceId, entry.tenantId, address);
  }

  /** Identify the instance (the three modes of Nova's handler). */
  async identify(req: IncomingMessage): Promise<InstanceMetadata | null> {
    if (this.opts.serviceMetadataProxy) {
      if (req.headers['x-metadata-provider']) return this.handleProviderRequest(req);
      return this.handleInstanceIdRequest(req);
    }
    if (req.headers['x-instance-id']) {
      this.log.warn("X-Instance-ID present in request headers. The 'service_metadata_proxy' option must be enabled to process this header.");
    }
    return this.handleRemoteIp(req);
  }

  /** eventlet.wsgi's line for every request (`<xff>,<peer> "GET … HTTP/1.1" status: 200 len: 25 time: …`), with the request id. */
  private accessLine(req: IncomingMessage, res: ServerResponse, rid: string, seconds: number): void {
    const finished = res.writableFinished;
    const xff = header(req, 'x-forwarded-for');
    const peer = req.socket.remoteAddress ?? '-';
    const who = xff ? `${xff},${peer}` : peer;
    const fields = { request_id: rid, method: req.method, path: req.url, remote: peer, xff, instance_id: header(req, 'x-instance-id'), status: finished ? res.statusCode : 0 };
    if (!finished) {
      // The agent aborted (its proxy's guest went away): say so, the work behind it is dropped.
      this.log.info(fields, `${who} "${req.method ?? '-'} ${req.url ?? ''} HTTP/${req.httpVersion}": the client closed the connection before the answer time: ${seconds.toFixed(7)}`);
      return;
    }
    this.log.info(fields, `${who} "${req.method ?? '-'} ${req.url ?? ''} HTTP/${req.httpVersion}" status: ${res.statusCode} len: ${Number(res.getHeader('content-length') ?? 0)} time: ${seconds.toFixed(7)}`);
  }

  private sendError(req: IncomingMessage, res: ServerResponse, e: HttpError): void {
    // Every refused request leaves a line: who asked for what, and why not.
    this.log.info({ request_id: requestIds.get(req), method: req.method, path: req.url, remote: req.socket.remoteAddress, xff: req.headers['x-forwarded-for'], status: e.status }, e.explanation);
    if (req.method === 'HEAD') {
      res.writeHead(e.status, { 'Content-Type': 'text/html; charset=UTF-8', 'Content-Length': 0 });
      res.end();
      return;
    }
    const accept = req.headers.accept;
    const { contentType, body } = webobErrorBody(e.status, e.explanation, accept);
    res.writeHead(e.status, { 'Content-Length': body.length, 'Content-Type': contentType });
    res.end(body);
  }

  private send(req: IncomingMessage, res: ServerResponse, status: number, contentType: string, body: Buffer | string): void {
    const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    res.writeHead(status, { 'Content-Length': buf.length, 'Content-Type': contentType });
    res.end(req.method === 'HEAD' ? undefined : buf);
  }

  private async handlePassword(req: IncomingMessage, res: ServerResponse, md: InstanceMetadata): Promise<void> {
    const html = 'text/html; charset=UTF-8';
    if (req.method === 'GET') {
      // Read now, not from the cached view: every worker serves the password the moment one stored it.
      this.send(req, res, 200, html, (await this.store.getPassword(md.uuid)) ?? '');
      return;
    }
    if (req.method !== 'POST') throw new HttpError(400, 'GET and POST only are supported.');
    if (md.password) throw new HttpError(409);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > PASSWORD_MAX_SIZE) {
      this.log.warn(`password POST for ${md.uuid} too large (${declared} bytes)`);
      throw new HttpError(400, 'Request is too large.');
    }
    const body = await readBody(req, PASSWORD_MAX_SIZE).catch((e: unknown) => {
      if (e instanceof ApiError && e.status === 413) return undefined;
      throw e;
    });
    if (body === undefined) {
      this.log.warn(`password POST for ${md.uuid} too large`);
      throw new HttpError(400, 'Request is too large.');
    }
    const pw = body.toString('utf8');
    // One conditional update (store.ts): of concurrent POSTs on any workers exactly one stores, the others get 409.
    const r = await this.store.setPassword(md.uuid, pw);
    if (r === 'missing') throw new HttpError(400, `Instance ${md.uuid} could not be found.`);
    if (r === 'conflict') {
      this.log.info({ instance: md.uuid, request_id: requestIds.get(req) }, `password POST for ${md.uuid}: a password is already set`);
      throw new HttpError(409);
    }
    // Nova leaves the cached copy stale, so a second POST inside the cache window succeeds; refuse it instead.
    (md as { password: string | null }).password = pw || null;
    this.send(req, res, 200, html, '');
  }

  /** PUT /latest/api/token: a token for the requesting instance, valid for the TTL it asks. */
  private async handleTokenPut(req: IncomingMessage, res: ServerResponse, issuer: MetadataTokens): Promise<void> {
    if (req.method !== 'PUT') {
      res.setHeader('Allow', 'PUT');
      throw new HttpError(405);
    }
    const md = await this.identify(req);
    if (!md) throw new HttpError(404);
    const ttl = parseTtl(header(req, TOKEN_TTL_HEADER));
    if (ttl === undefined) throw new HttpError(400, 'X-aws-ec2-metadata-token-ttl-seconds must be an integer number of seconds between 1 and 21600.');
    const token = issuer.issue(md.uuid, ttl);
    const body = Buffer.from(token);
    res.writeHead(200, { 'Content-Length': body.length, 'Content-Type': 'text/plain', 'X-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
    res.end(body);
  }

  /** A token, when sent, must be this instance's and unexpired; `required` mode wants one on every request. */
  private checkToken(req: IncomingMessage, md: InstanceMetadata, tokens: { mode: string; issuer: MetadataTokens }): void {
    const t = header(req, TOKEN_HEADER);
    if (t === undefined) {
      if (tokens.mode === 'required') throw new HttpError(401);
      return;
    }
    const r = tokens.issuer.check(t.trim(), md.uuid);
    if (r !== 'valid') {
      this.log.warn({ instance: md.uuid, token: r }, `metadata token ${r} for instance ${md.uuid}`);
      throw new HttpError(401);
    }
  }

  /** The request entry point (wired straight to http.createServer). */
  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const onAnswer = this.opts.onAnswer;
    const t0 = process.hrtime.bigint();
    // oslo.middleware's request_id: the agent's id when well-formed, else a new one; echoed in the answer and on
    // this request's log lines (the bodies never change).
    const rid = requestIdFrom(req.headers[REQUEST_ID_HEADER]);
    requestIds.set(req, rid);
    res.setHeader('x-openstack-request-id', rid);
    res.once('close', () => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (res.writableFinished) onAnswer?.(res.statusCode, seconds);
      this.accessLine(req, res, rid, seconds);
    });
    this.handleAsync(req, res).catch((e: unknown) => {
      this.log.error({ err: e, request_id: rid }, 'unexpected error serving metadata');
      if (!res.headersSent) this.sendError(req, res, new HttpError(500, DEFAULT_EXPLANATIONS[500]));
      else res.destroy();
    });
  };

  private async handleAsync(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let pathInfo = q >= 0 ? url.slice(0, q) : url;
    if (pathInfo.includes('%')) {
      try {
        pathInfo = decodeURIComponent(pathInfo);
      } catch {
        /* keep the raw path: it simply will not match */
      }
    }
    try {
      const norm = pyNormpath(pathInfo);
      const tokens = this.opts.tokens && this.opts.tokens.mode !== 'disabled' ? this.opts.tokens : undefined;
      if (tokens && norm === TOKEN_PATH) {
        await this.handleTokenPut(req, res, tokens.issuer);
        return;
      }
      if (norm === '/' && !(tokens && (tokens.mode === 'required' || req.headers[TOKEN_HEADER] !== undefined))) {
        this.send(req, res, 200, 'text/plain; charset=UTF-8', [...VERSIONS, 'latest'].join('\n'));
        return;
      }
      const md = await this.identify(req);
      if (!md) throw new HttpError(404);
      if (tokens) this.checkToken(req, md, tokens);
      if (norm === '/') {
        this.send(req, res, 200, 'text/plain; charset=UTF-8', [...VERSIONS, 'latest'].join('\n'));
        return;
      }
      const memo = md.rendered.get(pathInfo);
      if (memo) {
        this.send(req, res, 200, memo.mime, memo.body);
        return;
      }
      let found;
      try {
        found = md.lookup(pathInfo);
      } catch (e) {
        if (e instanceof InvalidMetadataPath) throw new HttpError(404);
        this.log.error({ err: e }, `error rendering ${pathInfo} for ${md.uuid}`);
        throw new HttpError(500, UNKNOWN_ERROR);
      }
      const { data, mime, volatile } = found;
      if (data === PASSWORD_HANDLER) {
        await this.handlePassword(req, res, md);
        return;
      }
      let out: string | Buffer;
      if (data !== null && typeof data === 'object' && 'vendorData2' in data) {
        try {
          out = await md.vendorData2((m) => this.log.warn({ instance: md.uuid }, m));
        } catch (e) {
          // vendordata_dynamic_failure_fatal: Nova lets the exception escape (500).
          this.log.error({ err: e }, `dynamic vendordata failed for ${md.uuid}`);
          throw new HttpError(500, DEFAULT_EXPLANATIONS[500]);
        }
      } else out = ec2MdPrint(data as Exclude<typeof data, { vendorData2: true }>);
      const contentType = mime === MIME_JSON ? MIME_JSON : 'text/plain; charset=UTF-8';
      const body = typeof out === 'string' ? Buffer.from(out, 'utf8') : out;
      // Everything but meta_data.json (fresh random_seed) and vendor_data2.json (fetched every time) renders
      // the same bytes for this cached object, so keep them (bounded: guests can ask for any path).
      if (!volatile && !(data !== null && typeof data === 'object' && 'vendorData2' in data) && md.rendered.size < 64) md.rendered.set(pathInfo, { body, mime: contentType });
      this.send(req, res, 200, contentType, body);
    } catch (e) {
      if (e instanceof HttpError) {
        this.sendError(req, res, e);
        return;
      }
      throw e;
    }
  }
}

/** Each request's id, for the lines logged while serving it. */
const requestIds = new WeakMap<IncomingMessage, string>();

/** One header as webob's req.headers.get sees it (repeats joined with ', '). */
function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}


/** service_metadata_proxy with an empty secret accepts signatures anyone can compute: refuse to start. */
export function checkProxySecret(serviceMetadataProxy: boolean, secret: string): string | undefined {
  if (serviceMetadataProxy && !secret) {
    return '[neutron] service_metadata_proxy = True needs a non-empty [neutron] metadata_proxy_shared_secret: an HMAC keyed with "" can be computed by anyone, so every guest could read any instance\'s metadata';
  }
  return undefined;
}
