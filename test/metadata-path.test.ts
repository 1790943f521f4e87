// The whole metadata path, every piece a real process: guest → quantum-ns-metadata-proxy → Unix socket →
// quantum-metadata-agent → quantum-server (lookup) → nova-api metadata (service_metadata_proxy=True,
// HMAC). Guests are loopback source addresses (127.0.0.x): the proxy takes X-Forwarded-For from the TCP
// peer, so binding the client socket to 127.0.0.5 plays the guest whose port holds 127.0.0.5. Two
// tenants each have a guest at 127.0.0.5 behind their own router's proxy.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { join } from 'node:path';
import { signInstanceId } from '../src/common/hmac.js';
import { getFreePort, guestGet, rawRequest, spawnDaemon, startProxy, startQuantumServer, tempDir, waitFor, waitForListen, writeIni, type RunningQuantum, type TenantNet } from './helpers/mdpath.js';
import { sleep, type Daemon } from './helpers/proc.js';

const SECRET = 'metadata-path-secret';
const IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6';

interface Guest {
  name: string;
  tenant: string;
  ip: string;
  uuid: string;
}

async function startNova(dir: string, quantumUrl: string, computePort: number, metadataPort: number): Promise<Daemon> {
  const d = spawnDaemon('nova-api/main.js', [
    '--state_path', dir,
    '--osapi_compute_listen', '127.0.0.1', '--osapi_compute_listen_port', String(computePort),
    '--metadata_listen', '127.0.0.1', '--metadata_listen_port', String(metadataPort),
    '--neutron-url', quantumUrl,
    '--neutron-service_metadata_proxy',
    `--neutron-metadata_proxy_shared_secret=${SECRET}`,
  ]);
  try {
    await waitForListen({ host: '127.0.0.1', port: computePort }, 20_000);
    await waitForListen({ host: '127.0.0.1', port: metadataPort }, 20_000);
  } catch {
    await d.stop();
    throw new Error(`nova-api did not start: ${d.output()}`);
  }
  return d;
}

function computeApi(port: number, method: string, path: string, project: string, body?: unknown): Promise<{ status: number; json: Record<string, any> }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ host: '127.0.0.1', port, method, path: `/v2.1${path}`, agent: false, headers: { connection: 'close', 'x-project-id': project, ...(payload ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}) } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: b ? JSON.parse(b) : {} }));
    });
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

describe('metadata path: proxy → agent → quantum-server → nova-api', () => {
  const dir = tempDir();
  const state = join(dir.path, 'quantum');
  const sock = join(state, 'metadata_proxy');
  let qs: RunningQuantum;
  let nova: Daemon;
  let agent: Daemon;
  let computePort: number;
  let metadataPort: number;
  let agentArgs: string[];
  const nets: Record<string, TenantNet> = {};
  const guests: Record<string, Guest> = {};
  const proxies: Record<string, { port: number; d: Daemon }> = {};

  const startAgent = async () => {
    const d = spawnDaemon('metadata-agent/main.js', agentArgs);
    await waitForListen({ path: sock }, 10_000).catch((e: unknown) => {
      throw new Error(`agent did not start: ${String(e)} ${d.output()}`);
    });
    return d;
  };

  before(async () => {
    qs = await startQuantumServer(dir.path);
    computePort = await getFreePort();
    metadataPort = await getFreePort();
    nova = await startNova(join(dir.path, 'nova'), qs.url, computePort, metadataPort);
    // Two tenants, the same loopback subnet, each behind its own router.
    for (const t of ['tenant-a', 'tenant-b']) {
      const net = await qs.client.createNetwork({ name: `net-${t}`, tenant_id: t });
      const sub = await qs.client.createSubnet({ network_id: net.id, cidr: '127.0.0.0/24', ip_version: 4, tenant_id: t, gateway_ip: '127.0.0.254' });
      const router = await qs.client.createRouter({ name: `router-${t}`, tenant_id: t });
      await qs.client.addRouterInterface(router.id, { subnet_id: sub.id });
      nets[t] = { tenantId: t, networkId: net.id, subnetId: sub.id, routerId: router.id };
    }
    const boot = async (name: string, tenant: string, ip: string) => {
      const r = await computeApi(computePort, 'POST', '/servers', tenant, { server: { name, flavorRef: '1', imageRef: IMAGE, networks: [{ uuid: nets[tenant]!.networkId, fixed_ip: ip }] } });
      assert.equal(r.status, 202, JSON.stringify(r.json));
      guests[name] = { name, tenant, ip, uuid: r.json.server.id as string };
    };
    await boot('guest-a', 'tenant-a', '127.0.0.5');
    await boot('guest-b', 'tenant-b', '127.0.0.5');
    await boot('guest-a2', 'tenant-a', '127.0.0.6');

    const conf = writeIni(join(dir.path, 'quantum.conf'), { DEFAULT: { state_path: state, quantum_url: qs.url, host: 'mdpath-node' } });
    const ini = writeIni(join(dir.path, 'metadata_agent.ini'), {
      DEFAULT: { nova_metadata_host: '127.0.0.1', nova_metadata_port: metadataPort, metadata_proxy_shared_secret: SECRET, metadata_workers: 1 },
      AGENT: { report_interval: 1 },
    });
    agentArgs = ['--config-file', conf, '--config-file', ini];
    agent = await startAgent();
    for (const [key, args] of [
      ['router-a', [`--router_id=${nets['tenant-a']!.routerId}`]],
      ['router-b', [`--router_id=${nets['tenant-b']!.routerId}`]],
      ['net-b', [`--network_id=${nets['tenant-b']!.networkId}`]],
    ] as const) {
      const port = await getFreePort();
      proxies[key] = { port, d: await startProxy([...args, `--state_path=${state}`, '--timeout_server=5'], port) };
    }
  });

  after(async () => {
    for (const p of Object.values(proxies)) await p.d.stop();
    await agent?.stop();
    await nova?.stop();
    await qs?.stop();
    dir.rm();
  });

  const uuidVia = async (proxy: string, ip: string, headers: Record<string, string> = {}) => {
    const r = await guestGet(proxies[proxy]!.port, '/openstack/latest/meta_data.json', ip, headers);
    assert.equal(r.status, 200, r.body);
    return (JSON.parse(r.body) as { uuid: string }).uuid;
  };

  test('each guest gets its own instance; the same IP in two tenants behind two routers stays apart', async () => {
    assert.equal(await uuidVia('router-a', '127.0.0.5'), guests['guest-a']!.uuid);
    assert.equal(await uuidVia('router-b', '127.0.0.5'), guests['guest-b']!.uuid);
    assert.equal(await uuidVia('router-a', '127.0.0.6'), guests['guest-a2']!.uuid);
    assert.equal(await uuidVia('net-b', '127.0.0.5'), guests['guest-b']!.uuid, 'the DHCP (network) path');
    // EC2 tree too.
    const ec2 = await guestGet(proxies['router-b']!.port, '/latest/meta-data/local-ipv4', '127.0.0.5');
    assert.deepEqual([ec2.status, ec2.body], [200, '127.0.0.5']);
    // No port at that address on router b's networks.
    assert.equal((await guestGet(proxies['router-b']!.port, '/openstack/latest/meta_data.json', '127.0.0.6')).status, 404);
    // The agent reported itself.
    const ag = await waitFor(async () => (await qs.client.listAgents({ host: 'mdpath-node' }))[0], 5000, 100, 'agent report');
    assert.equal(ag.agent_type, 'Metadata agent');
  });

  test('spoof corpus: no identity header, casing, duplicate, fold, chain or raw request changes whose metadata a guest gets', async (t) => {
    const a = guests['guest-a']!;
    const b = guests['guest-b']!;
    const a2 = guests['guest-a2']!;
    const rb = nets['tenant-b']!.routerId;
    const nb = nets['tenant-b']!.networkId;
    const forged = signInstanceId(SECRET, b.uuid); // even a correctly signed header (a leaked secret) is dropped
    const headerSets: Record<string, string>[] = [
      { 'X-Instance-ID': b.uuid, 'X-Instance-ID-Signature': forged, 'X-Tenant-ID': 'tenant-b' },
      { 'X-Forwarded-For': '127.0.0.6' },
      { 'X-Forwarded-For': '127.0.0.6, 127.0.0.6' },
      { 'X-Forwarded-For': '127.0.0.5, 127.0.0.6' },
      { 'X-Neutron-Router-ID': rb, 'X-Quantum-Router-ID': rb },
      { 'X-Neutron-Network-ID': nb, 'X-Quantum-Network-ID': nb },
      { 'X-OVN-Network-ID': nb, 'X-Metadata-Provider': 'x', 'X-Metadata-Provider-Signature': 'y' },
      { 'x-InStAnCe-iD': b.uuid, 'X-TENANT-ID': 'tenant-b', 'x-forwarded-FOR': '127.0.0.6' },
      { X_Forwarded_For: '127.0.0.6', X_Instance_ID: b.uuid, X_Tenant_ID: 'tenant-b', 'X-Instance_ID-Signature': forged },
      { Forwarded: 'for=127.0.0.6', 'X-Real-IP': '127.0.0.6', 'X-Client-IP': '127.0.0.6', 'True-Client-IP': '127.0.0.6' },
    ];
    const ok = (body: string, what: string) => {
      assert.ok(!body.includes(b.uuid) && !body.includes(a2.uuid), `${what}: leaked another instance`);
    };
    for (const h of headerSets) {
      for (const proxy of ['router-a']) {
        const got = await uuidVia(proxy, a.ip, h);
        assert.equal(got, a.uuid, `headers ${JSON.stringify(h)}`);
      }
    }
    // Raw requests node's client will not write.
    const port = proxies['router-a']!.port;
    const raw = (lines: string[]) => `GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n${lines.map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`;
    const rawCorpus: [string, string][] = [
      ['duplicate XFF', raw(['X-Forwarded-For: 127.0.0.6', 'X-Forwarded-For: 127.0.0.6'])],
      ['duplicate instance ids', raw([`X-Instance-ID: ${b.uuid}`, `X-Instance-ID: ${b.uuid}`, `X-Instance-ID-Signature: ${forged}`, 'X-Tenant-ID: tenant-b'])],
      ['duplicate router ids', raw([`X-Neutron-Router-ID: ${rb}`, `X-Neutron-Router-ID: ${rb}`])],
      ['obs-fold XFF', raw(['X-Forwarded-For: 127.0.0.5,', ' 127.0.0.6'])],
      ['obs-fold instance id', raw(['X-Foo: bar', `\tX-Instance-ID: ${b.uuid}`])],
      ['space before colon', raw([`X-Instance-ID : ${b.uuid}`])],
      ['tab in name', raw([`X-Instance-ID\t: ${b.uuid}`])],
      ['NUL in value', raw([`X-Forwarded-For: 127.0.0.6\0`])],
      ['bare LF lines', `GET /openstack/latest/meta_data.json HTTP/1.1\nHost: x\nX-Forwarded-For: 127.0.0.6\nX-Instance-ID: ${b.uuid}\nConnection: close\n\n`],
      ['HTTP/1.0', `GET /openstack/latest/meta_data.json HTTP/1.0\r\nX-Forwarded-For: 127.0.0.6\r\nX-Instance-ID: ${b.uuid}\r\n\r\n`],
      ['absolute-form other host', `GET http://10.9.9.9:8775/openstack/latest/meta_data.json HTTP/1.1\r\nHost: 10.9.9.9\r\nX-Forwarded-For: 127.0.0.6\r\nConnection: close\r\n\r\n`],
      ['UTF-8 lookalike name', raw([`X-Instance-\u0130D: ${b.uuid}`])],
      ['huge XFF chain', raw([`X-Forwarded-For: ${Array(300).fill('127.0.0.6').join(', ')}`])],
    ];
    for (const [what, req] of rawCorpus) {
      const r = await rawRequest(port, Buffer.from(req, 'utf8'), { localAddress: a.ip });
      t.diagnostic(`${what}: ${r.status}`);
      ok(r.raw, what);
      if (r.status === 200) assert.equal((JSON.parse(r.body) as { uuid: string }).uuid, a.uuid, what);
      else assert.ok(r.status >= 400 && r.status < 500, `${what}: status ${r.status}`);
    }
    // Pipelined requests on one connection, each with different spoofs: every answer is guest a's.
    const two = raw([`X-Instance-ID: ${b.uuid}`]).replace('Connection: close\r\n', '') + raw(['X-Forwarded-For: 127.0.0.6']);
    const r = await rawRequest(port, two, { localAddress: a.ip });
    ok(r.raw, 'pipelined');
    assert.equal((r.raw.match(new RegExp(a.uuid, 'g')) ?? []).length >= 1, true);
    // Guest b's view, spoofing a's identity, stays b.
    assert.equal(await uuidVia('router-b', b.ip, { 'X-Instance-ID': a.uuid, 'X-Tenant-ID': 'tenant-a', 'X-Neutron-Router-ID': nets['tenant-a']!.routerId }), b.uuid);
  });

  /** Requests from guest a in `lanes` parallel loops for `ms`; returns every status with its latency. */
  async function load(lanes: number, ms: number): Promise<{ status: number; ms: number }[]> {
    const out: { status: number; ms: number }[] = [];
    const end = Date.now() + ms;
    await Promise.all(
      Array.from({ length: lanes }, async () => {
        while (Date.now() < end) {
          const t0 = Date.now();
          const r = await guestGet(proxies['router-a']!.port, '/openstack/latest/meta_data.json', '127.0.0.5').catch(() => ({ status: -1, body: '' }));
          out.push({ status: r.status, ms: Date.now() - t0 });
          if (r.status === 200) assert.equal((JSON.parse(r.body) as { uuid: string }).uuid, guests['guest-a']!.uuid);
        }
      }),
    );
    return out;
  }

  test('killing the agent mid-load gives fast 5xx, no hung request; a new agent is picked up without touching the proxy', async () => {
    const proxyPid = proxies['router-a']!.d.pid;
    const running = load(6, 2500);
    await sleep(700);
    await agent.stop('SIGKILL');
    const res = await running;
    const failed = res.filter((r) => r.status !== 200);
    assert.ok(res.some((r) => r.status === 200), 'served before the kill');
    assert.ok(failed.length > 0, 'the kill was seen');
    assert.ok(failed.every((r) => r.status === 503 || r.status === 502), `statuses: ${[...new Set(failed.map((r) => r.status))].join(',')}`);
    assert.ok(Math.max(...failed.map((r) => r.ms)) < 1000, `slowest failure ${Math.max(...failed.map((r) => r.ms))} ms`);
    agent = await startAgent(); // the stale socket file is replaced
    const after = await load(4, 800);
    assert.ok(after.every((r) => r.status === 200), `after restart: ${[...new Set(after.map((r) => r.status))].join(',')}`);
    assert.equal(proxies['router-a']!.d.pid, proxyPid);
    assert.equal(proxies['router-a']!.d.proc.exitCode, null, 'the proxy was not restarted');
  });

  test('killing nova-api mid-load gives fast 503s; nova back → 200 again', async () => {
    const running = load(6, 2500);
    await sleep(700);
    await nova.stop('SIGKILL');
    const res = await running;
    const failed = res.filter((r) => r.status !== 200);
    assert.ok(failed.length > 0);
    assert.ok(failed.every((r) => r.status === 503), `statuses: ${[...new Set(failed.map((r) => r.status))].join(',')}`);
    assert.ok(Math.max(...failed.map((r) => r.ms)) < 1000, `slowest failure ${Math.max(...failed.map((r) => r.ms))} ms`);
    nova = await startNova(join(dir.path, 'nova'), qs.url, computePort, metadataPort);
    const after = await load(4, 800);
    assert.ok(after.every((r) => r.status === 200), `after restart: ${[...new Set(after.map((r) => r.status))].join(',')}`);
  });

  test('quantum-server down → 503 (not 500), and back', async () => {
    const port = qs.port;
    await qs.daemon.stop('SIGKILL');
    const r = await guestGet(proxies['router-a']!.port, '/openstack/latest/meta_data.json', '127.0.0.5');
    assert.equal(r.status, 503);
    qs = await (async () => {
      const d = spawnDaemon('quantum-server/main.js', ['--bind_host=127.0.0.1', `--bind_port=${port}`, `--state_path=${dir.path}`, `--database-connection=sqlite:///${join(dir.path, 'quantum.sqlite')}`]);
      await waitForListen({ host: '127.0.0.1', port }, 20_000);
      return { ...qs, daemon: d, stop: async () => { await qs.client.close(); await d.stop(); } };
    })();
    assert.equal(await uuidVia('router-a', '127.0.0.5'), guests['guest-a']!.uuid);
  });

});
