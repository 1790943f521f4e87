// quantum-dhcp-agent options (dhcp_agent.ini with quantum.conf), named as Neutron names them.
import { bool, int, loggingOpts, mergeSpecs, optInt, optStr, str, type Resolved, type Spec } from '../common/config.js';
import { ConfigError } from '../common/errors.js';
import { messagingOpts, transportUrlFrom } from '../common/messaging.js';
import { metricsOpts, parseListen } from '../common/metrics.js';
import { commonAgentOpts, validateCommon } from '../linux/agent-common.js';
import { metadataRateLimitingOpts, rateLimitIpVersions } from '../common/metadata-rate-limiting.js';

const dhcpOpts = {
  DEFAULT: {
    dhcp_driver: str('quantum.agent.linux.dhcp.Dnsmasq', 'The driver used to manage the DHCP server (dnsmasq is the only one).'),
    enable_isolated_metadata: bool(false, 'Support Metadata requests on isolated networks: the DHCP server announces a host route to 169.254.169.254 via its own address and a proxy answers there.'),
    force_metadata: bool(false, 'Always serve metadata from the DHCP namespace, isolated or not.'),
    enable_metadata_network: bool(false, 'Allows for serving metadata requests coming from a dedicated metadata access network whose cidr is 169.254.169.254/16 (or larger prefix), and is connected to a Quantum router from which the VMs send metadata request. Requires enable_isolated_metadata = True.'),
    dnsmasq_config_file: optStr('Override the default dnsmasq settings with this file.'),
    dnsmasq_lease_max: optInt('Limit number of leases to prevent a denial-of-service (dnsmasq --dhcp-lease-max; default 2^24).', { min: 1 }),
    dhcp_lease_duration: int(86400, 'DHCP lease duration in seconds (-1 means infinite).', { min: -1, deprecated: [['DEFAULT', 'dhcp_lease_time']] }),
    dhcp_domain: str('openstacklocal', 'Domain to use for building the hostnames.'),
  },
} satisfies Spec;

export const dhcpAgentSpec = mergeSpecs(mergeSpecs(mergeSpecs(mergeSpecs(commonAgentOpts, dhcpOpts), mergeSpecs(messagingOpts, loggingOpts)), metricsOpts), metadataRateLimitingOpts(false));
export type DhcpAgentConf = Resolved<typeof dhcpAgentSpec>;

export const DNSMASQ_DRIVERS = ['quantum.agent.linux.dhcp.Dnsmasq', 'neutron.agent.linux.dhcp.Dnsmasq', 'dnsmasq'];

/** Throws ConfigError on bad values; returns warnings for combinations Neutron accepts but ignores. */
export function validateDhcpConf(conf: DhcpAgentConf): string[] {
  validateCommon(conf.DEFAULT, conf.AGENT);
  transportUrlFrom(conf);
  if (conf.metrics.listen) parseListen(conf.metrics.listen);
  const rl = rateLimitIpVersions(conf.metadata_rate_limiting);
  if ('error' in rl) throw new ConfigError(rl.error);
  if (!DNSMASQ_DRIVERS.includes(conf.DEFAULT.dhcp_driver)) {
    throw new ConfigError(`[DEFAULT] dhcp_driver = ${JSON.stringify(conf.DEFAULT.dhcp_driver)}: only quantum.agent.linux.dhcp.Dnsmasq is supported`);
  }
  const warnings: string[] = [];
  if (conf.DEFAULT.enable_metadata_network && !conf.DEFAULT.enable_isolated_metadata) {
    warnings.push('enable_metadata_network = True has no effect without enable_isolated_metadata = True');
  }
  return warnings;
}
