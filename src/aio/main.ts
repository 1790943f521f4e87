// quantum-aio: the whole stack on one machine, with the demo.
//   start [--data-dir D] [--no-demo]   config files, daemons, demo resources, guest namespaces, live proof
//   stop  [--data-dir D]               end what this stack started and remove what it built
//   status
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yargs from 'yargs';
import { errorMessage } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import { QuantumClient } from '../common/quantum-client.js';
import { execute, executeFull } from '../linux/exec.js';
import { ProcessManager } from '../linux/external-process.js';
import { linkDelete, linkExists, netnsDelete, netnsExists } from '../linux/ip-lib.js';
import { bridgeName, dhcpNamespace, routerNamespace } from '../linux/names.js';
import { NS_OWNER_DIR } from '../linux/ns-owner.js';
import { dhclientPid, guestRoutes, plugGuest, unplugGuest } from '../guest/guest.js';
import { buildDemo, type DemoTopology } from './demo.js';
import { daemons, layout, runningPid, startDaemon, stopDaemon, waitReady, writeConfigs, type StackLayout } from './stack.js';

interface Manifest {
  routers: string[];
  networks: string[];
  guests: Array<{ namespace: string; portId: string; networkId: string }>;
}

const manifestPath = (l: StackLayout) => join(l.run, 'manifest.json');

function readManifest(l: StackLayout): Manifest {
  try {
    return JSON.parse(readFileSync(manifestPath(l), 'utf8')) as Manifest;
  } catch {
    return { routers: [], networks: [], guests: [] };
  }
}

function saveManifest(l: StackLayout, m: Manifest): void {
  const uniq = <T>(xs: T[], key: (x: T) => string) => [...new Map(xs.map((x) => [key(x), x])).values()];
  writeFileSync(manifestPath(l), JSON.stringify({ routers: [...new Set(m.routers)], networks: [...new Set(m.networks)], guests: uniq(m.guests, (g) => g.namespace) }, null, 2));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitUntil(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch {
      /* not yet */
    }
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function curl(ns: string, path: string): Promise<{ code: string; body: string }> {
  const r = await executeFull(['curl', '-s', '-m', '10', '-w', '\n%{http_code}', `http://169.254.169.254${path}`], { netns: ns, checkExit: false, timeoutMs: 15_000 });
  const i = r.stdout.lastIndexOf('\n');
  return { body: r.stdout.slice(0, i), code: r.stdout.slice(i + 1).trim() || `curl exit ${r.exitCode}` };
}

async function start(l: StackLayout, withDemo: boolean, log: Logger): Promise<void> {
  writeConfigs(l);
  for (const d of daemons(l)) {
    const already = runningPid(l, d.name);
    const pid = startDaemon(l, d);
    // Ready means our process is alive and answering (not some other listener on the same port).
    const ok = (await waitReady(d.ready, l.bindHost)) && (await sleep(300), runningPid(l, d.name) === pid);
    if (!ok) throw new Error(`${d.name} did not come up; see ${join(l.logs, `${d.name}.log`)} and ${d.name}.stdout`);
    console.log(`${already ? 'running' : 'started'} ${d.name.padEnd(24)} pid ${pid}`);
  }
  if (!withDemo) return;
  const quantumUrl = `http://${l.bindHost}:${l.ports.quantum}`;
  const topo = await buildDemo(quantumUrl, `http://${l.bindHost}:${l.ports.compute}`);
  const m = readManifest(l);
  m.routers.push(...topo.routers.map((r) => r.id));
  m.networks.push(...topo.networks.map((n) => n.id));
  saveManifest(l, m);
  await plugDemoGuests(l, topo, m, log);
  await showDemo(l, topo);
}

async function plugDemoGuests(l: StackLayout, topo: DemoTopology, m: Manifest, log: Logger): Promise<void> {
  const q = new QuantumClient({ url: `http://${l.bindHost}:${l.ports.quantum}` });
  const stateDir = join(l.dataDir, 'guests');
  try {
    for (const s of topo.servers) {
      const port = (await q.listPorts({ device_id: s.id }))[0];
      if (!port) throw new Error(`server ${s.name} has no port`);
      const subnet = await q.showSubnet(port.fixed_ips[0]!.subnet_id);
      m.guests.push({ namespace: l.guestPrefix + s.name, portId: port.id, networkId: port.network_id });
      saveManifest(l, m);
      if (s.mode === 'static') {
        // The router namespace must exist before a static guest can reach its gateway.
        const router = topo.routers.find((r) => r.project === s.project)!;
        await waitUntil(`router namespace for ${s.name}`, () => netnsExists(routerNamespace(router.id)), 30_000);
      } else {
        // dnsmasq must be serving before the DHCP client asks.
        // dnsmasq must be serving, and know this port's MAC (static ranges answer known hosts only).
        const dhcpDir = join(l.quantumState, 'dhcp', s.networkId);
        await waitUntil(`dnsmasq to know ${s.name}`, async () => {
          const hosts = readFileSync(join(dhcpDir, 'host'), 'utf8');
          const pid = Number.parseInt(readFileSync(join(dhcpDir, 'pid'), 'utf8'), 10);
          return hosts.includes(port.mac_address) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('dnsmasq');
        }, 30_000);
        if (dhclientPid(stateDir, l.guestPrefix + s.name)) continue;
      }
      const ip = await plugGuest({ namespace: l.guestPrefix + s.name, port, subnet, mode: s.mode, stateDir }, { log });
      console.log(`guest ${s.name.padEnd(9)} ${s.mode === 'dhcp' ? 'DHCP  ' : 'static'} ${ip.padEnd(12)} ${port.mac_address}  (${s.project})`);
    }
  } finally {
    await q.close();
  }
}

async function showDemo(l: StackLayout, topo: DemoTopology): Promise<void> {
  console.log('\nLive, from inside each guest namespace:');
  for (const s of topo.servers) {
    const ns = l.guestPrefix + s.name;
    await waitUntil(`metadata for ${ns}`, async () => (await curl(ns, '/latest/meta-data/instance-id')).code === '200', 30_000).catch(() => undefined);
    const iid = await curl(ns, '/latest/meta-data/instance-id');
    const host = await curl(ns, '/latest/meta-data/hostname');
    const ip = await curl(ns, '/latest/meta-data/local-ipv4');
    console.log(`  ${ns.padEnd(9)} local-ipv4=${ip.body.padEnd(12)} instance-id=${iid.body} (${iid.code})  hostname=${host.body}`);
  }
  const iso = topo.servers.find((s) => s.mode === 'dhcp');
  if (iso) {
    const routes = (await guestRoutes(l.guestPrefix + iso.name)).split('\n').filter((r) => r.startsWith('169.254.169.254'));
    console.log(`  ${iso.name} learnt by DHCP option 121: ${routes.join('; ') || '(no route yet)'}`);
  }
  console.log(`
Try it yourself:
  ip netns exec ${l.guestPrefix}demo-a curl http://169.254.169.254/latest/meta-data/instance-id
  ip netns exec ${l.guestPrefix}demo-b curl http://169.254.169.254/latest/meta-data/instance-id     # same 10.1.1.2, other tenant
  ip netns exec ${l.guestPrefix}demo-b curl http://169.254.169.254/openstack/latest/meta_data.json
  ip netns exec ${l.guestPrefix}demo-a curl -H 'X-Instance-ID: whatever' http://169.254.169.254/latest/user-data   # spoofing changes nothing
  ip netns exec ${l.guestPrefix}demo-iso ip route       # 169.254.169.254 via the DHCP port, from option 121
  ip netns exec ${l.guestPrefix}demo-iso curl http://169.254.169.254/latest/meta-data/hostname
  OS_URL=http://${l.bindHost}:${l.ports.quantum} node dist/src/cli/quantum.js agent-list
  OS_URL=http://${l.bindHost}:${l.ports.compute} node dist/src/cli/nova.js --os-project-id tenant-a list
Configs: ${l.etc}   Logs: ${l.logs}   Stop: ./install.sh stop
`);
}

async function stop(l: StackLayout, log: Logger): Promise<void> {
  const m = readManifest(l);
  // Learn every router and network the stack knows while quantum-server still answers.
  if (runningPid(l, 'quantum-server')) {
    const q = new QuantumClient({ url: `http://${l.bindHost}:${l.ports.quantum}`, timeoutMs: 5000 });
    try {
      m.routers.push(...(await q.listRouters()).map((r) => r.id));
      m.networks.push(...(await q.listNetworks()).map((n) => n.id));
      saveManifest(l, m);
    } catch (e) {
      log.warn({ err: e }, 'could not list routers/networks; using the saved manifest');
    } finally {
      await q.close();
    }
  }
  for (const g of m.guests) await unplugGuest({ ...g, stateDir: join(l.dataDir, 'guests') }, { log }).catch((e: unknown) => console.error(`unplug ${g.namespace}: ${errorMessage(e)}`));
  for (const d of [...daemons(l)].reverse()) if (await stopDaemon(l, d.name)) console.log(`stopped ${d.name}`);
  // The agents leave their namespaces and children behind on exit (as Neutron's do, so a restart adopts them);
  // a full stop removes them, but only those of this stack's routers and networks.
  const kill = async (uuid: string, pidFile?: string) => {
    const pm = new ProcessManager({ uuid, statePath: l.quantumState, ...(pidFile ? { pidFile } : {}), cmd: () => [], log });
    if (pm.active) await pm.disable();
  };
  const drop = async (ns: string) => {
    await netnsDelete(ns).catch(() => undefined);
    rmSync(join(NS_OWNER_DIR, ns), { force: true });
  };
  for (const r of new Set(m.routers)) {
    await kill(r);
    await drop(routerNamespace(r));
  }
  for (const n of new Set(m.networks)) {
    await kill(n);
    await kill(n, join(l.quantumState, 'dhcp', n, 'pid'));
    await drop(dhcpNamespace(n));
    if (await linkExists(bridgeName(n))) await linkDelete(bridgeName(n));
  }
  saveManifest(l, { routers: [], networks: [], guests: [] });
  console.log(`stack stopped; data kept in ${l.dataDir} (remove it to start from scratch)`);
}

async function status(l: StackLayout): Promise<void> {
  for (const d of daemons(l)) {
    const pid = runningPid(l, d.name);
    console.log(`${d.name.padEnd(24)} ${pid ? `running pid ${pid}` : 'stopped'}`);
  }
  const m = readManifest(l);
  for (const g of m.guests) console.log(`guest ${g.namespace.padEnd(10)} ${(await netnsExists(g.namespace)) ? 'plugged' : 'absent'}`);
  const ns = await execute(['ip', 'netns', 'list']);
  console.log(`namespaces:\n${ns}`);
}

async function main(): Promise<void> {
  const argv = await yargs(process.argv.slice(2))
    .scriptName('quantum-aio')
    .command('start', 'start the stack (and the demo)')
    .command('stop', 'stop the stack and remove what it built')
    .command('status', 'show what runs')
    .demandCommand(1)
    .option('data-dir', { type: 'string', default: process.env.AIO_DATA_DIR ?? '/var/lib/quantum-aio', describe: 'configs, databases, logs and state' })
    .option('demo', { type: 'boolean', default: true, describe: 'create the demo tenants, servers and guests' })
    .option('guest-prefix', { type: 'string', default: '', describe: 'prefix for guest namespace names (tests use one so they never meet a running demo)' })
    .option('quantum-port', { type: 'number', default: 9696 })
    .option('compute-port', { type: 'number', default: 8774 })
    .option('metadata-port', { type: 'number', default: 8775 })
    .option('debug', { type: 'boolean', default: false })
    .strict()
    .parseAsync();
  const l = layout(argv['data-dir'], { quantum: argv['quantum-port'], compute: argv['compute-port'], metadata: argv['metadata-port'] }, '127.0.0.1', argv['guest-prefix']);
  const log = createLogger({ name: 'quantum-aio', debug: argv.debug, log_file: join(l.dataDir, 'log', 'aio.log') });
  const cmd = String(argv._[0]);
  if (cmd === 'start') await start(l, argv.demo, log);
  else if (cmd === 'stop') await stop(l, log);
  else await status(l);
}

main().catch((e: unknown) => {
  process.stderr.write(`quantum-aio: ${errorMessage(e)}\n`);
  process.exit(1);
});
