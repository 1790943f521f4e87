// Session tokens through the whole chain as real daemons (quantum-server, nova-api, the metadata agent, the L3
// agent with one proxy per router, the DHCP agent with the shared proxy) and unmodified guest clients in real
// namespaces: Debian's `ec2metadata` (which dies on anything but a 200 to its token PUT) behind a router and on an
// isolated network, botocore's first-contact sequence (PUT, then GET with the token), and the refusals: another
// tenant's guest with the same IP using a stolen token, an expired token, a token PUT carrying a guest-sent
// X-Forwarded-For, and `[api] metadata_tokens = required` without a token.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { QuantumClient } from '../src/common/quantum-client.js';
import { execute } from '../src/linux/exec.js';
import { bridgeName, dhcpNamespace, routerNamespace, tapDeviceName } from '../src/linux/names.js';
import { NetFixture, type Guest } from './helpers/netns.js';
import { getFreePort, sleep, spawnDaemon, waitFor, waitForListen, type Daemon } from './helpers/proc.js';

const EC2METADATA = '/usr/bin/ec2metadata';
const hasBotocore = existsSync('/usr/lib/python3/dist-packages/botocore/utils.py');
const skip = existsSync(EC2METADATA) ? false : 'ec2metadata missing (apt-get install cloud-guest-utils)';

const fx = new NetFixture();
const daemons = new Map<string, Daemon>();
let state: string;
let etc: string;
let qPort: number;
let mPort: number;
let computeUrl: string;
const IMAGE = '9f1a0c52-6b6e-4d0e-9a55-2f4c3b1d7e10';
const GUEST_IP = '10.41.0.5';

interface Vm {
  id: string;
  guest: Guest;
}
const vms: Record<'a' | 'b' | 'c', Vm> = {} as Record<'a' | 'b' | 'c', Vm>;

function start(name: string, main: string, args: string[]): Daemon {
  const d = spawnDaemon(main, args);
  daemons.set(name, d);
  return d;
}

function writeNovaConf(tokens: 'optional' | 'required'): void {
  writeFileSync(
    join(etc, 'nova.conf'),
    `[DEFAULT]\nstate_path = ${join(state, 'nova')}\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = ${new URL(computeUrl).port}\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\nenabled_apis = osapi_compute,metadata\n` +
      `[database]\nconnection = sqlite:///${join(state, 'nova', 'nova.sqlite')}\n[neutron]\nurl = http://127.0.0.1:${qPort}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = imds-secret\n[api]\nmetadata_cache_expiration = 0\nmetadata_tokens = ${tokens}\n`,
  );
}

async function startNova(): Promise<void> {
  start('nova-api', 'nova-api/main.js', ['--config-file', join(etc, 'nova.conf')]);
  await waitForListen({ host: '127.0.0.1', port: mPort }, 20_000);
  await waitForListen({ host: '127.0.0.1', port: Number(new URL(computeUrl).port) }, 20_000);
}

async function server(project: string, networkId: string, ip: string): Promise<string> {
  const res = await request(`${computeUrl}/v2.1/servers`, {
    method: 'POST',
    headers: { 'x-project-id': project, 'content-type': 'application/json' },
    body: JSON.stringify({ server: { name: `${project}-vm`, flavorRef: '1', imageRef: IMAGE, networks: [{ uuid: networkId, fixed_ip: ip }] } }),
  });
  const text = await res.body.text();
  if (res.statusCode >= 400) throw new Error(`POST /servers: ${res.statusCode} ${text}`);
  return (JSON.parse(text) as { server: { id: string } }).server.id;
}

/** curl from a guest: status and body. */
async function curl(g: Guest, args: string[]): Promise<{ status: number; body: string }> {
  const out = await execute(['curl', '-s', '-m', '5', '-w', '\n%{http_code}', ...args], { netns: g.ns, checkExit: false });
  const s = out.lastIndexOf('\n');
  return { status: Number(out.slice(s + 1)), body: out.slice(0, s) };
}

const MD = 'http://169.254.169.254';
const tokenPut = (g: Guest, ttl: string, extra: string[] = []) => curl(g, ['-X', 'PUT', '-H', `X-aws-ec2-metadata-token-ttl-seconds: ${ttl}`, ...extra, `${MD}/latest/api/token`]);
const withToken = (g: Guest, token: string, path = '/latest/meta-data/instance-id') => curl(g, ['-H', `X-aws-ec2-metadata-token: ${token}`, `${MD}${path}`]);
/** The uuid a guest's metadata names (no token: optional mode). */
async function uuidOf(g: Guest): Promise<string | undefined> {
  const r = await curl(g, [`${MD}/openstack/latest/meta_data.json`]);
  return r.status === 200 ? (JSON.parse(r.body) as { uuid: string }).uuid : undefined;
}
/** Each instance's EC2 id, as its own guest reads it once served. */
const ec2Ids: Partial<Record<'a' | 'b' | 'c', string>> = {};
const ec2Id = (t: 'a' | 'b' | 'c') => ec2Ids[t]!;

before(async () => {
  if (skip) return;
  state = fx.statePath();
  etc = join(state, 'etc');
  await execute(['mkdir', '-p', etc, join(state, 'nova')]);
  [qPort, mPort] = [await getFreePort(), await getFreePort()];
  computeUrl = `http://127.0.0.1:${await getFreePort()}`;
  const qconf = join(etc, 'quantum.conf');
  writeFileSync(qconf, `[DEFAULT]\nstate_path = ${state}\nbind_host = 127.0.0.1\nbind_port = ${qPort}\nquantum_url = http://127.0.0.1:${qPort}\n[database]\nconnection = sqlite:///${join(state, 'quantum.sqlite')}\n[AGENT]\nreport_interval = 5\n`);
  writeNovaConf('optional');
  writeFileSync(join(etc, 'metadata_agent.ini'), `[DEFAULT]\nnova_metadata_host = 127.0.0.1\nnova_metadata_port = ${mPort}\nmetadata_proxy_shared_secret = imds-secret\nmetadata_workers = 0\n`);
  writeFileSync(join(etc, 'l3_agent.ini'), `[DEFAULT]\ninterface_driver = linuxbridge\npolling_interval = 1\nhost = ${fx.prefix}-l3\nmetadata_proxy_mode = per-namespace\n`);
  writeFileSync(join(etc, 'dhcp_agent.ini'), `[DEFAULT]\ninterface_driver = linuxbridge\npolling_interval = 1\nhost = ${fx.prefix}-dhcp\nenable_isolated_metadata = True\nmetadata_proxy_mode = shared\n`);
  start('quantum-server', 'quantum-server/main.js', ['--config-file', qconf]);
  await waitForListen({ host: '127.0.0.1', port: qPort }, 20_000);
  await startNova();
  start('meta', 'metadata-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'metadata_agent.ini')]);
  await waitForListen({ path: join(state, 'metadata_proxy') }, 20_000);
  start('l3', 'l3-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'l3_agent.ini')]);
  start('dhcp', 'dhcp-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'dhcp_agent.ini')]);

  // Tenants a and b: the same CIDR and the same guest address, each behind its own router.
  for (const t of ['a', 'b'] as const) {
    const q = new QuantumClient({ url: `http://127.0.0.1:${qPort}`, projectId: `imds-${t}` });
    const net = await q.createNetwork({ name: `${fx.prefix}-${t}` });
    fx.trackBridge(bridgeName(net.id));
    const sub = await q.createSubnet({ network_id: net.id, cidr: '10.41.0.0/24', ip_version: 4, gateway_ip: '10.41.0.1', enable_dhcp: false });
    const r = await q.createRouter({ name: `${fx.prefix}-${t}-r` });
    fx.trackNamespace(routerNamespace(r.id));
    const info = await q.addRouterInterface(r.id, { subnet_id: sub.id });
    fx.trackLink(tapDeviceName(info.port_id));
    const id = await server(`imds-${t}`, net.id, GUEST_IP);
    const port = (await q.listPorts({ device_id: id }))[0]!;
    vms[t] = { id, guest: fx.guest({ bridge: bridgeName(net.id), mac: port.mac_address, cidr: `${GUEST_IP}/24`, gateway: '10.41.0.1' }) };
    await q.close();
  }
  // Tenant c: an isolated network (no router), metadata from the DHCP namespace.
  const qc = new QuantumClient({ url: `http://127.0.0.1:${qPort}`, projectId: 'imds-c' });
  const net = await qc.createNetwork({ name: `${fx.prefix}-c` });
  fx.trackBridge(bridgeName(net.id));
  fx.trackNamespace(dhcpNamespace(net.id));
  await qc.createSubnet({ network_id: net.id, cidr: '10.42.0.0/24', ip_version: 4, gateway_ip: '10.42.0.1' });
  const id = await server('imds-c', net.id, '10.42.0.5');
  const port = (await qc.listPorts({ device_id: id }))[0]!;
  const dhcpIp = await waitFor(async () => (await qc.listPorts({ network_id: net.id, device_owner: 'network:dhcp' }))[0]?.fixed_ips[0]?.ip_address, 20_000, 200, 'the DHCP port');
  for (const p of await qc.listPorts({ network_id: net.id, device_owner: 'network:dhcp' })) fx.trackLink(tapDeviceName(p.id));
  const g = fx.guest({ bridge: bridgeName(net.id), mac: port.mac_address, cidr: '10.42.0.5/24' });
  // What option 121 would have given it.
  await execute(['ip', 'route', 'add', '169.254.169.254/32', 'via', dhcpIp], { netns: g.ns });
  vms.c = { id, guest: g };
  await qc.close();
  for (const t of ['a', 'b', 'c'] as const) {
    await waitFor(async () => (await uuidOf(vms[t].guest)) === vms[t].id, 40_000, 250, `guest ${t} served`).catch(async (e: Error) => {
      const last = await curl(vms[t].guest, [`${MD}/openstack/latest/meta_data.json`]);
      const logs = [...daemons].map(([n, d]) => `--- ${n}\n${d.output().slice(-3000)}`).join('\n');
      throw new Error(`${e.message}: last answer ${last.status} ${last.body.slice(0, 300)}\n${logs}`);
    });
    ec2Ids[t] = (await curl(vms[t].guest, [`${MD}/latest/meta-data/instance-id`])).body;
  }
  assert.match(ec2Ids.a!, /^i-[0-9a-f]{8}$/);
  assert.equal(new Set(Object.values(ec2Ids)).size, 3);
});

after(async () => {
  for (const d of [...daemons.values()].reverse()) await d.stop().catch(() => undefined);
  fx.cleanup();
});

describe('IMDSv2 session tokens through the chain, with unmodified clients', { skip }, () => {
  test('ec2metadata (token PUT first, then GETs with it) works behind a router and on an isolated network', async () => {
    for (const t of ['a', 'c'] as const) {
      const out = await execute(['timeout', '20', '/usr/bin/python3', EC2METADATA, '--instance-id', '--local-ipv4'], { netns: vms[t].guest.ns });
      assert.deepEqual(out.trim().split('\n'), [ec2Id(t), t === 'a' ? GUEST_IP : '10.42.0.5'], `guest ${t}`);
    }
  });

  test("botocore's first contact: the PUT returns a token, the GET with it answers the instance's zone", { skip: hasBotocore ? false : 'python3-botocore missing' }, async () => {
    const py = [
      'import json',
      'from botocore.utils import InstanceMetadataRegionFetcher',
      'f = InstanceMetadataRegionFetcher(timeout=5, num_attempts=1)',
      't = f._fetch_metadata_token()',
      'r = f._get_request("latest/meta-data/placement/availability-zone/", None, t)',
      'print(json.dumps({"token": t, "status": r.status_code, "az": r.text, "region": f.retrieve_region()}))',
    ].join('\n');
    const out = JSON.parse(await execute(['timeout', '20', '/usr/bin/python3', '-c', py], { netns: vms.b.guest.ns })) as { token: string | null; status: number; az: string; region: string };
    assert.match(out.token ?? '', /^v1\./);
    assert.equal(out.status, 200);
    assert.equal(out.az, 'nova');
    assert.equal(out.region, 'nov');
  });

  test("a token is its instance's: guest b (same IP, other tenant) gets 401 with guest a's token; a bad or expired one is 401", async () => {
    const put = await tokenPut(vms.a.guest, '60');
    assert.equal(put.status, 200);
    assert.equal((await withToken(vms.a.guest, put.body)).body, ec2Id('a'));
    assert.equal((await withToken(vms.b.guest, put.body)).status, 401);
    assert.equal((await withToken(vms.c.guest, put.body)).status, 401);
    assert.equal((await withToken(vms.a.guest, `${put.body.slice(0, -2)}AA`)).status, 401);
    const short = await tokenPut(vms.a.guest, '1');
    assert.equal(short.status, 200);
    await sleep(2100);
    assert.equal((await withToken(vms.a.guest, short.body)).status, 401);
    // Without a token (optional mode) the guest is served as by Nova.
    assert.equal((await curl(vms.b.guest, [`${MD}/latest/meta-data/instance-id`])).body, ec2Id('b'));
  });

  test('TTL rules: missing or out of range is a 400, the TTL echoed to the guest; a token PUT with a guest-sent X-Forwarded-For is a 403 from the proxy', async () => {
    assert.equal((await curl(vms.a.guest, ['-X', 'PUT', `${MD}/latest/api/token`])).status, 400);
    assert.equal((await tokenPut(vms.a.guest, '0')).status, 400);
    assert.equal((await tokenPut(vms.a.guest, '21601')).status, 400);
    assert.equal((await tokenPut(vms.a.guest, '21600')).status, 200);
    for (const t of ['a', 'c'] as const) {
      const r = await tokenPut(vms[t].guest, '60', ['-H', 'X-Forwarded-For: 203.0.113.9']);
      assert.equal(r.status, 403, `guest ${t}`);
      // The token's TTL comes back to the guest as AWS sends it (router path per-namespace, DHCP path shared).
      const head = await execute(['curl', '-s', '-m', '5', '-D', '-', '-o', '/dev/null', '-X', 'PUT', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 321', `${MD}/latest/api/token`], { netns: vms[t].guest.ns });
      assert.match(head, /^x-aws-ec2-metadata-token-ttl-seconds: 321\r$/im, `guest ${t}: ${head}`);
    }
  });

  test('[api] metadata_tokens = required: 401 without a token, ec2metadata and botocore still work', async () => {
    await daemons.get('nova-api')!.stop();
    writeNovaConf('required');
    await startNova();
    try {
      assert.equal((await curl(vms.a.guest, [`${MD}/latest/meta-data/instance-id`])).status, 401);
      assert.equal((await curl(vms.c.guest, [`${MD}/openstack/latest/meta_data.json`])).status, 401);
      const out = await execute(['timeout', '20', '/usr/bin/python3', EC2METADATA, '--instance-id'], { netns: vms.c.guest.ns });
      assert.equal(out.trim(), ec2Id('c'));
    } finally {
      await daemons.get('nova-api')!.stop();
      writeNovaConf('optional');
      await startNova();
    }
  });
});
