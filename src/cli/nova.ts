// `nova`: the operator's client for the compute API subset, with python-novaclient's commands and tables.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { COMMON_GLOBALS, COMMON_GLOBALS_WITH_VALUE, explicitUrl, findCommand, keystoneOf, outputFormat, parseArgs, positional, projectIdOf, UsageError, writeHelp, type ArgKind, type ParsedArgs } from './args.js';
import { KeystoneSession } from '../common/keystone.js';
import { formatValue, printList, renderTable, type OutputFormat } from './table.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A compute API error as novaclient prints it: "ERROR (NotFound): message (HTTP 404)". */
class ComputeError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const ERROR_CLASS: Record<number, string> = { 400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'Conflict', 413: 'OverLimit', 500: 'ClientException', 503: 'ClientException' };

class Compute {
  constructor(
    private readonly url: string,
    private readonly projectId: string,
    /** Keystone: the token sent instead of X-Project-Id. */
    private readonly token?: string,
  ) {}

  /** node:http with Connection: close (a CLI makes a handful of calls; no pool to linger at exit). */
  private send(method: string, path: string, payload: string | undefined): Promise<{ status: number; text: string }> {
    const u = new URL(`${this.url.replace(/\/$/, '')}/v2.1${path}`);
    const headers: Record<string, string> = { ...(this.token ? { 'X-Auth-Token': this.token } : { 'X-Project-Id': this.projectId }), Accept: 'application/json', Connection: 'close' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(payload));
    }
    const fn = u.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = fn(u, { method, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.setTimeout(60_000, () => req.destroy(new Error('timed out')));
      req.on('error', reject);
      req.end(payload);
    });
  }

  async req(method: string, path: string, body?: unknown): Promise<Obj | undefined> {
    let res: { status: number; text: string };
    try {
      res = await this.send(method, path, body === undefined ? undefined : JSON.stringify(body));
    } catch (e) {
      throw new ComputeError(0, `Unable to establish connection to ${this.url}: ${(e as Error).message}`);
    }
    const text = res.text;
    if (res.status >= 400) {
      let msg = text;
      try {
        const j = JSON.parse(text) as Obj;
        const fault = Object.values(j)[0] as Obj | undefined;
        if (fault && typeof fault.message === 'string') msg = fault.message;
      } catch {
        /* not JSON */
      }
      throw new ComputeError(res.status, msg);
    }
    return text ? (JSON.parse(text) as Obj) : undefined;
  }
}

interface Ctx {
  api: Compute;
  args: ParsedArgs;
  format: OutputFormat;
  o: (name: string) => string | undefined;
  list: (name: string) => string[];
  pos: (i: number, what: string) => string;
  write: (s: string) => void;
}

interface Command {
  usage: string;
  help: string;
  spec?: Record<string, ArgKind>;
  run(c: Ctx): Promise<void>;
}

const GLOBAL: Record<string, ArgKind> = COMMON_GLOBALS;
const SHORT = { '-f': 'format', '-h': 'help' };
const GLOBAL_WITH_VALUE = new Set(COMMON_GLOBALS_WITH_VALUE);
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** novaclient's find_resource: an id, else exactly one server with that name. */
async function findServer(api: Compute, nameOrId: string): Promise<Obj> {
  if (UUID_RE.test(nameOrId)) {
    try {
      return (await api.req('GET', `/servers/${nameOrId}`))!.server as Obj;
    } catch (e) {
      if (!(e instanceof ComputeError) || e.status !== 404) throw e;
    }
  }
  const hits = ((await api.req('GET', `/servers/detail?name=${encodeURIComponent(nameOrId)}`))!.servers as Obj[]).filter((s) => s.name === nameOrId);
  if (hits.length > 1) throw new ComputeError(409, `Multiple server matches found for '${nameOrId}', use an ID to be more specific.`);
  if (hits.length === 0) throw new ComputeError(404, `No server with a name or ID of '${nameOrId}' exists.`);
  return hits[0]!;
}

async function findFlavor(api: Compute, nameOrId: string): Promise<Obj> {
  const flavors = (await api.req('GET', '/flavors/detail'))!.flavors as Obj[];
  const f = flavors.find((x) => x.id === nameOrId) ?? flavors.find((x) => x.name === nameOrId);
  if (!f) throw new ComputeError(404, `No flavor with a name or ID of '${nameOrId}' exists.`);
  return f;
}

/** "private=10.0.0.2, fd00::5; public=1.2.3.4" */
function networksColumn(s: Obj): string {
  return Object.entries((s.addresses ?? {}) as Record<string, Obj[]>)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([label, ips]) => `${label}=${ips.map((i) => i.addr).join(', ')}`)
    .join('; ');
}

/** novaclient's _print_server: Property/Value, with "<label> network" rows and flavor/image by name. */
async function printServer(c: Ctx, s: Obj, extra: Obj = {}): Promise<void> {
  if (c.format === 'json') {
    c.write(`${JSON.stringify({ ...s, ...extra }, null, 4)}\n`);
    return;
  }
  const info: Obj = { ...s, ...extra };
  for (const [label, ips] of Object.entries((s.addresses ?? {}) as Record<string, Obj[]>)) info[`${label} network`] = ips.map((i) => i.addr).join(', ');
  delete info.addresses;
  delete info.links;
  if (s.flavor && typeof s.flavor === 'object') {
    try {
      const f = (await c.api.req('GET', `/flavors/${s.flavor.id}`))!.flavor as Obj;
      info.flavor = `${f.name} (${f.id})`;
    } catch {
      info.flavor = `(${s.flavor.id})`;
    }
  }
  if (s.image && typeof s.image === 'object') info.image = `(${s.image.id})`;
  else if (s.image === '') info.image = 'Attempt to boot from volume - no image supplied';
  if (Array.isArray(s.security_groups)) info.security_groups = (s.security_groups as Obj[]).map((g) => g.name).join(', ');
  if (s.metadata) info.metadata = JSON.stringify(s.metadata);
  if (c.format === 'value') {
    for (const k of Object.keys(info).sort()) c.write(`${formatValue(info[k])}\n`);
    return;
  }
  c.write(renderTable(['Property', 'Value'], Object.keys(info).sort().map((k) => [k, formatValue(info[k])])));
}

/** novaclient's --block-device keys → the API's block_device_mapping_v2 names; `empty`: an empty value still counts. */
const BDM_KEYS: Record<string, { to: string; value?: (v: string) => unknown; empty?: true }> = {
  id: { to: 'uuid' },
  source: { to: 'source_type' },
  dest: { to: 'destination_type' },
  bootindex: { to: 'boot_index', value: Number, empty: true },
  size: { to: 'volume_size', value: Number, empty: true },
  shutdown: { to: 'delete_on_termination', value: (v) => v === 'remove' },
  device: { to: 'device_name' },
  format: { to: 'guest_format' },
};

function parseKv(items: string[], what: string, needValue: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const it of items) {
    const eq = it.indexOf('=');
    if (eq < 0) {
      if (needValue) throw new UsageError(`invalid ${what} '${it}': expected key=value`);
      out[it] = '';
      continue;
    }
    out[it.slice(0, eq)] = it.slice(eq + 1);
  }
  return out;
}

const COMMANDS: Record<string, Command> = {
  boot: {
    usage: 'boot NAME --flavor FLAVOR --image IMAGE [--key-name KEY] [--user-data FILE] [--meta key=value]... [--nic net-id=NET[,v4-fixed-ip=IP]|port-id=PORT]... [--availability-zone AZ] [--security-groups a,b] [--block-device source=volume|image|blank,id=UUID,dest=volume|local,bootindex=N,size=GB,device=NAME,format=swap]...',
    help: 'Boot a new server.',
    spec: { flavor: 'string', image: 'string', 'key-name': 'string', 'user-data': 'string', meta: 'list', nic: 'list', 'availability-zone': 'string', 'security-groups': 'string', 'block-device': 'list' },
    async run(c) {
      const name = c.pos(0, 'NAME');
      const flavorArg = c.o('flavor');
      if (!flavorArg) throw new UsageError('you need to specify a Flavor ID.');
      const imageArg = c.o('image');
      const bdms = c.list('block-device').map((b) => {
        const kv = parseKv(b.split(','), 'block device', true);
        const out: Obj = { ...kv };
        for (const [key, m] of Object.entries(BDM_KEYS)) {
          const v = kv[key];
          if (v === undefined || (v === '' && !m.empty)) continue;
          out[m.to] = m.value ? m.value(v) : v;
          delete out[key];
        }
        return out;
      });
      if (!imageArg && !bdms.some((b) => Number(b.boot_index) === 0)) throw new UsageError('you need to specify at least one source ID (Image, Snapshot, or Volume), a block device mapping or provide a set of properties to match against an image');
      const flavor = await findFlavor(c.api, flavorArg);
      const server: Obj = { name, flavorRef: flavor.id };
      if (imageArg) server.imageRef = imageArg;
      if (c.o('key-name')) server.key_name = c.o('key-name');
      const ud = c.o('user-data');
      if (ud) {
        let data: Buffer;
        try {
          data = readFileSync(ud);
        } catch (e) {
          throw new UsageError(`Can't open '${ud}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
        }
        server.user_data = data.toString('base64');
      }
      const meta = parseKv(c.list('meta'), 'metadata', true);
      if (Object.keys(meta).length) server.metadata = meta;
      if (c.o('availability-zone')) server.availability_zone = c.o('availability-zone');
      if (c.o('security-groups')) server.security_groups = c.o('security-groups')!.split(',').map((n) => ({ name: n.trim() }));
      const nics = c.list('nic').map((n) => {
        const kv = parseKv(n.split(','), 'nic', true);
        for (const k of Object.keys(kv)) if (!['net-id', 'v4-fixed-ip', 'v6-fixed-ip', 'port-id'].includes(k)) throw new UsageError(`Invalid nic argument '${n}'. Nic arguments must be of the form --nic <net-id=net-uuid,v4-fixed-ip=ip-addr,v6-fixed-ip=ip-addr,port-id=port-uuid>, with only one of net-id or port-id specified.`);
        if (!!kv['net-id'] === !!kv['port-id']) throw new UsageError(`Invalid nic argument '${n}'. Nic arguments must be of the form --nic <net-id=net-uuid,v4-fixed-ip=ip-addr,v6-fixed-ip=ip-addr,port-id=port-uuid>, with only one of net-id or port-id specified.`);
        if (kv['port-id']) return { port: kv['port-id'] };
        const r: Obj = { uuid: kv['net-id'] };
        const ip = kv['v4-fixed-ip'] ?? kv['v6-fixed-ip'];
        if (ip) r.fixed_ip = ip;
        return r;
      });
      if (nics.length) server.networks = nics;
      if (bdms.length) server.block_device_mapping_v2 = bdms;
      const created = (await c.api.req('POST', '/servers', { server }))!.server as Obj;
      const full = (await c.api.req('GET', `/servers/${created.id}`))!.server as Obj;
      await printServer(c, full, { adminPass: created.adminPass });
    },
  },
  list: {
    usage: 'list [--name NAME]',
    help: 'List active servers.',
    spec: { name: 'string' },
    async run(c) {
      const q = c.o('name') ? `?name=${encodeURIComponent(c.o('name')!)}` : '';
      const servers = (await c.api.req('GET', `/servers/detail${q}`))!.servers as Obj[];
      const rows = servers.map((s) => ({
        ID: s.id,
        Name: s.name,
        Status: s.status,
        'Task State': s['OS-EXT-STS:task_state'] ?? 'None',
        'Power State': s['OS-EXT-STS:power_state'] === 1 ? 'Running' : 'NOSTATE',
        Networks: networksColumn(s),
      }));
      printList(['ID', 'Name', 'Status', 'Task State', 'Power State', 'Networks'], rows, { format: c.format, write: c.write });
      if (c.format === 'table' && rows.length === 0) c.write(renderTable(['ID', 'Name', 'Status', 'Task State', 'Power State', 'Networks'], []));
    },
  },
  show: {
    usage: 'show SERVER',
    help: 'Show details about the given server.',
    async run(c) {
      await printServer(c, await findServer(c.api, c.pos(0, 'SERVER')));
    },
  },
  delete: {
    usage: 'delete SERVER [SERVER ...]',
    help: 'Immediately shut down and delete specified server(s).',
    async run(c) {
      if (!c.args.positionals.length) throw new UsageError('too few arguments: SERVER is required');
      let failed = 0;
      for (const n of c.args.positionals) {
        try {
          const s = await findServer(c.api, n);
          await c.api.req('DELETE', `/servers/${s.id}`);
          c.write(`Request to delete server ${n} has been accepted.\n`);
        } catch (e) {
          failed++;
          process.stderr.write(`Delete for server ${n} failed: ${(e as Error).message}\n`);
        }
      }
      if (failed) throw new ComputeError(0, 'Unable to delete the specified server(s).');
    },
  },
  'keypair-add': {
    usage: 'keypair-add NAME [--pub-key FILE] [--key-type ssh|x509]',
    help: 'Create a new key pair for use with servers.',
    spec: { 'pub-key': 'string', 'key-type': 'string' },
    async run(c) {
      const name = c.pos(0, 'NAME');
      const kp: Obj = { name };
      const file = c.o('pub-key');
      if (file) {
        try {
          kp.public_key = readFileSync(file, 'utf8');
        } catch (e) {
          throw new UsageError(`Can't open or read '${file}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
        }
      }
      if (c.o('key-type')) kp.type = c.o('key-type');
      const r = (await c.api.req('POST', '/os-keypairs', { keypair: kp }))!.keypair as Obj;
      if (c.format === 'json') c.write(`${JSON.stringify(r, null, 4)}\n`);
      else if (!file) c.write(`${r.private_key as string}`);
    },
  },
  'keypair-list': {
    usage: 'keypair-list',
    help: 'Print a list of keypairs for a user.',
    async run(c) {
      const kps = ((await c.api.req('GET', '/os-keypairs'))!.keypairs as Obj[]).map((k) => k.keypair as Obj);
      const rows = kps.map((k) => ({ Name: k.name, Type: k.type, Fingerprint: k.fingerprint }));
      printList(['Name', 'Type', 'Fingerprint'], rows, { format: c.format, write: c.write });
    },
  },
  'keypair-show': {
    usage: 'keypair-show NAME',
    help: 'Show details about the given keypair.',
    async run(c) {
      const k = (await c.api.req('GET', `/os-keypairs/${encodeURIComponent(c.pos(0, 'NAME'))}`))!.keypair as Obj;
      if (c.format === 'json') c.write(`${JSON.stringify(k, null, 4)}\n`);
      else c.write(renderTable(['Property', 'Value'], Object.keys(k).sort().map((x) => [x, formatValue(k[x])])));
    },
  },
  'keypair-delete': {
    usage: 'keypair-delete NAME',
    help: 'Delete keypair given by its name.',
    async run(c) {
      await c.api.req('DELETE', `/os-keypairs/${encodeURIComponent(c.pos(0, 'NAME'))}`);
    },
  },
  meta: {
    usage: 'meta SERVER set|delete key[=value] [key[=value] ...]',
    help: 'Set or delete metadata on a server.',
    async run(c) {
      const s = await findServer(c.api, c.pos(0, 'SERVER'));
      const action = c.pos(1, 'ACTION');
      const items = c.args.positionals.slice(2);
      if (!items.length) throw new UsageError('too few arguments: METADATA is required');
      if (action === 'set') {
        await c.api.req('POST', `/servers/${s.id}/metadata`, { metadata: parseKv(items, 'metadata', true) });
      } else if (action === 'delete') {
        for (const k of Object.keys(parseKv(items, 'metadata', false))) await c.api.req('DELETE', `/servers/${s.id}/metadata/${encodeURIComponent(k)}`);
      } else throw new UsageError(`argument ACTION: invalid choice: '${action}' (choose from 'set', 'delete')`);
    },
  },
  'get-password': {
    usage: 'get-password SERVER',
    help: "Get the admin password for a server (as the guest posted it: encrypted with the server's key).",
    async run(c) {
      const s = await findServer(c.api, c.pos(0, 'SERVER'));
      const r = (await c.api.req('GET', `/servers/${s.id}/os-server-password`))!;
      if (c.format === 'json') c.write(`${JSON.stringify(r, null, 4)}\n`);
      else c.write(`${r.password as string}\n`);
    },
  },
  'clear-password': {
    usage: 'clear-password SERVER',
    help: 'Clear the admin password for a server from the metadata server. This action does not actually change the instance server password.',
    async run(c) {
      const s = await findServer(c.api, c.pos(0, 'SERVER'));
      await c.api.req('DELETE', `/servers/${s.id}/os-server-password`);
    },
  },
  'flavor-list': {
    usage: 'flavor-list',
    help: 'Print a list of available flavors.',
    async run(c) {
      const flavors = (await c.api.req('GET', '/flavors/detail'))!.flavors as Obj[];
      const rows = flavors.map((f) => ({
        ID: f.id,
        Name: f.name,
        Memory_MB: f.ram,
        Disk: f.disk,
        Ephemeral: f['OS-FLV-EXT-DATA:ephemeral'],
        Swap: f.swap,
        VCPUs: f.vcpus,
        RXTX_Factor: f.rxtx_factor,
        Is_Public: f['os-flavor-access:is_public'],
      }));
      printList(['ID', 'Name', 'Memory_MB', 'Disk', 'Ephemeral', 'Swap', 'VCPUs', 'RXTX_Factor', 'Is_Public'], rows, { format: c.format, write: c.write });
    },
  },
  'flavor-create': {
    usage: 'flavor-create NAME ID MEMORY_MB DISK VCPUS [--ephemeral GB] [--swap MB] [--rxtx-factor F] [--is-public true|false]',
    help: 'Create a new flavor.',
    spec: { ephemeral: 'string', swap: 'string', 'rxtx-factor': 'string', 'is-public': 'string' },
    async run(c) {
      const [name, id, ram, disk, vcpus] = [0, 1, 2, 3, 4].map((i) => c.pos(i, ['NAME', 'ID', 'MEMORY_MB', 'DISK', 'VCPUS'][i]!));
      const body: Obj = { name, ram: Number(ram), disk: Number(disk), vcpus: Number(vcpus), 'OS-FLV-EXT-DATA:ephemeral': Number(c.o('ephemeral') ?? 0), swap: Number(c.o('swap') ?? 0), rxtx_factor: Number(c.o('rxtx-factor') ?? 1) };
      if (id !== 'auto') body.id = id;
      if (c.o('is-public')) body['os-flavor-access:is_public'] = /^(true|1|yes)$/i.test(c.o('is-public')!);
      const f = (await c.api.req('POST', '/flavors', { flavor: body }))!.flavor as Obj;
      const row = { ID: f.id, Name: f.name, Memory_MB: f.ram, Disk: f.disk, Ephemeral: f['OS-FLV-EXT-DATA:ephemeral'], Swap: f.swap, VCPUs: f.vcpus, RXTX_Factor: f.rxtx_factor, Is_Public: f['os-flavor-access:is_public'] };
      printList(Object.keys(row), [row], { format: c.format, write: c.write });
    },
  },
};

function usage(): string {
  const lines = ['usage: nova [--os-url URL] [--os-project-id ID] [-f {table,json,value}] <subcommand> ...', '', 'Positional arguments:'];
  for (const [n, cmd] of Object.entries(COMMANDS)) lines.push(`    ${n.padEnd(18)}${cmd.help}`);
  lines.push('', 'OS_URL (default http://127.0.0.1:8774) and OS_PROJECT_ID are read from the environment; with OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,', 'OS_PROJECT_NAME (and OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME) the client gets a Keystone token and the compute endpoint from the catalog.', '');
  return lines.join('\n');
}

export async function main(argv: string[], write: (s: string) => void = (s) => void process.stdout.write(s)): Promise<number> {
  const found = findCommand(argv, GLOBAL_WITH_VALUE);
  const { name, rest } = found;
  if (!name || name === 'help') return writeHelp('nova', argv, found, COMMANDS, usage, write);
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`usage: nova <subcommand> ...\nerror: argument <subcommand>: invalid choice: '${name}'\nTry 'nova help' for more information.\n`);
    return 2;
  }
  let args: ParsedArgs;
  try {
    args = parseArgs(rest, { ...GLOBAL, ...(cmd.spec ?? {}) }, { short: SHORT });
  } catch (e) {
    process.stderr.write(`usage: nova ${cmd.usage}\nerror: ${(e as Error).message}\n`);
    return 2;
  }
  if (args.opts.help) {
    write(`usage: nova ${cmd.usage}\n\n${cmd.help}\n`);
    return 0;
  }
  const fmt = outputFormat(args.opts);
  if ('error' in fmt) {
    process.stderr.write(`nova ${name}: error: ${fmt.error}\n`);
    return 2;
  }
  const format: OutputFormat = fmt.format;
  // With Keystone (OS_AUTH_URL...): a token, and the compute endpoint from the catalog unless --os-url names one.
  let token: string | undefined;
  let url: string;
  let projectId = projectIdOf(args.opts) ?? '';
  try {
    const ks = keystoneOf(args.opts);
    const session = ks ? new KeystoneSession(ks) : undefined;
    try {
      const info = session ? await session.auth() : undefined;
      token = info?.token;
      if (info) projectId = info.projectId;
      url = (explicitUrl(args.opts) ?? (session ? await session.endpoint('compute') : 'http://127.0.0.1:8774')).replace(/\/v2(\.1)?\/?$/, '');
    } finally {
      await session?.close();
    }
  } catch (e) {
    process.stderr.write(`ERROR (CommandError): ${(e as Error).message}\n`);
    return 1;
  }
  if (!projectId) {
    process.stderr.write('ERROR (CommandError): You must provide a project id via either --os-project-id or env[OS_PROJECT_ID]\n');
    return 1;
  }
  const c: Ctx = {
    api: new Compute(url, projectId, token),
    args,
    format,
    o: (n) => args.opts[n] as string | undefined,
    list: (n) => (args.opts[n] as string[] | undefined) ?? [],
    pos: (i, what) => positional(args, i, what),
    write,
  };
  try {
    await cmd.run(c);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`usage: nova ${cmd.usage}\nerror: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ComputeError) {
      process.stderr.write(e.status ? `ERROR (${ERROR_CLASS[e.status] ?? 'ClientException'}): ${e.message} (HTTP ${e.status})\n` : `ERROR: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`ERROR: ${(e as Error).message}\n`);
    return 1;
  }
}

// Run when executed (bin/nova.js imports this module), not when a test imports main().
if (process.argv[1] && /(?:^|[/\\])(nova(?:\.js)?)$/.test(process.argv[1])) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`nova: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
