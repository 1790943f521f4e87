// Test databases: a fresh SQLite file and, unless QM_TEST_MYSQL=0, a fresh MariaDB database per run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';

export const MYSQL_ADMIN = process.env.QM_TEST_MYSQL_URL ?? 'mysql+pymysql://root:@127.0.0.1:3306';

export interface TestDb {
  name: 'sqlite' | 'mysql';
  url: string;
  drop(): Promise<void>;
}

export function mysqlEnabled(): boolean {
  return process.env.QM_TEST_MYSQL !== '0';
}

export async function sqliteDb(): Promise<TestDb> {
  const dir = mkdtempSync(join(tmpdir(), 'qm-db-'));
  return { name: 'sqlite', url: `sqlite:///${join(dir, 'test.db')}`, drop: async () => rmSync(dir, { recursive: true, force: true }) };
}

export async function mysqlDb(): Promise<TestDb> {
  const name = `qm_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const u = new URL(MYSQL_ADMIN.replace(/^mysql\+pymysql/, 'mysql'));
  const conn = await createConnection({ host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username || 'root'), password: decodeURIComponent(u.password) });
  await conn.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`);
  await conn.end();
  const base = MYSQL_ADMIN.replace(/\/$/, '');
  return {
    name: 'mysql',
    url: `${base}/${name}`,
    drop: async () => {
      const c = await createConnection({ host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username || 'root'), password: decodeURIComponent(u.password) });
      await c.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await c.end();
    },
  };
}

/** The backends a storage-facing suite runs on: SQLite always, MariaDB when available. */
export function backends(): Array<() => Promise<TestDb>> {
  return mysqlEnabled() ? [sqliteDb, mysqlDb] : [sqliteDb];
}
