// Neutron's neutron/agent/metadata/driver.py for both agents: the metadata feature's iptables rules and its
// proxy processes kept together. The proxy runs in one of two shapes (metadata_proxy_mode): one supervised
// quantum-ns-metadata-proxy per router or isolated network (per-namespace, the Grizzly shape), or one shared
// proxy process per agent serving every namespace through listening sockets made inside each (shared).
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { metadataProxyManager, type ProxyConf } from './agent-common.js';
import { readdirSync } from 'node:fs';
import { externalPidsDir, ProcessManager, type ProcessMonitor } from './external-process.js';
import type { IptablesManager } from './iptables.js';
import { METADATA_IP } from './dnsmasq.js';
import { ROUTER_DEV_PREFIX } from './names.js';
import type { SharedProxyStatus } from './shared-proxy.js';
import { listenerTag } from '../common/shared-proxy.js';

export { METADATA_IP };

export type MetadataProxyMode = 'per-namespace' | 'shared';
export const METADATA_PROXY_MODES: readonly MetadataProxyMode[] = ['per-namespace', 'shared'];

/** One namespace's proxy: a router's (qrouter-, behind the REDIRECT) or an isolated network's (qdhcp-). */
export interface MetadataTarget {
  kind: 'router' | 'network';
  /** The id the proxy stamps on every request (X-Neutron-Router-ID / -Network-ID). */
  id: string;
  /** The pid file / listener key: the router id, or for a DHCP namespace the id its proxy is known by. */
  uuid: string;
  namespace: string;
  /** Bind address inside the namespace (0.0.0.0 for routers, 169.254.169.254 on a DHCP tap). */
  host: string;
  port: number;
  /**
   * Also listen on this IPv6 address, v6-only, on the same port: `::` for a router with an IPv6 interface,
   * fe80::a9fe:a9fe on a DHCP tap (then with `interface6`, the device its zone names).
   */
  host6?: string | undefined;
  interface6?: string | undefined;
}

/** The scoped spelling of a target's IPv6 bind, as a socket address takes it (fe80::a9fe:a9fe%tap0). */
export const scopedHost6 = (t: Pick<MetadataTarget, 'host6' | 'interface6'>): string | undefined => (t.host6 ? (t.interface6 ? `${t.host6}%${t.interface6}` : t.host6) : undefined);
/** The listener slot of a target's IPv6 socket in the shared proxy. */
export const V6_SLOT = 'v6';

/** What the driver needs of the shared proxy's manager (src/linux/shared-proxy.ts). */
export interface SharedProxy {
  start(): Promise<void>;
  add(l: { kind: 'router' | 'network'; id: string; namespace: string; host: string; port: number; slot?: string }): Promise<void>;
  remove(kind: 'router' | 'network', id: string, slot?: string): Promise<void>;
  has(kind: 'router' | 'network', id: string, slot?: string): boolean;
  listeners(): Array<{ kind: 'router' | 'network'; id: string; slot?: string | undefined }>;
  readonly size: number;
  readonly alive: boolean;
  readonly respawns: number;
  status(): Promise<SharedProxyStatus>;
  stop(): Promise<void>;
}

/** The rules of reference §4 (Zed), in iptables-save's canonical spelling so they read back identically. */
export function metadataFilterRules(port: number, mark: string): Array<[string, string]> {
  return [
    ['INPUT', `-m mark --mark ${mark}/0xffff -j ACCEPT`],
    ['INPUT', `-p tcp -m tcp --dport ${port} -j DROP`],
  ];
}
/** Neutron's IPv6 metadata address (Ussuri): link-local, so every network reaches it on its own link. */
export const METADATA_IPV6 = 'fe80::a9fe:a9fe';
const dst = (family: 4 | 6) => (family === 4 ? `${METADATA_IP}/32` : `${METADATA_IPV6}/128`);
export const metadataNatRules = (port: number, family: 4 | 6 = 4): Array<[string, string]> => [['PREROUTING', `-d ${dst(family)} -i ${ROUTER_DEV_PREFIX}+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports ${port}`]];
export const metadataMangleRules = (mark: string, family: 4 | 6 = 4): Array<[string, string]> => [['PREROUTING', `-d ${dst(family)} -i ${ROUTER_DEV_PREFIX}+ -p tcp -m tcp --dport 80 -j MARK --set-xmark ${mark}/0xffff`]];

export interface MetadataDriverOptions {
  mode: MetadataProxyMode;
  conf: ProxyConf;
  monitor: ProcessMonitor;
  log: Logger;
  /** Required in shared mode. */
  shared?: SharedProxy | undefined;
}

export class MetadataDriver {
  private readonly managers = new Map<string, ProcessManager>();
  private readonly targets = new Map<string, MetadataTarget>();

  constructor(private readonly o: MetadataDriverOptions) {
    if (o.mode === 'shared' && !o.shared) throw new Error('metadata_proxy_mode = shared needs the shared proxy');
  }

  get mode(): MetadataProxyMode {
    return this.o.mode;
  }

  /**
   * A router's metadata rules (MetadataDriver.metadata_*_rules); the mark is installed even with the proxy off.
   * `ipv6`: the same for fe80::a9fe:a9fe in ip6tables (Neutron 17.0.0), for routers with IPv6 interfaces.
   */
  static routerRules(ipt: IptablesManager, o: { port: number; mark: string; proxy: boolean; ipv6?: boolean }): void {
    for (const family of o.ipv6 ? ([4, 6] as const) : ([4] as const)) {
      const t = family === 4 ? ipt.ipv4 : ipt.ipv6;
      for (const [c, r] of metadataMangleRules(o.mark, family)) t.mangle.addRule(c, r);
      t.filter.addChain('scope');
      t.filter.addRule('FORWARD', '-j $scope');
      t.filter.addRule('scope', `-m mark --mark ${o.mark}/0xffff -j DROP`);
      if (o.proxy) {
        for (const [c, r] of metadataFilterRules(o.port, o.mark)) t.filter.addRule(c, r);
        for (const [c, r] of metadataNatRules(o.port, family)) t.nat.addRule(c, r);
      }
    }
  }

  async start(): Promise<void> {
    if (this.o.shared) await this.o.shared.start();
  }

  private manager(t: MetadataTarget): ProcessManager {
    let pm = this.managers.get(t.uuid);
    if (!pm) {
      pm = metadataProxyManager({
        uuid: t.uuid,
        namespace: t.namespace,
        conf: this.o.conf,
        port: t.port,
        ...(t.kind === 'router' ? { routerId: t.id } : { networkId: t.id }),
        ...(t.host !== '0.0.0.0' ? { bindAddress: t.host } : {}),
        ...(t.host6 ? { bindAddressV6: t.host6, bindInterface: t.interface6 } : {}),
        log: this.o.log,
      });
      this.managers.set(t.uuid, pm);
    }
    return pm;
  }

  /** Is this namespace's proxy serving? */
  active(uuid: string): boolean {
    const t = this.targets.get(uuid);
    if (!t) return false;
    if (this.o.shared) return this.o.shared.alive && this.o.shared.has(t.kind, t.id) && (!t.host6 || this.o.shared.has(t.kind, t.id, V6_SLOT));
    return this.managers.get(uuid)?.active ?? false;
  }

  /** Serve a namespace (idempotent): start its proxy, or hand its listener to the shared one. */
  async spawn(t: MetadataTarget): Promise<void> {
    const prev = this.targets.get(t.uuid);
    if (prev && (prev.id !== t.id || prev.kind !== t.kind || prev.port !== t.port || prev.host !== t.host)) await this.destroy(t.uuid);
    else if (prev && (prev.host6 !== t.host6 || prev.interface6 !== t.interface6)) {
      // Only the IPv6 socket changed: in shared mode the IPv4 one stays as it is (no gap for IPv4 guests).
      if (this.o.shared) {
        if (this.o.shared.has(prev.kind, prev.id, V6_SLOT)) await this.o.shared.remove(prev.kind, prev.id, V6_SLOT);
      } else await this.destroy(t.uuid);
    }
    this.targets.set(t.uuid, t);
    if (this.o.shared) {
      // A per-namespace proxy left from before a switch to shared mode holds the port: it goes first.
      const old = new ProcessManager({ uuid: t.uuid, statePath: this.o.conf.state_path, cmd: () => [], log: this.o.log });
      if (old.active) await old.disable();
      await this.o.shared.add({ kind: t.kind, id: t.id, namespace: t.namespace, host: t.host, port: t.port });
      const h6 = scopedHost6(t);
      if (h6) await this.o.shared.add({ kind: t.kind, id: t.id, namespace: t.namespace, host: h6, port: t.port, slot: V6_SLOT });
      else if (this.o.shared.has(t.kind, t.id, V6_SLOT)) await this.o.shared.remove(t.kind, t.id, V6_SLOT);
      return;
    }
    const pm = this.manager(t);
    await pm.enable();
    this.o.monitor.register(pm);
  }

  /** Stop serving a namespace: its proxy (SIGTERM, 5 s, SIGKILL) and pid file, or its shared listener. */
  async destroy(uuid: string, hint?: Pick<MetadataTarget, 'kind' | 'id'>): Promise<void> {
    const t = this.targets.get(uuid);
    this.targets.delete(uuid);
    this.o.monitor.unregister(uuid);
    if (this.o.shared) {
      const k = t ?? hint;
      if (k && this.o.shared.has(k.kind, k.id)) await this.o.shared.remove(k.kind, k.id);
      if (k && this.o.shared.has(k.kind, k.id, V6_SLOT)) await this.o.shared.remove(k.kind, k.id, V6_SLOT);
    }
    // Also in shared mode: a per-namespace proxy adopted from before a mode switch.
    const pm = this.managers.get(uuid) ?? new ProcessManager({ uuid, statePath: this.o.conf.state_path, cmd: () => [], log: this.o.log });
    this.managers.delete(uuid);
    await pm.disable();
  }

  /**
   * Router or network ids with a per-namespace proxy pid file under this agent's state path: after a restart,
   * those no longer served here are torn down (their namespace may now be another agent's).
   */
  pidFileIds(): string[] {
    try {
      return readdirSync(externalPidsDir(this.o.conf.state_path))
        .map((f) => /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.pid$/.exec(f)?.[1])
        .filter((x): x is string => !!x);
    } catch {
      return [];
    }
  }

  /**
   * After a full sync: listeners of an adopted shared proxy (an earlier run of this agent) that serve nothing
   * this agent still wants go; so do those whose spawn() was never called this run.
   */
  async reconcile(): Promise<number> {
    if (!this.o.shared) return 0;
    const want = new Set([...this.targets.values()].flatMap((t) => [listenerTag(t.kind, t.id), ...(t.host6 ? [listenerTag(t.kind, t.id, V6_SLOT)] : [])]));
    let n = 0;
    for (const l of this.o.shared.listeners()) {
      if (want.has(listenerTag(l.kind, l.id, l.slot))) continue;
      this.o.log.info({ kind: l.kind, id: l.id, slot: l.slot }, 'shared metadata proxy listener no longer wanted: removing it');
      await this.o.shared.remove(l.kind, l.id, l.slot);
      n++;
    }
    return n;
  }

  /** Proxies this agent should run, and how many serve: for its state report. */
  counts(): { mode: MetadataProxyMode; expected: number; alive: number; respawns?: number } {
    let alive = 0;
    for (const uuid of this.targets.keys()) if (this.active(uuid)) alive++;
    return { mode: this.o.mode, expected: this.targets.size, alive, ...(this.o.shared ? { respawns: this.o.shared.respawns } : {}) };
  }

  /** Proxies expected vs alive, and the shared proxy's respawns, at each scrape. */
  metrics(m: Metrics): void {
    m.gauge('metadata_proxies', 'Metadata proxies (or shared listeners) this agent should run, and those serving.', ['state'], (g) => {
      const c = this.counts();
      g.set({ state: 'expected' }, c.expected);
      g.set({ state: 'alive' }, c.alive);
    });
    if (this.o.shared) {
      const shared = this.o.shared;
      m.counter('shared_proxy_respawns_total', 'Times the shared metadata proxy died and was respawned.', [], (c) => {
        c.reset();
        c.inc(shared.respawns);
      });
      // The shared proxy's own counts, asked for over its IPC channel at each scrape (nothing on its hot path but
      // an increment). They restart from 0 when the proxy is respawned, as a Prometheus counter may.
      let last: Promise<SharedProxyStatus | undefined> | undefined;
      const status = (): Promise<SharedProxyStatus | undefined> => (last ??= shared.status().catch(() => undefined).finally(() => setImmediate(() => (last = undefined))));
      m.counter('shared_proxy_responses_total', 'Answers the shared metadata proxy wrote to guests, by HTTP status code.', ['code'], async (c) => {
        const st = await status();
        c.reset();
        for (const [code, n] of Object.entries(st?.responses ?? {})) c.inc({ code }, n);
      });
      m.counter('shared_proxy_listener_responses_total', 'Answers per served namespace (router or network id).', ['kind', 'id'], async (c) => {
        const st = await status();
        c.reset();
        for (const l of st?.listeners ?? []) c.inc({ kind: l.kind, id: l.id }, l.answered ?? 0);
      });
      m.gauge('shared_proxy_guest_connections', 'Guest connections the shared metadata proxy holds (maxconn slots in use).', [], async (g) => {
        const st = await status();
        g.set(st?.guests ?? 0);
      });
      m.gauge('shared_proxy_pending_requests', 'Guest requests waiting for the metadata agent in the shared proxy.', [], async (g) => {
        const st = await status();
        g.set(st?.pending ?? 0);
      });
    }
  }

  async stop(): Promise<void> {
    await this.o.shared?.stop();
  }
}
