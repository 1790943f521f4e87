// nova-api-metadata: only the metadata API (8775), whatever enabled_apis says.
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { runService } from '../common/service.js';
import { runNova } from './workers.js';
import { novaSpec } from './opts.js';

runService('nova-api-metadata', async (svc) => {
  const { conf, warnings } = loadConfig(novaSpec, process.argv.slice(2), { prog: 'nova-api-metadata', description: 'OpenStack metadata API for guests.' });
  const log = createLogger({ name: 'nova-api-metadata', debug: conf.DEFAULT.debug, verbose: conf.DEFAULT.verbose, log_file: conf.DEFAULT.log_file, log_dir: conf.DEFAULT.log_dir });
  svc.setLogger(log);
  for (const w of warnings) log.warn(w);
  await runNova(svc, conf, log, ['metadata']);
});
