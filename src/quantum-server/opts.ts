// quantum-server options, named as neutron-server names them (quantum.conf).
import { int, loggingOpts, mergeSpecs, optInt, str, type Resolved, type Spec } from '../common/config.js';
import { ConfigError } from '../common/errors.js';

export const serverOpts = {
  DEFAULT: {
    bind_host: str('0.0.0.0', 'The host IP to bind to.'),
    bind_port: int(9696, 'The port to bind to.', { min: 0, max: 65535 }),
    state_path: str('/var/lib/quantum', 'Where to store Quantum state files. This directory must be writable by the agent.'),
    auth_strategy: str('noauth', 'The type of authentication to use.', { choices: ['noauth', 'keystone'] }),
    base_mac: str('fa:16:3e:00:00:00', 'The base MAC address Quantum will use for VIFs. The first 3 octets will remain unchanged. If the 4th octet is not 00, it will also be used. The others will be randomly generated.'),
    agent_down_time: int(75, 'Seconds to regard the agent as down; should be at least twice report_interval, to be sure the agent is down for good.', { min: 1 }),
    api_workers: optInt('Number of separate API worker processes for service. If not specified, the API is served by one process.', { min: 1 }),
    mac_generation_retries: int(16, 'How many times Quantum will retry MAC generation.', { min: 1 }),
  },
  database: {
    connection: str('sqlite:///$state_path/quantum.sqlite', 'The SQLAlchemy connection string to use to connect to the database.', { cli: true, secret: true }),
  },
} satisfies Spec;

export const quantumServerSpec = mergeSpecs(serverOpts, loggingOpts);
export type QuantumServerConf = Resolved<typeof quantumServerSpec>;

/** oslo.config interpolation for the one option that uses it: $state_path / ${state_path}. */
export function resolveConnection(conf: QuantumServerConf): string {
  return conf.database.connection.replace(/\$\{state_path\}|\$state_path/g, conf.DEFAULT.state_path);
}

/** Checks the option parser cannot express: base_mac shape, auth strategies not built yet. */
export function validateServerConf(conf: QuantumServerConf): void {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(conf.DEFAULT.base_mac)) {
    throw new ConfigError(`[DEFAULT] base_mac = ${JSON.stringify(conf.DEFAULT.base_mac)}: not a MAC address (xx:xx:xx:xx:xx:xx)`);
  }
  if (conf.DEFAULT.auth_strategy === 'keystone') {
    throw new ConfigError('[DEFAULT] auth_strategy = keystone: not supported yet (use noauth)');
  }
}
