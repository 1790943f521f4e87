// dnsmasq as Quantum's DHCP driver ran it: static ranges per subnet, a hosts file with one line per fixed IP,
// an opts file with per-subnet options, and the isolated-metadata decisions of neutron/agent/linux/dhcp.py.
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { Network, Port, Subnet } from '../common/quantum-client.js';
import { ROUTER_INTERFACE_OWNERS } from '../common/quantum-client.js';
import { cidrContains, formatIp, parseCidrLoose, type Cidr } from '../common/ipaddr.js';

export const METADATA_IP = '169.254.169.254';
export const METADATA_CIDR = '169.254.169.254/32';
export const METADATA_DEFAULT_PORT = 80;
/** Windows 2003's classless static route option (Neutron's WIN2k3_STATIC_DNS). */
export const WIN2K3_STATIC_ROUTE_OPT = '249';

export interface DhcpMetadataConf {
  enable_isolated_metadata: boolean;
  force_metadata: boolean;
  enable_metadata_network: boolean;
}

export const dhcpSubnets = (subnets: readonly Subnet[]) => subnets.filter((s) => s.enable_dhcp);

/** Neutron's tag per subnet: Grizzly numbered them tag0, tag1... in subnet order. */
export const subnetTag = (i: number) => `tag${i}`;

/** The network address of a CIDR ("10.1.1.7/24" → "10.1.1.0", "2001:db8::7/64" → "2001:db8::"); the text as given if it does not parse. */
export function networkAddress(cidr: string): string {
  const c = parseCidrLoose(cidr);
  return c ? formatIp(c.network, c.version) : (cidr.split('/')[0] ?? cidr);
}

/** The link-local metadata network (enable_metadata_network: a subnet inside it is a metadata network). */
const LINK_LOCAL_V4 = parseCidrLoose('169.254.0.0/16')!;
const isInside = (outer: Cidr, cidr: string): boolean => {
  const c = parseCidrLoose(cidr);
  return !!c && cidrContains(outer, { version: c.version, value: c.network });
};

/**
 * Subnet id → isolated? (Zed get_isolated_subnets): a subnet is isolated when no router interface port on the
 * network holds its gateway IP; a subnet without a gateway is isolated (Grizzly's rule, which Zed keeps).
 */
export function isolatedSubnets(subnets: readonly Subnet[], ports: readonly Port[]): Map<string, boolean> {
  const out = new Map<string, boolean>();
  for (const s of subnets) out.set(s.id, true);
  for (const p of ports) {
    if (!ROUTER_INTERFACE_OWNERS.includes(p.device_owner)) continue;
    for (const ip of p.fixed_ips) {
      const s = subnets.find((x) => x.id === ip.subnet_id);
      if (s && s.gateway_ip && s.gateway_ip === ip.ip_address) out.set(s.id, false);
    }
  }
  return out;
}

/** Zed should_enable_metadata, branch for branch. */
export function shouldEnableMetadata(conf: DhcpMetadataConf, subnets: readonly Subnet[], ports: readonly Port[]): boolean {
  const dhcp = dhcpSubnets(subnets);
  if (dhcp.length === 0) return false;
  if (conf.force_metadata) return true;
  if (!conf.enable_isolated_metadata) return false;
  if (conf.enable_metadata_network && dhcp.some((s) => s.ip_version === 4 && isInside(LINK_LOCAL_V4, s.cidr))) return true;
  const iso = isolatedSubnets(subnets, ports);
  return dhcp.some((s) => iso.get(s.id) === true);
}

/** With enable_metadata_network, a network with router ports is served keyed by the (first) router's id. */
export function metadataRouterId(conf: DhcpMetadataConf, ports: readonly Port[]): { routerId?: string; several: boolean } {
  if (!conf.enable_metadata_network) return { several: false };
  const routers = ports.filter((p) => ROUTER_INTERFACE_OWNERS.includes(p.device_owner)).map((p) => p.device_id);
  const uniq = [...new Set(routers)];
  return uniq.length ? { routerId: uniq[0]!, several: uniq.length > 1 } : { several: false };
}

/** Hosts file: `<mac>,host-<ip-dashed>.<domain>,<ip>` per fixed IP on a DHCP-enabled subnet (Grizzly's format). */
export function buildHostsFile(ports: readonly Port[], subnets: readonly Subnet[], domain: string): string {
  const dhcpIds = new Set(dhcpSubnets(subnets).map((s) => s.id));
  let buf = '';
  for (const p of ports) {
    for (const ip of p.fixed_ips) {
      if (!dhcpIds.has(ip.subnet_id)) continue;
      const name = `host-${ip.ip_address.replace(/[.:]/g, '-')}.${domain}`;
      buf += `${p.mac_address},${name},${ip.ip_address}\n`;
    }
  }
  return buf;
}

export interface OptsInput {
  subnets: readonly Subnet[];
  ports: readonly Port[];
  /** The DHCP port's IP on each subnet (subnet id → ip). */
  dhcpIpBySubnet: ReadonlyMap<string, string>;
  conf: DhcpMetadataConf;
}

function opt(tag: string, name: string, value?: string): string {
  const key = /^\d+$/.test(name) ? name : `option:${name}`;
  return value === undefined ? `tag:${tag},${key}` : `tag:${tag},${key},${value}`;
}

/** Opts file, as Zed's _generate_opts_per_subnet writes it for IPv4 subnets. */
export function buildOptsFile(inp: OptsInput): string {
  const iso = isolatedSubnets(inp.subnets, inp.ports);
  const v4 = dhcpSubnets(inp.subnets).filter((s) => s.ip_version === 4);
  const lines: string[] = [];
  v4.forEach((s, i) => {
    const tag = subnetTag(i);
    if (s.dns_nameservers.length) lines.push(opt(tag, 'dns-server', s.dns_nameservers.join(',')));
    let gateway = s.gateway_ip ?? undefined;
    const routes: string[] = [];
    for (const hr of s.host_routes) {
      if (hr.destination === '0.0.0.0/0') {
        if (!gateway) gateway = hr.nexthop;
      } else routes.push(`${hr.destination},${hr.nexthop}`);
    }
    const isolated = iso.get(s.id) === true;
    if (inp.conf.force_metadata || (isolated && inp.conf.enable_isolated_metadata)) {
      const dhcpIp = inp.dhcpIpBySubnet.get(s.id);
      if (dhcpIp) routes.push(`${METADATA_CIDR},${dhcpIp}`);
    } else if (!isolated && gateway) {
      routes.push(`${METADATA_CIDR},${gateway}`);
    }
    // Other IPv4 subnets on the same network are on-link.
    for (const o of v4) if (o.id !== s.id && o.cidr !== s.cidr) routes.unshift(`${o.cidr},0.0.0.0`);
    if (routes.length) {
      if (gateway) routes.push(`0.0.0.0/0,${gateway}`);
      lines.push(opt(tag, 'classless-static-route', routes.join(',')));
      lines.push(opt(tag, WIN2K3_STATIC_ROUTE_OPT, routes.join(',')));
    }
    lines.push(gateway ? opt(tag, 'router', gateway) : opt(tag, 'router'));
  });
  return lines.length ? `${lines.join('\n')}\n` : '';
}

export interface DnsmasqArgs {
  networkId: string;
  /** $state_path/dhcp/<net> */
  confDir: string;
  interfaceName: string;
  subnets: readonly Subnet[];
  leaseDuration: number;
  domain: string;
  leaseMax?: number | undefined;
  configFile?: string | undefined;
}

export const dhcpConfDir = (statePath: string, networkId: string) => join(statePath, 'dhcp', networkId);

/** dnsmasq's argv (Grizzly's Dnsmasq.spawn_process, with the pid file given by the caller). */
export function buildDnsmasqArgv(a: DnsmasqArgs, pidFile: string): string[] {
  const argv = [
    'dnsmasq',
    '--no-hosts',
    '--no-resolv',
    '--strict-order',
    '--except-interface=lo',
    `--pid-file=${pidFile}`,
    `--dhcp-hostsfile=${join(a.confDir, 'host')}`,
    `--dhcp-optsfile=${join(a.confDir, 'opts')}`,
    '--leasefile-ro',
    '--bind-interfaces',
    `--interface=${a.interfaceName}`,
  ];
  dhcpSubnets(a.subnets)
    .filter((s) => s.ip_version === 4)
    .forEach((s, i) => {
      const lease = a.leaseDuration === -1 ? 'infinite' : `${a.leaseDuration}s`;
      argv.push(`--dhcp-range=set:${subnetTag(i)},${networkAddress(s.cidr)},static,${lease}`);
    });
  if (a.leaseMax) argv.push(`--dhcp-lease-max=${a.leaseMax}`);
  if (a.configFile) argv.push(`--conf-file=${a.configFile}`);
  if (a.domain) argv.push(`--domain=${a.domain}`);
  return argv;
}

/** Write a file only if its content changes (atomic rename); returns whether it changed. */
export function writeIfChanged(path: string, content: string): boolean {
  let old: string | undefined;
  try {
    old = readFileSync(path, 'utf8');
  } catch {
    old = undefined;
  }
  if (old === content) return false;
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(`${path}.tmp`, content, { mode: 0o644 });
  renameSync(`${path}.tmp`, path);
  return true;
}

/** The network's admin state: dnsmasq serves only networks that are up. */
export const networkServed = (n: Network, subnets: readonly Subnet[]) => n.admin_state_up && dhcpSubnets(subnets).length > 0;
