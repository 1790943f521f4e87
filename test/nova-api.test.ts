// nova-api as a process against a real quantum-server: the compute API subset (servers through real
// ports, flavors, keypairs, metadata, passwords) and the metadata API's remote-address mode.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { closeServer, listen } from '../src/common/http.js';
import { silentLogger } from '../src/common/log.js';
import { MetadataHandler, type HandlerOptions } from '../src/nova-metadata/handler.js';
import { DbMetadataStore } from '../src/nova-metadata/store.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Network, QuantumClient, Subnet } from '../src/common/quantum-client.js';
import { openDatabase, type Db } from '../src/db/connection.js';
import type { NovaDatabase } from '../src/db/nova-schema.js';
import type { NetworkInfo } from '../src/nova-metadata/model.js';
import { backends, type TestDb } from './helpers/db.js';
import { SSH_KEY, spawnNovaApi, spawnQuantumServer } from './helpers/nova-fixtures.js';

interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

function http(url: string, o: { method?: string; headers?: Record<string, string>; body?: unknown; localAddress?: string } = {}): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const payload = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
    const headers: Record<string, string> = { connection: 'close', ...(o.headers ?? {}) };
    if (payload !== undefined) {
      headers['content-length'] = String(Buffer.byteLength(payload));
      headers['content-type'] ??= 'application/json';
    }
    const req = request(url, { method: o.method ?? 'GET', headers, agent: false, ...(o.localAddress ? { localAddress: o.localAddress } : {}) }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: b, json: () => JSON.parse(b) }));
    });
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

const PROJECT = 'proj-nova-test';
const IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6';

for (const mk of backends()) {
  describe(`nova-api with quantum-server (${mk.name})`, () => {
    let dir: string;
    let tdb: TestDb;
    let q: Awaited<ReturnType<typeof spawnQuantumServer>>;
    let nova: Awaited<ReturnType<typeof spawnNovaApi>>;
    let db: Db<NovaDatabase>;
    let qc: QuantumClient;
    let net: Network;
    let subnet: Subnet;
    let lo: Network;
    let dhcpIp: string;

    const api = (path: string, o: { method?: string; body?: unknown; project?: string } = {}) =>
      http(`${nova.compute}/v2.1${path}`, { method: o.method ?? 'GET', body: o.body, headers: { 'X-Project-Id': o.project ?? PROJECT } });
    const boot = (server: Record<string, unknown>) => api('/servers', { method: 'POST', body: { server: { flavorRef: '1', imageRef: IMAGE, ...server } } });

    const inProc: { server: Server; handler: MetadataHandler }[] = [];
    /** A metadata handler in this process over the same database and the real quantum-server. */
    async function inProcess(o: Partial<HandlerOptions>): Promise<{ url: string; handler: MetadataHandler }> {
      const handler = new MetadataHandler(
        { serviceMetadataProxy: false, sharedSecret: '', useForwardedFor: false, cacheExpiration: 15, dhcpDomain: 'novalocal', vendordataProviders: ['StaticJSON'], ...o },
        new DbMetadataStore(db.db),
        qc,
        silentLogger,
      );
      const server = createServer(handler.handle);
      const port = await listen(server, '127.0.0.1', 0);
      inProc.push({ server, handler });
      return { url: `http://127.0.0.1:${port}`, handler };
    }

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'nova-api-'));
      tdb = await mk();
      q = await spawnQuantumServer(dir);
      qc = q.client;
      nova = await spawnNovaApi(dir, { quantumUrl: q.url, dbUrl: tdb.url });
      db = openDatabase<NovaDatabase>(tdb.url);
      net = await qc.createNetwork({ name: 'private', tenant_id: PROJECT } as never, PROJECT);
      subnet = await qc.createSubnet({ network_id: net.id, cidr: '10.20.0.0/24', ip_version: 4, tenant_id: PROJECT, dns_nameservers: ['10.20.0.53'], host_routes: [{ destination: '172.16.0.0/12', nexthop: '10.20.0.254' }] }, PROJECT);
      const dhcp = await qc.createPort({ network_id: net.id, device_owner: 'network:dhcp', device_id: 'dhcp-test', tenant_id: PROJECT }, PROJECT);
      dhcpIp = dhcp.fixed_ips[0]!.ip_address;
      // A network whose subnet holds 127.0.0.1, so this test (connecting from loopback) is "the guest".
      lo = await qc.createNetwork({ name: 'loop', tenant_id: PROJECT } as never, PROJECT);
      await qc.createSubnet({ network_id: lo.id, cidr: '127.0.0.0/8', ip_version: 4, tenant_id: PROJECT, enable_dhcp: false, gateway_ip: null }, PROJECT);
    });

    after(async () => {
      for (const x of inProc) {
        await closeServer(x.server);
        x.handler.close();
      }
      await nova?.stop();
      await q?.stop();
      await db?.close();
      await tdb?.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('flavors: the five classic ones, flavor-create, 409 on a duplicate, 404 shape', async () => {
      const r = await api('/flavors');
      assert.equal(r.status, 200);
      assert.deepEqual(
        r.json().flavors.map((f: { id: string; name: string }) => [f.id, f.name]),
        [['1', 'm1.tiny'], ['2', 'm1.small'], ['3', 'm1.medium'], ['4', 'm1.large'], ['5', 'm1.xlarge']],
      );
      const c = await api('/flavors', { method: 'POST', body: { flavor: { name: 'm1.nano', ram: 64, vcpus: 1, disk: 0, id: '42' } } });
      assert.equal(c.status, 200);
      assert.equal(c.json().flavor.id, '42');
      assert.equal(c.json().flavor.ram, 64);
      assert.equal((await api('/flavors', { method: 'POST', body: { flavor: { name: 'm1.nano', ram: 64, vcpus: 1, disk: 0 } } })).status, 409);
      const nf = await api('/flavors/nope');
      assert.equal(nf.status, 404);
      assert.deepEqual(nf.json(), { itemNotFound: { code: 404, message: 'Flavor nope could not be found.' } });
      assert.equal((await api('/flavors/detail')).json().flavors.find((f: { id: string }) => f.id === '42').vcpus, 1);
    });

    test('os-keypairs: import ssh (md5 fingerprint), list, show, 409 duplicate, 400 bad key, delete', async () => {
      const r = await api('/os-keypairs', { method: 'POST', body: { keypair: { name: 'k1', public_key: SSH_KEY } } });
      assert.equal(r.status, 200);
      const blob = Buffer.from(SSH_KEY.split(' ')[1]!, 'base64');
      const md5 = execFileSync('md5sum', { input: blob }).toString().split(' ')[0]!;
      assert.equal(r.json().keypair.fingerprint, md5.match(/../g)!.join(':'));
      assert.equal(r.json().keypair.type, 'ssh');
      assert.equal((await api('/os-keypairs', { method: 'POST', body: { keypair: { name: 'k1', public_key: SSH_KEY } } })).status, 409);
      const badKey = await api('/os-keypairs', { method: 'POST', body: { keypair: { name: 'k2', public_key: 'ssh-rsa notbase64!!' } } });
      assert.equal(badKey.status, 400);
      assert.ok('badRequest' in badKey.json());
      assert.deepEqual((await api('/os-keypairs')).json().keypairs.map((k: { keypair: { name: string } }) => k.keypair.name), ['k1']);
      assert.equal((await api('/os-keypairs/k1')).json().keypair.public_key, SSH_KEY);
      const tmp = await api('/os-keypairs', { method: 'POST', body: { keypair: { name: 'tmp', public_key: SSH_KEY } } });
      assert.equal(tmp.status, 200);
      assert.equal((await api('/os-keypairs/tmp', { method: 'DELETE' })).status, 202);
      assert.equal((await api('/os-keypairs/tmp')).status, 404);
      // Generated when no public_key is given.
      const gen = await api('/os-keypairs', { method: 'POST', body: { keypair: { name: 'gen' } } });
      assert.equal(gen.status, 200);
      assert.match(gen.json().keypair.public_key, /^ssh-rsa /);
      assert.match(gen.json().keypair.private_key, /BEGIN RSA PRIVATE KEY/);
    });

    test('os-keypairs: import an x509 certificate (sha1 fingerprint, type x509)', async () => {
      const key = join(dir, 'k.pem');
      const crt = join(dir, 'c.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '1', '-subj', '/CN=nova-test'], { stdio: 'ignore' });
      const pem = readFileSync(crt, 'utf8');
      const r = await api('/os-keypairs', { method: 'POST', body: { keypair: { name: 'cert', type: 'x509', public_key: pem } } });
      assert.equal(r.status, 200);
      const fp = execFileSync('openssl', ['x509', '-in', crt, '-noout', '-fingerprint', '-sha1']).toString().trim().split('=')[1]!.toLowerCase();
      assert.equal(r.json().keypair.fingerprint, fp);
      assert.equal(r.json().keypair.type, 'x509');
    });

    let server: string;
    test('POST /servers: 202 with Nova\'s shape; the port is created in quantum-server for the server', async () => {
      const r = await boot({
        name: 'Web Server_1.example',
        key_name: 'k1',
        user_data: Buffer.from('#cloud-config\n').toString('base64'),
        metadata: { role: 'web' },
        security_groups: [{ name: 'default' }, { name: 'web' }],
        networks: [{ uuid: net.id, fixed_ip: '10.20.0.50' }, { uuid: lo.id, fixed_ip: '127.0.0.1' }],
        block_device_mapping_v2: [{ source_type: 'volume', destination_type: 'volume', uuid: '5e7f0c1a-1111-4222-8333-944455566677', boot_index: 1 }],
      });
      assert.equal(r.status, 202, r.text);
      const s = r.json().server;
      assert.deepEqual(Object.keys(s).sort(), ['OS-DCF:diskConfig', 'adminPass', 'id', 'links', 'security_groups']);
      assert.equal(s['OS-DCF:diskConfig'], 'MANUAL');
      assert.deepEqual(s.security_groups, [{ name: 'default' }, { name: 'web' }]);
      assert.equal(s.links[0].rel, 'self');
      server = s.id;
      const ports = await qc.listPorts({ device_id: server });
      assert.equal(ports.length, 2);
      for (const p of ports) {
        assert.equal(p.device_owner, 'compute:nova');
        assert.equal(p.tenant_id, PROJECT);
      }
      assert.deepEqual(ports.map((p) => p.fixed_ips[0]!.ip_address).sort(), ['10.20.0.50', '127.0.0.1']);
    });

    test('the network info cache is built as Nova builds it from the ports', async () => {
      const row = await db.db.selectFrom('instance_info_caches').select('network_info').where('instance_uuid', '=', server).executeTakeFirstOrThrow();
      const nw = JSON.parse(row.network_info) as NetworkInfo;
      assert.equal(nw.length, 2);
      const v = nw[0]!;
      const port = (await qc.listPorts({ device_id: server, network_id: net.id }))[0]!;
      assert.equal(v.id, port.id);
      assert.equal(v.address, port.mac_address);
      assert.equal(v.type, 'bridge');
      assert.equal(v.devname, `tap${port.id}`.slice(0, 14));
      assert.equal(v.network!.bridge, `brq${net.id.slice(0, 11)}`);
      assert.equal(v.network!.label, 'private');
      assert.equal(v.network!.meta.mtu, net.mtu ?? 1500);
      const sn = v.network!.subnets[0]!;
      assert.equal(sn.cidr, '10.20.0.0/24');
      assert.equal(sn.meta.dhcp_server, dhcpIp);
      assert.deepEqual(sn.dns.map((d) => d.address), ['10.20.0.53']);
      assert.deepEqual(sn.routes.map((x) => [x.cidr, x.gateway.address]), [['172.16.0.0/12', '10.20.0.254']]);
      assert.equal(sn.gateway.address, subnet.gateway_ip);
      assert.deepEqual(sn.ips.map((i) => i.address), ['10.20.0.50']);
      // The loop network has DHCP off and no gateway: no dhcp_server at all.
      assert.ok(!('dhcp_server' in nw[1]!.network!.subnets[0]!.meta));
    });

    test('GET /servers/{id}: ACTIVE, addresses by network label, key, AZ, hostname from the name', async () => {
      const r = await api(`/servers/${server}`);
      assert.equal(r.status, 200);
      const s = r.json().server;
      assert.equal(s.status, 'ACTIVE');
      assert.equal(s.name, 'Web Server_1.example');
      assert.equal(s.key_name, 'k1');
      assert.equal(s['OS-EXT-AZ:availability_zone'], 'nova');
      assert.deepEqual(s.metadata, { role: 'web' });
      assert.equal(s.addresses.private[0].addr, '10.20.0.50');
      assert.equal(s.addresses.private[0]['OS-EXT-IPS:type'], 'fixed');
      const row = await db.db.selectFrom('instances').select(['hostname', 'reservation_id', 'root_device_name']).where('uuid', '=', server).executeTakeFirstOrThrow();
      assert.equal(row.hostname, 'web-server-1-example');
      assert.match(row.reservation_id, /^r-[0-9a-z]{8}$/);
      assert.equal(row.root_device_name, '/dev/vda');
      const list = (await api('/servers')).json().servers;
      assert.ok(list.some((x: { id: string; name: string }) => x.id === server && x.name === 'Web Server_1.example'));
      assert.ok((await api('/servers/detail')).json().servers.some((x: { id: string; status: string }) => x.id === server && x.status === 'ACTIVE'));
      const other = await api(`/servers/${server}`, { project: 'someone-else' });
      assert.equal(other.status, 404);
      assert.deepEqual(other.json(), { itemNotFound: { code: 404, message: `Instance ${server} could not be found.` } });
    });

    test('metadata by remote address: this test is the guest at 127.0.0.1', async () => {
      const md = (p: string, o: Parameters<typeof http>[1] = {}) => http(`${nova.metadata}${p}`, o);
      const iid = await md('/latest/meta-data/instance-id');
      assert.equal(iid.status, 200);
      const ec2 = await db.db.selectFrom('ec2_instances').select('id').where('uuid', '=', server).executeTakeFirstOrThrow();
      assert.equal(iid.text, `i-${Number(ec2.id).toString(16).padStart(8, '0')}`);
      assert.equal((await md('/latest/meta-data/hostname')).text, 'web-server-1-example.novalocal');
      assert.equal((await md('/latest/meta-data/local-ipv4')).text, '10.20.0.50');
      assert.equal((await md('/latest/meta-data/security-groups')).text, 'default\nweb');
      assert.equal((await md('/latest/meta-data/block-device-mapping/ebs0')).text, '/dev/vdb');
      assert.equal((await md('/latest/meta-data/block-device-mapping/root')).text, '/dev/vda');
      assert.match((await md('/latest/meta-data/ami-id')).text, /^ami-[0-9a-f]{8}$/);
      assert.equal((await md('/latest/user-data')).text, '#cloud-config\n');
      const meta = JSON.parse((await md('/openstack/latest/meta_data.json')).text) as Record<string, unknown>;
      assert.equal(meta.uuid, server);
      assert.equal(meta.project_id, PROJECT);
      assert.deepEqual(meta.meta, { role: 'web' });
      assert.deepEqual(meta.public_keys, { k1: SSH_KEY });
      const nd = JSON.parse((await md('/openstack/latest/network_data.json')).text) as { links: { type: string; mtu: unknown }[]; networks: { type: string }[] };
      assert.equal(nd.links[0]!.type, 'bridge');
      assert.equal(nd.links[0]!.mtu, null);
      assert.equal(nd.networks[0]!.type, 'ipv4_dhcp');
      assert.equal(nd.networks[1]!.type, 'ipv4');
      // service_metadata_proxy is off: a guest's X-Instance-ID is ignored (warned about).
      const spoof = await md('/latest/meta-data/instance-id', { headers: { 'X-Instance-ID': 'ffffffff-0000-4000-8000-000000000000', 'X-Tenant-ID': 'x', 'X-Instance-ID-Signature': 'x' } });
      assert.equal(spoof.text, iid.text);
    });

    test('metadata by remote address: an unknown address is 404, one IP on two instances is 500', async () => {
      const r = await http(`${nova.metadata}/latest/meta-data/`, { localAddress: '127.0.0.2' });
      assert.equal(r.status, 404);
      // Two ports (two networks) holding 127.0.0.3 with different device ids.
      const lo2 = await qc.createNetwork({ name: 'loop2', tenant_id: PROJECT } as never, PROJECT);
      await qc.createSubnet({ network_id: lo2.id, cidr: '127.0.0.0/8', ip_version: 4, tenant_id: PROJECT, enable_dhcp: false, gateway_ip: null }, PROJECT);
      await qc.createPort({ network_id: lo.id, fixed_ips: [{ ip_address: '127.0.0.3' }], device_id: 'aaaaaaaa-0000-4000-8000-000000000001', tenant_id: PROJECT }, PROJECT);
      await qc.createPort({ network_id: lo2.id, fixed_ips: [{ ip_address: '127.0.0.3' }], device_id: 'aaaaaaaa-0000-4000-8000-000000000002', tenant_id: PROJECT }, PROJECT);
      const multi = await http(`${nova.metadata}/latest/meta-data/`, { localAddress: '127.0.0.3' });
      assert.equal(multi.status, 500);
      assert.equal(multi.text, '500 Internal Server Error\n\nAn unknown error has occurred. Please try your request again.\n\n   ');
    });

    test('remote-address mode: the cache (15 → one backend lookup for two requests; 0 → two) and use_forwarded_for', async () => {
      const c15 = await inProcess({ cacheExpiration: 15 });
      await http(`${c15.url}/latest/meta-data/hostname`);
      const second = await http(`${c15.url}/latest/meta-data/hostname`);
      assert.equal(second.text, 'web-server-1-example.novalocal');
      assert.equal(c15.handler.backendLookups, 1);
      assert.ok(c15.handler.cache.get('metadata-127.0.0.1'));
      const c0 = await inProcess({ cacheExpiration: 0 });
      await http(`${c0.url}/latest/meta-data/hostname`);
      await http(`${c0.url}/latest/meta-data/hostname`);
      assert.equal(c0.handler.backendLookups, 2);
      // use_forwarded_for: the whole X-Forwarded-For value is the address (a chain fails the lookup, as in Nova).
      const fwd = await inProcess({ useForwardedFor: true });
      assert.equal((await http(`${fwd.url}/latest/meta-data/local-ipv4`, { headers: { 'X-Forwarded-For': '10.20.0.50' } })).text, '10.20.0.50');
      assert.equal((await http(`${fwd.url}/latest/meta-data/local-ipv4`, { headers: { 'X-Forwarded-For': '10.20.0.99' } })).status, 404);
      assert.equal((await http(`${fwd.url}/latest/meta-data/local-ipv4`, { headers: { 'X-Forwarded-For': '10.20.0.50, 10.9.9.9' } })).status, 404);
      // Without the option the header is ignored.
      assert.equal((await http(`${c0.url}/latest/meta-data/local-ipv4`, { headers: { 'X-Forwarded-For': '10.99.0.1' } })).text, '10.20.0.50');
    });

    test('server metadata API: GET, POST merges, PUT replaces, PUT/GET/DELETE one key, 404 and 400 shapes', async () => {
      const base = `/servers/${server}/metadata`;
      assert.deepEqual((await api(base)).json(), { metadata: { role: 'web' } });
      assert.deepEqual((await api(base, { method: 'POST', body: { metadata: { a: '1' } } })).json(), { metadata: { role: 'web', a: '1' } });
      assert.deepEqual((await api(base, { method: 'PUT', body: { metadata: { b: '2' } } })).json(), { metadata: { b: '2' } });
      assert.deepEqual((await api(`${base}/c`, { method: 'PUT', body: { meta: { c: '3' } } })).json(), { meta: { c: '3' } });
      assert.deepEqual((await api(`${base}/c`)).json(), { meta: { c: '3' } });
      const mismatch = await api(`${base}/c`, { method: 'PUT', body: { meta: { d: '3' } } });
      assert.equal(mismatch.status, 400);
      assert.deepEqual(mismatch.json(), { badRequest: { code: 400, message: 'Request body and URI mismatch' } });
      assert.equal((await api(`${base}/c`, { method: 'PUT', body: { meta: { c: '3', e: '4' } } })).json().badRequest.message, 'Request body contains too many items');
      assert.equal((await api(`${base}/c`, { method: 'DELETE' })).status, 204);
      const gone = await api(`${base}/c`);
      assert.equal(gone.status, 404);
      assert.deepEqual(gone.json(), { itemNotFound: { code: 404, message: 'Metadata item was not found' } });
      assert.equal((await api(base, { method: 'POST', body: { metadata: { k: 'x'.repeat(256) } } })).status, 400);
    });

    test('os-server-password: the guest POSTs through the metadata API, the admin reads and clears it', async () => {
      assert.deepEqual((await api(`/servers/${server}/os-server-password`)).json(), { password: '' });
      const post = await http(`${nova.metadata}/openstack/latest/password`, { method: 'POST', body: 'c2VjcmV0LWVuY3J5cHRlZA==', headers: { 'content-type': 'text/plain' } });
      assert.equal(post.status, 200);
      assert.deepEqual((await api(`/servers/${server}/os-server-password`)).json(), { password: 'c2VjcmV0LWVuY3J5cHRlZA==' });
      assert.equal((await api(`/servers/${server}/os-server-password`, { method: 'DELETE' })).status, 204);
      assert.deepEqual((await api(`/servers/${server}/os-server-password`)).json(), { password: '' });
    });

    test('a fixed IP already in use: 409, no server, no port left behind', async () => {
      const before = await db.db.selectFrom('instances').select('uuid').execute();
      const r = await boot({ name: 'dup', networks: [{ uuid: net.id }, { uuid: net.id, fixed_ip: '10.20.0.50' }] });
      assert.equal(r.status, 409, r.text);
      assert.ok('conflict' in r.json());
      const afterRows = await db.db.selectFrom('instances').select('uuid').execute();
      assert.equal(afterRows.length, before.length);
      const ours = (await qc.listPorts({ network_id: net.id })).filter((p) => p.device_owner.startsWith('compute:'));
      assert.deepEqual(ours.map((p) => p.device_id), [server]);
    });

    test('an unknown network: 400, and the port made for the first network is deleted again', async () => {
      const r = await boot({ name: 'half', networks: [{ uuid: net.id }, { uuid: '0b0b0b0b-0000-4000-8000-000000000000' }] });
      assert.equal(r.status, 400, r.text);
      const ours = (await qc.listPorts({ network_id: net.id })).filter((p) => p.device_owner.startsWith('compute:'));
      assert.equal(ours.length, 1);
    });

    test('bad requests: flavor, key, image, user_data, name', async () => {
      const msg = async (s: Record<string, unknown>) => {
        const r = await boot({ name: 'x', networks: [{ uuid: net.id }], ...s });
        assert.equal(r.status, 400, JSON.stringify(s));
        return r.json().badRequest.message as string;
      };
      assert.equal(await msg({ flavorRef: '999' }), 'Invalid flavorRef provided.');
      assert.equal(await msg({ key_name: 'nokey' }), 'Invalid key_name provided.');
      assert.match(await msg({ imageRef: 'not-a-uuid' }), /imageRef/);
      assert.match(await msg({ user_data: '***' }), /user_data/);
      assert.match(await msg({ name: '' }), /name/);
      const malformed = await http(`${nova.compute}/v2.1/servers`, { method: 'POST', body: '{nope', headers: { 'X-Project-Id': PROJECT } });
      assert.equal(malformed.status, 400);
    });

    test('boot on an existing port: the port is bound, and unbound (not deleted) with the server', async () => {
      const p = await qc.createPort({ network_id: net.id, tenant_id: PROJECT }, PROJECT);
      const r = await boot({ name: 'on-port', networks: [{ port: p.id }] });
      assert.equal(r.status, 202, r.text);
      const id = r.json().server.id as string;
      const bound = await qc.showPort(p.id);
      assert.equal(bound.device_id, id);
      assert.equal(bound.device_owner, 'compute:nova');
      assert.equal((await boot({ name: 'steal', networks: [{ port: p.id }] })).status, 409);
      assert.equal((await api(`/servers/${id}`, { method: 'DELETE' })).status, 204);
      const after = await qc.showPort(p.id);
      assert.equal(after.device_id, '');
    });

    test('DELETE /servers/{id}: 204, its ports are gone from quantum-server, then 404', async () => {
      assert.equal((await api(`/servers/${server}`, { method: 'DELETE' })).status, 204);
      assert.deepEqual(await qc.listPorts({ device_id: server }), []);
      assert.equal((await api(`/servers/${server}`)).status, 404);
      assert.equal((await api(`/servers/${server}`, { method: 'DELETE' })).status, 404);
      // The daemon may still answer from its 15 s cache (as Nova does); an uncached lookup finds nothing.
      const h = await inProcess({ cacheExpiration: 0 });
      assert.equal((await http(`${h.url}/latest/meta-data/`)).status, 404);
    });
  });
}

describe('nova-api-metadata with metadata_workers = 2', () => {
  test('two worker processes share the port and answer; SIGTERM stops them all', async () => {
    const { spawnDaemon, getFreePort, waitFor } = await import('./helpers/proc.js');
    const { insertInstance } = await import('./helpers/nova-fixtures.js');
    const { migrate } = await import('../src/db/connection.js');
    const { novaMigrations } = await import('../src/db/nova-schema.js');
    const { signInstanceId } = await import('../src/common/hmac.js');
    const dir = mkdtempSync(join(tmpdir(), 'nova-workers-'));
    const url = `sqlite:///${join(dir, 'nova.sqlite')}`;
    const h = openDatabase<NovaDatabase>(url);
    await migrate(h, 'nova', novaMigrations);
    const uuid = await insertInstance(h.db, { hostname: 'w' });
    await h.close();
    const port = await getFreePort();
    const d = spawnDaemon('nova-api/metadata-main.js', ['--state_path', dir, '--database-connection', url, '--metadata_listen', '127.0.0.1', '--metadata_listen_port', String(port), '--metadata_workers', '2', '--neutron-service_metadata_proxy', '--neutron-metadata_proxy_shared_secret', 's']);
    try {
      const headers = { 'X-Instance-ID': uuid, 'X-Tenant-ID': 'proj-a', 'X-Instance-ID-Signature': signInstanceId('s', uuid) };
      await waitFor(async () => (await http(`http://127.0.0.1:${port}/latest/meta-data/hostname`, { headers })).status === 200, 30_000, 200, 'metadata workers');
      const children = execFileSync('pgrep', ['-P', String(d.pid)]).toString().trim().split('\n');
      assert.equal(children.length, 2);
      for (let i = 0; i < 6; i++) assert.equal((await http(`http://127.0.0.1:${port}/latest/meta-data/hostname`, { headers })).text, 'w.novalocal');
      await d.stop();
      for (const c of children) assert.throws(() => process.kill(Number(c), 0));
    } finally {
      await d.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('sanitize_hostname gives what Nova 26 gives (outputs taken from nova.utils.sanitize_hostname)', async () => {
  const { sanitizeHostname } = await import('../src/nova-api/util.js');
  const cases: [string, string][] = [
    ['Web Server_1.example', 'web-server-1-example'],
    ['ÜBER  Ünïcode ☃ host', 'über--ünïcode--host'],
    ['--a..b--', 'a--b'],
    ['....', ''],
    [`${'x'.repeat(70)}-y`, 'x'.repeat(63)],
    ['a_b.c d', 'a-b-c-d'],
    ['Ab²³¼ºª', 'ab²³¼ºª'],
    ['tab\there', 'tabhere'],
    ['ŁódźCity', 'ódcity'],
    ['日本', ''],
    ['A-B_C.D E', 'a-b-c-d-e'],
  ];
  for (const [i, o] of cases) assert.equal(sanitizeHostname(i), o, i);
  // An empty result falls back to Server-<uuid> at boot.
  assert.equal(sanitizeHostname('日本', 'Server-x'), 'Server-x');
});
