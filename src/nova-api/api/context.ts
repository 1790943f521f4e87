// Who asks the compute API and what they may do (Nova's default policy for this subset): a project's
// servers are its own (admin: any server by id, every project's with all_tenants); keypairs belong to a user;
// flavors are managed by admins. Under noauth the project comes from X-Project-Id or the legacy URL, as before.
import type { FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { RequestAuth } from '../../common/auth.js';
import { ApiError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { staticToken, type QuantumClient } from '../../common/quantum-client.js';
import type { NovaDatabase } from '../../db/nova-schema.js';
import type { GlanceClient } from '../glance.js';

export const FAULT_NAMES: Record<number, string> = { 400: 'badRequest', 401: 'unauthorized', 403: 'forbidden', 404: 'itemNotFound', 409: 'conflict', 413: 'overLimit', 500: 'computeFault', 503: 'serviceUnavailable' };

export const bad = (m: string) => new ApiError(400, 'badRequest', m);
export const notFound = (m: string) => new ApiError(404, 'itemNotFound', m);
export const conflict = (m: string) => new ApiError(409, 'conflict', m);
export const forbidden = (rule: string) => new ApiError(403, 'forbidden', `Policy doesn't allow ${rule} to be performed.`);
export const notAllowed = (method: string) => new ApiError(405, 'badRequest', `Method ${method} is not allowed here`);
export const resourceNotFound = () => notFound('The resource could not be found.');

export type Json = Record<string, unknown>;

export function isObj(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export interface ComputeOptions {
  /** Called after server metadata, keypairs or passwords change (nothing: Nova's cache simply expires). */
  onInstanceChange?: (uuid: string) => void;
}

export interface ComputeDeps {
  db: Kysely<NovaDatabase>;
  /** quantum-server with nova's own credentials ([neutron] section): reads of network info. */
  quantum: QuantumClient;
  /** The image service ([glance] api_servers or the catalog); none: any image UUID is accepted. */
  glance?: GlanceClient | undefined;
  log: Logger;
  keystone: boolean;
  opts: ComputeOptions;
}

export interface Ctx {
  projectId: string;
  userId: string;
  /** Sees every project's servers (the admin role). */
  isAdmin: boolean;
  /** May do admin-only actions (flavor-manage): the admin role, or anyone under noauth. */
  elevated: boolean;
  base: string;
  token?: string | undefined;
}

/** Under noauth: the project from the headers (or '' — the legacy URL may still name one). */
export function noauthNova(req: FastifyRequest): RequestAuth {
  const hdr = (n: string) => {
    const v = req.headers[n];
    return Array.isArray(v) ? v[0] : v;
  };
  const projectId = hdr('x-project-id') ?? hdr('x-auth-project-id') ?? hdr('x-tenant-id') ?? '';
  return { projectId, userId: hdr('x-user-id') ?? projectId, roles: [], isAdmin: false };
}

/** The request's context; the legacy /v2.1/{project_id}/ URL must agree with the token (Nova's check). */
export function ctxOf(req: FastifyRequest, deps: ComputeDeps): Ctx {
  const a = req.auth;
  const urlProject = (req.params as { project_id?: string }).project_id;
  let projectId = a.projectId;
  let userId = a.userId;
  if (urlProject !== undefined) {
    if (deps.keystone && urlProject !== a.projectId) throw bad(`Malformed request URL: URL's project_id '${urlProject}' doesn't match Context's project_id '${a.projectId}'`);
    if (!deps.keystone) {
      projectId = urlProject;
      if (!userId) userId = urlProject;
    }
  }
  if (!projectId) throw bad('No project given: send X-Project-Id (noauth) or use the /v2.1/{project_id}/ URL form');
  const host = req.headers.host ?? '127.0.0.1:8774';
  return { projectId, userId: userId || projectId, isAdmin: a.isAdmin, elevated: a.isAdmin || !deps.keystone, base: `http://${host}/v2.1/${projectId}`, token: a.token };
}

/** quantum-server as the caller (their token under keystone, so Neutron's policy applies as in Nova). */
export function quantumFor(deps: ComputeDeps, ctx: Ctx): QuantumClient {
  return deps.keystone && ctx.token ? deps.quantum.as(staticToken(ctx.token)) : deps.quantum;
}
