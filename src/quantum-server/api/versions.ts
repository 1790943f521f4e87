// GET / and /v2.0 (version and resource documents) and /v2.0/extensions.
import type { FastifyPluginAsync } from 'fastify';
import { ApiError } from '../../common/errors.js';
import { routes } from '../../common/fastify-app.js';
import { faults } from '../faults.js';
import { origin } from './collection.js';

const RESOURCES = [
  ['networks', 'network'],
  ['subnets', 'subnet'],
  ['ports', 'port'],
  ['routers', 'router'],
  ['agents', 'agent'],
] as const;

const EXTENSIONS = [
  { alias: 'router', name: 'Quantum L3 Router', description: 'Router abstraction for basic L3 forwarding between L2 Quantum networks and access to external networks via a NAT gateway.' },
  { alias: 'agent', name: 'agent', description: 'The agent management extension.' },
  { alias: 'l3_agent_scheduler', name: 'L3 Agent Scheduler', description: 'Schedule routers among l3 agents' },
  { alias: 'dhcp_agent_scheduler', name: 'DHCP Agent Scheduler', description: 'Schedule networks among dhcp agents' },
  { alias: 'binding', name: 'Port Binding', description: 'Expose port bindings of a virtual port to external application' },
  { alias: 'external-net', name: 'Quantum external network', description: 'Adds external network attribute to network resource.' },
].map((x) => ({ ...x, namespace: `http://docs.openstack.org/ext/${x.alias}/api/v2.0`, updated: '2013-02-07T10:00:00-00:00', links: [] }));

export const versionsApi: FastifyPluginAsync = async (app) => {
  routes(app, '/', { GET: async (req) => ({ versions: [{ status: 'CURRENT', id: 'v2.0', links: [{ href: `${origin(req)}/v2.0/`, rel: 'self' }] }] }) }, faults.notAllowed);
  routes(
    app,
    '/v2.0',
    { GET: async (req) => ({ resources: RESOURCES.map(([collection, name]) => ({ links: [{ href: `${origin(req)}/v2.0/${collection}`, rel: 'self' }], name, collection })) }) },
    faults.notAllowed,
  );
  routes(app, '/v2.0/extensions', { GET: async () => ({ extensions: EXTENSIONS }) }, faults.notAllowed);
  routes(
    app,
    '/v2.0/extensions/:alias',
    {
      GET: async (req) => {
        const alias = (req.params as { alias: string }).alias;
        const one = EXTENSIONS.find((x) => x.alias === alias);
        if (!one) throw new ApiError(404, 'HTTPNotFound', `Extension with alias ${alias} does not exist`);
        return { extension: one };
      },
    },
    faults.notAllowed,
  );
};
