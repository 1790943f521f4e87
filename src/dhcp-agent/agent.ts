// quantum-dhcp-agent: per network scheduled to its host with DHCP-enabled subnets, a DHCP port from
// quantum-server, a qdhcp-<id> namespace holding that port's tap device, dnsmasq serving the network's fixed IPs
// from hosts/opts files, and — for isolated networks (reference §5) — 169.254.169.254 on the tap with a metadata
// proxy on port 80 (MetadataDriver). Everything is synced at start, then only the networks that change.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError, errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { DEVICE_OWNER_DHCP, DHCP_PLUGIN_TOPIC, type NetworkInfo, type Port, type QuantumClient, type Subnet } from '../common/quantum-client.js';
import type { Counter } from 'prom-client';
import type { Metrics } from '../common/metrics.js';
import { AgentLoop, inPool, type CastListener } from '../linux/agent-common.js';
import {
  METADATA_CIDR,
  METADATA_DEFAULT_PORT,
  METADATA_IP,
  buildDnsmasqArgv,
  buildHostsFile,
  buildOptsFile,
  dhcpConfDir,
  dhcpSubnets,
  metadataRouterId,
  shouldEnableMetadata,
  writeIfChanged,
} from '../linux/dnsmasq.js';
import { ProcessManager, readCmdline } from '../linux/external-process.js';
import { initL3, plug, plugFresh, unplug } from '../linux/interface.js';
import { addrAddWaitDad, addrDel, IpNamespace, rootLinkMaster, rootLinkUp } from '../linux/ip-lib.js';
import { METADATA_IPV6, MetadataDriver, type MetadataProxyMode, type SharedProxy } from '../linux/metadata-driver.js';
import { bridgeName, dhcpNamespace, dhcpRootDeviceName, tapDeviceName, DHCP_ROOT_PREFIX, TAP_PREFIX } from '../linux/names.js';
import { NamespaceOwners } from '../linux/ns-owner.js';
import { SharedMetadataProxy } from '../linux/shared-proxy.js';
import type { DhcpAgentConf } from './opts.js';

export const BINARY = 'quantum-dhcp-agent';
export const AGENT_TYPE = 'DHCP agent';
export const TOPIC = 'dhcp_agent';
export const DNSMASQ_SERVICE = 'dnsmasq';

/** RFC 4122 name-based uuid (SHA-1), as Python's uuid.uuid5. */
export function uuid5(namespace: string, name: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const h = createHash('sha1').update(ns).update(name, 'utf8').digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
export const NAMESPACE_DNS = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';

/** Neutron's get_dhcp_agent_device_id: dhcp<uuid5(DNS, host)>-<network_id>. */
export const dhcpDeviceId = (networkId: string, host: string) => `dhcp${uuid5(NAMESPACE_DNS, host)}-${networkId}`;

/** On the DHCP tap, as Neutron puts it (/64: the link's own prefix). */
const METADATA_CIDR_V6 = `${METADATA_IPV6}/64`;

/** Networks processed at once. */
const POOL = 8;

interface NetState {
  id: string;
  ns: IpNamespace;
  portId?: string;
  networkFingerprint?: string;
  dnsmasq?: ProcessManager;
  dnsmasqArgv?: (pidFile: string) => string[];
  /** The uuid its metadata proxy is known by (the network, or with enable_metadata_network its router). */
  proxyUuid?: string;
  /** The DHCP port's device as last set up (port, MAC, addresses, gateway, MTU). */
  devKey?: string;
  /** fe80::a9fe:a9fe on the tap passed DAD (undefined: not wanted or not tried on this device yet). */
  v6Metadata?: boolean;
  counts: { subnets: number; ports: number };
}

export interface DhcpAgentDeps {
  client?: QuantumClient;
  transport?: CastListener;
  metrics?: Metrics;
  shared?: SharedProxy;
}

export class DhcpAgent extends AgentLoop<DhcpAgentConf> {
  protected override readonly rpcTopic = DHCP_PLUGIN_TOPIC;
  readonly networks = new Map<string, NetState>();
  readonly driver: MetadataDriver;
  private readonly owners: NamespaceOwners;
  private dnsmasqEvents: Counter<'event'> | undefined;

  constructor(conf: DhcpAgentConf, log: Logger, deps: DhcpAgentDeps = {}) {
    super(conf, log, { binary: BINARY, topic: TOPIC, agent_type: AGENT_TYPE, name: 'DHCP agent' }, deps);
    const d = conf.DEFAULT;
    this.owners = new NamespaceOwners({ host: d.host, binary: BINARY, state_path: d.state_path });
    const mode = d.metadata_proxy_mode as MetadataProxyMode;
    // The proxies get the [metadata_rate_limiting] group as flags (agent-common.ts, shared-proxy.ts).
    const pc = { ...d, metadata_rate_limiting: conf.metadata_rate_limiting };
    const shared = deps.shared ?? (mode === 'shared' ? new SharedMetadataProxy({ name: BINARY, conf: pc, log }) : undefined);
    this.driver = new MetadataDriver({ mode, conf: pc, monitor: this.monitor, log, shared });
    const m = deps.metrics;
    if (m) {
      m.gauge('networks', 'Networks this agent serves DHCP for (a namespace and a dnsmasq each).', [], (g) => g.set(this.networks.size));
      this.dnsmasqEvents = m.counter('dnsmasq_events_total', 'dnsmasq starts, restarts (arguments changed) and reloads (SIGHUP: hosts or opts changed).', ['event']);
      this.driver.metrics(m);
    }
  }

  protected override async prepare(): Promise<void> {
    const d = this.conf.DEFAULT;
    if (d.enable_isolated_metadata || d.force_metadata) await this.driver.start();
  }

  protected override async release(): Promise<void> {
    await this.driver.stop();
  }

  protected override resourcesOfCast(method: string, args: Record<string, unknown>): string[] | 'full' {
    if (typeof args._resource_id === 'string') return [args._resource_id];
    const obj = (k: string) => (args[k] && typeof args[k] === 'object' ? (args[k] as Record<string, unknown>) : undefined);
    const net = method.startsWith('network_') ? (obj('network')?.id ?? args.network_id) : method.startsWith('subnet_') ? (obj('subnet')?.network_id ?? args.network_id) : method.startsWith('port_') ? (obj('port')?.network_id ?? args.network_id) : undefined;
    if (typeof net === 'string') return [net];
    this.log.warn({ method }, 'notification names no network; full resync');
    return 'full';
  }

  protected override reportConfigurations(): Record<string, unknown> {
    const d = this.conf.DEFAULT;
    const proxies = this.driver.counts();
    let subnets = 0;
    let ports = 0;
    for (const n of this.networks.values()) {
      subnets += n.counts.subnets;
      ports += n.counts.ports;
    }
    return {
      dhcp_driver: d.dhcp_driver,
      use_namespaces: true,
      dhcp_lease_duration: d.dhcp_lease_duration,
      enable_isolated_metadata: d.enable_isolated_metadata,
      force_metadata: d.force_metadata,
      networks: this.networks.size,
      subnets,
      ports,
      metadata_proxy_mode: proxies.mode,
      metadata_proxies: { expected: proxies.expected, alive: proxies.alive, ...(proxies.respawns !== undefined ? { respawns: proxies.respawns } : {}) },
    };
  }

  /** Networks this agent serves on this host: a directory under $state_path/dhcp is the marker. */
  private ownedNetworks(): string[] {
    try {
      return readdirSync(join(this.conf.DEFAULT.state_path, 'dhcp'), { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return [];
    }
  }

  /**
   * A network with an IPv4 DHCP subnet (dnsmasq), or, with isolated/forced metadata, an IPv6 DHCP subnet (the
   * namespace then serves metadata at fe80::a9fe:a9fe only: dnsmasq does not serve IPv6 here).
   */
  private served(n: NetworkInfo): boolean {
    const d = this.conf.DEFAULT;
    if (!n.admin_state_up) return false;
    if (dhcpSubnets(n.subnets.filter((s) => s.ip_version === 4)).length > 0) return true;
    return (d.enable_isolated_metadata || d.force_metadata) && dhcpSubnets(n.subnets.filter((s) => s.ip_version === 6)).length > 0;
  }

  /** Every network scheduled here; networks this agent served before that are no longer its own go. */
  override async fullSync(): Promise<void> {
    const nets = await this.client.rpc<NetworkInfo[]>(this.rpcTopic, 'get_active_networks_info', { host: this.conf.DEFAULT.host });
    const wanted = nets.filter((n) => this.served(n));
    const wantedIds = new Set(wanted.map((n) => n.id));
    const stale = new Set([...this.networks.keys()].filter((id) => !wantedIds.has(id)));
    // Networks served before a restart (or whose teardown failed once) are found by their conf dir.
    for (const id of this.ownedNetworks()) if (!wantedIds.has(id)) stale.add(id);
    let failed = 0;
    await inPool([...stale], POOL, async (id) => {
      try {
        await this.disableNetwork(id);
      } catch (e) {
        failed++;
        this.log.error({ network_id: id, err: errorMessage(e) }, 'Unable to disable dhcp for network');
      }
    });
    await inPool(wanted, POOL, async (n) => {
      try {
        await this.processNetwork(n);
      } catch (e) {
        failed++;
        const st = this.networks.get(n.id);
        if (st) {
          st.networkFingerprint = undefined;
          st.devKey = undefined;
        }
        this.log.error({ network_id: n.id, err: errorMessage(e) }, 'Unable to enable dhcp for network');
      }
    });
    if (failed) throw new Error(`${failed} networks failed`);
    await this.driver.reconcile();
  }

  /** Only these networks: fetched again; those no longer served here (or deleted) are torn down. */
  override async syncResources(ids: string[]): Promise<Set<string>> {
    const got = new Map((await this.client.rpc<NetworkInfo[]>(this.rpcTopic, 'get_network_info', { network_ids: ids, host: this.conf.DEFAULT.host })).map((n) => [n.id, n]));
    const failed = new Set<string>();
    await inPool(ids, POOL, async (id) => {
      const n = got.get(id);
      try {
        if (n && this.served(n)) await this.processNetwork(n);
        else if (this.networks.has(id) || existsSync(dhcpConfDir(this.conf.DEFAULT.state_path, id))) await this.disableNetwork(id);
      } catch (e) {
        failed.add(id);
        const st = this.networks.get(id);
        if (st) {
          st.networkFingerprint = undefined;
          st.devKey = undefined;
        }
        this.log.error({ network_id: id, err: errorMessage(e) }, n ? 'Unable to enable dhcp for network' : 'Unable to disable dhcp for network');
      }
    });
    return failed;
  }

  /** Find or create this host's DHCP port on the network, with a fixed IP on every DHCP subnet. */
  private async ensureDhcpPort(n: NetworkInfo, subnets: Subnet[], ports: Port[]): Promise<Port> {
    const d = this.conf.DEFAULT;
    const deviceId = dhcpDeviceId(n.id, d.host);
    const dhcpSubs = dhcpSubnets(subnets).filter((s) => s.ip_version === 4);
    let port = ports.find((p) => p.device_id === deviceId);
    if (!port) {
      port = await this.client.createPort({
        network_id: n.id,
        tenant_id: n.tenant_id,
        name: '',
        admin_state_up: true,
        device_id: deviceId,
        device_owner: DEVICE_OWNER_DHCP,
        'binding:host_id': d.host,
        fixed_ips: dhcpSubs.map((s) => ({ subnet_id: s.id })),
      });
      this.log.info({ network_id: n.id, port_id: port.id, fixed_ips: port.fixed_ips }, 'created DHCP port');
      ports.push(port);
      return port;
    }
    const have = new Set(port.fixed_ips.map((f) => f.subnet_id));
    const want = new Set(dhcpSubs.map((s) => s.id));
    const missing = [...want].filter((s) => !have.has(s));
    const extra = port.fixed_ips.filter((f) => !want.has(f.subnet_id));
    if (missing.length || extra.length) {
      const fixed = [...port.fixed_ips.filter((f) => want.has(f.subnet_id)), ...missing.map((s) => ({ subnet_id: s }))];
      const updated = await this.client.updatePort(port.id, { fixed_ips: fixed });
      ports.splice(ports.indexOf(port), 1, updated);
      this.log.info({ network_id: n.id, port_id: port.id, fixed_ips: updated.fixed_ips }, 'updated DHCP port subnets');
      port = updated;
    }
    return port;
  }

  private async processNetwork(n: NetworkInfo): Promise<void> {
    const d = this.conf.DEFAULT;
    const ctx = { log: this.log };
    const ports = [...n.ports];
    const v4 = n.subnets.filter((s) => s.ip_version === 4);
    const port = await this.ensureDhcpPort(n, v4, ports);
    const metaConf = { enable_isolated_metadata: d.enable_isolated_metadata, force_metadata: d.force_metadata, enable_metadata_network: d.enable_metadata_network };
    // Every DHCP subnet counts for the metadata decision (Neutron's should_enable_metadata takes them all).
    const metadata = shouldEnableMetadata(metaConf, n.subnets, ports);
    const v6 = n.subnets.filter((s) => s.ip_version === 6);
    const metadataV6 = metadata && v6.length > 0;
    const runDnsmasq = dhcpSubnets(v4).length > 0;
    const fingerprint = JSON.stringify([n.mtu, v4, v6, ports.map((p) => [p.id, p.mac_address, p.fixed_ips, p.device_owner, p.device_id])]);
    let st = this.networks.get(n.id);
    if (st && !st.ns.present) {
      this.log.warn({ network_id: n.id, namespace: st.ns.name }, 'DHCP namespace vanished; building it again');
      st.networkFingerprint = undefined;
      st.portId = undefined;
      st.devKey = undefined;
    }
    if (st && st.networkFingerprint === fingerprint && (!runDnsmasq || st.dnsmasq?.active) && (!metadata || (st.proxyUuid && this.driver.active(st.proxyUuid)))) return;

    const confDir = dhcpConfDir(d.state_path, n.id);
    // The conf dir marks the network as ours before anything else exists (restart cleanup relies on it).
    mkdirSync(confDir, { recursive: true, mode: 0o755 });
    const isNew = !st;
    if (!st) {
      st = { id: n.id, ns: new IpNamespace(dhcpNamespace(n.id), ctx), counts: { subnets: 0, ports: 0 } };
      this.networks.set(n.id, st);
      this.log.info({ network_id: n.id, namespace: st.ns.name }, 'enabling dhcp for network');
    }
    this.owners.claim(st.ns.name);

    // The DHCP port's device: tap<port[:11]> in the namespace, ns-<port[:11]> on the bridge.
    const device = tapDeviceName(port.id);
    const subById = new Map(v4.map((s) => [s.id, s]));
    const cidrs = port.fixed_ips.filter((f) => subById.has(f.subnet_id)).map((f) => `${f.ip_address}/${subById.get(f.subnet_id)!.cidr.split('/')[1]}`);
    if (metadata) cidrs.push(METADATA_CIDR);
    // Default route through the first subnet with a gateway (Neutron's DeviceManager does the same).
    const gw = dhcpSubnets(v4).find((s) => s.gateway_ip)?.gateway_ip;
    const devKey = JSON.stringify([port.id, port.mac_address, cidrs, gw ?? null, n.mtu]);
    // A port added to the network changes only dnsmasq's files: the device is left alone unless it changed.
    if (st.devKey !== devKey || !st.ns.present) {
      const fresh = await st.ns.ensure({ lo: false });
      const spec = { networkId: n.id, namespace: st.ns.name, device, rootDevice: dhcpRootDeviceName(port.id), mac: port.mac_address, mtu: n.mtu || undefined };
      // A fresh namespace gets its default route in the same `ip -batch` as the device (a process fewer per network).
      if (fresh) await plugFresh(spec, cidrs, ctx, ['link set lo up'], gw ? [`route replace default via ${gw} dev ${device}`] : []);
      else {
        // Adopted (agent restart) or changed: one `ip addr show` says whether the device is already right.
        const links = await st.ns.linkStates();
        const cur = links.get(device);
        const right = cur && cur.up && cur.mac === port.mac_address.toLowerCase() && sameSet(cur.cidrs, cidrs) && rootLinkUp(spec.rootDevice) && rootLinkMaster(spec.rootDevice) === bridgeName(n.id);
        const strays = [...links.keys()].filter((l) => l.startsWith(TAP_PREFIX) && l !== device);
        if (!links.get('lo')?.up) await st.ns.batch(['link set lo up']);
        if (!right || strays.length) {
          if (st.portId && st.portId !== port.id) await unplug({ rootDevice: dhcpRootDeviceName(st.portId), namespace: st.ns.name, device: tapDeviceName(st.portId) }, ctx);
          await plug(spec, ctx);
          await this.removeStaleTaps(st.ns, device);
          await initL3(device, cidrs, st.ns.name, ctx);
        }
      }
      if (gw && !fresh) await st.ns.routeReplace('default', gw, device);
      else if (!fresh && (await st.ns.routes()).some((r) => r.startsWith('default'))) await st.ns.routeDelete('default');
      st.portId = port.id;
      st.devKey = devKey;
      st.v6Metadata = undefined;
    }
    if (metadataV6 && st.v6Metadata === undefined) st.v6Metadata = await this.metadataAddressV6(st.ns, device, n.id);
    else if (!metadataV6 && st.v6Metadata) {
      await addrDel(device, METADATA_CIDR_V6, st.ns.name, ctx).catch(() => undefined);
      st.v6Metadata = undefined;
    }

    // dnsmasq: files first, then start / reload / restart.
    const dhcpIpBySubnet = new Map(port.fixed_ips.map((f) => [f.subnet_id, f.ip_address]));
    const hostsChanged = writeIfChanged(join(confDir, 'host'), buildHostsFile(ports, v4, d.dhcp_domain));
    const optsChanged = writeIfChanged(join(confDir, 'opts'), buildOptsFile({ subnets: v4, ports, dhcpIpBySubnet, conf: metaConf }));
    const argvFor = (pidFile: string) =>
      buildDnsmasqArgv({ networkId: n.id, confDir, interfaceName: device, subnets: v4, leaseDuration: d.dhcp_lease_duration, domain: d.dhcp_domain, leaseMax: d.dnsmasq_lease_max ?? 2 ** 24, configFile: d.dnsmasq_config_file }, pidFile);
    // The manager (shared with the monitor) always starts dnsmasq with the arguments of the latest sync.
    st.dnsmasqArgv = argvFor;
    const state = st;
    if (!runDnsmasq && st.dnsmasq) {
      // IPv6 subnets only: metadata is served, DHCP is not (dnsmasq would have no range to serve).
      this.monitor.unregister(n.id, DNSMASQ_SERVICE);
      await st.dnsmasq.disable();
    }
    if (runDnsmasq) {
      if (!st.dnsmasq) st.dnsmasq = new ProcessManager({ uuid: n.id, statePath: d.state_path, pidFile: join(confDir, 'pid'), service: DNSMASQ_SERVICE, namespace: st.ns.name, pidFileWriter: 'process', daemonizes: true, cmd: (pf) => state.dnsmasqArgv!(pf), log: this.log });
      const dm = st.dnsmasq;
      if (dm.active) {
        const running = readCmdline(dm.pid!);
        const wanted = argvFor(dm.pidFile).join(' ');
        if (running !== wanted) {
          this.log.info({ network_id: n.id, running, wanted }, 'dnsmasq arguments changed; restarting');
          await dm.disable();
          await dm.enable();
          this.dnsmasqEvents?.inc({ event: 'restart' });
        } else if (hostsChanged || optsChanged) {
          this.log.info({ network_id: n.id }, 'reloading dnsmasq allocations (SIGHUP)');
          dm.reload();
          this.dnsmasqEvents?.inc({ event: 'reload' });
        }
      } else {
        await dm.enable();
        this.dnsmasqEvents?.inc({ event: 'start' });
      }
      this.monitor.register(dm);
    }

    // Isolated metadata proxy.
    if (metadata) {
      const { routerId, several } = metadataRouterId(metaConf, ports);
      if (several) this.log.warn({ network_id: n.id }, 'There is more than one router on the metadata network; using the first');
      const uuid = routerId ?? n.id;
      if (st.proxyUuid && st.proxyUuid !== uuid) await this.driver.destroy(st.proxyUuid);
      st.proxyUuid = uuid;
      const v6On = metadataV6 && st.v6Metadata === true;
      await this.driver.spawn({ kind: routerId ? 'router' : 'network', id: uuid, uuid, namespace: st.ns.name, host: METADATA_IP, port: METADATA_DEFAULT_PORT, ...(v6On ? { host6: METADATA_IPV6, interface6: device } : {}) });
    } else if (st.proxyUuid || isNew) {
      // A proxy of an earlier run (the network got routed meanwhile) goes too.
      await this.driver.destroy(st.proxyUuid ?? n.id, { kind: 'network', id: n.id });
      st.proxyUuid = undefined;
    }
    st.counts = { subnets: dhcpSubnets(v4).length, ports: ports.length };
    st.networkFingerprint = fingerprint;
  }

  /**
   * fe80::a9fe:a9fe/64 on the tap, after DAD as Neutron 23.0 does: another holder on the link (a second DHCP
   * agent, a router's qr- device) makes it fail, and then it goes again and this network's metadata is IPv4 only.
   */
  private async metadataAddressV6(ns: IpNamespace, device: string, networkId: string): Promise<boolean> {
    const ctx = { log: this.log };
    const r = await addrAddWaitDad(device, METADATA_CIDR_V6, ns.name, ctx);
    if (r === 'ok') return true;
    this.log.error({ network_id: networkId, device, address: METADATA_CIDR_V6, dad: r }, 'IPv6 metadata address failed duplicate address detection: removed, serving metadata over IPv4 only');
    await addrDel(device, METADATA_CIDR_V6, ns.name, ctx).catch(() => undefined);
    return false;
  }

  /** tap devices of earlier DHCP ports (e.g. recreated while we were down). */
  private async removeStaleTaps(ns: IpNamespace, keep: string): Promise<void> {
    for (const l of await ns.links()) {
      if (l.name.startsWith(TAP_PREFIX) && l.name !== keep) {
        await unplug({ rootDevice: `${DHCP_ROOT_PREFIX}${l.name.slice(TAP_PREFIX.length)}`, namespace: ns.name, device: l.name }, { log: this.log });
      }
    }
  }

  /** Stop serving a network: proxy, dnsmasq, the DHCP port, devices, namespace, files. */
  async disableNetwork(id: string): Promise<void> {
    const d = this.conf.DEFAULT;
    const ctx = { log: this.log };
    const st = this.networks.get(id);
    const ns = st?.ns ?? new IpNamespace(dhcpNamespace(id), ctx);
    this.log.info({ network_id: id }, 'disabling dhcp for network');
    await this.driver.destroy(st?.proxyUuid ?? id, { kind: 'network', id });
    this.monitor.unregister(id, DNSMASQ_SERVICE);
    const confDir = dhcpConfDir(d.state_path, id);
    await (st?.dnsmasq ?? new ProcessManager({ uuid: id, statePath: d.state_path, pidFile: join(confDir, 'pid'), service: DNSMASQ_SERVICE, cmd: () => [] })).disable();
    if (ns.present && !this.owners.takenOver(ns.name)) {
      for (const l of await ns.links()) {
        if (!l.name.startsWith(TAP_PREFIX)) continue;
        await unplug({ rootDevice: `${DHCP_ROOT_PREFIX}${l.name.slice(TAP_PREFIX.length)}`, namespace: ns.name, device: l.name, bridge: bridgeName(id) }, ctx);
      }
      await ns.delete();
    }
    this.owners.release(ns.name);
    // Give the DHCP port back (Neutron's release_dhcp_port); a deleted network took it already.
    try {
      const ports = await this.client.listPorts({ network_id: id, device_id: dhcpDeviceId(id, d.host) });
      for (const p of ports) await this.client.deletePort(p.id);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) this.log.warn({ network_id: id, err: errorMessage(e) }, 'could not release the DHCP port');
    }
    if (existsSync(confDir)) rmSync(confDir, { recursive: true, force: true });
    this.networks.delete(id);
  }
}

const sameSet = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x) => b.includes(x));
