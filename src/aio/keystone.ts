// A private Keystone for the all-in-one stack and the tests: Debian's python3-keystone (22), bootstrapped with
// keystone-manage (db_sync, fernet_setup, credential_setup, bootstrap) on a MariaDB database, served by
// keystone-wsgi-public on its own port; plus the few admin calls the stack needs (projects, users, roles, the
// catalog), made over Keystone's REST API with the bootstrap admin's token.
// The all-in-one runs keystone-wsgi-public as one of its detached daemons (stack.ts); the tests' LocalKeystone
// runs it as their own child. Either way it is stopped by its pid.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import { errorMessage } from '../common/errors.js';
import { KeystoneSession } from '../common/keystone.js';
import { execute } from '../linux/exec.js';

export const KEYSTONE_MANAGE = '/usr/bin/keystone-manage';
export const KEYSTONE_WSGI = '/usr/bin/keystone-wsgi-public';
export const DEFAULT_MYSQL_ADMIN = 'mysql+pymysql://root:@127.0.0.1:3306';

export function keystoneInstalled(): boolean {
  return existsSync(KEYSTONE_MANAGE) && existsSync(KEYSTONE_WSGI);
}

/** Something the stack needs is not on this machine (Keystone, MariaDB): a clear message and its own exit status. */
export class UnavailableError extends Error {
  readonly exitCode = 3;
  constructor(message: string) {
    super(message);
    this.name = 'UnavailableError';
  }
}

interface MysqlAdmin {
  host: string;
  port: number;
  user: string;
  password: string;
}

function mysqlAdmin(url = DEFAULT_MYSQL_ADMIN): MysqlAdmin {
  const u = new URL(url.replace(/^mysql\+pymysql/, 'mysql'));
  return { host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username || 'root'), password: decodeURIComponent(u.password) };
}

/** One statement through the mysql client (the way an operator would create Keystone's database). */
async function sql(adminUrl: string | undefined, stmt: string): Promise<string> {
  const m = mysqlAdmin(adminUrl);
  return execute(['mysql', '-h', m.host, '-P', String(m.port), '-u', m.user, ...(m.password ? [`-p${m.password}`] : []), '-N', '-e', stmt], { timeoutMs: 30_000 });
}

/** Why MariaDB cannot hold Keystone's database here, or undefined when it can. */
export async function mariadbProblem(adminUrl?: string): Promise<string | undefined> {
  const m = mysqlAdmin(adminUrl);
  try {
    await sql(adminUrl, 'SELECT 1');
    return undefined;
  } catch (e) {
    return `MariaDB is not reachable as ${m.user}@${m.host}:${m.port} (${errorMessage(e).split('\n')[0]})`;
  }
}

export interface KeystoneSetup {
  /** Where keystone.conf, the fernet and credential keys and the log go. */
  dir: string;
  port: number;
  host?: string | undefined;
  /** MariaDB as root (no password on 127.0.0.1, as the machine's server): mysql+pymysql://root:@127.0.0.1:3306 */
  mysqlAdminUrl?: string | undefined;
  database: string;
  adminPassword: string;
  /** [token] expiration, seconds. */
  tokenExpiration?: number | undefined;
  region?: string | undefined;
  /** Default: keystone.log in dir. */
  logFile?: string | undefined;
}

export const keystoneConfPath = (dir: string) => join(dir, 'keystone.conf');
export const keystoneUrl = (o: Pick<KeystoneSetup, 'host' | 'port'>) => `http://${o.host ?? '127.0.0.1'}:${o.port}/v3`;

/**
 * keystone.conf, the database (created if missing) and keystone-manage db_sync / fernet_setup / credential_setup /
 * bootstrap (admin user and project, roles admin/member/reader, the identity endpoint). Every step is idempotent,
 * so a second run on the same database changes nothing but the endpoint URL and the admin password.
 */
export async function bootstrapKeystone(o: KeystoneSetup): Promise<void> {
  mkdirSync(o.dir, { recursive: true });
  const m = mysqlAdmin(o.mysqlAdminUrl);
  const conf = keystoneConfPath(o.dir);
  await sql(o.mysqlAdminUrl, `CREATE DATABASE IF NOT EXISTS \`${o.database}\` CHARACTER SET utf8mb4`);
  writeFileSync(
    conf,
    [
      '[DEFAULT]',
      `log_file = ${o.logFile ?? join(o.dir, 'keystone.log')}`,
      '[database]',
      `connection = mysql+pymysql://${encodeURIComponent(m.user)}:${encodeURIComponent(m.password)}@${m.host}:${m.port}/${o.database}`,
      '[fernet_tokens]',
      `key_repository = ${join(o.dir, 'fernet-keys')}`,
      '[fernet_receipts]',
      `key_repository = ${join(o.dir, 'fernet-keys')}`,
      '[credential]',
      `key_repository = ${join(o.dir, 'credential-keys')}`,
      '[token]',
      `expiration = ${o.tokenExpiration ?? 3600}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const url = keystoneUrl(o);
  const ks = (args: string[]) => execute([KEYSTONE_MANAGE, '--config-file', conf, ...args], { timeoutMs: 180_000 });
  await ks(['db_sync']);
  await ks(['fernet_setup', '--keystone-user', 'root', '--keystone-group', 'root']);
  await ks(['credential_setup', '--keystone-user', 'root', '--keystone-group', 'root']);
  // `--opt=value`: a generated password may start with '-', which argparse would take for an option.
  await ks(['bootstrap', `--bootstrap-password=${o.adminPassword}`, '--bootstrap-admin-url', url, '--bootstrap-public-url', url, '--bootstrap-internal-url', url, '--bootstrap-region-id', o.region ?? 'RegionOne']);
}

/** keystone-wsgi-public's argv: the config file after `--` (oslo.config reads it from sys.argv, and it names the process). */
export function keystoneServeArgv(o: Pick<KeystoneSetup, 'dir' | 'host' | 'port'>): string[] {
  return [KEYSTONE_WSGI, '--host', o.host ?? '127.0.0.1', '--port', String(o.port), '--', '--config-file', keystoneConfPath(o.dir)];
}

export async function dropKeystoneDatabase(database: string, adminUrl?: string): Promise<void> {
  await sql(adminUrl, `DROP DATABASE IF EXISTS \`${database}\``);
}

export async function keystoneDatabaseExists(database: string, adminUrl?: string): Promise<boolean> {
  return (await sql(adminUrl, `SHOW DATABASES LIKE '${database.replace(/[\\'_%]/g, (c) => `\\${c}`)}'`)).trim() === database;
}

/** Wait until Keystone's /v3 answers 200; gives up early when alive() says the server process is gone. */
export async function waitForKeystone(url: string, alive: () => boolean, timeoutMs = 60_000): Promise<void> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: 1 });
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (!alive()) throw new Error('keystone-wsgi-public exited');
      try {
        const r = await pool.request({ method: 'GET', path: '/v3' });
        await r.body.dump();
        if (r.statusCode === 200) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`keystone-wsgi-public did not answer on ${url} within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await pool.close();
  }
}

/** Admin calls to a running Keystone with the bootstrap admin's token; every ensure-call is idempotent. */
export class KeystoneAdmin {
  readonly admin: KeystoneSession;
  private readonly pool: Pool;

  constructor(
    readonly url: string,
    readonly adminPassword: string,
    readonly region = 'RegionOne',
  ) {
    this.pool = new Pool(new URL(url).origin, { connections: 4 });
    this.admin = new KeystoneSession({ authUrl: url, username: 'admin', password: adminPassword, projectName: 'admin', regionName: region });
  }

  async call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH', path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const token = await this.admin.token();
    const r = await this.pool.request({
      method,
      path: `/v3${path}`,
      headers: { 'x-auth-token': token, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.body.text();
    if (r.statusCode >= 400) throw new Error(`keystone ${method} ${path}: ${r.statusCode} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  private async roleId(name: string): Promise<string> {
    const r = await this.call<{ roles: Array<{ id: string }> }>('GET', `/roles?name=${encodeURIComponent(name)}`);
    if (r.roles[0]) return r.roles[0].id;
    return (await this.call<{ role: { id: string } }>('POST', '/roles', { role: { name } })).role.id;
  }

  async project(name: string): Promise<string> {
    const r = await this.call<{ projects: Array<{ id: string }> }>('GET', `/projects?name=${encodeURIComponent(name)}`);
    if (r.projects[0]) return r.projects[0].id;
    return (await this.call<{ project: { id: string } }>('POST', '/projects', { project: { name, domain_id: 'default', enabled: true } })).project.id;
  }

  /** A user with a role on a project (created as needed, password set to this one); returns the user's and project's ids. */
  async user(name: string, password: string, projectName: string, role = 'member'): Promise<{ userId: string; projectId: string }> {
    const projectId = await this.project(projectName);
    const found = (await this.call<{ users: Array<{ id: string }> }>('GET', `/users?name=${encodeURIComponent(name)}`)).users[0];
    let userId: string;
    if (found) {
      userId = found.id;
      await this.call('PATCH', `/users/${userId}`, { user: { password, enabled: true } });
    } else {
      userId = (await this.call<{ user: { id: string } }>('POST', '/users', { user: { name, password, domain_id: 'default', enabled: true } })).user.id;
    }
    await this.call('PUT', `/projects/${projectId}/users/${userId}/roles/${await this.roleId(role)}`);
    return { userId, projectId };
  }

  /** A catalog entry: the service (found by type, else created) with its public, internal and admin endpoints at url. */
  async service(type: string, name: string, url: string): Promise<void> {
    const s =
      (await this.call<{ services: Array<{ id: string }> }>('GET', `/services?type=${encodeURIComponent(type)}`)).services[0] ??
      (await this.call<{ service: { id: string } }>('POST', '/services', { service: { type, name, enabled: true } })).service;
    const eps = (await this.call<{ endpoints: Array<{ id: string; interface: string; region_id: string | null; url: string }> }>('GET', `/endpoints?service_id=${s.id}`)).endpoints;
    for (const iface of ['public', 'internal', 'admin']) {
      const ep = eps.find((e) => e.interface === iface && e.region_id === this.region);
      if (!ep) await this.call('POST', '/endpoints', { endpoint: { service_id: s.id, interface: iface, url, region_id: this.region, enabled: true } });
      else if (ep.url !== url) await this.call('PATCH', `/endpoints/${ep.id}`, { endpoint: { url } });
    }
  }

  /** Revoke a token (DELETE /v3/auth/tokens). */
  async revoke(token: string): Promise<void> {
    await this.call('DELETE', '/auth/tokens', undefined, { 'x-subject-token': token });
  }

  /** A session for a user (their project-scoped token and catalog). */
  session(username: string, password: string, projectName: string): KeystoneSession {
    return new KeystoneSession({ authUrl: this.url, username, password, projectName, regionName: this.region });
  }

  async close(): Promise<void> {
    await this.admin.close();
    await this.pool.close();
  }
}

export interface LocalKeystoneOptions {
  dir: string;
  port: number;
  host?: string;
  mysqlAdminUrl?: string;
  adminPassword?: string;
  tokenExpiration?: number;
  region?: string;
}

/** The tests' Keystone: a fresh database per instance, keystone-wsgi-public as this process's child. */
export class LocalKeystone extends KeystoneAdmin {
  readonly database: string;
  private proc: ChildProcess | undefined;
  private readonly setup: KeystoneSetup;

  constructor(o: LocalKeystoneOptions) {
    const setup: KeystoneSetup = {
      ...o,
      adminPassword: o.adminPassword ?? randomBytes(9).toString('base64url'),
      database: `keystone_${process.pid}_${randomBytes(3).toString('hex')}`,
    };
    super(keystoneUrl(setup), setup.adminPassword, o.region ?? 'RegionOne');
    this.setup = setup;
    this.database = setup.database;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<this> {
    await bootstrapKeystone(this.setup);
    await this.serve();
    return this;
  }

  /** Stop the server by its pid, drop the database. */
  async stop(): Promise<void> {
    await this.pause();
    await this.close();
    await dropKeystoneDatabase(this.database, this.setup.mysqlAdminUrl).catch(() => undefined);
  }

  /** Keystone down (the tests' 503 case): stop serving, keep the database for a resume(). */
  async pause(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }

  async resume(): Promise<void> {
    await this.serve();
  }

  private async serve(): Promise<void> {
    const out = openSync(join(this.setup.dir, 'keystone-wsgi.out'), 'a');
    const [cmd, ...args] = keystoneServeArgv(this.setup);
    // A server that stays up: spawned and kept as our child (exec.ts runs commands to completion).
    const proc = spawn(cmd!, args, { stdio: ['ignore', out, out] });
    this.proc = proc;
    closeSync(out);
    try {
      await waitForKeystone(this.url, () => proc.exitCode === null && proc.signalCode === null);
    } catch (e) {
      throw new Error(`${errorMessage(e)}; see ${this.setup.dir}/keystone-wsgi.out`);
    }
  }
}
