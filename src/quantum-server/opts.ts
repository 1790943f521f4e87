// quantum-server options, named as neutron-server names them (quantum.conf).
import { bool, int, loggingOpts, mergeSpecs, optInt, str, type Resolved, type Spec } from '../common/config.js';
import { keystoneAuthtokenOpts } from '../common/auth.js';
import { ConfigError } from '../common/errors.js';
import { messagingOpts, transportUrlFrom } from '../common/messaging.js';
import { metricsOpts, parseListen } from '../common/metrics.js';
import { networkSchedulerKind, routerSchedulerKind, type SchedulerOptions } from './scheduler.js';

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
    router_scheduler_driver: str('neutron.scheduler.l3_agent_scheduler.LeastRoutersScheduler', 'Driver to use for scheduling a router to a default L3 agent: ...LeastRoutersScheduler (the L3 agent with the fewest routers) or quantum.scheduler.l3_agent_scheduler.ChanceScheduler (a random one); quantum.* and neutron.* paths are both accepted.'),
    network_scheduler_driver: str('neutron.scheduler.dhcp_agent_scheduler.WeightScheduler', 'Driver to use for scheduling network to DHCP agent: ...WeightScheduler (the DHCP agents with the fewest networks) or quantum.scheduler.dhcp_agent_scheduler.ChanceScheduler.'),
    router_auto_schedule: bool(true, 'Allow auto scheduling of routers to L3 agent: a new router gets an agent, and unhosted routers go to an L3 agent that comes up.'),
    network_auto_schedule: bool(true, 'Allow auto scheduling networks to DHCP agent: a network with DHCP gets agents, and networks short of agents get one that comes up.'),
    dhcp_agents_per_network: int(1, 'Number of DHCP agents scheduled to host a tenant network.', { min: 1 }),
    allow_automatic_l3agent_failover: bool(false, 'Automatically reschedule routers from offline L3 agents (silent for agent_down_time) to online L3 agents.'),
    allow_automatic_dhcp_failover: bool(true, 'Automatically remove networks from offline DHCP agents (silent for twice agent_down_time, as Neutron) and schedule them to online ones.'),
    agent_notification_retention: int(3600, 'Seconds the notification log keeps what was cast to agents (what agents without RabbitMQ poll, and what they catch up from after a broker outage); an agent whose cursor is older resyncs in full.', { min: 60 }),
  },
  database: {
    connection: str('sqlite:///$state_path/quantum.sqlite', 'The SQLAlchemy connection string to use to connect to the database.', { cli: true, secret: true }),
  },
} satisfies Spec;

export const quantumServerSpec = mergeSpecs(mergeSpecs(mergeSpecs(mergeSpecs(serverOpts, keystoneAuthtokenOpts), messagingOpts), metricsOpts), loggingOpts);
export type QuantumServerConf = Resolved<typeof quantumServerSpec>;

/** oslo.config interpolation for the one option that uses it: $state_path / ${state_path}. */
export function resolveConnection(conf: QuantumServerConf): string {
  return conf.database.connection.replace(/\$\{state_path\}|\$state_path/g, conf.DEFAULT.state_path);
}

/** Checks the option parser cannot express: base_mac shape, drivers, keystone's [keystone_authtoken]. */
export function validateServerConf(conf: QuantumServerConf): void {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(conf.DEFAULT.base_mac)) {
    throw new ConfigError(`[DEFAULT] base_mac = ${JSON.stringify(conf.DEFAULT.base_mac)}: not a MAC address (xx:xx:xx:xx:xx:xx)`);
  }
  routerSchedulerKind(conf.DEFAULT.router_scheduler_driver);
  networkSchedulerKind(conf.DEFAULT.network_scheduler_driver);
  transportUrlFrom(conf);
  if (conf.metrics.listen) parseListen(conf.metrics.listen);
  if (conf.DEFAULT.auth_strategy === 'keystone') {
    const k = conf.keystone_authtoken;
    const missing = (['auth_url', 'username', 'password', 'project_name'] as const).filter((n) => !k[n]);
    if (missing.length) throw new ConfigError(`[DEFAULT] auth_strategy = keystone needs [keystone_authtoken] ${missing.join(', ')}`);
  }
}

/** The scheduler part of the options. */
export function schedulingOf(conf: QuantumServerConf): Omit<SchedulerOptions, 'log' | 'agentDownTime'> {
  const d = conf.DEFAULT;
  return {
    router: routerSchedulerKind(d.router_scheduler_driver),
    network: networkSchedulerKind(d.network_scheduler_driver),
    dhcpAgentsPerNetwork: d.dhcp_agents_per_network,
    routerAutoSchedule: d.router_auto_schedule,
    networkAutoSchedule: d.network_auto_schedule,
    allowAutomaticL3agentFailover: d.allow_automatic_l3agent_failover,
    allowAutomaticDhcpFailover: d.allow_automatic_dhcp_failover,
  };
}
