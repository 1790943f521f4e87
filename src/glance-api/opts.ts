// glance-api.conf options, named as Glance (Zed) names them.
import { keystoneAuthtokenOpts } from '../common/auth.js';
import { metricsOpts } from '../common/metrics.js';
import { int, loggingOpts, mergeSpecs, optStr, str, type Resolved, type Spec } from '../common/config.js';

export const glanceOpts = {
  DEFAULT: {
    bind_host: str('0.0.0.0', 'Address to bind the server.'),
    bind_port: int(9292, 'Port number on which the server will listen.', { min: 0, max: 65535 }),
    state_path: str('/var/lib/glance', 'Top-level directory for glance-api state: the database and the image files.'),
    image_size_cap: int(1099511627776, 'Maximum size of image a user can upload in bytes.', { min: 1 }),
  },
  paste_deploy: {
    flavor: optStr("Deployment flavor: 'keystone' authenticates with [keystone_authtoken]; unset (or anything else) is noauth, the project from X-Project-Id / X-Tenant-Id.", { cli: true }),
  },
  database: {
    connection: str('sqlite:///$state_path/glance.sqlite', 'The SQLAlchemy connection string to use to connect to the database.', { cli: true, secret: true }),
  },
  glance_store: {
    filesystem_store_datadir: str('$state_path/images', 'Directory to which the filesystem backend store writes images.'),
  },
} satisfies Spec;

export const glanceSpec = mergeSpecs(mergeSpecs(mergeSpecs(glanceOpts, keystoneAuthtokenOpts), metricsOpts), loggingOpts);
export type GlanceConf = Resolved<typeof glanceSpec>;

export const expandStatePath = (v: string, conf: GlanceConf) => v.replace(/\$\{state_path\}|\$state_path/g, conf.DEFAULT.state_path);
