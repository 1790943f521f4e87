// cloud-init's own OpenStack and EC2 datasource readers (Debian's cloud-init, /usr/bin/python3) crawl a
// server's metadata from the real nova-api process. The test is the guest: it connects from 127.0.0.1,
// which is the fixed IP of the server's port in quantum-server (remote-address mode).
import { CLOUDINIT_PYTHON, CLOUDINIT_RECORDER } from './helpers/cloudinit.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SSH_KEY, spawnNovaApi, spawnQuantumServer } from './helpers/nova-fixtures.js';
import { httpGet } from './helpers/proc.js';

const run = promisify(execFile);
const PY = CLOUDINIT_PYTHON;
const PROJECT = 'proj-cloudinit';

const CRAWL = CLOUDINIT_RECORDER + String.raw`
base = sys.argv[1]
# In a guest the EC2 part of read_v2 goes to 169.254.169.254, which is this same service behind the
# proxy; here it must go to the nova-api under test (and never off this host).
openstack.MetadataReader._read_ec2_metadata = lambda self: ec2.get_instance_metadata(
    metadata_address=base, ssl_details=self.ssl_details, timeout=self.timeout, retries=self.retries)

out = {}
reader = openstack.MetadataReader(base, timeout=5, retries=0)
v2 = reader.read_v2()
out['os_version'] = v2.get('version')
out['os_metadata'] = v2['metadata']
out['os_userdata'] = v2.get('userdata').decode() if isinstance(v2.get('userdata'), bytes) else v2.get('userdata')
out['os_networkdata'] = v2.get('networkdata')
out['os_vendordata'] = v2.get('vendordata')
md = ec2.get_instance_metadata(api_version='2009-04-04', metadata_address=base, timeout=5, retries=0)
out['ec2_md'] = md
ud = ec2.get_instance_userdata(api_version='2009-04-04', metadata_address=base, timeout=5, retries=0)
out['ec2_ud'] = ud.decode() if isinstance(ud, bytes) else ud
out['seen'] = seen
print(json.dumps(out, default=lambda o: o.decode('utf-8', 'replace') if isinstance(o, bytes) else str(o)))
`;

describe('cloud-init crawls nova-api metadata', { skip: !existsSync(PY) }, () => {
  let dir: string;
  let q: Awaited<ReturnType<typeof spawnQuantumServer>>;
  let nova: Awaited<ReturnType<typeof spawnNovaApi>>;
  let serverId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nova-ci-'));
    q = await spawnQuantumServer(dir);
    nova = await spawnNovaApi(dir, { quantumUrl: q.url });
    const net = await q.client.createNetwork({ name: 'guestnet', tenant_id: PROJECT } as never, PROJECT);
    await q.client.createSubnet({ network_id: net.id, cidr: '127.0.0.0/8', ip_version: 4, tenant_id: PROJECT, gateway_ip: '127.0.0.254', dns_nameservers: ['127.0.0.53'] }, PROJECT);
    const api = (path: string, body?: unknown) =>
      fetch(`${nova.compute}/v2.1${path}`, { method: body ? 'POST' : 'GET', headers: { 'X-Project-Id': PROJECT, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    assert.equal((await api('/os-keypairs', { keypair: { name: 'ci-key', public_key: SSH_KEY } })).status, 200);
    const r = await api('/servers', {
      server: {
        name: 'cloud-init guest',
        flavorRef: '2',
        imageRef: '155d900f-4e14-4e4c-a73d-069cbf4541e6',
        key_name: 'ci-key',
        user_data: Buffer.from('#cloud-config\nhostname: ci\n').toString('base64'),
        metadata: { purpose: 'crawl' },
        networks: [{ uuid: net.id, fixed_ip: '127.0.0.1' }],
      },
    });
    assert.equal(r.status, 202, await r.clone().text());
    serverId = ((await r.json()) as { server: { id: string } }).server.id;
  });

  after(async () => {
    await nova?.stop();
    await q?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('MetadataReader.read_v2 and the EC2 2009-04-04 crawl succeed; every URL fetched answers 200', async () => {
    const { stdout } = await run(PY, ['-c', CRAWL, nova.metadata], { timeout: 60_000 });
    const out = JSON.parse(stdout) as {
      os_metadata: Record<string, unknown>;
      os_userdata: string;
      os_networkdata: { links: unknown[]; networks: { ip_address?: string }[] };
      ec2_md: Record<string, unknown>;
      ec2_ud: string;
      seen: [string, number][];
    };
    assert.equal(out.os_metadata.uuid, serverId);
    assert.equal(out.os_metadata.hostname, 'cloud-init-guest.novalocal');
    assert.deepEqual(out.os_metadata.public_keys, { 'ci-key': SSH_KEY });
    assert.deepEqual(out.os_metadata.meta, { purpose: 'crawl' });
    assert.equal(out.os_userdata, '#cloud-config\nhostname: ci\n');
    assert.equal(out.os_networkdata.links.length, 1);
    assert.equal(out.ec2_md['instance-type'], 'm1.small');
    assert.equal(out.ec2_md['local-ipv4'], '127.0.0.1');
    assert.deepEqual(out.ec2_md['public-keys'], { 'ci-key': SSH_KEY });
    assert.match(String(out.ec2_md['instance-id']), /^i-[0-9a-f]{8}$/);
    assert.equal(out.ec2_ud, '#cloud-config\nhostname: ci\n');
    const ec2Urls = out.seen.filter(([u]) => u.includes('/2009-04-04/'));
    assert.ok(ec2Urls.length > 15, `EC2 crawl fetched only ${ec2Urls.length} URLs`);
    // Every EC2 entry the listings name was fetched and answered 200 (optional OpenStack files may 404).
    for (const [u, code] of ec2Urls) assert.equal(code, 200, u);
    for (const [u, code] of out.seen) {
      assert.ok(u.startsWith(nova.metadata), `request left the service under test: ${u}`);
      if (!/vendor_data|password/.test(u)) assert.equal(code, 200, u);
    }
    // And the server answers the same for this guest directly.
    assert.equal((await httpGet(`${nova.metadata}/2009-04-04/meta-data/instance-id`)).body, out.ec2_md['instance-id']);
  });
});
