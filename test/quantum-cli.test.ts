// The real `quantum` CLI process against a real quantum-server process; and the shared table formatter.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { QuantumClient } from '../src/common/quantum-client.js';
import { printList, printShow, renderTable } from '../src/cli/table.js';
import { buildRoot } from './helpers/paths.js';
import { getFreePort, spawnDaemon, waitForListen, type Daemon } from './helpers/proc.js';

const CLI = resolve(buildRoot, 'src/cli/quantum.js');

function quantum(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 20_000 }, (e, out, err) => {
      res({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, out, err });
    });
  });
}

describe('table formatter', () => {
  test('reproduces the walkthrough subnet-create table byte for byte', () => {
    // From reference/000_34a6784b7814ce4d.txt (quantum subnet-create testnet01 172.17.17.0/24 --no-gateway --name=sub_no_gateway).
    const expected = [
      'Created a new subnet:',
      '+------------------+--------------------------------------------------+',
      '| Field            | Value                                            |',
      '+------------------+--------------------------------------------------+',
      '| allocation_pools | {"start": "172.17.17.1", "end": "172.17.17.254"} |',
      '| cidr             | 172.17.17.0/24                                   |',
      '| dns_nameservers  |                                                  |',
      '| enable_dhcp      | True                                             |',
      '| gateway_ip       |                                                  |',
      '| host_routes      |                                                  |',
      '| id               | 34168195-f101-4be4-8ca8-c9d07b58d41a             |',
      '| ip_version       | 4                                                |',
      '| name             | sub_no_gateway                                   |',
      '| network_id       | 3d42a0d4-a980-4613-ae76-a2cddecff054             |',
      '| tenant_id        | 6fbe9263116a4b68818cf1edce16bc4f                 |',
      '+------------------+--------------------------------------------------+',
      '',
    ].join('\n');
    let got = '';
    printShow(
      'Created a new subnet:',
      {
        tenant_id: '6fbe9263116a4b68818cf1edce16bc4f',
        network_id: '3d42a0d4-a980-4613-ae76-a2cddecff054',
        name: 'sub_no_gateway',
        ip_version: 4,
        id: '34168195-f101-4be4-8ca8-c9d07b58d41a',
        host_routes: [],
        gateway_ip: null,
        enable_dhcp: true,
        dns_nameservers: [],
        cidr: '172.17.17.0/24',
        allocation_pools: [{ start: '172.17.17.1', end: '172.17.17.254' }],
      },
      { write: (t) => (got += t) },
    );
    assert.equal(got, expected);
  });

  test('lists: multi-line cells, -c, -f json, -f value, empty list prints nothing', () => {
    assert.equal(renderTable(['a', 'bb'], [['x\nyy', '1']]), '+----+----+\n| a  | bb |\n+----+----+\n| x  | 1  |\n| yy |    |\n+----+----+\n');
    let got = '';
    const w = { write: (t: string) => (got += t) };
    printList(['id', 'name'], [], w);
    assert.equal(got, '');
    printList(['id', 'alive'], [{ id: 'a', alive: true }], { ...w, format: 'json', formatters: { alive: (r) => (r.alive ? ':-)' : 'xxx') } });
    assert.deepEqual(JSON.parse(got), [{ id: 'a', alive: ':-)' }]);
    got = '';
    printList(['id', 'name'], [{ id: 'a', name: 'n' }], { ...w, format: 'value', columns: ['name'] });
    assert.equal(got, 'n\n');
    assert.throws(() => printList(['id'], [{ id: 'a' }], { ...w, columns: ['nope'] }), /No column named 'nope'/);
  });
});

describe('quantum CLI against quantum-server', () => {
  let dir: string;
  let d: Daemon;
  let url: string;
  let env: Record<string, string>;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qm-cli-'));
    const port = await getFreePort();
    d = spawnDaemon('quantum-server/main.js', ['--bind_host', '127.0.0.1', '--bind_port', String(port), '--state_path', dir]);
    await waitForListen({ host: '127.0.0.1', port }, 30_000);
    url = `http://127.0.0.1:${port}`;
    env = { OS_URL: url, OS_PROJECT_ID: '6fbe9263116a4b68818cf1edce16bc4f' };
  });
  after(async () => {
    await d?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('net-create / subnet-create --no-gateway / net-list / net-show by name', async () => {
    const n = await quantum(['net-create', 'testnet01'], env);
    assert.equal(n.code, 0, n.err);
    assert.match(n.out, /^Created a new network:\n\+-+\+-+\+\n\| Field +\| Value +\|\n/);
    assert.match(n.out, /\| tenant_id +\| 6fbe9263116a4b68818cf1edce16bc4f +\|/);
    const s = await quantum(['subnet-create', 'testnet01', '172.17.17.0/24', '--no-gateway', '--name=sub_no_gateway'], env);
    assert.equal(s.code, 0, s.err);
    const lines = s.out.split('\n');
    assert.equal(lines[0], 'Created a new subnet:');
    assert.match(s.out, /\| allocation_pools +\| \{"start": "172\.17\.17\.1", "end": "172\.17\.17\.254"\} \|/);
    assert.match(s.out, /\| gateway_ip +\| +\|/);
    assert.match(s.out, /\| enable_dhcp +\| True +\|/);
    // Fields sorted, every row the same width.
    const fields = lines.filter((l) => /^\| [a-z]/.test(l)).map((l) => l.split('|')[1]!.trim());
    assert.deepEqual(fields, [...fields].sort());
    assert.equal(new Set(lines.filter((l) => l.startsWith('|') || l.startsWith('+')).map((l) => l.length)).size, 1);

    const s2 = await quantum(['subnet-create', 'testnet01', '10.1.1.0/24', '--name', 'inner', '--dns-nameserver', '8.8.8.7', '--dns-nameserver', '8.8.8.8', '--host-route', 'destination=10.9.0.0/16,nexthop=10.1.1.254', '--allocation-pool', 'start=10.1.1.2,end=10.1.1.100', '--disable-dhcp'], env);
    assert.equal(s2.code, 0, s2.err);
    assert.match(s2.out, /\| dns_nameservers +\| 8\.8\.8\.7 +\|\n\| +\| 8\.8\.8\.8 +\|/);
    assert.match(s2.out, /\| host_routes +\| \{"destination": "10\.9\.0\.0\/16", "nexthop": "10\.1\.1\.254"\} \|/);
    assert.match(s2.out, /\| enable_dhcp +\| False +\|/);

    const list = await quantum(['net-list'], env);
    assert.equal(list.code, 0, list.err);
    assert.match(list.out, /^\+-+\+-+\+-+\+\n\| id +\| name +\| subnets +\|/);
    assert.match(list.out, /\| testnet01 \| [0-9a-f-]{36} 172\.17\.17\.0\/24 +\|/);
    assert.match(list.out, /\| +\| +\| [0-9a-f-]{36} 10\.1\.1\.0\/24 +\|/);
    const show = await quantum(['net-show', 'testnet01', '-f', 'json'], env);
    assert.equal(JSON.parse(show.out).name, 'testnet01');
    assert.equal(JSON.parse(show.out).subnets.length, 2);
  });

  test('ports: --fixed-ip by subnet name, port-list filters, -f json, -c, -f value', async () => {
    const p = await quantum(['port-create', 'testnet01', '--fixed-ip', 'subnet_id=inner,ip_address=10.1.1.50', '--device-id', 'vm-1', '--device-owner', 'compute:nova', '--name', 'p1'], env);
    assert.equal(p.code, 0, p.err);
    assert.match(p.out, /^Created a new port:/);
    assert.match(p.out, /\| fixed_ips +\| \{"subnet_id": "[0-9a-f-]{36}", "ip_address": "10\.1\.1\.50"\} \|/);
    const q = await quantum(['port-create', 'testnet01', '--mac-address', 'fa:16:3e:00:11:22', '-f', 'json'], env);
    const port2 = JSON.parse(q.out);
    assert.equal(port2.mac_address, 'fa:16:3e:00:11:22');
    const list = await quantum(['port-list'], env);
    assert.match(list.out, /\| id +\| name +\| mac_address +\| fixed_ips +\|/);
    const byIp = await quantum(['port-list', '--fixed-ip', 'ip_address=10.1.1.50', '-f', 'json'], env);
    const rows = JSON.parse(byIp.out);
    assert.equal(rows.length, 1);
    assert.deepEqual(Object.keys(rows[0]), ['id', 'name', 'mac_address', 'fixed_ips']);
    assert.equal(rows[0].name, 'p1');
    const byDev = await quantum(['port-list', '--device-id', 'vm-1', '-c', 'name', '-f', 'value'], env);
    assert.equal(byDev.out, 'p1\n');
    const bad = await quantum(['port-list', '--hostname', 'x'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /hostname is invalid attribute for ports/);
    const inUse = await quantum(['port-create', 'testnet01', '--fixed-ip', 'ip_address=10.1.1.50'], env);
    assert.equal(inUse.code, 1);
    assert.match(inUse.err, /The IP address 10\.1\.1\.50 is in use\./);
    const del = await quantum(['port-delete', port2.id], env);
    assert.equal(del.out, `Deleted port: ${port2.id}\n`);
  });

  test('routers and interfaces by name; server errors exit 1 with the server message', async () => {
    const r = await quantum(['router-create', 'router1'], env);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^Created a new router:/);
    const add = await quantum(['router-interface-add', 'router1', 'inner'], env);
    assert.equal(add.code, 0, add.err);
    assert.match(add.out, /^Added interface [0-9a-f-]{36} to router router1\.\n$/);
    const again = await quantum(['router-interface-add', 'router1', 'subnet=inner'], env);
    assert.equal(again.code, 1);
    assert.match(again.err, /^Bad router request: Router already has a port on subnet [0-9a-f-]{36}\.\n$/);
    const ports = await quantum(['router-port-list', 'router1', '-f', 'json'], env);
    assert.equal(JSON.parse(ports.out)[0].fixed_ips[0].ip_address, '10.1.1.1');
    const busy = await quantum(['router-delete', 'router1'], env);
    assert.equal(busy.code, 1);
    assert.match(busy.err, /still has ports/);
    const rm = await quantum(['router-interface-delete', 'router1', 'inner'], env);
    assert.equal(rm.code, 0, rm.err);
    assert.equal(rm.out, 'Removed interface from router router1.\n');
    assert.equal((await quantum(['router-delete', 'router1'], env)).out, 'Deleted router: router1\n');

    await quantum(['net-create', 'twin'], env);
    await quantum(['net-create', 'twin'], env);
    const amb = await quantum(['net-show', 'twin'], env);
    assert.equal(amb.code, 1);
    assert.match(amb.err, /Multiple network matches found for name 'twin', use an ID to be more specific\./);
    const missing = await quantum(['net-delete', 'nope'], env);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /Unable to find network with name or id 'nope'/);
    const inUse = await quantum(['net-delete', 'testnet01'], env);
    assert.equal(inUse.code, 1);
    assert.match(inUse.err, /There are one or more ports still in use on the network\./);
  });

  test('agent-list shows :-) for live agents; usage errors; unreachable server', async () => {
    const qc = new QuantumClient({ url });
    await qc.reportState({ binary: 'quantum-dhcp-agent', host: 'node-1', agent_type: 'DHCP agent', topic: 'dhcp_agent', configurations: {}, start_flag: true });
    await qc.close();
    const a = await quantum(['agent-list'], env);
    assert.equal(a.code, 0, a.err);
    assert.match(a.out, /\| id +\| agent_type +\| host +\| alive +\| admin_state_up +\|/);
    assert.match(a.out, /\| DHCP agent \| node-1 \| :-\) +\| True +\|/);
    const usage = await quantum(['subnet-create', 'testnet01'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.err, /CIDR is required/);
    const unknown = await quantum(['frobnicate'], env);
    assert.equal(unknown.code, 2);
    const down = await quantum(['net-list', '--os-url', `http://127.0.0.1:${await getFreePort()}`]);
    assert.equal(down.code, 1);
    assert.match(down.err, /unreachable/);
  });

  test('agent scheduler commands: l3-agent-router-add/remove, router-list-on-l3-agent, l3-agent-list-hosting-router, dhcp-agent-network-*', async () => {
    const qc = new QuantumClient({ url });
    const l3a = await qc.reportState({ binary: 'quantum-l3-agent', host: 'cli-l3-a', agent_type: 'L3 agent', topic: 'l3_agent', configurations: {}, start_flag: true });
    const dh = await qc.listAgents({ host: 'node-1', agent_type: 'DHCP agent' });
    await qc.close();
    assert.equal((await quantum(['router-create', 'sched-r'], env)).code, 0);
    const hosting = await quantum(['l3-agent-list-hosting-router', 'sched-r'], env);
    assert.equal(hosting.code, 0, hosting.err);
    assert.match(hosting.out, /\| id +\| host +\| admin_state_up +\| alive \|/);
    assert.match(hosting.out, new RegExp(`\\| ${l3a.id} \\| cli-l3-a \\| True +\\| :-\\) +\\|`));
    const on = await quantum(['router-list-on-l3-agent', l3a.id, '-f', 'json'], env);
    assert.deepEqual(JSON.parse(on.out).map((r: { name: string }) => r.name), ['sched-r']);
    const rm = await quantum(['l3-agent-router-remove', l3a.id, 'sched-r'], env);
    assert.equal(rm.out, 'Removed router sched-r from L3 agent\n');
    assert.equal(JSON.parse((await quantum(['l3-agent-list-hosting-router', 'sched-r', '-f', 'json'], env)).out).length, 0);
    const add = await quantum(['l3-agent-router-add', l3a.id, 'sched-r'], env);
    assert.equal(add.out, 'Added router sched-r to L3 agent\n');
    const twice = await quantum(['l3-agent-router-remove', l3a.id, 'sched-r'], env);
    assert.equal(twice.code, 0);
    const notHosted = await quantum(['l3-agent-router-remove', l3a.id, 'sched-r'], env);
    assert.equal(notHosted.code, 1);
    assert.match(notHosted.err, /is not hosted by L3 agent/);
    assert.equal((await quantum(['net-create', 'sched-net'], env)).code, 0);
    const netAdd = await quantum(['dhcp-agent-network-add', dh[0]!.id, 'sched-net'], env);
    assert.equal(netAdd.out, 'Added network sched-net to DHCP agent\n', netAdd.err);
    const nets = await quantum(['net-list-on-dhcp-agent', dh[0]!.id, '-c', 'name', '-f', 'value'], env);
    assert.match(nets.out, /^sched-net$/m);
    assert.match((await quantum(['dhcp-agent-list-hosting-net', 'sched-net'], env)).out, /\| node-1 \|/);
    assert.equal((await quantum(['dhcp-agent-network-remove', dh[0]!.id, 'sched-net'], env)).out, 'Removed network sched-net from DHCP agent\n');
  });
});
