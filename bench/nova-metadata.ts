// Metadata API throughput with signed proxy headers against 10,000 servers in the database, cache on
// and off. Not a test: `node dist/bench/nova-metadata.js [--servers N] [--duration S] [--connections C]
// [--db URL]`. The server runs in this process (the same handler nova-api serves); load comes from wrk.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { signInstanceId } from '../src/common/hmac.js';
import { closeServer, listen } from '../src/common/http.js';
import { silentLogger } from '../src/common/log.js';
import { QuantumClient } from '../src/common/quantum-client.js';
import { migrate, openDatabase } from '../src/db/connection.js';
import { novaMigrations, type NovaDatabase, runningInstanceState } from '../src/db/nova-schema.js';
import { MetadataHandler } from '../src/nova-metadata/handler.js';
import { DbMetadataStore } from '../src/nova-metadata/store.js';

const run = promisify(execFile);

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

const N = Number(arg('servers', '10000'));
const DURATION = Number(arg('duration', '10'));
const CONNECTIONS = Number(arg('connections', '64'));
const SECRET = 'bench-secret';
const CACHE_ON = Number(arg('cache', '3600'));

const VIF = (i: number) => [
  {
    id: randomUUID(),
    address: `fa:16:3e:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    type: 'bridge',
    devname: 'tap0123456789a',
    vnic_type: 'normal',
    active: true,
    ovs_interfaceid: null,
    preserve_on_delete: false,
    details: {},
    profile: {},
    network: {
      id: '8d1e0b2c-3f4a-4b5c-9d6e-7f8a9b0c1d2e',
      bridge: 'brq8d1e0b2c-3f',
      label: 'private',
      meta: { injected: false, tenant_id: 'bench', mtu: 1450 },
      subnets: [
        {
          cidr: '10.0.0.0/8',
          version: 4,
          gateway: { address: '10.0.0.1', type: 'gateway', version: 4 },
          ips: [{ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, type: 'fixed', version: 4, floating_ips: [] }],
          dns: [{ address: '10.0.0.53', type: 'dns', version: 4 }],
          routes: [],
          meta: { dhcp_server: '10.0.0.2' },
        },
      ],
    },
  },
];

async function fill(url: string): Promise<string[]> {
  const h = openDatabase<NovaDatabase>(url);
  await migrate(h, 'nova', novaMigrations);
  const ids: string[] = [];
  const now = new Date().toISOString();
  const CHUNK = 250;
  for (let start = 0; start < N; start += CHUNK) {
    const batch = Array.from({ length: Math.min(CHUNK, N - start) }, (_, k) => ({ i: start + k, uuid: randomUUID() }));
    await h.db.transaction().execute(async (tx) => {
      await tx
        .insertInto('instances')
        .values(
          batch.map(({ i, uuid }) => ({
            uuid,
            display_name: `vm-${i}`,
            hostname: `vm-${i}`,
            project_id: 'bench',
            user_id: 'bench',
            image_ref: '155d900f-4e14-4e4c-a73d-069cbf4541e6',
            kernel_id: null,
            ramdisk_id: null,
            flavor: '{"flavorid": "1", "name": "m1.tiny"}',
            key_name: 'k',
            key_data: 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDYVEprvtYJXVOBN0XNKVVRNCRX6Bln bench',
            keypairs: '[{"name": "k", "type": "ssh", "public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDYVEprvtYJXVOBN0XNKVVRNCRX6Bln bench"}]',
            user_data: Buffer.from(`#cloud-config\nhostname: vm-${i}\n`).toString('base64'),
            launch_index: 0,
            reservation_id: 'r-bench000',
            availability_zone: 'nova',
            root_device_name: '/dev/vda',
            default_ephemeral_device: null,
            default_swap_device: null,
            security_groups: '["default"]',
            device_metadata: null,
            numa_topology: null,
            ...runningInstanceState(now),
          })) as never,
        )
        .execute();
      await tx.insertInto('instance_metadata').values(batch.map(({ i, uuid }) => ({ instance_uuid: uuid, key: 'index', value: String(i) })) as never).execute();
      await tx.insertInto('instance_info_caches').values(batch.map(({ i, uuid }) => ({ instance_uuid: uuid, network_info: JSON.stringify(VIF(i)), updated_at: now }))).execute();
      await tx.insertInto('block_device_mapping').values(batch.map(({ uuid }) => ({ instance_uuid: uuid, source_type: 'image', destination_type: 'local', device_name: '/dev/vda', boot_index: 0, delete_on_termination: 1 })) as never).execute();
      await tx.insertInto('ec2_instances').values(batch.map(({ uuid }) => ({ uuid })) as never).execute();
    });
    ids.push(...batch.map((b) => b.uuid));
  }
  await h.db.insertInto('s3_images').values({ uuid: '155d900f-4e14-4e4c-a73d-069cbf4541e6' } as never).execute();
  await h.close();
  return ids;
}

/** A wrk script that signs as the metadata agent does, a random instance per request. */
function wrkScript(dir: string, ids: string[], path: string): string {
  const rows = ids.map((id) => `{"${id}","${signInstanceId(SECRET, id)}"}`).join(',\n');
  const lua = `local ids = {\n${rows}\n}
local n = #ids
math.randomseed(os.time())
request = function()
  local e = ids[math.random(n)]
  return wrk.format("GET", "${path}", {["X-Instance-ID"] = e[1], ["X-Tenant-ID"] = "bench", ["X-Instance-ID-Signature"] = e[2], ["X-Forwarded-For"] = "10.0.0.9"})
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("non200=%d\\n", bad))
end
`;
  const f = join(dir, `wrk-${path.replace(/\W/g, '_')}.lua`);
  writeFileSync(f, lua);
  return f;
}

interface Result {
  path: string;
  cache: number;
  rps: number;
  p50: string;
  p99: string;
  cpuUs: number;
  errors: string;
}

async function measure(url: string, ids: string[], dir: string, path: string, cache: number): Promise<Result> {
  const db = openDatabase<NovaDatabase>(url);
  const quantum = new QuantumClient({ url: 'http://127.0.0.1:9', timeoutMs: 1000 });
  const handler = new MetadataHandler(
    { serviceMetadataProxy: true, sharedSecret: SECRET, useForwardedFor: false, cacheExpiration: cache, dhcpDomain: 'novalocal', vendordataProviders: ['StaticJSON'] },
    new DbMetadataStore(db.db),
    quantum,
    silentLogger,
  );
  const server = createServer({ keepAlive: true }, handler.handle);
  server.keepAliveTimeout = 60_000;
  const port = await listen(server, '127.0.0.1', 0, 4096);
  const script = wrkScript(dir, ids, path);
  const base = `http://127.0.0.1:${port}`;
  if (cache > 0) {
    // Warm the cache as a fleet of booted guests would have: every instance once.
    for (const id of ids) await handler.getMetadataByInstanceId(id, '10.0.0.9');
  }
  const cpu0 = process.cpuUsage();
  const { stdout } = await run('wrk', ['-t', '4', '-c', String(CONNECTIONS), '-d', `${DURATION}s`, '--latency', '-s', script, base], { maxBuffer: 1 << 20 });
  const cpu = process.cpuUsage(cpu0);
  await closeServer(server);
  handler.close();
  await quantum.close();
  await db.close();
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? 0);
  const p50 = /\s50%\s+(\S+)/.exec(stdout)?.[1] ?? '?';
  const p99 = /\s99%\s+(\S+)/.exec(stdout)?.[1] ?? '?';
  const non200 = /non200=(\d+)/.exec(stdout)?.[1] ?? '?';
  const sockErr = /Socket errors:.*/.exec(stdout)?.[0] ?? '';
  const total = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0);
  // Server CPU per request: a figure that does not depend on what else the machine is doing.
  const cpuUs = total ? (cpu.user + cpu.system) / total : 0;
  return { path, cache, rps, p50, p99, cpuUs, errors: `${non200} non-200${sockErr ? `; ${sockErr}` : ''}` };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nova-bench-'));
  const url = arg('db', `sqlite:///${join(dir, 'nova.sqlite')}`);
  try {
    const t0 = Date.now();
    const ids = await fill(url);
    process.stdout.write(`filled ${ids.length} servers into ${url.replace(/:[^:@/]*@/, ':***@')} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    process.stdout.write(`wrk: 4 threads, ${CONNECTIONS} connections, ${DURATION} s per run; random instance per request, signed X-Instance-ID\n`);
    process.stdout.write(`machine: ${cpus().length} CPUs, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}\n\n`);
    const results: Result[] = [];
    const only = arg('only', '');
    for (const path of ['/latest/meta-data/', '/openstack/latest/meta_data.json']) {
      // "On" uses a long expiration so the warm-up (every server once, which takes longer than 15 s on
      // MariaDB) is still cached while wrk runs: it measures the warm path, which is what 15 s gives a guest
      // that asks for a handful of paths in a row.
      for (const cache of [CACHE_ON, 0]) {
        if (only && only !== `${path}:${cache}`) continue;
        const r = await measure(url, ids, dir, path, cache);
        results.push(r);
        process.stdout.write(`${r.path.padEnd(34)} cache=${String(r.cache).padEnd(3)} ${r.rps.toFixed(0).padStart(7)} req/s   ${r.cpuUs.toFixed(0).padStart(5)} µs CPU/req   p50 ${r.p50.padEnd(8)} p99 ${r.p99.padEnd(8)} ${r.errors}\n`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
