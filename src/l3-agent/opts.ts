// quantum-l3-agent options (l3_agent.ini with quantum.conf), named as Neutron names them.
import { bool, int, loggingOpts, mergeSpecs, str, type Resolved, type Spec } from '../common/config.js';
import { ConfigError } from '../common/errors.js';
import { messagingOpts, transportUrlFrom } from '../common/messaging.js';
import { metricsOpts, parseListen } from '../common/metrics.js';
import { commonAgentOpts, validateCommon } from '../linux/agent-common.js';
import { metadataRateLimitingOpts, rateLimitIpVersions } from '../common/metadata-rate-limiting.js';

const l3Opts = {
  DEFAULT: {
    metadata_port: int(9697, 'TCP Port used by Quantum metadata namespace proxy.', { min: 1, max: 65535 }),
    enable_metadata_proxy: bool(true, 'Allow running metadata proxy.'),
    send_arp_for_ha: int(3, 'Send this many gratuitous ARPs when an interface is added (guests that failed to reach the gateway learn it at once); 0 or less disables the feature.'),
    metadata_access_mark: str('0x1', 'Iptables mangle mark used to mark metadata valid requests. This mark will be masked with 0xffff so that only the lower 16 bits will be used.'),
  },
} satisfies Spec;

export const l3AgentSpec = mergeSpecs(mergeSpecs(mergeSpecs(mergeSpecs(commonAgentOpts, l3Opts), mergeSpecs(messagingOpts, loggingOpts)), metricsOpts), metadataRateLimitingOpts(false));
export type L3AgentConf = Resolved<typeof l3AgentSpec>;

export function validateL3Conf(conf: L3AgentConf): void {
  validateCommon(conf.DEFAULT, conf.AGENT);
  transportUrlFrom(conf);
  if (conf.metrics.listen) parseListen(conf.metrics.listen);
  const rl = rateLimitIpVersions(conf.metadata_rate_limiting);
  if ('error' in rl) throw new ConfigError(rl.error);
  const m = conf.DEFAULT.metadata_access_mark;
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(m) || Number(m) <= 0 || Number(m) > 0xffff) {
    throw new ConfigError(`[DEFAULT] metadata_access_mark = ${JSON.stringify(m)}: must be a number between 0x1 and 0xffff`);
  }
}
