// nova/api/metadata/base.py: one instance's metadata, the EC2 and OpenStack trees, and path lookup.
import { randomBytes } from 'node:crypto';
import type { InstanceRecord } from './model.js';
import { getEc2IpInfo, getNetworkMetadata } from './netutils.js';
import type { OJson } from './ordered-json.js';
import { pyDumps } from './pyjson.js';

export const VERSIONS = ['1.0', '2007-01-19', '2007-03-01', '2007-08-29', '2007-10-10', '2007-12-15', '2008-02-01', '2008-09-01', '2009-04-04'];

export const FOLSOM = '2012-08-10';
export const GRIZZLY = '2013-04-04';
export const HAVANA = '2013-10-17';
export const LIBERTY = '2015-10-15';
export const NEWTON_ONE = '2016-06-30';
export const NEWTON_TWO = '2016-10-06';
export const OCATA = '2017-02-22';
export const ROCKY = '2018-08-27';
export const VICTORIA = '2020-10-14';
export const OPENSTACK_VERSIONS = [FOLSOM, GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, OCATA, ROCKY, VICTORIA];

export const MIME_TEXT = 'text/plain';
export const MIME_JSON = 'application/json';

/** block_device._DEFAULT_MAPPINGS (no root_device_name). */
const DEFAULT_MAPPINGS = { ami: 'sda1', ephemeral0: 'sda2', root: '/dev/sda1', swap: 'sda3' };

/** Any lookup failure Nova turns into 404 (InvalidMetadataPath). */
export class InvalidMetadataPath extends Error {}

/** An EC2 tree node: dicts print as sorted listings, lists newline-joined, scalars as str(). */
export type Ec2Node = string | Buffer | number | null | string[] | Ec2Dict;
export interface Ec2Dict {
  [k: string]: Ec2Node;
}

/** The password path returns a handler, as Nova's RouteConfiguration does. */
export const PASSWORD_HANDLER = Symbol('password');

export type LookupResult = Ec2Node | typeof PASSWORD_HANDLER | { vendorData2: true };

export interface MetadataConfig {
  dhcpDomain: string;
  vendordataProviders: string[];
}

export interface VendorDataSources {
  /** StaticJSON, read when the InstanceMetadata is built (every cache miss). */
  staticData: OJson;
  dynamic?: { get(inst: InstanceRecord): Promise<Map<string, OJson>> };
}

const stripDev = (name: string) => name.replace(/^\/dev\//, '');

export function instanceBlockMapping(inst: InstanceRecord): Record<string, string> {
  if (inst.root_device_name === null) return { ...DEFAULT_MAPPINGS };
  const m: Record<string, string> = { ami: stripDev(inst.root_device_name), root: inst.root_device_name };
  if (inst.default_ephemeral_device) m.ephemeral0 = inst.default_ephemeral_device;
  if (inst.default_swap_device) m.swap = inst.default_swap_device;
  const ebs: (string | null)[] = [];
  const blanks = [];
  for (const b of inst.bdms) {
    if (b.destination_type === 'volume') {
      ebs.push(b.device_name);
      continue;
    }
    if (b.source_type === 'blank') blanks.push(b);
  }
  // Sorted with None first, as Nova sorts (x is not None, x).
  ebs.sort((a, b) => (a === null ? (b === null ? 0 : -1) : b === null ? 1 : a < b ? -1 : a > b ? 1 : 0));
  ebs.forEach((d, n) => (m[`ebs${n}`] = String(d)));
  const swap = blanks.filter((b) => b.guest_format === 'swap');
  if (swap.length) m.swap = String(swap[swap.length - 1]!.device_name);
  blanks.filter((b) => b.guest_format !== 'swap').forEach((b, n) => (m[`ephemeral${n}`] = String(b.device_name)));
  return m;
}

/** ec2_md_print. */
export function ec2MdPrint(data: Ec2Node): string | Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return data.join('\n');
  if (data === null) return 'None';
  if (typeof data === 'string') return data;
  if (typeof data === 'number') return String(data);
  const out: string[] = [];
  for (const key of Object.keys(data).sort(pyCompare)) {
    if (key === '_name') continue;
    const v = data[key];
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v)) {
      out.push('_name' in v ? String(v._name) : `${key}/`);
    } else out.push(key);
  }
  return out.join('\n');
}

/** Python's default str ordering (by code point). */
function pyCompare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const isDict = (d: Ec2Node): d is Ec2Dict => d !== null && typeof d === 'object' && !Array.isArray(d) && !Buffer.isBuffer(d);

/**
 * find_path_in_tree. Nova raises an uncaught TypeError (500) for a sub-path under a string, bytes or list
 * leaf; this answers 404 instead (listed as a deviation).
 */
export function findPathInTree(data: Ec2Node, tokens: string[]): Ec2Node {
  for (const t of tokens) {
    if (isDict(data) && Object.prototype.hasOwnProperty.call(data, t)) data = data[t]!;
    else throw new InvalidMetadataPath(t);
  }
  return data;
}

export class InstanceMetadata {
  readonly mappings: Record<string, string>;
  readonly userdataRaw: Buffer | null;
  readonly password: string | null;
  readonly networkMetadata: Record<string, unknown> | null;
  readonly ipInfo: ReturnType<typeof getEc2IpInfo>;
  readonly uuid: string;
  readonly projectId: string;
  /** Serialised once per build; Nova renders it per request but the bytes only differ in random_seed. */
  private networkDataCache: string | undefined;
  /** Rendered responses by request path. The object is immutable once built, so a path renders the same bytes each time. */
  readonly rendered = new Map<string, { body: Buffer; mime: string }>();
  /** meta_data.json per version, split around random_seed (which must be fresh per request). */
  private readonly mdTemplates = new Map<string, [string, string] | string>();
  private readonly ec2Trees = new Map<string, Ec2Dict>();

  constructor(
    readonly instance: InstanceRecord,
    readonly address: string | null,
    private readonly conf: MetadataConfig,
    private readonly vendor: VendorDataSources,
  ) {
    this.mappings = instanceBlockMapping(instance);
    this.userdataRaw = instance.user_data !== null ? Buffer.from(instance.user_data, 'base64') : null;
    this.password = extractPassword(instance.system_metadata);
    this.networkMetadata = getNetworkMetadata(instance.network_info);
    this.ipInfo = getEc2IpInfo(instance.network_info);
    this.uuid = instance.uuid;
    this.projectId = instance.project_id;
  }

  hostname(): string {
    return this.conf.dhcpDomain ? `${this.instance.hostname}.${this.conf.dhcpDomain}` : this.instance.hostname;
  }

  getEc2Metadata(version: string): Ec2Dict {
    if (version === 'latest') version = VERSIONS[VERSIONS.length - 1]!;
    let tree = this.ec2Trees.get(version);
    if (!tree) {
      tree = this.buildEc2Metadata(version);
      this.ec2Trees.set(version, tree);
    }
    return tree;
  }

  private buildEc2Metadata(version: string): Ec2Dict {
    const vi = VERSIONS.indexOf(version);
    if (vi < 0) throw new InvalidMetadataPath(version);
    const since = (v: string) => vi >= VERSIONS.indexOf(v);
    const inst = this.instance;
    const hostname = this.hostname();
    const md: Ec2Dict = {
      'ami-id': inst.ec2_ids.ami_id,
      'ami-launch-index': inst.launch_index,
      'ami-manifest-path': 'FIXME',
      'instance-id': inst.ec2_ids.instance_id,
      hostname,
      'local-ipv4': this.ipInfo.fixed_ips[0] || this.address,
      'reservation-id': inst.reservation_id,
      'security-groups': inst.security_groups,
    };
    if (inst.key_name) md['public-keys'] = { '0': { _name: `0=${inst.key_name}`, 'openssh-key': inst.key_data } };
    if (since('2007-01-19')) {
      md['local-hostname'] = hostname;
      md['public-hostname'] = hostname;
      md['public-ipv4'] = this.ipInfo.floating_ips[0] || '';
    }
    if (since('2007-08-29')) md['instance-type'] = inst.flavor_name;
    if (since('2007-12-15')) {
      md['block-device-mapping'] = { ...this.mappings };
      if (inst.ec2_ids.kernel_id) md['kernel-id'] = inst.ec2_ids.kernel_id;
      if (inst.ec2_ids.ramdisk_id) md['ramdisk-id'] = inst.ec2_ids.ramdisk_id;
    }
    if (since('2008-02-01')) md.placement = { 'availability-zone': inst.availability_zone };
    if (since('2008-09-01')) md['instance-action'] = 'none';
    const data: Ec2Dict = { 'meta-data': md };
    if (this.userdataRaw !== null) data['user-data'] = this.userdataRaw;
    return data;
  }

  private checkOs(required: string, version: string): boolean {
    return OPENSTACK_VERSIONS.indexOf(version) >= OPENSTACK_VERSIONS.indexOf(required);
  }

  metadataAsJson(version: string): string {
    let t = this.mdTemplates.get(version);
    if (t === undefined) {
      const SEED = '\u0000random_seed\u0000';
      const whole = this.buildMetadataJson(version, SEED);
      const marker = pyDumps(SEED);
      const at = whole.indexOf(marker);
      t = at < 0 ? whole : [whole.slice(0, at), whole.slice(at + marker.length)];
      this.mdTemplates.set(version, t);
    }
    if (typeof t === 'string') return t;
    return `${t[0]}"${randomBytes(512).toString('base64')}"${t[1]}`;
  }

  private buildMetadataJson(version: string, seed: string): string {
    const inst = this.instance;
    const md = new Map<string, unknown>([['uuid', this.uuid]]);
    if (inst.metadata.size) md.set('meta', inst.metadata);
    if (inst.key_name) {
      const kp = inst.keypairs[0];
      if (kp) {
        md.set('public_keys', new Map([[kp.name, kp.public_key]]));
        md.set('keys', [new Map<string, unknown>([['name', kp.name], ['type', kp.type], ['data', kp.public_key]])]);
      }
    }
    md.set('hostname', this.hostname());
    md.set('name', inst.display_name);
    md.set('launch_index', inst.launch_index);
    md.set('availability_zone', inst.availability_zone);
    if (this.checkOs(GRIZZLY, version)) md.set('random_seed', seed);
    if (this.checkOs(LIBERTY, version)) md.set('project_id', inst.project_id);
    if (this.checkOs(NEWTON_ONE, version)) md.set('devices', this.deviceMetadata(version));
    if (this.checkOs(VICTORIA, version)) md.set('dedicated_cpus', this.dedicatedCpus());
    return pyDumps(md);
  }

  deviceMetadata(version: string): Map<string, unknown>[] {
    const out: Map<string, unknown>[] = [];
    const vlans = this.checkOs(OCATA, version);
    const trusted = this.checkOs(ROCKY, version);
    for (const d of this.instance.device_metadata?.devices ?? []) {
      const m = new Map<string, unknown>();
      let bus = 'none';
      let address = 'none';
      if (d.bus) {
        if (!['pci', 'usb', 'scsi', 'ide', 'xen'].includes(d.bus.type)) continue;
        bus = d.bus.type;
        if (d.bus.address !== undefined) address = d.bus.address;
      }
      if (d.type === 'nic') {
        if (vlans && d.vlan !== undefined && d.vlan !== null) m.set('vlan', d.vlan);
        if (trusted) m.set('vf_trusted', d.vf_trusted ?? false);
        m.set('type', 'nic');
        m.set('mac', d.mac);
        if (!(d.tags !== undefined || m.has('vlan') || m.has('vf_trusted'))) continue;
      } else if (d.type === 'disk') {
        m.set('type', 'disk');
        if (d.serial !== undefined) m.set('serial', d.serial);
        if (d.path !== undefined) m.set('path', d.path);
      } else continue;
      m.set('bus', bus);
      m.set('address', address);
      if (d.tags !== undefined) m.set('tags', d.tags);
      out.push(m);
    }
    return out;
  }

  dedicatedCpus(): number[] {
    const cells = this.instance.numa_topology?.cells ?? [];
    return cells.flatMap((c) => c.pcpuset).sort((a, b) => a - b);
  }

  handleVersion(version: string): string[] {
    const ret = ['meta_data.json'];
    if (this.userdataRaw !== null) ret.push('user_data');
    if (this.checkOs(GRIZZLY, version)) ret.push('password');
    if (this.checkOs(HAVANA, version)) ret.push('vendor_data.json');
    if (this.checkOs(LIBERTY, version)) ret.push('network_data.json');
    if (this.checkOs(NEWTON_TWO, version)) ret.push('vendor_data2.json');
    return ret;
  }

  networkData(): string {
    this.networkDataCache ??= pyDumps(this.networkMetadata ?? {});
    return this.networkDataCache;
  }

  /** _vendor_data2: {"static": ...} plus one key per dynamic target; duplicate keys dropped. */
  async vendorData2(warn: (msg: string) => void): Promise<string> {
    const j = new Map<string, unknown>();
    for (const provider of this.conf.vendordataProviders) {
      if (provider === 'StaticJSON') j.set('static', this.vendor.staticData);
      else if (provider === 'DynamicJSON' && this.vendor.dynamic) {
        const values = await this.vendor.dynamic.get(this.instance);
        for (const [k, v] of values) {
          if (j.has(k)) {
            warn(`Removing duplicate metadata key: ${k}`);
            continue;
          }
          j.set(k, v);
        }
      }
    }
    return pyDumps(j);
  }

  /**
   * lookup(path): the value and its MIME type. Throws InvalidMetadataPath for anything Nova answers 404.
   * vendor_data2.json is returned as a marker because it needs an async fetch.
   */
  lookup(rawPath: string): { data: LookupResult; mime: string; volatile?: boolean } {
    const path = rawPath === '' || rawPath[0] !== '/' ? pyNormpath(`/${rawPath}`) : pyNormpath(rawPath);
    let tokens = path.split('/').slice(1);
    if (tokens[0] !== 'ec2' && tokens[0] !== 'openstack') tokens = tokens[0] === '' ? ['ec2'] : ['ec2', ...tokens];
    if (tokens.length === 1) {
      if (tokens[0] === 'openstack') {
        const today = new Date().toISOString().slice(0, 10);
        return { data: [...OPENSTACK_VERSIONS.filter((v) => v <= today), 'latest'], mime: MIME_TEXT };
      }
      return { data: [...VERSIONS, 'latest'], mime: MIME_TEXT };
    }
    if (tokens[0] === 'openstack') return this.openstackItem(tokens.slice(1));
    const data = this.getEc2Metadata(tokens[1]!);
    return { data: findPathInTree(data, tokens.slice(2)), mime: MIME_TEXT };
  }

  private openstackItem(tokens: string[]): { data: LookupResult; mime: string; volatile?: boolean } {
    // /openstack/content/NNNN only exists on a config drive.
    if (tokens[0] === 'content') throw new InvalidMetadataPath('content');
    let version = tokens[0]!;
    if (version === 'latest') version = OPENSTACK_VERSIONS[OPENSTACK_VERSIONS.length - 1]!;
    if (!OPENSTACK_VERSIONS.includes(version)) throw new InvalidMetadataPath(version);
    const path = tokens.length === 1 ? 'version' : tokens.slice(1).join('/');
    switch (path) {
      case 'version':
        return { data: this.handleVersion(version), mime: MIME_TEXT };
      case 'user_data':
        if (this.userdataRaw === null) throw new InvalidMetadataPath(path);
        return { data: this.userdataRaw, mime: MIME_TEXT };
      case 'password':
        if (this.checkOs(GRIZZLY, version)) return { data: PASSWORD_HANDLER, mime: MIME_TEXT };
        throw new InvalidMetadataPath(path);
      case 'vendor_data.json':
        if (this.checkOs(HAVANA, version) && this.conf.vendordataProviders.includes('StaticJSON')) {
          return { data: pyDumps(this.vendor.staticData), mime: MIME_JSON };
        }
        throw new InvalidMetadataPath(path);
      case 'vendor_data2.json':
        if (this.checkOs(NEWTON_TWO, version)) return { data: { vendorData2: true }, mime: MIME_JSON };
        throw new InvalidMetadataPath(path);
      case 'meta_data.json':
        // random_seed makes every answer different from GRIZZLY on.
        return { data: this.metadataAsJson(version), mime: MIME_JSON, volatile: this.checkOs(GRIZZLY, version) };
      case 'network_data.json':
        // Nova never sets a JSON MIME type here, and serves it for every version.
        return { data: this.networkData(), mime: MIME_TEXT };
      default:
        // 'content' as a file name is a TypeError (500) in Nova; here it is simply unknown.
        throw new InvalidMetadataPath(path);
    }
  }
}

/** posixpath.normpath, exactly (a leading '//' survives, '///' collapses; no trailing slash). */
export function pyNormpath(path: string): string {
  if (!path) return '.';
  let initial = path.startsWith('/') ? 1 : 0;
  if (initial && path.startsWith('//') && !path.startsWith('///')) initial = 2;
  const out: string[] = [];
  for (const comp of path.split('/')) {
    if (comp === '' || comp === '.') continue;
    if (comp !== '..' || (!initial && out.length === 0) || (out.length > 0 && out[out.length - 1] === '..')) out.push(comp);
    else if (out.length) out.pop();
  }
  const p = '/'.repeat(initial) + out.join('/');
  return p || '.';
}

export function extractPassword(sysmeta: Map<string, string>): string | null {
  let r = '';
  for (const k of [...sysmeta.keys()].sort(pyCompare)) if (k.startsWith('password_')) r += sysmeta.get(k);
  return r || null;
}

export const PASSWORD_CHUNKS = 4;
export const PASSWORD_CHUNK_LENGTH = 255;
export const PASSWORD_MAX_SIZE = PASSWORD_CHUNKS * PASSWORD_CHUNK_LENGTH;

/**
 * convert_password: password_0..3 in 255-character chunks. Python slices code points; a JS string slices UTF-16
 * units, which would cut a character outside the BMP (an emoji) into two lone surrogates that no database
 * stores. So the chunks are counted in code points, as Nova's.
 */
export function convertPassword(password: string): Record<string, string> {
  const out: Record<string, string> = {};
  const cps = Array.from(password);
  for (let i = 0; i < PASSWORD_CHUNKS; i++) out[`password_${i}`] = cps.slice(i * PASSWORD_CHUNK_LENGTH, (i + 1) * PASSWORD_CHUNK_LENGTH).join('');
  return out;
}
