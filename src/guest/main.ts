// nova-guest: plug a Nova server in as a guest namespace on its network's bridge, or unplug it.
//   nova-guest plug SERVER [--namespace NS] [--dhcp]      nova-guest unplug SERVER [--namespace NS]
import yargs from 'yargs';
import { ApiError, ConfigError, errorMessage } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { QuantumClient } from '../common/quantum-client.js';
import { plugGuest, unplugGuest } from './guest.js';
import { request } from 'undici';

interface Args {
  cmd: 'plug' | 'unplug';
  server: string;
  namespace?: string;
  dhcp: boolean;
  'state-dir': string;
  'os-url': string;
  'quantum-url': string;
  'os-project-id'?: string;
  debug: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function resolveServer(a: Args): Promise<{ id: string; name: string }> {
  if (UUID.test(a.server)) {
    const res = await request(`${a['os-url']}/v2.1/servers/${a.server}`, { headers: { 'x-project-id': a['os-project-id'] ?? '' } });
    const text = await res.body.text();
    if (res.statusCode === 200) {
      const s = (JSON.parse(text) as { server: { id: string; name: string } }).server;
      return { id: s.id, name: s.name };
    }
    return { id: a.server, name: a.server };
  }
  const res = await request(`${a['os-url']}/v2.1/servers?all_tenants=1`, { headers: { 'x-project-id': a['os-project-id'] ?? '' } });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new ApiError(res.statusCode, 'ComputeError', `listing servers: ${text}`);
  const found = (JSON.parse(text) as { servers: Array<{ id: string; name: string }> }).servers.filter((s) => s.name === a.server);
  if (found.length !== 1) throw new ApiError(found.length ? 409 : 404, 'ServerNotFound', found.length ? `several servers are named ${a.server}; use the id` : `no server named ${a.server}`);
  return found[0]!;
}

async function main(): Promise<void> {
  const a = (await yargs(process.argv.slice(2))
    .scriptName('nova-guest')
    .usage('Usage: nova-guest plug|unplug SERVER [options]\n\nPlug a server in as a guest network namespace on its network bridge (or remove it).')
    .command('plug <server>', 'create the guest namespace, veth into brq<net>, port MAC, then a static address or DHCP')
    .command('unplug <server>', 'remove the guest namespace, its veth pair and DHCP client')
    .demandCommand(1)
    .option('namespace', { type: 'string', describe: 'namespace name (default: the server name)' })
    .option('dhcp', { type: 'boolean', default: false, describe: 'get the address with dhclient instead of configuring it statically' })
    .option('state-dir', { type: 'string', default: '/var/lib/quantum/guests', describe: 'where dhclient pid and lease files go' })
    .option('os-url', { type: 'string', default: process.env.OS_COMPUTE_URL ?? 'http://127.0.0.1:8774', describe: 'nova-api' })
    .option('quantum-url', { type: 'string', default: process.env.OS_URL ?? 'http://127.0.0.1:9696', describe: 'quantum-server' })
    .option('os-project-id', { type: 'string', default: process.env.OS_PROJECT_ID, describe: 'project (X-Project-Id)' })
    .option('debug', { type: 'boolean', default: false })
    .strict()
    .fail((msg, err) => {
      throw new ConfigError(err?.message ?? msg);
    })
    .parseAsync()) as unknown as Args & { _: string[] };
  const cmd = (a as { _: string[] })._[0] as Args['cmd'];
  const log = createLogger({ name: 'nova-guest', debug: a.debug });
  const q = new QuantumClient({ url: a['quantum-url'] });
  try {
    const server = await resolveServer(a);
    const ns = a.namespace ?? server.name;
    const ports = await q.listPorts({ device_id: server.id });
    const port = ports[0];
    if (!port) throw new ApiError(404, 'PortNotFound', `server ${server.name} has no port`);
    if (cmd === 'unplug') {
      await unplugGuest({ namespace: ns, portId: port.id, networkId: port.network_id, stateDir: a['state-dir'] }, { log });
      process.stdout.write(`unplugged ${ns}\n`);
      return;
    }
    const subnet = await q.showSubnet(port.fixed_ips[0]!.subnet_id);
    const net = await q.showNetwork(port.network_id);
    const ip = await plugGuest({ namespace: ns, port, subnet, mode: a.dhcp ? 'dhcp' : 'static', stateDir: a['state-dir'], mtu: net.mtu }, { log });
    process.stdout.write(`plugged ${ns}: ${port.mac_address} ${ip} on ${net.name}\n`);
  } finally {
    await q.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`nova-guest: ${errorMessage(e)}\n`);
  process.exit(1);
});
