// quantum-l3-agent: keeps one qrouter-<id> namespace per router scheduled to its host in step with
// quantum-server — qr- devices plugged into each network's bridge, the metadata iptables rules and the
// router's metadata proxy (MetadataDriver) — syncing everything at start and then only the routers that change.
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { L3_PLUGIN_TOPIC, type InterfacePort, type QuantumClient, type SyncRouter } from '../common/quantum-client.js';
import type { Metrics } from '../common/metrics.js';
import { AgentLoop, inPool, type CastListener } from '../linux/agent-common.js';
import { deleteBridgeIfEmpty, initL3, plug, plugFresh, unplug } from '../linux/interface.js';
import { ipBatch, IpNamespace, netnsPresent, rootLinkMaster, rootLinkPresent, rootLinkUp, sendIpAddrAdvNotif, type LinkState } from '../linux/ip-lib.js';
import { IptablesManager } from '../linux/iptables.js';
import { METADATA_IPV6, MetadataDriver, type MetadataProxyMode, type MetadataTarget, type SharedProxy } from '../linux/metadata-driver.js';
import { bridgeName, routerDeviceName, routerIdFromNamespace, routerNamespace, tapDeviceName, ROUTER_DEV_PREFIX, NS_ROUTER_PREFIX, TAP_PREFIX } from '../linux/names.js';
import { NamespaceOwners } from '../linux/ns-owner.js';
import { SharedMetadataProxy } from '../linux/shared-proxy.js';
import type { L3AgentConf } from './opts.js';

export const BINARY = 'quantum-l3-agent';
export const AGENT_TYPE = 'L3 agent';
export const TOPIC = 'l3_agent';
export { METADATA_IP, metadataFilterRules, metadataMangleRules, metadataNatRules } from '../linux/metadata-driver.js';

/** Routers processed at once (Neutron's L3 agent uses a pool of 8 too): the work is mostly waiting on `ip`. */
const POOL = 8;
/** Adopted routers' proxies started at once: a shared listener is a few syscalls, a per-namespace proxy a process. */
const ADOPT_POOL = 16;
/** Routers fetched per sync_routers call when serving adopted ones first. */
const ADOPT_FETCH = 200;

interface PortState {
  networkId: string;
  mac: string;
  cidrs: string[];
}

interface RouterInfo {
  id: string;
  ns: IpNamespace;
  ports: Map<string, PortState>;
  iptables: IptablesManager;
  /** Has an interface on an IPv6 subnet: ip6tables metadata rules, fe80::a9fe:a9fe on its qr- devices, [::]:9697. */
  ipv6: boolean;
  /** What the router looked like when last built: an unchanged router costs no command. */
  fingerprint?: string;
}

export interface L3AgentDeps {
  client?: QuantumClient;
  transport?: CastListener;
  metrics?: Metrics;
  /** The shared metadata proxy (metadata_proxy_mode = shared). */
  shared?: SharedProxy;
}

function portState(p: InterfacePort): PortState {
  const prefix = new Map(p.subnets.map((s) => [s.id, s.cidr.split('/')[1]]));
  const cidrs = p.fixed_ips.filter((f) => prefix.has(f.subnet_id)).map((f) => `${f.ip_address}/${prefix.get(f.subnet_id)}`);
  return { networkId: p.network_id, mac: p.mac_address, cidrs };
}

export class L3Agent extends AgentLoop<L3AgentConf> {
  protected override readonly rpcTopic = L3_PLUGIN_TOPIC;
  readonly routers = new Map<string, RouterInfo>();
  readonly driver: MetadataDriver;
  private readonly owners: NamespaceOwners;
  private readonly mark: string;

  constructor(conf: L3AgentConf, log: Logger, deps: L3AgentDeps = {}) {
    super(conf, log, { binary: BINARY, topic: TOPIC, agent_type: AGENT_TYPE, name: 'L3 agent' }, deps);
    const d = conf.DEFAULT;
    this.mark = `0x${Number(d.metadata_access_mark).toString(16)}`;
    this.owners = new NamespaceOwners({ host: d.host, binary: BINARY, state_path: d.state_path });
    const mode = d.metadata_proxy_mode as MetadataProxyMode;
    // The proxies get the [metadata_rate_limiting] group as flags (agent-common.ts, shared-proxy.ts).
    const pc = { ...d, metadata_rate_limiting: conf.metadata_rate_limiting };
    const shared = deps.shared ?? (mode === 'shared' ? new SharedMetadataProxy({ name: BINARY, conf: pc, log }) : undefined);
    this.driver = new MetadataDriver({ mode, conf: pc, monitor: this.monitor, log, shared });
    const m = deps.metrics;
    if (m) {
      m.gauge('routers', 'Routers this agent serves (a namespace each).', [], (g) => g.set(this.routers.size));
      m.gauge('router_interfaces', 'Router interfaces plugged (qr- devices).', [], (g) => g.set([...this.routers.values()].reduce((n, r) => n + r.ports.size, 0)));
      this.driver.metrics(m);
    }
  }

  protected override reportConfigurations(): Record<string, unknown> {
    const d = this.conf.DEFAULT;
    const proxies = this.driver.counts();
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
      metadata_proxy_mode: proxies.mode,
      metadata_proxies: { expected: proxies.expected, alive: proxies.alive, ...(proxies.respawns !== undefined ? { respawns: proxies.respawns } : {}) },
    };
  }

  protected override async prepare(): Promise<void> {
    if (this.conf.DEFAULT.enable_metadata_proxy) await this.driver.start();
  }

  protected override async release(): Promise<void> {
    await this.driver.stop();
  }

  protected override resourcesOfCast(method: string, args: Record<string, unknown>): string[] | 'full' {
    if (typeof args._resource_id === 'string') return [args._resource_id];
    switch (method) {
      case 'routers_updated':
      case 'router_added_to_agent':
        return Array.isArray(args.routers) ? args.routers.filter((x): x is string => typeof x === 'string') : 'full';
      case 'router_deleted':
      case 'router_removed_from_agent':
        return typeof args.router_id === 'string' ? [args.router_id] : 'full';
      default:
        this.log.warn({ method }, 'unknown notification; full resync');
        return 'full';
    }
  }

  // ---- sync ----

  /** Everything scheduled here; routers this agent built that are no longer its own go. */
  override async fullSync(): Promise<void> {
    const routers = await this.client.rpc<SyncRouter[]>(this.rpcTopic, 'sync_routers', { host: this.conf.DEFAULT.host });
    const wanted = new Map(routers.map((r) => [r.id, r]));
    const stale = new Set<string>();
    for (const id of this.routers.keys()) if (!wanted.get(id)?.admin_state_up) stale.add(id);
    // Built by this agent before a restart (or a teardown that failed once), no longer scheduled here.
    for (const ns of this.owners.claimed(NS_ROUTER_PREFIX)) {
      const id = routerIdFromNamespace(ns);
      if (id && !wanted.get(id)?.admin_state_up) stale.add(id);
    }
    // Proxies of routers this agent no longer serves (e.g. failed over while it was down): their pid files say so.
    for (const id of this.driver.pidFileIds()) if (!wanted.get(id)?.admin_state_up) stale.add(id);
    let failed = 0;
    await this.serveAdoptedFirst(routers);
    await inPool([...stale], POOL, async (id) => {
      try {
        await this.removeRouter(id);
      } catch (e) {
        failed++;
        this.log.error({ router_id: id, err: errorMessage(e) }, 'Failed removing router');
      }
    });
    await inPool(routers, POOL, async (r) => {
      try {
        await this.processRouter(r);
      } catch (e) {
        failed++;
        this.log.error({ router_id: r.id, err: errorMessage(e) }, 'Failed processing router');
      }
    });
    if (failed) throw new Error(`${failed} routers failed`);
    await this.driver.reconcile();
  }

  /** A round's routers that are here but not built by this process (a failover batch) are served before any is checked. */
  protected override async beforeResourceSync(ids: string[]): Promise<void> {
    this.prefetched = undefined;
    if (!this.conf.DEFAULT.enable_metadata_proxy) return;
    const adopt = ids.filter((id) => this.adoptable(id));
    if (!adopt.length) return;
    const pre = { asked: new Set<string>(), got: new Map<string, SyncRouter>() };
    for (let i = 0; i < adopt.length; i += ADOPT_FETCH) {
      const part = adopt.slice(i, i + ADOPT_FETCH);
      const routers = await this.client.rpc<SyncRouter[]>(this.rpcTopic, 'sync_routers', { host: this.conf.DEFAULT.host, router_ids: part });
      for (const id of part) pre.asked.add(id);
      for (const r of routers) pre.got.set(r.id, r);
      this.prefetched = pre;
      await this.serveAdoptedFirst(routers);
    }
  }

  /**
   * The adopted routers of this round as beforeResourceSync fetched them: syncResources uses them instead of asking
   * again (a change cast meanwhile queues its router for the next round, so nothing newer is lost).
   */
  private prefetched: { asked: Set<string>; got: Map<string, SyncRouter> } | undefined;

  /** Only these routers: fetched again (unless this round fetched them already); those no longer scheduled here (or deleted) are torn down. */
  override async syncResources(ids: string[]): Promise<Set<string>> {
    const pre = this.prefetched;
    const need = pre ? ids.filter((id) => !pre.asked.has(id)) : ids;
    const got = new Map<string, SyncRouter>();
    if (need.length) for (const r of await this.client.rpc<SyncRouter[]>(this.rpcTopic, 'sync_routers', { host: this.conf.DEFAULT.host, router_ids: need })) got.set(r.id, r);
    if (pre) {
      for (const id of ids) {
        if (!pre.asked.delete(id)) continue;
        const r = pre.got.get(id);
        if (r) got.set(id, r);
      }
      if (!pre.asked.size) this.prefetched = undefined;
    }
    const failed = new Set<string>();
    await inPool(ids, POOL, async (id) => {
      const r = got.get(id);
      try {
        if (r && r.admin_state_up) await this.processRouter(r);
        else if (this.routers.has(id) || this.owners.claimed(routerNamespace(id)).length) await this.removeRouter(id);
      } catch (e) {
        failed.add(id);
        this.log.error({ router_id: id, err: errorMessage(e) }, r ? 'Failed processing router' : 'Failed removing router');
      }
    });
    return failed;
  }

  private buildIptables(ns: string, ipv6: boolean): IptablesManager {
    const m = new IptablesManager({ namespace: ns, binaryName: BINARY, log: this.log });
    this.declareRules(m, ipv6);
    return m;
  }

  /** The metadata rules, in ip6tables too (fe80::a9fe:a9fe/128) when the router has an IPv6 interface. */
  private declareRules(m: IptablesManager, ipv6: boolean): void {
    const d = this.conf.DEFAULT;
    for (const t of Object.values(m.ipv6)) t.clear();
    MetadataDriver.routerRules(m, { port: d.metadata_port, mark: this.mark, proxy: d.enable_metadata_proxy, ipv6 });
  }

  /**
   * Build, adopt or update one router. A router this process has not built yet gets a namespace: a new one is
   * built with the few commands a fresh namespace needs; an existing one (agent restart, failover from another
   * agent on this machine) is adopted with idempotent checks. A known router is only touched where it changed.
   */
  private async processRouter(r: SyncRouter): Promise<void> {
    const d = this.conf.DEFAULT;
    const ctx = { log: this.log };
    const want = new Map(r._interfaces.map((p) => [p.id, portState(p)]));
    const fingerprint = JSON.stringify([...want].sort(([a], [b]) => (a < b ? -1 : 1)));
    const ipv6 = [...want.values()].some((st) => st.cidrs.some(isV6Cidr));
    let ri = this.routers.get(r.id);
    if (ri && !ri.ns.present) {
      this.log.warn({ router_id: r.id, namespace: ri.ns.name }, 'router namespace vanished; building it again');
      this.routers.delete(r.id);
      ri = undefined;
    }
    const proxyOk = !d.enable_metadata_proxy || this.driver.active(r.id);
    if (ri && ri.fingerprint === fingerprint && proxyOk) return;

    let adopt: Map<string, LinkState> | undefined;
    let loPending = false;
    if (!ri) {
      const ns = new IpNamespace(routerNamespace(r.id), ctx);
      // Claimed before anything exists, so a crash half-way leaves a namespace this agent knows to clean.
      this.owners.claim(ns.name);
      const fresh = await ns.ensure({ lo: false });
      await ns.sysctl('net.ipv4.ip_forward', 1);
      // As Neutron's namespaces.py: ARP answered only on the device that holds the address, from the best local
      // address. A router has a qr- device per subnet, several on one network; with the kernel's default any of
      // them answers for the IPv4 gateway, and a guest that learns the MAC of an IPv6-only qr- device loses its
      // metadata (REDIRECT drops what arrives on a device without an IPv4 address).
      await ns.sysctl('net.ipv4.conf.all.arp_ignore', 1);
      await ns.sysctl('net.ipv4.conf.all.arp_announce', 2);
      if (ipv6) await ns.sysctl('net.ipv6.conf.all.forwarding', 1);
      ri = { id: r.id, ns, ports: new Map(), iptables: this.buildIptables(ns.name, ipv6), ipv6 };
      await ri.iptables.apply({ fresh });
      // A namespace that already exists (agent restart, failover from another agent here) is adopted: one
      // `ip addr show` tells which devices are already right, and those cost nothing more.
      if (fresh) loPending = true;
      else {
        adopt = await ns.linkStates();
        loPending = !adopt.get('lo')?.up;
      }
      this.routers.set(r.id, ri);
      this.log.info({ router_id: r.id, namespace: ns.name, interfaces: want.size, adopted: !!adopt }, 'router added');
    } else if (ri.ipv6 !== ipv6) {
      // The first IPv6 interface came (or the last went): the ip6tables metadata rules follow.
      if (ipv6) await ri.ns.sysctl('net.ipv6.conf.all.forwarding', 1);
      this.declareRules(ri.iptables, ipv6);
      await ri.iptables.apply();
      ri.ipv6 = ipv6;
      this.log.info({ router_id: r.id, ipv6 }, ipv6 ? 'router has an IPv6 interface: IPv6 metadata on' : 'router has no IPv6 interface left: IPv6 metadata off');
    }

    for (const [pid, st] of want) {
      const have = ri.ports.get(pid);
      if (have && have.mac === st.mac && have.networkId === st.networkId && have.cidrs.join() === st.cidrs.join()) continue;
      const device = routerDeviceName(pid);
      const spec = { networkId: st.networkId, namespace: ri.ns.name, device, rootDevice: tapDeviceName(pid), mac: st.mac };
      const cur = adopt?.get(device);
      if (cur && cur.up && cur.mac === st.mac.toLowerCase() && sameSet(cur.cidrs, st.cidrs) && rootLinkUp(spec.rootDevice) && rootLinkMaster(spec.rootDevice) === bridgeName(st.networkId)) {
        // Already as it should be: the guests' ARP caches are right too.
        ri.ports.set(pid, st);
        continue;
      }
      if (!have && !adopt) {
        await plugFresh(spec, st.cidrs, ctx, loPending ? ['link set lo up'] : []);
        loPending = false;
      } else {
        await plug(spec, ctx);
        await initL3(device, st.cidrs, ri.ns.name, ctx);
      }
      ri.ports.set(pid, st);
      for (const c of st.cidrs) sendIpAddrAdvNotif(ri.ns.name, device, c.split('/')[0]!, d.send_arp_for_ha, ctx);
      if (!have) this.log.info({ router_id: r.id, port_id: pid, device, cidrs: st.cidrs }, 'router interface plugged');
    }
    if (loPending) await ri.ns.batch(['link set lo up']);
    for (const [pid, st] of [...ri.ports]) {
      if (want.has(pid)) continue;
      await unplug({ rootDevice: tapDeviceName(pid), namespace: ri.ns.name, device: routerDeviceName(pid), bridge: bridgeName(st.networkId) }, ctx);
      ri.ports.delete(pid);
      this.log.info({ router_id: r.id, port_id: pid }, 'router interface removed');
    }
    if (adopt) await this.removeUnknownDevices(ri.id, ri.ns, new Set([...want.keys()].map(routerDeviceName)), [...adopt.keys()]);
    // fe80::a9fe:a9fe on every qr- device with an IPv6 subnet: a guest sends to it on-link (it is link-local), so
    // someone on the link must answer its neighbour solicitation before the REDIRECT can take the packet.
    // nodad: every router on the link may hold it, as every router answers 169.254.169.254 through its gateway.
    // `replace` is idempotent: one `ip -batch` however many interfaces.
    if (d.enable_metadata_proxy) {
      const lines = [...want].filter(([, st]) => st.cidrs.some(isV6Cidr)).map(([pid]) => `addr replace ${METADATA_IPV6}/64 dev ${routerDeviceName(pid)} nodad`);
      await ri.ns.batch(lines);
    }

    if (d.enable_metadata_proxy) await this.driver.spawn(this.proxyTarget(r.id, ipv6));
    else await this.driver.destroy(r.id, { kind: 'router', id: r.id });
    ri.fingerprint = fingerprint;
  }

  /** The router's metadata proxy: 0.0.0.0:metadata_port behind the REDIRECT, and [::] when it has IPv6. */
  private proxyTarget(id: string, ipv6: boolean): MetadataTarget {
    const d = this.conf.DEFAULT;
    return { kind: 'router', id, uuid: id, namespace: routerNamespace(id), host: '0.0.0.0', port: d.metadata_port, ...(ipv6 ? { host6: '::' } : {}) };
  }

  /**
   * Serve first, check after. Routers whose namespace is already here but that this process has not built yet (a
   * failover from an agent on this machine, this agent restarted) still have their devices and REDIRECT rules, so
   * their proxies are started at once, all of them, before the checks that processRouter then runs router by
   * router: the last of 500 adopted routers no longer waits for the other 499's iptables-save and `ip addr`.
   */
  private async serveAdoptedFirst(routers: readonly SyncRouter[]): Promise<void> {
    if (!this.conf.DEFAULT.enable_metadata_proxy) return;
    const adopted = routers.filter((r) => r.admin_state_up && this.adoptable(r.id));
    if (!adopted.length) return;
    const t0 = Date.now();
    await inPool(adopted, ADOPT_POOL, async (r) => {
      const ipv6 = r._interfaces.some((p) => portState(p).cidrs.some(isV6Cidr));
      try {
        this.owners.claim(routerNamespace(r.id));
        await this.driver.spawn(this.proxyTarget(r.id, ipv6));
      } catch (e) {
        // processRouter tries again and reports it.
        this.log.warn({ router_id: r.id, err: errorMessage(e) }, 'could not serve an adopted router ahead of its checks');
      }
    });
    this.log.info({ routers: adopted.length, ms: Date.now() - t0 }, 'serving adopted routers; checking them next');
  }

  private adoptable(id: string): boolean {
    return !this.routers.has(id) && !this.driver.active(id) && netnsPresent(routerNamespace(id));
  }

  /** qr- devices in the namespace that no current port accounts for (left from before a restart). */
  private async removeUnknownDevices(routerId: string, ns: IpNamespace, keep: Set<string>, names: readonly string[]): Promise<void> {
    const ctx = { log: this.log };
    for (const name of names.filter((n) => n.startsWith(ROUTER_DEV_PREFIX) && !keep.has(n))) {
      const rootDev = `${TAP_PREFIX}${name.slice(ROUTER_DEV_PREFIX.length)}`;
      const bridge = rootLinkMaster(rootDev);
      await unplug({ rootDevice: rootDev, namespace: ns.name, device: name, ...(bridge ? { bridge } : {}) }, ctx);
      this.log.info({ router_id: routerId, device: name }, 'removed stale router device');
    }
  }

  /**
   * Router gone (deleted, unscheduled, disabled): proxy and pid file, then the devices and the namespace (its
   * rules go with it), then bridges left empty. A namespace another agent on this machine has taken over since
   * (failover) is left to it.
   */
  private async removeRouter(id: string): Promise<void> {
    const ctx = { log: this.log };
    const ri = this.routers.get(id);
    const ns = ri?.ns ?? new IpNamespace(routerNamespace(id), ctx);
    await this.driver.destroy(id, { kind: 'router', id });
    if (this.owners.takenOver(ns.name)) {
      this.log.info({ router_id: id, owner: this.owners.owner(ns.name) }, 'router namespace now belongs to another agent on this machine; leaving it');
      this.routers.delete(id);
      return;
    }
    if (ns.present) {
      const bridges = new Set<string>();
      const roots: string[] = [];
      const devices = ri ? [...ri.ports.keys()].map(routerDeviceName) : (await ns.links()).map((l) => l.name).filter((n) => n.startsWith(ROUTER_DEV_PREFIX));
      for (const dev of devices) {
        const root = `${TAP_PREFIX}${dev.slice(ROUTER_DEV_PREFIX.length)}`;
        const b = rootLinkMaster(root);
        if (b) bridges.add(b);
        if (rootLinkPresent(root)) roots.push(root);
      }
      for (const st of ri?.ports.values() ?? []) bridges.add(bridgeName(st.networkId));
      // The root ends first (one process), so the bridges are empty by the time we look at them.
      if (roots.length) await ipBatch(roots.map((d) => `link delete ${d}`), undefined, ctx);
      await ns.delete();
      for (const b of bridges) await deleteBridgeIfEmpty(b, ctx);
    }
    this.owners.release(ns.name);
    this.routers.delete(id);
    this.log.info({ router_id: id }, 'router removed');
  }
}

const isV6Cidr = (c: string): boolean => c.includes(':');
const sameSet = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x) => b.includes(x));
