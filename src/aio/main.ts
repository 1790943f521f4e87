// quantum-aio: the whole stack on one machine, with the demo.
//   start [--data-dir D] [--no-demo] [--keystone]   config files, (Keystone,) daemons, demo resources, guest namespaces, live proof
//   stop  [--data-dir D] [--purge]                  end what this stack started and remove what it built
//   status
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yargs from 'yargs';
import { ConfigError, errorMessage } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import { QuantumClient } from '../common/quantum-client.js';
import { execute, executeFull } from '../linux/exec.js';
import { ProcessManager } from '../linux/external-process.js';
import { linkDelete, linkExists, netnsDelete, netnsExists } from '../linux/ip-lib.js';
import { bridgeName, dhcpNamespace, routerNamespace } from '../linux/names.js';
import { NS_OWNER_DIR } from '../linux/ns-owner.js';
import { dhclientPid, guestRoutes, plugGuest, unplugGuest } from '../guest/guest.js';
import { buildDemo, closeAccess, noauthAccess, type DemoAccess, type DemoTopology } from './demo.js';
import { dropKeystoneDatabase, mariadbProblem } from './keystone.js';
import {
  bootstrapOnce,
  checkKeystonePrerequisites,
  keystoneAccess,
  keystoneDatabase,
  readCredentials,
  register,
  serviceAuth,
  stackAdmin,
  stackCredentials,
  writeOpenrc,
  type Openrc,
} from './keystone-stack.js';
import {
  baseUrl,
  daemons,
  DEFAULT_PORTS,
  keystoneUrlOf,
  layout,
  recordedStack,
  recordStack,
  runningPid,
  startDaemon,
  stopDaemon,
  waitReady,
  writeConfigs,
  type AuthMode,
  type DaemonDef,
  type StackLayout,
  type StackPorts,
} from './stack.js';

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
  mkdirSync(l.run, { recursive: true });
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

/** A QuantumClient that acts as the stack's admin: noauth's admin context, or the Keystone admin's token. */
function adminQuantum(l: StackLayout, timeoutMs?: number): { q: QuantumClient; close(): Promise<void> } {
  const url = baseUrl(l, l.ports.quantum);
  const creds = l.auth === 'keystone' ? readCredentials(l) : undefined;
  if (!creds) {
    const q = new QuantumClient({ url, ...(timeoutMs ? { timeoutMs } : {}) });
    return { q, close: () => q.close() };
  }
  const admin = stackAdmin(l, creds);
  const q = new QuantumClient({ url, auth: admin.admin, ...(timeoutMs ? { timeoutMs } : {}) });
  return { q, close: async () => (await q.close(), await admin.close()) };
}

async function startOne(l: StackLayout, d: DaemonDef): Promise<void> {
  const already = runningPid(l, d.name);
  const pid = startDaemon(l, d);
  // Ready means our process is alive and answering (not some other listener on the same port).
  const ok = (await waitReady(d.ready, l.bindHost, d.name === 'keystone' ? 60_000 : 20_000)) && (await sleep(300), runningPid(l, d.name) === pid);
  if (!ok) throw new Error(`${d.name} did not come up; see ${join(l.logs, `${d.name}.log`)} and ${d.name}.stdout`);
  console.log(`${already ? 'running' : 'started'} ${d.name.padEnd(24)} pid ${pid}`);
}

async function start(l: StackLayout, withDemo: boolean, log: Logger): Promise<void> {
  const all = daemons(l);
  let access: DemoAccess;
  let openrc: Openrc[] = [];
  if (l.auth === 'keystone') {
    await checkKeystonePrerequisites();
    const creds = stackCredentials(l);
    recordStack(l);
    writeConfigs(l, serviceAuth(l, creds));
    if (!runningPid(l, 'keystone') && (await bootstrapOnce(l, creds))) console.log(`bootstrapped keystone         database ${keystoneDatabase(l)}`);
    await startOne(l, all[0]!);
    const reg = await register(l, creds);
    openrc = writeOpenrc(l, creds);
    const admin = stackAdmin(l, creds);
    access = keystoneAccess(l, creds, reg, admin);
    (access.closers ??= []).push(() => admin.close());
  } else {
    recordStack(l);
    writeConfigs(l);
    access = noauthAccess(baseUrl(l, l.ports.quantum), baseUrl(l, l.ports.compute), baseUrl(l, l.ports.image));
  }
  try {
    for (const d of all) if (d.name !== 'keystone') await startOne(l, d);
    if (!withDemo) return;
    const topo = await buildDemo(access);
    const m = readManifest(l);
    m.routers.push(...topo.routers.map((r) => r.id));
    m.networks.push(...topo.networks.map((n) => n.id));
    saveManifest(l, m);
    await plugDemoGuests(l, topo, m, log);
    await showDemo(l, topo, openrc);
  } finally {
    await closeAccess(access);
  }
}

async function plugDemoGuests(l: StackLayout, topo: DemoTopology, m: Manifest, log: Logger): Promise<void> {
  const { q, close } = adminQuantum(l);
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
      console.log(`guest ${s.name.padEnd(9)} ${s.mode === 'dhcp' ? 'DHCP  ' : 'static'} ${ip.padEnd(12)} ${port.mac_address}  (${s.project}${s.projectId !== s.project ? ` ${s.projectId}` : ''})`);
    }
  } finally {
    await close();
  }
}

async function showDemo(l: StackLayout, topo: DemoTopology, openrc: Openrc[]): Promise<void> {
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
  const p = (server: string) => `${l.guestPrefix}${server}`;
  const guestCmds = `  ip netns exec ${p('demo-a')} curl http://169.254.169.254/latest/meta-data/instance-id
  ip netns exec ${p('demo-b')} curl http://169.254.169.254/latest/meta-data/instance-id     # same 10.1.1.2, other tenant
  ip netns exec ${p('demo-b')} curl http://169.254.169.254/openstack/latest/meta_data.json
  ip netns exec ${p('demo-a')} curl -H 'X-Instance-ID: whatever' http://169.254.169.254/latest/user-data   # spoofing changes nothing
  ip netns exec ${p('demo-iso')} ip route       # 169.254.169.254 via the DHCP port, from option 121
  ip netns exec ${p('demo-iso')} curl http://169.254.169.254/latest/meta-data/hostname`;
  if (l.auth !== 'keystone') {
    console.log(`
Try it yourself:
${guestCmds}
  OS_URL=http://${l.bindHost}:${l.ports.quantum} node dist/src/cli/quantum.js agent-list
  OS_URL=http://${l.bindHost}:${l.ports.compute} node dist/src/cli/nova.js --os-project-id tenant-a list
Configs: ${l.etc}   Logs: ${l.logs}   Stop: ./install.sh stop
`);
    return;
  }
  console.log(`\nKeystone at ${keystoneUrlOf(l)}: every API has auth_strategy = keystone; catalog: identity, network, compute, image.`);
  for (const o of openrc) console.log(`\n# ${o.who}: ${o.path}\n${o.text.trimEnd()}`);
  const rc = (who: string) => join(l.etc, `openrc-${who}`);
  console.log(`
Try it yourself:
${guestCmds}
  (. ${rc('tenant-a')}; node dist/src/cli/quantum.js net-list)      # tenant-a's networks only
  (. ${rc('tenant-b')}; node dist/src/cli/nova.js list)             # tenant-b's server only
  (. ${rc('admin')}; node dist/src/cli/quantum.js agent-list)
  (. ${rc('admin')}; openstack server list --all-projects)          # with python3-openstackclient
Configs: ${l.etc}   Logs: ${l.logs}   Stop: quantum-aio stop --data-dir ${l.dataDir}
`);
}

async function stop(l: StackLayout, purge: boolean, log: Logger): Promise<void> {
  const m = readManifest(l);
  // Learn every router and network the stack knows while quantum-server (and Keystone) still answer.
  if (runningPid(l, 'quantum-server')) {
    const { q, close } = adminQuantum(l, 5000);
    try {
      m.routers.push(...(await q.listRouters()).map((r) => r.id));
      m.networks.push(...(await q.listNetworks()).map((n) => n.id));
      saveManifest(l, m);
    } catch (e) {
      log.warn({ err: e }, 'could not list routers/networks; using the saved manifest');
    } finally {
      await close();
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
  if (purge) return purgeData(l);
  const ks = l.auth === 'keystone' ? ` and Keystone's database ${keystoneDatabase(l)} (on the local MariaDB)` : '';
  console.log(`stack stopped; data kept in ${l.dataDir}${ks}: the next start reuses them (stop --purge removes them)`);
}

/** stop --purge: Keystone's database and what the stack wrote in the data directory (only its own entries). */
async function purgeData(l: StackLayout): Promise<void> {
  if (l.auth === 'keystone') {
    const problem = await mariadbProblem();
    if (problem) throw new Error(`cannot drop Keystone's database ${keystoneDatabase(l)}: ${problem}; data kept in ${l.dataDir}`);
    await dropKeystoneDatabase(keystoneDatabase(l));
    console.log(`dropped Keystone's database ${keystoneDatabase(l)}`);
  }
  for (const sub of ['etc', 'log', 'run', 'quantum', 'nova', 'glance', 'guests']) rmSync(join(l.dataDir, sub), { recursive: true, force: true });
  // The directory itself only if nothing else is in it (it may be one the operator keeps other things in).
  if (existsSync(l.dataDir) && readdirSync(l.dataDir).length === 0) rmdirSync(l.dataDir);
  console.log(`stack stopped; removed its data from ${l.dataDir}`);
}

async function status(l: StackLayout): Promise<void> {
  console.log(`auth_strategy = ${l.auth}${l.auth === 'keystone' ? ` (Keystone ${keystoneUrlOf(l)}, database ${keystoneDatabase(l)})` : ''}`);
  for (const d of daemons(l)) {
    const pid = runningPid(l, d.name);
    console.log(`${d.name.padEnd(24)} ${pid ? `running pid ${pid}` : 'stopped'}`);
  }
  const m = readManifest(l);
  for (const g of m.guests) console.log(`guest ${g.namespace.padEnd(10)} ${(await netnsExists(g.namespace)) ? 'plugged' : 'absent'}`);
  const ns = await execute(['ip', 'netns', 'list']);
  console.log(`namespaces:\n${ns}`);
}

/** The mode a start asks for must be the one the data directory holds (its databases carry that mode's project ids). */
function authModeFor(cmd: string, dataDir: string, recorded: AuthMode | undefined, keystone: boolean): AuthMode {
  const had = recorded ?? (existsSync(join(dataDir, 'quantum', 'quantum.sqlite')) ? 'noauth' : undefined);
  if (cmd !== 'start') return had ?? 'noauth';
  const wanted: AuthMode = keystone ? 'keystone' : 'noauth';
  if (had && had !== wanted) {
    throw new ConfigError(
      `${dataDir} holds a stack set up with auth_strategy = ${had}: start it ${had === 'keystone' ? 'with' : 'without'} --keystone, use another --data-dir, or remove it first (quantum-aio stop --purge)`,
    );
  }
  return wanted;
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
    .option('keystone', { type: 'boolean', default: false, describe: 'start: run a local Keystone (python3-keystone, a database on the local MariaDB) and every API with auth_strategy = keystone' })
    .option('purge', { type: 'boolean', default: false, describe: "stop: also drop Keystone's database and remove the stack's data" })
    .option('guest-prefix', { type: 'string', default: '', describe: 'prefix for guest namespace names (tests use one so they never meet a running demo)' })
    // Ports: the flag, else what this data directory's stack was started with, else the default.
    .option('quantum-port', { type: 'number', describe: `quantum-server (default ${DEFAULT_PORTS.quantum})` })
    .option('compute-port', { type: 'number', describe: `nova-api's compute API (default ${DEFAULT_PORTS.compute})` })
    .option('metadata-port', { type: 'number', describe: `nova-api's metadata API (default ${DEFAULT_PORTS.metadata})` })
    .option('image-port', { type: 'number', describe: `glance-api (default ${DEFAULT_PORTS.image})` })
    .option('keystone-port', { type: 'number', describe: `Keystone, with --keystone (default ${DEFAULT_PORTS.keystone})` })
    .option('debug', { type: 'boolean', default: false })
    .strict()
    .parseAsync();
  const cmd = String(argv._[0]);
  const rec = recordedStack(argv['data-dir']);
  const was = rec?.ports ?? DEFAULT_PORTS;
  const ports: StackPorts = {
    quantum: argv['quantum-port'] ?? was.quantum,
    compute: argv['compute-port'] ?? was.compute,
    metadata: argv['metadata-port'] ?? was.metadata,
    image: argv['image-port'] ?? was.image,
    keystone: argv['keystone-port'] ?? was.keystone,
  };
  const l = layout(argv['data-dir'], ports, '127.0.0.1', argv['guest-prefix'], authModeFor(cmd, argv['data-dir'], rec?.auth, argv.keystone));
  const log = createLogger({ name: 'quantum-aio', debug: argv.debug, log_file: join(l.dataDir, 'log', 'aio.log') });
  if (cmd === 'start') await start(l, argv.demo, log);
  else if (cmd === 'stop') await stop(l, argv.purge, log);
  else await status(l);
}

main().catch((e: unknown) => {
  process.stderr.write(`quantum-aio: ${errorMessage(e)}\n`);
  const code = (e as { exitCode?: unknown }).exitCode;
  process.exit(typeof code === 'number' && code > 0 ? code : 1);
});
