// Typed wrappers over iproute2 and sysctl, all through execute(). Names follow Neutron's ip_lib where it helps.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { CommandError } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/log.js';
import { execute, executeFull } from './exec.js';
import { nativeAddon } from './native-addon.js';
import { isErrno, netnsPath } from './netns-socket.js';

export interface Ctx {
  log?: Logger;
}

/** Linux IFNAMSIZ - 1. */
export const DEVICE_NAME_MAX_LEN = 15;

// ---- ip netns ----

export async function netnsList(ctx: Ctx = {}): Promise<string[]> {
  const out = await execute(['ip', 'netns', 'list'], { log: ctx.log });
  // Lines look like "qrouter-<id> (id: 3)" or just "name".
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Where `ip netns` keeps named namespaces. */
export const NETNS_RUN_DIR = '/run/netns';

/** A named namespace exists: its mount point under /run/netns (what `ip netns list` reads), without a process. */
export function netnsPresent(name: string): boolean {
  return existsSync(`${NETNS_RUN_DIR}/${name}`);
}

export async function netnsExists(name: string, _ctx: Ctx = {}): Promise<boolean> {
  return netnsPresent(name);
}

/** `ip netns add`, tolerant of a creator that won the race. Returns true when this call created it. */
export async function netnsAdd(name: string, ctx: Ctx = {}): Promise<boolean> {
  if (netnsPresent(name)) return false;
  try {
    await execute(['ip', 'netns', 'add', name], { log: ctx.log });
    return true;
  } catch (e) {
    if (netnsPresent(name)) return false;
    throw e;
  }
}

/** Create a namespace (idempotent) with its loopback up, as Neutron's ensure_namespace does. */
export async function netnsEnsure(name: string, ctx: Ctx = {}): Promise<void> {
  await netnsAdd(name, ctx);
  await execute(['ip', '-n', name, 'link', 'set', 'lo', 'up'], { log: ctx.log });
}

/** Run a command inside a namespace (`ip netns exec`); returns stdout. */
export async function netnsExec(name: string, argv: readonly string[], ctx: Ctx & { input?: string } = {}): Promise<string> {
  return execute(argv, { netns: name, log: ctx.log, ...(ctx.input !== undefined ? { input: ctx.input } : {}) });
}

/** Pids of the processes living in a namespace (`ip netns pids`). */
export async function netnsPids(name: string, ctx: Ctx = {}): Promise<number[]> {
  const out = await execute(['ip', 'netns', 'pids', name], { log: ctx.log });
  return out.split('\n').filter((l) => l.trim() !== '').map((l) => Number.parseInt(l, 10));
}

export async function netnsDelete(name: string, ctx: Ctx = {}): Promise<void> {
  if (!netnsPresent(name)) return;
  try {
    await execute(['ip', 'netns', 'delete', name], { log: ctx.log });
  } catch (e) {
    if (netnsPresent(name)) throw e;
  }
}

/**
 * Several iproute2 commands in one process (`ip [-n ns] -batch -`): the agents' hot path, where each separate
 * `ip` costs a fork and exec. The first failing line fails the whole call (its CommandError names the line).
 */
export async function ipBatch(lines: readonly string[], netns?: string, ctx: Ctx = {}): Promise<void> {
  if (!lines.length) return;
  await execute(['ip', ...(netns ? ['-n', netns] : []), '-batch', '-'], { input: `${lines.join('\n')}\n`, log: ctx.log });
}

/**
 * Neutron's send_ip_addr_adv_notif: `count` gratuitous ARPs for an IPv4 address just put on a device, so guests
 * whose ARP for it failed while it was missing (a router interface added under running guests) learn it now
 * instead of after their neighbour entry times out. In the background: the caller does not wait for it.
 */
export function sendIpAddrAdvNotif(netns: string, dev: string, ip: string, count: number, ctx: Ctx = {}): void {
  if (count <= 0 || ip.includes(':')) return;
  execute(['arping', '-U', '-I', dev, '-c', String(count), '-w', String(count + 1), ip], { netns, log: ctx.log, timeoutMs: (count + 5) * 1000 }).catch((e: unknown) =>
    ctx.log?.warn({ err: e instanceof Error ? e.message : String(e), dev, ip }, 'Failed sending gratuitous ARP'),
  );
}

/** A root-namespace device exists (sysfs, no process). */
export function rootLinkPresent(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

/** A root-namespace device is administratively up (IFF_UP in sysfs' flags, no process). */
export function rootLinkUp(name: string): boolean {
  try {
    return (Number.parseInt(readFileSync(`/sys/class/net/${name}/flags`, 'utf8').trim(), 16) & 1) === 1;
  } catch {
    return false;
  }
}

/** The bridge a root-namespace device is enslaved to (sysfs), if any. */
export function rootLinkMaster(name: string): string | undefined {
  try {
    return basename(readlinkSync(`/sys/class/net/${name}/master`));
  } catch {
    return undefined;
  }
}

export interface LinkState {
  mac: string;
  up: boolean;
  /** Global IPv4 and IPv6 addresses as cidrs. */
  cidrs: string[];
}

/** Every device of a namespace with its MAC, state and addresses, in one `ip -j addr show`. */
export async function linkStates(netns: string | undefined, ctx: Ctx = {}): Promise<Map<string, LinkState>> {
  const out = await execute(['ip', ...nsArg(netns), '-j', 'addr', 'show'], { log: ctx.log });
  const arr = JSON.parse(out || '[]') as Array<{ ifname: string; address?: string; flags?: string[]; addr_info?: Array<{ local: string; prefixlen: number; scope?: string }> }>;
  return new Map(
    arr.map((l) => [
      l.ifname,
      { mac: (l.address ?? '').toLowerCase(), up: (l.flags ?? []).includes('UP'), cidrs: (l.addr_info ?? []).filter((a) => a.scope !== 'link' && a.scope !== 'host').map((a) => `${a.local}/${a.prefixlen}`) },
    ]),
  );
}

/** `ip -n <ns>` (a setns in iproute2 itself) instead of `ip netns exec <ns> ip`, which also remounts /sys. */
const nsArg = (netns?: string): string[] => (netns ? ['-n', netns] : []);

/** `addr add` arguments; IPv4 gets an explicit broadcast as Neutron does (`brd +`). */
export function addrAddArgs(dev: string, cidr: string): string[] {
  return ['addr', 'add', cidr, ...(cidr.includes(':') ? [] : ['brd', '+']), 'dev', dev];
}

// ---- ip link ----

export interface LinkInfo {
  name: string;
  ifindex: number;
  mac: string;
  mtu: number;
  up: boolean;
  master?: string;
  kind?: string;
}

interface IpJsonLink {
  ifindex: number;
  ifname: string;
  flags?: string[];
  mtu?: number;
  address?: string;
  master?: string;
  linkinfo?: { info_kind?: string };
}

export async function linkList(netns?: string, ctx: Ctx = {}): Promise<LinkInfo[]> {
  const out = await execute(['ip', ...nsArg(netns), '-j', '-d', 'link', 'show'], { log: ctx.log });
  const arr = JSON.parse(out || '[]') as IpJsonLink[];
  return arr.map((l) => ({
    name: l.ifname,
    ifindex: l.ifindex,
    mac: l.address ?? '',
    mtu: l.mtu ?? 0,
    up: (l.flags ?? []).includes('UP'),
    ...(l.master ? { master: l.master } : {}),
    ...(l.linkinfo?.info_kind ? { kind: l.linkinfo.info_kind } : {}),
  }));
}

export async function linkExists(name: string, netns?: string, ctx: Ctx = {}): Promise<boolean> {
  if (!netns) return rootLinkPresent(name);
  const r = await executeFull(['ip', '-n', netns, '-o', 'link', 'show', 'dev', name], { log: ctx.log, checkExit: false });
  return r.exitCode === 0;
}

/** A veth pair; the peer may be created directly inside a namespace so its name never clashes in the root one. */
export async function linkAddVeth(name: string, peer: string, peerNetns?: string, ctx: Ctx = {}): Promise<void> {
  const argv = ['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', peer];
  if (peerNetns) argv.push('netns', peerNetns);
  await execute(argv, { log: ctx.log });
}

export async function linkAddBridge(name: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'add', name, 'up', 'type', 'bridge'], { log: ctx.log });
}

export async function linkSetUp(name: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', ...nsArg(netns), 'link', 'set', name, 'up'], { log: ctx.log });
}

export async function linkSetDown(name: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', ...nsArg(netns), 'link', 'set', name, 'down'], { log: ctx.log });
}

export async function linkSetAddress(name: string, mac: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', ...nsArg(netns), 'link', 'set', name, 'address', mac], { log: ctx.log });
}

export async function linkSetMtu(name: string, mtu: number, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', ...nsArg(netns), 'link', 'set', name, 'mtu', String(mtu)], { log: ctx.log });
}

export async function linkSetMaster(name: string, bridge: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'set', name, 'master', bridge], { log: ctx.log });
}

export async function linkSetNetns(name: string, target: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'set', name, 'netns', target], { log: ctx.log });
}

/** Delete a device; a device that is already gone is not an error. */
export async function linkDelete(name: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  try {
    await execute(['ip', ...nsArg(netns), 'link', 'delete', name], { log: ctx.log });
  } catch (e) {
    if (e instanceof CommandError && /Cannot find device|does not exist/i.test(e.stderr)) return;
    throw e;
  }
}

/** Ports enslaved to a bridge in the root namespace. */
export function bridgePorts(bridge: string): string[] {
  try {
    return readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    return [];
  }
}

// ---- ip addr ----

export async function addrList(dev: string, netns?: string, ctx: Ctx = {}, family: 4 | 6 = 4): Promise<string[]> {
  const out = await execute(['ip', ...nsArg(netns), '-j', `-${family}`, 'addr', 'show', 'dev', dev], { log: ctx.log });
  const arr = JSON.parse(out || '[]') as { addr_info?: { local: string; prefixlen: number; scope?: string }[] }[];
  return arr.flatMap((l) => (l.addr_info ?? []).filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`));
}

export async function addrAdd(dev: string, cidr: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', ...nsArg(netns), ...addrAddArgs(dev, cidr)], { log: ctx.log });
}

export async function addrDel(dev: string, cidr: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', ...nsArg(netns), 'addr', 'del', cidr, 'dev', dev], { log: ctx.log });
}

// ---- ip route ----

export async function routeList(netns?: string, ctx: Ctx = {}): Promise<string[]> {
  const out = await execute(['ip', ...nsArg(netns), '-4', 'route', 'show'], { log: ctx.log });
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

export async function routeReplace(dest: string, via: string | undefined, dev: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  const argv = ['ip', ...nsArg(netns), 'route', 'replace', dest];
  if (via) argv.push('via', via);
  argv.push('dev', dev);
  await execute(argv, { log: ctx.log });
}

export async function routeDelete(dest: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', ...nsArg(netns), 'route', 'del', dest], { log: ctx.log, checkExit: false });
}

// ---- sysctl ----

/**
 * A net.* key inside a namespace is written by the qm_netns addon when it is built (setns on this thread, no
 * process: it was one `ip netns exec sysctl` per router, a quarter of what adopting a router cost); otherwise, and
 * for every other key, by sysctl(8).
 */
export async function sysctlSet(key: string, value: string | number, netns?: string, ctx: Ctx = {}): Promise<void> {
  const native = netns && key.startsWith('net.') ? nativeAddon() : null;
  if (native && netns) {
    (ctx.log ?? silentLogger).debug({ netns, sysctl: key, value: String(value) }, 'writing sysctl in namespace');
    try {
      native.sysctlInNamespace(netnsPath(netns), key, String(value));
      return;
    } catch (e) {
      const argv = ['sysctl', '-w', `${key}=${value}`];
      throw new CommandError(['ip', 'netns', 'exec', netns, ...argv], null, isErrno(e) ? `${e.syscall}: ${e.code}: ${e.message}` : String(e));
    }
  }
  await execute(['sysctl', '-w', `${key}=${value}`], { netns, log: ctx.log });
}

export async function sysctlGet(key: string, netns?: string, ctx: Ctx = {}): Promise<string> {
  return (await execute(['sysctl', '-n', key], { netns, log: ctx.log })).trim();
}

/**
 * A namespace bound once (Neutron's ip_lib.IPWrapper(namespace)): every command of an agent's router or network
 * runs through one of these, so the namespace is never passed (or forgotten) call by call.
 */
export class IpNamespace {
  constructor(
    readonly name: string,
    private readonly ctx: Ctx = {},
  ) {}

  get present(): boolean {
    return netnsPresent(this.name);
  }

  /** Create it (idempotent) with lo up; true when this call created it. `lo: false` leaves lo to the caller's next batch. */
  async ensure(o: { lo?: boolean } = {}): Promise<boolean> {
    const made = await netnsAdd(this.name, this.ctx);
    if (o.lo !== false) await ipBatch(['link set lo up'], this.name, this.ctx);
    return made;
  }

  delete(): Promise<void> {
    return netnsDelete(this.name, this.ctx);
  }

  batch(lines: readonly string[]): Promise<void> {
    return ipBatch(lines, this.name, this.ctx);
  }

  links(): Promise<LinkInfo[]> {
    return linkList(this.name, this.ctx);
  }

  linkStates(): Promise<Map<string, LinkState>> {
    return linkStates(this.name, this.ctx);
  }

  linkExists(dev: string): Promise<boolean> {
    return linkExists(dev, this.name, this.ctx);
  }

  addrs(dev: string, family: 4 | 6 = 4): Promise<string[]> {
    return addrList(dev, this.name, this.ctx, family);
  }

  sysctl(key: string, value: string | number): Promise<void> {
    return sysctlSet(key, value, this.name, this.ctx);
  }

  exec(argv: readonly string[], input?: string): Promise<string> {
    return netnsExec(this.name, argv, { ...this.ctx, ...(input !== undefined ? { input } : {}) });
  }

  routes(): Promise<string[]> {
    return routeList(this.name, this.ctx);
  }

  routeReplace(dest: string, via: string | undefined, dev: string): Promise<void> {
    return routeReplace(dest, via, dev, this.name, this.ctx);
  }

  routeDelete(dest: string): Promise<void> {
    return routeDelete(dest, this.name, this.ctx);
  }

  pids(): Promise<number[]> {
    return netnsPids(this.name, this.ctx);
  }
}

export type DadResult = 'ok' | 'dadfailed' | 'timeout';

/**
 * Put an IPv6 address on a device with duplicate address detection and wait for its outcome (Neutron 23.0's
 * DHCP metadata address: if another holder answers, the address is removed again by the caller). An address
 * already there and past DAD costs one `ip` call.
 */
export async function addrAddWaitDad(dev: string, cidr: string, netns: string | undefined, o: Ctx & { timeoutMs?: number } = {}): Promise<DadResult> {
  const [addr] = cidr.split('/');
  const state = async (): Promise<'absent' | 'tentative' | 'dadfailed' | 'ok'> => {
    const out = await execute(['ip', ...nsArg(netns), '-j', '-6', 'addr', 'show', 'dev', dev], { log: o.log });
    const arr = JSON.parse(out || '[]') as { addr_info?: { local: string; tentative?: boolean; dadfailed?: boolean }[] }[];
    const a = arr.flatMap((l) => l.addr_info ?? []).find((x) => x.local === addr);
    if (!a) return 'absent';
    return a.dadfailed ? 'dadfailed' : a.tentative ? 'tentative' : 'ok';
  };
  let s = await state();
  if (s === 'absent') {
    await execute(['ip', ...nsArg(netns), ...addrAddArgs(dev, cidr)], { log: o.log });
    s = await state();
  }
  const deadline = Date.now() + (o.timeoutMs ?? 5000);
  while (s === 'tentative' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    s = await state();
  }
  return s === 'tentative' ? 'timeout' : s === 'absent' ? 'dadfailed' : s;
}
