// A private Keystone for the all-in-one stack and the tests: Debian's python3-keystone (22), bootstrapped with
// keystone-manage (db_sync, fernet_setup, credential_setup, bootstrap) on a fresh MariaDB database, served by
// keystone-wsgi-public on its own port; plus the few admin calls the stack needs (projects, users, roles, the
// catalog), made over Keystone's REST API with the bootstrap admin's token. Stopped by its pid.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, writeFileSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import { KeystoneSession } from '../common/keystone.js';

export const KEYSTONE_MANAGE = '/usr/bin/keystone-manage';
export const KEYSTONE_WSGI = '/usr/bin/keystone-wsgi-public';

export function keystoneInstalled(): boolean {
  return existsSync(KEYSTONE_MANAGE) && existsSync(KEYSTONE_WSGI);
}

export interface LocalKeystoneOptions {
  /** Where keystone.conf, the fernet and credential keys and the log go. */
  dir: string;
  port: number;
  host?: string;
  /** MariaDB as root (no password on 127.0.0.1, as the tests' server): mysql+pymysql://root:@127.0.0.1:3306 */
  mysqlAdminUrl?: string;
  adminPassword?: string;
  /** [token] expiration, seconds. */
  tokenExpiration?: number;
  region?: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 180_000): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${err}`)) : resolve(out))),
  );
}

export class LocalKeystone {
  readonly url: string;
  readonly region: string;
  readonly adminPassword: string;
  readonly database: string;
  private proc: ChildProcess | undefined;
  private readonly pool: Pool;
  private readonly conf: string;
  admin!: KeystoneSession;

  constructor(private readonly o: LocalKeystoneOptions) {
    const host = o.host ?? '127.0.0.1';
    this.url = `http://${host}:${o.port}/v3`;
    this.region = o.region ?? 'RegionOne';
    this.adminPassword = o.adminPassword ?? randomBytes(9).toString('base64url');
    this.database = `keystone_${process.pid}_${randomBytes(3).toString('hex')}`;
    this.conf = join(o.dir, 'keystone.conf');
    this.pool = new Pool(`http://${host}:${o.port}`, { connections: 4 });
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  private mysql(): { host: string; port: number; user: string; password: string } {
    const u = new URL((this.o.mysqlAdminUrl ?? 'mysql+pymysql://root:@127.0.0.1:3306').replace(/^mysql\+pymysql/, 'mysql'));
    return { host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username || 'root'), password: decodeURIComponent(u.password) };
  }

  private async sql(stmt: string): Promise<void> {
    const m = this.mysql();
    await run('mysql', ['-h', m.host, '-P', String(m.port), '-u', m.user, ...(m.password ? [`-p${m.password}`] : []), '-e', stmt]);
  }

  /** Database, keys, bootstrap (admin user, project, roles admin/member/reader, the identity endpoint), server. */
  async start(): Promise<this> {
    const o = this.o;
    mkdirSync(o.dir, { recursive: true });
    const m = this.mysql();
    await this.sql(`CREATE DATABASE \`${this.database}\` CHARACTER SET utf8mb4`);
    writeFileSync(
      this.conf,
      [
        '[DEFAULT]',
        `log_file = ${join(o.dir, 'keystone.log')}`,
        '[database]',
        `connection = mysql+pymysql://${encodeURIComponent(m.user)}:${encodeURIComponent(m.password)}@${m.host}:${m.port}/${this.database}`,
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
    );
    const ks = (args: string[]) => run(KEYSTONE_MANAGE, ['--config-file', this.conf, ...args]);
    await ks(['db_sync']);
    await ks(['fernet_setup', '--keystone-user', 'root', '--keystone-group', 'root']);
    await ks(['credential_setup', '--keystone-user', 'root', '--keystone-group', 'root']);
    await ks(['bootstrap', '--bootstrap-password', this.adminPassword, '--bootstrap-admin-url', this.url, '--bootstrap-public-url', this.url, '--bootstrap-internal-url', this.url, '--bootstrap-region-id', this.region]);
    await this.serve();
    this.admin = new KeystoneSession({ authUrl: this.url, username: 'admin', password: this.adminPassword, projectName: 'admin' });
    return this;
  }

  /** An admin call to Keystone's REST API. */
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

  /** A user with a role on a project (created as needed); returns the user's and project's ids. */
  async user(name: string, password: string, projectName: string, role = 'member'): Promise<{ userId: string; projectId: string }> {
    const projectId = await this.project(projectName);
    const found = await this.call<{ users: Array<{ id: string }> }>('GET', `/users?name=${encodeURIComponent(name)}`);
    const userId = found.users[0]?.id ?? (await this.call<{ user: { id: string } }>('POST', '/users', { user: { name, password, domain_id: 'default', enabled: true } })).user.id;
    await this.call('PUT', `/projects/${projectId}/users/${userId}/roles/${await this.roleId(role)}`);
    return { userId, projectId };
  }

  /** A catalog entry: the service and its public, internal and admin endpoints in this region. */
  async service(type: string, name: string, url: string): Promise<void> {
    const s = (await this.call<{ service: { id: string } }>('POST', '/services', { service: { type, name, enabled: true } })).service;
    for (const iface of ['public', 'internal', 'admin']) {
      await this.call('POST', '/endpoints', { endpoint: { service_id: s.id, interface: iface, url, region_id: this.region, enabled: true } });
    }
  }

  /** Revoke a token (DELETE /v3/auth/tokens). */
  async revoke(token: string): Promise<void> {
    await this.call('DELETE', '/auth/tokens', undefined, { 'x-subject-token': token });
  }

  /** A session for a user (their project-scoped token and catalog). */
  session(username: string, password: string, projectName: string): KeystoneSession {
    return new KeystoneSession({ authUrl: this.url, username, password, projectName });
  }

  /** Stop the server by its pid, drop the database. */
  async stop(): Promise<void> {
    await this.pause();
    await this.admin?.close();
    await this.pool.close();
    await this.sql(`DROP DATABASE IF EXISTS \`${this.database}\``).catch(() => undefined);
  }

  /** Keystone down (the tests' 503 case): stop serving, keep the database for a restart(). */
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

  /** Run keystone-wsgi-public and wait until /v3 answers. */
  private async serve(): Promise<void> {
    const o = this.o;
    const out = openSync(join(o.dir, 'keystone-wsgi.out'), 'a');
    const proc = spawn(KEYSTONE_WSGI, ['--host', o.host ?? '127.0.0.1', '--port', String(o.port)], { env: { ...process.env, OS_KEYSTONE_CONFIG_FILES: this.conf }, stdio: ['ignore', out, out] });
    this.proc = proc;
    closeSync(out);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`keystone-wsgi-public exited (${proc.exitCode}); see ${o.dir}/keystone-wsgi.out`);
      try {
        const r = await this.pool.request({ method: 'GET', path: '/v3' });
        await r.body.dump();
        if (r.statusCode === 200) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error('keystone-wsgi-public did not answer within 60 s');
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
