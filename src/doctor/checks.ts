// The hops of a guest's metadata request, each checked on its own, in the order the request takes them:
// namespace → device and address → iptables rules → proxy alive and listening → a request from inside the
// namespace → the metadata agent's socket → the agent's lookup (address + router/network → one port →
// instance) → Nova accepting the agent's signature → Nova answering for the instance → the whole path through
// the agent. The first hop that fails is named with its likely fix; the hops after it still run where they can.
import { existsSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { signInstanceId } from '../common/hmac.js';
import { errorMessage } from '../common/errors.js';
import { ROUTER_INTERFACE_OWNERS, type Port, type QuantumClient, type Subnet } from '../common/quantum-client.js';
import { listenerTag, parseSharedState, sharedPidFile, sharedStateFile } from '../common/shared-proxy.js';
import { executeFull } from '../linux/exec.js';
import { pidAlive, readCmdline } from '../linux/external-process.js';
import { linkStates, netnsPresent } from '../linux/ip-lib.js';
import { loadNetnsSocket } from '../linux/netns-socket.js';
import { nativeAddonPath } from '../linux/native-addon.js';
import { IptablesManager } from '../linux/iptables.js';
import { metadataMangleRules, metadataNatRules, metadataFilterRules, METADATA_IP } from '../linux/metadata-driver.js';
import { dhcpNamespace, routerDeviceName, routerNamespace, tapDeviceName } from '../linux/names.js';

export type HopStatus = 'ok' | 'fail' | 'skip';

export interface Hop {
  hop: string;
  status: HopStatus;
  detail: string;
  /** What to do about it (failures only). */
  fix?: string;
}

export interface Target {
  kind: 'router' | 'network';
  id: string;
  /** The guest's address (needed from the lookup on). */
  ip?: string;
}

/** What the doctor reads from the agents' config files. */
export interface DoctorConf {
  l3StatePath: string;
  dhcpStatePath: string;
  metadataPort: number;
  metadataProxySocket: string;
  metadataMark: string;
  novaUrl: string;
  /** The metadata agent's metadata_proxy_shared_secret. */
  sharedSecret: string;
}

interface Ctx {
  conf: DoctorConf;
  client: QuantumClient;
  target: Target;
  ns: string;
  port: number;
  host: string;
}

const ok = (hop: string, detail: string): Hop => ({ hop, status: 'ok', detail });
const fail = (hop: string, detail: string, fix: string): Hop => ({ hop, status: 'fail', detail, fix });
const skip = (hop: string, detail: string): Hop => ({ hop, status: 'skip', detail });

/** An HTTP exchange over a Unix socket or TCP, with a timeout; status and body, or the error. */
function http(o: { socketPath?: string; url?: string; path: string; headers: Record<string, string>; timeoutMs?: number }): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const u = o.url ? new URL(o.url) : undefined;
    const req = httpRequest(
      {
        ...(o.socketPath ? { socketPath: o.socketPath } : { host: u!.hostname.replace(/^\[|\]$/g, ''), port: Number(u!.port || 80) }),
        path: o.path,
        method: 'GET',
        headers: { connection: 'close', ...o.headers },
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.setTimeout(o.timeoutMs ?? 5000, () => req.destroy(new Error('timed out')));
    req.on('error', (e) => resolve({ error: (e as NodeJS.ErrnoException).code ?? e.message }));
    req.end();
  });
}

function checkNamespace(c: Ctx): Hop {
  const hop = 'namespace';
  if (netnsPresent(c.ns)) return ok(hop, `${c.ns} exists`);
  return fail(hop, `${c.ns} does not exist`, c.target.kind === 'router' ? 'is the router scheduled to an L3 agent on this node (quantum l3-agent-list-hosting-router) and is that agent running? its log says why it did not build the namespace' : 'is the network scheduled to a DHCP agent on this node (quantum dhcp-agent-list-hosting-net) with enable_isolated_metadata, and is that agent running?');
}

async function checkDevices(c: Ctx, ports: Port[], subnets: Map<string, Subnet>): Promise<Hop> {
  const hop = 'devices';
  if (!netnsPresent(c.ns)) return skip(hop, 'no namespace');
  const links = await linkStates(c.ns);
  if (c.target.kind === 'router') {
    const ifaces = ports.filter((p) => p.device_id === c.target.id && ROUTER_INTERFACE_OWNERS.includes(p.device_owner));
    if (!ifaces.length) return fail(hop, `router ${c.target.id} has no interface port in quantum-server`, 'add the subnet to the router: quantum router-interface-add ROUTER SUBNET');
    for (const p of ifaces) {
      const dev = routerDeviceName(p.id);
      const l = links.get(dev);
      if (!l) return fail(hop, `${dev} (port ${p.id}) is missing in ${c.ns}`, 'the L3 agent did not plug the interface: check its log, or restart it to resync');
      if (!l.up) return fail(hop, `${dev} is down`, `ip netns exec ${c.ns} ip link set ${dev} up (and find out who downed it)`);
      for (const f of p.fixed_ips) {
        const s = subnets.get(f.subnet_id);
        const cidr = `${f.ip_address}/${s?.cidr.split('/')[1] ?? '?'}`;
        if (!l.cidrs.includes(cidr)) return fail(hop, `${dev} lacks ${cidr}`, 'the L3 agent did not configure the address: check its log, or restart it to resync');
      }
    }
    return ok(hop, ifaces.map((p) => `${routerDeviceName(p.id)} up with ${p.fixed_ips.map((f) => f.ip_address).join(', ')}`).join('; '));
  }
  const tap = [...links.entries()].find(([n]) => n.startsWith('tap'));
  if (!tap) return fail(hop, `no tap device in ${c.ns}`, 'the DHCP agent did not plug its port: check its log');
  if (!tap[1].up) return fail(hop, `${tap[0]} is down`, `ip netns exec ${c.ns} ip link set ${tap[0]} up`);
  if (!tap[1].cidrs.includes(`${METADATA_IP}/32`)) return fail(hop, `${tap[0]} lacks ${METADATA_IP}/32`, 'the network is not served as isolated: enable_isolated_metadata = True (or force_metadata) in dhcp_agent.ini, or its subnets are routed (then the router path serves metadata)');
  return ok(hop, `${tap[0]} up with ${tap[1].cidrs.join(', ')}`);
}

async function checkRules(c: Ctx): Promise<Hop> {
  const hop = 'iptables';
  if (!netnsPresent(c.ns)) return skip(hop, 'no namespace');
  if (c.target.kind === 'network') return ok(hop, 'none needed (the proxy listens on 169.254.169.254:80 itself)');
  const w = 'quantum-l3-agent';
  const want: Array<[string, string, string]> = [
    ...metadataMangleRules(c.conf.metadataMark).map(([ch, r]): [string, string, string] => ['mangle', ch, r]),
    ...metadataNatRules(c.port).map(([ch, r]): [string, string, string] => ['nat', ch, r]),
    ...metadataFilterRules(c.port, c.conf.metadataMark).map(([ch, r]): [string, string, string] => ['filter', ch, r]),
  ];
  for (const t of ['mangle', 'nat', 'filter'] as const) {
    const rules = await IptablesManager.readRules(t, c.ns);
    for (const [table, chain, rule] of want.filter((x) => x[0] === t)) {
      const line = `-A ${w}-${chain} ${rule}`;
      if (!rules.includes(line)) return fail(hop, `missing in ${table}: ${line}`, `restart the L3 agent (it re-applies its rules to every router at start), or: ip netns exec ${c.ns} iptables -t ${table} ${line}`);
    }
    const jump = t === 'filter' ? '-A INPUT -j quantum-l3-agent-INPUT' : `-A PREROUTING -j ${w}-PREROUTING`;
    if (!rules.includes(jump)) return fail(hop, `missing in ${t}: ${jump}`, 'restart the L3 agent to re-apply its rules');
  }
  return ok(hop, `mark, REDIRECT 80 → ${c.port}, INPUT accept/drop in place`);
}

/** The proxy of this namespace: a per-namespace process by pid file, or the shared one's listener. */
function checkProxyProcess(c: Ctx): Hop {
  const hop = 'proxy process';
  const statePath = c.target.kind === 'router' ? c.conf.l3StatePath : c.conf.dhcpStatePath;
  const name = c.target.kind === 'router' ? 'quantum-l3-agent' : 'quantum-dhcp-agent';
  const pidFile = join(statePath, 'external', 'pids', `${c.target.id}.pid`);
  const readPid = (f: string) => {
    try {
      const n = Number.parseInt(readFileSync(f, 'utf8').trim(), 10);
      return Number.isInteger(n) && n > 0 ? n : undefined;
    } catch {
      return undefined;
    }
  };
  const pid = readPid(pidFile);
  if (pid !== undefined) {
    if (pidAlive(pid) && readCmdline(pid)?.includes(c.target.id)) return ok(hop, `quantum-ns-metadata-proxy pid ${pid} (per-namespace)`);
    return fail(hop, `the pid file ${pidFile} names ${pid}, which is not running`, `the agent's process monitor respawns it within check_child_processes_interval; if not, restart ${name}`);
  }
  const stateFile = sharedStateFile(statePath, name);
  if (existsSync(stateFile)) {
    const st = parseSharedState(readFileSync(stateFile, 'utf8'));
    const spid = readPid(sharedPidFile(statePath, name));
    if (!st || spid === undefined || !pidAlive(spid)) return fail(hop, `the shared metadata proxy of ${name} is not running`, `restart ${name}: it respawns or adopts its shared proxy`);
    if (!st.listeners.some((l) => l.tag === listenerTag(c.target.kind, c.target.id))) return fail(hop, `the shared proxy (pid ${spid}) has no listener for ${c.target.kind} ${c.target.id}`, `${name} has not handed this namespace to its proxy: check its log, or restart it to resync`);
    return ok(hop, `shared proxy pid ${spid} serves ${listenerTag(c.target.kind, c.target.id)}`);
  }
  return fail(hop, `no proxy for ${c.target.kind} ${c.target.id} under ${statePath} (no pid file, no shared proxy)`, `is enable_metadata_proxy on, and is the agent's state_path ${statePath}? (pass its --config-file)`);
}

async function checkListening(c: Ctx): Promise<Hop> {
  const hop = 'proxy listening';
  if (!netnsPresent(c.ns)) return skip(hop, 'no namespace');
  const r = await executeFull(['ss', '-N', c.ns, '-Hltn', `sport = :${c.port}`], { checkExit: false });
  if (r.exitCode !== 0) return fail(hop, `ss failed: ${r.stderr.trim()}`, 'is iproute2 installed?');
  if (!r.stdout.trim()) return fail(hop, `nothing listens on port ${c.port} in ${c.ns}`, 'the proxy is not serving this namespace: see the proxy process hop');
  return ok(hop, `listening: ${r.stdout.trim().split(/\s+/)[3] ?? `:${c.port}`}`);
}

/** One HTTP request over a connection made inside the namespace; the status line's code, or why not. */
function probe(fd: number, timeoutMs = 5000): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    const sock = new Socket({ fd, readable: true, writable: true });
    let buf = '';
    const done = (r: { status: number } | { error: string }) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf);
      if (m) done({ status: Number(m[1]) });
      else if (buf.length > 64 || buf.includes('\n')) done({ error: `not HTTP: ${JSON.stringify(buf.slice(0, 40))}` });
    });
    sock.on('error', (e) => done({ error: e.message }));
    sock.on('end', () => done({ error: 'closed without an answer' }));
    sock.write(`GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: ${METADATA_IP}\r\nConnection: close\r\n\r\n`);
  });
}

async function checkFromNamespace(c: Ctx): Promise<Hop> {
  const hop = 'request in namespace';
  if (!netnsPresent(c.ns)) return skip(hop, 'no namespace');
  // A router's INPUT rules drop the proxy port unless the packet carries the metadata mark, as a guest's
  // redirected request does: the probe sets it on its socket (SO_MARK).
  const host = c.target.kind === 'router' ? '127.0.0.1' : METADATA_IP;
  const mark = c.target.kind === 'router' ? Number(c.conf.metadataMark) : 0;
  let fd: number;
  try {
    fd = loadNetnsSocket(nativeAddonPath).connectInNamespace(`/run/netns/${c.ns}`, host, c.port, mark);
  } catch (e) {
    return fail(hop, `cannot connect to ${host}:${c.port} inside ${c.ns}: ${errorMessage(e)}`, 'the proxy is not accepting connections in the namespace: see its log');
  }
  const r = await probe(fd);
  if ('status' in r) return ok(hop, `the proxy answered ${r.status} to a request made inside ${c.ns}`);
  return fail(hop, `${host}:${c.port} inside ${c.ns}: ${r.error}`, 'the proxy accepts but does not answer: check its log (quantum-ns-metadata-proxy-<id>.log, or <agent>-shared.log)');
}

async function checkAgentSocket(c: Ctx): Promise<Hop> {
  const hop = 'metadata agent socket';
  if (!existsSync(c.conf.metadataProxySocket)) return fail(hop, `${c.conf.metadataProxySocket} does not exist`, 'start quantum-metadata-agent (same state_path / metadata_proxy_socket as the L3 and DHCP agents)');
  const r = await http({ socketPath: c.conf.metadataProxySocket, path: '/', headers: {} });
  if ('error' in r) return fail(hop, `${c.conf.metadataProxySocket}: ${r.error}`, r.error === 'ECONNREFUSED' ? 'quantum-metadata-agent is not running (a stale socket is left): start it' : r.error === 'EACCES' ? 'the proxies cannot open the socket: metadata_proxy_socket_mode / metadata_proxy_user' : 'check quantum-metadata-agent');
  // Without identity headers the agent must refuse with 400: it answers, and it is ours.
  return ok(hop, `quantum-metadata-agent answers on ${c.conf.metadataProxySocket} (${r.status} without identity headers)`);
}

interface Identity {
  instanceId: string;
  tenantId: string;
}

/** The agent's own lookup, through quantum-server as it makes it. */
async function checkLookup(c: Ctx, allPorts: Port[]): Promise<{ hop: Hop; who?: Identity }> {
  const hop = 'lookup';
  if (!c.target.ip) return { hop: skip(hop, 'no --ip given') };
  let nets: string[];
  if (c.target.kind === 'network') nets = [c.target.id];
  else nets = [...new Set(allPorts.filter((p) => p.device_id === c.target.id && ROUTER_INTERFACE_OWNERS.includes(p.device_owner)).map((p) => p.network_id))];
  if (!nets.length) return { hop: skip(hop, `router ${c.target.id} has no interface networks (see devices)`) };
  const ports = await c.client.listPorts({ network_id: nets, fixed_ips: `ip_address=${c.target.ip}` });
  if (ports.length === 0) return { hop: fail(hop, `no port holds ${c.target.ip} on ${nets.join(', ')}`, 'the address is not allocated on this router\'s networks: is it the right router and address? (the instance may have been deleted)') };
  if (ports.length > 1) return { hop: fail(hop, `${ports.length} ports hold ${c.target.ip} on ${nets.join(', ')}`, 'two networks of one router share this address: the agent cannot tell the instances apart; remove one interface') };
  const p = ports[0]!;
  if (!p.device_id) return { hop: fail(hop, `port ${p.id} holds ${c.target.ip} but is bound to no device`, 'the port belongs to no instance (nova boot with --nic port-id= binds it)') };
  return { hop: ok(hop, `${c.target.ip} on ${p.network_id} → port ${p.id} → instance ${p.device_id}, tenant ${p.tenant_id}`), who: { instanceId: p.device_id, tenantId: p.tenant_id } };
}

async function checkNova(c: Ctx, who: Identity | undefined): Promise<Hop[]> {
  const sigHop = 'nova signature';
  const mdHop = 'nova metadata';
  if (!who || !c.target.ip) return [skip(sigHop, 'no instance identified'), skip(mdHop, 'no instance identified')];
  const headers = { 'X-Forwarded-For': c.target.ip, 'X-Instance-ID': who.instanceId, 'X-Tenant-ID': who.tenantId, 'X-Instance-ID-Signature': signInstanceId(c.conf.sharedSecret, who.instanceId) };
  const r = await http({ url: c.conf.novaUrl, path: '/latest/meta-data/instance-id', headers });
  if ('error' in r) return [fail(sigHop, `${c.conf.novaUrl}: ${r.error}`, 'nova-api (metadata) is not reachable from this node: nova_metadata_host / nova_metadata_port in metadata_agent.ini, and is nova-api-metadata running?'), skip(mdHop, 'Nova unreachable')];
  if (r.status === 403) return [fail(sigHop, 'Nova refused the signature (403)', 'metadata_proxy_shared_secret in metadata_agent.ini and [neutron] metadata_proxy_shared_secret in nova.conf differ: make them the same'), skip(mdHop, 'signature refused')];
  if (r.status === 400 && /X-Instance-ID/.test(r.body)) return [fail(sigHop, `Nova did not take the proxy headers: ${r.body.trim().split('\n').pop()}`, '[neutron] service_metadata_proxy = True in nova.conf'), skip(mdHop, 'headers refused')];
  const sig = ok(sigHop, `Nova accepted the signature made with metadata_agent.ini's secret`);
  if (r.status === 200) return [sig, ok(mdHop, `Nova answers for ${who.instanceId}: instance-id ${r.body.trim()}`)];
  if (r.status === 404) return [sig, fail(mdHop, `Nova has no metadata for ${who.instanceId} (404)`, 'the instance is unknown to Nova (deleted, or its port was created outside Nova) or belongs to another project than the port')];
  return [sig, fail(mdHop, `Nova answered ${r.status}`, 'see nova-api\'s log')];
}

async function checkThroughAgent(c: Ctx): Promise<Hop> {
  const hop = 'through the agent';
  if (!c.target.ip) return skip(hop, 'no --ip given');
  if (!existsSync(c.conf.metadataProxySocket)) return skip(hop, 'no agent socket');
  const idHeader = c.target.kind === 'router' ? 'X-Neutron-Router-ID' : 'X-Neutron-Network-ID';
  const r = await http({ socketPath: c.conf.metadataProxySocket, path: '/latest/meta-data/instance-id', headers: { 'X-Forwarded-For': c.target.ip, [idHeader]: c.target.id } });
  if ('error' in r) return fail(hop, r.error, 'see the metadata agent socket hop');
  if (r.status === 200) return ok(hop, `the agent answers 200 as the proxy would be answered (instance-id ${r.body.trim()})`);
  return fail(hop, `the agent answered ${r.status}`, r.status === 503 ? 'the agent cannot reach quantum-server or Nova: quantum_url, nova_metadata_host in its config' : 'see quantum-metadata-agent\'s log for this request');
}

/** Every hop, in order. */
export async function diagnose(conf: DoctorConf, client: QuantumClient, target: Target): Promise<Hop[]> {
  const c: Ctx = {
    conf,
    client,
    target,
    ns: target.kind === 'router' ? routerNamespace(target.id) : dhcpNamespace(target.id),
    port: target.kind === 'router' ? conf.metadataPort : 80,
    host: target.kind === 'router' ? '0.0.0.0' : METADATA_IP,
  };
  const hops: Hop[] = [];
  const guard = async (name: string, f: () => Promise<Hop | Hop[]> | Hop) => {
    try {
      const r = await f();
      hops.push(...(Array.isArray(r) ? r : [r]));
    } catch (e) {
      hops.push(fail(name, `check failed: ${errorMessage(e)}`, 'run as root, with the agents\' config files'));
    }
  };
  let ports: Port[] = [];
  let subnets = new Map<string, Subnet>();
  try {
    ports = target.kind === 'router' ? await client.listPorts({ device_id: target.id }) : await client.listPorts({ network_id: target.id });
    const sids = [...new Set(ports.flatMap((p) => p.fixed_ips.map((f) => f.subnet_id)))];
    subnets = new Map((sids.length ? await client.listSubnets({ id: sids }) : []).map((s) => [s.id, s]));
  } catch (e) {
    hops.push(fail('quantum-server', errorMessage(e), 'quantum_url in the agents\' config: is quantum-server running and reachable?'));
    return hops;
  }
  hops.push(checkNamespace(c));
  await guard('devices', () => checkDevices(c, ports, subnets));
  await guard('iptables', () => checkRules(c));
  await guard('proxy process', () => checkProxyProcess(c));
  // Each failure is reported where it starts: the hops that depend on a failed one are skipped.
  const failed = (name: string) => hops.some((h) => h.hop === name && h.status === 'fail');
  if (failed('proxy process')) hops.push(skip('proxy listening', 'no proxy'), skip('request in namespace', 'no proxy'));
  else {
    await guard('proxy listening', () => checkListening(c));
    if (failed('proxy listening')) hops.push(skip('request in namespace', 'nothing listens'));
    else await guard('request in namespace', () => checkFromNamespace(c));
  }
  await guard('metadata agent socket', () => checkAgentSocket(c));
  let who: Identity | undefined;
  await guard('lookup', async () => {
    const r = await checkLookup(c, ports);
    who = r.who;
    return r.hop;
  });
  await guard('nova', () => checkNova(c, who));
  // The end-to-end confirmation: only meaningful when every hop before it works.
  if (hops.some((h) => h.status === 'fail')) hops.push(skip('through the agent', 'an earlier hop is broken'));
  else await guard('through the agent', () => checkThroughAgent(c));
  return hops;
}

/** --instance: the router (or isolated network) and address its first port is reached through. */
export async function targetsOfInstance(client: QuantumClient, instanceId: string): Promise<Target[]> {
  const ports = await client.listPorts({ device_id: instanceId });
  const out: Target[] = [];
  for (const p of ports) {
    for (const f of p.fixed_ips) {
      const routers = await client.listPorts({ network_id: p.network_id, device_owner: ROUTER_INTERFACE_OWNERS });
      const r = routers.find((x) => x.fixed_ips.some((y) => y.subnet_id === f.subnet_id));
      out.push(r ? { kind: 'router', id: r.device_id, ip: f.ip_address } : { kind: 'network', id: p.network_id, ip: f.ip_address });
    }
  }
  return out;
}
