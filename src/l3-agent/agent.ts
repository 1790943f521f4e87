// quantum-l3-agent: keeps one qrouter-<id> namespace per router in step with quantum-server — qr- devices
// plugged into each network's bridge, the metadata iptables rules of Neutron's MetadataDriver, and one
// supervised quantum-ns-metadata-proxy per router.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { ROUTER_INTERFACE_OWNERS, type QuantumClient, type Port, type Router, type Subnet } from '../common/quantum-client.js';
import { AgentLoop, metadataProxyManager } from '../linux/agent-common.js';
import { ProcessManager } from '../linux/external-process.js';
import { initL3, plug, unplug } from '../linux/interface.js';
import { linkList, netnsDelete, netnsEnsure, netnsList, sysctlSet } from '../linux/ip-lib.js';
import { IptablesManager } from '../linux/iptables.js';
import { bridgeName, routerDeviceName, routerIdFromNamespace, routerNamespace, tapDeviceName, ROUTER_DEV_PREFIX, TAP_PREFIX } from '../linux/names.js';
import type { L3AgentConf } from './opts.js';

export const BINARY = 'quantum-l3-agent';
export const AGENT_TYPE = 'L3 agent';
export const TOPIC = 'l3_agent';
export const METADATA_IP = '169.254.169.254';

interface PortState {
  networkId: string;
  mac: string;
  cidrs: string[];
}

interface RouterInfo {
  id: string;
  ns: string;
  ports: Map<string, PortState>;
  iptables: IptablesManager;
  proxy?: ProcessManager;
}

/** The rules of reference §4 (Zed), in iptables-save's canonical spelling so they read back identically. */
export function metadataFilterRules(port: number, mark: string): Array<[string, string]> {
  return [
    ['INPUT', `-m mark --mark ${mark}/0xffff -j ACCEPT`],
    ['INPUT', `-p tcp -m tcp --dport ${port} -j DROP`],
  ];
}
export const metadataNatRules = (port: number): Array<[string, string]> => [['PREROUTING', `-d ${METADATA_IP}/32 -i ${ROUTER_DEV_PREFIX}+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports ${port}`]];
export const metadataMangleRules = (mark: string): Array<[string, string]> => [['PREROUTING', `-d ${METADATA_IP}/32 -i ${ROUTER_DEV_PREFIX}+ -p tcp -m tcp --dport 80 -j MARK --set-xmark ${mark}/0xffff`]];

export interface L3AgentDeps {
  client?: QuantumClient;
}

export class L3Agent extends AgentLoop<L3AgentConf> {
  readonly routers = new Map<string, RouterInfo>();
  private fullSync = true;
  private readonly stateFile: string;
  private readonly mark: string;
  /** Syncs completed, for tests and the state report. */
  syncs = 0;
  lastError: string | undefined;

  constructor(conf: L3AgentConf, log: Logger, deps: L3AgentDeps = {}) {
    super(conf, log, { binary: BINARY, topic: TOPIC, agent_type: AGENT_TYPE, name: 'L3 agent' }, deps);
    const d = conf.DEFAULT;
    this.stateFile = join(d.state_path, 'l3-agent', 'routers.json');
    this.mark = `0x${Number(d.metadata_access_mark).toString(16)}`;
  }

  protected override reportConfigurations(): Record<string, unknown> {
    const d = this.conf.DEFAULT;
    return {
      use_namespaces: true,
      router_id: '',
      handle_internal_only_routers: true,
      gateway_external_network_id: '',
      interface_driver: d.interface_driver,
      routers: this.routers.size,
      interfaces: [...this.routers.values()].reduce((n, r) => n + r.ports.size, 0),
      ex_gw_ports: 0,
      floating_ips: 0,
      enable_metadata_proxy: d.enable_metadata_proxy,
      metadata_port: d.metadata_port,
    };
  }

  // ---- state file: the routers whose namespaces this agent made ----

  private readOwned(): Set<string> {
    try {
      const j = JSON.parse(readFileSync(this.stateFile, 'utf8')) as { routers?: unknown };
      return new Set(Array.isArray(j.routers) ? j.routers.filter((x): x is string => typeof x === 'string') : []);
    } catch {
      return new Set();
    }
  }

  private writeOwned(ids: Set<string>): void {
    mkdirSync(dirname(this.stateFile), { recursive: true });
    writeFileSync(`${this.stateFile}.tmp`, `${JSON.stringify({ routers: [...ids].sort() }, null, 1)}\n`);
    renameSync(`${this.stateFile}.tmp`, this.stateFile);
  }

  private markOwned(id: string, owned: boolean): void {
    const s = this.readOwned();
    if (owned === s.has(id)) return;
    if (owned) s.add(id);
    else s.delete(id);
    this.writeOwned(s);
  }

  // ---- sync ----

  /** One pass: fetch routers and their interface ports, converge every namespace. */
  override async sync(): Promise<void> {
    let routers: Router[];
    let ports: Port[];
    let subnets: Subnet[];
    try {
      routers = (await this.client.listRouters()).filter((r) => r.admin_state_up);
      ports = routers.length ? await this.client.listPorts({ device_owner: ROUTER_INTERFACE_OWNERS, device_id: routers.map((r) => r.id) }) : [];
      const subnetIds = [...new Set(ports.flatMap((p) => p.fixed_ips.map((f) => f.subnet_id)))];
      subnets = subnetIds.length ? await this.client.listSubnets({ id: subnetIds }) : [];
    } catch (e) {
      this.fullSync = true;
      this.lastError = errorMessage(e);
      this.log.error({ err: this.lastError }, 'Failed synchronizing routers; full resync at the next interval');
      return;
    }
    const wanted = new Map(routers.map((r) => [r.id, r]));
    let failed = false;
    try {
      // Every pass, not just the first: a cleanup that failed once is retried (one `ip netns list`).
      await this.cleanupStale(wanted);
    } catch (e) {
      failed = true;
      this.log.error({ err: errorMessage(e) }, 'Failed removing stale router namespaces');
    }
    for (const [id, ri] of [...this.routers]) {
      if (wanted.has(id)) continue;
      try {
        await this.removeRouter(ri.id);
      } catch (e) {
        failed = true;
        this.log.error({ router_id: id, err: errorMessage(e) }, 'Failed removing router');
      }
    }
    const subnetById = new Map(subnets.map((s) => [s.id, s]));
    for (const r of routers) {
      try {
        await this.processRouter(r, ports.filter((p) => p.device_id === r.id), subnetById);
      } catch (e) {
        failed = true;
        this.log.error({ router_id: r.id, err: errorMessage(e) }, 'Failed processing router');
      }
    }
    this.fullSync = failed;
    this.lastError = failed ? 'router processing failed' : undefined;
    this.syncs++;
  }

  /** Namespaces this agent made (state file) for routers that no longer exist — e.g. deleted while it was down. */
  private async cleanupStale(wanted: Map<string, Router>): Promise<void> {
    const owned = this.readOwned();
    const present = new Set((await netnsList({ log: this.log })).map(routerIdFromNamespace).filter((x): x is string => !!x));
    for (const id of owned) {
      if (wanted.has(id) || this.routers.has(id)) continue;
      // destroyRouter also stops a proxy whose namespace someone else already deleted.
      if (present.has(id)) this.log.info({ router_id: id }, 'removing stale router namespace left by a previous run');
      await this.destroyRouter(id, new Map());
    }
  }

  private proxyManager(id: string, ns: string): ProcessManager {
    const d = this.conf.DEFAULT;
    return metadataProxyManager({ uuid: id, namespace: ns, conf: d, port: d.metadata_port, routerId: id, log: this.log });
  }

  private buildIptables(ns: string): IptablesManager {
    const d = this.conf.DEFAULT;
    const m = new IptablesManager({ namespace: ns, binaryName: BINARY, log: this.log });
    // The mark is installed even with the proxy off (Neutron 13.0.0), so marked traffic is never forwarded.
    for (const [c, r] of metadataMangleRules(this.mark)) m.ipv4.mangle.addRule(c, r);
    m.ipv4.filter.addChain('scope');
    m.ipv4.filter.addRule('FORWARD', '-j $scope');
    m.ipv4.filter.addRule('scope', `-m mark --mark ${this.mark}/0xffff -j DROP`);
    if (d.enable_metadata_proxy) {
      for (const [c, r] of metadataFilterRules(d.metadata_port, this.mark)) m.ipv4.filter.addRule(c, r);
      for (const [c, r] of metadataNatRules(d.metadata_port)) m.ipv4.nat.addRule(c, r);
    }
    return m;
  }

  private async processRouter(r: Router, ports: Port[], subnets: Map<string, Subnet>): Promise<void> {
    const ctx = { log: this.log };
    let ri = this.routers.get(r.id);
    const fresh = !ri || this.fullSync;
    if (!ri) {
      const ns = routerNamespace(r.id);
      // Record ownership before creating anything, so a crash half-way still leaves a namespace we may clean.
      this.markOwned(r.id, true);
      await netnsEnsure(ns, ctx);
      await sysctlSet('net.ipv4.ip_forward', 1, ns, ctx);
      ri = { id: r.id, ns, ports: new Map(), iptables: this.buildIptables(ns) };
      this.routers.set(r.id, ri);
      this.log.info({ router_id: r.id, namespace: ns }, 'router added');
    }
    if (fresh) await ri.iptables.apply();

    // Interfaces.
    const want = new Map<string, PortState>();
    for (const p of ports) {
      const cidrs: string[] = [];
      for (const f of p.fixed_ips) {
        const s = subnets.get(f.subnet_id);
        if (s) cidrs.push(`${f.ip_address}/${s.cidr.split('/')[1]}`);
      }
      want.set(p.id, { networkId: p.network_id, mac: p.mac_address, cidrs });
    }
    for (const [pid, st] of want) {
      const have = ri.ports.get(pid);
      if (!fresh && have && have.mac === st.mac && have.networkId === st.networkId && have.cidrs.join() === st.cidrs.join()) continue;
      const device = routerDeviceName(pid);
      await plug({ networkId: st.networkId, namespace: ri.ns, device, rootDevice: tapDeviceName(pid), mac: st.mac }, ctx);
      await initL3(device, st.cidrs, ri.ns, ctx);
      ri.ports.set(pid, st);
      if (!have) this.log.info({ router_id: r.id, port_id: pid, device, cidrs: st.cidrs }, 'router interface plugged');
    }
    for (const [pid, st] of [...ri.ports]) {
      if (want.has(pid)) continue;
      await unplug({ rootDevice: tapDeviceName(pid), namespace: ri.ns, device: routerDeviceName(pid), bridge: bridgeName(st.networkId) }, ctx);
      ri.ports.delete(pid);
      this.log.info({ router_id: r.id, port_id: pid }, 'router interface removed');
    }
    if (fresh) await this.removeUnknownDevices(ri.id, ri.ns, new Set([...want.keys()].map(routerDeviceName)));

    // The proxy, once per router; the monitor brings it back if it dies.
    if (this.conf.DEFAULT.enable_metadata_proxy) {
      if (!ri.proxy) ri.proxy = this.proxyManager(r.id, ri.ns);
      if (fresh || !ri.proxy.active) {
        await ri.proxy.enable();
        this.monitor.register(ri.proxy);
      }
    } else if (fresh) {
      // Proxy switched off since a previous run: its adopted copy goes.
      await this.proxyManager(r.id, ri.ns).disable();
    }
  }

  /** qr- devices in the namespace that no current port accounts for (left from before a restart). */
  private async removeUnknownDevices(routerId: string, ns: string, keep: Set<string>): Promise<void> {
    const ctx = { log: this.log };
    const links = await linkList(ns, ctx);
    const stale = links.filter((l) => l.name.startsWith(ROUTER_DEV_PREFIX) && !keep.has(l.name));
    if (!stale.length) return;
    const root = await linkList(undefined, ctx);
    for (const l of stale) {
      const rootDev = `${TAP_PREFIX}${l.name.slice(ROUTER_DEV_PREFIX.length)}`;
      const bridge = root.find((x) => x.name === rootDev)?.master;
      await unplug({ rootDevice: rootDev, namespace: ns, device: l.name, ...(bridge ? { bridge } : {}) }, ctx);
      this.log.info({ router_id: routerId, device: l.name }, 'removed stale router device');
    }
  }

  /** Router gone: proxy, pid file, rules, devices, namespace — in that order. */
  private async removeRouter(id: string): Promise<void> {
    const ri = this.routers.get(id);
    await this.destroyRouter(id, ri?.ports ?? new Map(), ri);
    this.routers.delete(id);
    this.log.info({ router_id: id }, 'router removed');
  }

  private async destroyRouter(id: string, ports: Map<string, PortState>, ri?: RouterInfo): Promise<void> {
    const ctx = { log: this.log };
    const ns = routerNamespace(id);
    this.monitor.unregister(id);
    await (ri?.proxy ?? this.proxyManager(id, ns)).disable();
    const present = (await netnsList(ctx)).includes(ns);
    if (present) {
      await (ri?.iptables ?? new IptablesManager({ namespace: ns, binaryName: BINARY, log: this.log })).clearAll();
      for (const [pid, st] of ports) await unplug({ rootDevice: tapDeviceName(pid), namespace: ns, device: routerDeviceName(pid), bridge: bridgeName(st.networkId) }, ctx);
      await this.removeUnknownDevices(id, ns, new Set());
      await netnsDelete(ns, ctx);
    }
    this.markOwned(id, false);
  }
}
