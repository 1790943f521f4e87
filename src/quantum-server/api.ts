// The Neutron v2.0 REST API over node:http: routing, bodies, filters, fields, errors and the request log.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError } from '../common/errors.js';
import { readBody } from '../common/http.js';
import type { Logger } from '../common/log.js';
import { requestContext } from './auth.js';
import { faults } from './faults.js';
import type { AgentRpc } from './agent-rpc.js';
import type { QuantumPlugin } from './plugin.js';
import type { Ctx, Filters } from './store.js';
import type { Body } from './validate.js';

export interface ApiOptions {
  plugin: QuantumPlugin;
  rpc: AgentRpc;
  log: Logger;
  authStrategy: string;
}

type Obj = Record<string, unknown>;

interface Collection {
  singular: string;
  list(f: Filters): Promise<Obj[]>;
  show(id: string): Promise<Obj>;
  create?(ctx: Ctx, body: Body): Promise<Obj>;
  update?(id: string, body: Body): Promise<Obj>;
  remove?(id: string): Promise<void>;
}

/** Query keys that are not attribute filters (Neutron's pagination, sorting and field selection). */
const NON_FILTERS = new Set(['fields', 'limit', 'marker', 'sort_key', 'sort_dir', 'page_reverse']);

function collections(p: QuantumPlugin): Record<string, Collection> {
  const s = p.store;
  const o = <T>(x: T) => x as unknown as Obj;
  const os = <T>(x: T[]) => x as unknown as Obj[];
  return {
    networks: {
      singular: 'network',
      list: async (f) => os(await s.listNetworks(f)),
      show: async (id) => o(await s.getNetwork(id)),
      create: async (c, b) => o(await p.createNetwork(c, b)),
      update: async (id, b) => o(await p.updateNetwork(id, b)),
      remove: (id) => p.deleteNetwork(id),
    },
    subnets: {
      singular: 'subnet',
      list: async (f) => os(await s.listSubnets(f)),
      show: async (id) => o(await s.getSubnet(id)),
      create: async (c, b) => o(await p.createSubnet(c, b)),
      update: async (id, b) => o(await p.updateSubnet(id, b)),
      remove: (id) => p.deleteSubnet(id),
    },
    ports: {
      singular: 'port',
      list: async (f) => os(await s.listPorts(f)),
      show: async (id) => o(await s.getPort(id)),
      create: async (c, b) => o(await p.createPort(c, b)),
      update: async (id, b) => o(await p.updatePort(id, b)),
      remove: (id) => p.deletePort(id),
    },
    routers: {
      singular: 'router',
      list: async (f) => os(await s.listRouters(f)),
      show: async (id) => o(await s.getRouter(id)),
      create: async (c, b) => o(await p.createRouter(c, b)),
      update: async (id, b) => o(await p.updateRouter(id, b)),
      remove: (id) => p.deleteRouter(id),
    },
    agents: {
      singular: 'agent',
      list: async (f) => os(await p.agents.listAgents(f)),
      show: async (id) => o(await p.agents.getAgent(id)),
      // Agents report state by POSTing themselves (Neutron does this over RPC): an upsert, not a plain create.
      create: async (_c, b) => o(await p.agents.reportAgent(b)),
      update: async (id, b) => o(await p.agents.updateAgent(id, b)),
      remove: (id) => p.agents.deleteAgent(id),
    },
  };
}

const EXTENSIONS = [
  { alias: 'router', name: 'Quantum L3 Router', description: 'Router abstraction for basic L3 forwarding between L2 Quantum networks and access to external networks via a NAT gateway.' },
  { alias: 'agent', name: 'agent', description: 'The agent management extension.' },
  { alias: 'l3_agent_scheduler', name: 'L3 Agent Scheduler', description: 'Schedule routers among l3 agents' },
  { alias: 'dhcp_agent_scheduler', name: 'DHCP Agent Scheduler', description: 'Schedule networks among dhcp agents' },
  { alias: 'binding', name: 'Port Binding', description: 'Expose port bindings of a virtual port to external application' },
  { alias: 'external-net', name: 'Quantum external network', description: 'Adds external network attribute to network resource.' },
];

class Reply {
  constructor(
    readonly status: number,
    readonly body?: unknown,
  ) {}
}

function sendReply(res: ServerResponse, r: Reply): number {
  if (r.body === undefined) {
    res.writeHead(r.status, { 'Content-Length': 0 });
    res.end();
    return 0;
  }
  const data = Buffer.from(JSON.stringify(r.body));
  res.writeHead(r.status, { 'Content-Type': 'application/json', 'Content-Length': data.length });
  res.end(data);
  return data.length;
}

function errorReply(e: ApiError): Reply {
  return new Reply(e.status, { NeutronError: { type: e.type, message: e.message, detail: e.detail } });
}

async function jsonBody(req: IncomingMessage): Promise<Obj> {
  const raw = await readBody(req);
  if (raw.length === 0) throw faults.malformed('Cannot understand JSON');
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw faults.malformed('Cannot understand JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw faults.malformed('Cannot understand JSON');
  return parsed as Obj;
}

function trimFields(o: Obj, fields: string[]): Obj {
  if (!fields.length) return o;
  const out: Obj = {};
  for (const f of fields) if (f in o) out[f] = o[f];
  return out;
}

function cmp(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  return String(a) < String(b) ? -1 : 1;
}

export function createApi(opts: ApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { plugin, log } = opts;
  const colls = collections(plugin);
  const sched = plugin.scheduler;

  /** Neutron's l3_agent_scheduler and dhcp_agent_scheduler extensions: the bindings as sub-resources. */
  async function schedulerRoute(method: string, seg: string[], req: IncomingMessage): Promise<Reply | undefined> {
    const [, coll, id, sub, subId] = seg;
    if (coll === 'agents' && (sub === 'l3-routers' || sub === 'dhcp-networks') && id) {
      const l3 = sub === 'l3-routers';
      if (seg.length === 4) {
        if (method === 'GET') {
          const ids = l3 ? await sched.routersOnAgent(id) : await sched.networksOnAgent(id);
          const items = ids.length ? (l3 ? await plugin.store.listRouters({ id: ids }) : await plugin.store.listNetworks({ id: ids })) : [];
          return new Reply(200, { [l3 ? 'routers' : 'networks']: items });
        }
        if (method === 'POST') {
          const body = await jsonBody(req);
          const key = l3 ? 'router_id' : 'network_id';
          const rid = body[key];
          if (typeof rid !== 'string' || rid === '') throw new ApiError(400, 'HTTPBadRequest', `Failed to parse request. Required attribute '${key}' not specified`);
          if (l3) await sched.addRouterToAgent(id, rid);
          else await sched.addNetworkToAgent(id, rid);
          return new Reply(201, null);
        }
        throw faults.notAllowed();
      }
      if (seg.length === 5 && subId) {
        if (method !== 'DELETE') throw faults.notAllowed();
        if (l3) await sched.removeRouterFromAgent(id, subId);
        else await sched.removeNetworkFromAgent(id, subId);
        return new Reply(204);
      }
      throw faults.notFoundPath();
    }
    if (seg.length === 4 && ((coll === 'routers' && sub === 'l3-agents') || (coll === 'networks' && sub === 'dhcp-agents')) && id) {
      if (method !== 'GET') throw faults.notAllowed();
      return new Reply(200, { agents: coll === 'routers' ? await sched.agentsHostingRouter(id) : await sched.agentsHostingNetwork(id) });
    }
    return undefined;
  }

  async function route(req: IncomingMessage, url: URL): Promise<Reply> {
    const method = req.method ?? 'GET';
    let path = url.pathname.replace(/\/+$/, '');
    if (path.endsWith('.json')) path = path.slice(0, -5);
    const seg = path.split('/').filter(Boolean).map((s) => decodeURIComponent(s));
    const origin = `http://${req.headers.host ?? 'localhost:9696'}`;
    if (seg.length === 0) {
      if (method !== 'GET') throw faults.notAllowed();
      return new Reply(200, { versions: [{ status: 'CURRENT', id: 'v2.0', links: [{ href: `${origin}/v2.0/`, rel: 'self' }] }] });
    }
    if (seg[0] !== 'v2.0') throw faults.notFoundPath();
    if (seg.length === 1) {
      if (method !== 'GET') throw faults.notAllowed();
      return new Reply(200, {
        resources: Object.entries(colls).map(([name, c]) => ({ links: [{ href: `${origin}/v2.0/${name}`, rel: 'self' }], name: c.singular, collection: name })),
      });
    }
    if (seg[1] === 'extensions' && seg.length <= 3) {
      if (method !== 'GET') throw faults.notAllowed();
      const ext = EXTENSIONS.map((x) => ({ ...x, namespace: `http://docs.openstack.org/ext/${x.alias}/api/v2.0`, updated: '2013-02-07T10:00:00-00:00', links: [] }));
      if (seg.length === 2) return new Reply(200, { extensions: ext });
      const one = ext.find((x) => x.alias === seg[2]);
      if (!one) throw new ApiError(404, 'HTTPNotFound', `Extension with alias ${seg[2]} does not exist`);
      return new Reply(200, { extension: one });
    }
    if (seg[1] === 'rpc') {
      // The agents' RPC calls (agent-rpc.ts): POST /v2.0/rpc/<topic>/<method>, the args as the body.
      if (seg.length !== 4) throw faults.notFoundPath();
      if (method !== 'POST') throw faults.notAllowed();
      const args = await jsonBody(req);
      return new Reply(200, { result: await opts.rpc.call(seg[2]!, seg[3]!, args) });
    }
    const scheduling = await schedulerRoute(method, seg, req);
    if (scheduling) return scheduling;
    const coll = colls[seg[1]!];
    if (!coll) throw faults.notFoundPath();
    const ctx = requestContext(opts.authStrategy, req);
    const fields = url.searchParams.getAll('fields').flatMap((f) => f.split(',')).filter(Boolean);

    if (seg.length === 2) {
      if (method === 'GET') {
        const filters: Filters = {};
        for (const key of new Set(url.searchParams.keys())) {
          if (NON_FILTERS.has(key)) continue;
          const vals = url.searchParams.getAll(key).filter((v) => v !== '');
          if (vals.length) filters[key] = vals;
        }
        let items = await coll.list(filters);
        items = paginate(items, url);
        const body: Obj = { [seg[1]!]: items.map((x) => trimFields(x, fields)) };
        const limit = Number(url.searchParams.get('limit'));
        if (limit > 0 && items.length === limit) {
          const next = new URLSearchParams(url.searchParams);
          next.set('marker', String(items[items.length - 1]!.id));
          body[`${seg[1]}_links`] = [{ href: `${origin}${url.pathname}?${next.toString()}`, rel: 'next' }];
        }
        return new Reply(200, body);
      }
      if (method === 'POST' && coll.create) {
        const body = await jsonBody(req);
        const plural = seg[1]!;
        if (Array.isArray(body[plural])) {
          // Bulk create, as Neutron's emulated bulk: one by one, the first failure answers.
          const out: Obj[] = [];
          for (const item of body[plural] as unknown[]) {
            if (item === null || typeof item !== 'object' || Array.isArray(item)) throw faults.malformed(`Bulk operation requires a list of ${coll.singular} objects`);
            out.push(await coll.create(ctx, item as Body));
          }
          return new Reply(201, { [plural]: out.map((x) => trimFields(x, fields)) });
        }
        const one = body[coll.singular];
        if (one === undefined) throw new ApiError(400, 'HTTPBadRequest', `Unable to find '${coll.singular}' in request body`);
        if (one === null || typeof one !== 'object' || Array.isArray(one)) throw new ApiError(400, 'HTTPBadRequest', `Unable to find '${coll.singular}' in request body`);
        return new Reply(201, { [coll.singular]: trimFields(await coll.create(ctx, one as Body), fields) });
      }
      throw faults.notAllowed();
    }

    const id = seg[2]!;
    if (seg.length === 3) {
      if (method === 'GET') return new Reply(200, { [coll.singular]: trimFields(await coll.show(id), fields) });
      if (method === 'PUT' && coll.update) {
        const body = await jsonBody(req);
        const one = body[coll.singular];
        if (one === undefined || one === null || typeof one !== 'object' || Array.isArray(one)) throw new ApiError(400, 'HTTPBadRequest', `Unable to find '${coll.singular}' in request body`);
        return new Reply(200, { [coll.singular]: await coll.update(id, one as Body) });
      }
      if (method === 'DELETE' && coll.remove) {
        await coll.remove(id);
        return new Reply(204);
      }
      throw faults.notAllowed();
    }
    if (seg.length === 4 && seg[1] === 'routers' && (seg[3] === 'add_router_interface' || seg[3] === 'remove_router_interface')) {
      if (method !== 'PUT') throw faults.notAllowed();
      const body = await jsonBody(req);
      const info = seg[3] === 'add_router_interface' ? await plugin.addRouterInterface(id, body) : await plugin.removeRouterInterface(id, body);
      return new Reply(200, info);
    }
    throw faults.notFoundPath();
  }

  return (req, res) => {
    const started = process.hrtime.bigint();
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      url = new URL('http://localhost/');
    }
    route(req, url)
      .catch((e: unknown) => {
        if (e instanceof ApiError) {
          if (e.status >= 500) log.error({ err: e }, e.message);
          else log.info({ type: e.type }, e.message);
          return errorReply(e);
        }
        log.error({ err: e, method: req.method, url: req.url }, 'unexpected error while processing request');
        return errorReply(new ApiError(500, 'HTTPInternalServerError', 'Request Failed: internal server error while processing your request.'));
      })
      .then((reply) => {
        // The body may still be arriving on an early error; let it drain so the connection can be reused.
        req.resume();
        const len = sendReply(res, reply);
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        log.info(
          { method: req.method, url: req.url, status: reply.status, ms: Math.round(ms * 100) / 100, remote: req.socket.remoteAddress },
          `${req.socket.remoteAddress ?? '-'} "${req.method} ${req.url} HTTP/${req.httpVersion}" status: ${reply.status}  len: ${len} time: ${(ms / 1000).toFixed(7)}`,
        );
      })
      .catch((e: unknown) => log.error({ err: e }, 'failed to send response'));
  };
}

/** sort_key/sort_dir (repeatable), marker and limit as Neutron's pagination takes them. */
function paginate(items: Obj[], url: URL): Obj[] {
  const keys = url.searchParams.getAll('sort_key');
  const dirs = url.searchParams.getAll('sort_dir');
  for (const d of dirs) if (d !== 'asc' && d !== 'desc') throw new ApiError(400, 'HTTPBadRequest', `Sort direction ${d} is invalid, must be 'asc' or 'desc'`);
  if (keys.length) {
    if (items[0]) for (const k of keys) if (!(k in items[0])) throw new ApiError(400, 'HTTPBadRequest', `${k} is an invalid attribute for sort_key`);
    items = [...items].sort((a, b) => {
      for (let i = 0; i < keys.length; i++) {
        const c = cmp(a[keys[i]!], b[keys[i]!]);
        if (c) return dirs[i] === 'desc' ? -c : c;
      }
      return 0;
    });
  }
  const marker = url.searchParams.get('marker');
  if (marker) {
    const i = items.findIndex((x) => x.id === marker);
    items = i >= 0 ? items.slice(i + 1) : items;
  }
  const limitRaw = url.searchParams.get('limit');
  if (limitRaw !== null && limitRaw !== '') {
    const limit = Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 0) throw new ApiError(400, 'HTTPBadRequest', `Limit must be an integer 0 or greater and not '${limitRaw}'`);
    if (limit > 0) items = items.slice(0, limit);
  }
  return items;
}
