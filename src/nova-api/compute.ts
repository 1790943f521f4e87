// The compute API subset on 8774 (/v2.1, noauth): servers, flavors, keypairs, server metadata and
// os-server-password, with Nova's JSON shapes, status codes and fault bodies.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Kysely } from 'kysely';
import { ApiError } from '../common/errors.js';
import { readBody } from '../common/http.js';
import type { Logger } from '../common/log.js';
import type { QuantumClient } from '../common/quantum-client.js';
import { isDuplicateKey } from '../db/connection.js';
import { runningInstanceState, type FlavorRow, type InstanceRow, type NovaDatabase } from '../db/nova-schema.js';
import { extractPassword } from '../nova-metadata/base.js';
import type { NetworkInfo, Vif } from '../nova-metadata/model.js';
import { setSystemPassword, uuidToIntId } from '../nova-metadata/store.js';
import { allocatePorts, buildNetworkInfo, defaultNetworks, releasePorts, type RequestedNetwork } from './network.js';
import { generatePassword, generateSshKeypair, generateUid, sanitizeHostname, sshFingerprint, x509Fingerprint } from './util.js';

const FAULT_NAMES: Record<number, string> = { 400: 'badRequest', 403: 'forbidden', 404: 'itemNotFound', 409: 'conflict', 413: 'overLimit', 500: 'computeFault', 503: 'serviceUnavailable' };

const bad = (m: string) => new ApiError(400, 'badRequest', m);
const notFound = (m: string) => new ApiError(404, 'itemNotFound', m);
const conflict = (m: string) => new ApiError(409, 'conflict', m);

const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const KEYPAIR_NAME_RE = /^(?! )[a-zA-Z0-9. _-]+(?<! )$/;
const ROOT_DEVICE = '/dev/vda';

export interface ComputeOptions {
  /** Called after server metadata, keypairs or passwords change (nothing: Nova's cache simply expires). */
  onInstanceChange?: (uuid: string) => void;
}

type InstanceView = InstanceRow & { _meta: Record<string, string>; _nw: NetworkInfo; _volumes: string[] };

interface Ctx {
  projectId: string;
  userId: string;
  base: string;
}

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function checkMetadata(md: unknown, what = 'metadata'): Record<string, string> {
  if (!isObj(md)) throw bad(`Invalid input for field/attribute ${what}. Value: ${JSON.stringify(md)}. ${JSON.stringify(md)} is not of type 'object'`);
  for (const [k, v] of Object.entries(md)) {
    if (k.length < 1 || k.length > 255) throw bad(`Invalid input for field/attribute ${what}. Value: ${JSON.stringify(md)}. '${k}' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'`);
    if (typeof v !== 'string') throw bad(`Invalid input for field/attribute ${k}. Value: ${JSON.stringify(v)}. ${JSON.stringify(v)} is not of type 'string'`);
    if (v.length > 255) throw bad(`Invalid input for field/attribute ${k}. Value: ${v}. '${v}' is too long`);
  }
  return md as Record<string, string>;
}

export class ComputeApi {
  constructor(
    private readonly db: Kysely<NovaDatabase>,
    private readonly quantum: QuantumClient,
    private readonly log: Logger,
    private readonly opts: ComputeOptions = {},
  ) {}

  handle = (req: IncomingMessage, res: ServerResponse): void => {
    this.route(req)
      .then(([status, body]) => {
        if (body === undefined) {
          res.writeHead(status, { 'Content-Length': 0 });
          res.end();
          return;
        }
        const data = Buffer.from(JSON.stringify(body));
        res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': data.length });
        res.end(data);
      })
      .catch((e: unknown) => {
        let err: ApiError;
        if (e instanceof ApiError) err = e;
        else {
          this.log.error({ err: e, url: req.url, method: req.method }, 'unexpected error in compute API');
          err = new ApiError(500, 'computeFault', 'Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova API log if possible.');
        }
        if (err.status < 500) this.log.info({ method: req.method, url: req.url, status: err.status }, err.message);
        const name = FAULT_NAMES[err.status] ?? 'computeFault';
        const data = Buffer.from(JSON.stringify({ [name]: { code: err.status, message: err.message } }));
        res.writeHead(err.status, { 'Content-Type': 'application/json', 'Content-Length': data.length });
        res.end(data);
      });
  };

  private async body(req: IncomingMessage): Promise<Json> {
    const raw = await readBody(req, 1 << 20);
    if (raw.length === 0) throw bad('Malformed request body');
    let j: unknown;
    try {
      j = JSON.parse(raw.toString('utf8'));
    } catch {
      throw bad('Malformed request body');
    }
    if (!isObj(j)) throw bad('Malformed request body');
    return j;
  }

  private async route(req: IncomingMessage): Promise<[number, unknown]> {
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter((p) => p !== '').map(decodeURIComponent);
    const method = req.method ?? 'GET';
    const host = req.headers.host ?? '127.0.0.1:8774';
    if (parts.length === 0) {
      return [200, { versions: [{ id: 'v2.1', status: 'CURRENT', version: '2.90', min_version: '2.1', updated: '2013-07-23T11:33:21Z', links: [{ rel: 'self', href: `http://${host}/v2.1/` }] }] }];
    }
    if (parts[0] !== 'v2.1' && parts[0] !== 'v2') throw notFound('The resource could not be found.');
    let rest = parts.slice(1);
    const hdr = (n: string) => {
      const v = req.headers[n];
      return Array.isArray(v) ? v[0] : v;
    };
    let projectId = hdr('x-project-id') ?? hdr('x-auth-project-id') ?? hdr('x-tenant-id') ?? '';
    // Legacy URLs carry the project: /v2.1/{project_id}/servers
    if (rest.length && !['servers', 'flavors', 'os-keypairs'].includes(rest[0]!)) {
      projectId = rest[0]!;
      rest = rest.slice(1);
    }
    if (rest.length === 0) {
      return [200, { version: { id: 'v2.1', status: 'CURRENT', version: '2.90', min_version: '2.1', links: [{ rel: 'self', href: `http://${host}/v2.1/` }] } }];
    }
    if (!projectId) throw new ApiError(400, 'badRequest', 'No project given: send X-Project-Id (noauth) or use the /v2.1/{project_id}/ URL form');
    const ctx: Ctx = { projectId, userId: hdr('x-user-id') ?? projectId, base: `http://${host}/v2.1/${projectId}` };
    const [coll, id, sub, key] = rest;
    const n = rest.length;
    if (coll === 'servers') {
      if (n === 1 && method === 'GET') return [200, await this.listServers(ctx, false, url.searchParams)];
      if (n === 1 && method === 'POST') return [202, await this.createServer(ctx, await this.body(req))];
      if (n === 2 && id === 'detail' && method === 'GET') return [200, await this.listServers(ctx, true, url.searchParams)];
      if (n === 2 && method === 'GET') return [200, { server: this.serverView(ctx, await this.getInstance(ctx, id!), true) }];
      if (n === 2 && method === 'DELETE') return [204, await this.deleteServer(ctx, id!)];
      if (n >= 3 && sub === 'metadata') return this.serverMetadata(ctx, req, method, id!, key, n);
      if (n === 3 && sub === 'os-server-password') {
        if (method === 'GET') return [200, await this.getPassword(ctx, id!)];
        if (method === 'DELETE') return [204, await this.clearPassword(ctx, id!)];
      }
    }
    if (coll === 'flavors') {
      if (n === 1 && method === 'GET') return [200, await this.listFlavors(ctx, false)];
      if (n === 1 && method === 'POST') return [200, await this.createFlavor(ctx, await this.body(req))];
      if (n === 2 && id === 'detail' && method === 'GET') return [200, await this.listFlavors(ctx, true)];
      if (n === 2 && method === 'GET') return [200, { flavor: this.flavorView(ctx, await this.getFlavor(id!), true) }];
      if (n === 2 && method === 'DELETE') return [202, await this.deleteFlavor(id!)];
    }
    if (coll === 'os-keypairs') {
      if (n === 1 && method === 'GET') return [200, await this.listKeypairs(ctx)];
      if (n === 1 && method === 'POST') return [200, await this.createKeypair(ctx, await this.body(req))];
      if (n === 2 && method === 'GET') return [200, await this.showKeypair(ctx, id!)];
      if (n === 2 && method === 'DELETE') return [202, await this.deleteKeypair(ctx, id!)];
    }
    if (['servers', 'flavors', 'os-keypairs'].includes(coll!) && n <= 4) throw new ApiError(405, 'badRequest', `Method ${method} is not allowed here`);
    throw notFound('The resource could not be found.');
  }

  // ---- flavors -------------------------------------------------------------------------------

  private flavorView(ctx: Ctx, f: FlavorRow, detail: boolean): Json {
    const links = [
      { rel: 'self', href: `${ctx.base}/flavors/${f.flavorid}` },
      { rel: 'bookmark', href: `${ctx.base.replace('/v2.1', '')}/flavors/${f.flavorid}` },
    ];
    if (!detail) return { id: f.flavorid, links, name: f.name };
    return {
      'OS-FLV-DISABLED:disabled': !!Number(f.disabled),
      disk: Number(f.root_gb),
      'OS-FLV-EXT-DATA:ephemeral': Number(f.ephemeral_gb),
      'os-flavor-access:is_public': !!Number(f.is_public),
      id: f.flavorid,
      links,
      name: f.name,
      ram: Number(f.memory_mb),
      swap: Number(f.swap) ? Number(f.swap) : '',
      vcpus: Number(f.vcpus),
      rxtx_factor: Number(f.rxtx_factor),
    };
  }

  private async getFlavor(flavorid: string): Promise<FlavorRow> {
    const f = await this.db.selectFrom('flavors').selectAll().where('flavorid', '=', flavorid).executeTakeFirst();
    if (!f) throw notFound(`Flavor ${flavorid} could not be found.`);
    return f;
  }

  private async listFlavors(ctx: Ctx, detail: boolean): Promise<Json> {
    const rows = await this.db.selectFrom('flavors').selectAll().where('disabled', '=', 0).orderBy('flavorid').execute();
    // Nova orders by flavorid as a string, which puts "10" before "2"; sort numerically when both are numbers.
    rows.sort((a, b) => (/^\d+$/.test(a.flavorid) && /^\d+$/.test(b.flavorid) ? Number(a.flavorid) - Number(b.flavorid) : a.flavorid < b.flavorid ? -1 : 1));
    return { flavors: rows.map((f) => this.flavorView(ctx, f, detail)) };
  }

  private async createFlavor(ctx: Ctx, body: Json): Promise<Json> {
    const f = body.flavor;
    if (!isObj(f)) throw bad("Invalid input for field/attribute flavor. 'flavor' is a required property");
    const name = f.name;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 255) throw bad('Invalid input for field/attribute name.');
    const intField = (k: string, def: number | undefined, min: number): number => {
      const v = f[k];
      if (v === undefined || v === '') {
        if (def === undefined) throw bad(`Invalid input for field/attribute flavor. '${k}' is a required property`);
        return def;
      }
      const num = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
      if (typeof num !== 'number' || !Number.isInteger(num) || num < min) throw bad(`Invalid input for field/attribute ${k}. Value: ${JSON.stringify(v)}.`);
      return num;
    };
    const ram = intField('ram', undefined, 1);
    const vcpus = intField('vcpus', undefined, 1);
    const disk = intField('disk', undefined, 0);
    const swap = intField('swap', 0, 0);
    const eph = intField('OS-FLV-EXT-DATA:ephemeral', 0, 0);
    const rxtx = typeof f.rxtx_factor === 'number' ? f.rxtx_factor : 1.0;
    const isPublic = f['os-flavor-access:is_public'] === undefined ? true : !!f['os-flavor-access:is_public'];
    let flavorid = f.id === undefined || f.id === null ? randomUUID() : String(f.id);
    if (!/^[a-zA-Z0-9._ -]{1,255}$/.test(flavorid)) throw bad(`Invalid input for field/attribute id.`);
    flavorid = flavorid.trim();
    if (await this.db.selectFrom('flavors').select('id').where('name', '=', name).executeTakeFirst()) throw conflict(`Flavor with name ${name} already exists.`);
    try {
      await this.db
        .insertInto('flavors')
        .values({
          flavorid,
          name,
          memory_mb: ram,
          vcpus,
          root_gb: disk,
          ephemeral_gb: eph,
          swap,
          rxtx_factor: rxtx,
          is_public: isPublic ? 1 : 0,
          disabled: 0,
          description: typeof f.description === 'string' ? f.description : null,
          created_at: new Date().toISOString(),
        } as never)
        .execute();
    } catch (e) {
      if (isDuplicateKey(e)) throw conflict(`Flavor with ID ${flavorid} already exists.`);
      throw e;
    }
    return { flavor: this.flavorView(ctx, await this.getFlavor(flavorid), true) };
  }

  private async deleteFlavor(flavorid: string): Promise<undefined> {
    await this.getFlavor(flavorid);
    await this.db.deleteFrom('flavors').where('flavorid', '=', flavorid).execute();
    return undefined;
  }

  // ---- keypairs ------------------------------------------------------------------------------

  private async createKeypair(ctx: Ctx, body: Json): Promise<Json> {
    const kp = body.keypair;
    if (!isObj(kp)) throw bad("Invalid input for field/attribute keypair. 'keypair' is a required property");
    const name = kp.name;
    if (typeof name !== 'string' || name.length < 1 || name.length > 255 || !KEYPAIR_NAME_RE.test(name)) {
      throw bad('Keypair data is invalid: Keypair name contains unsafe characters');
    }
    const type = kp.type === undefined ? 'ssh' : kp.type;
    if (type !== 'ssh' && type !== 'x509') throw bad(`Invalid input for field/attribute type. Value: ${String(type)}. '${String(type)}' is not one of ['ssh', 'x509']`);
    let publicKey = kp.public_key;
    let privateKey: string | undefined;
    if (publicKey === undefined || publicKey === null) {
      if (type === 'x509') throw bad('Generating x509 keypairs is not supported; import one with public_key');
      const g = generateSshKeypair(`Generated-by-Nova`);
      publicKey = g.publicKey;
      privateKey = g.privateKey;
    }
    if (typeof publicKey !== 'string') throw bad('Invalid input for field/attribute public_key.');
    const fingerprint = type === 'x509' ? x509Fingerprint(publicKey) : sshFingerprint(publicKey);
    try {
      await this.db
        .insertInto('key_pairs')
        .values({ name, user_id: ctx.userId, fingerprint, public_key: publicKey, type, created_at: new Date().toISOString() } as never)
        .execute();
    } catch (e) {
      if (isDuplicateKey(e)) throw conflict(`Key pair '${name}' already exists.`);
      throw e;
    }
    const out: Json = { name, public_key: publicKey, fingerprint, user_id: ctx.userId, type };
    if (privateKey) out.private_key = privateKey;
    return { keypair: out };
  }

  private async listKeypairs(ctx: Ctx): Promise<Json> {
    const rows = await this.db.selectFrom('key_pairs').selectAll().where('user_id', '=', ctx.userId).orderBy('name').execute();
    return { keypairs: rows.map((r) => ({ keypair: { name: r.name, public_key: r.public_key, fingerprint: r.fingerprint, type: r.type } })) };
  }

  private async getKeypair(ctx: Ctx, name: string) {
    const r = await this.db.selectFrom('key_pairs').selectAll().where('user_id', '=', ctx.userId).where('name', '=', name).executeTakeFirst();
    if (!r) throw notFound(`Keypair ${name} not found for user ${ctx.userId}`);
    return r;
  }

  private async showKeypair(ctx: Ctx, name: string): Promise<Json> {
    const r = await this.getKeypair(ctx, name);
    return {
      keypair: { name: r.name, public_key: r.public_key, fingerprint: r.fingerprint, user_id: r.user_id, type: r.type, id: Number(r.id), created_at: r.created_at, deleted: false, deleted_at: null, updated_at: null },
    };
  }

  private async deleteKeypair(ctx: Ctx, name: string): Promise<undefined> {
    await this.getKeypair(ctx, name);
    await this.db.deleteFrom('key_pairs').where('user_id', '=', ctx.userId).where('name', '=', name).execute();
    return undefined;
  }

  // ---- servers -------------------------------------------------------------------------------

  private async getInstance(ctx: Ctx, id: string): Promise<InstanceView> {
    const row = await this.db.selectFrom('instances').selectAll().where('uuid', '=', id).where('project_id', '=', ctx.projectId).executeTakeFirst();
    if (!row) throw notFound(`Instance ${id} could not be found.`);
    const [meta, cache, vols] = await Promise.all([
      this.db.selectFrom('instance_metadata').select(['key', 'value']).where('instance_uuid', '=', id).orderBy('id').execute(),
      this.db.selectFrom('instance_info_caches').select('network_info').where('instance_uuid', '=', id).executeTakeFirst(),
      this.db.selectFrom('block_device_mapping').select('volume_id').where('instance_uuid', '=', id).where('destination_type', '=', 'volume').orderBy('id').execute(),
    ]);
    return {
      ...row,
      _meta: Object.fromEntries(meta.map((m) => [m.key, m.value])),
      _nw: cache ? (JSON.parse(cache.network_info) as NetworkInfo) : [],
      _volumes: vols.map((v) => v.volume_id).filter((v): v is string => !!v),
    };
  }

  private serverLinks(ctx: Ctx, id: string) {
    return [
      { rel: 'self', href: `${ctx.base}/servers/${id}` },
      { rel: 'bookmark', href: `${ctx.base.replace('/v2.1', '')}/servers/${id}` },
    ];
  }

  private serverView(ctx: Ctx, i: InstanceView, _detail: boolean): Json {
    const addresses: Record<string, Json[]> = {};
    for (const vif of i._nw) {
      if (!vif.network) continue;
      const label = vif.network.label ?? vif.network.id;
      const list = (addresses[label] ??= []);
      for (const s of vif.network.subnets) {
        for (const ip of s.ips) {
          list.push({ version: ip.version, addr: ip.address, 'OS-EXT-IPS:type': 'fixed', 'OS-EXT-IPS-MAC:mac_addr': vif.address });
          for (const f of ip.floating_ips ?? []) list.push({ version: f.version, addr: f.address, 'OS-EXT-IPS:type': 'floating', 'OS-EXT-IPS-MAC:mac_addr': vif.address });
        }
      }
    }
    const flavor = JSON.parse(i.flavor) as { flavorid: string };
    const root = ctx.base.replace('/v2.1', '');
    return {
      id: i.uuid,
      name: i.display_name,
      status: i.vm_state === 'active' ? 'ACTIVE' : i.vm_state.toUpperCase(),
      tenant_id: i.project_id,
      user_id: i.user_id,
      metadata: i._meta,
      hostId: '',
      image: i.image_ref ? { id: i.image_ref, links: [{ rel: 'bookmark', href: `${root}/images/${i.image_ref}` }] } : '',
      flavor: { id: flavor.flavorid, links: [{ rel: 'bookmark', href: `${root}/flavors/${flavor.flavorid}` }] },
      created: i.created_at.replace(/\.\d+Z$/, 'Z'),
      updated: i.updated_at.replace(/\.\d+Z$/, 'Z'),
      addresses,
      accessIPv4: i.access_ip_v4 ?? '',
      accessIPv6: i.access_ip_v6 ?? '',
      links: this.serverLinks(ctx, i.uuid),
      'OS-DCF:diskConfig': 'MANUAL',
      progress: 0,
      'OS-EXT-AZ:availability_zone': i.availability_zone ?? '',
      config_drive: '',
      key_name: i.key_name,
      // Nova prints this one as Python's isoformat with microseconds and no zone.
      'OS-SRV-USG:launched_at': i.launched_at ? i.launched_at.replace(/\.(\d{3})Z$/, '.$1000').replace(/Z$/, '.000000') : null,
      'OS-SRV-USG:terminated_at': null,
      'OS-EXT-STS:task_state': i.task_state,
      'OS-EXT-STS:vm_state': i.vm_state,
      'OS-EXT-STS:power_state': Number(i.power_state),
      'os-extended-volumes:volumes_attached': i._volumes.map((v) => ({ id: v })),
      security_groups: (JSON.parse(i.security_groups) as string[]).map((name) => ({ name })),
    };
  }

  private async listServers(ctx: Ctx, detail: boolean, q: URLSearchParams): Promise<Json> {
    let query = this.db.selectFrom('instances').select(['uuid', 'display_name']).where('project_id', '=', ctx.projectId);
    const name = q.get('name');
    if (name) query = query.where('display_name', '=', name);
    const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').execute();
    if (!detail) return { servers: rows.map((r) => ({ id: r.uuid, links: this.serverLinks(ctx, r.uuid), name: r.display_name })) };
    const servers: Json[] = [];
    for (const r of rows) servers.push(this.serverView(ctx, await this.getInstance(ctx, r.uuid), true));
    return { servers };
  }

  private parseNetworks(v: unknown): RequestedNetwork[] | undefined {
    if (v === undefined) return undefined;
    if (v === 'none' || v === 'auto') return v === 'none' ? [] : undefined;
    if (!Array.isArray(v)) throw bad(`Invalid input for field/attribute networks. Value: ${JSON.stringify(v)}.`);
    const seenPorts = new Set<string>();
    return v.map((n): RequestedNetwork => {
      if (!isObj(n)) throw bad('Bad networks format');
      const r: RequestedNetwork = {};
      if (n.port !== undefined && n.port !== null) {
        if (typeof n.port !== 'string' || !UUID_RE.test(n.port)) throw bad(`Bad port format: port uuid is not in proper format (${String(n.port)})`);
        if (seenPorts.has(n.port)) throw bad(`Port ${n.port} is still in use.`);
        seenPorts.add(n.port);
        r.port = n.port;
        return r;
      }
      if (typeof n.uuid !== 'string' || !UUID_RE.test(n.uuid)) throw bad(`Bad networks format: network uuid is not in proper format (${String(n.uuid)})`);
      r.uuid = n.uuid;
      if (n.fixed_ip !== undefined) {
        if (typeof n.fixed_ip !== 'string' || !/^[0-9a-fA-F:.]+$/.test(n.fixed_ip)) throw bad(`Invalid fixed IP address (${String(n.fixed_ip)})`);
        r.fixed_ip = n.fixed_ip;
      }
      return r;
    });
  }

  private async createServer(ctx: Ctx, body: Json): Promise<Json> {
    const s = body.server;
    if (!isObj(s)) throw bad("Invalid input for field/attribute server. 'server' is a required property");
    const name = s.name;
    if (typeof name !== 'string' || name.length < 1 || name.length > 255 || name.trim() !== name) {
      throw bad(`Invalid input for field/attribute name. Value: ${JSON.stringify(name)}.`);
    }
    if (s.flavorRef === undefined) throw bad("Invalid input for field/attribute server. 'flavorRef' is a required property");
    const flavorRef = String(s.flavorRef).replace(/^.*\/flavors\//, '');
    const flavor = await this.db.selectFrom('flavors').selectAll().where('flavorid', '=', flavorRef).executeTakeFirst();
    if (!flavor) throw bad('Invalid flavorRef provided.');
    const bdmsIn = Array.isArray(s.block_device_mapping_v2) ? (s.block_device_mapping_v2 as unknown[]) : [];
    if (s.block_device_mapping_v2 !== undefined && !Array.isArray(s.block_device_mapping_v2)) throw bad('Invalid input for field/attribute block_device_mapping_v2.');
    const bootFromVolume = bdmsIn.some((b) => isObj(b) && Number(b.boot_index) === 0 && b.source_type !== 'image');
    let imageRef = s.imageRef === undefined || s.imageRef === null ? '' : String(s.imageRef).replace(/^.*\/images\//, '');
    if (!imageRef && !bootFromVolume) {
      const imgBdm = bdmsIn.find((b) => isObj(b) && b.source_type === 'image' && Number(b.boot_index) === 0) as Json | undefined;
      if (imgBdm && typeof imgBdm.uuid === 'string') imageRef = imgBdm.uuid;
      else throw bad('Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.');
    }
    if (imageRef && !UUID_RE.test(imageRef)) throw bad(`Invalid input for field/attribute imageRef. Value: ${imageRef}. '${imageRef}' is not a 'uuid'`);
    let keyName: string | null = null;
    let keypair: { name: string; type: string; public_key: string } | undefined;
    if (s.key_name !== undefined && s.key_name !== null) {
      keyName = String(s.key_name);
      const kp = await this.db.selectFrom('key_pairs').selectAll().where('user_id', '=', ctx.userId).where('name', '=', keyName).executeTakeFirst();
      if (!kp) throw bad('Invalid key_name provided.');
      keypair = { name: kp.name, type: kp.type, public_key: kp.public_key };
    }
    let userData: string | null = null;
    if (s.user_data !== undefined && s.user_data !== null) {
      const ud = String(s.user_data);
      if (ud.length > 65535 || !/^[A-Za-z0-9+/\r\n]*={0,2}[\r\n]*$/.test(ud) || Buffer.from(ud, 'base64').toString('base64').replace(/=+$/, '') !== ud.replace(/[\r\n]/g, '').replace(/=+$/, '')) {
        throw bad('Invalid input for field/attribute user_data. Value: (user data). It is not a valid base64 string');
      }
      userData = ud;
    }
    const metadata = s.metadata === undefined ? {} : checkMetadata(s.metadata);
    const az = s.availability_zone === undefined || s.availability_zone === null ? 'nova' : String(s.availability_zone);
    if (az !== 'nova') throw bad(`The requested availability zone is not available`);
    let groups = ['default'];
    if (s.security_groups !== undefined) {
      if (!Array.isArray(s.security_groups)) throw bad('Invalid input for field/attribute security_groups.');
      groups = s.security_groups.map((g) => (isObj(g) && typeof g.name === 'string' ? g.name : '')).filter((g) => g);
      if (groups.length === 0) groups = ['default'];
      groups = [...new Set(groups)];
    }
    const requested = this.parseNetworks(s.networks);

    const uuid = randomUUID();
    const hostname = sanitizeHostname(name) || `Server-${uuid}`;
    const reservationId = generateUid('r');
    const now = new Date().toISOString();

    // Block devices: the image root on /dev/vda (libvirt), then the requested ones (data only).
    let nextLetter = 1;
    const nextDev = () => `/dev/vd${String.fromCharCode(97 + nextLetter++)}`;
    const bdmRows: Record<string, unknown>[] = [];
    if (!bootFromVolume) {
      bdmRows.push({ source_type: 'image', destination_type: 'local', device_name: ROOT_DEVICE, guest_format: null, volume_id: null, image_id: imageRef, boot_index: 0, delete_on_termination: 1, volume_size: null, disk_bus: 'virtio', device_type: 'disk', tag: null });
    }
    for (const b of bdmsIn) {
      if (!isObj(b)) throw bad('Block Device Mapping is Invalid.');
      const src = String(b.source_type ?? '');
      if (!['image', 'volume', 'snapshot', 'blank'].includes(src)) throw bad(`Invalid input for field/attribute source_type. Value: ${src}.`);
      if (src === 'image' && Number(b.boot_index) === 0 && !bootFromVolume && b.destination_type !== 'volume') continue; // the root above
      const boot = b.boot_index === undefined || b.boot_index === null ? null : Number(b.boot_index);
      const dest = b.destination_type === undefined ? (src === 'blank' ? 'local' : 'volume') : String(b.destination_type);
      const dev = typeof b.device_name === 'string' && b.device_name ? b.device_name : boot === 0 ? ROOT_DEVICE : nextDev();
      bdmRows.push({
        source_type: src,
        destination_type: dest,
        device_name: dev,
        guest_format: typeof b.guest_format === 'string' ? b.guest_format : null,
        volume_id: src === 'volume' && typeof b.uuid === 'string' ? b.uuid : null,
        image_id: src === 'image' && typeof b.uuid === 'string' ? b.uuid : null,
        boot_index: boot,
        delete_on_termination: b.delete_on_termination ? 1 : 0,
        volume_size: b.volume_size === undefined || b.volume_size === null ? null : Number(b.volume_size),
        disk_bus: typeof b.disk_bus === 'string' ? b.disk_bus : null,
        device_type: typeof b.device_type === 'string' ? b.device_type : null,
        tag: typeof b.tag === 'string' ? b.tag : null,
      });
    }
    const ephemeralDev = Number(flavor.ephemeral_gb) > 0 && !bdmRows.some((r) => r.source_type === 'blank' && r.guest_format !== 'swap') ? nextDev() : null;
    const swapDev = Number(flavor.swap) > 0 && !bdmRows.some((r) => r.guest_format === 'swap') ? nextDev() : null;

    const networks = requested ?? (await defaultNetworks(this.quantum, ctx.projectId));
    const ports = await allocatePorts(this.quantum, this.log, { instanceUuid: uuid, projectId: ctx.projectId, az, networks });
    let nwInfo: NetworkInfo;
    try {
      nwInfo = await buildNetworkInfo(this.quantum, ports);
      const flavorCopy = { flavorid: flavor.flavorid, name: flavor.name, memory_mb: Number(flavor.memory_mb), vcpus: Number(flavor.vcpus), root_gb: Number(flavor.root_gb), ephemeral_gb: Number(flavor.ephemeral_gb), swap: Number(flavor.swap) };
      await this.db.transaction().execute(async (tx) => {
        await tx
          .insertInto('instances')
          .values({
            uuid,
            display_name: name,
            hostname,
            project_id: ctx.projectId,
            user_id: ctx.userId,
            image_ref: imageRef,
            kernel_id: null,
            ramdisk_id: null,
            flavor: JSON.stringify(flavorCopy),
            key_name: keyName,
            key_data: keypair?.public_key ?? null,
            keypairs: JSON.stringify(keypair ? [keypair] : []),
            user_data: userData,
            launch_index: 0,
            reservation_id: reservationId,
            availability_zone: az,
            root_device_name: ROOT_DEVICE,
            default_ephemeral_device: ephemeralDev,
            default_swap_device: swapDev,
            security_groups: JSON.stringify(groups),
            device_metadata: null,
            numa_topology: null,
            ...runningInstanceState(now),
          } as never)
          .execute();
        for (const [k, v] of Object.entries(metadata)) await tx.insertInto('instance_metadata').values({ instance_uuid: uuid, key: k, value: v } as never).execute();
        await tx.insertInto('instance_info_caches').values({ instance_uuid: uuid, network_info: JSON.stringify(nwInfo), updated_at: now }).execute();
        for (const b of bdmRows) await tx.insertInto('block_device_mapping').values({ ...b, instance_uuid: uuid } as never).execute();
      });
      // EC2 ids are assigned at boot so the metadata path only reads.
      await uuidToIntId(this.db, 'ec2_instances', uuid);
      if (imageRef) await uuidToIntId(this.db, 's3_images', imageRef);
    } catch (e) {
      await releasePorts(this.quantum, this.log, ports);
      throw e;
    }
    this.log.info({ instance: uuid, ports: ports.map((p) => p.port.id) }, `server ${name} created`);
    return {
      server: {
        security_groups: groups.map((g) => ({ name: g })),
        'OS-DCF:diskConfig': 'MANUAL',
        id: uuid,
        links: this.serverLinks(ctx, uuid),
        adminPass: generatePassword(),
      },
    };
  }

  private async deleteServer(ctx: Ctx, id: string): Promise<undefined> {
    const inst = await this.getInstance(ctx, id);
    // Ports first (Nova deallocates networking before the instance row goes); ones the user brought are unbound.
    const fromCache = inst._nw.map((v: Vif) => ({ id: v.id, preexisting: v.preserve_on_delete }));
    const live = await this.quantum.listPorts({ device_id: id });
    const ids = new Set(fromCache.map((p) => p.id));
    for (const p of live) if (!ids.has(p.id)) fromCache.push({ id: p.id, preexisting: false });
    await releasePorts(this.quantum, this.log, fromCache);
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('instance_metadata').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('instance_system_metadata').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('instance_info_caches').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('block_device_mapping').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('instances').where('uuid', '=', id).execute();
    });
    this.opts.onInstanceChange?.(id);
    return undefined;
  }

  // ---- server metadata ----------------------------------------------------------------------

  private async readMeta(uuid: string): Promise<Record<string, string>> {
    const rows = await this.db.selectFrom('instance_metadata').select(['key', 'value']).where('instance_uuid', '=', uuid).orderBy('id').execute();
    return Object.fromEntries(rows.map((r) => [r.key, r.value]));
  }

  private async writeMeta(uuid: string, md: Record<string, string>, replace: boolean): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      if (replace) await tx.deleteFrom('instance_metadata').where('instance_uuid', '=', uuid).execute();
      for (const [k, v] of Object.entries(md)) {
        const ex = await tx.selectFrom('instance_metadata').select('id').where('instance_uuid', '=', uuid).where('key', '=', k).executeTakeFirst();
        if (ex) await tx.updateTable('instance_metadata').set({ value: v }).where('id', '=', ex.id).execute();
        else await tx.insertInto('instance_metadata').values({ instance_uuid: uuid, key: k, value: v } as never).execute();
      }
      await tx.updateTable('instances').set({ updated_at: new Date().toISOString() }).where('uuid', '=', uuid).execute();
    });
    this.opts.onInstanceChange?.(uuid);
  }

  private async serverMetadata(ctx: Ctx, req: IncomingMessage, method: string, id: string, key: string | undefined, n: number): Promise<[number, unknown]> {
    await this.getInstance(ctx, id);
    if (n === 3) {
      if (method === 'GET') return [200, { metadata: await this.readMeta(id) }];
      if (method === 'POST' || method === 'PUT') {
        const b = await this.body(req);
        if (!('metadata' in b)) throw bad("Invalid input for field/attribute metadata. 'metadata' is a required property");
        const md = checkMetadata(b.metadata);
        await this.writeMeta(id, md, method === 'PUT');
        return [200, { metadata: method === 'PUT' ? md : await this.readMeta(id) }];
      }
    }
    if (n === 4) {
      const k = key!;
      if (method === 'GET') {
        const md = await this.readMeta(id);
        if (!(k in md)) throw notFound('Metadata item was not found');
        return [200, { meta: { [k]: md[k] } }];
      }
      if (method === 'PUT') {
        const b = await this.body(req);
        const meta = checkMetadata(b.meta, 'meta');
        const keys = Object.keys(meta);
        if (keys.length > 1) throw bad('Request body contains too many items');
        if (keys.length === 0 || !(k in meta)) throw bad('Request body and URI mismatch');
        await this.writeMeta(id, { [k]: meta[k]! }, false);
        return [200, { meta: { [k]: meta[k] } }];
      }
      if (method === 'DELETE') {
        const md = await this.readMeta(id);
        if (!(k in md)) throw notFound('Metadata item was not found');
        await this.db.deleteFrom('instance_metadata').where('instance_uuid', '=', id).where('key', '=', k).execute();
        this.opts.onInstanceChange?.(id);
        return [204, undefined];
      }
    }
    throw new ApiError(405, 'badRequest', `Method ${method} is not allowed here`);
  }

  // ---- os-server-password -------------------------------------------------------------------

  private async getPassword(ctx: Ctx, id: string): Promise<Json> {
    await this.getInstance(ctx, id);
    const rows = await this.db.selectFrom('instance_system_metadata').select(['key', 'value']).where('instance_uuid', '=', id).execute();
    return { password: extractPassword(new Map(rows.map((r) => [r.key, r.value]))) ?? '' };
  }

  private async clearPassword(ctx: Ctx, id: string): Promise<undefined> {
    await this.getInstance(ctx, id);
    await setSystemPassword(this.db, id, '');
    this.opts.onInstanceChange?.(id);
    return undefined;
  }
}
