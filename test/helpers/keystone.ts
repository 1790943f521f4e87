// One private Keystone per test file (src/aio/keystone.ts: a temp dir, a fresh MariaDB database, a free port),
// with the service users the stack authenticates as and two projects with a member each.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keystoneInstalled, LocalKeystone } from '../../src/aio/keystone.js';
import { mysqlEnabled, MYSQL_ADMIN } from './db.js';
import { getFreePort } from './proc.js';

export const SERVICE_PASSWORD = 'service-secret';
export const USER_PASSWORD = 'user-secret';

/** Why the Keystone suites cannot run here, or undefined when they can. */
export function keystoneSkip(): string | undefined {
  if (!keystoneInstalled()) return 'python3-keystone is not installed (install.sh test installs it)';
  if (!mysqlEnabled()) return 'Keystone needs MariaDB (QM_TEST_MYSQL=0)';
  return undefined;
}

export interface TestKeystone {
  ks: LocalKeystone;
  /** Project ids. */
  projects: { a: string; b: string; service: string; admin: string };
  users: { alice: string; bob: string };
  /** [keystone_authtoken] / [DEFAULT] lines for a service user. */
  authtoken(user: string, cacheTime?: number): string;
  stop(): Promise<void>;
}

export async function startKeystone(o: { tokenExpiration?: number } = {}): Promise<TestKeystone> {
  const dir = mkdtempSync(join(tmpdir(), 'qm-keystone-'));
  // An admin password with a leading '-', as a generated one sometimes has: keystone-manage must not take it for an option.
  const ks = await new LocalKeystone({ dir, port: await getFreePort(), mysqlAdminUrl: MYSQL_ADMIN, tokenExpiration: o.tokenExpiration, adminPassword: `-qm-${randomBytes(6).toString('hex')}` }).start();
  const service = await ks.project('service');
  for (const s of ['quantum', 'nova', 'glance']) await ks.user(s, SERVICE_PASSWORD, 'service', 'admin');
  const alice = await ks.user('alice', USER_PASSWORD, 'project-a');
  const bob = await ks.user('bob', USER_PASSWORD, 'project-b');
  const admin = await ks.project('admin');
  return {
    ks,
    projects: { a: alice.projectId, b: bob.projectId, service, admin },
    users: { alice: alice.userId, bob: bob.userId },
    authtoken: (user, cacheTime = 300) =>
      `www_authenticate_uri = ${ks.url}\nauth_url = ${ks.url}\nauth_type = password\nusername = ${user}\npassword = ${SERVICE_PASSWORD}\nproject_name = service\nuser_domain_name = Default\nproject_domain_name = Default\nregion_name = ${ks.region}\ntoken_cache_time = ${cacheTime}\n`,
    async stop() {
      await ks.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
