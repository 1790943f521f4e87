// One query layer over SQLite (embedded default) and MariaDB/MySQL, from an OpenStack-style URL.
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, MysqlDialect, SqliteDialect, type LogEvent, type Migration, Migrator } from 'kysely';
import { createPool } from 'mysql2';
import { ConfigError } from '../common/errors.js';

export type Dialect = 'sqlite' | 'mysql';

export interface ParsedUrl {
  dialect: Dialect;
  /** sqlite: file path or ':memory:' */
  path?: string;
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  database?: string;
}

/**
 * Parse a SQLAlchemy-style URL as OpenStack configs spell them:
 *   sqlite:////var/lib/quantum/quantum.db   (absolute), sqlite:///rel.db (relative), sqlite:// (memory)
 *   mysql+pymysql://user:pw@host[:port]/db?charset=utf8   (also mysql://)
 */
export function parseConnectionUrl(url: string): ParsedUrl {
  const m = /^([a-z0-9]+)(?:\+[a-z0-9_]+)?:\/\/(.*)$/i.exec(url.trim());
  if (!m) throw new ConfigError(`[database] connection = ${JSON.stringify(url)}: not a database URL`);
  const scheme = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (scheme === 'sqlite') {
    if (rest === '' || rest === '/' || rest === '/:memory:') return { dialect: 'sqlite', path: ':memory:' };
    if (!rest.startsWith('/')) throw new ConfigError(`[database] connection = ${JSON.stringify(url)}: sqlite URLs look like sqlite:////abs/path.db`);
    const p = rest.slice(1).split('?')[0]!;
    return { dialect: 'sqlite', path: p.startsWith('/') ? p : resolve(p) };
  }
  if (scheme === 'mysql' || scheme === 'mariadb') {
    let u: URL;
    try {
      u = new URL(`mysql://${rest}`);
    } catch {
      throw new ConfigError(`[database] connection = <hidden>: malformed mysql URL`);
    }
    const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
    if (!database) throw new ConfigError(`[database] connection: mysql URL names no database`);
    return {
      dialect: 'mysql',
      host: u.hostname || '127.0.0.1',
      port: u.port ? Number(u.port) : 3306,
      user: decodeURIComponent(u.username || 'root'),
      password: decodeURIComponent(u.password),
      database,
    };
  }
  throw new ConfigError(`[database] connection = ${JSON.stringify(url)}: unsupported database '${scheme}' (use sqlite or mysql+pymysql)`);
}

export interface Db<T> {
  db: Kysely<T>;
  dialect: Dialect;
  close(): Promise<void>;
}

export interface OpenOptions {
  poolSize?: number;
  /** Told every query's duration in ms (a daemon's DB time metric). */
  onQuery?: ((ms: number) => void) | undefined;
}

export function openDatabase<T>(url: string, opts: OpenOptions = {}): Db<T> {
  const onQuery = opts.onQuery;
  const log = onQuery ? (e: LogEvent) => onQuery(e.queryDurationMillis) : undefined;
  const p = parseConnectionUrl(url);
  if (p.dialect === 'sqlite') {
    if (p.path !== ':memory:') mkdirSync(dirname(p.path!), { recursive: true });
    const sqlite = new Database(p.path!);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('synchronous = NORMAL');
    const db = new Kysely<T>({ dialect: new SqliteDialect({ database: sqlite }), ...(log ? { log } : {}) });
    return { db, dialect: 'sqlite', close: () => db.destroy() };
  }
  const pool = createPool({
    host: p.host,
    port: p.port,
    user: p.user,
    password: p.password,
    database: p.database,
    connectionLimit: opts.poolSize ?? 10,
    charset: 'utf8mb4',
    // Booleans and counts come back as numbers, dates as the strings we stored.
    dateStrings: true,
    supportBigNumbers: true,
  });
  const db = new Kysely<T>({ dialect: new MysqlDialect({ pool }), ...(log ? { log } : {}) });
  return { db, dialect: 'mysql', close: () => db.destroy() };
}

/** Run a service's migrations; each service keeps its own migration table so they can share one database. */
export async function migrate<T>(handle: Db<T>, service: string, migrations: Record<string, Migration>): Promise<void> {
  const migrator = new Migrator({
    db: handle.db as Kysely<unknown>,
    provider: { getMigrations: async () => migrations },
    migrationTableName: `${service}_migrations`,
    migrationLockTableName: `${service}_migrations_lock`,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** True for a unique-constraint violation on either backend (used to retry allocations). */
export function isDuplicateKey(e: unknown): boolean {
  const err = e as { code?: string; errno?: number };
  return err?.code === 'SQLITE_CONSTRAINT_UNIQUE' || err?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || err?.code === 'ER_DUP_ENTRY' || err?.errno === 1062;
}
