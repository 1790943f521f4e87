// Vendordata providers: StaticJSON (vendordata_json.py) and DynamicJSON (vendordata_dynamic.py).
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import type { Logger } from '../common/log.js';
import { parseOrdered, type OJson } from './ordered-json.js';
import { pyDumps } from './pyjson.js';
import type { InstanceRecord } from './model.js';

/** Read [api] vendordata_jsonfile_path: no path → {}; a missing or invalid file throws (Nova: 500 for that instance). */
export function loadStaticVendorData(path: string | undefined, log: Logger): OJson {
  if (!path) return new Map();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    log.warn(`vendordata_jsonfile_path[${path}]: ${code === 'ENOENT' ? 'file does not exist' : 'unexpected IOError when reading'}`);
    throw e;
  }
  try {
    return parseOrdered(text);
  } catch (e) {
    log.warn(`vendordata_jsonfile_path[${path}]: failed to load json`);
    throw e;
  }
}

export interface DynamicOptions {
  targets: string[];
  connectTimeoutS: number;
  readTimeoutS: number;
  failureFatal: boolean;
  /** CA bundle for https targets (vendordata_dynamic_ssl_certfile). */
  sslCertfile?: string | undefined;
}

export class DynamicVendorDataError extends Error {}

/** One POST per target, every time (Nova does not cache dynamic vendordata). */
export class DynamicVendorData {
  private agent: Agent | undefined;
  constructor(
    private readonly opts: DynamicOptions,
    private readonly log: Logger,
  ) {}

  private getAgent(): Agent {
    if (!this.agent) {
      const ca = this.opts.sslCertfile ? readFileSync(this.opts.sslCertfile) : undefined;
      this.agent = new Agent({ connect: { timeout: this.opts.connectTimeoutS * 1000, ...(ca ? { ca } : {}) } });
    }
    return this.agent;
  }

  async close(): Promise<void> {
    await this.agent?.close();
  }

  private async doRequest(name: string, url: string, inst: InstanceRecord): Promise<OJson> {
    const body = new Map<string, unknown>([
      ['project-id', inst.project_id],
      ['instance-id', inst.uuid],
      ['image-id', inst.image_ref],
      ['user-data', inst.user_data],
      ['hostname', inst.hostname],
      ['metadata', inst.metadata],
      ['boot-roles', inst.system_metadata.get('boot_roles') ?? ''],
    ]);
    try {
      const res = await request(url, {
        method: 'POST',
        dispatcher: this.getAgent(),
        headers: { 'content-type': 'application/json', accept: 'application/json', 'user-agent': 'openstack-nova-vendordata' },
        body: pyDumps(body),
        headersTimeout: this.opts.readTimeoutS * 1000,
        bodyTimeout: this.opts.readTimeoutS * 1000,
      });
      const text = await res.body.text();
      // keystoneauth raises HttpError for >= 400.
      if (res.statusCode >= 400) throw new DynamicVendorDataError(`HTTP ${res.statusCode}`);
      if (!text) return new Map();
      return parseOrdered(text);
    } catch (e) {
      this.log.warn({ service_name: name, url, instance: inst.uuid }, `Error from dynamic vendordata service ${name} at ${url}: ${(e as Error).message}`);
      if (this.opts.failureFatal) throw e;
      return new Map();
    }
  }

  async get(inst: InstanceRecord): Promise<Map<string, OJson>> {
    const j = new Map<string, OJson>();
    for (const target of this.opts.targets) {
      const at = target.indexOf('@');
      if (at === -1) {
        this.log.warn({ instance: inst.uuid }, `Vendordata target ${target} lacks a name. Skipping`);
        continue;
      }
      const name = target.slice(0, at);
      const url = target.slice(at + 1);
      if (j.has(name)) {
        this.log.warn({ instance: inst.uuid }, `Vendordata already contains an entry named ${target}. Skipping`);
        continue;
      }
      j.set(name, await this.doRequest(name, url, inst));
    }
    return j;
  }
}
