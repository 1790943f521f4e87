// The metadata API against Nova's own test checklist (nova/tests/unit/test_metadata.py), in process,
// with instances stored directly in the database. Identification here is the signed proxy mode; the
// remote-address mode (which needs quantum-server) is in nova-api.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Writable } from 'node:stream';
import { connect } from 'node:net';
import { migrate, openDatabase, type Db } from '../src/db/connection.js';
import { novaMigrations, type NovaDatabase } from '../src/db/nova-schema.js';
import { signInstanceId } from '../src/common/hmac.js';
import { QuantumClient } from '../src/common/quantum-client.js';
import { MetadataHandler, checkProxySecret, type HandlerOptions } from '../src/nova-metadata/handler.js';
import { DbMetadataStore } from '../src/nova-metadata/store.js';
import { DynamicVendorData } from '../src/nova-metadata/vendordata.js';
import { pyDumps } from '../src/nova-metadata/pyjson.js';
import { negotiateErrorType, webobErrorBody } from '../src/nova-metadata/webob.js';
import { OPENSTACK_VERSIONS, pyNormpath } from '../src/nova-metadata/base.js';
import { closeServer, listen } from '../src/common/http.js';
import { backends, type TestDb } from './helpers/db.js';
import { insertInstance, sampleNetworkInfo, SSH_KEY } from './helpers/nova-fixtures.js';
import { spawnDaemon } from './helpers/proc.js';

const SECRET = 'sup3r-secret';

interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
}

function call(port: number, path: string, o: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const len: Record<string, string> = o.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(o.body)) };
    const req = request({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', headers: { connection: 'close', ...len, ...(o.headers ?? {}) }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') });
      });
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

/** A logger whose lines a test can read (to check what is and is not logged). */
function captureLogger(): { log: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

const baseOpts: HandlerOptions = {
  serviceMetadataProxy: true,
  sharedSecret: SECRET,
  useForwardedFor: false,
  cacheExpiration: 15,
  dhcpDomain: 'novalocal',
  vendordataProviders: ['StaticJSON'],
};

// quantum-server is not needed in proxy mode; a client to a closed port proves no call is made.
const deadQuantum = new QuantumClient({ url: 'http://127.0.0.1:9', timeoutMs: 1000 });

for (const mk of backends()) {
  describe(`nova metadata API (${mk.name})`, () => {
    let tdb: TestDb;
    let db: Db<NovaDatabase>;
    let dir: string;
    const servers: { server: Server; handler: MetadataHandler }[] = [];
    let port = 0;
    let handler: MetadataHandler;
    let logs: string[];
    let full: string; // instance with everything
    let bare: string; // no key, no user data, no network, default block devices
    let kernel: string;
    let nokp: string; // key_name set but the keypair row is gone
    let bdm: string;

    async function start(opts: Partial<HandlerOptions>, dynamic?: DynamicVendorData): Promise<{ port: number; handler: MetadataHandler; logs: string[] }> {
      const { log, lines } = captureLogger();
      const h = new MetadataHandler({ ...baseOpts, ...opts }, new DbMetadataStore(db.db), deadQuantum, log, dynamic);
      const server = createServer(h.handle);
      const p = await listen(server, '127.0.0.1', 0);
      servers.push({ server, handler: h });
      return { port: p, handler: h, logs: lines };
    }

    const signed = (uuid: string, tenant = 'proj-a', extra: Record<string, string> = {}) => ({
      'X-Instance-ID': uuid,
      'X-Tenant-ID': tenant,
      'X-Instance-ID-Signature': signInstanceId(SECRET, uuid),
      'X-Forwarded-For': '10.0.0.2',
      ...extra,
    });
    const get = (uuid: string, path: string, extra: Record<string, string> = {}, p = port) => call(p, path, { headers: signed(uuid, 'proj-a', extra) });

    before(async () => {
      tdb = await mk();
      db = openDatabase<NovaDatabase>(tdb.url);
      await migrate(db, 'nova', novaMigrations);
      dir = mkdtempSync(join(tmpdir(), 'nova-md-'));
      writeFileSync(join(dir, 'vendor.json'), '{"1": "one", "a": "b", "ünï": "ç"}');
      full = await insertInstance(db.db, {
        display_name: 'Full Instance',
        hostname: 'full-instance',
        key_name: 'mykey',
        user_data: Buffer.from('#!/bin/sh\necho hello\n').toString('base64'),
        metadata: [
          ['b', '2'],
          ['1', 'one'],
          ['a', 'ü'],
        ],
        network_info: sampleNetworkInfo(),
        security_groups: ['default', 'web'],
        launch_index: 3,
        device_metadata: {
          devices: [
            { type: 'nic', bus: { type: 'pci', address: '0000:00:02.0' }, mac: '00:00:00:00:00:00', tags: ['foo'] },
            { type: 'nic', bus: { type: 'pci', address: '0000:00:03.0' }, mac: '00:00:00:00:00:01', vlan: 1000 },
            { type: 'nic', bus: { type: 'pci', address: '0000:00:04.0' }, mac: '00:00:00:00:00:02' },
            { type: 'disk', bus: { type: 'scsi', address: '0:0:0:0' }, serial: 'disk-vol-2352423', path: '/dev/sda', tags: ['baz'] },
            { type: 'disk', bus: { type: 'ide', address: '0:0' }, serial: 'disk-vol-2352423', path: '/dev/sda', tags: ['baz'] },
            { type: 'disk', bus: { type: 'usb', address: '00:01' }, serial: 'disk-vol-2352423', path: '/dev/sdb', tags: ['baz'] },
            { type: 'disk', bus: { type: 'xen', address: '0000:00:09.0' }, serial: 'disk-vol-123', path: '/dev/xvdi', tags: ['xenfoo'] },
            { type: 'disk', bus: { type: 'infiniband', address: 'x' }, serial: 'skipped' },
            { type: 'gpu', bus: { type: 'pci', address: '0000:00:05.0' } },
          ],
        },
        numa_topology: { cells: [{ pcpuset: [4, 0] }, { pcpuset: [3, 1] }] },
      });
      bare = await insertInstance(db.db, { hostname: 'bare', root_device_name: null, availability_zone: null });
      kernel = await insertInstance(db.db, { kernel_id: 'a6f4e4c4-0000-4000-8000-000000000001', ramdisk_id: 'a6f4e4c4-0000-4000-8000-000000000002' });
      nokp = await insertInstance(db.db, { key_name: 'gone', keypairs: [] });
      bdm = await insertInstance(db.db, {
        root_device_name: '/dev/sda1',
        default_ephemeral_device: '/dev/sdb',
        bdms: [
          { source_type: 'volume', destination_type: 'volume', device_name: '/dev/sdh' },
          { source_type: 'snapshot', destination_type: 'volume', device_name: '/dev/sdc' },
          { source_type: 'blank', destination_type: 'local', device_name: '/dev/sdd', guest_format: 'swap' },
          { source_type: 'blank', destination_type: 'local', device_name: '/dev/sde' },
        ],
      });
      ({ port, handler, logs } = await start({ vendordataJsonfilePath: join(dir, 'vendor.json') }));
    });

    after(async () => {
      for (const s of servers) {
        await closeServer(s.server);
        s.handler.close();
      }
      await db.close();
      await tdb.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('GET / and /foo/../ list the EC2 versions plus latest without identification', async () => {
      for (const p of ['/', '/foo/../', '//x/..']) {
        const r = await call(port, p);
        if (p === '//x/..') {
          // normpath keeps a leading '//', so this one is not '/' and needs an identity: 400 here.
          assert.equal(r.status, 400);
          continue;
        }
        assert.equal(r.status, 200);
        assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
        assert.equal(r.text, '1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest');
      }
    });

    test('/2009-04-04 lists meta-data/ and user-data; without user data only meta-data/; /9999-99-99 is 404', async () => {
      const r = await get(full, '/2009-04-04');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
      assert.equal(r.text, 'meta-data/\nuser-data');
      assert.equal((await get(bare, '/2009-04-04/')).text, 'meta-data/');
      assert.equal((await get(full, '/9999-99-99')).status, 404);
      assert.equal((await get(full, '/9999-99-99/meta-data')).status, 404);
    });

    test('the EC2 listing for latest is sorted, dirs end in /, no trailing newline', async () => {
      const r = await get(full, '/latest/meta-data/');
      assert.equal(
        r.text,
        [
          'ami-id',
          'ami-launch-index',
          'ami-manifest-path',
          'block-device-mapping/',
          'hostname',
          'instance-action',
          'instance-id',
          'instance-type',
          'local-hostname',
          'local-ipv4',
          'placement/',
          'public-hostname',
          'public-ipv4',
          'public-keys/',
          'reservation-id',
          'security-groups',
        ].join('\n'),
      );
    });

    test('EC2 version gates: 1.0, 2007-01-19, 2007-08-29, 2007-12-15, 2008-02-01, 2008-09-01', async () => {
      const keys = async (v: string) => (await get(full, `/${v}/meta-data`)).text.split('\n');
      const v10 = await keys('1.0');
      assert.deepEqual(v10, ['ami-id', 'ami-launch-index', 'ami-manifest-path', 'hostname', 'instance-id', 'local-ipv4', 'public-keys/', 'reservation-id', 'security-groups']);
      assert.ok((await keys('2007-01-19')).includes('local-hostname'));
      assert.ok(!(await keys('2007-03-01')).includes('instance-type'));
      assert.ok((await keys('2007-08-29')).includes('instance-type'));
      assert.ok(!(await keys('2007-10-10')).includes('block-device-mapping/'));
      assert.ok((await keys('2007-12-15')).includes('block-device-mapping/'));
      assert.ok(!(await keys('2007-12-15')).includes('placement/'));
      assert.ok((await keys('2008-02-01')).includes('placement/'));
      assert.ok(!(await keys('2008-02-01')).includes('instance-action'));
      assert.ok((await keys('2008-09-01')).includes('instance-action'));
      assert.equal((await get(full, '/1.0/meta-data/local-hostname')).status, 404);
      assert.equal((await get(full, '/2007-01-19/meta-data/local-hostname')).text, 'full-instance.novalocal');
    });

    test('EC2 values: ids, launch index, manifest, reservation, type, action, placement, public-ipv4', async () => {
      const v = async (k: string) => (await get(full, `/latest/meta-data/${k}`)).text;
      assert.match(await v('instance-id'), /^i-[0-9a-f]{8}$/);
      assert.match(await v('ami-id'), /^ami-[0-9a-f]{8}$/);
      assert.equal(await v('ami-launch-index'), '3');
      assert.equal(await v('ami-manifest-path'), 'FIXME');
      assert.equal(await v('reservation-id'), 'r-abcd1234');
      assert.equal(await v('instance-type'), 'm1.tiny');
      assert.equal(await v('instance-action'), 'none');
      assert.equal(await v('placement'), 'availability-zone');
      assert.equal(await v('placement/availability-zone'), 'nova');
      assert.equal(await v('public-ipv4'), '1.2.3.4');
      // No floating IP → 200 and an empty body; an unset AZ prints as None.
      const p = await get(bare, '/latest/meta-data/public-ipv4');
      assert.equal(p.status, 200);
      assert.equal(p.text, '');
      assert.equal((await get(bare, '/latest/meta-data/placement/availability-zone')).text, 'None');
    });

    test('invalid leaf → 404; a sub-path under a leaf → 404 (Nova: 500, fixed)', async () => {
      assert.equal((await get(full, '/latest/meta-data/nonexistent')).status, 404);
      for (const p of ['/latest/meta-data/hostname/x', '/latest/user-data/x', '/latest/meta-data/security-groups/web', '/latest/meta-data/security-groups/nope', '/latest/meta-data/public-keys/0/openssh-key/x', '/latest/meta-data/ami-launch-index/x']) {
        assert.equal((await get(full, p)).status, 404, p);
      }
      assert.equal((await get(full, '/latest/api/token', {})).status, 404);
      assert.equal((await call(port, '/latest/api/token', { method: 'PUT', headers: signed(full) })).status, 404);
      assert.equal((await get(full, '/latest/dynamic/instance-identity/document')).status, 404);
    });

    test('a recursive crawl of /2009-04-04/meta-data returns 200 everywhere', async () => {
      const seen: string[] = [];
      const crawl = async (path: string): Promise<void> => {
        const r = await get(full, path);
        assert.equal(r.status, 200, path);
        seen.push(path);
        if (!path.endsWith('/')) return;
        for (const line of r.text.split('\n')) {
          const item = line.includes('=') ? `${line.split('=')[0]}/` : line;
          await crawl(path + item);
        }
      };
      await crawl('/2009-04-04/meta-data/');
      assert.ok(seen.includes('/2009-04-04/meta-data/public-keys/0/openssh-key'));
      assert.ok(seen.includes('/2009-04-04/meta-data/block-device-mapping/root'));
    });

    test('public-keys: 0=<name>, 0/ lists openssh-key, the key data, _name, and 404 without a key', async () => {
      assert.equal((await get(full, '/latest/meta-data/public-keys')).text, '0=mykey');
      assert.equal((await get(full, '/latest/meta-data/public-keys/0')).text, 'openssh-key');
      assert.equal((await get(full, '/latest/meta-data/public-keys/0/openssh-key')).text, SSH_KEY);
      assert.equal((await get(full, '/latest/meta-data/public-keys/0/_name')).text, '0=mykey');
      assert.equal((await get(bare, '/latest/meta-data/public-keys')).status, 404);
    });

    test('kernel-id and ramdisk-id are aki-/ari- + 8 hex when set, absent otherwise', async () => {
      assert.match((await get(kernel, '/2007-12-15/meta-data/kernel-id')).text, /^aki-[0-9a-f]{8}$/);
      assert.match((await get(kernel, '/latest/meta-data/ramdisk-id')).text, /^ari-[0-9a-f]{8}$/);
      assert.equal((await get(kernel, '/2007-10-10/meta-data/kernel-id')).status, 404);
      assert.equal((await get(full, '/latest/meta-data/kernel-id')).status, 404);
    });

    test('/ec2/ is an alias for the EC2 tree', async () => {
      for (const p of ['/latest/meta-data/', '/2009-04-04/meta-data/hostname', '/latest/user-data', '']) {
        const a = await get(full, p || '/latest');
        const b = await get(full, `/ec2${p || '/latest'}`);
        assert.equal(b.status, 200);
        assert.deepEqual(b.body, a.body);
      }
      assert.equal((await get(full, '/ec2')).text, (await call(port, '/')).text);
    });

    test('block-device-mapping: the default mapping without a root device name', async () => {
      const r = await get(bare, '/latest/meta-data/block-device-mapping/');
      assert.equal(r.text, 'ami\nephemeral0\nroot\nswap');
      assert.equal((await get(bare, '/latest/meta-data/block-device-mapping/ami')).text, 'sda1');
      assert.equal((await get(bare, '/latest/meta-data/block-device-mapping/root')).text, '/dev/sda1');
      assert.equal((await get(bare, '/latest/meta-data/block-device-mapping/ephemeral0')).text, 'sda2');
      assert.equal((await get(bare, '/latest/meta-data/block-device-mapping/swap')).text, 'sda3');
    });

    test('block-device-mapping: ebs0/ebs1 (sorted), swap and ephemeral0 from the block devices', async () => {
      const m = async (k: string) => (await get(bdm, `/latest/meta-data/block-device-mapping/${k}`)).text;
      assert.equal((await get(bdm, '/latest/meta-data/block-device-mapping')).text, 'ami\nebs0\nebs1\nephemeral0\nroot\nswap');
      assert.equal(await m('ami'), 'sda1');
      assert.equal(await m('root'), '/dev/sda1');
      assert.equal(await m('ebs0'), '/dev/sdc');
      assert.equal(await m('ebs1'), '/dev/sdh');
      assert.equal(await m('swap'), '/dev/sdd');
      assert.equal(await m('ephemeral0'), '/dev/sde');
      // Root on /dev/vda (libvirt) for instances the compute API creates.
      assert.equal((await get(full, '/latest/meta-data/block-device-mapping/root')).text, '/dev/vda');
      assert.equal((await get(full, '/latest/meta-data/block-device-mapping/ami')).text, 'vda');
    });

    test('local-hostname with dhcp_domain and without', async () => {
      assert.equal((await get(full, '/latest/meta-data/local-hostname')).text, 'full-instance.novalocal');
      assert.equal((await get(full, '/latest/meta-data/hostname')).text, 'full-instance.novalocal');
      const other = await start({ dhcpDomain: '' });
      assert.equal((await get(full, '/latest/meta-data/local-hostname', {}, other.port)).text, 'full-instance');
      const md = JSON.parse((await get(full, '/openstack/latest/meta_data.json', {}, other.port)).text) as { hostname: string };
      assert.equal(md.hostname, 'full-instance');
    });

    test('local-ipv4 comes from the network info, else the request address', async () => {
      assert.equal((await get(full, '/latest/meta-data/local-ipv4')).text, '10.0.0.2');
      // No network info: the X-Forwarded-For the proxy passed on (cached with the instance, as Nova does).
      const nonet = await insertInstance(db.db, {});
      assert.equal((await call(port, '/latest/meta-data/local-ipv4', { headers: signed(nonet, 'proj-a', { 'X-Forwarded-For': '192.168.7.9' }) })).text, '192.168.7.9');
    });

    test('security-groups lists the names, newline-joined', async () => {
      assert.equal((await get(full, '/latest/meta-data/security-groups')).text, 'default\nweb');
    });

    test('user-data is the raw decoded bytes as text/plain; 404 when unset', async () => {
      const r = await get(full, '/latest/user-data');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
      assert.equal(r.text, '#!/bin/sh\necho hello\n');
      assert.equal((await get(bare, '/latest/user-data')).status, 404);
      assert.equal((await get(full, '/openstack/latest/user_data')).text, '#!/bin/sh\necho hello\n');
      assert.equal((await get(bare, '/openstack/latest/user_data')).status, 404);
    });

    test('/openstack lists versions up to today plus latest; unknown version 404; content/ 404', async () => {
      const r = await get(full, '/openstack');
      assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
      const today = new Date().toISOString().slice(0, 10);
      assert.equal(r.text, [...OPENSTACK_VERSIONS.filter((v) => v <= today), 'latest'].join('\n'));
      assert.equal((await get(full, '/openstack/2011-01-01')).status, 404);
      assert.equal((await get(full, '/openstack/content/0000')).status, 404);
      assert.equal((await get(full, '/openstack/latest/content')).status, 404);
      assert.equal((await get(full, '/openstack/latest/nope.json')).status, 404);
    });

    test('OpenStack version listings are exact per version; user_data drops out when unset', async () => {
      const list = async (u: string, v: string) => (await get(u, `/openstack/${v}`)).text.split('\n');
      assert.deepEqual(await list(full, '2012-08-10'), ['meta_data.json', 'user_data']);
      assert.deepEqual(await list(full, '2013-04-04'), ['meta_data.json', 'user_data', 'password']);
      assert.deepEqual(await list(full, '2013-10-17'), ['meta_data.json', 'user_data', 'password', 'vendor_data.json']);
      assert.deepEqual(await list(full, '2015-10-15'), ['meta_data.json', 'user_data', 'password', 'vendor_data.json', 'network_data.json']);
      assert.deepEqual(await list(full, '2016-10-06'), ['meta_data.json', 'user_data', 'password', 'vendor_data.json', 'network_data.json', 'vendor_data2.json']);
      assert.deepEqual(await list(full, 'latest'), ['meta_data.json', 'user_data', 'password', 'vendor_data.json', 'network_data.json', 'vendor_data2.json']);
      assert.deepEqual(await list(bare, 'latest'), ['meta_data.json', 'password', 'vendor_data.json', 'network_data.json', 'vendor_data2.json']);
      // Nova routes the name "version" to the listing too.
      assert.deepEqual(await list(full, 'latest/version'), await list(full, 'latest'));
    });

    test('meta_data.json: exact bytes as Python json.dumps writes them (latest)', async () => {
      const r = await get(full, '/openstack/latest/meta_data.json');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'application/json');
      const seed = /"random_seed": "([A-Za-z0-9+/=]+)"/.exec(r.text)![1]!;
      assert.equal(Buffer.from(seed, 'base64').length, 512);
      const expected =
        `{"uuid": "${full}", "meta": {"b": "2", "1": "one", "a": "\\u00fc"}, "public_keys": {"mykey": "${SSH_KEY}"}, ` +
        `"keys": [{"name": "mykey", "type": "ssh", "data": "${SSH_KEY}"}], "hostname": "full-instance.novalocal", "name": "Full Instance", ` +
        `"launch_index": 3, "availability_zone": "nova", "random_seed": "${seed}", "project_id": "proj-a", "devices": [` +
        `{"vf_trusted": false, "type": "nic", "mac": "00:00:00:00:00:00", "bus": "pci", "address": "0000:00:02.0", "tags": ["foo"]}, ` +
        `{"vlan": 1000, "vf_trusted": false, "type": "nic", "mac": "00:00:00:00:00:01", "bus": "pci", "address": "0000:00:03.0"}, ` +
        `{"vf_trusted": false, "type": "nic", "mac": "00:00:00:00:00:02", "bus": "pci", "address": "0000:00:04.0"}, ` +
        `{"type": "disk", "serial": "disk-vol-2352423", "path": "/dev/sda", "bus": "scsi", "address": "0:0:0:0", "tags": ["baz"]}, ` +
        `{"type": "disk", "serial": "disk-vol-2352423", "path": "/dev/sda", "bus": "ide", "address": "0:0", "tags": ["baz"]}, ` +
        `{"type": "disk", "serial": "disk-vol-2352423", "path": "/dev/sdb", "bus": "usb", "address": "00:01", "tags": ["baz"]}, ` +
        `{"type": "disk", "serial": "disk-vol-123", "path": "/dev/xvdi", "bus": "xen", "address": "0000:00:09.0", "tags": ["xenfoo"]}], ` +
        `"dedicated_cpus": [0, 1, 3, 4]}`;
      assert.equal(r.text, expected);
      // random_seed is fresh on every request.
      const again = await get(full, '/openstack/latest/meta_data.json');
      assert.notEqual(/"random_seed": "([^"]+)"/.exec(again.text)![1], seed);
    });

    test('meta_data.json field matrix per version', async () => {
      const keysOf = async (v: string) => Object.keys(JSON.parse((await get(full, `/openstack/${v}/meta_data.json`)).text) as object);
      const baseKeys = ['uuid', 'meta', 'public_keys', 'keys', 'hostname', 'name', 'launch_index', 'availability_zone'];
      assert.deepEqual(await keysOf('2012-08-10'), baseKeys);
      assert.deepEqual(await keysOf('2013-04-04'), [...baseKeys, 'random_seed']);
      assert.deepEqual(await keysOf('2013-10-17'), [...baseKeys, 'random_seed']);
      assert.deepEqual(await keysOf('2015-10-15'), [...baseKeys, 'random_seed', 'project_id']);
      assert.deepEqual(await keysOf('2016-06-30'), [...baseKeys, 'random_seed', 'project_id', 'devices']);
      assert.deepEqual(await keysOf('2020-10-14'), [...baseKeys, 'random_seed', 'project_id', 'devices', 'dedicated_cpus']);
      for (const v of OPENSTACK_VERSIONS) for (const k of await keysOf(v)) assert.ok(!k.includes('-'), `${v}: ${k}`);
    });

    test('devices: vlan only from 2017-02-22, vf_trusted from 2018-08-27, untagged plain NICs skipped before', async () => {
      const devs = async (v: string) => (JSON.parse((await get(full, `/openstack/${v}/meta_data.json`)).text) as { devices: Record<string, unknown>[] }).devices;
      const n1 = await devs('2016-06-30');
      assert.deepEqual(n1.map((d) => d.type), ['nic', 'disk', 'disk', 'disk', 'disk']);
      assert.ok(!('vlan' in n1[0]!));
      const o = await devs('2017-02-22');
      assert.deepEqual(o.map((d) => d.mac ?? d.bus), ['00:00:00:00:00:00', '00:00:00:00:00:01', 'scsi', 'ide', 'usb', 'xen']);
      assert.equal(o[1]!.vlan, 1000);
      assert.ok(!('vf_trusted' in o[0]!));
      assert.equal((await devs('2018-08-27')).length, 7);
      const bareMd = JSON.parse((await get(bare, '/openstack/latest/meta_data.json')).text) as { devices: unknown[]; dedicated_cpus: unknown[] };
      assert.deepEqual(bareMd.devices, []);
      assert.deepEqual(bareMd.dedicated_cpus, []);
    });

    test('a keypair gone from the instance leaves out keys and public_keys', async () => {
      const md = JSON.parse((await get(nokp, '/openstack/latest/meta_data.json')).text) as Record<string, unknown>;
      assert.ok(!('keys' in md));
      assert.ok(!('public_keys' in md));
      assert.equal((await get(nokp, '/latest/meta-data/public-keys')).text, '0=gone');
      const bm = JSON.parse((await get(bare, '/openstack/latest/meta_data.json')).text) as Record<string, unknown>;
      assert.ok(!('meta' in bm));
      assert.equal(bm.availability_zone, null);
    });

    test('an x509 keypair type is passed through in keys', async () => {
      const x = await insertInstance(db.db, { key_name: 'cert', keypairs: [{ name: 'cert', type: 'x509', public_key: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' }] });
      const md = JSON.parse((await get(x, '/openstack/latest/meta_data.json')).text) as { keys: { type: string; name: string }[] };
      assert.deepEqual(md.keys.map((k) => [k.name, k.type]), [['cert', 'x509']]);
    });

    test('network_data.json: exact netutils output as text/plain, for every version; {} without network', async () => {
      const r = await get(full, '/openstack/latest/network_data.json');
      assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
      const expected =
        '{"links": [{"id": "tap1f4b2a55-9e", "vif_id": "1f4b2a55-9e3d-4c1e-8a2b-0c7d6e5f4a3b", "type": "bridge", "mtu": 1450, "ethernet_mac_address": "fa:16:3e:11:22:33"}], ' +
        '"networks": [{"id": "network0", "type": "ipv4", "link": "tap1f4b2a55-9e", "ip_address": "10.0.0.2", "netmask": "255.255.255.0", ' +
        '"routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"}, {"network": "172.16.0.0", "netmask": "255.240.0.0", "gateway": "10.0.0.254"}], ' +
        '"network_id": "8d1e0b2c-3f4a-4b5c-9d6e-7f8a9b0c1d2e", "services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", "address": "8.8.4.4"}]}, ' +
        '{"id": "network1", "type": "ipv6", "link": "tap1f4b2a55-9e", "ip_address": "fd00:1::5", "netmask": "ffff:ffff:ffff:ffff::", ' +
        '"routes": [{"network": "::", "netmask": "::", "gateway": "fd00:1::1"}], "network_id": "8d1e0b2c-3f4a-4b5c-9d6e-7f8a9b0c1d2e", "services": [{"type": "dns", "address": "8.8.8.8"}]}], ' +
        '"services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", "address": "8.8.4.4"}]}';
      assert.equal(r.text, expected);
      assert.equal((await get(full, '/openstack/2012-08-10/network_data.json')).text, expected);
      assert.equal((await get(bare, '/openstack/latest/network_data.json')).text, '{}');
    });

    test('network_data.json with DHCP: ipv4_dhcp network and a null link MTU', async () => {
      const dh = await insertInstance(db.db, { network_info: sampleNetworkInfo({ dhcp: true }) });
      const nd = JSON.parse((await get(dh, '/openstack/latest/network_data.json')).text) as { links: { mtu: unknown }[]; networks: Record<string, unknown>[] };
      assert.equal(nd.links[0]!.mtu, null);
      assert.deepEqual(nd.networks[0], { id: 'network0', type: 'ipv4_dhcp', link: 'tap1f4b2a55-9e', network_id: '8d1e0b2c-3f4a-4b5c-9d6e-7f8a9b0c1d2e' });
      assert.equal(nd.networks[1]!.type, 'ipv6');
    });

    test('vendor_data.json: the static file as application/json from 2013-10-17; 404 without StaticJSON', async () => {
      const r = await get(full, '/openstack/latest/vendor_data.json');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.text, '{"1": "one", "a": "b", "\\u00fcn\\u00ef": "\\u00e7"}');
      assert.equal((await get(full, '/openstack/2013-04-04/vendor_data.json')).status, 404);
      const none = await start({ vendordataProviders: [] });
      assert.equal((await get(full, '/openstack/latest/vendor_data.json', {}, none.port)).status, 404);
      assert.equal((await get(full, '/openstack/latest/vendor_data2.json', {}, none.port)).text, '{}');
      // A missing static file is an error for every request of the instance (Nova raises while building).
      const missing = await start({ vendordataJsonfilePath: join(dir, 'absent.json') });
      assert.equal((await get(full, '/latest/meta-data/hostname', {}, missing.port)).status, 500);
    });

    test('vendor_data2.json: static plus dynamic targets; 200/201 parsed, 204 {}, errors {}, duplicate name keeps the first', async () => {
      const posted: { url: string; body: Record<string, unknown>; headers: Record<string, unknown> }[] = [];
      const vd = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          posted.push({ url: req.url!, body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>, headers: req.headers });
          if (req.url === '/ok') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"k": "v", "n": 1}');
          if (req.url === '/created') return void res.writeHead(201).end('{"c": true}');
          if (req.url === '/empty') return void res.writeHead(204).end();
          if (req.url === '/bad') return void res.writeHead(200).end('not json');
          if (req.url === '/slow') return void setTimeout(() => res.writeHead(200).end('{"late": 1}'), 4000);
          res.writeHead(500).end('boom');
        });
      });
      const vp = await listen(vd, '127.0.0.1', 0);
      const u = (p: string) => `http://127.0.0.1:${vp}${p}`;
      const mkDyn = (targets: string[], fatal = false) => new DynamicVendorData({ targets, connectTimeoutS: 3, readTimeoutS: 1, failureFatal: fatal }, servers[0]!.handler['log']);
      const dyn = mkDyn([`first@${u('/ok')}`, `second@${u('/created')}`, `first@${u('/created')}`, 'noname', `empty@${u('/empty')}`, `err@${u('/err')}`, `bad@${u('/bad')}`, `slow@${u('/slow')}`, `tls@https://127.0.0.1:${vp}/ok`, `static@${u('/ok')}`]);
      const s = await start({ vendordataProviders: ['StaticJSON', 'DynamicJSON'], vendordataJsonfilePath: join(dir, 'vendor.json') }, dyn);
      const r = await get(full, '/openstack/latest/vendor_data2.json', {}, s.port);
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.text, '{"static": {"1": "one", "a": "b", "\\u00fcn\\u00ef": "\\u00e7"}, "first": {"k": "v", "n": 1}, "second": {"c": true}, "empty": {}, "err": {}, "bad": {}, "slow": {}, "tls": {}}');
      assert.ok(s.logs.some((l) => l.includes('Removing duplicate metadata key: static')));
      const first = posted.find((p) => p.url === '/ok')!;
      assert.deepEqual(Object.keys(first.body), ['project-id', 'instance-id', 'image-id', 'user-data', 'hostname', 'metadata', 'boot-roles']);
      assert.equal(first.body['instance-id'], full);
      assert.equal(first.body.hostname, 'full-instance');
      assert.equal(first.body['project-id'], 'proj-a');
      assert.deepEqual(first.body.metadata, { b: '2', 1: 'one', a: 'ü' });
      assert.equal(first.headers['user-agent'], 'openstack-nova-vendordata');
      assert.equal(first.headers.accept, 'application/json');
      // No dynamic call unless vendor_data2.json is asked for; every request re-fetches (no cache).
      const before = posted.length;
      await get(full, '/openstack/latest/meta_data.json', {}, s.port);
      assert.equal(posted.length, before);
      await get(full, '/openstack/latest/vendor_data2.json', {}, s.port);
      assert.ok(posted.length > before);
      // failure_fatal: the failing target makes the request a 500.
      const fatal = await start({ vendordataProviders: ['DynamicJSON'] }, mkDyn([`err@${u('/err')}`], true));
      assert.equal((await get(full, '/openstack/latest/vendor_data2.json', {}, fatal.port)).status, 500);
      assert.equal((await get(full, '/openstack/2016-06-30/vendor_data2.json', {}, s.port)).status, 404);
      await dyn.close();
      await closeServer(vd);
    });

    test('proxy mode: a good signature gets user data as text/plain', async () => {
      const r = await get(full, '/latest/user-data');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
    });

    test('proxy mode: a bad signature is 403 and the valid signature is never logged', async () => {
      const good = signInstanceId(SECRET, full);
      const r = await call(port, '/latest/meta-data/', { headers: { ...signed(full), 'X-Instance-ID-Signature': 'f'.repeat(64) } });
      assert.equal(r.status, 403);
      assert.equal(r.text, '403 Forbidden\n\nInvalid proxy request signature.\n\n   ');
      const empty = await call(port, '/latest/meta-data/', { headers: { ...signed(full), 'X-Instance-ID-Signature': '' } });
      assert.equal(empty.status, 403);
      assert.ok(logs.some((l) => l.includes('does not match the expected value')));
      assert.ok(!logs.some((l) => l.includes(good)), 'expected signature leaked into the log');
    });

    test('proxy mode: missing headers are 400 with their own message, in Nova order', async () => {
      const h = signed(full);
      const without = (k: string) => Object.fromEntries(Object.entries(h).filter(([x]) => x !== k));
      const cases: [Record<string, string>, string][] = [
        [without('X-Instance-ID'), 'X-Instance-ID header is missing from request.'],
        [without('X-Instance-ID-Signature'), 'X-Instance-ID-Signature header is missing from request.'],
        [without('X-Tenant-ID'), 'X-Tenant-ID header is missing from request.'],
      ];
      for (const [headers, msg] of cases) {
        const r = await call(port, '/latest/meta-data/', { headers });
        assert.equal(r.status, 400);
        assert.equal(r.text, `400 Bad Request\n\n${msg}\n\n   `);
      }
    });

    test('proxy mode: repeated X-Instance-ID or X-Tenant-ID headers are 400', async () => {
      const raw = (extra: string) =>
        new Promise<string>((resolve, reject) => {
          const s = connect(port, '127.0.0.1', () => {
            s.write(`GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Instance-ID: ${full}\r\nX-Tenant-ID: proj-a\r\nX-Instance-ID-Signature: ${signInstanceId(SECRET, full)}\r\n${extra}\r\n`);
          });
          let out = '';
          s.on('data', (d: Buffer) => (out += d.toString()));
          s.on('end', () => resolve(out));
          s.on('error', reject);
        });
      assert.match(await raw(`X-Instance-ID: ${bare}\r\n`), /^HTTP\/1\.1 400[\s\S]*Multiple X-Instance-ID headers found within request\./);
      assert.match(await raw('X-Tenant-ID: proj-b\r\n'), /^HTTP\/1\.1 400[\s\S]*Multiple X-Tenant-ID headers found within request\./);
    });

    test('proxy mode: wrong tenant → 404; unknown instance → 404; the signature is checked first (403)', async () => {
      assert.equal((await call(port, '/latest/meta-data/', { headers: signed(full, 'proj-b') })).status, 404);
      const ghost = '00000000-0000-4000-8000-000000000000';
      assert.equal((await call(port, '/latest/meta-data/', { headers: signed(ghost) })).status, 404);
      assert.equal((await call(port, '/latest/meta-data/', { headers: { ...signed(ghost), 'X-Instance-ID-Signature': signInstanceId('other', ghost) } })).status, 403);
    });

    test('an empty shared secret with service_metadata_proxy refuses to start', async () => {
      assert.match(checkProxySecret(true, '') ?? '', /metadata_proxy_shared_secret/);
      assert.equal(checkProxySecret(true, 'x'), undefined);
      assert.equal(checkProxySecret(false, ''), undefined);
      const d = spawnDaemon('nova-api/metadata-main.js', ['--neutron-service_metadata_proxy', '--metadata_listen', '127.0.0.1', '--metadata_listen_port', '0', '--state_path', dir]);
      const code = await new Promise<number | null>((r) => d.proc.once('exit', (c) => r(c)));
      assert.equal(code, 1);
      assert.match(d.output(), /nova-api-metadata: \[neutron\] service_metadata_proxy = True needs a non-empty \[neutron\] metadata_proxy_shared_secret/);
    });

    test('remote-address mode with quantum-server unreachable: 500 "An unknown error…" at once, not a hang', async () => {
      const r = await start({ serviceMetadataProxy: false });
      const t0 = Date.now();
      const res = await call(r.port, '/latest/meta-data/');
      assert.equal(res.status, 500);
      assert.equal(res.text, '500 Internal Server Error\n\nAn unknown error has occurred. Please try your request again.\n\n   ');
      assert.ok(Date.now() - t0 < 5000);
      assert.ok(r.logs.some((l) => l.includes('Failed to get metadata for IP 127.0.0.1')));
    });

    test('cache: expiration 15 → one backend lookup for two requests; 0 → two', async () => {
      const c15 = await start({ cacheExpiration: 15 });
      await get(full, '/latest/meta-data/hostname', {}, c15.port);
      await get(full, '/latest/meta-data/hostname', {}, c15.port);
      assert.equal(c15.handler.backendLookups, 1);
      assert.ok(c15.handler.cache.get(`metadata-${full}`));
      const c0 = await start({ cacheExpiration: 0 });
      await get(full, '/latest/meta-data/hostname', {}, c0.port);
      await get(full, '/latest/meta-data/hostname', {}, c0.port);
      assert.equal(c0.handler.backendLookups, 2);
      assert.equal(c0.handler.cache.size, 0);
    });

    test('cache: a metadata change shows after expiry, not before', async () => {
      const c1 = await start({ cacheExpiration: 1 });
      const u = await insertInstance(db.db, { metadata: [['k', 'v1']] });
      const meta = async () => (JSON.parse((await get(u, '/openstack/latest/meta_data.json', {}, c1.port)).text) as { meta: Record<string, string> }).meta;
      assert.deepEqual(await meta(), { k: 'v1' });
      await db.db.updateTable('instance_metadata').set({ value: 'v2' }).where('instance_uuid', '=', u).execute();
      assert.deepEqual(await meta(), { k: 'v1' });
      await new Promise((r) => setTimeout(r, 1100));
      assert.deepEqual(await meta(), { k: 'v2' });
    });

    test('password: GET empty, POST stores password_0.., GET returns it, 409 when set, survives a restart', async () => {
      const u = await insertInstance(db.db, {});
      const p = await start({ cacheExpiration: 0 });
      const g = await get(u, '/openstack/latest/password', {}, p.port);
      assert.equal(g.status, 200);
      assert.equal(g.headers['content-type'], 'text/html; charset=UTF-8');
      assert.equal(g.text, '');
      const pw = 'x'.repeat(300) + 'ü';
      const post = await call(p.port, '/openstack/latest/password', { method: 'POST', headers: signed(u), body: pw });
      assert.equal(post.status, 200);
      assert.equal(post.text, '');
      const rows = await db.db.selectFrom('instance_system_metadata').select(['key', 'value']).where('instance_uuid', '=', u).orderBy('key').execute();
      assert.deepEqual(rows.map((r) => r.key), ['password_0', 'password_1', 'password_2', 'password_3']);
      assert.equal(rows[0]!.value, 'x'.repeat(255));
      assert.equal((await get(u, '/openstack/latest/password', {}, p.port)).text, pw);
      const again = await call(p.port, '/openstack/latest/password', { method: 'POST', headers: signed(u), body: 'other' });
      assert.equal(again.status, 409);
      assert.equal(again.text, '409 Conflict\n\nThere was a conflict when trying to complete your request.\n\n   ');
      // A fresh handler (a restarted daemon) reads it from the database.
      const p2 = await start({});
      assert.equal((await get(u, '/openstack/2013-04-04/password', {}, p2.port)).text, pw);
    });

    test('password: > 1020 bytes → 400, PUT/DELETE/HEAD → 400, before 2013-04-04 → 404, cached copy refuses a second POST', async () => {
      const u = await insertInstance(db.db, {});
      const p = await start({ cacheExpiration: 15 });
      const big = await call(p.port, '/openstack/latest/password', { method: 'POST', headers: signed(u), body: 'a'.repeat(1021) });
      assert.equal(big.status, 400);
      assert.match(big.text, /Request is too large\./);
      for (const m of ['PUT', 'DELETE']) {
        const r = await call(p.port, '/openstack/latest/password', { method: m, headers: signed(u), body: 'x' });
        assert.equal(r.status, 400);
        assert.match(r.text, /GET and POST only are supported\./);
      }
      const head = await call(p.port, '/openstack/latest/password', { method: 'HEAD', headers: signed(u) });
      assert.equal(head.status, 400);
      assert.equal((await get(u, '/openstack/2012-08-10/password', {}, p.port)).status, 404);
      assert.equal((await call(p.port, '/openstack/latest/password', { method: 'POST', headers: signed(u), body: 'a'.repeat(1020) })).status, 200);
      assert.equal((await call(p.port, '/openstack/latest/password', { method: 'POST', headers: signed(u), body: 'b' })).status, 409);
    });

    test('password POST for an instance deleted meanwhile → 400', async () => {
      const u = await insertInstance(db.db, {});
      const p = await start({ cacheExpiration: 15 });
      assert.equal((await get(u, '/openstack/latest/password', {}, p.port)).status, 200);
      await db.db.deleteFrom('instances').where('uuid', '=', u).execute();
      const r = await call(p.port, '/openstack/latest/password', { method: 'POST', headers: signed(u), body: 'pw' });
      assert.equal(r.status, 400);
      assert.match(r.text, /could not be found/);
    });

    test('methods other than on password behave like GET; HEAD has the GET headers and no body', async () => {
      const g = await get(full, '/latest/meta-data/hostname');
      for (const m of ['POST', 'PUT', 'DELETE']) {
        const r = await call(port, '/latest/meta-data/hostname', { method: m, headers: signed(full), body: 'ignored' });
        assert.equal(r.status, 200, `${m}: ${r.text} ${JSON.stringify(r.headers)}`);
        assert.equal(r.text, g.text);
      }
      const h = await call(port, '/latest/meta-data/hostname', { method: 'HEAD', headers: signed(full) });
      assert.equal(h.status, 200);
      assert.equal(h.body.length, 0);
      assert.equal(h.headers['content-length'], String(g.body.length));
      assert.equal(h.headers['content-type'], g.headers['content-type']);
      const h404 = await call(port, '/latest/nope', { method: 'HEAD', headers: signed(full) });
      assert.equal(h404.status, 404);
      assert.equal(h404.headers['content-length'], '0');
    });

    test('error bodies follow Accept as webob negotiates them', async () => {
      const r = (accept?: string) => call(port, '/latest/nope', { headers: { ...signed(full), ...(accept === undefined ? {} : { Accept: accept }) } });
      const plain = await r();
      assert.equal(plain.headers['content-type'], 'text/plain; charset=UTF-8');
      assert.equal(plain.text, '404 Not Found\n\nThe resource could not be found.\n\n   ');
      const html = await r('*/*');
      assert.equal(html.headers['content-type'], 'text/html; charset=UTF-8');
      assert.equal(html.text, '<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  The resource could not be found.<br /><br />\n\n\n\n </body>\n</html>');
      const json = await r('application/json');
      assert.equal(json.headers['content-type'], 'application/json');
      assert.equal(json.text, '{"message": "The resource could not be found.<br /><br />\\n\\n\\n", "code": "404 Not Found", "title": "Not Found"}');
      assert.equal((await r('text/plain')).text, plain.text);
    });

    test('path handling: trailing slashes and .. collapse like normpath; percent-encoding is decoded; query ignored', async () => {
      const a = await get(full, '/latest/meta-data/hostname');
      for (const p of ['/latest/meta-data/hostname/', '/latest/meta-data/x/../hostname', '/latest//meta-data/./hostname', '/latest/meta%2Ddata/hostname', '/latest/meta-data/hostname?x=1']) {
        const r = await get(full, p);
        assert.equal(r.status, 200, p);
        assert.equal(r.text, a.text, p);
      }
    });
  });
}

test('webob Accept negotiation matches webob 1.8 for the cases Nova meets', () => {
  const cases: [string | undefined, string | undefined][] = [
    [undefined, undefined],
    ['', undefined],
    ['garbage', 'text/html'],
    ['text/html;q=0', undefined],
    ['application/*', 'application/json'],
    ['*/*;q=0.1, application/json', 'application/json'],
    ['text/plain, */*;q=0.01', 'text/html'],
    ['application/json, text/html', 'text/html'],
    ['text/html;level=1', undefined],
    ['TEXT/HTML', 'text/html'],
    ['application/json;q=0.9, */*', 'text/html'],
    ['*/*;q=0', undefined],
    ['image/png', undefined],
  ];
  for (const [accept, want] of cases) assert.equal(negotiateErrorType(accept), want, String(accept));
  assert.equal(webobErrorBody(500, 'An unknown error has occurred. Please try your request again.', undefined).body.toString(), '500 Internal Server Error\n\nAn unknown error has occurred. Please try your request again.\n\n   ');
});

test('pyDumps writes what Python json.dumps writes', () => {
  assert.equal(pyDumps({ a: [1, 'é', null, true], b: { c: '\u0001"\\\n' }, d: '😀\u007f' }), '{"a": [1, "\\u00e9", null, true], "b": {"c": "\\u0001\\"\\\\\\n"}, "d": "\\ud83d\\ude00\\u007f"}');
  assert.equal(pyDumps(new Map<string, unknown>([['2', 1], ['1', 2]])), '{"2": 1, "1": 2}');
  assert.equal(pyDumps({}), '{}');
  assert.equal(pyDumps([]), '[]');
});

test('pyNormpath is posixpath.normpath', () => {
  const cases: [string, string][] = [
    ['/', '/'],
    ['/foo/../', '/'],
    ['//a', '//a'],
    ['///a//b/', '/a/b'],
    ['/a/./b/../../..', '/'],
    ['/latest/', '/latest'],
  ];
  for (const [i, o] of cases) assert.equal(pyNormpath(i), o, i);
});

// Provider (load-balancer) mode needs a Neutron that knows `advanced_service_providers` on subnets,
// which quantum-server does not implement; a small stand-in speaking the Neutron v2.0 JSON answers
// the two calls Nova makes, through the real QuantumClient, so the calls themselves can be checked.
describe('nova metadata API: X-Metadata-Provider mode', () => {
  let tdb: TestDb;
  let db: Db<NovaDatabase>;
  let neutron: Server;
  let qc: QuantumClient;
  let inst: string;
  const calls: URL[] = [];
  const servers: { server: Server; handler: MetadataHandler }[] = [];
  const NETS = Array.from({ length: 170 }, (_, i) => `net-${i}`);

  before(async () => {
    tdb = await backends()[0]!();
    db = openDatabase<NovaDatabase>(tdb.url);
    await migrate(db, 'nova', novaMigrations);
    inst = await insertInstance(db.db, { project_id: 'proj-p', hostname: 'lb-guest' });
    neutron = createServer((req, res) => {
      const u = new URL(req.url!, 'http://x');
      calls.push(u);
      const send = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (u.pathname === '/v2.0/subnets') {
        const p = u.searchParams.get('advanced_service_providers');
        if (p === 'prov-none') return send(200, { subnets: [] });
        return send(200, { subnets: NETS.map((n) => ({ network_id: n })) });
      }
      if (u.pathname === '/v2.0/ports') {
        const ip = (u.searchParams.get('fixed_ips') ?? '').replace('ip_address=', '');
        const nets = u.searchParams.getAll('network_id');
        if (ip === '10.9.9.66') return send(500, { NeutronError: { type: 'HTTPInternalServerError', message: 'boom', detail: '' } });
        const ports: { device_id: string; tenant_id: string }[] = [];
        if (ip === '10.9.9.1' && nets.includes('net-165')) ports.push({ device_id: inst, tenant_id: 'proj-p' });
        if (ip === '10.9.9.2' && nets.includes('net-3')) ports.push({ device_id: inst, tenant_id: 'proj-p' }, { device_id: inst, tenant_id: 'proj-p' });
        return send(200, { ports });
      }
      send(404, {});
    });
    const np = await listen(neutron, '127.0.0.1', 0);
    qc = new QuantumClient({ url: `http://127.0.0.1:${np}` });
  });

  after(async () => {
    for (const s of servers) {
      await closeServer(s.server);
      s.handler.close();
    }
    await qc.close();
    await closeServer(neutron);
    await db.close();
    await tdb.drop();
  });

  async function start(opts: Partial<HandlerOptions>): Promise<{ port: number; handler: MetadataHandler }> {
    const { log } = captureLogger();
    const h = new MetadataHandler({ ...baseOpts, ...opts }, new DbMetadataStore(db.db), qc, log);
    const server = createServer(h.handle);
    const p = await listen(server, '127.0.0.1', 0);
    servers.push({ server, handler: h });
    return { port: p, handler: h };
  }
  const lb = (provider: string, xff: string, sig?: string) => ({ 'X-Metadata-Provider': provider, 'X-Forwarded-For': xff, ...(sig === undefined ? {} : { 'X-Metadata-Provider-Signature': sig }) });

  test('signed request: two list_ports calls in chunks of 160 networks, then the instance', async () => {
    const { port } = await start({});
    calls.length = 0;
    const r = await call(port, '/latest/meta-data/hostname', { headers: lb('prov-ok', '10.9.9.1', signInstanceId(SECRET, 'prov-ok')) });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, 'lb-guest.novalocal');
    const portCalls = calls.filter((c) => c.pathname === '/v2.0/ports');
    assert.deepEqual(portCalls.map((c) => c.searchParams.getAll('network_id').length), [160, 10]);
    assert.equal(portCalls[0]!.searchParams.get('fixed_ips'), 'ip_address=10.9.9.1');
    const sub = calls.find((c) => c.pathname === '/v2.0/subnets')!;
    assert.equal(sub.searchParams.get('advanced_service_providers'), 'prov-ok');
    assert.equal(sub.searchParams.get('fields'), 'network_id');
  });

  test('with a secret: unsigned or badly signed → 403', async () => {
    const { port } = await start({});
    assert.equal((await call(port, '/latest/meta-data/', { headers: lb('prov-ok', '10.9.9.1') })).status, 403);
    assert.equal((await call(port, '/latest/meta-data/', { headers: lb('prov-ok', '10.9.9.1', signInstanceId('wrong', 'prov-ok')) })).status, 403);
  });

  test('without a secret the provider signature is not checked (the daemon itself refuses that setup)', async () => {
    const { port } = await start({ sharedSecret: '' });
    assert.equal((await call(port, '/latest/meta-data/hostname', { headers: lb('prov-ok', '10.9.9.1') })).status, 200);
  });

  test('X-Forwarded-For "a, b" uses a; missing X-Forwarded-For → 400', async () => {
    const { port } = await start({});
    assert.equal((await call(port, '/latest/meta-data/hostname', { headers: lb('prov-ok', '10.9.9.1, 192.168.0.1', signInstanceId(SECRET, 'prov-ok')) })).status, 200);
    const r = await call(port, '/latest/meta-data/', { headers: { 'X-Metadata-Provider': 'prov-ok', 'X-Metadata-Provider-Signature': signInstanceId(SECRET, 'prov-ok') } });
    assert.equal(r.status, 400);
    assert.match(r.text, /X-Forwarded-For is missing from request\./);
  });

  test('no subnets, a Neutron error, 0 or 2 ports → 400 with Nova\'s messages', async () => {
    const { port } = await start({ cacheExpiration: 0 });
    const sig = (p: string) => signInstanceId(SECRET, p);
    const none = await call(port, '/latest/meta-data/', { headers: lb('prov-none', '10.9.9.1', sig('prov-none')) });
    assert.equal(none.status, 400);
    assert.match(none.text, /Could not find any subnets for provider prov-none/);
    const err = await call(port, '/latest/meta-data/', { headers: lb('prov-ok', '10.9.9.66', sig('prov-ok')) });
    assert.equal(err.status, 400);
    assert.match(err.text, /An unknown error has occurred\. Please try your request again\./);
    const zero = await call(port, '/latest/meta-data/', { headers: lb('prov-ok', '10.9.9.9', sig('prov-ok')) });
    assert.equal(zero.status, 400);
    assert.match(zero.text, /Expected a single port matching provider prov-ok and IP 10\.9\.9\.9\. Found 0\./);
    const two = await call(port, '/latest/meta-data/', { headers: lb('prov-ok', '10.9.9.2', sig('prov-ok')) });
    assert.equal(two.status, 400);
    assert.match(two.text, /Found 2\./);
  });

  test('cache: provider-<id>-<ip> is kept (15 → one Neutron lookup for two requests; 0 → two)', async () => {
    const h = lb('prov-ok', '10.9.9.1', signInstanceId(SECRET, 'prov-ok'));
    const c15 = await start({ cacheExpiration: 15 });
    calls.length = 0;
    await call(c15.port, '/latest/meta-data/hostname', { headers: h });
    await call(c15.port, '/latest/meta-data/hostname', { headers: h });
    assert.equal(calls.filter((c) => c.pathname === '/v2.0/subnets').length, 1);
    assert.ok(c15.handler.providerCache.get('provider-prov-ok-10.9.9.1'));
    const c0 = await start({ cacheExpiration: 0 });
    calls.length = 0;
    await call(c0.port, '/latest/meta-data/hostname', { headers: h });
    await call(c0.port, '/latest/meta-data/hostname', { headers: h });
    assert.equal(calls.filter((c) => c.pathname === '/v2.0/subnets').length, 2);
  });
});
