// quantum-metadata-doctor against the whole chain as real daemons (quantum-server, nova-api, the metadata agent,
// the L3 agent, a guest in a real namespace): healthy first, then each hop broken on purpose — the REDIRECT rule
// deleted, the proxy killed with its respawn held, the metadata agent stopped, nova-api given another secret,
// the instance deleted, the router interface detached — and each time the doctor names that hop and only that
// one (the hops that depend on it are skipped, not failed), and exits 1; 0 again once repaired.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { QuantumClient } from '../src/common/quantum-client.js';
import { execute } from '../src/linux/exec.js';
import { bridgeName, dhcpNamespace, routerNamespace, tapDeviceName } from '../src/linux/names.js';
import { NetFixture, type Guest } from './helpers/netns.js';
import { buildRoot } from './helpers/paths.js';
import { getFreePort, spawnDaemon, waitFor, waitForListen, type Daemon } from './helpers/proc.js';

const fx = new NetFixture();
const DOCTOR = resolve(buildRoot, 'src/doctor/main.js');
let q: QuantumClient;
let state: string;
let etc: string;
let computeUrl: string;
let mPort: number;
let qconf: string;
let qPort = 0;
const daemons = new Map<string, Daemon>();
let routerId: string;
let subnetId: string;
let serverId: string;
let guest: Guest;
const GUEST_IP = '10.31.0.5';
const IMAGE = '9f1a0c52-6b6e-4d0e-9a55-2f4c3b1d7e10';

function start(name: string, main: string, args: string[]): Daemon {
  const d = spawnDaemon(main, args);
  daemons.set(name, d);
  return d;
}

interface DoctorOut {
  code: number;
  json: { ok: boolean; results: Array<{ kind: string; id: string; ip?: string; first_broken: string | null; hops: Array<{ hop: string; status: string; detail: string; fix?: string }> }> };
}

function doctor(args: string[]): Promise<DoctorOut> {
  return new Promise((res) => {
    execFile(process.execPath, [DOCTOR, '--config-file', qconf, '--config-file', join(etc, 'l3_agent.ini'), '--config-file', join(etc, 'metadata_agent.ini'), '-f', 'json', ...args], { timeout: 60_000 }, (e, out, err) => {
      let json;
      try {
        json = JSON.parse(out) as DoctorOut['json'];
      } catch {
        throw new Error(`doctor printed no JSON (exit ${e?.code}): ${out}\n${err}`);
      }
      res({ code: e ? Number(e.code) : 0, json });
    });
  });
}

const failing = (o: DoctorOut) => o.json.results.flatMap((r) => r.hops.filter((h) => h.status === 'fail').map((h) => h.hop));

async function nova<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await request(`${computeUrl}/v2.1${path}`, { method: method as 'GET', headers: { 'x-project-id': 'doc', 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode >= 400) throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

function writeNovaConf(secret: string): void {
  writeFileSync(
    join(etc, 'nova.conf'),
    `[DEFAULT]\nstate_path = ${join(state, 'nova')}\nosapi_compute_listen = 127.0.0.1\nosapi_compute_listen_port = ${new URL(computeUrl).port}\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\nenabled_apis = osapi_compute,metadata\n[database]\nconnection = sqlite:///${join(state, 'nova', 'nova.sqlite')}\n[neutron]\nurl = http://127.0.0.1:${qPort}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = ${secret}\n[api]\nmetadata_cache_expiration = 0\n`,
  );
}

async function startNova(): Promise<void> {
  start('nova-api', 'nova-api/main.js', ['--config-file', join(etc, 'nova.conf')]);
  await waitForListen({ host: '127.0.0.1', port: mPort }, 20_000);
  await waitForListen({ host: '127.0.0.1', port: Number(new URL(computeUrl).port) }, 20_000);
}

function startL3(): Daemon {
  return start('l3', 'l3-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'l3_agent.ini')]);
}

async function startMeta(): Promise<void> {
  start('meta', 'metadata-agent/main.js', ['--config-file', qconf, '--config-file', join(etc, 'metadata_agent.ini')]);
  await waitForListen({ path: join(state, 'metadata_proxy') }, 20_000);
}

before(async () => {
  state = fx.statePath();
  etc = join(state, 'etc');
  await execute(['mkdir', '-p', etc, join(state, 'nova')]);
  [qPort, mPort] = [await getFreePort(), await getFreePort()];
  computeUrl = `http://127.0.0.1:${await getFreePort()}`;
  qconf = join(etc, 'quantum.conf');
  writeFileSync(qconf, `[DEFAULT]\nstate_path = ${state}\nbind_host = 127.0.0.1\nbind_port = ${qPort}\nquantum_url = http://127.0.0.1:${qPort}\n[database]\nconnection = sqlite:///${join(state, 'quantum.sqlite')}\n[AGENT]\nreport_interval = 5\ncheck_child_processes_interval = 1\n`);
  writeNovaConf('doctor-secret');
  writeFileSync(join(etc, 'metadata_agent.ini'), `[DEFAULT]\nnova_metadata_host = 127.0.0.1\nnova_metadata_port = ${mPort}\nmetadata_proxy_shared_secret = doctor-secret\nmetadata_workers = 0\n`);
  writeFileSync(join(etc, 'l3_agent.ini'), `[DEFAULT]\ninterface_driver = linuxbridge\npolling_interval = 1\nhost = ${fx.prefix}-doc\n`);
  start('quantum-server', 'quantum-server/main.js', ['--config-file', qconf]);
  await waitForListen({ host: '127.0.0.1', port: qPort }, 20_000);
  q = new QuantumClient({ url: `http://127.0.0.1:${qPort}`, projectId: 'doc' });
  await startNova();
  await startMeta();
  startL3();
  const net = await q.createNetwork({ name: `${fx.prefix}-doc` });
  fx.trackBridge(bridgeName(net.id));
  fx.trackNamespace(dhcpNamespace(net.id));
  const sub = await q.createSubnet({ network_id: net.id, cidr: '10.31.0.0/24', ip_version: 4, gateway_ip: '10.31.0.1' });
  subnetId = sub.id;
  const r = await q.createRouter({ name: `${fx.prefix}-doc-r` });
  routerId = r.id;
  fx.trackNamespace(routerNamespace(r.id));
  const info = await q.addRouterInterface(r.id, { subnet_id: sub.id });
  fx.trackLink(tapDeviceName(info.port_id));
  const srv = await nova<{ server: { id: string } }>('POST', '/servers', { server: { name: 'doc-vm', flavorRef: '1', imageRef: IMAGE, networks: [{ uuid: net.id, fixed_ip: GUEST_IP }] } });
  serverId = srv.server.id;
  const port = (await q.listPorts({ device_id: serverId }))[0]!;
  guest = fx.guest({ bridge: bridgeName(net.id), mac: port.mac_address, cidr: `${GUEST_IP}/24`, gateway: '10.31.0.1' });
  await waitFor(async () => (await execute(['curl', '-s', '-m', '2', 'http://169.254.169.254/latest/meta-data/instance-id'], { netns: guest.ns }).catch(() => '')).startsWith('i-'), 30_000, 200, 'the guest served');
});

after(async () => {
  for (const d of [...daemons.values()].reverse()) await d.stop().catch(() => undefined);
  await q?.close();
  fx.cleanup();
});

describe('quantum-metadata-doctor', () => {
  test('a healthy path: every hop ok, exit 0; --instance finds the router and address itself', async () => {
    const o = await doctor(['--router_id', routerId, '--ip', GUEST_IP]);
    assert.equal(o.code, 0, JSON.stringify(o.json, null, 1));
    assert.equal(o.json.ok, true);
    assert.deepEqual(o.json.results[0]!.hops.map((h) => h.hop), ['namespace', 'devices', 'iptables', 'proxy process', 'proxy listening', 'request in namespace', 'metadata agent socket', 'lookup', 'nova signature', 'nova metadata', 'through the agent']);
    const byInstance = await doctor(['--instance', serverId]);
    assert.equal(byInstance.code, 0);
    assert.equal(byInstance.json.results[0]!.id, routerId);
    assert.equal(byInstance.json.results[0]!.ip, GUEST_IP);
  });

  test('the REDIRECT rule deleted: iptables, and only it', async () => {
    const ns = routerNamespace(routerId);
    const rule = ['-t', 'nat', '-D', 'quantum-l3-agent-PREROUTING', '-d', '169.254.169.254/32', '-i', 'qr-+', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '9697'];
    await execute(['iptables', ...rule], { netns: ns });
    try {
      const o = await doctor(['--router_id', routerId, '--ip', GUEST_IP]);
      assert.equal(o.code, 1);
      assert.deepEqual(failing(o), ['iptables']);
      assert.match(o.json.results[0]!.hops.find((h) => h.hop === 'iptables')!.detail, /REDIRECT --to-ports 9697/);
    } finally {
      await execute(['iptables', ...rule.map((a) => (a === '-D' ? '-A' : a))], { netns: ns });
    }
    assert.equal((await doctor(['--router_id', routerId, '--ip', GUEST_IP])).code, 0);
  });

  test('the proxy killed with its respawn held (the L3 agent stopped): proxy process, and only it', async () => {
    await daemons.get('l3')!.stop();
    const pid = Number(readFileSync(join(state, 'external', 'pids', `${routerId}.pid`), 'utf8'));
    process.kill(pid, 'SIGKILL');
    await waitFor(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 5000);
    const o = await doctor(['--router_id', routerId, '--ip', GUEST_IP]);
    assert.equal(o.code, 1);
    assert.deepEqual(failing(o), ['proxy process']);
    assert.equal(o.json.results[0]!.first_broken, 'proxy process');
    startL3();
    await waitFor(async () => (await doctor(['--router_id', routerId, '--ip', GUEST_IP])).code === 0, 20_000, 500, 'the restarted agent respawned the proxy');
  });

  test('the metadata agent stopped: its socket, and only it', async () => {
    await daemons.get('meta')!.stop();
    const o = await doctor(['--router_id', routerId, '--ip', GUEST_IP]);
    assert.equal(o.code, 1);
    assert.deepEqual(failing(o), ['metadata agent socket']);
    await startMeta();
    assert.equal((await doctor(['--router_id', routerId, '--ip', GUEST_IP])).code, 0);
  });

  test('nova-api with another shared secret: the signature, named as a secret mismatch', async () => {
    await daemons.get('nova-api')!.stop();
    writeNovaConf('another-secret');
    await startNova();
    try {
      const o = await doctor(['--router_id', routerId, '--ip', GUEST_IP]);
      assert.equal(o.code, 1);
      assert.deepEqual(failing(o), ['nova signature']);
      assert.match(o.json.results[0]!.hops.find((h) => h.hop === 'nova signature')!.fix!, /metadata_proxy_shared_secret/);
    } finally {
      await daemons.get('nova-api')!.stop();
      writeNovaConf('doctor-secret');
      await startNova();
    }
    assert.equal((await doctor(['--router_id', routerId, '--ip', GUEST_IP])).code, 0);
  });

  test('the router interface detached: devices, and only it', async () => {
    await q.removeRouterInterface(routerId, { subnet_id: subnetId });
    try {
      const o = await doctor(['--router_id', routerId, '--ip', GUEST_IP]);
      assert.equal(o.code, 1);
      assert.deepEqual(failing(o), ['devices']);
    } finally {
      await q.addRouterInterface(routerId, { subnet_id: subnetId });
    }
    await waitFor(async () => (await doctor(['--router_id', routerId, '--ip', GUEST_IP])).code === 0, 20_000, 500, 'interface back');
  });

  test('the instance deleted: the lookup, and only it', async () => {
    await nova('DELETE', `/servers/${serverId}`);
    const o = await doctor(['--router_id', routerId, '--ip', GUEST_IP]);
    assert.equal(o.code, 1);
    assert.deepEqual(failing(o), ['lookup']);
    assert.match(o.json.results[0]!.hops.find((h) => h.hop === 'lookup')!.detail, /no port holds 10\.31\.0\.5/);
    const gone = await doctor(['--instance', serverId]);
    assert.equal(gone.code, 1);
  });
});
