// auth_strategy = keystone against a real Keystone (Debian's python3-keystone): quantum-server, nova-api's
// compute API and glance-api check tokens with Keystone v3; two projects and an admin see each other's
// resources never, theirs always, everything respectively; the port-with-a-victim's-device_id attack is refused;
// expired and revoked tokens are refused; Keystone down is a 503; the services renew their own tokens.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { keystoneAuthFrom, type KeystoneAuth } from '../src/common/auth.js';
import { loadConfig } from '../src/common/config.js';
import type { KeystoneSession } from '../src/common/keystone.js';
import { silentLogger } from '../src/common/log.js';
import { startGlance, type RunningGlance } from '../src/glance-api/app.js';
import { startNova, type NovaApp } from '../src/nova-api/app.js';
import { novaSpec } from '../src/nova-api/opts.js';
import { startQuantumServer, type RunningQuantumServer } from '../src/quantum-server/app.js';
import { sqliteDb, type TestDb } from './helpers/db.js';
import { keystoneSkip, startKeystone, USER_PASSWORD, type TestKeystone } from './helpers/keystone.js';
import { sleep } from './helpers/proc.js';

const skip = keystoneSkip();
// Short-lived tokens: the services renew theirs at half-life, and the expiry test waits one lifetime.
const TOKEN_LIFETIME = 16;
const CACHE_TIME = 2;

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function call(url: string, method: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}): Promise<Res> {
  const r = await request(url, {
    method: method as 'GET',
    headers: { accept: 'application/json', ...(token ? { 'x-auth-token': token } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.body.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: r.statusCode, headers: r.headers, text, body: parsed };
}

describe('keystone auth, policy and isolation', { skip }, () => {
  let k: TestKeystone;
  let qdb: TestDb;
  let q: RunningQuantumServer;
  let qAuth: KeystoneAuth;
  let glance: RunningGlance;
  let nova: NovaApp;
  let dir: string;
  let qurl: string;
  let curl: string;
  let gurl: string;
  type Who = 'alice' | 'bob' | 'admin';
  // Tokens live TOKEN_LIFETIME seconds: every call asks the user's session, which renews them.
  const who: Partial<Record<Who, KeystoneSession>> = {};
  const sessions: KeystoneSession[] = [];
  const tokenOf = (w: Who) => who[w]!.token();
  const net = async (w: Who, method: string, path: string, body?: unknown) => call(`${qurl}${path}`, method, await tokenOf(w), body);
  const compute = async (w: Who, method: string, path: string, body?: unknown) => call(`${curl}/v2.1${path}`, method, await tokenOf(w), body);
  const images = async (w: Who, method: string, path: string, body?: unknown, headers?: Record<string, string>) => call(`${gurl}${path}`, method, await tokenOf(w), body, headers);
  const userSession = (user: string, project: string) => {
    const s = k.ks.session(user, USER_PASSWORD, project);
    sessions.push(s);
    return s;
  };

  before(async () => {
    k = await startKeystone({ tokenExpiration: TOKEN_LIFETIME });
    dir = mkdtempSync(join(tmpdir(), 'qm-ks-auth-'));
    const authtoken = (user: string) => {
      const conf: Record<string, string> = {};
      for (const line of k.authtoken(user, CACHE_TIME).trim().split('\n')) {
        const [a, b] = line.split(' = ');
        conf[a!] = b!;
      }
      return keystoneAuthFrom(
        { www_authenticate_uri: conf.www_authenticate_uri, auth_url: conf.auth_url, auth_type: 'password', username: user, password: conf.password, project_name: 'service', user_domain_name: 'Default', project_domain_name: 'Default', region_name: conf.region_name, token_cache_time: CACHE_TIME },
        silentLogger,
      );
    };
    qdb = await sqliteDb();
    qAuth = authtoken('quantum');
    q = await startQuantumServer({ connection: qdb.url, host: '127.0.0.1', port: 0, log: silentLogger, authStrategy: 'keystone', keystone: qAuth });
    qurl = q.url;
    glance = await startGlance({ connection: `sqlite:///${join(dir, 'glance.sqlite')}`, host: '127.0.0.1', port: 0, dataDir: join(dir, 'images'), authStrategy: 'keystone', keystone: authtoken('glance'), log: silentLogger });
    gurl = glance.url;
    await k.ks.service('network', 'quantum', qurl);
    await k.ks.service('image', 'glance', gurl);
    const novaConf = join(dir, 'nova.conf');
    writeFileSync(
      novaConf,
      `[DEFAULT]\nstate_path = ${dir}\nenabled_apis = osapi_compute\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = 0\n[api]\nauth_strategy = keystone\n` +
        `[keystone_authtoken]\n${k.authtoken('nova', CACHE_TIME)}` +
        `[neutron]\nurl = ${qurl}\nauth_type = password\nauth_url = ${k.ks.url}\nusername = nova\npassword = service-secret\nproject_name = service\nregion_name = ${k.ks.region}\n`,
    );
    const { conf } = loadConfig(novaSpec, ['--config-file', novaConf], { prog: 'nova-api', description: '' });
    nova = await startNova(conf, silentLogger);
    curl = `http://127.0.0.1:${nova.compute!.port}`;
    who.alice = userSession('alice', 'project-a');
    who.bob = userSession('bob', 'project-b');
    who.admin = k.ks.admin;
  });

  after(async () => {
    for (const s of sessions) await s.close();
    await nova?.close();
    await glance?.close();
    await q?.close();
    await qdb?.drop();
    await k?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('no token or a bad one: 401 with WWW-Authenticate on every API; the version documents stay open', async () => {
    for (const url of [`${qurl}/v2.0/networks`, `${curl}/v2.1/servers`, `${gurl}/v2/images`]) {
      for (const t of [undefined, 'not-a-token']) {
        const r = await call(url, 'GET', t);
        assert.equal(r.status, 401, url);
        assert.equal(r.headers['www-authenticate'], `Keystone uri="${k.ks.url}"`);
        assert.deepEqual(r.body, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
      }
    }
    assert.equal((await call(`${qurl}/`, 'GET', undefined)).status, 200);
    assert.equal((await call(`${curl}/`, 'GET', undefined)).status, 200);
    assert.equal((await call(`${curl}/v2.1`, 'GET', undefined)).status, 200);
    assert.equal((await call(`${gurl}/`, 'GET', undefined)).status, 300);
  });

  test('networks, subnets, ports and routers: each project sees its own, never the other; admin sees both', async () => {
    const made: Record<string, Record<string, string>> = {};
    for (const who of ['alice', 'bob'] as const) {
      const n = (await net(who, 'POST', '/v2.0/networks', { network: { name: `net-${who}` } })).body.network;
      assert.equal(n.tenant_id, who === 'alice' ? k.projects.a : k.projects.b, 'the project comes from the token');
      const s = (await net(who, 'POST', '/v2.0/subnets', { subnet: { network_id: n.id, cidr: '10.9.0.0/24' } })).body.subnet;
      const p = (await net(who, 'POST', '/v2.0/ports', { port: { network_id: n.id } })).body.port;
      const r = (await net(who, 'POST', '/v2.0/routers', { router: { name: `r-${who}` } })).body.router;
      assert.equal((await net(who, 'PUT', `/v2.0/routers/${r.id}/add_router_interface`, { subnet_id: s.id })).status, 200);
      made[who] = { networks: n.id, subnets: s.id, ports: p.id, routers: r.id };
    }
    const faultOf: Record<string, string> = { networks: 'NetworkNotFound', subnets: 'SubnetNotFound', ports: 'PortNotFound', routers: 'RouterNotFound' };
    for (const [me, other] of [['alice', 'bob'], ['bob', 'alice']] as const) {
      for (const coll of ['networks', 'subnets', 'ports', 'routers']) {
        const mine = made[me]![coll]!;
        const theirs = made[other]![coll]!;
        const ids = ((await net(me, 'GET', `/v2.0/${coll}`)).body[coll] as Array<{ id: string }>).map((x) => x.id);
        assert.ok(ids.includes(mine), `${me} lists its ${coll}`);
        assert.ok(!ids.includes(theirs), `${me} does not list ${other}'s ${coll}`);
        assert.equal((await net(me, 'GET', `/v2.0/${coll}?tenant_id=${other === 'alice' ? k.projects.a : k.projects.b}`)).body[coll].length, 0);
        const show = await net(me, 'GET', `/v2.0/${coll}/${theirs}`);
        assert.equal(show.status, 404, `${me} GET ${other}'s ${coll}`);
        assert.equal(show.body.NeutronError.type, faultOf[coll]);
        const singular = coll.slice(0, -1);
        assert.equal((await net(me, 'PUT', `/v2.0/${coll}/${theirs}`, { [singular]: { name: 'x' } })).status, 404);
        assert.equal((await net(me, 'DELETE', `/v2.0/${coll}/${theirs}`)).status, 404);
        assert.equal((await net(me, 'GET', `/v2.0/${coll}/${mine}`)).status, 200);
      }
      // Someone else's subnet or router in a router call is not found either.
      assert.equal((await net(me, 'PUT', `/v2.0/routers/${made[me]!.routers}/add_router_interface`, { subnet_id: made[other]!.subnets })).status, 404);
      assert.equal((await net(me, 'PUT', `/v2.0/routers/${made[other]!.routers}/remove_router_interface`, { subnet_id: made[other]!.subnets })).status, 404);
    }
    for (const coll of ['networks', 'subnets', 'ports', 'routers']) {
      const ids = ((await net('admin', 'GET', `/v2.0/${coll}`)).body[coll] as Array<{ id: string }>).map((x) => x.id);
      assert.ok(ids.includes(made.alice![coll]!) && ids.includes(made.bob![coll]!), `admin lists every project's ${coll}`);
    }
    // Nobody acts for another project but an admin.
    const other = await net('alice', 'POST', '/v2.0/networks', { network: { name: 'x', tenant_id: k.projects.b } });
    assert.equal(other.status, 400);
    assert.equal(other.body.NeutronError.message, "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges");
    const forB = await net('admin', 'POST', '/v2.0/networks', { network: { name: 'for-b', tenant_id: k.projects.b } });
    assert.equal(forB.body.network.tenant_id, k.projects.b);
    assert.equal((await net('bob', 'GET', `/v2.0/networks/${forB.body.network.id}`)).status, 200);
  });

  test('shared networks: visible to all, ports on them for all, subnets and changes only for the owner', async () => {
    const denied = await net('alice', 'POST', '/v2.0/networks', { network: { name: 'sh', shared: true } });
    assert.equal(denied.status, 403);
    assert.equal(denied.body.NeutronError.type, 'PolicyNotAuthorized');
    const shared = (await net('admin', 'POST', '/v2.0/networks', { network: { name: 'public-net', shared: true } })).body.network;
    const sub = (await net('admin', 'POST', '/v2.0/subnets', { subnet: { network_id: shared.id, cidr: '192.168.77.0/24' } })).body.subnet;
    for (const who of ['alice', 'bob'] as const) {
      assert.ok(((await net(who, 'GET', '/v2.0/networks')).body.networks as Array<{ id: string }>).some((n) => n.id === shared.id));
      assert.equal((await net(who, 'GET', `/v2.0/subnets/${sub.id}`)).status, 200);
      const p = await net(who, 'POST', '/v2.0/ports', { port: { network_id: shared.id } });
      assert.equal(p.status, 201);
      assert.equal((await net(who, 'POST', '/v2.0/subnets', { subnet: { network_id: shared.id, cidr: '192.168.78.0/24' } })).status, 403);
      assert.equal((await net(who, 'PUT', `/v2.0/networks/${shared.id}`, { network: { name: 'mine' } })).status, 403);
      assert.equal((await net(who, 'DELETE', `/v2.0/networks/${shared.id}`)).status, 403);
    }
    // Each sees its own port on the shared network, not the other's.
    const alicePorts = (await net('alice', 'GET', `/v2.0/ports?network_id=${shared.id}`)).body.ports as Array<{ tenant_id: string }>;
    assert.ok(alicePorts.length >= 1 && alicePorts.every((p) => p.tenant_id === k.projects.a));
  });

  test('agents, the scheduler API and the agents\' RPC are the admin\'s', async () => {
    const report = { agent: { binary: 'quantum-l3-agent', host: 'ks-host', agent_type: 'L3 agent', topic: 'l3_agent', configurations: {} } };
    const a = await net('admin', 'POST', '/v2.0/agents', report);
    assert.equal(a.status, 201);
    assert.deepEqual((await net('alice', 'GET', '/v2.0/agents')).body, { agents: [] });
    assert.equal((await net('alice', 'GET', `/v2.0/agents/${a.body.agent.id}`)).status, 404);
    for (const [m, p, b] of [['POST', '/v2.0/agents', report], ['PUT', `/v2.0/agents/${a.body.agent.id}`, { agent: { admin_state_up: false } }], ['DELETE', `/v2.0/agents/${a.body.agent.id}`, undefined], ['GET', `/v2.0/agents/${a.body.agent.id}/l3-routers`, undefined], ['POST', '/v2.0/rpc/q-l3-plugin/sync_routers', { host: 'ks-host' }]] as const) {
      const r = await net('alice', m, p, b);
      assert.equal(r.status, 403, `${m} ${p}`);
      assert.equal(r.body.NeutronError.type, 'PolicyNotAuthorized');
    }
    assert.equal((await net('admin', 'POST', '/v2.0/rpc/q-l3-plugin/sync_routers', { host: 'ks-host' })).status, 200);
    assert.equal((await net('admin', 'GET', '/v2.0/agents')).body.agents.length, 1);
  });

  test("the attack: a port carrying a victim's device_id (server or router) is refused", async () => {
    const victim = await net('alice', 'POST', '/v2.0/networks', { network: { name: 'victim-net' } });
    await net('alice', 'POST', '/v2.0/subnets', { subnet: { network_id: victim.body.network.id, cidr: '10.66.0.0/24' } });
    const server = 'a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d';
    assert.equal((await net('alice', 'POST', '/v2.0/ports', { port: { network_id: victim.body.network.id, device_id: server, device_owner: 'compute:nova' } })).status, 201);
    const evilNet = (await net('bob', 'POST', '/v2.0/networks', { network: { name: 'evil-net' } })).body.network;
    await net('bob', 'POST', '/v2.0/subnets', { subnet: { network_id: evilNet.id, cidr: '10.66.0.0/24' } });
    const attack = await net('bob', 'POST', '/v2.0/ports', { port: { network_id: evilNet.id, device_id: server, device_owner: 'compute:nova', tenant_id: k.projects.b } });
    assert.equal(attack.status, 409);
    assert.equal(attack.body.NeutronError.type, 'DeviceIDNotOwnedByTenant');
    assert.equal((await net('bob', 'POST', '/v2.0/ports', { port: { network_id: evilNet.id, device_id: server, tenant_id: k.projects.a } })).status, 400);
    // Nor by renaming the device of a port of one's own, nor with a victim's router.
    const own = (await net('bob', 'POST', '/v2.0/ports', { port: { network_id: evilNet.id } })).body.port;
    assert.equal((await net('bob', 'PUT', `/v2.0/ports/${own.id}`, { port: { device_id: server } })).status, 409);
    const router = (await net('alice', 'POST', '/v2.0/routers', { router: { name: 'victim-r' } })).body.router;
    assert.equal((await net('bob', 'POST', '/v2.0/ports', { port: { network_id: evilNet.id, device_id: router.id, device_owner: 'network:router_interface' } })).status, 409);
    // The owner may.
    assert.equal((await net('alice', 'POST', '/v2.0/ports', { port: { network_id: victim.body.network.id, device_id: server, device_owner: 'compute:nova' } })).status, 201);
  });

  test('glance: images per project, public ones for all, publicizing for admins only', async () => {
    const mk = async (w: Who, name: string, extra: Record<string, unknown> = {}) => {
      const r = await images(w, 'POST', '/v2/images', { name, disk_format: 'raw', container_format: 'bare', ...extra });
      assert.equal(r.status, 201, r.text);
      const put = await request(`${gurl}/v2/images/${r.body.id}/file`, { method: 'PUT', headers: { 'x-auth-token': await tokenOf(w), 'content-type': 'application/octet-stream' }, body: Buffer.from(`disk of ${name}`) });
      await put.body.dump();
      assert.equal(put.statusCode, 204);
      return r.body.id as string;
    };
    const aImg = await mk('alice', 'img-a');
    const bImg = await mk('bob', 'img-b');
    assert.equal((await images('alice', 'POST', '/v2/images', { name: 'pub', visibility: 'public' })).status, 403);
    const pub = await mk('admin', 'img-public', { visibility: 'public' });
    const list = async (w: Who) => ((await images(w, 'GET', '/v2/images')).body.images as Array<{ id: string }>).map((i) => i.id);
    assert.deepEqual((await list('alice')).sort(), [aImg, pub].sort());
    assert.deepEqual((await list('bob')).sort(), [bImg, pub].sort());
    assert.ok((await list('admin')).includes(aImg) && (await list('admin')).includes(bImg));
    assert.equal((await images('bob', 'GET', `/v2/images/${aImg}`)).status, 404);
    assert.match((await images('bob', 'GET', `/v2/images/${aImg}`)).text, /No image found with ID/);
    assert.equal((await images('bob', 'DELETE', `/v2/images/${aImg}`)).status, 404);
    assert.equal((await images('bob', 'DELETE', `/v2/images/${pub}`)).status, 403);
    const patched = await images('alice', 'PATCH', `/v2/images/${aImg}`, [{ op: 'replace', path: '/name', value: 'img-a2' }, { op: 'add', path: '/hw_disk_bus', value: 'virtio' }], { 'content-type': 'application/openstack-images-v2.1-json-patch' });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.body.name, 'img-a2');
    assert.equal(patched.body.hw_disk_bus, 'virtio');
    assert.equal((await images('alice', 'GET', `/v2/images/${aImg}`)).body.status, 'active');
  });

  test('nova: servers per project (through Glance and quantum as the caller), keypairs per user, flavors managed by admins', async () => {
    const img = (await images('alice', 'GET', '/v2/images?name=img-a2')).body.images[0].id as string;
    const aNet = ((await net('alice', 'GET', '/v2.0/networks?name=net-alice')).body.networks[0]).id as string;
    const kp = await compute('alice', 'POST', '/os-keypairs', { keypair: { name: 'k-a' } });
    assert.equal(kp.status, 200);
    assert.equal(kp.body.keypair.user_id, k.users.alice);
    assert.deepEqual((await compute('bob', 'GET', '/os-keypairs')).body, { keypairs: [] });
    assert.equal((await compute('bob', 'GET', '/os-keypairs/k-a')).status, 404);
    const create = await compute('alice', 'POST', '/servers', { server: { name: 'vm-a', flavorRef: '1', imageRef: img, key_name: 'k-a', networks: [{ uuid: aNet }] } });
    assert.equal(create.status, 202, create.text);
    const id = create.body.server.id as string;
    const port = (await net('admin', 'GET', `/v2.0/ports?device_id=${id}`)).body.ports[0];
    assert.equal(port.tenant_id, k.projects.a);
    // Bob may not use Alice's image, network or keypair, nor see her server.
    const bNet = ((await net('bob', 'GET', '/v2.0/networks?name=net-bob')).body.networks[0]).id as string;
    const noImage = await compute('bob', 'POST', '/servers', { server: { name: 'vm-b', flavorRef: '1', imageRef: img, networks: [{ uuid: bNet }] } });
    assert.deepEqual(noImage.body, { badRequest: { code: 400, message: 'Can not find requested image' } });
    assert.equal((await compute('bob', 'POST', '/servers', { server: { name: 'vm-b', flavorRef: '1', imageRef: img.replace(/.$/, '0'), networks: [{ uuid: aNet }] } })).status, 400);
    const bImg = (await images('bob', 'GET', '/v2/images?name=img-b')).body.images[0].id as string;
    const noNet = await compute('bob', 'POST', '/servers', { server: { name: 'vm-b', flavorRef: '1', imageRef: bImg, networks: [{ uuid: aNet }] } });
    assert.equal(noNet.status, 400, noNet.text);
    assert.equal((await compute('bob', 'POST', '/servers', { server: { name: 'vm-b', flavorRef: '1', imageRef: bImg, key_name: 'k-a', networks: [{ uuid: bNet }] } })).body.badRequest.message, 'Invalid key_name provided.');
    assert.deepEqual((await compute('bob', 'GET', `/servers/${id}`)).body, { itemNotFound: { code: 404, message: `Instance ${id} could not be found.` } });
    assert.equal((await compute('bob', 'GET', '/servers/detail')).body.servers.length, 0);
    assert.equal((await compute('bob', 'DELETE', `/servers/${id}`)).status, 404);
    assert.equal((await compute('bob', 'GET', `/servers/${id}/metadata`)).status, 404);
    assert.equal((await compute('bob', 'GET', `/servers/${id}/os-server-password`)).status, 404);
    assert.equal((await compute('bob', 'GET', `/images/${img}`)).status, 404);
    assert.equal((await compute('alice', 'GET', `/images/${img}`)).body.image.id, img);
    // Legacy URLs must name the token's project.
    assert.equal((await call(`${curl}/v2.1/${k.projects.b}/servers`, 'GET', await tokenOf('alice'))).status, 400);
    assert.equal((await call(`${curl}/v2.1/${k.projects.a}/servers`, 'GET', await tokenOf('alice'))).body.servers.length, 1);
    // The admin sees it by id and with all_tenants.
    assert.equal((await compute('admin', 'GET', `/servers/${id}`)).status, 200);
    assert.equal((await compute('admin', 'GET', '/servers')).body.servers.length, 0);
    assert.equal((await compute('admin', 'GET', '/servers?all_tenants=1')).body.servers.length, 1);
    const bobServer = await compute('bob', 'POST', '/servers', { server: { name: 'vm-b', flavorRef: '1', imageRef: bImg, networks: [{ uuid: bNet }] } });
    assert.equal(bobServer.status, 202, bobServer.text);
    assert.deepEqual(((await compute('alice', 'GET', '/servers')).body.servers as Array<{ id: string }>).map((s) => s.id), [id]);
    assert.equal((await compute('alice', 'GET', `/servers/${bobServer.body.server.id}`)).status, 404);
    // Renaming (server set) by the owner.
    assert.equal((await compute('alice', 'PUT', `/servers/${id}`, { server: { name: 'vm-a2' } })).body.server.name, 'vm-a2');
    assert.equal((await compute('bob', 'PUT', `/servers/${id}`, { server: { name: 'stolen' } })).status, 404);
    // Flavors: listed by all, managed by admins.
    assert.ok((await compute('bob', 'GET', '/flavors/detail')).body.flavors.length >= 5);
    assert.deepEqual((await compute('alice', 'POST', '/flavors', { flavor: { name: 'm1.x', ram: 64, vcpus: 1, disk: 0, id: '77' } })).body, { forbidden: { code: 403, message: "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed." } });
    assert.equal((await compute('admin', 'POST', '/flavors', { flavor: { name: 'm1.x', ram: 64, vcpus: 1, disk: 0, id: '77' } })).status, 200);
    assert.equal((await compute('alice', 'DELETE', '/flavors/77')).status, 403);
    assert.equal((await compute('alice', 'DELETE', `/servers/${id}`)).status, 204);
    assert.equal((await net('admin', 'GET', `/v2.0/ports?device_id=${id}`)).body.ports.length, 0);
  });

  test('validations are cached for token_cache_time; a revoked token is refused once that passes', async () => {
    const t = await userSession('alice', 'project-a').token();
    const before = qAuth.validator.validations;
    for (let i = 0; i < 20; i++) assert.equal((await call(`${qurl}/v2.0/networks`, 'GET', t)).status, 200);
    assert.equal(qAuth.validator.validations - before, 1, 'one validation for twenty requests');
    await k.ks.revoke(t);
    await sleep(CACHE_TIME * 1000 + 300);
    const r = await call(`${qurl}/v2.0/networks`, 'GET', t);
    assert.equal(r.status, 401);
    assert.equal((await call(`${curl}/v2.1/servers`, 'GET', t)).status, 401);
    assert.equal((await call(`${gurl}/v2/images`, 'GET', t)).status, 401);
  });

  test('a service whose own token is revoked authenticates again (nova → quantum-server)', async () => {
    const svc = nova.neutronSession!;
    const before = svc.issued;
    await k.ks.revoke(await svc.token());
    await sleep(CACHE_TIME * 1000 + 300);
    const img = (await images('bob', 'GET', '/v2/images?name=img-b')).body.images[0].id as string;
    const bNet = ((await net('bob', 'GET', '/v2.0/networks?name=net-bob')).body.networks[0]).id as string;
    const r = await compute('bob', 'POST', '/servers', { server: { name: 'vm-b2', flavorRef: '1', imageRef: img, networks: [{ uuid: bNet }] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(svc.issued > before, 'nova fetched a new token after the 401');
  });

  test('Keystone down: a token not yet validated gets 503, never through', async () => {
    const fresh = await userSession('bob', 'project-b').token();
    await k.ks.pause();
    try {
      for (const url of [`${qurl}/v2.0/networks`, `${curl}/v2.1/servers`, `${gurl}/v2/images`]) {
        const r = await call(url, 'GET', fresh);
        assert.equal(r.status, 503, url);
        assert.deepEqual(r.body, { error: { code: 503, title: 'Service Unavailable', message: 'The Keystone service is temporarily unavailable.' } });
      }
    } finally {
      await k.ks.resume();
    }
    assert.equal((await call(`${qurl}/v2.0/networks`, 'GET', fresh)).status, 200);
  });

  test('an expired token is refused, also from the cache', async () => {
    const info = await userSession('alice', 'project-a').auth();
    assert.equal((await call(`${qurl}/v2.0/networks`, 'GET', info.token)).status, 200);
    await sleep(Math.max(0, info.expiresAt - Date.now()) + 500);
    assert.equal((await call(`${qurl}/v2.0/networks`, 'GET', info.token)).status, 401);
    assert.equal((await call(`${curl}/v2.1/servers`, 'GET', info.token)).status, 401);
    // The services' own tokens expired meanwhile too: they renewed them, so a fresh user token works end to end.
    const r = await compute('alice', 'GET', '/servers/detail');
    assert.equal(r.status, 200);
  });
});
