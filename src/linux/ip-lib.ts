// Typed wrappers over iproute2 and sysctl, all through execute(). Names follow Neutron's ip_lib where it helps.
import { readdirSync } from 'node:fs';
import { CommandError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { execute, executeFull } from './exec.js';

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

export async function netnsExists(name: string, ctx: Ctx = {}): Promise<boolean> {
  return (await netnsList(ctx)).includes(name);
}

/** Create a namespace (idempotent) with its loopback up, as Neutron's ensure_namespace does. */
export async function netnsEnsure(name: string, ctx: Ctx = {}): Promise<void> {
  if (!(await netnsExists(name, ctx))) {
    try {
      await execute(['ip', 'netns', 'add', name], { log: ctx.log });
    } catch (e) {
      // Lost a race with another creator: fine as long as it now exists.
      if (!(await netnsExists(name, ctx))) throw e;
    }
  }
  await execute(['ip', 'link', 'set', 'lo', 'up'], { netns: name, log: ctx.log });
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
  if (!(await netnsExists(name, ctx))) return;
  await execute(['ip', 'netns', 'delete', name], { log: ctx.log });
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
  const out = await execute(['ip', '-j', '-d', 'link', 'show'], { netns, log: ctx.log });
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
  const r = await executeFull(['ip', '-o', 'link', 'show', 'dev', name], { netns, log: ctx.log, checkExit: false });
  return r.exitCode === 0;
}

/** A veth pair; the peer may be created directly inside a namespace so its name never clashes in the root one. */
export async function linkAddVeth(name: string, peer: string, peerNetns?: string, ctx: Ctx = {}): Promise<void> {
  const argv = ['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', peer];
  if (peerNetns) argv.push('netns', peerNetns);
  await execute(argv, { log: ctx.log });
}

export async function linkAddBridge(name: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'add', name, 'type', 'bridge'], { log: ctx.log });
}

export async function linkSetUp(name: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'set', name, 'up'], { netns, log: ctx.log });
}

export async function linkSetDown(name: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'set', name, 'down'], { netns, log: ctx.log });
}

export async function linkSetAddress(name: string, mac: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'set', name, 'address', mac], { netns, log: ctx.log });
}

export async function linkSetMtu(name: string, mtu: number, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'link', 'set', name, 'mtu', String(mtu)], { netns, log: ctx.log });
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
    await execute(['ip', 'link', 'delete', name], { netns, log: ctx.log });
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
  const out = await execute(['ip', '-j', `-${family}`, 'addr', 'show', 'dev', dev], { netns, log: ctx.log });
  const arr = JSON.parse(out || '[]') as { addr_info?: { local: string; prefixlen: number; scope?: string }[] }[];
  return arr.flatMap((l) => (l.addr_info ?? []).filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`));
}

export async function addrAdd(dev: string, cidr: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  const argv = ['ip', 'addr', 'add', cidr, 'dev', dev];
  // IPv4 gets an explicit broadcast as Neutron does (`brd +`).
  if (!cidr.includes(':')) argv.push('brd', '+');
  await execute(argv, { netns, log: ctx.log });
}

export async function addrDel(dev: string, cidr: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'addr', 'del', cidr, 'dev', dev], { netns, log: ctx.log });
}

// ---- ip route ----

export async function routeList(netns?: string, ctx: Ctx = {}): Promise<string[]> {
  const out = await execute(['ip', '-4', 'route', 'show'], { netns, log: ctx.log });
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

export async function routeReplace(dest: string, via: string | undefined, dev: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  const argv = ['ip', 'route', 'replace', dest];
  if (via) argv.push('via', via);
  argv.push('dev', dev);
  await execute(argv, { netns, log: ctx.log });
}

export async function routeDelete(dest: string, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['ip', 'route', 'del', dest], { netns, log: ctx.log, checkExit: false });
}

// ---- sysctl ----

export async function sysctlSet(key: string, value: string | number, netns?: string, ctx: Ctx = {}): Promise<void> {
  await execute(['sysctl', '-w', `${key}=${value}`], { netns, log: ctx.log });
}

export async function sysctlGet(key: string, netns?: string, ctx: Ctx = {}): Promise<string> {
  return (await execute(['sysctl', '-n', key], { netns, log: ctx.log })).trim();
}
