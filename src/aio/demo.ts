// The demo the quick start builds: two tenants with the same 10.1.1.0/24 behind their own routers, a
// server at 10.1.1.2 in each, and an isolated --no-gateway network whose server learns its metadata
// route by DHCP. Idempotent: everything is looked up by name before it is created.
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'undici';
import { ApiError } from '../common/errors.js';
import { QuantumClient, type Network, type Subnet } from '../common/quantum-client.js';

export interface DemoServer {
  name: string;
  id: string;
  project: string;
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
/** The image id the demo servers boot from (there is no Glance here; Nova only records it, as ami-id). */
export const DEMO_IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6';

/** OpenSSH public key line for a fresh ed25519 key (the private half is not needed by the demo). */
function sshPublicKey(comment: string): string {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  const blob = Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]);
  return `ssh-ed25519 ${blob.toString('base64')} ${comment}`;
}

/** Minimal compute API calls the demo needs (the nova CLI is the operator's tool; this is the script's). */
export class ComputeClient {
  constructor(private readonly url: string) {}
  async call<T>(method: string, path: string, project: string, body?: unknown): Promise<T> {
    const res = await request(`${this.url}/v2.1${path}`, {
      method: method as 'GET',
      headers: { 'x-project-id': project, 'content-type': 'application/json', accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.body.text();
    if (res.statusCode >= 400) throw new ApiError(res.statusCode, 'ComputeError', `${method} ${path}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }
}

async function ensureNetwork(q: QuantumClient, project: string, name: string, cidr: string, gateway: string | null): Promise<{ net: Network; subnet: Subnet }> {
  let net = (await q.listNetworks({ name, tenant_id: project }))[0];
  if (!net) net = await q.createNetwork({ name, admin_state_up: true }, project);
  let subnet = (await q.listSubnets({ network_id: net.id }))[0];
  if (!subnet) subnet = await q.createSubnet({ network_id: net.id, name: `${name}-subnet`, cidr, ip_version: 4, gateway_ip: gateway, enable_dhcp: true }, project);
  return { net, subnet };
}

async function ensureRouter(q: QuantumClient, project: string, name: string, subnet: Subnet): Promise<string> {
  let router = (await q.listRouters({ name, tenant_id: project }))[0];
  if (!router) router = await q.createRouter({ name, admin_state_up: true }, project);
  const attached = await q.listPorts({ device_id: router.id, network_id: subnet.network_id });
  if (attached.length === 0) await q.addRouterInterface(router.id, { subnet_id: subnet.id });
  return router.id;
}

interface ServerBody {
  server: { id: string; name: string; status: string };
}

async function ensureServer(
  nova: ComputeClient,
  project: string,
  name: string,
  networkId: string,
  fixedIp: string | undefined,
  keyName: string,
  userData: string,
): Promise<string> {
  const list = await nova.call<{ servers: Array<{ id: string; name: string }> }>('GET', '/servers', project);
  const found = list.servers.find((s) => s.name === name);
  if (found) return found.id;
  const keys = await nova.call<{ keypairs: Array<{ keypair: { name: string } }> }>('GET', '/os-keypairs', project);
  if (!keys.keypairs.some((k) => k.keypair.name === keyName)) {
    await nova.call('POST', '/os-keypairs', project, { keypair: { name: keyName, public_key: sshPublicKey(`${keyName}@demo`) } });
  }
  const created = await nova.call<ServerBody>('POST', '/servers', project, {
    server: {
      name,
      flavorRef: '1',
      imageRef: DEMO_IMAGE,
      key_name: keyName,
      user_data: Buffer.from(userData).toString('base64'),
      metadata: { tenant: project, demo: 'true' },
      networks: [fixedIp ? { uuid: networkId, fixed_ip: fixedIp } : { uuid: networkId }],
    },
  });
  return created.server.id;
}

export async function buildDemo(quantumUrl: string, computeUrl: string): Promise<DemoTopology> {
  const q = new QuantumClient({ url: quantumUrl });
  const nova = new ComputeClient(computeUrl);
  const topo: DemoTopology = { servers: [], routers: [], networks: [] };
  try {
    for (const t of TENANTS) {
      const short = t.slice(-1);
      const { net, subnet } = await ensureNetwork(q, t, `net-${short}`, '10.1.1.0/24', '10.1.1.1');
      topo.networks.push({ name: net.name, id: net.id, project: t, isolated: false });
      const routerId = await ensureRouter(q, t, `router-${short}`, subnet);
      topo.routers.push({ name: `router-${short}`, id: routerId, project: t });
      const userData = `#!/bin/sh\necho "hello from ${t}"\n`;
      const name = `demo-${short}`;
      const id = await ensureServer(nova, t, name, net.id, '10.1.1.2', `key-${short}`, userData);
      topo.servers.push({ name, id, project: t, networkId: net.id, mode: 'static', userData, keyName: `key-${short}` });
    }
    const { net } = await ensureNetwork(q, 'tenant-a', 'net-isolated', '172.17.17.0/24', null);
    topo.networks.push({ name: net.name, id: net.id, project: 'tenant-a', isolated: true });
    const userData = '#cloud-config\nhostname: demo-iso\n';
    const id = await ensureServer(nova, 'tenant-a', 'demo-iso', net.id, undefined, 'key-a', userData);
    topo.servers.push({ name: 'demo-iso', id, project: 'tenant-a', networkId: net.id, mode: 'dhcp', userData, keyName: 'key-a' });
    return topo;
  } finally {
    await q.close();
  }
}
