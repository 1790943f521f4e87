// Neutron's naming of namespaces and devices (linuxbridge flavour). Device names stay within 15 characters.

export const NS_ROUTER_PREFIX = 'qrouter-';
export const NS_DHCP_PREFIX = 'qdhcp-';
export const BRIDGE_PREFIX = 'brq';
/** Router interface device inside qrouter-<id>. */
export const ROUTER_DEV_PREFIX = 'qr-';
/** The linuxbridge tap name: a router port's root-side veth end, and the DHCP port's device inside qdhcp-<id>. */
export const TAP_PREFIX = 'tap';
/** Root-side veth end of a DHCP port (its namespace end is tap<port[:11]>, so the root end takes the other name). */
export const DHCP_ROOT_PREFIX = 'ns-';

const ID_LEN = 11;

export const routerNamespace = (routerId: string) => `${NS_ROUTER_PREFIX}${routerId}`;
export const dhcpNamespace = (networkId: string) => `${NS_DHCP_PREFIX}${networkId}`;
export const bridgeName = (networkId: string) => `${BRIDGE_PREFIX}${networkId.slice(0, ID_LEN)}`;
export const routerDeviceName = (portId: string) => `${ROUTER_DEV_PREFIX}${portId.slice(0, ID_LEN)}`;
export const tapDeviceName = (portId: string) => `${TAP_PREFIX}${portId.slice(0, ID_LEN)}`;
export const dhcpRootDeviceName = (portId: string) => `${DHCP_ROOT_PREFIX}${portId.slice(0, ID_LEN)}`;

/** `qrouter-<id>` → id, else undefined. */
export function routerIdFromNamespace(ns: string): string | undefined {
  return ns.startsWith(NS_ROUTER_PREFIX) ? ns.slice(NS_ROUTER_PREFIX.length) : undefined;
}

/** `qdhcp-<id>` → id, else undefined. */
export function networkIdFromNamespace(ns: string): string | undefined {
  return ns.startsWith(NS_DHCP_PREFIX) ? ns.slice(NS_DHCP_PREFIX.length) : undefined;
}
