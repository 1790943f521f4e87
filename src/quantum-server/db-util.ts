// What every table module of quantum-server shares: row lookup with the resource's NotFound, the retrying
// transaction, Neutron's list filters mapped to columns, and the small row conversions.
import { randomInt } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { ApiError } from '../common/errors.js';
import { canonicalIp } from '../common/ipaddr.js';
import type { AllocationPool } from '../common/quantum-client.js';
import type { Logger } from '../common/log.js';
import type { AgentRow, NetworkRow, PortRow, QuantumDatabase, RouterRow, SubnetRow } from '../db/quantum-schema.js';
import { faults } from './faults.js';
import { toBool, toInt, toStr, type Body } from './validate.js';

export type Filters = Record<string, string[]>;

export interface Ctx {
  /** The project new resources belong to unless the body names one. */
  projectId: string;
  isAdmin: boolean;
}

/** The owner of a new resource: the body's tenant_id / project_id (which must agree), else the caller's project. */
export function tenantOf(ctx: Ctx, a: Body): string {
  const t = a.tenant_id ?? a.project_id;
  if (a.tenant_id !== undefined && a.project_id !== undefined && a.tenant_id !== a.project_id) {
    throw faults.invalidInput(`'project_id' and 'tenant_id' do not match`);
  }
  return t === undefined || t === null ? ctx.projectId : toStr('tenant_id', t);
}

export type Q = Kysely<QuantumDatabase> | Transaction<QuantumDatabase>;

/** The tables whose rows are looked up by id (each has its own NotFound fault). */
export type ById = { networks: NetworkRow; subnets: SubnetRow; ports: PortRow; routers: RouterRow; agents: AgentRow };

/** One row by id, or the resource's NotFound fault. */
export async function rowById<T extends keyof ById>(q: Q, table: T, id: string, notFound: (id: string) => ApiError): Promise<ById[T]> {
  // Widened to the union so Kysely can type the query; the row is of `table`, hence ById[T].
  const row = await q.selectFrom(table as keyof ById).selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound(id);
  return row as ById[T];
}

export const DEVICE_OWNER_ROUTER_GW = 'network:router_gateway';
export const now = () => new Date().toISOString();
const CHUNK = 500;

export function chunks<T>(xs: readonly T[], n = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** Retryable database conflicts besides duplicate keys: MariaDB deadlock / lock wait, SQLite busy. */
export function isTransient(e: unknown): boolean {
  const err = e as { code?: string; errno?: number };
  return err?.errno === 1213 || err?.errno === 1205 || (typeof err?.code === 'string' && err.code.startsWith('SQLITE_BUSY')) || err?.code === 'ER_LOCK_DEADLOCK';
}

/** Thrown inside a transaction to roll back and try again (a lost race on an automatically chosen value). */
export class Retry extends Error {}

/** Run fn in a transaction; retry on lost races (duplicate automatically chosen values, deadlocks). */
export async function txRetry<T>(db: Kysely<QuantumDatabase>, log: Logger, what: string, fn: (trx: Transaction<QuantumDatabase>, attempt: number) => Promise<T>, max = 40): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.transaction().execute((trx) => fn(trx, attempt));
    } catch (e) {
      if (!(e instanceof Retry) && !isTransient(e)) throw e;
      if (attempt + 1 >= max) {
        log.error({ what, attempt }, 'giving up after repeated conflicts');
        throw e instanceof Retry ? new ApiError(409, 'Conflict', `Concurrent updates kept conflicting while trying to ${what}`) : e;
      }
      log.debug({ what, attempt, err: (e as Error).message }, 'retrying after a conflict');
      await new Promise((r) => setTimeout(r, randomInt(1, 5 + attempt * 3)));
    }
  }
}

/** Which filter keys each collection accepts, and how each maps to a column. */
export type Kind = 'str' | 'bool' | 'int' | 'ip' | 'mac';
export const FILTERS: Record<string, Record<string, [string, Kind] | null>> = {
  networks: { id: ['id', 'str'], name: ['name', 'str'], tenant_id: ['tenant_id', 'str'], project_id: ['tenant_id', 'str'], status: ['status', 'str'], admin_state_up: ['admin_state_up', 'bool'], shared: ['shared', 'bool'], mtu: ['mtu', 'int'], 'router:external': null },
  subnets: { id: ['id', 'str'], name: ['name', 'str'], tenant_id: ['tenant_id', 'str'], project_id: ['tenant_id', 'str'], network_id: ['network_id', 'str'], cidr: ['cidr', 'str'], ip_version: ['ip_version', 'int'], gateway_ip: ['gateway_ip', 'ip'], enable_dhcp: ['enable_dhcp', 'bool'], ipv6_ra_mode: ['ipv6_ra_mode', 'str'], ipv6_address_mode: ['ipv6_address_mode', 'str'], advanced_service_providers: null },
  ports: { id: ['id', 'str'], name: ['name', 'str'], tenant_id: ['tenant_id', 'str'], project_id: ['tenant_id', 'str'], network_id: ['network_id', 'str'], mac_address: ['mac_address', 'mac'], device_id: ['device_id', 'str'], device_owner: ['device_owner', 'str'], admin_state_up: ['admin_state_up', 'bool'], status: ['status', 'str'], 'binding:host_id': ['binding_host_id', 'str'], fixed_ips: null },
  routers: { id: ['id', 'str'], name: ['name', 'str'], tenant_id: ['tenant_id', 'str'], project_id: ['tenant_id', 'str'], status: ['status', 'str'], admin_state_up: ['admin_state_up', 'bool'] },
  agents: { id: ['id', 'str'], agent_type: ['agent_type', 'str'], binary: ['binary', 'str'], topic: ['topic', 'str'], host: ['host', 'str'], admin_state_up: ['admin_state_up', 'bool'], description: ['description', 'str'], alive: null },
};

export function filterValues(kind: Kind, key: string, vals: string[]): (string | number)[] {
  return vals.map((v) => {
    switch (kind) {
      case 'bool':
        return toBool(key, v) ? 1 : 0;
      case 'int':
        return toInt(key, v);
      case 'ip':
        return canonicalIp(v) ?? v;
      case 'mac':
        return v.toLowerCase().replace(/-/g, ':');
      default:
        return v;
    }
  });
}

/** Apply the plain column filters of a collection to a query; special keys are left to the caller. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function applyFilters<QB extends { where: (...a: any[]) => QB }>(qb: QB, collection: string, filters: Filters, prefix = ''): QB {
  const spec = FILTERS[collection]!;
  for (const [key, vals] of Object.entries(filters)) {
    if (!(key in spec)) throw faults.badFilter(key, collection);
    const col = spec[key];
    if (!col || vals.length === 0) continue;
    qb = qb.where(`${prefix}${col[0]}`, 'in', filterValues(col[1], key, vals));
  }
  return qb;
}

export function b(n: number): boolean {
  return Number(n) === 1;
}

export function poolText(p: AllocationPool): string {
  return `${p.start}-${p.end}`;
}

/** Neutron's agent timestamps: "YYYY-MM-DD HH:MM:SS" (UTC, no zone). */
export function neutronTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z?$|Z$/, '');
}

/** Creation order, then id: listings are stable without an ORDER BY that would defeat the lookup indexes. */
export function sortRows<T extends { created_at: string; id: string }>(rows: T[]): T[] {
  return rows.sort((p, q) => (p.created_at < q.created_at ? -1 : p.created_at > q.created_at ? 1 : p.id < q.id ? -1 : p.id > q.id ? 1 : 0));
}
