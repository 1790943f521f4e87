// quantum-l3-agent: thin main over L3Agent.
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { Transport, transportOptionsFrom } from '../common/messaging.js';
import { Metrics, serveMetrics } from '../common/metrics.js';
import { runService } from '../common/service.js';
import { L3Agent, BINARY } from './agent.js';
import { l3AgentSpec, validateL3Conf } from './opts.js';

runService(BINARY, async (svc) => {
  const { conf, warnings, configFiles } = loadConfig(l3AgentSpec, process.argv.slice(2), { prog: BINARY, description: 'Quantum L3 agent: router namespaces, metadata rules and proxies.', aliases: { 'log-file': 'log_file', 'log-dir': 'log_dir' } });
  const d = conf.DEFAULT;
  const log = createLogger({ name: BINARY, debug: d.debug, verbose: d.verbose, log_file: d.log_file, log_dir: d.log_dir, defaultFile: 'l3-agent.log' });
  svc.setLogger(log);
  for (const w of warnings) log.warn(w);
  validateL3Conf(conf);
  log.info({ config_files: configFiles }, 'starting');
  // Casts from quantum-server over RabbitMQ when a broker is configured; else (and while it is away) polling.
  const topts = transportOptionsFrom(conf, { log, name: BINARY });
  const metrics = conf.metrics.listen ? new Metrics('quantum_l3_agent') : undefined;
  const agent = new L3Agent(conf, log, { ...(topts ? { transport: new Transport(topts) } : {}), ...(metrics ? { metrics } : {}) });
  if (conf.metrics.listen) {
    const ms = await serveMetrics(conf.metrics.listen, log);
    svc.onShutdown(() => ms.close());
  }
  agent.start();
  svc.onShutdown(() => agent.stop());
});
