// An unmodified openstackclient (Debian's python3-openstackclient 6.0) through a real Keystone catalog against
// the whole stack as real processes with auth_strategy = keystone: quantum-server, nova-api (compute and
// metadata), glance-api, quantum-metadata-agent (Grizzly's credential names) and quantum-l3-agent (Zed's).
// network/subnet/router/port, flavor, keypair, image and server commands all succeed, and the guest of a server
// booted with `openstack server create` gets its own metadata through router proxy → agent → nova.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve as resolve_ } from 'node:path';
import { QuantumClient, type Port } from '../src/common/quantum-client.js';
import { execute } from '../src/linux/exec.js';
import { bridgeName, dhcpNamespace, routerNamespace } from '../src/linux/names.js';
import { keystoneSkip, SERVICE_PASSWORD, startKeystone, USER_PASSWORD, type TestKeystone } from './helpers/keystone.js';
import { NetFixture } from './helpers/netns.js';
import { buildRoot } from './helpers/paths.js';
import { getFreePort, spawnDaemon, waitFor, waitForListen, type Daemon } from './helpers/proc.js';

const OPENSTACK = '/usr/bin/openstack';
const skip = keystoneSkip() ?? (existsSync(OPENSTACK) ? undefined : 'python3-openstackclient is not installed');

describe('openstackclient through the Keystone catalog', { skip }, () => {
  const fx = new NetFixture();
  const daemons: Daemon[] = [];
  let k: TestKeystone;
  let state: string;
  let admin: QuantumClient;

  const osEnv = (user: 'alice' | 'bob') => ({
    PATH: '/usr/bin:/bin',
    HOME: state,
    OS_AUTH_URL: k.ks.url,
    OS_USERNAME: user,
    OS_PASSWORD: USER_PASSWORD,
    OS_PROJECT_NAME: user === 'alice' ? 'project-a' : 'project-b',
    OS_USER_DOMAIN_NAME: 'Default',
    OS_PROJECT_DOMAIN_NAME: 'Default',
    OS_REGION_NAME: k.ks.region,
  });

  /** Our own quantum / nova CLIs with the same OS_* environment. */
  function cli(prog: 'quantum' | 'nova', user: 'alice' | 'bob', args: string[]): Promise<string> {
    return new Promise((resolve, reject) =>
      execFile(process.execPath, [resolve_(buildRoot, `src/cli/${prog}.js`), ...args], { env: osEnv(user), timeout: 30_000 }, (e, out, err) => (e ? reject(new Error(`${prog} ${args.join(' ')}: ${err}${out}`)) : resolve(out))),
    );
  }

  function osc(user: 'alice' | 'bob', args: string[], json = true): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const env = { ...osEnv(user), OS_IDENTITY_API_VERSION: '3', OS_INTERFACE: 'public' };
    const argv = json ? [...args, '-f', 'json'] : args;
    return new Promise((resolve, reject) =>
      execFile(OPENSTACK, argv, { env, timeout: 60_000, maxBuffer: 8 << 20 }, (e, out, err) => {
        if (e) return reject(new Error(`openstack ${args.join(' ')} failed (${e.code}): ${err}${out}`));
        if (!json) return resolve(out);
        try {
          resolve(out.trim() ? JSON.parse(out) : undefined);
        } catch {
          reject(new Error(`openstack ${args.join(' ')}: not JSON: ${out}`));
        }
      }),
    );
  }

  function start(name: string, main: string, args: string[]): Daemon {
    const d = spawnDaemon(main, args);
    daemons.push(d);
    d.proc.once('exit', (code) => {
      if (code) process.stderr.write(`${name} exited ${code}:\n${d.output().slice(-3000)}\n`);
    });
    return d;
  }

  before(async () => {
    k = await startKeystone();
    state = fx.statePath();
    const [qPort, cPort, mPort, gPort] = [await getFreePort(), await getFreePort(), await getFreePort(), await getFreePort()];
    const secret = `osc-secret-${fx.prefix}`;
    const socket = join(state, 'metadata_proxy');
    const etc = join(state, 'etc');
    await execute(['mkdir', '-p', etc, join(state, 'nova'), join(state, 'glance')]);
    const qconf = join(etc, 'quantum.conf');
    writeFileSync(qconf, `[DEFAULT]\nstate_path = ${state}\nbind_host = 127.0.0.1\nbind_port = ${qPort}\nquantum_url = http://127.0.0.1:${qPort}\nauth_strategy = keystone\n[keystone_authtoken]\n${k.authtoken('quantum')}[database]\nconnection = sqlite:///${join(state, 'quantum.sqlite')}\n[AGENT]\nreport_interval = 5\ncheck_child_processes_interval = 1\n`);
    writeFileSync(
      join(etc, 'nova.conf'),
      `[DEFAULT]\nstate_path = ${join(state, 'nova')}\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = ${cPort}\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\n[api]\nauth_strategy = keystone\n[keystone_authtoken]\n${k.authtoken('nova')}[database]\nconnection = sqlite:///${join(state, 'nova', 'nova.sqlite')}\n` +
        `[neutron]\nurl = http://127.0.0.1:${qPort}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = ${secret}\nauth_type = password\nauth_url = ${k.ks.url}\nusername = nova\npassword = ${SERVICE_PASSWORD}\nproject_name = service\nregion_name = ${k.ks.region}\n`,
    );
    writeFileSync(join(etc, 'glance-api.conf'), `[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = ${gPort}\nstate_path = ${join(state, 'glance')}\n[paste_deploy]\nflavor = keystone\n[keystone_authtoken]\n${k.authtoken('glance')}`);
    // Grizzly's metadata_agent.ini names; the L3 agent gets keystoneauth's.
    writeFileSync(join(etc, 'metadata_agent.ini'), `[DEFAULT]\nauth_url = ${k.ks.url.replace(/\/v3$/, '/v2.0')}\nauth_region = ${k.ks.region}\nadmin_tenant_name = service\nadmin_user = quantum\nadmin_password = ${SERVICE_PASSWORD}\nmetadata_proxy_socket = ${socket}\nnova_metadata_host = 127.0.0.1\nnova_metadata_port = ${mPort}\nmetadata_proxy_shared_secret = ${secret}\nmetadata_workers = 0\n`);
    writeFileSync(join(etc, 'l3_agent.ini'), `[DEFAULT]\ninterface_driver = linuxbridge\npolling_interval = 1\nhost = ${fx.prefix}-osc\nmetadata_proxy_socket = ${socket}\nauth_url = ${k.ks.url}\nauth_type = password\nusername = quantum\npassword = ${SERVICE_PASSWORD}\nproject_name = service\nuser_domain_name = Default\nproject_domain_name = Default\nregion_name = ${k.ks.region}\n`);

    await k.ks.service('network', 'quantum', `http://127.0.0.1:${qPort}`);
    await k.ks.service('compute', 'nova', `http://127.0.0.1:${cPort}/v2.1`);
    await k.ks.service('image', 'glance', `http://127.0.0.1:${gPort}`);

    start('quantum-server', 'quantum-server/main.js', ['--config-file', qconf]);
    await waitForListen({ host: '127.0.0.1', port: qPort }, 20_000);
    start('glance-api', 'glance-api/main.js', ['--config-file', join(etc, 'glance-api.conf')]);
    start('nova-api', 'nova-api/main.js', ['--config-file', join(etc, 'nova.conf')]);
    start('quantum-metadata-agent', 'metadata-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'metadata_agent.ini')]);
    start('quantum-l3-agent', 'l3-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'l3_agent.ini')]);
    await waitForListen({ host: '127.0.0.1', port: gPort }, 20_000);
    await waitForListen({ host: '127.0.0.1', port: cPort }, 20_000);
    await waitForListen({ host: '127.0.0.1', port: mPort }, 20_000);
    await waitForListen({ path: socket }, 20_000);
    admin = new QuantumClient({ url: `http://127.0.0.1:${qPort}`, auth: k.ks.admin });
  });

  after(async () => {
    for (const d of daemons.reverse()) await d.stop();
    await admin?.close();
    fx.cleanup();
    await k?.stop();
  });

  test('network, subnet, router and port commands', async () => {
    const net = await osc('alice', ['network', 'create', `${fx.prefix}-net`]);
    fx.trackBridge(bridgeName(net.id));
    fx.trackNamespace(dhcpNamespace(net.id));
    assert.equal(net.project_id, k.projects.a);
    const sub = await osc('alice', ['subnet', 'create', '--network', net.id, '--subnet-range', '10.77.0.0/24', `${fx.prefix}-sub`]);
    assert.equal(sub.cidr, '10.77.0.0/24');
    const r = await osc('alice', ['router', 'create', `${fx.prefix}-r`]);
    fx.trackNamespace(routerNamespace(r.id));
    await osc('alice', ['router', 'add', 'subnet', r.id, sub.id], false);
    const p = await osc('alice', ['port', 'create', '--network', net.id, `${fx.prefix}-p`]);
    await osc('alice', ['port', 'set', '--name', `${fx.prefix}-p2`, p.id], false);
    assert.equal((await osc('alice', ['port', 'show', p.id])).name, `${fx.prefix}-p2`);
    assert.ok(((await osc('alice', ['port', 'list'])) as Array<{ ID: string }>).some((x) => x.ID === p.id));
    await osc('alice', ['port', 'delete', p.id], false);
    assert.ok(((await osc('alice', ['network', 'list'])) as Array<{ ID: string }>).some((x) => x.ID === net.id));
    assert.ok(!((await osc('bob', ['network', 'list'])) as Array<{ ID: string }>).some((x) => x.ID === net.id), "bob does not see alice's network");
    assert.equal(((await osc('alice', ['router', 'show', r.id])).name), `${fx.prefix}-r`);
  });

  test('flavor, keypair and image commands', async () => {
    const flavors = (await osc('alice', ['flavor', 'list'])) as Array<{ Name: string }>;
    assert.ok(flavors.some((f) => f.Name === 'm1.tiny'));
    const kp = await osc('alice', ['keypair', 'create', 'k-osc'], false);
    assert.match(kp, /BEGIN RSA PRIVATE KEY/);
    assert.deepEqual(((await osc('alice', ['keypair', 'list'])) as Array<{ Name: string }>).map((x) => x.Name), ['k-osc']);
    assert.deepEqual(await osc('bob', ['keypair', 'list']), []);
    const disk = join(state, 'disk.img');
    writeFileSync(disk, Buffer.alloc(4096, 7));
    const img = await osc('alice', ['image', 'create', '--file', disk, '--disk-format', 'raw', '--container-format', 'bare', `${fx.prefix}-img`]);
    // openstackclient prints the image as created (queued, as with Glance); the data followed it.
    const shown = await osc('alice', ['image', 'show', `${fx.prefix}-img`]);
    assert.equal(shown.id, img.id);
    assert.equal(shown.status, 'active');
    assert.equal(shown.size, 4096);
    assert.ok(((await osc('alice', ['image', 'list'])) as Array<{ ID: string }>).some((x) => x.ID === img.id));
    assert.ok(!((await osc('bob', ['image', 'list'])) as Array<{ ID: string }>).some((x) => x.ID === img.id));
  });

  test('our quantum and nova CLIs take OS_* and find their endpoints in the catalog', async () => {
    const nets = (await cli('quantum', 'alice', ['net-list', '-f', 'value', '-c', 'name'])).split('\n');
    assert.ok(nets.includes(`${fx.prefix}-net`));
    assert.ok(!(await cli('quantum', 'bob', ['net-list', '-f', 'value', '-c', 'name'])).includes(`${fx.prefix}-net`));
    assert.match(await cli('nova', 'alice', ['flavor-list']), /m1\.tiny/);
    assert.match(await cli('nova', 'alice', ['keypair-list']), /k-osc/);
    assert.doesNotMatch(await cli('nova', 'bob', ['keypair-list']), /k-osc/);
  });

  test('server create/list/show/set, and the guest gets its metadata through the chain; then server delete', async (t) => {
    const server = await osc('alice', ['server', 'create', '--flavor', 'm1.tiny', '--image', `${fx.prefix}-img`, '--network', `${fx.prefix}-net`, '--key-name', 'k-osc', '--wait', `${fx.prefix}-vm`]);
    assert.equal(server.status, 'ACTIVE');
    const list = (await osc('alice', ['server', 'list'])) as Array<{ ID: string; Name: string; Image: string }>;
    assert.deepEqual(list.map((s) => s.ID), [server.id]);
    assert.equal(list[0]!.Image, `${fx.prefix}-img`);
    assert.deepEqual(await osc('bob', ['server', 'list']), []);
    await osc('alice', ['server', 'set', '--name', `${fx.prefix}-vm2`, '--property', 'role=web', server.id], false);
    const shown = await osc('alice', ['server', 'show', `${fx.prefix}-vm2`]);
    assert.equal(shown.id, server.id);
    assert.deepEqual(shown.properties, { role: 'web' });

    const port: Port = await waitFor(async () => (await admin.listPorts({ device_id: server.id }))[0], 10_000, 100, 'server port');
    assert.equal(port.tenant_id, k.projects.a);
    const ip = port.fixed_ips[0]!.ip_address;
    const g = fx.guest({ bridge: bridgeName(port.network_id), mac: port.mac_address, cidr: `${ip}/24`, gateway: '10.77.0.1' });
    const curl = (url: string) => execute(['curl', '-s', '--connect-timeout', '1', '-m', '10', url], { netns: g.ns });
    const t0 = Date.now();
    const iid = await waitFor(async () => {
      const r = await curl('http://169.254.169.254/latest/meta-data/instance-id').catch(() => '');
      return r.startsWith('i-') ? r : undefined;
    }, 40_000, 250, 'instance-id through the router');
    t.diagnostic(`first metadata answer ${Date.now() - t0} ms after plugging the guest`);
    assert.match(iid, /^i-[0-9a-f]{8}$/);
    const meta = JSON.parse(await curl('http://169.254.169.254/openstack/latest/meta_data.json')) as { uuid: string; name: string; project_id: string; keys: Array<{ name: string }>; meta: Record<string, string> };
    assert.equal(meta.uuid, server.id);
    assert.equal(meta.name, `${fx.prefix}-vm2`);
    assert.equal(meta.project_id, k.projects.a);
    assert.equal(meta.keys[0]!.name, 'k-osc');
    assert.equal(meta.meta.role, 'web');
    assert.equal(await curl('http://169.254.169.254/latest/meta-data/local-ipv4'), ip);

    await osc('alice', ['server', 'delete', '--wait', server.id], false);
    assert.deepEqual(await osc('alice', ['server', 'list']), []);
    assert.equal((await admin.listPorts({ device_id: server.id })).length, 0);
  });
});
