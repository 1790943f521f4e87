// quantum-dhcp-agent: per network with DHCP-enabled subnets, a DHCP port from quantum-server, a qdhcp-<id>
// namespace holding that port's tap device, dnsmasq serving the network's fixed IPs from hosts/opts files,
// and — for isolated networks (reference §5) — 169.254.169.254 on the tap with a metadata proxy on port 80.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError, errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { DEVICE_OWNER_DHCP, type QuantumClient, type Network, type Port, type Subnet } from '../common/quantum-client.js';
import { AgentLoop, metadataProxyManager } from '../linux/agent-common.js';
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
import { initL3, plug, unplug } from '../linux/interface.js';
import { linkList, netnsDelete, netnsEnsure, netnsList, routeDelete, routeList, routeReplace } from '../linux/ip-lib.js';
import { bridgeName, dhcpNamespace, dhcpRootDeviceName, tapDeviceName, DHCP_ROOT_PREFIX, TAP_PREFIX } from '../linux/names.js';
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

interface NetState {
  id: string;
  ns: string;
  portId?: string;
  networkFingerprint?: string;
  dnsmasq?: ProcessManager;
  dnsmasqArgv?: (pidFile: string) => string[];
  proxy?: ProcessManager;
  proxyUuid?: string;
}

export class DhcpAgent extends AgentLoop<DhcpAgentConf> {
  readonly networks = new Map<string, NetState>();
  private firstSync = true;
  private fullSync = true;
  syncs = 0;
  private counts = { networks: 0, subnets: 0, ports: 0 };

  constructor(conf: DhcpAgentConf, log: Logger, deps: { client?: QuantumClient } = {}) {
    super(conf, log, { binary: BINARY, topic: TOPIC, agent_type: AGENT_TYPE, name: 'DHCP agent' }, deps);
  }

  protected override reportConfigurations(): Record<string, unknown> {
    const d = this.conf.DEFAULT;
    return {
      dhcp_driver: d.dhcp_driver,
      use_namespaces: true,
      dhcp_lease_duration: d.dhcp_lease_duration,
      enable_isolated_metadata: d.enable_isolated_metadata,
      force_metadata: d.force_metadata,
      ...this.counts,
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

  override async sync(): Promise<void> {
    let networks: Network[];
    let subnets: Subnet[];
    let ports: Port[];
    try {
      networks = await this.client.listNetworks();
      subnets = await this.client.listSubnets();
      ports = await this.client.listPorts();
    } catch (e) {
      this.fullSync = true;
      this.log.error({ err: errorMessage(e) }, 'Unable to sync network state; full resync at the next interval');
      return;
    }
    const subsByNet = new Map<string, Subnet[]>();
    for (const s of subnets) subsByNet.set(s.network_id, [...(subsByNet.get(s.network_id) ?? []), s]);
    const portsByNet = new Map<string, Port[]>();
    for (const p of ports) portsByNet.set(p.network_id, [...(portsByNet.get(p.network_id) ?? []), p]);
    const wanted = networks.filter((n) => n.admin_state_up && dhcpSubnets((subsByNet.get(n.id) ?? []).filter((s) => s.ip_version === 4)).length > 0);
    const wantedIds = new Set(wanted.map((n) => n.id));
    let failed = false;

    const stale = new Set([...this.networks.keys()].filter((id) => !wantedIds.has(id)));
    // Networks served before a restart (or whose teardown failed once) are found by their conf dir.
    for (const id of this.ownedNetworks()) if (!wantedIds.has(id)) stale.add(id);
    for (const id of stale) {
      try {
        await this.disableNetwork(id);
      } catch (e) {
        failed = true;
        this.log.error({ network_id: id, err: errorMessage(e) }, 'Unable to disable dhcp for network');
      }
    }
    for (const n of wanted) {
      try {
        await this.processNetwork(n, subsByNet.get(n.id) ?? [], portsByNet.get(n.id) ?? []);
      } catch (e) {
        failed = true;
        const st = this.networks.get(n.id);
        if (st) st.networkFingerprint = undefined;
        this.log.error({ network_id: n.id, err: errorMessage(e) }, 'Unable to enable dhcp for network');
      }
    }
    this.counts = { networks: wanted.length, subnets: wanted.reduce((a, n) => a + dhcpSubnets(subsByNet.get(n.id) ?? []).length, 0), ports: wanted.reduce((a, n) => a + (portsByNet.get(n.id)?.length ?? 0), 0) };
    this.firstSync = false;
    this.fullSync = failed;
    this.syncs++;
  }

  /** Find or create this host's DHCP port on the network, with a fixed IP on every DHCP subnet. */
  private async ensureDhcpPort(n: Network, subnets: Subnet[], ports: Port[]): Promise<Port> {
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

  private async processNetwork(n: Network, subnets: Subnet[], ports: Port[]): Promise<void> {
    const d = this.conf.DEFAULT;
    const ctx = { log: this.log };
    const v4 = subnets.filter((s) => s.ip_version === 4);
    const port = await this.ensureDhcpPort(n, v4, ports);
    const metaConf = { enable_isolated_metadata: d.enable_isolated_metadata, force_metadata: d.force_metadata, enable_metadata_network: d.enable_metadata_network };
    const metadata = shouldEnableMetadata(metaConf, v4, ports);
    const fingerprint = JSON.stringify([n.mtu, v4, ports.map((p) => [p.id, p.mac_address, p.fixed_ips, p.device_owner, p.device_id])]);
    let st = this.networks.get(n.id);
    if (st && !this.fullSync && st.networkFingerprint === fingerprint && st.dnsmasq?.active && (!metadata || st.proxy?.active)) return;

    const confDir = dhcpConfDir(d.state_path, n.id);
    // The conf dir marks the network as ours before anything else exists (restart cleanup relies on it).
    mkdirSync(confDir, { recursive: true, mode: 0o755 });
    const ns = dhcpNamespace(n.id);
    if (!st) {
      st = { id: n.id, ns };
      this.networks.set(n.id, st);
      this.log.info({ network_id: n.id, namespace: ns }, 'enabling dhcp for network');
    }
    await netnsEnsure(ns, ctx);

    // The DHCP port's device: tap<port[:11]> in the namespace, ns-<port[:11]> on the bridge.
    const device = tapDeviceName(port.id);
    if (st.portId && st.portId !== port.id) await unplug({ rootDevice: dhcpRootDeviceName(st.portId), namespace: ns, device: tapDeviceName(st.portId) }, ctx);
    await plug({ networkId: n.id, namespace: ns, device, rootDevice: dhcpRootDeviceName(port.id), mac: port.mac_address, mtu: n.mtu || undefined }, ctx);
    st.portId = port.id;
    await this.removeStaleTaps(ns, device);
    const subById = new Map(v4.map((s) => [s.id, s]));
    const cidrs = port.fixed_ips.filter((f) => subById.has(f.subnet_id)).map((f) => `${f.ip_address}/${subById.get(f.subnet_id)!.cidr.split('/')[1]}`);
    if (metadata) cidrs.push(METADATA_CIDR);
    await initL3(device, cidrs, ns, ctx);
    // Default route through the first subnet with a gateway (Neutron's DeviceManager does the same).
    const gw = dhcpSubnets(v4).find((s) => s.gateway_ip)?.gateway_ip;
    if (gw) await routeReplace('default', gw, device, ns, ctx);
    else if ((await routeList(ns, ctx)).some((r) => r.startsWith('default'))) await routeDelete('default', ns, ctx);

    // dnsmasq: files first, then start / reload / restart.
    const dhcpIpBySubnet = new Map(port.fixed_ips.map((f) => [f.subnet_id, f.ip_address]));
    const hostsChanged = writeIfChanged(join(confDir, 'host'), buildHostsFile(ports, v4, d.dhcp_domain));
    const optsChanged = writeIfChanged(join(confDir, 'opts'), buildOptsFile({ subnets: v4, ports, dhcpIpBySubnet, conf: metaConf }));
    const argvFor = (pidFile: string) =>
      buildDnsmasqArgv({ networkId: n.id, confDir, interfaceName: device, subnets: v4, leaseDuration: d.dhcp_lease_duration, domain: d.dhcp_domain, leaseMax: d.dnsmasq_lease_max ?? 2 ** 24, configFile: d.dnsmasq_config_file }, pidFile);
    // The manager (shared with the monitor) always starts dnsmasq with the arguments of the latest sync.
    st.dnsmasqArgv = argvFor;
    const state = st;
    if (!st.dnsmasq) st.dnsmasq = new ProcessManager({ uuid: n.id, statePath: d.state_path, pidFile: join(confDir, 'pid'), service: DNSMASQ_SERVICE, namespace: ns, pidFileWriter: 'process', cmd: (pf) => state.dnsmasqArgv!(pf), log: this.log });
    const dm = st.dnsmasq;
    if (dm.active) {
      const running = readCmdline(dm.pid!);
      const wanted = argvFor(dm.pidFile).join(' ');
      if (running !== wanted) {
        this.log.info({ network_id: n.id, running, wanted }, 'dnsmasq arguments changed; restarting');
        await dm.disable();
        await dm.enable();
      } else if (hostsChanged || optsChanged) {
        this.log.info({ network_id: n.id }, 'reloading dnsmasq allocations (SIGHUP)');
        dm.reload();
      }
    } else {
      await dm.enable();
    }
    this.monitor.register(dm);

    // Isolated metadata proxy.
    if (metadata) {
      const { routerId, several } = metadataRouterId(metaConf, ports);
      if (several) this.log.warn({ network_id: n.id }, 'There is more than one router on the metadata network; using the first');
      const uuid = routerId ?? n.id;
      if (st.proxy && st.proxyUuid !== uuid) await this.stopProxy(st);
      if (!st.proxy) {
        st.proxyUuid = uuid;
        st.proxy = metadataProxyManager({ uuid, namespace: ns, conf: d, port: METADATA_DEFAULT_PORT, ...(routerId ? { routerId } : { networkId: n.id }), bindAddress: METADATA_IP, log: this.log });
      }
      await st.proxy.enable();
      this.monitor.register(st.proxy);
    } else if (st.proxy || this.firstSync) {
      await this.stopProxy(st);
    }
    st.networkFingerprint = fingerprint;
  }

  private async stopProxy(st: NetState): Promise<void> {
    const uuid = st.proxyUuid ?? st.id;
    this.monitor.unregister(uuid);
    const pm = st.proxy ?? new ProcessManager({ uuid, statePath: this.conf.DEFAULT.state_path, cmd: () => [] });
    await pm.disable();
    st.proxy = undefined;
    st.proxyUuid = undefined;
  }

  /** tap devices of earlier DHCP ports (e.g. recreated while we were down). */
  private async removeStaleTaps(ns: string, keep: string): Promise<void> {
    for (const l of await linkList(ns, { log: this.log })) {
      if (l.name.startsWith(TAP_PREFIX) && l.name !== keep) {
        await unplug({ rootDevice: `${DHCP_ROOT_PREFIX}${l.name.slice(TAP_PREFIX.length)}`, namespace: ns, device: l.name }, { log: this.log });
      }
    }
  }

  /** Stop serving a network: proxy, dnsmasq, the DHCP port, devices, namespace, files. */
  async disableNetwork(id: string): Promise<void> {
    const d = this.conf.DEFAULT;
    const ctx = { log: this.log };
    const st = this.networks.get(id) ?? { id, ns: dhcpNamespace(id) };
    this.log.info({ network_id: id }, 'disabling dhcp for network');
    await this.stopProxy(st);
    this.monitor.unregister(id, DNSMASQ_SERVICE);
    const confDir = dhcpConfDir(d.state_path, id);
    await (st.dnsmasq ?? new ProcessManager({ uuid: id, statePath: d.state_path, pidFile: join(confDir, 'pid'), service: DNSMASQ_SERVICE, cmd: () => [] })).disable();
    if ((await netnsList(ctx)).includes(st.ns)) {
      for (const l of await linkList(st.ns, ctx)) {
        if (!l.name.startsWith(TAP_PREFIX)) continue;
        await unplug({ rootDevice: `${DHCP_ROOT_PREFIX}${l.name.slice(TAP_PREFIX.length)}`, namespace: st.ns, device: l.name, bridge: bridgeName(id) }, ctx);
      }
      await netnsDelete(st.ns, ctx);
    }
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
