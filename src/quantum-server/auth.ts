// Who is asking: the one seam where keystone (auth_token middleware) would plug in later.
import type { IncomingMessage } from 'node:http';
import type { Ctx } from './store.js';

/** The project noauth requests default to when they name none (Neutron's admin context). */
export const DEFAULT_ADMIN_PROJECT = 'admin';

/**
 * auth_strategy = noauth: every request is admin (Neutron builds an admin context without keystone);
 * the project new resources belong to is X-Project-Id (or the older X-Tenant-Id) unless the body names one.
 */
export function requestContext(strategy: string, req: IncomingMessage): Ctx {
  if (strategy !== 'noauth') throw new Error(`auth_strategy ${strategy} is not supported`);
  const h = req.headers['x-project-id'] ?? req.headers['x-tenant-id'];
  const project = (Array.isArray(h) ? h[0] : h)?.trim();
  return { projectId: project || DEFAULT_ADMIN_PROJECT, isAdmin: true };
}
