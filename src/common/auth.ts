// Who is asking, for every REST API (quantum-server, nova-api's compute API, glance-api): one fastify plugin.
// auth_strategy = noauth: the API's own rule builds the context (every caller trusted, as before);
// auth_strategy = keystone: keystonemiddleware's auth_token: X-Auth-Token validated with Keystone v3, cached for
// [keystone_authtoken] token_cache_time, 401 with WWW-Authenticate on a missing or bad token, 503 when Keystone
// cannot be asked (a request is never let through unchecked). Project, user and roles come from the token.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { int, optStr, str, type Resolved, type Spec } from './config.js';
import { ConfigError } from './errors.js';
import { KeystoneSession, TokenValidator } from './keystone.js';
import type { Logger } from './log.js';

/** The request context the APIs' policies look at. */
export interface RequestAuth {
  projectId: string;
  userId: string;
  roles: readonly string[];
  /** Neutron's and Nova's context_is_admin: the admin role. */
  isAdmin: boolean;
  /** The caller's token (keystone only): passed on when a service acts for the user (nova → quantum, glance). */
  token?: string;
  projectName?: string;
  userName?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: RequestAuth;
  }
}

/** [keystone_authtoken] as keystonemiddleware names it (the password auth type only). */
export const keystoneAuthtokenOpts = {
  keystone_authtoken: {
    www_authenticate_uri: optStr('Complete "public" Identity API endpoint, sent to unauthenticated clients in WWW-Authenticate (default: auth_url).', { deprecated: [['keystone_authtoken', 'auth_uri']] }),
    auth_url: optStr('Authentication URL of Keystone (e.g. http://127.0.0.1:5000/v3), used to validate tokens.'),
    auth_type: str('password', 'Authentication type to load: password is the one supported.', { choices: ['password'] }),
    username: optStr("The service's user name."),
    password: optStr("The service user's password.", { secret: true }),
    project_name: optStr("The service user's project name."),
    user_domain_name: str('Default', "The service user's domain name."),
    project_domain_name: str('Default', "The service project's domain name."),
    region_name: optStr('The region in which the identity server can be found.'),
    token_cache_time: int(300, 'In order to prevent excessive effort spent validating tokens, the middleware caches previously-seen tokens for a configurable duration (in seconds). Set to -1 to disable caching completely.', { min: -1 }),
  },
} satisfies Spec;

export type KeystoneAuthtokenConf = Resolved<typeof keystoneAuthtokenOpts>['keystone_authtoken'];

/** The API's own rule under auth_strategy = noauth. */
export type NoauthContext = (req: FastifyRequest) => RequestAuth;

export interface AuthPluginOptions {
  strategy: string;
  /** Required with keystone. */
  keystone?: { validator: TokenValidator; wwwAuthenticateUri: string } | undefined;
  noauth: NoauthContext;
  /** Paths served without a token (the version documents, as in the APIs' paste pipelines). */
  isPublic?: (req: FastifyRequest) => boolean;
  log: Logger;
}

const ANONYMOUS: RequestAuth = Object.freeze({ projectId: '', userId: '', roles: [], isAdmin: false });

function sendKeystoneError(reply: FastifyReply, status: 401 | 503, wwwAuthenticate: string): FastifyReply {
  // keystonemiddleware's bodies (JSON, whatever the API's own fault format is).
  const body = status === 401
    ? { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } }
    : { error: { code: 503, title: 'Service Unavailable', message: 'The Keystone service is temporarily unavailable.' } };
  if (status === 401) reply.header('WWW-Authenticate', `Keystone uri="${wwwAuthenticate}"`);
  return reply.code(status).type('application/json; charset=UTF-8').send(body);
}

export function contextFromToken(t: { token: string; projectId: string; userId: string; roles: readonly string[]; projectName?: string; userName?: string }): RequestAuth {
  return { projectId: t.projectId, userId: t.userId, roles: t.roles, isAdmin: t.roles.includes('admin'), token: t.token, projectName: t.projectName, userName: t.userName };
}

/** The plugin: sets request.auth before any route runs (onRequest), or answers 401 / 503 itself. */
export const authPlugin = fp<AuthPluginOptions>(
  async (app: FastifyInstance, o: AuthPluginOptions) => {
    app.decorateRequest('auth', null as unknown as RequestAuth);
    if (o.strategy === 'noauth') {
      app.addHook('onRequest', async (req) => {
        req.auth = o.noauth(req);
      });
      return;
    }
    if (o.strategy !== 'keystone' || !o.keystone) throw new ConfigError(`auth_strategy ${o.strategy}: not supported (use noauth or keystone)`);
    const { validator, wwwAuthenticateUri } = o.keystone;
    app.addHook('onRequest', async (req, reply) => {
      if (o.isPublic?.(req)) {
        req.auth = ANONYMOUS;
        return;
      }
      const raw = req.headers['x-auth-token'] ?? req.headers['x-storage-token'];
      const token = (Array.isArray(raw) ? raw[0] : raw)?.trim();
      if (!token) return sendKeystoneError(reply, 401, wwwAuthenticateUri);
      let info;
      try {
        info = await validator.validate(token);
      } catch (e) {
        o.log.error({ err: e }, 'Unable to validate token');
        return sendKeystoneError(reply, 503, wwwAuthenticateUri);
      }
      if (!info) {
        o.log.info('Rejecting request');
        return sendKeystoneError(reply, 401, wwwAuthenticateUri);
      }
      req.auth = contextFromToken(info);
    });
  },
  { name: 'keystone-auth', fastify: '5.x' },
);

export interface KeystoneAuth {
  session: KeystoneSession;
  validator: TokenValidator;
  wwwAuthenticateUri: string;
}

/** The session and validator [keystone_authtoken] describes (auth_strategy = keystone); ConfigError if incomplete. */
export function keystoneAuthFrom(k: KeystoneAuthtokenConf, log: Logger): KeystoneAuth {
  const missing = (['auth_url', 'username', 'password', 'project_name'] as const).filter((n) => !k[n]);
  if (missing.length) throw new ConfigError(`auth_strategy = keystone needs [keystone_authtoken] ${missing.join(', ')}`);
  const session = new KeystoneSession({
    authUrl: k.auth_url!,
    username: k.username!,
    password: k.password!,
    projectName: k.project_name!,
    userDomainName: k.user_domain_name,
    projectDomainName: k.project_domain_name,
    regionName: k.region_name,
  });
  const validator = new TokenValidator({ session, cacheTimeSec: k.token_cache_time < 0 ? 0 : k.token_cache_time, log });
  return { session, validator, wwwAuthenticateUri: k.www_authenticate_uri || k.auth_url! };
}

/**
 * A client's own credentials in [DEFAULT] (the agents'): keystoneauth's names, with Grizzly's (admin_user,
 * admin_password, admin_tenant_name, auth_region) read as their deprecated spellings.
 */
export const serviceCredentialOpts = {
  DEFAULT: {
    auth_url: optStr('Keystone URL for this service\'s credentials (e.g. http://127.0.0.1:5000/v3; Grizzly\'s http://127.0.0.1:5000/v2.0 is accepted).'),
    auth_type: str('password', 'Authentication type (keystoneauth): password.', { choices: ['password'] }),
    username: optStr('The service user (Grizzly: admin_user).', { deprecated: [['DEFAULT', 'admin_user']] }),
    password: optStr("The service user's password (Grizzly: admin_password).", { secret: true, deprecated: [['DEFAULT', 'admin_password']] }),
    project_name: optStr("The service user's project (Grizzly: admin_tenant_name).", { deprecated: [['DEFAULT', 'admin_tenant_name']] }),
    user_domain_name: str('Default', "The service user's domain."),
    project_domain_name: str('Default', "The service project's domain."),
    region_name: optStr('Region of the endpoints (Grizzly: auth_region).', { deprecated: [['DEFAULT', 'auth_region']] }),
  },
} satisfies Spec;

export type ServiceCredentialConf = Resolved<typeof serviceCredentialOpts>['DEFAULT'];

/** The service's Keystone session when auth_strategy = keystone (ConfigError naming what is missing), else undefined. */
export function serviceSessionFrom(strategy: string, d: ServiceCredentialConf): KeystoneSession | undefined {
  if (strategy !== 'keystone') return undefined;
  const missing = (['auth_url', 'username', 'password', 'project_name'] as const).filter((n) => !d[n]);
  if (missing.length) throw new ConfigError(`auth_strategy = keystone needs [DEFAULT] ${missing.join(', ')} (or Grizzly's admin_user, admin_password, admin_tenant_name)`);
  return new KeystoneSession({ authUrl: d.auth_url!, username: d.username!, password: d.password!, projectName: d.project_name!, userDomainName: d.user_domain_name, projectDomainName: d.project_domain_name, regionName: d.region_name });
}
