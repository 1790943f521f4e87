// nova/virt/netutils.py: network_data.json and the EC2 ip info, from the network info cache.
import { BlockList, isIPv4 } from 'node:net';
import { formatIp, ipBits, parseIp } from '../common/ipaddr.js';
import type { NetworkInfo, NwSubnet, Vif } from './model.js';

const LEGACY_EXPOSED_VIF_TYPES = new Set(['bridge', 'dvs', 'hw_veb', 'hyperv', 'ovs', 'tap', 'vhostuser', 'vif']);

function parseCidr(cidr: string): { ip: string; prefix: number; version: 4 | 6 } {
  const [ip, p] = cidr.split('/') as [string, string | undefined];
  const version = isIPv4(ip) ? 4 : 6;
  return { ip, prefix: p === undefined ? (version === 4 ? 32 : 128) : Number(p), version };
}

/** (network address, netmask) of a CIDR as strings, like netaddr's IPNetwork(cidr).network / .netmask. */
export function netAndMask(cidr: string): { network: string; netmask: string } {
  const c = parseCidr(cidr);
  const width = ipBits(c.version);
  // The cache holds quantum-server's canonical CIDRs; a malformed one never throws here (bad prefix: a host
  // mask, bad address: all zeros).
  const prefix = Number.isInteger(c.prefix) && c.prefix >= 0 && c.prefix <= width ? c.prefix : width;
  const all = (1n << BigInt(width)) - 1n;
  const mask = (all << BigInt(width - prefix)) & all;
  const value = parseIp(c.ip)?.value ?? 0n;
  return { network: formatIp(value & mask, c.version), netmask: formatIp(mask, c.version) };
}

/** True if ip lies inside cidr (FixedIP.is_in_subnet). */
export function ipInCidr(ip: string, cidr: string): boolean {
  const c = parseCidr(cidr);
  const bl = new BlockList();
  try {
    bl.addSubnet(c.ip, c.prefix, c.version === 4 ? 'ipv4' : 'ipv6');
    return bl.check(ip, isIPv4(ip) ? 'ipv4' : 'ipv6');
  } catch {
    return false;
  }
}

const firstSubnet = (vif: Vif, version: 4 | 6): NwSubnet | undefined => vif.network!.subnets.find((s) => s.version === version);

function linkMtu(vif: Vif): number | null {
  for (const s of vif.network!.subnets) if (s.meta.dhcp_server) return null;
  return vif.network!.meta.mtu ?? null;
}

function dnsServices(subnet: NwSubnet): { type: string; address: string | null }[] {
  if (!subnet.dns || subnet.dns.length === 0) return [];
  return subnet.dns.map((ip) => ({ type: 'dns', address: ip.address }));
}

function defaultRoute(version: 4 | 6, subnet: NwSubnet): { network: string; netmask: string; gateway: string }[] {
  const gw = subnet.gateway?.address;
  if (!gw) return [];
  return version === 4 ? [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: gw }] : [{ network: '::', netmask: '::', gateway: gw }];
}

function getNets(vif: Vif, subnet: NwSubnet, version: 4 | 6, netNum: number, linkId: string): Record<string, unknown> {
  let netType = '';
  if (subnet.meta.ipv6_address_mode !== undefined && subnet.meta.ipv6_address_mode !== null) {
    netType = `_${subnet.meta.ipv6_address_mode}`;
  } else if (subnet.meta.dhcp_server !== undefined && subnet.meta.dhcp_server !== null) {
    return { id: `network${netNum}`, type: `ipv${version}_dhcp`, link: linkId, network_id: vif.network!.id };
  }
  const ip = subnet.ips[0]!;
  // model.get_netmask: dotted mask for v4; netaddr's netmask string for v6 in _get_nets.
  const netmask = netAndMask(subnet.cidr).netmask;
  const routes: Record<string, string>[] = defaultRoute(version, subnet);
  for (const r of subnet.routes) {
    const nm = netAndMask(r.cidr);
    routes.push({ network: nm.network, netmask: nm.netmask, gateway: r.gateway.address ?? '' });
  }
  return {
    id: `network${netNum}`,
    type: `ipv${version}${netType}`,
    link: linkId,
    ip_address: ip.address,
    netmask,
    routes,
    network_id: vif.network!.id,
    services: dnsServices(subnet),
  };
}

/** get_network_metadata: {links, networks, services}, or null without network info. */
export function getNetworkMetadata(networkInfo: NetworkInfo): Record<string, unknown> | null {
  if (!networkInfo || networkInfo.length === 0) return null;
  const nets: Record<string, unknown>[] = [];
  const links: Record<string, unknown>[] = [];
  const services: { type: string; address: string | null }[] = [];
  const seen = new Set<string>();
  const addServices = (s: NwSubnet) => {
    for (const d of dnsServices(s)) {
      const k = `${d.type}|${d.address}`;
      if (!seen.has(k)) {
        seen.add(k);
        services.push(d);
      }
    }
  };
  let ifcNum = -1;
  let netNum = -1;
  for (const vif of networkInfo) {
    if (!vif.network || !vif.network.subnets || vif.network.subnets.length === 0) continue;
    const v4 = firstSubnet(vif, 4);
    const v6 = firstSubnet(vif, 6);
    ifcNum++;
    let link: Record<string, unknown> | undefined;
    if (v4 || v6) {
      link = {
        id: vif.devname || `interface${ifcNum}`,
        vif_id: vif.id,
        type: vif.type !== null && LEGACY_EXPOSED_VIF_TYPES.has(vif.type) ? vif.type : 'phy',
        mtu: linkMtu(vif),
        ethernet_mac_address: vif.address,
      };
      links.push(link);
    }
    if (v4 && v4.ips.length) {
      netNum++;
      nets.push(getNets(vif, v4, 4, netNum, link!.id as string));
      addServices(v4);
    }
    if (v6 && v6.ips.length) {
      netNum++;
      nets.push(getNets(vif, v6, 6, netNum, link!.id as string));
      addServices(v6);
    }
  }
  return { links, networks: nets, services };
}

/** get_ec2_ip_info: fixed v4 / v6 and floating addresses in VIF, subnet, IP order. */
export function getEc2IpInfo(networkInfo: NetworkInfo): { fixed_ips: string[]; fixed_ip6s: string[]; floating_ips: string[] } {
  const fixed: string[] = [];
  const fixed6: string[] = [];
  const floating: string[] = [];
  for (const vif of networkInfo) {
    if (!vif.network) continue;
    for (const s of vif.network.subnets) {
      for (const ip of s.ips) {
        if (ip.address === null) continue;
        if (ip.version === 4 || (ip.version === null && isIPv4(ip.address))) fixed.push(ip.address);
        else fixed6.push(ip.address);
        for (const f of ip.floating_ips ?? []) if (f.address) floating.push(f.address);
      }
    }
  }
  return { fixed_ips: fixed, fixed_ip6s: fixed6, floating_ips: floating };
}
