// Plugging a port into its network, linuxbridge style: one bridge brq<net[:11]> per network in the root
// namespace, and a veth pair per port whose inner end (with the port's MAC and addresses) lives in a namespace.
// The agents use it for qr-/tap devices; the all-in-one guest tool uses it for guests.
import type { Logger } from '../common/log.js';
import { CommandError } from '../common/errors.js';
import { execute } from './exec.js';
import {
  addrAdd,
  addrAddArgs,
  addrDel,
  addrList,
  bridgePorts,
  linkAddBridge,
  linkAddVeth,
  linkDelete,
  linkExists,
  linkSetAddress,
  linkSetMaster,
  linkSetMtu,
  linkSetUp,
  ipBatch,
  rootLinkPresent,
  DEVICE_NAME_MAX_LEN,
  type Ctx,
} from './ip-lib.js';
import { bridgeName } from './names.js';

export interface PlugSpec {
  networkId: string;
  /** The namespace the port's device lives in. */
  namespace: string;
  /** Device name inside the namespace (qr-…, tap…, or e.g. eth0 for a guest). */
  device: string;
  /** The veth end left in the root namespace and enslaved to the bridge. */
  rootDevice: string;
  mac: string;
  mtu?: number | undefined;
  /** Defaults to brq<net[:11]>. */
  bridge?: string;
}

function checkName(n: string): void {
  if (n.length === 0 || n.length > DEVICE_NAME_MAX_LEN) throw new CommandError(['ip', 'link', n], 1, `device name "${n}" must be 1-${DEVICE_NAME_MAX_LEN} characters`);
}

/** Create the network's bridge if missing, up (idempotent, race-tolerant; an existing one costs no process). */
export async function ensureBridge(bridge: string, ctx: Ctx = {}): Promise<void> {
  checkName(bridge);
  if (rootLinkPresent(bridge)) return;
  try {
    await linkAddBridge(bridge, ctx);
  } catch (e) {
    if (!rootLinkPresent(bridge)) throw e;
  }
}

/**
 * Plug a port whose devices do not exist yet (a namespace just made): the veth pair in one command, its root
 * end on the bridge and up, its peer born in the namespace with the port's MAC; then, in one batch inside the
 * namespace, the peer up with its addresses. Two processes per port instead of a dozen.
 */
export async function plugFresh(spec: PlugSpec, cidrs: readonly string[], ctx: Ctx = {}, alsoInNamespace: readonly string[] = [], afterAddresses: readonly string[] = []): Promise<void> {
  checkName(spec.device);
  checkName(spec.rootDevice);
  const bridge = spec.bridge ?? bridgeName(spec.networkId);
  const mtu = spec.mtu ? ['mtu', String(spec.mtu)] : [];
  const add = ['ip', 'link', 'add', spec.rootDevice, ...mtu, 'master', bridge, 'up', 'type', 'veth', 'peer', 'name', spec.device, 'address', spec.mac, ...mtu, 'netns', spec.namespace];
  if (rootLinkPresent(spec.rootDevice)) await linkDelete(spec.rootDevice, undefined, ctx);
  for (let attempt = 0; ; attempt++) {
    await ensureBridge(bridge, ctx);
    try {
      await execute(add, { log: ctx.log });
      break;
    } catch (e) {
      // Another agent removed the (then empty) bridge between our ensure and the add: make it again, once.
      if (attempt > 0 || rootLinkPresent(bridge) || !(e instanceof CommandError)) throw e;
      if (rootLinkPresent(spec.rootDevice)) await linkDelete(spec.rootDevice, undefined, ctx);
    }
  }
  // `afterAddresses`: lines that need the addresses first (a route via the subnet's gateway), in the same batch.
  await ipBatch([...alsoInNamespace, `link set ${spec.device} up`, ...cidrs.map((c) => addrAddArgs(spec.device, c).join(' ')), ...afterAddresses], spec.namespace, ctx);
}

/**
 * Plug a port: bridge, veth pair, MAC, MTU, both ends up. Idempotent: an existing complete pair is kept
 * (only MAC/state are re-asserted), a half-present one is rebuilt.
 */
export async function plug(spec: PlugSpec, ctx: Ctx = {}): Promise<void> {
  checkName(spec.device);
  checkName(spec.rootDevice);
  const bridge = spec.bridge ?? bridgeName(spec.networkId);
  await ensureBridge(bridge, ctx);
  const rootOk = await linkExists(spec.rootDevice, undefined, ctx);
  const nsOk = await linkExists(spec.device, spec.namespace, ctx);
  if (!rootOk || !nsOk) {
    if (rootOk) await linkDelete(spec.rootDevice, undefined, ctx);
    if (nsOk) await linkDelete(spec.device, spec.namespace, ctx);
    await linkAddVeth(spec.rootDevice, spec.device, spec.namespace, ctx);
  }
  await linkSetAddress(spec.device, spec.mac, spec.namespace, ctx);
  if (spec.mtu) {
    await linkSetMtu(spec.device, spec.mtu, spec.namespace, ctx);
    await linkSetMtu(spec.rootDevice, spec.mtu, undefined, ctx);
  }
  try {
    await linkSetMaster(spec.rootDevice, bridge, ctx);
  } catch (e) {
    // Another agent removed the (then empty) bridge between our ensure and enslave: make it again, once.
    await ensureBridge(bridge, ctx);
    await linkSetMaster(spec.rootDevice, bridge, ctx);
    ctx.log?.debug({ err: e, bridge }, 'bridge vanished while plugging; recreated');
  }
  await linkSetUp(spec.rootDevice, undefined, ctx);
  await linkSetUp(spec.device, spec.namespace, ctx);
}

/**
 * Make the device's IPv4/IPv6 global addresses exactly `cidrs` (Neutron's init_l3): add the missing ones,
 * remove the others.
 */
export async function initL3(device: string, cidrs: readonly string[], namespace: string, ctx: Ctx = {}): Promise<void> {
  const want = new Set(cidrs);
  const have = [...(await addrList(device, namespace, ctx, 4)), ...(await addrList(device, namespace, ctx, 6))];
  for (const a of have) if (!want.has(a)) await addrDel(device, a, namespace, ctx);
  for (const a of cidrs) if (!have.includes(a)) await addrAdd(device, a, namespace, ctx);
}

export interface UnplugSpec {
  rootDevice: string;
  /** Also try the namespace end in case the root end is already gone. */
  namespace?: string;
  device?: string;
  /** Remove the bridge when no port is left on it (what the linuxbridge agent does when a network leaves the host). */
  bridge?: string;
}

/** Remove a port's veth pair (deleting one end removes both) and, optionally, its bridge once empty. */
export async function unplug(spec: UnplugSpec, ctx: Ctx & { log?: Logger } = {}): Promise<void> {
  await linkDelete(spec.rootDevice, undefined, ctx);
  if (spec.namespace && spec.device && (await linkExists(spec.device, spec.namespace, ctx))) await linkDelete(spec.device, spec.namespace, ctx);
  if (spec.bridge) await deleteBridgeIfEmpty(spec.bridge, ctx);
}

export async function deleteBridgeIfEmpty(bridge: string, ctx: Ctx = {}): Promise<boolean> {
  if (!(await linkExists(bridge, undefined, ctx))) return false;
  if (bridgePorts(bridge).length > 0) return false;
  await linkDelete(bridge, undefined, ctx);
  return true;
}

/** The IPv4 prefix length of a CIDR ("10.0.0.0/24" → 24). */
export function prefixLen(cidr: string): number {
  const p = Number.parseInt(cidr.split('/')[1] ?? '', 10);
  if (!Number.isInteger(p)) throw new Error(`bad CIDR ${cidr}`);
  return p;
}
