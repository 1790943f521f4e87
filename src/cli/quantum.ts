// `quantum`: the operator's client for quantum-server, with python-quantumclient's commands and tables.
import { ApiError } from '../common/errors.js';
import { KeystoneSession } from '../common/keystone.js';
import { QuantumClient, type Filters } from '../common/quantum-client.js';
import { COMMON_GLOBALS, COMMON_GLOBALS_WITH_VALUE, explicitUrl, findCommand, keystoneOf, outputFormat, parseArgs, parseKeyValues, positional, projectIdOf, UsageError, writeHelp, type ArgKind, type ParsedArgs } from './args.js';
import { printList, printShow, type OutputOptions } from './table.js';

type Obj = Record<string, unknown>;

interface Ctx {
  qc: QuantumClient;
  args: ParsedArgs;
  out: OutputOptions;
  o: (name: string) => string | undefined;
  list: (name: string) => string[];
  flag: (name: string) => boolean;
  pos: (i: number, what: string) => string;
}

interface Command {
  usage: string;
  help: string;
  spec?: Record<string, ArgKind>;
  /** List commands take any other --key value as a filter. */
  filters?: boolean;
  run(c: Ctx): Promise<void>;
}

const GLOBAL: Record<string, ArgKind> = { ...COMMON_GLOBALS, column: 'list' };
const SHORT = { '-f': 'format', '-c': 'column', '-h': 'help' };
const GLOBAL_WITH_VALUE = new Set([...COMMON_GLOBALS_WITH_VALUE, '--column', '-c']);

const KIND_PLURAL: Record<string, string> = { network: 'networks', subnet: 'subnets', port: 'ports', router: 'routers', agent: 'agents' };

/** quantumclient's find_resourceid_by_name_or_id: an id wins, else exactly one match by name. */
async function resolve(qc: QuantumClient, kind: string, nameOrId: string): Promise<string> {
  const plural = KIND_PLURAL[kind]!;
  const byId = await qc.request<Record<string, Obj[]>>('GET', `/v2.0/${plural}?id=${encodeURIComponent(nameOrId)}&fields=id`);
  if (byId[plural]!.length === 1) return String(byId[plural]![0]!.id);
  const byName = await qc.request<Record<string, Obj[]>>('GET', `/v2.0/${plural}?name=${encodeURIComponent(nameOrId)}&fields=id`);
  const hits = byName[plural]!;
  if (hits.length > 1) throw new ApiError(409, 'QuantumClientNoUniqueMatch', `Multiple ${kind} matches found for name '${nameOrId}', use an ID to be more specific.`);
  if (hits.length === 0) throw new ApiError(404, 'QuantumClientException', `Unable to find ${kind} with name or id '${nameOrId}'`);
  return String(hits[0]!.id);
}

function filtersFrom(c: Ctx): Filters {
  const f: Record<string, string[]> = {};
  for (const [k, vals] of Object.entries(c.args.extra)) {
    const key = k === 'fixed-ip' || k === 'fixed-ips' ? 'fixed_ips' : k.replace(/-/g, '_');
    (f[key] ??= []).push(...vals);
  }
  return f;
}

const showCmd = (kind: string): Command => ({
  usage: `${kind}-show ${kind.toUpperCase()}`,
  help: `Show information of a given ${kind}.`,
  async run(c) {
    const id = await resolve(c.qc, kind, c.pos(0, kind.toUpperCase()));
    const r = await c.qc.request<Obj>('GET', `/v2.0/${KIND_PLURAL[kind]}/${encodeURIComponent(id)}`);
    printShow(undefined, r[kind] as Obj, c.out);
  },
});

const deleteCmd = (kind: string): Command => ({
  usage: `${kind}-delete ${kind.toUpperCase()}`,
  help: `Delete a given ${kind}.`,
  async run(c) {
    const arg = c.pos(0, kind.toUpperCase());
    const id = kind === 'agent' ? arg : await resolve(c.qc, kind, arg);
    await c.qc.request('DELETE', `/v2.0/${KIND_PLURAL[kind]}/${encodeURIComponent(id)}`);
    process.stdout.write(`Deleted ${kind}: ${arg}\n`);
  },
});

const listCmd = (kind: string, columns: string[], formatters: (c: Ctx) => Promise<Record<string, (r: Obj) => unknown>> = async () => ({})): Command => ({
  usage: `${kind}-list [--FILTER VALUE]...`,
  help: `List ${KIND_PLURAL[kind]} (any --attribute value is a filter, repeat it for OR).`,
  filters: true,
  async run(c) {
    const r = await c.qc.request<Record<string, Obj[]>>('GET', `/v2.0/${KIND_PLURAL[kind]}${encode(filtersFrom(c))}`);
    printList(columns, r[KIND_PLURAL[kind]!]!, { ...c.out, formatters: await formatters(c) });
  },
});

function encode(f: Filters): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(f)) for (const x of typeof v === 'string' ? [v] : (v ?? [])) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(x)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

function tenantBody(c: Ctx): Obj {
  const t = c.o('tenant-id');
  return t ? { tenant_id: t } : {};
}

/** The two agent schedulers: what each binds, and quantumclient's names and words for it. */
const SCHED = {
  l3: { agent: 'L3_AGENT', agentText: 'L3 agent', kind: 'router', arg: 'ROUTER', columns: ['id', 'name', 'external_gateway_info'] },
  dhcp: { agent: 'DHCP_AGENT', agentText: 'DHCP agent', kind: 'network', arg: 'NETWORK', columns: ['id', 'name', 'subnets'] },
} as const;
type Sched = keyof typeof SCHED;

/** l3-agent-router-add/remove, dhcp-agent-network-add/remove. */
function bindCmd(which: Sched, op: 'add' | 'remove'): Command {
  const w = SCHED[which];
  const prep = op === 'add' ? 'to' : 'from';
  return {
    usage: `${which}-agent-${w.kind === 'router' ? 'router' : 'network'}-${op} ${w.agent} ${w.arg}`,
    help: `${op === 'add' ? 'Add' : 'Remove'} a ${w.kind} ${prep} a ${w.agentText}.`,
    async run(c) {
      const agent = c.pos(0, w.agent);
      const arg = c.pos(1, w.arg);
      const id = await resolve(c.qc, w.kind, arg);
      if (which === 'l3') await (op === 'add' ? c.qc.addRouterToL3Agent(agent, id) : c.qc.removeRouterFromL3Agent(agent, id));
      else await (op === 'add' ? c.qc.addNetworkToDhcpAgent(agent, id) : c.qc.removeNetworkFromDhcpAgent(agent, id));
      process.stdout.write(`${op === 'add' ? 'Added' : 'Removed'} ${w.kind} ${arg} ${prep} ${w.agentText}\n`);
    },
  };
}

/** router-list-on-l3-agent, net-list-on-dhcp-agent. */
function onAgentCmd(which: Sched): Command {
  const w = SCHED[which];
  return {
    usage: `${which === 'l3' ? 'router' : 'net'}-list-on-${which}-agent ${w.agent}`,
    help: `List the ${w.kind}s on a ${w.agentText}.`,
    async run(c) {
      const agent = c.pos(0, w.agent);
      const items = which === 'l3' ? await c.qc.listRoutersOnL3Agent(agent) : await c.qc.listNetworksOnDhcpAgent(agent);
      printList([...w.columns], items as unknown as Obj[], c.out);
    },
  };
}

/** l3-agent-list-hosting-router, dhcp-agent-list-hosting-net. */
function hostingCmd(which: Sched): Command {
  const w = SCHED[which];
  return {
    usage: `${which}-agent-list-hosting-${which === 'l3' ? 'router' : 'net'} ${w.arg}`,
    help: `List ${w.agentText}s hosting a ${w.kind}.`,
    async run(c) {
      const id = await resolve(c.qc, w.kind, c.pos(0, w.arg));
      const agents = which === 'l3' ? await c.qc.listL3AgentsHostingRouter(id) : await c.qc.listDhcpAgentsHostingNetwork(id);
      printList(['id', 'host', 'admin_state_up', 'alive'], agents.map((a) => ({ ...a, alive: a.alive ? ':-)' : 'xxx' })) as unknown as Obj[], c.out);
    },
  };
}

const COMMANDS: Record<string, Command> = {
  'net-create': {
    usage: 'net-create [--tenant-id TENANT] [--admin-state-down] [--shared] NAME',
    help: 'Create a network for a given tenant.',
    spec: { 'tenant-id': 'string', 'admin-state-down': 'flag', shared: 'flag' },
    async run(c) {
      const body: Obj = { name: c.pos(0, 'NAME'), admin_state_up: !c.flag('admin-state-down'), ...tenantBody(c) };
      if (c.flag('shared')) body.shared = true;
      const r = await c.qc.request<Obj>('POST', '/v2.0/networks', { network: body });
      printShow('Created a new network:', r.network as Obj, c.out);
    },
  },
  'net-list': listCmd('network', ['id', 'name', 'subnets'], async (c) => {
    // As quantumclient's extend_list: subnets shown as "<id> <cidr>".
    const subs = (await c.qc.request<{ subnets: Obj[] }>('GET', '/v2.0/subnets?fields=id&fields=cidr')).subnets;
    const cidr = new Map(subs.map((s) => [String(s.id), String(s.cidr)]));
    return { subnets: (r) => (r.subnets as string[]).map((id) => `${id} ${cidr.get(id) ?? ''}`.trimEnd()) };
  }),
  'net-show': showCmd('network'),
  'net-update': {
    usage: 'net-update NETWORK [--name NAME] [--admin-state-up True|False]',
    help: 'Update a network.',
    spec: { name: 'string', 'admin-state-up': 'string' },
    async run(c) {
      const arg = c.pos(0, 'NETWORK');
      const id = await resolve(c.qc, 'network', arg);
      const body: Obj = {};
      if (c.o('name') !== undefined) body.name = c.o('name');
      if (c.o('admin-state-up') !== undefined) body.admin_state_up = c.o('admin-state-up');
      await c.qc.request('PUT', `/v2.0/networks/${id}`, { network: body });
      process.stdout.write(`Updated network: ${arg}\n`);
    },
  },
  'net-delete': deleteCmd('network'),

  'subnet-create': {
    usage: 'subnet-create [--name NAME] [--tenant-id T] [--ip-version {4,6}] [--gateway GATEWAY_IP | --no-gateway] [--allocation-pool start=IP,end=IP]... [--host-route destination=CIDR,nexthop=IP]... [--dns-nameserver IP]... [--disable-dhcp] NETWORK CIDR',
    help: 'Create a subnet for a given tenant.',
    spec: { name: 'string', 'tenant-id': 'string', 'ip-version': 'string', gateway: 'string', 'no-gateway': 'flag', 'allocation-pool': 'list', 'host-route': 'list', 'dns-nameserver': 'list', 'disable-dhcp': 'flag', 'enable-dhcp': 'string' },
    async run(c) {
      if (c.o('gateway') !== undefined && c.flag('no-gateway')) throw new UsageError('argument --no-gateway: not allowed with argument --gateway');
      const net = await resolve(c.qc, 'network', c.pos(0, 'NETWORK'));
      const body: Obj = { network_id: net, cidr: c.pos(1, 'CIDR'), ip_version: Number(c.o('ip-version') ?? 4), ...tenantBody(c) };
      if (![4, 6].includes(body.ip_version as number)) throw new UsageError(`argument --ip-version: invalid choice: '${c.o('ip-version')}' (choose from 4, 6)`);
      if (c.o('name') !== undefined) body.name = c.o('name');
      if (c.o('gateway') !== undefined) body.gateway_ip = c.o('gateway');
      if (c.flag('no-gateway')) body.gateway_ip = null;
      if (c.list('allocation-pool').length) body.allocation_pools = c.list('allocation-pool').map((p) => parseKeyValues(p, '--allocation-pool', ['start', 'end']));
      if (c.list('host-route').length) body.host_routes = c.list('host-route').map((p) => parseKeyValues(p, '--host-route', ['destination', 'nexthop']));
      if (c.list('dns-nameserver').length) body.dns_nameservers = c.list('dns-nameserver');
      if (c.flag('disable-dhcp')) body.enable_dhcp = false;
      else if (c.o('enable-dhcp') !== undefined) body.enable_dhcp = c.o('enable-dhcp');
      const r = await c.qc.request<Obj>('POST', '/v2.0/subnets', { subnet: body });
      printShow('Created a new subnet:', r.subnet as Obj, c.out);
    },
  },
  'subnet-list': listCmd('subnet', ['id', 'name', 'cidr', 'allocation_pools']),
  'subnet-show': showCmd('subnet'),
  'subnet-update': {
    usage: 'subnet-update SUBNET [--name NAME] [--dns-nameserver IP]... [--gateway IP | --no-gateway]',
    help: 'Update a subnet.',
    spec: { name: 'string', 'dns-nameserver': 'list', gateway: 'string', 'no-gateway': 'flag' },
    async run(c) {
      const arg = c.pos(0, 'SUBNET');
      const id = await resolve(c.qc, 'subnet', arg);
      const body: Obj = {};
      if (c.o('name') !== undefined) body.name = c.o('name');
      if (c.list('dns-nameserver').length) body.dns_nameservers = c.list('dns-nameserver');
      if (c.o('gateway') !== undefined) body.gateway_ip = c.o('gateway');
      if (c.flag('no-gateway')) body.gateway_ip = null;
      await c.qc.request('PUT', `/v2.0/subnets/${id}`, { subnet: body });
      process.stdout.write(`Updated subnet: ${arg}\n`);
    },
  },
  'subnet-delete': deleteCmd('subnet'),

  'port-create': {
    usage: 'port-create [--name NAME] [--tenant-id T] [--admin-state-down] [--mac-address MAC] [--device-id ID] [--device-owner OWNER] [--fixed-ip subnet_id=SUBNET,ip_address=IP]... NETWORK',
    help: 'Create a port for a given tenant.',
    spec: { name: 'string', 'tenant-id': 'string', 'admin-state-down': 'flag', 'mac-address': 'string', 'device-id': 'string', 'device-owner': 'string', 'fixed-ip': 'list' },
    async run(c) {
      const net = await resolve(c.qc, 'network', c.pos(0, 'NETWORK'));
      const body: Obj = { network_id: net, admin_state_up: !c.flag('admin-state-down'), ...tenantBody(c) };
      if (c.o('name') !== undefined) body.name = c.o('name');
      if (c.o('mac-address') !== undefined) body.mac_address = c.o('mac-address');
      if (c.o('device-id') !== undefined) body.device_id = c.o('device-id');
      if (c.o('device-owner') !== undefined) body.device_owner = c.o('device-owner');
      if (c.list('fixed-ip').length) {
        body.fixed_ips = await Promise.all(
          c.list('fixed-ip').map(async (f) => {
            const kv = parseKeyValues(f, '--fixed-ip', ['subnet_id', 'ip_address']);
            if (kv.subnet_id) kv.subnet_id = await resolve(c.qc, 'subnet', kv.subnet_id);
            return kv;
          }),
        );
      }
      const r = await c.qc.request<Obj>('POST', '/v2.0/ports', { port: body });
      printShow('Created a new port:', r.port as Obj, c.out);
    },
  },
  'port-list': listCmd('port', ['id', 'name', 'mac_address', 'fixed_ips']),
  'port-show': showCmd('port'),
  'port-update': {
    usage: 'port-update PORT [--name NAME] [--device-id ID] [--device-owner OWNER]',
    help: 'Update a port.',
    spec: { name: 'string', 'device-id': 'string', 'device-owner': 'string' },
    async run(c) {
      const arg = c.pos(0, 'PORT');
      const id = await resolve(c.qc, 'port', arg);
      const body: Obj = {};
      if (c.o('name') !== undefined) body.name = c.o('name');
      if (c.o('device-id') !== undefined) body.device_id = c.o('device-id');
      if (c.o('device-owner') !== undefined) body.device_owner = c.o('device-owner');
      await c.qc.request('PUT', `/v2.0/ports/${id}`, { port: body });
      process.stdout.write(`Updated port: ${arg}\n`);
    },
  },
  'port-delete': deleteCmd('port'),

  'router-create': {
    usage: 'router-create [--tenant-id T] [--admin-state-down] NAME',
    help: 'Create a router for a given tenant.',
    spec: { 'tenant-id': 'string', 'admin-state-down': 'flag' },
    async run(c) {
      const r = await c.qc.request<Obj>('POST', '/v2.0/routers', { router: { name: c.pos(0, 'NAME'), admin_state_up: !c.flag('admin-state-down'), ...tenantBody(c) } });
      printShow('Created a new router:', r.router as Obj, c.out);
    },
  },
  'router-list': listCmd('router', ['id', 'name', 'external_gateway_info']),
  'router-show': showCmd('router'),
  'router-delete': deleteCmd('router'),
  'router-interface-add': {
    usage: 'router-interface-add ROUTER INTERFACE   (INTERFACE: SUBNET, subnet=SUBNET or port=PORT)',
    help: 'Add an internal network interface to a router.',
    async run(c) {
      const rarg = c.pos(0, 'ROUTER');
      const router = await resolve(c.qc, 'router', rarg);
      const body = await interfaceBody(c, c.pos(1, 'INTERFACE'));
      const info = await c.qc.addRouterInterface(router, body);
      process.stdout.write(`Added interface ${info.port_id} to router ${rarg}.\n`);
    },
  },
  'router-interface-delete': {
    usage: 'router-interface-delete ROUTER INTERFACE   (INTERFACE: SUBNET, subnet=SUBNET or port=PORT)',
    help: 'Remove an internal network interface from a router.',
    async run(c) {
      const rarg = c.pos(0, 'ROUTER');
      const router = await resolve(c.qc, 'router', rarg);
      await c.qc.removeRouterInterface(router, await interfaceBody(c, c.pos(1, 'INTERFACE')));
      process.stdout.write(`Removed interface from router ${rarg}.\n`);
    },
  },
  'router-port-list': {
    usage: 'router-port-list ROUTER',
    help: 'List ports that belong to a given tenant, with specified router.',
    async run(c) {
      const router = await resolve(c.qc, 'router', c.pos(0, 'ROUTER'));
      printList(['id', 'name', 'mac_address', 'fixed_ips'], (await c.qc.listPorts({ device_id: router })) as unknown as Obj[], c.out);
    },
  },

  'agent-list': listCmd('agent', ['id', 'agent_type', 'host', 'alive', 'admin_state_up'], async () => ({ alive: (r) => (r.alive ? ':-)' : 'xxx') })),
  'agent-show': showCmd('agent'),
  'agent-delete': deleteCmd('agent'),

  // The agent scheduler extensions, as python-quantumclient's agentscheduler commands.
  'l3-agent-router-add': bindCmd('l3', 'add'),
  'l3-agent-router-remove': bindCmd('l3', 'remove'),
  'router-list-on-l3-agent': onAgentCmd('l3'),
  'l3-agent-list-hosting-router': hostingCmd('l3'),
  'dhcp-agent-network-add': bindCmd('dhcp', 'add'),
  'dhcp-agent-network-remove': bindCmd('dhcp', 'remove'),
  'net-list-on-dhcp-agent': onAgentCmd('dhcp'),
  'dhcp-agent-list-hosting-net': hostingCmd('dhcp'),
};

async function interfaceBody(c: Ctx, arg: string): Promise<{ subnet_id?: string; port_id?: string }> {
  if (arg.startsWith('port=')) return { port_id: await resolve(c.qc, 'port', arg.slice(5)) };
  const s = arg.startsWith('subnet=') ? arg.slice(7) : arg;
  return { subnet_id: await resolve(c.qc, 'subnet', s) };
}

function usage(): string {
  const lines = [
    'usage: quantum [--os-url URL] [--os-project-id ID] [-f {table,json,value}] [-c COLUMN]... <command> [args]',
    '',
    'Command-line interface to the Quantum (Neutron v2.0) API.',
    '  --os-url URL         quantum-server endpoint (env OS_URL, default http://127.0.0.1:9696)',
    '  --os-project-id ID   project sent as X-Project-Id (env OS_PROJECT_ID)',
    '',
    'Commands:',
  ];
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(width)} ${c.help}`);
  return `${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const found = findCommand(argv, GLOBAL_WITH_VALUE);
  const { name, rest } = found;
  if (!name || name === 'help') return writeHelp('quantum', argv, found, COMMANDS, usage, (s) => void process.stdout.write(s));
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`quantum: '${name}' is not a quantum command. See 'quantum help'.\n`);
    return 2;
  }
  let args: ParsedArgs;
  try {
    args = parseArgs(rest, { ...GLOBAL, ...(cmd.spec ?? {}) }, { short: SHORT, allowExtra: cmd.filters });
  } catch (e) {
    process.stderr.write(`usage: quantum ${cmd.usage}\nquantum ${name}: error: ${(e as Error).message}\n`);
    return 2;
  }
  if (args.opts.help) {
    process.stdout.write(`usage: quantum ${cmd.usage}\n\n${cmd.help}\n`);
    return 0;
  }
  const fmt = outputFormat(args.opts);
  if ('error' in fmt) {
    process.stderr.write(`quantum ${name}: error: ${fmt.error}\n`);
    return 2;
  }
  let session: KeystoneSession | undefined;
  let url: string;
  try {
    const ks = keystoneOf(args.opts);
    session = ks ? new KeystoneSession(ks) : undefined;
    // With Keystone, the network endpoint comes from the catalog unless --os-url names one.
    url = explicitUrl(args.opts) ?? (session ? await session.endpoint('network') : 'http://127.0.0.1:9696');
  } catch (e) {
    await session?.close();
    if (e instanceof UsageError) {
      process.stderr.write(`quantum: error: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`${(e as Error).message}\n`);
    return 1;
  }
  const projectId = projectIdOf(args.opts);
  let qc: QuantumClient;
  try {
    qc = new QuantumClient({ url, projectId: session ? undefined : projectId || undefined, timeoutMs: 30_000, connections: 4, auth: session });
  } catch {
    await session?.close();
    process.stderr.write(`quantum: invalid --os-url '${url}'\n`);
    return 2;
  }
  const c: Ctx = {
    qc,
    args,
    out: { format: fmt.format, columns: (args.opts.column as string[] | undefined) ?? [] },
    o: (n) => args.opts[n] as string | undefined,
    list: (n) => (args.opts[n] as string[] | undefined) ?? [],
    flag: (n) => args.opts[n] === true,
    pos: (i, what) => positional(args, i, what),
  };
  try {
    await cmd.run(c);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`usage: quantum ${cmd.usage}\nquantum ${name}: error: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ApiError) {
      process.stderr.write(`${e.message}\n`);
      return 1;
    }
    process.stderr.write(`quantum ${name}: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await qc.close();
    await session?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`quantum: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
