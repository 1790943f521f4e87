// src/linux against the real kernel: namespaces, veth pairs in a bridge, addresses, iptables in a namespace,
// ProcessManager/ProcessMonitor with real processes, and the dnsmasq file builders.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CommandError } from '../src/common/errors.js';
import { execute, executeFull } from '../src/linux/exec.js';
import { nativeAddon } from '../src/linux/native-addon.js';
import { addrList, linkList, netnsDelete, netnsEnsure, netnsExec, netnsExists, netnsPids, sysctlGet, sysctlSet, bridgePorts } from '../src/linux/ip-lib.js';
import { deleteBridgeIfEmpty, initL3, plug, unplug } from '../src/linux/interface.js';
import { IptablesManager, sameTables } from '../src/linux/iptables.js';
import pino from 'pino';
import { ProcessManager, ProcessMonitor } from '../src/linux/external-process.js';
import { buildDnsmasqArgv, buildHostsFile, buildOptsFile, isolatedSubnets, shouldEnableMetadata } from '../src/linux/dnsmasq.js';
import type { Port, Subnet } from '../src/common/quantum-client.js';
import { NetFixture, linkExistsSync, nsExec, processGone, uuid } from './helpers/netns.js';
import { waitFor } from './helpers/proc.js';

const fx = new NetFixture();
after(() => fx.cleanup());

describe('exec', () => {
  test('returns stdout; a failure is a CommandError with exit code and stderr', async () => {
    assert.equal(await execute(['echo', 'hi']), 'hi\n');
    assert.equal(await execute(['cat'], { input: 'abc' }), 'abc');
    await assert.rejects(execute(['ip', 'link', 'show', 'dev', 'no-such-dev0']), (e: unknown) => {
      assert.ok(e instanceof CommandError);
      assert.equal(e.exitCode, 1);
      assert.match(e.stderr, /does not exist/);
      assert.deepEqual(e.argv, ['ip', 'link', 'show', 'dev', 'no-such-dev0']);
      return true;
    });
    await assert.rejects(execute(['/nonexistent-binary']), CommandError);
  });

  describe('the addon spawner (no fork of node)', () => {
    const ns = fx.trackNamespace(`${fx.prefix}-x`);
    before(() => netnsEnsure(ns));

    test('it is the path commands take once built', () => {
      assert.ok(nativeAddon(), 'qm_netns addon built by npm run build');
    });

    test('a command in a namespace sees that namespace, as under ip netns exec', async () => {
      const inside = await execute(['ip', '-o', 'link', 'show'], { netns: ns });
      assert.deepEqual(
        inside.trim().split('\n').map((l) => l.split(':')[1]!.trim()),
        ['lo'],
      );
      // /proc/net follows the process's namespace, and the spawning thread went back to the host's.
      assert.match(await execute(['cat', '/proc/net/dev'], { netns: ns }), /^\s*lo:/m);
      assert.equal((await execute(['ip', '-o', 'link', 'show'])).split('\n').length > 2, true);
    });

    test('a namespace with /etc/netns/<ns> files still gets them bind-mounted (a guest\'s resolv.conf)', async () => {
      const etc = `/etc/netns/${ns}`;
      mkdirSync(etc, { recursive: true });
      try {
        writeFileSync(join(etc, 'resolv.conf'), 'nameserver 192.0.2.53\n');
        assert.equal(await execute(['cat', '/etc/resolv.conf'], { netns: ns }), 'nameserver 192.0.2.53\n');
      } finally {
        rmSync(etc, { recursive: true, force: true });
      }
    });

    test('a missing namespace fails as ip netns exec fails (exit 1); with checkExit false it is a result', async () => {
      const absent = `${fx.prefix}-nope`;
      await assert.rejects(execute(['true'], { netns: absent }), (e: unknown) => e instanceof CommandError && e.exitCode === 1 && /Cannot open network namespace/.test(e.stderr));
      const r = await executeFull(['true'], { netns: absent, checkExit: false });
      assert.equal(r.exitCode, 1);
    });

    test('stdin, large stdout, stderr and exit codes arrive whole; extraOkCodes count', async () => {
      const big = 'x'.repeat(3 << 20);
      assert.equal((await execute(['cat'], { input: big })).length, big.length);
      const r = await executeFull(['sh', '-c', 'echo out; echo err >&2; exit 3'], { checkExit: false });
      assert.deepEqual(r, { stdout: 'out\n', stderr: 'err\n', exitCode: 3 });
      assert.equal((await executeFull(['sh', '-c', 'exit 3'], { extraOkCodes: [3] })).exitCode, 3);
      // A command that does not read its input exits normally: its status tells, not a broken pipe.
      assert.equal(await execute(['true'], { input: big }), '');
    });

    test('a hung command is killed at its timeout; many run at once, off the event loop', async () => {
      const t0 = Date.now();
      await assert.rejects(execute(['sleep', '30'], { timeoutMs: 300 }), (e: unknown) => e instanceof CommandError && e.signal === 'SIGKILL');
      assert.ok(Date.now() - t0 < 5000);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 10);
      const outs = await Promise.all(Array.from({ length: 40 }, (_, i) => execute(['sh', '-c', `sleep 0.2; echo ${i}`])));
      clearInterval(timer);
      assert.deepEqual(outs, Array.from({ length: 40 }, (_, i) => `${i}\n`));
      assert.ok(ticks >= 10, `event loop ran meanwhile (${ticks} ticks)`);
    });
  });
});

describe('namespaces, veth pairs, bridge, addresses', () => {
  const netId = uuid();
  const br = fx.trackBridge(`${fx.prefix}br`);
  const ns1 = fx.trackNamespace(`${fx.prefix}-a`);
  const ns2 = fx.trackNamespace(`${fx.prefix}-b`);
  before(async () => {
    await netnsEnsure(ns1);
    await netnsEnsure(ns2);
  });

  test('plug two ports, address them, ping across the bridge; unplug removes both ends and the bridge', async () => {
    assert.ok(await netnsExists(ns1));
    await netnsEnsure(ns1); // idempotent
    fx.trackLink(`${fx.prefix}r1`);
    fx.trackLink(`${fx.prefix}r2`);
    await plug({ networkId: netId, bridge: br, namespace: ns1, device: 'qr-x1', rootDevice: `${fx.prefix}r1`, mac: 'fa:16:3e:00:00:01' });
    await plug({ networkId: netId, bridge: br, namespace: ns2, device: 'tapx2', rootDevice: `${fx.prefix}r2`, mac: 'fa:16:3e:00:00:02' });
    // Plugging again is a no-op that keeps the pair.
    await plug({ networkId: netId, bridge: br, namespace: ns1, device: 'qr-x1', rootDevice: `${fx.prefix}r1`, mac: 'fa:16:3e:00:00:01' });
    await initL3('qr-x1', ['10.77.0.1/24'], ns1);
    await initL3('tapx2', ['10.77.0.2/24', '10.78.0.2/24'], ns2);
    await initL3('tapx2', ['10.77.0.2/24'], ns2); // removes the extra one
    assert.deepEqual(await addrList('tapx2', ns2), ['10.77.0.2/24']);
    const links = await linkList(ns1);
    const qr = links.find((l) => l.name === 'qr-x1');
    assert.equal(qr?.mac, 'fa:16:3e:00:00:01');
    assert.equal(qr?.up, true);
    assert.deepEqual(bridgePorts(br).sort(), [`${fx.prefix}r1`, `${fx.prefix}r2`].sort());
    await fx.httpServer(ns2, '10.77.0.2', 8080, 'across');
    assert.equal(nsExec(ns1, ['curl', '-s', '-m', '3', 'http://10.77.0.2:8080/']), 'across');
    // Written in the namespace by the addon (no process), and only there: the root namespace's value stays.
    const rootForward = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');
    await sysctlSet('net.ipv4.ip_forward', 1, ns1);
    assert.equal(await sysctlGet('net.ipv4.ip_forward', ns1), '1');
    await sysctlSet('net.ipv6.conf.all.forwarding', 1, ns1);
    assert.equal(await sysctlGet('net.ipv6.conf.all.forwarding', ns1), '1');
    await sysctlSet('net.ipv4.ip_forward', 0, ns1);
    assert.equal(await sysctlGet('net.ipv4.ip_forward', ns1), '0');
    assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8'), rootForward);
    await assert.rejects(sysctlSet('net.ipv4.no_such_key', 1, ns1), (e: Error) => e.name === 'CommandError' && /ENOENT/.test(e.message));
    await assert.rejects(sysctlSet('net.ipv4.ip_forward', 1, `${fx.prefix}absent`), (e: Error) => e.name === 'CommandError' && /ENOENT/.test(e.message));

    await unplug({ rootDevice: `${fx.prefix}r1`, namespace: ns1, device: 'qr-x1', bridge: br });
    assert.equal(linkExistsSync(`${fx.prefix}r1`), false);
    assert.equal(linkExistsSync('qr-x1', ns1), false);
    assert.equal(linkExistsSync(br), true, 'bridge kept while a port remains');
    await unplug({ rootDevice: `${fx.prefix}r2`, bridge: br });
    assert.equal(linkExistsSync(br), false, 'empty bridge removed');
    assert.equal(await deleteBridgeIfEmpty(br), false);
    await netnsDelete(ns2);
    assert.equal(await netnsExists(ns2), false);
  });

  test('device names longer than 15 characters are refused before any command runs', async () => {
    await assert.rejects(plug({ networkId: netId, namespace: ns1, device: 'x'.repeat(16), rootDevice: 'y', mac: 'fa:16:3e:00:00:03' }), CommandError);
  });
});

test('sameTables: chain order and counters do not matter, rule order in a chain and policies do', () => {
  const saved = '# Generated\n*nat\n:PREROUTING ACCEPT [5:300]\n:OUTPUT ACCEPT [0:0]\n:w-PREROUTING - [0:0]\n-A PREROUTING -j w-PREROUTING\n-A w-PREROUTING -p tcp -j REDIRECT --to-ports 1\n-A w-PREROUTING -p udp -j ACCEPT\nCOMMIT\n';
  const input = '*nat\n:OUTPUT ACCEPT [0:0]\n:PREROUTING ACCEPT [0:0]\n:w-PREROUTING - [0:0]\n-A w-PREROUTING -p tcp -j REDIRECT --to-ports 1\n-A PREROUTING -j w-PREROUTING\n-A w-PREROUTING -p udp -j ACCEPT\nCOMMIT\n';
  assert.equal(sameTables(saved, input, ['nat']), true);
  assert.equal(sameTables(saved, input.replace(/(-A w-PREROUTING -p tcp.*\n)(-A PREROUTING.*\n)(-A w-PREROUTING -p udp.*\n)/, '$3$2$1'), ['nat']), false);
  assert.equal(sameTables(saved, input.replace(':OUTPUT ACCEPT', ':OUTPUT DROP'), ['nat']), false);
  assert.equal(sameTables(saved, input, ['nat', 'filter']), false, 'a table iptables-save did not print is written');
});

describe('IptablesManager in a namespace', () => {
  const ns = fx.trackNamespace(`${fx.prefix}-ipt`);
  before(async () => {
    await netnsEnsure(ns);
  });

  const metadataRules = (m: IptablesManager, port: number) => {
    m.ipv4.mangle.addRule('PREROUTING', '-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff');
    m.ipv4.filter.addChain('scope');
    m.ipv4.filter.addRule('FORWARD', '-j $scope');
    m.ipv4.filter.addRule('scope', '-m mark --mark 0x1/0xffff -j DROP');
    m.ipv4.nat.addRule('PREROUTING', `-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports ${port}`);
    m.ipv4.filter.addRule('INPUT', '-m mark --mark 0x1/0xffff -j ACCEPT');
    m.ipv4.filter.addRule('INPUT', `-p tcp -m tcp --dport ${port} -j DROP`);
  };

  test('rules applied atomically read back from iptables-save exactly; re-apply adds nothing; foreign rules survive', async () => {
    // Someone else's rule in the namespace before we start.
    nsExec(ns, ['iptables', '-A', 'INPUT', '-s', '192.0.2.1/32', '-j', 'ACCEPT']);
    const m = new IptablesManager({ namespace: ns, binaryName: 'quantum-l3-agent' });
    metadataRules(m, 9697);
    await m.apply();
    await m.apply();
    const filter = await IptablesManager.readRules('filter', ns);
    assert.deepEqual(filter, [
      '-A INPUT -j quantum-l3-agent-INPUT',
      '-A INPUT -s 192.0.2.1/32 -j ACCEPT',
      '-A FORWARD -j quantum-l3-agent-FORWARD',
      '-A OUTPUT -j quantum-l3-agent-OUTPUT',
      '-A quantum-l3-agent-FORWARD -j quantum-l3-agent-scope',
      '-A quantum-l3-agent-INPUT -m mark --mark 0x1/0xffff -j ACCEPT',
      '-A quantum-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP',
      '-A quantum-l3-agent-scope -m mark --mark 0x1/0xffff -j DROP',
    ]);
    assert.deepEqual(await IptablesManager.readRules('nat', ns), [
      '-A PREROUTING -j quantum-l3-agent-PREROUTING',
      '-A OUTPUT -j quantum-l3-agent-OUTPUT',
      '-A POSTROUTING -j quantum-l3-agent-POSTROUTING',
      '-A quantum-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697',
    ]);
    const mangle = await IptablesManager.readRules('mangle', ns);
    assert.ok(mangle.includes('-A quantum-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff'), mangle.join('\n'));

    // A changed port replaces the rules, not adds to them.
    const m2 = new IptablesManager({ namespace: ns, binaryName: 'quantum-l3-agent' });
    metadataRules(m2, 9698);
    await m2.apply();
    const nat2 = await IptablesManager.readRules('nat', ns);
    assert.equal(nat2.filter((r) => r.includes('REDIRECT')).length, 1);
    assert.match(nat2.join('\n'), /--to-ports 9698/);

    // A namespace already as declared (adopted after a restart or a failover) is read, not written again;
    // one rule that differs is written back.
    const argvs: string[] = [];
    const spy = pino({ level: 'debug' }, { write: (line: string) => void argvs.push(((JSON.parse(line) as { argv?: string[] }).argv ?? []).slice(4).join(' ')) });
    const m3 = new IptablesManager({ namespace: ns, binaryName: 'quantum-l3-agent', log: spy });
    metadataRules(m3, 9698);
    await m3.apply();
    assert.deepEqual(argvs, ['iptables-save']);
    nsExec(ns, ['iptables', '-t', 'nat', '-D', 'quantum-l3-agent-PREROUTING', '1']);
    await m3.apply();
    assert.deepEqual(argvs, ['iptables-save', 'iptables-save', 'iptables-restore']);
    assert.equal((await IptablesManager.readRules('nat', ns)).filter((r) => r.includes('--to-ports 9698')).length, 1);

    // Another binary's chains are independent of ours.
    const other = new IptablesManager({ namespace: ns, binaryName: 'quantum-dhcp-agent' });
    other.ipv4.filter.addRule('INPUT', '-p udp -m udp --dport 67 -j ACCEPT');
    await other.apply();
    assert.equal(other.wrapName, 'quantum-dhcp-age');

    await m2.clearAll();
    const after = await IptablesManager.readRules('filter', ns);
    assert.ok(!after.some((r) => r.includes('quantum-l3-agent')), after.join('\n'));
    assert.ok(after.includes('-A INPUT -s 192.0.2.1/32 -j ACCEPT'));
    assert.ok(after.includes('-A quantum-dhcp-age-INPUT -p udp -m udp --dport 67 -j ACCEPT'));
  });
});

describe('ProcessManager and ProcessMonitor', () => {
  const ns = fx.trackNamespace(`${fx.prefix}-pm`);
  let state: string;
  before(async () => {
    state = fx.statePath();
    await netnsEnsure(ns);
  });
  const sleeper = (id: string) => (pidFile: string) => [process.execPath, '-e', 'setInterval(() => {}, 1000)', '--', id, pidFile];

  test('enable runs the command in the namespace with a pid file; active needs the uuid in cmdline; disable removes it', async () => {
    const id = uuid();
    const pm = new ProcessManager({ uuid: id, statePath: state, namespace: ns, cmd: sleeper(id) });
    assert.equal(pm.pidFile, join(state, 'external', 'pids', `${id}.pid`));
    assert.equal(pm.active, false);
    await pm.enable();
    const pid = pm.pid!;
    assert.ok(pm.active);
    // It really is in the namespace.
    assert.ok(readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(id));
    assert.ok((await netnsPids(ns)).includes(pid));
    assert.match(await netnsExec(ns, ['ip', 'netns', 'identify', String(pid)]), new RegExp(ns));
    await pm.enable(); // no second copy
    assert.equal(pm.pid, pid);
    // A pid file naming a live process without our uuid (this test runner) is not "active".
    const other = new ProcessManager({ uuid: uuid(), statePath: state, cmd: sleeper('x') });
    mkdirSync(join(state, 'external', 'pids'), { recursive: true });
    writeFileSync(other.pidFile, `${process.pid}\n`);
    assert.equal(other.active, false);
    const t0 = Date.now();
    await pm.disable();
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(existsSync(pm.pidFile), false);
    assert.ok(processGone(pid));
  });

  test('a process that fails to start is reported at once, with its output', async () => {
    const id = uuid();
    const pm = new ProcessManager({ uuid: id, statePath: state, namespace: ns, pidFileWriter: 'process', cmd: () => [process.execPath, '-e', "console.error('port 80 already in use'); process.exit(3)", '--', id] });
    const t0 = Date.now();
    await assert.rejects(pm.enable(), /exited with 3.*port 80 already in use/s);
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(pm.active, false);
  });

  test('a daemonizing command (dnsmasq\'s shape) is launched in the namespace and its own session; a failing launcher is reported with its output', async () => {
    const id = uuid();
    // The launcher forks the daemon (which writes its pid file) and exits 0, as dnsmasq does.
    const daemon = (pf: string) => [
      process.execPath,
      '-e',
      `const { spawn } = require('child_process'); const c = spawn(process.execPath, ['-e', 'require("fs").writeFileSync(process.argv[1], String(process.pid)); console.log("daemon up"); setInterval(() => {}, 1000)', '--', ${JSON.stringify(pf)}, ${JSON.stringify(id)}], { detached: true, stdio: ['ignore', 'inherit', 'inherit'] }); c.unref();`,
      '--',
      id,
    ];
    const pm = new ProcessManager({ uuid: id, statePath: state, namespace: ns, pidFileWriter: 'process', daemonizes: true, cmd: daemon });
    await pm.enable();
    const pid = pm.pid!;
    assert.ok(pm.active);
    assert.match(await netnsExec(ns, ['ip', 'netns', 'identify', String(pid)]), new RegExp(ns));
    // Not in this test runner's session (it was started with setsid, as node's detached spawn did).
    const sid = (p: number) => readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')[3];
    assert.notEqual(sid(pid), sid(process.pid));
    await waitFor(() => readFileSync(join(state, 'external', 'logs', `${id}.log`), 'utf8').includes('daemon up'), 5000, 20, 'daemon output in the log');
    await pm.disable();
    assert.ok(processGone(pid));

    const bad = uuid();
    const failing = new ProcessManager({ uuid: bad, statePath: state, namespace: ns, pidFileWriter: 'process', daemonizes: true, cmd: () => [process.execPath, '-e', "console.error('dnsmasq: bad option'); process.exit(1)", '--', bad] });
    const t0 = Date.now();
    await assert.rejects(failing.enable(), /exited with 1.*bad option/s);
    assert.ok(Date.now() - t0 < 3000);
    await assert.rejects(new ProcessManager({ uuid: uuid(), statePath: state, namespace: ns, daemonizes: true, pidFileWriter: 'process', cmd: () => ['/nonexistent-dnsmasq'] }).enable(), /ENOENT/);
  });

  test('disable escalates to SIGKILL after the grace period', async () => {
    const id = uuid();
    const ready = join(state, `${id}.ready`);
    const script = `process.on('SIGTERM', () => {}); require('fs').writeFileSync(${JSON.stringify(ready)}, '1'); setInterval(() => {}, 1000)`;
    const pm = new ProcessManager({ uuid: id, statePath: state, cmd: (pf) => [process.execPath, '-e', script, '--', id, pf] });
    await pm.enable();
    await waitFor(() => existsSync(ready), 10_000, 20, 'SIGTERM handler installed');
    const pid = pm.pid!;
    const t0 = Date.now();
    await pm.disable(500);
    assert.ok(Date.now() - t0 >= 500);
    assert.ok(processGone(pid));
    assert.equal(existsSync(pm.pidFile), false);
  });

  for (const mode of ['our child (its exit brings the check forward)', 'adopted from an earlier run (periodic check)'] as const) {
    test(`monitor respawns a process killed with -9 within 2 s (interval 1 s): ${mode}`, async (t) => {
      const id = uuid();
      const starter = new ProcessManager({ uuid: id, statePath: state, namespace: ns, service: 'sleeper', cmd: sleeper(id) });
      assert.equal(starter.pidFile, join(state, 'external', 'pids', `${id}.pid.sleeper`));
      await starter.enable();
      // "Adopted": a fresh manager, as a restarted agent builds, that did not spawn the process.
      const pm = mode.startsWith('our') ? starter : new ProcessManager({ uuid: id, statePath: state, namespace: ns, service: 'sleeper', cmd: sleeper(id) });
      assert.ok(pm.active);
      const mon = new ProcessMonitor({ intervalSec: 1, action: 'respawn' });
      mon.register(pm);
      try {
        const old = pm.pid!;
        const t0 = Date.now();
        process.kill(old, 'SIGKILL');
        const pid = await waitFor(() => (pm.active && pm.pid !== old ? pm.pid : undefined), 2500, 10, 'respawn');
        const took = Date.now() - t0;
        t.diagnostic(`respawned in ${took} ms`);
        assert.ok(took < 2000, `respawn took ${took} ms`);
        assert.notEqual(pid, old);
        assert.equal(mon.respawns, 1);
      } finally {
        mon.stop();
        await pm.disable();
      }
    });
  }

  test('monitor with action exit calls the exit hook', async () => {
    const id = uuid();
    const pm = new ProcessManager({ uuid: id, statePath: state, cmd: sleeper(id) });
    await pm.enable();
    let exited = 0;
    const mon = new ProcessMonitor({ intervalSec: 0, action: 'exit', onExit: () => exited++ });
    mon.register(pm);
    await mon.check();
    assert.equal(exited, 0);
    process.kill(pm.pid!, 'SIGKILL');
    await waitFor(() => !pm.active, 2000);
    await mon.check();
    assert.equal(exited, 1);
    mon.stop();
    await pm.disable();
  });
});


describe('dnsmasq files and isolated metadata (Neutron dhcp.py)', () => {
  const sub = (o: Partial<Subnet>): Subnet => ({
    id: 's1', tenant_id: 't', project_id: 't', network_id: 'n', name: '', cidr: '10.1.1.0/24', ip_version: 4, gateway_ip: '10.1.1.1', enable_dhcp: true,
    allocation_pools: [], dns_nameservers: [], host_routes: [], ipv6_ra_mode: null, ipv6_address_mode: null, ...o,
  });
  const port = (o: Partial<Port>): Port => ({
    id: 'p', tenant_id: 't', project_id: 't', network_id: 'n', name: '', mac_address: 'fa:16:3e:00:00:01', fixed_ips: [], device_id: '', device_owner: '',
    admin_state_up: true, status: 'ACTIVE', 'binding:host_id': '', ...o,
  });
  const conf = { enable_isolated_metadata: true, force_metadata: false, enable_metadata_network: false };
  const dhcpPort = port({ id: 'd', mac_address: 'fa:16:3e:aa:aa:aa', device_owner: 'network:dhcp', fixed_ips: [{ subnet_id: 's1', ip_address: '10.1.1.2' }] });
  const vm = port({ id: 'v', mac_address: 'fa:16:3e:bb:bb:bb', device_owner: 'compute:nova', fixed_ips: [{ subnet_id: 's1', ip_address: '10.1.1.5' }] });
  const rtr = port({ id: 'r', device_owner: 'network:router_interface', device_id: 'R', fixed_ips: [{ subnet_id: 's1', ip_address: '10.1.1.1' }] });

  test('hosts file: <mac>,host-<ip-dashed>.<domain>,<ip>', () => {
    assert.equal(buildHostsFile([dhcpPort, vm], [sub({})], 'openstacklocal'), 'fa:16:3e:aa:aa:aa,host-10-1-1-2.openstacklocal,10.1.1.2\nfa:16:3e:bb:bb:bb,host-10-1-1-5.openstacklocal,10.1.1.5\n');
    assert.equal(buildHostsFile([vm], [sub({ enable_dhcp: false })], 'd'), '');
  });

  test('isolation: no router port on the gateway IP, or no gateway at all', () => {
    assert.equal(isolatedSubnets([sub({})], [vm]).get('s1'), true);
    assert.equal(isolatedSubnets([sub({})], [vm, rtr]).get('s1'), false);
    assert.equal(isolatedSubnets([sub({ gateway_ip: null })], [rtr]).get('s1'), true);
    const rtrOther = port({ device_owner: 'network:router_interface', fixed_ips: [{ subnet_id: 's1', ip_address: '10.1.1.9' }] });
    assert.equal(isolatedSubnets([sub({})], [rtrOther]).get('s1'), true);
  });

  test('should_enable_metadata, every branch', () => {
    const off = { enable_isolated_metadata: false, force_metadata: false, enable_metadata_network: false };
    assert.equal(shouldEnableMetadata(conf, [sub({ enable_dhcp: false })], []), false, 'no dhcp subnet');
    assert.equal(shouldEnableMetadata({ ...off, force_metadata: true }, [sub({})], [rtr]), true, 'force');
    assert.equal(shouldEnableMetadata(off, [sub({})], []), false, 'isolated off');
    assert.equal(shouldEnableMetadata({ ...conf, enable_metadata_network: true }, [sub({ cidr: '169.254.10.0/24', gateway_ip: '169.254.10.1' })], [port({ device_owner: 'network:router_interface', fixed_ips: [{ subnet_id: 's1', ip_address: '169.254.10.1' }] })]), true, 'metadata network');
    assert.equal(shouldEnableMetadata(conf, [sub({})], [rtr]), false, 'routed');
    assert.equal(shouldEnableMetadata(conf, [sub({})], []), true, 'isolated');
  });

  test('opts: option 121 and 249 with the metadata route via the DHCP port, default route, router option', () => {
    const ips = new Map([['s1', '10.1.1.2']]);
    assert.equal(
      buildOptsFile({ subnets: [sub({})], ports: [dhcpPort, vm], dhcpIpBySubnet: ips, conf }),
      [
        'tag:tag0,option:classless-static-route,169.254.169.254/32,10.1.1.2,0.0.0.0/0,10.1.1.1',
        'tag:tag0,249,169.254.169.254/32,10.1.1.2,0.0.0.0/0,10.1.1.1',
        'tag:tag0,option:router,10.1.1.1',
        '',
      ].join('\n'),
    );
    // No gateway: only the metadata route, and an empty router option.
    assert.equal(
      buildOptsFile({ subnets: [sub({ gateway_ip: null, dns_nameservers: ['8.8.8.8'] })], ports: [dhcpPort], dhcpIpBySubnet: ips, conf }),
      ['tag:tag0,option:dns-server,8.8.8.8', 'tag:tag0,option:classless-static-route,169.254.169.254/32,10.1.1.2', 'tag:tag0,249,169.254.169.254/32,10.1.1.2', 'tag:tag0,option:router', ''].join('\n'),
    );
    // Routed subnet: metadata via the gateway.
    assert.equal(
      buildOptsFile({ subnets: [sub({})], ports: [dhcpPort, rtr], dhcpIpBySubnet: ips, conf }).split('\n')[0],
      'tag:tag0,option:classless-static-route,169.254.169.254/32,10.1.1.1,0.0.0.0/0,10.1.1.1',
    );
  });

  test('argv', () => {
    const argv = buildDnsmasqArgv({ networkId: 'n', confDir: '/s/dhcp/n', interfaceName: 'tapabc', subnets: [sub({})], leaseDuration: 86400, domain: 'openstacklocal', leaseMax: 16777216 }, '/s/dhcp/n/pid');
    assert.deepEqual(argv, [
      'dnsmasq', '--no-hosts', '--no-resolv', '--strict-order', '--except-interface=lo', '--pid-file=/s/dhcp/n/pid', '--dhcp-hostsfile=/s/dhcp/n/host',
      '--dhcp-optsfile=/s/dhcp/n/opts', '--leasefile-ro', '--bind-interfaces', '--interface=tapabc', '--dhcp-range=set:tag0,10.1.1.0,static,86400s',
      '--dhcp-lease-max=16777216', '--domain=openstacklocal',
    ]);
  });
});
