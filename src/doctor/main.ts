// quantum-metadata-doctor: run as root on a network node, it walks a guest's metadata request hop by hop and
// names the first one that is broken, with its likely fix. Reads the agents' config files (--config-file).
//   quantum-metadata-doctor --config-file /etc/quantum/quantum.conf --config-file /etc/quantum/l3_agent.ini \
//       --config-file /etc/quantum/metadata_agent.ini --router_id R --ip 10.1.1.2 [-f json]
//   quantum-metadata-doctor ... --network_id N --ip A  |  --instance UUID
import { serviceCredentialOpts, serviceSessionFrom } from '../common/auth.js';
import { int, loadConfig, mergeSpecs, optStr, str, type Spec } from '../common/config.js';
import { ConfigError, errorMessage } from '../common/errors.js';
import { QuantumClient } from '../common/quantum-client.js';
import { diagnose, targetsOfInstance, type Hop, type Target } from './checks.js';

const PROG = 'quantum-metadata-doctor';

// The agents' own option names (l3_agent.ini, dhcp_agent.ini, metadata_agent.ini), so their files can be passed as they are.
const doctorOpts = {
  DEFAULT: {
    state_path: str('/var/lib/quantum', 'The agents\' state_path.'),
    dhcp_state_path: optStr('The DHCP agent\'s state_path, when it differs from state_path.'),
    quantum_url: str('http://127.0.0.1:9696', 'URL of quantum-server.'),
    auth_strategy: str('noauth', 'As the agents: keystone authenticates with their service credentials (auth_url, username, ...).', { choices: ['noauth', 'keystone'] }),
    metadata_port: int(9697, 'The router proxy port (l3_agent.ini).', { min: 1, max: 65535 }),
    metadata_access_mark: str('0x1', 'The mangle mark (l3_agent.ini).'),
    metadata_proxy_socket: optStr('The metadata agent\'s socket (default $state_path/metadata_proxy).'),
    nova_metadata_host: str('127.0.0.1', 'Nova metadata host (metadata_agent.ini).', { deprecated: [['DEFAULT', 'nova_metadata_ip']] }),
    nova_metadata_port: int(8775, 'Nova metadata port (metadata_agent.ini).', { min: 1, max: 65535 }),
    nova_metadata_protocol: str('http', 'http (https is not checked by the doctor).', { choices: ['http', 'https'] }),
    metadata_proxy_shared_secret: str('', 'The metadata agent\'s shared secret (metadata_agent.ini).', { secret: true }),
    router_id: optStr('The router whose path to check.'),
    network_id: optStr('The isolated network whose path to check.'),
    instance: optStr('An instance (server uuid): its router or network and address are found through quantum-server.'),
    ip: optStr('The guest\'s address.'),
    format: str('table', 'Output: table or json.', { choices: ['table', 'json'] }),
  },
} satisfies Spec;

function printTable(t: Target, hops: Hop[]): void {
  process.stdout.write(`${t.kind} ${t.id}${t.ip ? `, guest ${t.ip}` : ''}\n`);
  const w = Math.max(...hops.map((h) => h.hop.length));
  for (const h of hops) {
    const mark = h.status === 'ok' ? 'ok  ' : h.status === 'fail' ? 'FAIL' : 'skip';
    process.stdout.write(`  ${mark}  ${h.hop.padEnd(w)}  ${h.detail}\n`);
  }
  const first = hops.find((h) => h.status === 'fail');
  process.stdout.write(first ? `\nbroken hop: ${first.hop}: ${first.detail}\n  fix: ${first.fix}\n` : '\nevery hop works\n');
}

async function main(): Promise<number> {
  const { conf } = loadConfig(mergeSpecs(doctorOpts, serviceCredentialOpts), process.argv.slice(2), { prog: PROG, description: 'Walks a guest\'s metadata request hop by hop and names the first broken one.', aliases: { f: 'format' } });
  const d = conf.DEFAULT;
  const given = [d.router_id, d.network_id, d.instance].filter((x) => x !== undefined).length;
  if (given !== 1) throw new ConfigError('give exactly one of --router_id, --network_id, --instance');
  if (process.getuid?.() !== 0) throw new ConfigError('run as root: the namespaces, iptables and pid files are root\'s');
  const session = serviceSessionFrom(d.auth_strategy, d);
  const client = new QuantumClient({ url: d.quantum_url, timeoutMs: 10_000, auth: session });
  try {
    const targets: Target[] = d.instance ? await targetsOfInstance(client, d.instance) : [{ kind: d.router_id ? 'router' : 'network', id: (d.router_id ?? d.network_id)!, ...(d.ip ? { ip: d.ip } : {}) }];
    if (!targets.length) {
      const out = { instance: d.instance, error: `instance ${d.instance} has no port in quantum-server` };
      process.stdout.write(d.format === 'json' ? `${JSON.stringify(out)}\n` : `${out.error}\n  fix: is it deleted, or not booted with a network?\n`);
      return 1;
    }
    const novaHost = d.nova_metadata_host.includes(':') ? `[${d.nova_metadata_host}]` : d.nova_metadata_host;
    const dconf = {
      l3StatePath: d.state_path,
      dhcpStatePath: d.dhcp_state_path ?? d.state_path,
      metadataPort: d.metadata_port,
      metadataProxySocket: (d.metadata_proxy_socket ?? '$state_path/metadata_proxy').replace(/\$\{state_path\}|\$state_path/g, d.state_path),
      metadataMark: `0x${Number(d.metadata_access_mark).toString(16)}`,
      novaUrl: `http://${novaHost}:${d.nova_metadata_port}`,
      sharedSecret: d.metadata_proxy_shared_secret,
    };
    const results: Array<{ target: Target; hops: Hop[] }> = [];
    for (const t of targets) results.push({ target: t, hops: await diagnose(dconf, client, t) });
    const healthy = results.every((r) => r.hops.every((h) => h.status !== 'fail'));
    if (d.format === 'json') {
      process.stdout.write(`${JSON.stringify({ ok: healthy, results: results.map((r) => ({ ...r.target, hops: r.hops, first_broken: r.hops.find((h) => h.status === 'fail')?.hop ?? null })) }, null, 1)}\n`);
    } else for (const r of results) printTable(r.target, r.hops);
    return healthy ? 0 : 1;
  } finally {
    await client.close();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${PROG}: ${e instanceof ConfigError ? e.message : errorMessage(e)}\n`);
    process.exit(e instanceof ConfigError ? 2 : 1);
  },
);
