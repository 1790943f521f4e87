// A guest is a network namespace standing in for a VM: plugged into its network's bridge (brq<net[:11]>)
// with the MAC of its Nova port, exactly where libvirt would put the VM's tap device. Its address comes
// from the port (static, with the subnet's gateway as default route) or from a real DHCP client.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Port, Subnet } from '../common/quantum-client.js';
import { execute } from '../linux/exec.js';
import { plug, unplug, initL3, prefixLen } from '../linux/interface.js';
import { netnsDelete, netnsEnsure, netnsExists, routeReplace, type Ctx } from '../linux/ip-lib.js';
import { pidAlive, readCmdline } from '../linux/external-process.js';
import { bridgeName } from '../linux/names.js';

export const GUEST_DEVICE = 'eth0';

/** Nova's VIF devname for a port: ("tap" + port id)[:14]. */
export const vifDevname = (portId: string) => `tap${portId}`.slice(0, 14);

export interface GuestSpec {
  /** Namespace name (the server's name in the demo). */
  namespace: string;
  port: Port;
  subnet: Subnet;
  mode: 'static' | 'dhcp';
  /** Where dhclient keeps its pid and lease files. */
  stateDir: string;
  mtu?: number;
}

const dhclientPidFile = (stateDir: string, ns: string) => join(stateDir, `dhclient-${ns}.pid`);
const dhclientLeaseFile = (stateDir: string, ns: string) => join(stateDir, `dhclient-${ns}.leases`);

/** `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: dhclient-script then writes there, not the host's. */
function ensureNetnsEtc(ns: string): void {
  const dir = join('/etc/netns', ns);
  mkdirSync(dir, { recursive: true });
  const rc = join(dir, 'resolv.conf');
  if (!existsSync(rc)) writeFileSync(rc, '# guest namespace resolv.conf (managed by dhclient-script)\n');
}

/** Plug the guest (idempotent) and configure its address. Returns the IPv4 address it ends up with. */
export async function plugGuest(g: GuestSpec, ctx: Ctx & { log?: Logger } = {}): Promise<string> {
  const ns = g.namespace;
  ensureNetnsEtc(ns);
  await netnsEnsure(ns, ctx);
  await plug(
    { networkId: g.port.network_id, namespace: ns, device: GUEST_DEVICE, rootDevice: vifDevname(g.port.id), mac: g.port.mac_address, mtu: g.mtu, bridge: bridgeName(g.port.network_id) },
    ctx,
  );
  const fixed = g.port.fixed_ips.find((f) => f.subnet_id === g.subnet.id);
  if (!fixed) throw new ApiError(409, 'GuestPortMismatch', `port ${g.port.id} has no address on subnet ${g.subnet.id}`);
  if (g.mode === 'static') {
    await initL3(GUEST_DEVICE, [`${fixed.ip_address}/${prefixLen(g.subnet.cidr)}`], ns, ctx);
    if (g.subnet.gateway_ip) await routeReplace('default', g.subnet.gateway_ip, GUEST_DEVICE, ns, ctx);
    return fixed.ip_address;
  }
  await startDhclient(g, ctx);
  return fixed.ip_address;
}

/** Run dhclient in the guest until it holds a lease (it daemonises after the first one). */
async function startDhclient(g: GuestSpec, ctx: Ctx & { log?: Logger }): Promise<void> {
  mkdirSync(g.stateDir, { recursive: true });
  const pidFile = dhclientPidFile(g.stateDir, g.namespace);
  const existing = dhclientPid(g.stateDir, g.namespace);
  if (existing) return;
  rmSync(pidFile, { force: true });
  // -1: try once (dhclient's own 60 s timeout) and fail instead of retrying forever in the background.
  await execute(['dhclient', '-4', '-1', '-v', '-pf', pidFile, '-lf', dhclientLeaseFile(g.stateDir, g.namespace), GUEST_DEVICE], {
    netns: g.namespace,
    log: ctx.log,
    timeoutMs: 90_000,
  });
}

/** The guest's dhclient pid, if that process is still a dhclient for this guest. */
export function dhclientPid(stateDir: string, ns: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(dhclientPidFile(stateDir, ns), 'utf8').trim(), 10);
    if (!pidAlive(pid)) return undefined;
    const cmd = readCmdline(pid);
    return cmd?.includes('dhclient') && cmd.includes(ns) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export interface UnplugGuestSpec {
  namespace: string;
  portId: string;
  networkId: string;
  stateDir: string;
}

/** Stop the guest's DHCP client, remove its veth pair, namespace and /etc/netns entry; drop the bridge if empty. */
export async function unplugGuest(g: UnplugGuestSpec, ctx: Ctx & { log?: Logger } = {}): Promise<void> {
  const pid = dhclientPid(g.stateDir, g.namespace);
  if (pid) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
  }
  rmSync(dhclientPidFile(g.stateDir, g.namespace), { force: true });
  rmSync(dhclientLeaseFile(g.stateDir, g.namespace), { force: true });
  if (await netnsExists(g.namespace, ctx)) {
    await unplug({ rootDevice: vifDevname(g.portId), namespace: g.namespace, device: GUEST_DEVICE, bridge: bridgeName(g.networkId) }, ctx);
    await netnsDelete(g.namespace, ctx);
  } else {
    await unplug({ rootDevice: vifDevname(g.portId), bridge: bridgeName(g.networkId) }, ctx);
  }
  rmSync(join('/etc/netns', g.namespace), { recursive: true, force: true });
}

/** The guest's routes (to show that 169.254.169.254 came by DHCP option 121). */
export async function guestRoutes(ns: string, ctx: Ctx = {}): Promise<string> {
  return execute(['ip', '-4', 'route', 'show'], { netns: ns, log: ctx.log });
}
