// quantum-aio start --keystone: the stack's own Keystone. Its database on the machine's MariaDB (named after the
// data directory, so a second start finds it), the bootstrap once, the service users (quantum, nova, glance: admin
// on project service), the demo tenants' users, the catalog (identity, network, compute, image) and the openrc
// files for the admin and the demo users. Passwords are made once and kept in etc/keystone/credentials.json (0600).
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KeystoneSession } from '../common/keystone.js';
import { QuantumClient } from '../common/quantum-client.js';
import { ComputeClient, TENANTS, tokenIdentity, type DemoAccess, type TenantName } from './demo.js';
import {
  bootstrapKeystone,
  KEYSTONE_MANAGE,
  KEYSTONE_WSGI,
  keystoneDatabaseExists,
  KeystoneAdmin,
  keystoneInstalled,
  mariadbProblem,
  UnavailableError,
  waitForKeystone,
  type KeystoneSetup,
} from './keystone.js';
import { baseUrl, keystoneUrlOf, type ServiceAuth, type StackLayout } from './stack.js';

export const REGION = 'RegionOne';
export const SERVICE_USERS = ['quantum', 'nova', 'glance'] as const;

export interface StackCredentials {
  adminPassword: string;
  services: Record<(typeof SERVICE_USERS)[number], string>;
  /** The demo tenants' users (member on their project). */
  users: Record<TenantName, { username: string; password: string }>;
}

const credentialsPath = (l: StackLayout) => join(l.keystoneDir, 'credentials.json');
const bootstrappedMarker = (l: StackLayout) => join(l.keystoneDir, 'bootstrapped');

/** Keystone's database: one per data directory (the data dir's databases hold its project ids). */
export function keystoneDatabase(l: StackLayout): string {
  return `qaio_keystone_${createHash('sha256').update(l.dataDir).digest('hex').slice(0, 10)}`;
}

export function readCredentials(l: StackLayout): StackCredentials | undefined {
  try {
    return JSON.parse(readFileSync(credentialsPath(l), 'utf8')) as StackCredentials;
  } catch {
    return undefined;
  }
}

/** The stack's passwords: made on the first keystone start, the same ever after. */
export function stackCredentials(l: StackLayout): StackCredentials {
  const had = readCredentials(l);
  if (had) return had;
  const pw = () => randomBytes(12).toString('base64url');
  const c: StackCredentials = {
    adminPassword: pw(),
    services: { quantum: pw(), nova: pw(), glance: pw() },
    users: { 'tenant-a': { username: 'user-a', password: pw() }, 'tenant-b': { username: 'user-b', password: pw() } },
  };
  mkdirSync(l.keystoneDir, { recursive: true });
  writeFileSync(credentialsPath(l), `${JSON.stringify(c, null, 2)}\n`, { mode: 0o600 });
  return c;
}

export function serviceAuth(l: StackLayout, c: StackCredentials): ServiceAuth {
  return { url: keystoneUrlOf(l), region: REGION, passwords: c.services };
}

export function keystoneSetup(l: StackLayout, c: StackCredentials): KeystoneSetup {
  return { dir: l.keystoneDir, host: l.bindHost, port: l.ports.keystone, database: keystoneDatabase(l), adminPassword: c.adminPassword, region: REGION, logFile: join(l.logs, 'keystone.log') };
}

/** Keystone and MariaDB are here, or an UnavailableError saying what is missing and what to do. */
export async function checkKeystonePrerequisites(): Promise<void> {
  if (!keystoneInstalled()) {
    throw new UnavailableError(
      `--keystone needs Keystone, which is not installed (${KEYSTONE_MANAGE} / ${KEYSTONE_WSGI} missing): apt-get install python3-keystone (./install.sh demo --keystone does), or start without --keystone`,
    );
  }
  const db = await mariadbProblem();
  if (db) throw new UnavailableError(`--keystone needs MariaDB for Keystone's database: ${db}; install and start mariadb-server (root without password on 127.0.0.1; ./install.sh demo --keystone does), or start without --keystone`);
}

/** db_sync & co. unless this data directory's database was bootstrapped already. */
export async function bootstrapOnce(l: StackLayout, c: StackCredentials): Promise<boolean> {
  const s = keystoneSetup(l, c);
  if (existsSync(bootstrappedMarker(l)) && (await keystoneDatabaseExists(s.database))) return false;
  await bootstrapKeystone(s);
  writeFileSync(bootstrappedMarker(l), `${s.database}\n`);
  return true;
}

export async function waitForStackKeystone(l: StackLayout, alive: () => boolean): Promise<void> {
  await waitForKeystone(keystoneUrlOf(l), alive);
}

export interface Registered {
  /** Project ids by demo tenant. */
  projects: Record<TenantName, string>;
}

/** Users, projects and the catalog (idempotent: a restart on other ports only moves the endpoints). */
export async function register(l: StackLayout, c: StackCredentials): Promise<Registered> {
  const ks = new KeystoneAdmin(keystoneUrlOf(l), c.adminPassword, REGION);
  try {
    for (const s of SERVICE_USERS) await ks.user(s, c.services[s], 'service', 'admin');
    const projects = {} as Record<TenantName, string>;
    for (const t of TENANTS) projects[t] = (await ks.user(c.users[t].username, c.users[t].password, t, 'member')).projectId;
    await ks.service('identity', 'keystone', keystoneUrlOf(l));
    await ks.service('network', 'quantum', baseUrl(l, l.ports.quantum));
    await ks.service('compute', 'nova', `${baseUrl(l, l.ports.compute)}/v2.1`);
    await ks.service('image', 'glance', baseUrl(l, l.ports.image));
    return { projects };
  } finally {
    await ks.close();
  }
}

export interface Openrc {
  who: string;
  path: string;
  text: string;
}

/** openrc files (etc/openrc-admin, etc/openrc-tenant-a, ...) for the admin and each demo user. */
export function writeOpenrc(l: StackLayout, c: StackCredentials): Openrc[] {
  const rc = (user: string, password: string, project: string) =>
    [
      `export OS_AUTH_URL=${keystoneUrlOf(l)}`,
      'export OS_IDENTITY_API_VERSION=3',
      `export OS_USERNAME=${user}`,
      `export OS_PASSWORD=${password}`,
      `export OS_PROJECT_NAME=${project}`,
      'export OS_USER_DOMAIN_NAME=Default',
      'export OS_PROJECT_DOMAIN_NAME=Default',
      `export OS_REGION_NAME=${REGION}`,
      'export OS_INTERFACE=public',
      '',
    ].join('\n');
  const out: Openrc[] = [{ who: 'admin', path: join(l.etc, 'openrc-admin'), text: rc('admin', c.adminPassword, 'admin') }];
  for (const t of TENANTS) out.push({ who: `${c.users[t].username} (${t})`, path: join(l.etc, `openrc-${t}`), text: rc(c.users[t].username, c.users[t].password, t) });
  for (const o of out) writeFileSync(o.path, o.text, { mode: 0o600 });
  return out;
}

/** The admin's token, for what the stack itself asks quantum-server (guests' ports, stop's listing). */
export function stackAdmin(l: StackLayout, c: StackCredentials): KeystoneAdmin {
  return new KeystoneAdmin(keystoneUrlOf(l), c.adminPassword, REGION);
}

/** The Keystone demo: each tenant acts with its user's token; the image is the admin's (public). */
export function keystoneAccess(l: StackLayout, c: StackCredentials, r: Registered, admin: KeystoneAdmin): DemoAccess {
  const sessions: KeystoneSession[] = [];
  return {
    closers: [async () => void (await Promise.all(sessions.map((s) => s.close())))],
    tenants: TENANTS.map((name) => {
      const s = admin.session(c.users[name].username, c.users[name].password, name);
      sessions.push(s);
      return { name, projectId: r.projects[name], quantum: new QuantumClient({ url: baseUrl(l, l.ports.quantum), auth: s }), nova: new ComputeClient(baseUrl(l, l.ports.compute), tokenIdentity(s)) };
    }),
    imageAdmin: tokenIdentity(admin.admin),
    imageUrl: baseUrl(l, l.ports.image),
  };
}
