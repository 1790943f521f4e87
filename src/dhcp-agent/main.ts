// quantum-dhcp-agent: thin main over DhcpAgent.
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { Transport, transportOptionsFrom } from '../common/messaging.js';
import { Metrics, serveMetrics } from '../common/metrics.js';
import { runService } from '../common/service.js';
import { BINARY, DhcpAgent } from './agent.js';
import { dhcpAgentSpec, validateDhcpConf } from './opts.js';

runService(BINARY, async (svc) => {
  const { conf, warnings, configFiles } = loadConfig(dhcpAgentSpec, process.argv.slice(2), { prog: BINARY, description: 'Quantum DHCP agent: dnsmasq and isolated metadata per network namespace.', aliases: { 'log-file': 'log_file', 'log-dir': 'log_dir' } });
  const d = conf.DEFAULT;
  const log = createLogger({ name: BINARY, debug: d.debug, verbose: d.verbose, log_file: d.log_file, log_dir: d.log_dir, defaultFile: 'dhcp-agent.log' });
  svc.setLogger(log);
  for (const w of warnings) log.warn(w);
  for (const w of validateDhcpConf(conf)) log.warn(w);
  log.info({ config_files: configFiles }, 'starting');
  // Casts from quantum-server over RabbitMQ when a broker is configured; else (and while it is away) polling.
  const topts = transportOptionsFrom(conf, { log, name: BINARY });
  const metrics = conf.metrics.listen ? new Metrics('quantum_dhcp_agent') : undefined;
  const agent = new DhcpAgent(conf, log, { ...(topts ? { transport: new Transport(topts) } : {}), ...(metrics ? { metrics } : {}) });
  if (conf.metrics.listen) {
    const ms = await serveMetrics(conf.metrics.listen, log);
    svc.onShutdown(() => ms.close());
  }
  agent.start();
  svc.onShutdown(() => agent.stop());
});
