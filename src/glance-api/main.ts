// glance-api: the Glance v2 images subset on bind_port 9292 (what openstackclient and nova need to boot).
import { keystoneAuthFrom } from '../common/auth.js';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { Metrics, serveMetrics } from '../common/metrics.js';
import { runService } from '../common/service.js';
import { startGlance } from './app.js';
import { expandStatePath, glanceSpec } from './opts.js';

runService('glance-api', async (svc) => {
  const { conf, warnings, configFiles } = loadConfig(glanceSpec, process.argv.slice(2), { prog: 'glance-api', description: 'The Glance v2 image API (images subset).' });
  const d = conf.DEFAULT;
  const log = createLogger({ name: 'glance-api', debug: d.debug, verbose: d.verbose, log_file: d.log_file, log_dir: d.log_dir, defaultFile: 'api.log' });
  svc.setLogger(log);
  for (const w of warnings) log.warn(w);
  const strategy = conf.paste_deploy.flavor === 'keystone' ? 'keystone' : 'noauth';
  const running = await startGlance({
    connection: expandStatePath(conf.database.connection, conf),
    host: d.bind_host,
    port: d.bind_port,
    dataDir: expandStatePath(conf.glance_store.filesystem_store_datadir, conf),
    sizeCap: d.image_size_cap,
    authStrategy: strategy,
    keystone: strategy === 'keystone' ? keystoneAuthFrom(conf.keystone_authtoken, log) : undefined,
    log,
    metrics: conf.metrics.listen ? new Metrics('glance_api') : undefined,
  });
  if (conf.metrics.listen) {
    const ms = await serveMetrics(conf.metrics.listen, log);
    svc.onShutdown(() => ms.close());
  }
  log.info({ config_files: configFiles, auth_strategy: strategy }, `glance-api listening on ${d.bind_host}:${running.port}`);
  svc.onShutdown(() => running.close());
});
