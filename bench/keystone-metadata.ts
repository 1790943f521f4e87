// Benchmark: the metadata path with auth_strategy = keystone against noauth, as real processes: quantum-server,
// nova-api (metadata, proxy mode) and quantum-metadata-agent with its cache off (so every guest request is one
// port lookup in quantum-server carrying the agent's token), driven over the agent's Unix socket the way the
// namespace proxy drives it. Reports requests/s, CPU per request of each process, and Keystone's CPU while loaded
// (tokens are cached, not fetched or validated per request). Not a test.
//   npm run build && node dist/bench/keystone-metadata.js [--duration S] [--conns N] [--rounds N]
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'undici';
import { keystoneInstalled, LocalKeystone } from '../src/aio/keystone.js';
import { QuantumClient } from '../src/common/quantum-client.js';
import { getFreePort, spawnDaemon, waitForListen, type Daemon } from '../test/helpers/proc.js';

const { values: flags } = parseArgs({ options: { duration: { type: 'string', default: '5' }, conns: { type: 'string', default: '16' }, rounds: { type: 'string', default: '3' } } });
const DURATION = Number(flags.duration) * 1000;
const CONNS = Number(flags.conns);
const ROUNDS = Number(flags.rounds);
const PW = 'bench-secret';

const cpuOf = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};

async function drive(socket: string, targets: Array<{ ip: string; router: string }>): Promise<{ n: number; bad: number }> {
  const end = Date.now() + DURATION;
  let n = 0;
  let bad = 0;
  await Promise.all(
    Array.from({ length: CONNS }, async (_, c) => {
      const client = new Client('http://169.254.169.254', { socketPath: socket, pipelining: 1 });
      let i = c;
      while (Date.now() < end) {
        const t = targets[i++ % targets.length]!;
        const r = await client.request({ method: 'GET', path: '/latest/meta-data/instance-id', headers: { 'x-forwarded-for': t.ip, 'x-quantum-router-id': t.router, 'x-neutron-router-id': t.router } });
        const body = await r.body.text();
        if (r.statusCode !== 200 || !body.startsWith('i-')) bad++;
        n++;
      }
      await client.close();
    }),
  );
  return { n, bad };
}

async function main(): Promise<void> {
  if (!keystoneInstalled()) throw new Error('python3-keystone is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'qm-bench-ks-'));
  const daemons: Daemon[] = [];
  const ks = await new LocalKeystone({ dir: join(dir, 'keystone'), port: await getFreePort() }).start();
  try {
    for (const s of ['quantum', 'nova']) await ks.user(s, PW, 'service', 'admin');
    const secret = 'bench';
    const results: Record<string, Array<{ rps: number; cpu: Record<string, number>; bad: number }>> = { noauth: [], keystone: [] };
    const stacks: Record<string, { socket: string; pids: Record<string, number>; targets: Array<{ ip: string; router: string }> }> = {};
    for (const mode of ['noauth', 'keystone'] as const) {
      const st = join(dir, mode);
      const [qPort, mPort] = [await getFreePort(), await getFreePort()];
      const socket = join(st, 'metadata_proxy');
      const auth = `auth_url = ${ks.url}\nusername = quantum\npassword = ${PW}\nproject_name = service\n`;
      writeFileSync(join(dir, `${mode}-q.conf`), `[DEFAULT]\nstate_path = ${st}\nbind_host = 127.0.0.1\nbind_port = ${qPort}\nauth_strategy = ${mode}\n[keystone_authtoken]\n${auth}[database]\nconnection = sqlite:///${join(dir, `${mode}.sqlite`)}\n`);
      writeFileSync(join(dir, `${mode}-n.conf`), `[DEFAULT]\nstate_path = ${st}\nenabled_apis = metadata\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = ${mPort}\n[neutron]\nurl = http://127.0.0.1:${qPort}\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = ${secret}\n`);
      writeFileSync(join(dir, `${mode}-a.ini`), `[DEFAULT]\nstate_path = ${st}\nquantum_url = http://127.0.0.1:${qPort}\nauth_strategy = ${mode}\n${auth}metadata_proxy_socket = ${socket}\nnova_metadata_port = ${mPort}\nmetadata_proxy_shared_secret = ${secret}\nmetadata_workers = 0\n[AGENT]\nreport_interval = 0\n`);
      const q = spawnDaemon('quantum-server/main.js', ['--config-file', join(dir, `${mode}-q.conf`)]);
      daemons.push(q);
      await waitForListen({ host: '127.0.0.1', port: qPort }, 30_000);
      const n = spawnDaemon('nova-api/main.js', ['--config-file', join(dir, `${mode}-n.conf`)]);
      daemons.push(n);
      await waitForListen({ host: '127.0.0.1', port: mPort }, 30_000);
      // 50 guests behind one router; nova's rows are filled straight into its database through its own API below.
      const qc = new QuantumClient({ url: `http://127.0.0.1:${qPort}`, auth: mode === 'keystone' ? ks.admin : undefined });
      const net = await qc.createNetwork({ name: 'bench' });
      const sub = await qc.createSubnet({ network_id: net.id, cidr: '10.8.0.0/24' });
      const router = await qc.createRouter({ name: 'bench-r' });
      await qc.addRouterInterface(router.id, { subnet_id: sub.id });
      const targets: Array<{ ip: string; router: string }> = [];
      const { openDatabase, migrate } = await import('../src/db/connection.js');
      const { novaMigrations, runningInstanceState } = await import('../src/db/nova-schema.js');
      const ndb = openDatabase<import('../src/db/nova-schema.js').NovaDatabase>(`sqlite:///${join(st, 'nova.sqlite')}`);
      await migrate(ndb, 'nova', novaMigrations);
      for (let i = 0; i < 50; i++) {
        const uuid = randomUUID();
        const p = await qc.createPort({ network_id: net.id, device_id: uuid, device_owner: 'compute:nova', tenant_id: 'bench' });
        await ndb.db.insertInto('instances').values({ uuid, display_name: `vm${i}`, hostname: `vm${i}`, project_id: 'bench', user_id: 'bench', image_ref: randomUUID(), kernel_id: null, ramdisk_id: null, flavor: JSON.stringify({ flavorid: '1', name: 'm1.tiny', memory_mb: 512, vcpus: 1, root_gb: 1, ephemeral_gb: 0, swap: 0 }), key_name: null, key_data: null, keypairs: '[]', user_data: null, launch_index: 0, reservation_id: 'r-bench', availability_zone: 'nova', root_device_name: '/dev/vda', default_ephemeral_device: null, default_swap_device: null, security_groups: '["default"]', device_metadata: null, numa_topology: null, ...runningInstanceState(new Date().toISOString()) } as never).execute();
        targets.push({ ip: p.fixed_ips[0]!.ip_address, router: router.id });
      }
      await ndb.close();
      await qc.close();
      const a = spawnDaemon('metadata-agent/main.js', ['--config-file', join(dir, `${mode}-a.ini`)]);
      daemons.push(a);
      await waitForListen({ path: socket }, 30_000);
      stacks[mode] = { socket, pids: { 'quantum-server': q.pid, 'nova-api': n.pid, agent: a.pid, keystone: ks.pid! }, targets };
      await drive(socket, targets.slice(0, 4)); // warm up (the agent's first token)
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const mode of r % 2 ? (['keystone', 'noauth'] as const) : (['noauth', 'keystone'] as const)) {
        const s = stacks[mode]!;
        const before = Object.fromEntries(Object.entries(s.pids).map(([k, p]) => [k, cpuOf(p)]));
        const t0 = Date.now();
        const { n, bad } = await drive(s.socket, s.targets);
        const secs = (Date.now() - t0) / 1000;
        const cpu = Object.fromEntries(Object.entries(s.pids).map(([k, p]) => [k, ((cpuOf(p) - before[k]!) / n) * 1e6]));
        results[mode]!.push({ rps: n / secs, cpu, bad });
        process.stdout.write(`round ${r + 1} ${mode}: ${Math.round(n / secs)} req/s, ${bad} bad, CPU µs/req ${Object.entries(cpu).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}\n`);
      }
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    process.stdout.write('\n| auth_strategy | requests/s (median) | quantum-server CPU µs/req | metadata agent CPU µs/req | nova-api CPU µs/req | Keystone CPU µs/req | failed |\n|---|---|---|---|---|---|---|\n');
    for (const mode of ['noauth', 'keystone']) {
      const rs = results[mode]!;
      process.stdout.write(`| ${mode} | ${Math.round(med(rs.map((x) => x.rps)))} | ${med(rs.map((x) => x.cpu['quantum-server']!)).toFixed(0)} | ${med(rs.map((x) => x.cpu.agent!)).toFixed(0)} | ${med(rs.map((x) => x.cpu['nova-api']!)).toFixed(0)} | ${med(rs.map((x) => x.cpu.keystone!)).toFixed(1)} | ${rs.reduce((a, x) => a + x.bad, 0)} |\n`);
    }
  } finally {
    for (const d of daemons.reverse()) await d.stop();
    await ks.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
