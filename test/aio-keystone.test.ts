// quantum-aio start --keystone end to end, once: a local Keystone bootstrapped on the machine's MariaDB, the catalog,
// every daemon with auth_strategy = keystone, the demo built with its tenants' tokens (the two 10.1.1.2 guests still
// get their own instances), the openrc files working with our CLIs, status listing Keystone, a start in the wrong
// mode refused, and stop ending Keystone by pid (its database kept, then dropped by --purge) and removing the rest.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { KeystoneSession } from '../src/common/keystone.js';
import { dropKeystoneDatabase, keystoneDatabaseExists } from '../src/aio/keystone.js';
import { keystoneDatabase } from '../src/aio/keystone-stack.js';
import { layout } from '../src/aio/stack.js';
import { keystoneSkip } from './helpers/keystone.js';
import { buildRoot } from './helpers/paths.js';
import { getFreePort } from './helpers/proc.js';

const skip = keystoneSkip();
const PREFIX = `k${process.pid.toString(36)}${Math.random().toString(36).slice(2, 5)}-`;
const dataDir = mkdtempSync(join(tmpdir(), 'qm-aio-ks-'));
// dnsmasq drops to nobody and re-reads its hosts file on SIGHUP: the state path must be traversable, as /var/lib is.
chmodSync(dataDir, 0o755);
const database = keystoneDatabase(layout(dataDir));
let ports: Record<string, number> = {};

function aio(args: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, [join(buildRoot, 'src/aio/main.js'), ...args, '--data-dir', dataDir, '--guest-prefix', PREFIX], { encoding: 'utf8', timeout: 240_000 });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

const ns = (server: string) => `${PREFIX}${server}`;
const netnsList = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
  } catch {
    return false;
  }
};

function curl(server: string, path: string): { code: number; body: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns(server), 'curl', '-s', '-m', '10', '-w', '\n%{http_code}', `http://169.254.169.254${path}`], { encoding: 'utf8' });
  const out = r.stdout ?? '';
  const i = out.lastIndexOf('\n');
  return { body: out.slice(0, i), code: Number(out.slice(i + 1)) || 0 };
}

/** The OS_* variables of an openrc file the stack wrote. */
function openrc(who: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of readFileSync(join(dataDir, 'etc', `openrc-${who}`), 'utf8').matchAll(/^export (OS_[A-Z_]+)=(.*)$/gm)) env[m[1]!] = m[2]!;
  return env;
}

function session(who: string): KeystoneSession {
  const e = openrc(who);
  return new KeystoneSession({ authUrl: e.OS_AUTH_URL!, username: e.OS_USERNAME!, password: e.OS_PASSWORD!, projectName: e.OS_PROJECT_NAME!, regionName: e.OS_REGION_NAME });
}

function cli(prog: 'quantum' | 'nova', who: string, args: string[]): string {
  return execFileSync(process.execPath, [join(buildRoot, `src/cli/${prog}.js`), ...args], { env: { PATH: '/usr/bin:/bin', ...openrc(who) }, encoding: 'utf8', timeout: 30_000 });
}

const daemonPids = () => readdirSync(join(dataDir, 'run')).filter((f) => f.endsWith('.pid')).map((f) => ({ name: f.slice(0, -4), pid: Number.parseInt(readFileSync(join(dataDir, 'run', f), 'utf8'), 10) }));

describe('all-in-one stack with --keystone', { skip, timeout: 600_000 }, () => {
  let startOut = '';
  let built: { routers: string[]; networks: string[] } = { routers: [], networks: [] };
  const sessions: KeystoneSession[] = [];
  before(async () => {
    for (const k of ['quantum', 'compute', 'metadata', 'image', 'keystone']) ports[k] = await getFreePort();
    const r = aio(['start', '--keystone', ...Object.entries(ports).flatMap(([k, p]) => [`--${k}-port`, String(p)])]);
    startOut = r.out;
    try {
      built = JSON.parse(readFileSync(join(dataDir, 'run', 'manifest.json'), 'utf8')) as typeof built;
    } catch {
      /* start failed before the demo: nothing of it to clean */
    }
    assert.equal(r.code, 0, r.out);
  });

  after(async () => {
    for (const s of sessions) await s.close();
    const r = aio(['stop', '--purge']);
    if (r.code !== 0) console.error(r.out);
    // Belt and braces: what carries our prefix or names our data dir goes, even if stop failed half-way.
    const mine = new Set([...built.routers.map((id) => `qrouter-${id}`), ...built.networks.map((id) => `qdhcp-${id}`)]);
    for (const n of netnsList()) if (n.startsWith(PREFIX) || mine.has(n)) spawnSync('ip', ['netns', 'delete', n]);
    for (const id of built.networks) if (existsSync(`/sys/class/net/brq${id.slice(0, 11)}`)) spawnSync('ip', ['link', 'delete', `brq${id.slice(0, 11)}`]);
    if (existsSync(join(dataDir, 'run'))) {
      for (const { pid } of daemonPids()) {
        if (alive(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dataDir)) process.kill(pid, 'SIGKILL');
      }
    }
    await dropKeystoneDatabase(database).catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('start bootstraps Keystone, starts glance-api and prints openrc snippets for the admin and both demo users', () => {
    assert.match(startOut, new RegExp(`bootstrapped keystone +database ${database}`));
    assert.match(startOut, /started keystone +pid \d+/);
    assert.match(startOut, /started glance-api +pid \d+/);
    assert.match(startOut, new RegExp(`Keystone at http://127\\.0\\.0\\.1:${ports.keystone}/v3`));
    for (const [who, user, project] of [['admin', 'admin', 'admin'], ['tenant-a', 'user-a', 'tenant-a'], ['tenant-b', 'user-b', 'tenant-b']] as const) {
      const file = join(dataDir, 'etc', `openrc-${who}`);
      assert.equal(statSync(file).mode & 0o777, 0o600, file);
      const e = openrc(who);
      assert.equal(e.OS_USERNAME, user);
      assert.equal(e.OS_PROJECT_NAME, project);
      assert.equal(e.OS_AUTH_URL, `http://127.0.0.1:${ports.keystone}/v3`);
      assert.ok(startOut.includes(`export OS_PASSWORD=${e.OS_PASSWORD}`), `${who}'s snippet printed`);
    }
  });

  test('every daemon was configured for Keystone', () => {
    const etc = (f: string) => readFileSync(join(dataDir, 'etc', f), 'utf8');
    assert.match(etc('quantum.conf'), /^auth_strategy = keystone$/m);
    assert.match(etc('quantum.conf'), /\[keystone_authtoken\][^[]*username = quantum/);
    assert.match(etc('nova.conf'), /\[api\]\nauth_strategy = keystone/);
    assert.match(etc('nova.conf'), /\[keystone_authtoken\][^[]*username = nova/);
    assert.match(etc('nova.conf'), /\[neutron\][^[]*auth_type = password\n[^[]*username = nova/);
    assert.match(etc('glance-api.conf'), /\[paste_deploy\]\nflavor = keystone/);
    assert.match(etc('glance-api.conf'), /\[keystone_authtoken\][^[]*username = glance/);
    for (const ini of ['metadata_agent.ini', 'l3_agent.ini', 'dhcp_agent.ini']) assert.match(etc(ini), /^username = quantum$/m, ini);
  });

  test('the APIs refuse a request without a token; the catalog has identity, network, compute and image', async () => {
    for (const [port, path] of [[ports.quantum, '/v2.0/networks'], [ports.compute, '/v2.1/servers'], [ports.image, '/v2/images']] as const) {
      const r = await request(`http://127.0.0.1:${port}${path}`);
      await r.body.dump();
      assert.equal(r.statusCode, 401, path);
    }
    const admin = session('admin');
    sessions.push(admin);
    const types = (await admin.auth()).catalog.map((c) => c.type).sort();
    assert.deepEqual(types, ['compute', 'identity', 'image', 'network']);
    assert.equal(await admin.endpoint('network'), `http://127.0.0.1:${ports.quantum}`);
    assert.equal(await admin.endpoint('image'), `http://127.0.0.1:${ports.image}`);
  });

  test('the demo was built with the tenants\' tokens: both 10.1.1.2 guests get their own instance in their own project', async () => {
    const a = session('tenant-a');
    const b = session('tenant-b');
    sessions.push(a, b);
    const [pa, pb] = [(await a.auth()).projectId, (await b.auth()).projectId];
    const ia = curl('demo-a', '/latest/meta-data/instance-id');
    const ib = curl('demo-b', '/latest/meta-data/instance-id');
    assert.equal(ia.code, 200);
    assert.equal(ib.code, 200);
    assert.match(ia.body, /^i-[0-9a-f]{8}$/);
    assert.notEqual(ia.body, ib.body);
    assert.equal(curl('demo-a', '/latest/meta-data/local-ipv4').body, '10.1.1.2');
    assert.equal(curl('demo-b', '/latest/meta-data/local-ipv4').body, '10.1.1.2');
    const ma = JSON.parse(curl('demo-a', '/openstack/latest/meta_data.json').body) as { name: string; project_id: string; public_keys: Record<string, string> };
    const mb = JSON.parse(curl('demo-b', '/openstack/latest/meta_data.json').body) as { name: string; project_id: string; public_keys: Record<string, string> };
    assert.deepEqual([ma.name, ma.project_id, Object.keys(ma.public_keys)], ['demo-a', pa, ['key-a']]);
    assert.deepEqual([mb.name, mb.project_id, Object.keys(mb.public_keys)], ['demo-b', pb, ['key-b']]);
    assert.match(curl('demo-a', '/latest/user-data').body, /hello from tenant-a/);
    const iso = curl('demo-iso', '/latest/meta-data/hostname');
    assert.equal(iso.code, 200, 'the isolated guest reads its metadata through the DHCP namespace');
  });

  test('the openrc files work with our CLIs, each demo user seeing only their tenant', () => {
    const netsA = cli('quantum', 'tenant-a', ['net-list', '-f', 'value', '-c', 'name']).split('\n').filter(Boolean).sort();
    assert.deepEqual(netsA, ['net-a', 'net-isolated']);
    assert.deepEqual(cli('quantum', 'tenant-b', ['net-list', '-f', 'value', '-c', 'name']).split('\n').filter(Boolean), ['net-b']);
    const serversB = cli('nova', 'tenant-b', ['list']);
    assert.match(serversB, /demo-b/);
    assert.doesNotMatch(serversB, /demo-a|demo-iso/);
    assert.match(cli('quantum', 'admin', ['agent-list']), /L3 agent[\s\S]*:-\)/);
  });

  test('status lists Keystone; a start without --keystone on this data directory is refused', () => {
    const st = aio(['status']);
    assert.equal(st.code, 0, st.out);
    assert.match(st.out, /auth_strategy = keystone/);
    assert.match(st.out, /^keystone +running pid \d+/m);
    const wrong = aio(['start']);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.out, /set up with auth_strategy = keystone: start it with --keystone/);
  });

  test('stop ends Keystone and every daemon by pid and removes what the stack built; the database goes with --purge', async () => {
    const m = JSON.parse(readFileSync(join(dataDir, 'run', 'manifest.json'), 'utf8')) as { routers: string[]; networks: string[] };
    const pids = daemonPids();
    assert.ok(pids.some((p) => p.name === 'keystone'));
    const r = aio(['stop']);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /stopped keystone/);
    assert.match(r.out, new RegExp(`Keystone's database ${database}`));
    for (const p of pids) assert.ok(!alive(p.pid), `${p.name} (${p.pid}) still alive`);
    const left = netnsList();
    for (const n of left) assert.ok(!n.startsWith(PREFIX), `guest namespace left: ${n}`);
    for (const id of m.routers) assert.ok(!left.includes(`qrouter-${id}`), `router namespace left: ${id}`);
    for (const id of m.networks) {
      assert.ok(!left.includes(`qdhcp-${id}`), `dhcp namespace left: ${id}`);
      assert.ok(!existsSync(`/sys/class/net/brq${id.slice(0, 11)}`), `bridge left: ${id}`);
    }
    assert.ok(await keystoneDatabaseExists(database), 'a plain stop keeps the database (the data dir holds its project ids)');
    const p = aio(['stop', '--purge']);
    assert.equal(p.code, 0, p.out);
    assert.ok(!(await keystoneDatabaseExists(database)), 'purged');
    assert.ok(!existsSync(join(dataDir, 'etc')));
  });
});

describe('quantum-aio start --keystone without what it needs', () => {
  test('says which prerequisite is missing and exits 3 before starting anything', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qm-aio-ks-pre-'));
    try {
      // No PATH: the mysql client cannot be found, as on a machine without MariaDB (or, first, no Keystone at all).
      const r = spawnSync(process.execPath, [join(buildRoot, 'src/aio/main.js'), 'start', '--keystone', '--data-dir', dir], { encoding: 'utf8', env: { PATH: '/nonexistent' }, timeout: 60_000 });
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stderr, /--keystone needs (Keystone, which is not installed|MariaDB for Keystone's database: MariaDB is not reachable)/);
      assert.match(r.stderr, /or start without --keystone/);
      assert.ok(!existsSync(join(dir, 'run')), 'no daemon was started');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
