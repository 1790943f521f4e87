// The plugin's tables in one place: a thin facade over the per-resource modules (networks.ts, subnets.ts with IP
// allocation, ports.ts, routers.ts; agents.ts and scheduler.ts beside them), so the API, the policy and the
// agents' RPC keep the one surface they call.
import type { Kysely } from 'kysely';
import type { Logger } from '../common/log.js';
import type { Db } from '../db/connection.js';
import type { QuantumDatabase } from '../db/quantum-schema.js';
import type { Ctx, Filters } from './db-util.js';
import { NetworkStore } from './networks.js';
import { PortStore } from './ports.js';
import { RouterStore } from './routers.js';
import { SubnetStore } from './subnets.js';
import type { Body } from './validate.js';

export type { Ctx, Filters } from './db-util.js';
export type { NetworkBody } from './networks.js';

export interface StoreOptions {
  baseMac: string;
  macRetries?: number;
  log: Logger;
}

export class QuantumStore {
  readonly db: Kysely<QuantumDatabase>;
  readonly networks: NetworkStore;
  readonly subnets: SubnetStore;
  readonly ports: PortStore;
  readonly routers: RouterStore;

  constructor(
    readonly handle: Db<QuantumDatabase>,
    opts: StoreOptions,
  ) {
    this.db = handle.db;
    this.networks = new NetworkStore(this.db, opts.log);
    this.subnets = new SubnetStore(this.db, opts.log, this.networks);
    this.ports = new PortStore(this.db, opts.log, this.networks, { baseMac: opts.baseMac, macRetries: opts.macRetries });
    this.routers = new RouterStore(this.db, opts.log, this.subnets, this.ports);
  }

  listNetworks = (f: Filters) => this.networks.list(f);
  getNetwork = (id: string) => this.networks.get(id);
  createNetwork = (ctx: Ctx, body: Body) => this.networks.create(ctx, body);
  updateNetwork = (id: string, body: Body) => this.networks.update(id, body);
  deleteNetwork = (id: string) => this.networks.delete(id);

  listSubnets = (f: Filters) => this.subnets.list(f);
  getSubnet = (id: string) => this.subnets.get(id);
  createSubnet = (ctx: Ctx, body: Body) => this.subnets.create(ctx, body);
  updateSubnet = (id: string, body: Body) => this.subnets.update(id, body);
  deleteSubnet = (id: string) => this.subnets.delete(id);

  portsQuery = (f: Filters) => this.ports.query(f);
  listPorts = (f: Filters) => this.ports.list(f);
  getPort = (id: string) => this.ports.get(id);
  randomMac = () => this.ports.randomMac();
  createPort = (ctx: Ctx, body: Body) => this.ports.create(ctx, body);
  updatePort = (id: string, body: Body) => this.ports.update(id, body);
  deletePort = (id: string, opts?: { l3: boolean }) => this.ports.delete(id, opts);

  listRouters = (f: Filters) => this.routers.list(f);
  getRouter = (id: string) => this.routers.get(id);
  createRouter = (ctx: Ctx, body: Body) => this.routers.create(ctx, body);
  updateRouter = (id: string, body: Body) => this.routers.update(id, body);
  deleteRouter = (id: string) => this.routers.delete(id);
  addRouterInterface = (id: string, body: Body) => this.routers.addInterface(id, body);
  removeRouterInterface = (id: string, body: Body) => this.routers.removeInterface(id, body);
}
