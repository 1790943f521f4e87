// The end-to-end proof, on the all-in-one stack in real namespaces: overlapping tenants, the DHCP path,
// spoofing, cloud-init crawls, faults with kill -9, idempotent start and a clean stop.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildRoot } from './helpers/paths.js';
import { CLOUDINIT_PYTHON, CLOUDINIT_RECORDER } from './helpers/cloudinit.js';
import { getFreePort, sleep, waitFor } from './helpers/proc.js';

const PREFIX = `t${process.pid.toString(36)}${Math.random().toString(36).slice(2, 5)}-`;
const dataDir = mkdtempSync(join(tmpdir(), 'qm-aio-'));
// dnsmasq drops to nobody and re-reads its hosts file on SIGHUP: the state path must be traversable, as /var/lib is.
chmodSync(dataDir, 0o755);
let ports: string[] = [];

function aio(cmd: string): { code: number; out: string } {
  const r = spawnSync(process.execPath, [join(buildRoot, 'src/aio/main.js'), cmd, '--data-dir', dataDir, '--guest-prefix', PREFIX, ...ports], { encoding: 'utf8', timeout: 240_000 });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

interface Curl {
  code: number;
  body: string;
  ms: number;
}

function curl(ns: string, path: string, headers: string[] = [], extra: string[] = []): Curl {
  const t0 = Date.now();
  const r = spawnSync('ip', ['netns', 'exec', ns, 'curl', '-s', '-m', '10', '-w', '\n%{http_code}', ...headers.flatMap((h) => ['-H', h]), ...extra, `http://169.254.169.254${path}`], { encoding: 'utf8' });
  const out = r.stdout ?? '';
  const i = out.lastIndexOf('\n');
  return { body: out.slice(0, i), code: Number(out.slice(i + 1)) || 0, ms: Date.now() - t0 };
}

const ns = (server: string) => `${PREFIX}${server}`;
const netnsList = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
const readPid = (file: string) => Number.parseInt(readFileSync(file, 'utf8'), 10);
/** Alive and not a zombie (nothing reaps orphans on every machine, so a killed daemon may linger as one). */
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
  } catch {
    return false;
  }
};

function manifest(): { routers: string[]; networks: string[] } {
  return JSON.parse(readFileSync(join(dataDir, 'run', 'manifest.json'), 'utf8')) as { routers: string[]; networks: string[] };
}

describe('all-in-one stack', { timeout: 600_000 }, () => {
  let startOut = '';
  before(async () => {
    ports = ['--quantum-port', String(await getFreePort()), '--compute-port', String(await getFreePort()), '--metadata-port', String(await getFreePort())];
    const r = aio('start');
    startOut = r.out;
    assert.equal(r.code, 0, r.out);
  });

  after(() => {
    const r = aio('stop');
    if (r.code !== 0) console.error(r.out);
    // Belt and braces: whatever carries our prefix goes, even if stop failed half-way.
    for (const n of netnsList()) if (n.startsWith(PREFIX)) spawnSync('ip', ['netns', 'delete', n]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('start prints the live proof and the commands to try', () => {
    assert.match(startOut, /Live, from inside each guest namespace/);
    assert.match(startOut, /ip netns exec .*demo-a curl http:\/\/169\.254\.169\.254\/latest\/meta-data\/instance-id/);
  });

  test('overlap: both 10.1.1.2 guests get their own instance, hostname, user-data and key', () => {
    const a = { iid: curl(ns('demo-a'), '/latest/meta-data/instance-id'), md: curl(ns('demo-a'), '/openstack/latest/meta_data.json') };
    const b = { iid: curl(ns('demo-b'), '/latest/meta-data/instance-id'), md: curl(ns('demo-b'), '/openstack/latest/meta_data.json') };
    assert.equal(a.iid.code, 200);
    assert.equal(b.iid.code, 200);
    assert.match(a.iid.body, /^i-[0-9a-f]{8}$/);
    assert.notEqual(a.iid.body, b.iid.body);
    assert.equal(curl(ns('demo-a'), '/latest/meta-data/local-ipv4').body, '10.1.1.2');
    assert.equal(curl(ns('demo-b'), '/latest/meta-data/local-ipv4').body, '10.1.1.2');
    const ma = JSON.parse(a.md.body) as { uuid: string; hostname: string; project_id: string; public_keys: Record<string, string> };
    const mb = JSON.parse(b.md.body) as { uuid: string; hostname: string; project_id: string; public_keys: Record<string, string> };
    assert.notEqual(ma.uuid, mb.uuid);
    assert.equal(ma.hostname, 'demo-a.novalocal');
    assert.equal(mb.hostname, 'demo-b.novalocal');
    assert.equal(ma.project_id, 'tenant-a');
    assert.equal(mb.project_id, 'tenant-b');
    assert.deepEqual(Object.keys(ma.public_keys), ['key-a']);
    assert.deepEqual(Object.keys(mb.public_keys), ['key-b']);
    assert.match(curl(ns('demo-a'), '/latest/user-data').body, /hello from tenant-a/);
    assert.match(curl(ns('demo-b'), '/latest/user-data').body, /hello from tenant-b/);
    assert.notEqual(curl(ns('demo-a'), '/latest/meta-data/public-keys/0/openssh-key').body, curl(ns('demo-b'), '/latest/meta-data/public-keys/0/openssh-key').body);
  });

  test('DHCP path: the isolated guest got its address and the 169.254.169.254 route from our dnsmasq', () => {
    const routes = execFileSync('ip', ['netns', 'exec', ns('demo-iso'), 'ip', '-4', 'route'], { encoding: 'utf8' });
    assert.match(routes, /^169\.254\.169\.254 via 172\.17\.17\.\d+ dev eth0/m, routes);
    const addr = execFileSync('ip', ['netns', 'exec', ns('demo-iso'), 'ip', '-4', 'addr', 'show', 'eth0'], { encoding: 'utf8' });
    assert.match(addr, /inet 172\.17\.17\.\d+\/24 .*dynamic/, addr);
    const md = curl(ns('demo-iso'), '/openstack/latest/meta_data.json');
    assert.equal(md.code, 200, md.body);
    assert.equal((JSON.parse(md.body) as { name: string }).name, 'demo-iso');
  });

  test('spoofing: forged identity headers change nothing', () => {
    const mine = curl(ns('demo-a'), '/latest/meta-data/instance-id').body;
    const theirs = JSON.parse(curl(ns('demo-b'), '/openstack/latest/meta_data.json').body) as { uuid: string };
    const forged = [
      'X-Forwarded-For: 10.1.1.3',
      `X-Instance-ID: ${theirs.uuid}`,
      'X-Instance-ID-Signature: 773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4',
      'X-Tenant-ID: tenant-b',
      `X-Quantum-Router-ID: ${manifest().routers[1] ?? 'x'}`,
      `X-Neutron-Router-ID: ${manifest().routers[1] ?? 'x'}`,
      `X-Quantum-Network-ID: ${manifest().networks[1] ?? 'x'}`,
      `X-Neutron-Network-ID: ${manifest().networks[1] ?? 'x'}`,
    ];
    for (const h of forged) assert.equal(curl(ns('demo-a'), '/latest/meta-data/instance-id', [h]).body, mine, h);
    assert.equal(curl(ns('demo-a'), '/latest/meta-data/instance-id', forged).body, mine, 'all at once');
    assert.equal(curl(ns('demo-a'), '/latest/meta-data/instance-id', forged.map((h) => h.toLowerCase())).body, mine, 'lower case');
  });

  test('cloud-init crawls OpenStack and EC2 metadata in every guest, through both paths', () => {
    const py = CLOUDINIT_RECORDER + String.raw`
base = 'http://169.254.169.254'
res = openstack.MetadataReader(base, timeout=5, retries=0).read_v2()
md = res['metadata']
md2 = ec2.get_instance_metadata(api_version='2009-04-04', metadata_address=base, timeout=5, retries=0)
ud = ec2.get_instance_userdata(api_version='2009-04-04', metadata_address=base, timeout=5, retries=0)
print(json.dumps({'uuid': md['uuid'], 'name': md['name'], 'iid': md2['instance-id'], 'ud': ud.decode() if isinstance(ud, bytes) else ud, 'nd': sorted((res.get('networkdata') or {}).keys()), 'ec2keys': sorted(md2.keys()), 'seen': seen}))
`;
    for (const s of ['demo-a', 'demo-b', 'demo-iso']) {
      const r = spawnSync('ip', ['netns', 'exec', ns(s), CLOUDINIT_PYTHON, '-c', py], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { uuid: string; name: string; iid: string; ud: string; nd: string[]; ec2keys: string[]; seen: Array<[string, number]> };
      // Every URL cloud-init fetched answered 200, except the optional files Nova 404s (vendor data without a provider).
      const failed = got.seen.filter(([u, c]) => c !== 200 && !/vendor_data2?\.json$/.test(u));
      assert.deepEqual(failed, [], `${s}: failed fetches`);
      assert.ok(got.seen.length > 20, `${s}: only ${got.seen.length} fetches`);
      assert.equal(got.name, s);
      assert.equal(got.iid, curl(ns(s), '/latest/meta-data/instance-id').body);
      assert.ok(got.ud.length > 0);
      assert.deepEqual(got.nd, ['links', 'networks', 'services']);
      for (const k of ['ami-id', 'hostname', 'instance-id', 'local-ipv4', 'placement', 'public-keys']) assert.ok(got.ec2keys.includes(k), `${s}: ${k}`);
    }
  });

  test('start again duplicates nothing', () => {
    const before = manifest();
    const r = aio('start');
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /running quantum-server/);
    const m = manifest();
    assert.deepEqual([...new Set(m.routers)].sort(), [...new Set(before.routers)].sort());
    assert.equal(new Set(m.routers).size, 2);
    assert.equal(new Set(m.networks).size, 3);
    // One proxy per router: one pid file, one live process naming the router id.
    for (const r2 of m.routers) {
      const procs = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
        try {
          const c = readFileSync(`/proc/${p}/cmdline`, 'utf8');
          return c.includes(`--router_id=${r2}`) || c.includes(`--router_id\0${r2}`);
        } catch {
          return false;
        }
      });
      assert.equal(procs.length, 1, `proxies for router ${r2}: ${procs.join(',')}`);
    }
  });

  test('faults: kill -9 of each daemon gives fast 5xx or a refused connection, then service returns; no data lost', async () => {
    // A password posted before the faults must survive them.
    const post = curl(ns('demo-a'), '/openstack/latest/password', [], ['-X', 'POST', '--data-binary', 'c2VjcmV0']);
    assert.ok(post.code === 200 || post.code === 409, `password POST ${post.code}`);
    const routerA = manifest().routers[0]!;
    const targets: Array<{ name: string; pidFile: string; restart: boolean }> = [
      { name: 'proxy', pidFile: join(dataDir, 'quantum', 'external', 'pids', `${routerA}.pid`), restart: false },
      { name: 'quantum-metadata-agent', pidFile: join(dataDir, 'run', 'quantum-metadata-agent.pid'), restart: true },
      { name: 'nova-api', pidFile: join(dataDir, 'run', 'nova-api.pid'), restart: true },
      { name: 'quantum-server', pidFile: join(dataDir, 'run', 'quantum-server.pid'), restart: true },
    ];
    for (const t of targets) {
      assert.ok(existsSync(t.pidFile), t.pidFile);
      const pid = readPid(t.pidFile);
      process.kill(pid, 'SIGKILL');
      await waitFor(() => !alive(pid), 5000, 20, `${t.name} to die`);
      const seen: Curl[] = [];
      for (let i = 0; i < 4; i++) {
        const c = curl(ns('demo-a'), '/latest/meta-data/instance-id');
        seen.push(c);
        assert.ok(c.ms < 5000, `${t.name} down: request took ${c.ms} ms`);
        assert.ok(c.code === 200 || c.code >= 500 || c.code === 0, `${t.name} down: status ${c.code}`);
      }
      if (t.restart) assert.equal(aio('start').code, 0);
      await waitFor(() => curl(ns('demo-a'), '/latest/meta-data/instance-id').code === 200, 15_000, 200, `service after ${t.name} restart`);
      if (!t.restart) {
        const again = readPid(t.pidFile);
        assert.notEqual(again, pid, 'the proxy was respawned with a new pid');
      }
      await sleep(100);
    }
    const pw = curl(ns('demo-a'), '/openstack/latest/password');
    assert.equal(pw.code, 200);
    assert.equal(pw.body, 'c2VjcmV0');
    assert.equal(curl(ns('demo-b'), '/latest/meta-data/local-ipv4').body, '10.1.1.2');
  });

  test('stop removes every namespace, bridge and process the stack made, and nothing else', () => {
    const m = manifest();
    const proxyPids = m.routers.map((r) => join(dataDir, 'quantum', 'external', 'pids', `${r}.pid`)).filter(existsSync).map(readPid);
    const daemonPids = readdirSync(join(dataDir, 'run')).filter((f) => f.endsWith('.pid')).map((f) => readPid(join(dataDir, 'run', f)));
    const r = aio('stop');
    assert.equal(r.code, 0, r.out);
    const left = netnsList();
    for (const n of left) assert.ok(!n.startsWith(PREFIX), `guest namespace left: ${n}`);
    for (const id of m.routers) assert.ok(!left.includes(`qrouter-${id}`), `router namespace left: ${id}`);
    for (const id of m.networks) {
      assert.ok(!left.includes(`qdhcp-${id}`), `dhcp namespace left: ${id}`);
      assert.ok(!existsSync(`/sys/class/net/brq${id.slice(0, 11)}`), `bridge left: ${id}`);
    }
    for (const p of [...proxyPids, ...daemonPids]) assert.ok(!alive(p), `process ${p} still alive`);
    // Start again for after()'s stop to have something to do is unnecessary; data is kept for the next start.
    assert.ok(existsSync(join(dataDir, 'quantum', 'quantum.sqlite')));
  });
});
