// Keystone v3 as the services and clients use it: password authentication with a cached, renewed token and
// its catalog (keystoneauth's Password plugin and session), and validation of users' tokens for the APIs
// (keystonemiddleware's auth_token: GET /v3/auth/tokens with the service's own token, results cached).
import { Pool } from 'undici';
import { ApiError } from './errors.js';
import type { Logger } from './log.js';

export interface CatalogEndpoint {
  interface: string;
  region: string | null;
  region_id?: string | null;
  url: string;
}

export interface CatalogEntry {
  type: string;
  name?: string;
  endpoints: CatalogEndpoint[];
}

/** What a validated (or freshly issued) token says about its holder. */
export interface TokenInfo {
  token: string;
  /** Epoch milliseconds. */
  expiresAt: number;
  userId: string;
  userName: string;
  userDomainId: string;
  projectId: string;
  projectName: string;
  projectDomainId: string;
  roles: string[];
  catalog: CatalogEntry[];
}

interface TokenBody {
  token?: {
    expires_at?: string;
    user?: { id?: string; name?: string; domain?: { id?: string } };
    project?: { id?: string; name?: string; domain?: { id?: string } };
    roles?: Array<{ name?: string }>;
    catalog?: CatalogEntry[];
  };
}

/** Keystone's answer to an authentication or validation, as TokenInfo (undefined: not a project-scoped token). */
export function parseToken(token: string, body: unknown): TokenInfo | undefined {
  const t = (body as TokenBody | null)?.token;
  if (!t?.user?.id || !t.project?.id || !t.expires_at) return undefined;
  const expiresAt = Date.parse(t.expires_at);
  if (!Number.isFinite(expiresAt)) return undefined;
  return {
    token,
    expiresAt,
    userId: t.user.id,
    userName: t.user.name ?? '',
    userDomainId: t.user.domain?.id ?? '',
    projectId: t.project.id,
    projectName: t.project.name ?? '',
    projectDomainId: t.project.domain?.id ?? '',
    roles: (t.roles ?? []).map((r) => r.name ?? '').filter((r) => r !== ''),
    catalog: t.catalog ?? [],
  };
}

/** The v3 root of an auth_url as operators write it: http://h:5000, http://h:5000/v3 or Grizzly's http://h:5000/v2.0. */
export function identityV3(authUrl: string): string {
  return `${authUrl.replace(/\/+$/, '').replace(/\/v(2\.0|3)$/, '')}/v3`;
}

/** An endpoint of the catalog by service type, interface (public/internal/admin) and, if given, region. */
export function findEndpoint(catalog: readonly CatalogEntry[], type: string, iface = 'public', region?: string): string | undefined {
  const want = iface.replace(/URL$/, '');
  for (const s of catalog) {
    if (s.type !== type) continue;
    for (const e of s.endpoints) {
      if (e.interface !== want) continue;
      if (region && e.region !== region && e.region_id !== region) continue;
      return e.url;
    }
  }
  return undefined;
}

const unreachable = (url: string, e: unknown) => new ApiError(503, 'ServiceUnavailable', `Keystone at ${url} unreachable: ${(e as Error).message ?? String(e)}`);

/** One keep-alive pool per Keystone origin, shared by a process's sessions and validators. */
class IdentityHttp {
  private readonly pool: Pool;
  readonly base: string;
  constructor(authUrl: string, timeoutMs: number) {
    this.base = identityV3(authUrl);
    const u = new URL(this.base);
    this.pool = new Pool(u.origin, { connections: 8, connectTimeout: Math.min(timeoutMs, 10_000), headersTimeout: timeoutMs, bodyTimeout: timeoutMs, keepAliveTimeout: 10_000 });
  }

  async send(method: 'GET' | 'POST' | 'DELETE', path: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; json: unknown }> {
    const u = new URL(this.base + path);
    try {
      const res = await this.pool.request({
        method,
        path: u.pathname + u.search,
        headers: { accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.body.text();
      let json: unknown;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch {
        json = undefined;
      }
      return { status: res.statusCode, headers: res.headers, json };
    } catch (e) {
      throw unreachable(this.base, e);
    }
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** keystoneauth's password plugin options (Zed's names; Grizzly's admin_user etc. map onto them). */
export interface PasswordAuthOptions {
  authUrl: string;
  username: string;
  password: string;
  projectName: string;
  userDomainName?: string;
  projectDomainName?: string;
  regionName?: string;
  /** Endpoint interface for catalog lookups: public (default), internal or admin. */
  interface?: string;
  timeoutMs?: number;
}

/** Renew this long before expiry, so a request never leaves with a token about to lapse. */
const RENEW_BEFORE_MS = 120_000;

/**
 * A service's (or a CLI's) own Keystone session: one token, fetched on first use, shared by concurrent
 * callers, renewed before it expires and after a 401 (invalidate()), never fetched per request.
 */
export class KeystoneSession {
  private readonly http: IdentityHttp;
  private current: TokenInfo | undefined;
  private pending: Promise<TokenInfo> | undefined;
  private fetchedAt = 0;
  /** Tokens issued so far (tests and benchmarks check that the metadata path does not fetch per request). */
  issued = 0;

  constructor(readonly o: PasswordAuthOptions) {
    this.http = new IdentityHttp(o.authUrl, o.timeoutMs ?? 30_000);
  }

  get identityUrl(): string {
    return this.http.base;
  }

  /** The current token info, authenticating when there is none or it is close to expiry. */
  async auth(): Promise<TokenInfo> {
    const c = this.current;
    // Short-lived tokens (a test Keystone) are renewed at half their life instead.
    if (c && c.expiresAt - Date.now() > Math.min(RENEW_BEFORE_MS, (c.expiresAt - this.fetchedAt) / 2)) return c;
    this.pending ??= this.authenticate().finally(() => (this.pending = undefined));
    return this.pending;
  }

  async token(): Promise<string> {
    return (await this.auth()).token;
  }

  /** A request with this token got a 401: forget it, so the next caller authenticates again. */
  invalidate(token?: string): void {
    if (!token || this.current?.token === token) this.current = undefined;
  }

  /** The endpoint of a service from this session's catalog. */
  async endpoint(type: string, iface = this.o.interface ?? 'public'): Promise<string> {
    const url = findEndpoint((await this.auth()).catalog, type, iface, this.o.regionName);
    if (!url) throw new ApiError(503, 'EndpointNotFound', `${iface} endpoint for ${type} service${this.o.regionName ? ` in ${this.o.regionName} region` : ''} not found`);
    return url;
  }

  private async authenticate(): Promise<TokenInfo> {
    const o = this.o;
    const body = {
      auth: {
        identity: { methods: ['password'], password: { user: { name: o.username, domain: { name: o.userDomainName ?? 'Default' }, password: o.password } } },
        scope: { project: { name: o.projectName, domain: { name: o.projectDomainName ?? 'Default' } } },
      },
    };
    const r = await this.http.send('POST', '/auth/tokens', {}, body);
    if (r.status === 401) throw new ApiError(401, 'Unauthorized', `Keystone refused the credentials of user ${o.username} (project ${o.projectName})`);
    if (r.status >= 500) throw new ApiError(503, 'ServiceUnavailable', `Keystone at ${this.http.base} answered ${r.status}`);
    const tok = r.headers['x-subject-token'];
    const info = r.status === 201 && typeof tok === 'string' ? parseToken(tok, r.json) : undefined;
    if (!info) throw new ApiError(r.status >= 400 ? r.status : 502, 'AuthorizationFailure', `Keystone did not issue a project-scoped token for ${o.username} (HTTP ${r.status})`);
    this.issued++;
    this.fetchedAt = Date.now();
    this.current = info;
    return info;
  }

  /** Ask Keystone about another token with this session's token (auth_token's verify_token). 404 → undefined. */
  async validate(userToken: string): Promise<TokenInfo | undefined> {
    for (let attempt = 0; ; attempt++) {
      const mine = await this.token();
      const r = await this.http.send('GET', '/auth/tokens', { 'x-auth-token': mine, 'x-subject-token': userToken });
      if (r.status === 200) return parseToken(userToken, r.json);
      if (r.status === 404 || r.status === 400) return undefined;
      if (r.status === 401 && attempt === 0) {
        // Our own token lapsed or was revoked: authenticate again, once.
        this.invalidate(mine);
        continue;
      }
      if (r.status === 403) throw new ApiError(503, 'ServiceUnavailable', 'Keystone refused to validate tokens for this service (does its user have the admin or service role?)');
      throw new ApiError(503, 'ServiceUnavailable', `Keystone at ${this.http.base} answered ${r.status} to a token validation`);
    }
  }

  close(): Promise<void> {
    return this.http.close();
  }
}

export interface TokenValidatorOptions {
  session: KeystoneSession;
  /** [keystone_authtoken] token_cache_time: seconds a validation is reused (never past the token's expiry). */
  cacheTimeSec: number;
  maxEntries?: number;
  log?: Logger;
}

/**
 * keystonemiddleware's token cache in front of KeystoneSession.validate: a token is asked about once per
 * token_cache_time (a refused one too), an expired token is refused even from the cache, and concurrent
 * requests carrying the same new token share one validation.
 */
export class TokenValidator {
  private readonly cache = new Map<string, { info: TokenInfo | undefined; until: number }>();
  private readonly inflight = new Map<string, Promise<TokenInfo | undefined>>();
  private readonly max: number;
  /** Validations sent to Keystone (tests check the cache with it). */
  validations = 0;

  constructor(private readonly o: TokenValidatorOptions) {
    this.max = o.maxEntries ?? 10_000;
  }

  /** The token's info, or undefined when Keystone does not know it or it expired; ApiError 503 when Keystone is away. */
  async validate(token: string): Promise<TokenInfo | undefined> {
    const now = Date.now();
    const hit = this.cache.get(token);
    if (hit && hit.until > now) return hit.info && hit.info.expiresAt > now ? hit.info : undefined;
    let p = this.inflight.get(token);
    if (!p) {
      p = this.fetch(token).finally(() => this.inflight.delete(token));
      this.inflight.set(token, p);
    }
    const info = await p;
    return info && info.expiresAt > Date.now() ? info : undefined;
  }

  private async fetch(token: string): Promise<TokenInfo | undefined> {
    this.validations++;
    const info = await this.o.session.validate(token);
    if (this.o.cacheTimeSec > 0) {
      if (this.cache.size >= this.max) this.cache.delete(this.cache.keys().next().value!);
      const until = Date.now() + this.o.cacheTimeSec * 1000;
      this.cache.set(token, { info, until: info ? Math.min(until, info.expiresAt) : until });
    }
    if (!info) this.o.log?.warn('Authorization failed for token');
    return info;
  }

  clear(): void {
    this.cache.clear();
  }
}
