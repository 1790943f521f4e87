// The demo the quick start builds: two tenants with the same 10.1.1.0/24 behind their own routers, a
// server at 10.1.1.2 in each, and an isolated --no-gateway network whose server learns its metadata
// route by DHCP, all booted from one public image in glance-api. Idempotent: everything is looked up by name
// before it is created. Each tenant's calls carry its own identity: X-Project-Id under noauth, the tenant user's
// token under Keystone (so Neutron's and Nova's policies apply as to any user).
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'undici';
import { ApiError } from '../common/errors.js';
import type { KeystoneSession } from '../common/keystone.js';
import { QuantumClient, type Network, type Subnet } from '../common/quantum-client.js';

export interface DemoServer {
  name: string;
  id: string;
  /** The tenant's name (tenant-a, tenant-b). */
  project: string;
  /** Its project id: the name under noauth, Keystone's id with Keystone. */
  projectId: string;
  networkId: string;
  /** Guest config: static address (router networks) or DHCP (isolated network). */
  mode: 'static' | 'dhcp';
  userData: string;
  keyName: string;
}

export interface DemoTopology {
  servers: DemoServer[];
  routers: Array<{ name: string; id: string; project: string }>;
  networks: Array<{ name: string; id: string; project: string; isolated: boolean }>;
}

export const TENANTS = ['tenant-a', 'tenant-b'] as const;
export type TenantName = (typeof TENANTS)[number];
/** The image the demo servers boot from: public in glance-api, a few bytes of data (Nova records it as ami-id). */
export const DEMO_IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6';
export const DEMO_IMAGE_NAME = 'demo-image';

/** Headers that say who is calling: a project (noauth) or a token. */
export type Identity = () => Promise<Record<string, string>>;

export const noauthIdentity = (project: string): Identity => async () => ({ 'x-project-id': project });
export const tokenIdentity = (s: KeystoneSession): Identity => async () => ({ 'x-auth-token': await s.token() });

/** One tenant as the demo acts for it. */
export interface TenantAccess {
  name: TenantName;
  projectId: string;
  quantum: QuantumClient;
  nova: ComputeClient;
}

export interface DemoAccess {
  tenants: TenantAccess[];
  /** Who creates the public image (glance's admin: publicize_image). */
  imageAdmin: Identity;
  imageUrl: string;
  /** What else to close with the clients (the tenants' Keystone sessions). */
  closers?: Array<() => Promise<void>>;
}

/** OpenSSH public key line for a fresh ed25519 key (the private half is not needed by the demo). */
function sshPublicKey(comment: string): string {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  const blob = Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]);
  return `ssh-ed25519 ${blob.toString('base64')} ${comment}`;
}

async function call<T>(url: string, method: string, who: Identity, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: T | undefined }> {
  const res = await request(url, {
    method: method as 'GET',
    headers: { ...(await who()), 'content-type': contentType, accept: 'application/json' },
    body: body === undefined ? undefined : Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode >= 400 && res.statusCode !== 404) throw new ApiError(res.statusCode, 'DemoError', `${method} ${url}: ${text}`);
  // A 404 is an answer here (the image is not there yet); its body is glance's plain-text page.
  return { status: res.statusCode, body: text && res.statusCode < 400 ? (JSON.parse(text) as T) : undefined };
}

/** Minimal compute API calls the demo needs (the nova CLI is the operator's tool; this is the script's). */
export class ComputeClient {
  constructor(
    private readonly url: string,
    private readonly who: Identity,
  ) {}
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await call<T>(`${this.url}/v2.1${path}`, method, this.who, body);
    if (r.status === 404) throw new ApiError(404, 'ComputeError', `${method} ${path}: not found`);
    return r.body as T;
  }
}

/** The demo image: created public with its fixed id, its data uploaded (Nova boots only active images). */
async function ensureImage(a: DemoAccess): Promise<void> {
  const url = `${a.imageUrl}/v2/images`;
  const found = await call<{ status: string }>(`${url}/${DEMO_IMAGE}`, 'GET', a.imageAdmin);
  if (found.status === 404) {
    await call(url, 'POST', a.imageAdmin, { id: DEMO_IMAGE, name: DEMO_IMAGE_NAME, visibility: 'public', disk_format: 'raw', container_format: 'bare' });
  }
  if (found.body?.status !== 'active') await call(`${url}/${DEMO_IMAGE}/file`, 'PUT', a.imageAdmin, Buffer.alloc(4096), 'application/octet-stream');
}

async function ensureNetwork(t: TenantAccess, name: string, cidr: string, gateway: string | null, pool?: { start: string; end: string }): Promise<{ net: Network; subnet: Subnet }> {
  const q = t.quantum;
  let net = (await q.listNetworks({ name, tenant_id: t.projectId }))[0];
  if (!net) net = await q.createNetwork({ name, admin_state_up: true });
  let subnet = (await q.listSubnets({ network_id: net.id }))[0];
  if (!subnet) subnet = await q.createSubnet({ network_id: net.id, name: `${name}-subnet`, cidr, ip_version: 4, gateway_ip: gateway, enable_dhcp: true, ...(pool ? { allocation_pools: [pool] } : {}) });
  return { net, subnet };
}

async function ensureRouter(t: TenantAccess, name: string, subnet: Subnet): Promise<string> {
  const q = t.quantum;
  let router = (await q.listRouters({ name, tenant_id: t.projectId }))[0];
  if (!router) router = await q.createRouter({ name, admin_state_up: true });
  const attached = await q.listPorts({ device_id: router.id, network_id: subnet.network_id });
  if (attached.length === 0) await q.addRouterInterface(router.id, { subnet_id: subnet.id });
  return router.id;
}

interface ServerBody {
  server: { id: string; name: string; status: string };
}

async function ensureServer(t: TenantAccess, name: string, networkId: string, fixedIp: string | undefined, keyName: string, userData: string): Promise<string> {
  const nova = t.nova;
  const list = await nova.call<{ servers: Array<{ id: string; name: string }> }>('GET', '/servers');
  const found = list.servers.find((s) => s.name === name);
  if (found) return found.id;
  const keys = await nova.call<{ keypairs: Array<{ keypair: { name: string } }> }>('GET', '/os-keypairs');
  if (!keys.keypairs.some((k) => k.keypair.name === keyName)) {
    await nova.call('POST', '/os-keypairs', { keypair: { name: keyName, public_key: sshPublicKey(`${keyName}@demo`) } });
  }
  const created = await nova.call<ServerBody>('POST', '/servers', {
    server: {
      name,
      flavorRef: '1',
      imageRef: DEMO_IMAGE,
      key_name: keyName,
      user_data: Buffer.from(userData).toString('base64'),
      metadata: { tenant: t.name, demo: 'true' },
      networks: [fixedIp ? { uuid: networkId, fixed_ip: fixedIp } : { uuid: networkId }],
    },
  });
  return created.server.id;
}

export async function buildDemo(a: DemoAccess): Promise<DemoTopology> {
  const topo: DemoTopology = { servers: [], routers: [], networks: [] };
  await ensureImage(a);
  for (const t of a.tenants) {
    const short = t.name.slice(-1);
    // 10.1.1.2 stays out of the pool: the DHCP agent's port, made as soon as the subnet is, must not take the
    // address the demo server asks for (Neutron allows a fixed IP outside the pools).
    const { net, subnet } = await ensureNetwork(t, `net-${short}`, '10.1.1.0/24', '10.1.1.1', { start: '10.1.1.3', end: '10.1.1.254' });
    topo.networks.push({ name: net.name, id: net.id, project: t.name, isolated: false });
    const routerId = await ensureRouter(t, `router-${short}`, subnet);
    topo.routers.push({ name: `router-${short}`, id: routerId, project: t.name });
    const userData = `#!/bin/sh\necho "hello from ${t.name}"\n`;
    const name = `demo-${short}`;
    const id = await ensureServer(t, name, net.id, '10.1.1.2', `key-${short}`, userData);
    topo.servers.push({ name, id, project: t.name, projectId: t.projectId, networkId: net.id, mode: 'static', userData, keyName: `key-${short}` });
  }
  const ta = a.tenants.find((t) => t.name === 'tenant-a')!;
  const { net } = await ensureNetwork(ta, 'net-isolated', '172.17.17.0/24', null);
  topo.networks.push({ name: net.name, id: net.id, project: ta.name, isolated: true });
  const userData = '#cloud-config\nhostname: demo-iso\n';
  const id = await ensureServer(ta, 'demo-iso', net.id, undefined, 'key-a', userData);
  topo.servers.push({ name: 'demo-iso', id, project: ta.name, projectId: ta.projectId, networkId: net.id, mode: 'dhcp', userData, keyName: 'key-a' });
  return topo;
}

/** The noauth demo: each tenant is its name, sent as X-Project-Id. */
export function noauthAccess(quantumUrl: string, computeUrl: string, imageUrl: string): DemoAccess {
  return {
    tenants: TENANTS.map((name) => ({ name, projectId: name, quantum: new QuantumClient({ url: quantumUrl, projectId: name }), nova: new ComputeClient(computeUrl, noauthIdentity(name)) })),
    imageAdmin: noauthIdentity('admin'),
    imageUrl,
  };
}

export async function closeAccess(a: DemoAccess): Promise<void> {
  for (const t of a.tenants) await t.quantum.close();
  for (const c of a.closers ?? []) await c();
}
