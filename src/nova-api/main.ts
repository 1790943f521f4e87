// nova-api: the compute API (8774) and the metadata API (8775), as [DEFAULT] enabled_apis says.
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { runService } from '../common/service.js';
import { runNova } from './workers.js';
import { novaSpec } from './opts.js';

runService('nova-api', async (svc) => {
  const { conf, warnings } = loadConfig(novaSpec, process.argv.slice(2), { prog: 'nova-api', description: 'OpenStack Compute API (compute subset) and metadata API.' });
  const log = createLogger({ name: 'nova-api', debug: conf.DEFAULT.debug, verbose: conf.DEFAULT.verbose, log_file: conf.DEFAULT.log_file, log_dir: conf.DEFAULT.log_dir });
  svc.setLogger(log);
  for (const w of warnings) log.warn(w);
  await runNova(svc, conf, log, conf.DEFAULT.enabled_apis);
});
