// auth_strategy = noauth for quantum-server (keystone is src/common/auth.ts's plugin).
import type { FastifyRequest } from 'fastify';
import type { RequestAuth } from '../common/auth.js';

/** The project noauth requests default to when they name none (Neutron's admin context). */
export const DEFAULT_ADMIN_PROJECT = 'admin';

/**
 * Every request is admin (Neutron builds an admin context without keystone); the project new resources
 * belong to is X-Project-Id (or the older X-Tenant-Id) unless the body names one.
 */
export function noauthContext(req: FastifyRequest): RequestAuth {
  const h = req.headers['x-project-id'] ?? req.headers['x-tenant-id'];
  const project = (Array.isArray(h) ? h[0] : h)?.trim() || DEFAULT_ADMIN_PROJECT;
  return { projectId: project, userId: project, roles: ['admin'], isAdmin: true };
}
