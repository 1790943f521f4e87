// The real quantum-server process: config files, $state_path, migrations at start, API workers, SIGTERM.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { QuantumClient, type Port } from '../src/common/quantum-client.js';
import { getFreePort, spawnDaemon, waitFor, waitForListen, type Daemon } from './helpers/proc.js';

const dirs: string[] = [];
const daemons: Daemon[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'qm-qs-'));
  dirs.push(d);
  return d;
};
after(async () => {
  for (const d of daemons) await d.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function exitOf(d: Daemon): Promise<number | null> {
  if (d.proc.exitCode !== null) return d.proc.exitCode;
  return new Promise((r) => d.proc.once('exit', (code) => r(code)));
}

describe('quantum-server daemon', () => {
  test('config file, default sqlite under $state_path, request log, SIGTERM exits 0', async () => {
    const state = tmp();
    const port = await getFreePort();
    const conf = join(state, 'quantum.conf');
    writeFileSync(conf, `[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = ${port}\nstate_path = ${state}\nmystery_option = 1\n[database]\n`);
    const d = spawnDaemon('quantum-server/main.js', ['--config-file', conf]);
    daemons.push(d);
    await waitForListen({ host: '127.0.0.1', port }, 30_000);
    assert.ok(existsSync(join(state, 'quantum.sqlite')), 'database created under state_path');
    const qc = new QuantumClient({ url: `http://127.0.0.1:${port}` });
    const net = await qc.createNetwork({ name: 'd1' });
    assert.equal((await qc.listNetworks()).length, 1);
    await qc.close();
    await waitFor(() => d.output().includes('POST /v2.0/networks HTTP/1.1\\" status: 201'), 5000, 50, 'request log line');
    assert.match(d.output(), /unknown option \[DEFAULT\] mystery_option/);
    d.proc.kill('SIGTERM');
    assert.equal(await exitOf(d), 0);
    // Restart on the same database: migrations are idempotent and the data is still there.
    const d2 = spawnDaemon('quantum-server/main.js', ['--config-file', conf]);
    daemons.push(d2);
    await waitForListen({ host: '127.0.0.1', port }, 30_000);
    const qc2 = new QuantumClient({ url: `http://127.0.0.1:${port}` });
    assert.equal((await qc2.showNetwork(net.id)).name, 'd1');
    await qc2.close();
    await d2.stop();
  });

  test('bad configuration is one line and exit 1', async () => {
    const ks = spawnDaemon('quantum-server/main.js', ['--auth_strategy', 'keystone', '--state_path', tmp()]);
    daemons.push(ks);
    assert.equal(await exitOf(ks), 1);
    assert.match(ks.output(), /quantum-server: \[DEFAULT\] auth_strategy = keystone needs \[keystone_authtoken\] auth_url, username, password, project_name/);
    const mac = spawnDaemon('quantum-server/main.js', ['--base_mac', 'nope', '--state_path', tmp()]);
    daemons.push(mac);
    assert.equal(await exitOf(mac), 1);
    assert.match(mac.output(), /base_mac = "nope": not a MAC address/);
    const db = spawnDaemon('quantum-server/main.js', ['--database-connection', 'postgres://x/y', '--state_path', tmp()]);
    daemons.push(db);
    assert.equal(await exitOf(db), 1);
    assert.match(db.output(), /unsupported database 'postgres'/);
  });

  test('api_workers that cannot start (port taken) are not respawned forever', async () => {
    const blocker = createServer();
    const port = await new Promise<number>((r) => blocker.listen(0, '127.0.0.1', () => r((blocker.address() as { port: number }).port)));
    try {
      const d = spawnDaemon('quantum-server/main.js', ['--bind_host', '127.0.0.1', '--bind_port', String(port), '--state_path', tmp(), '--api_workers', '2']);
      daemons.push(d);
      assert.equal(await exitOf(d), 1);
      assert.match(d.output(), /API workers keep dying at start; giving up/);
    } finally {
      blocker.close();
    }
  });

  test('api_workers on one SQLite file: 50 concurrent port creates across processes stay unique', async () => {
    const state = tmp();
    const port = await getFreePort();
    const d = spawnDaemon('quantum-server/main.js', ['--bind_host', '127.0.0.1', '--bind_port', String(port), '--state_path', state, '--api_workers', '4']);
    daemons.push(d);
    await waitForListen({ host: '127.0.0.1', port }, 45_000);
    // Every worker up before the race (on a loaded machine the first one may otherwise take it all).
    await waitFor(() => [...d.output().matchAll(/quantum-server listening on/g)].length >= 4, 45_000, 100, 'all four API workers listening');
    const qc = new QuantumClient({ url: `http://127.0.0.1:${port}`, connections: 50 });
    const net = await qc.createNetwork({ name: 'race' });
    await qc.createSubnet({ network_id: net.id, cidr: '10.66.0.0/24' });
    const ports: Port[] = await Promise.all(Array.from({ length: 50 }, (_, i) => qc.createPort({ network_id: net.id, device_id: `vm-${i}` })));
    assert.equal(new Set(ports.map((p) => p.fixed_ips[0]!.ip_address)).size, 50);
    assert.equal(new Set(ports.map((p) => p.mac_address)).size, 50);
    // Served by more than one worker process.
    const pids = new Set([...d.output().matchAll(/"pid":(\d+)[^\n]*POST \/v2\.0\/ports/g)].map((m) => m[1]));
    assert.ok(pids.size > 1, `requests served by ${pids.size} worker(s)`);
    await qc.close();
    d.proc.kill('SIGTERM');
    assert.equal(await exitOf(d), 0);
  });
});
