// Ports for a new server through quantum-server, and the network info cache built from them as
// nova/network/neutron.py does (_build_network_info_model, _get_subnets_from_port, _nw_info_build_network).
import { ApiError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Network, Port, QuantumClient, Subnet } from '../common/quantum-client.js';
import type { NetworkInfo, NwIp, NwSubnet, Vif } from '../nova-metadata/model.js';
import { ipInCidr } from '../nova-metadata/netutils.js';
import { isIPv4 } from 'node:net';

const NIC_NAME_LEN = 14;

export interface RequestedNetwork {
  uuid?: string;
  fixed_ip?: string;
  port?: string;
}

export interface AllocatedPort {
  port: Port;
  /** A port the user passed in: unbound (not deleted) when the server goes. */
  preexisting: boolean;
}

/** Nova's fault for a quantum error while allocating (status kept: 400/404/409 map to the user). */
function allocationFault(e: unknown, what: string): ApiError {
  if (e instanceof ApiError) {
    if (e.status === 404) return new ApiError(400, 'badRequest', `${what} could not be found.`);
    if (e.status === 409) {
      if (e.type === 'IpAddressInUse') return new ApiError(409, 'conflict', e.message);
      return new ApiError(409, 'conflict', e.message);
    }
    if (e.status === 400) return new ApiError(400, 'badRequest', e.message);
    if (e.status === 503) return new ApiError(503, 'serviceUnavailable', e.message);
    return new ApiError(500, 'computeFault', e.message);
  }
  return new ApiError(500, 'computeFault', (e as Error).message ?? String(e));
}

/** Networks the server lands on when the request names none (Nova: the tenant's own, else shared; >1 is ambiguous). */
export async function defaultNetworks(q: QuantumClient, projectId: string): Promise<RequestedNetwork[]> {
  const all = await q.listNetworks();
  let nets = all.filter((n) => n.tenant_id === projectId && !n.shared);
  if (nets.length === 0) nets = all.filter((n) => n.shared);
  if (nets.length > 1) throw new ApiError(409, 'conflict', 'Multiple possible networks found, use a Network ID to be more specific.');
  return nets.map((n) => ({ uuid: n.id }));
}

/**
 * Create (or bind) one port per requested network. On any failure the ports created so far are
 * deleted again and bound pre-existing ports are released, so no half state remains.
 */
export async function allocatePorts(q: QuantumClient, log: Logger, req: { instanceUuid: string; projectId: string; az: string; networks: RequestedNetwork[] }): Promise<AllocatedPort[]> {
  const done: AllocatedPort[] = [];
  try {
    for (const n of req.networks) {
      if (n.port) {
        let p: Port;
        try {
          p = await q.showPort(n.port);
        } catch (e) {
          throw allocationFault(e, `Port ${n.port}`);
        }
        if (p.device_id) throw new ApiError(409, 'conflict', `Port ${n.port} is still in use.`);
        try {
          p = await q.updatePort(n.port, { device_id: req.instanceUuid, device_owner: `compute:${req.az}` });
        } catch (e) {
          throw allocationFault(e, `Port ${n.port}`);
        }
        done.push({ port: p, preexisting: true });
        continue;
      }
      const body: Record<string, unknown> = {
        network_id: n.uuid,
        device_id: req.instanceUuid,
        device_owner: `compute:${req.az}`,
        tenant_id: req.projectId,
        admin_state_up: true,
      };
      if (n.fixed_ip) body.fixed_ips = [{ ip_address: n.fixed_ip }];
      try {
        done.push({ port: await q.createPort(body, req.projectId), preexisting: false });
      } catch (e) {
        if (e instanceof ApiError && e.status === 409 && n.fixed_ip) {
          throw new ApiError(409, 'conflict', `Fixed IP address ${n.fixed_ip} is already in use on instance.`);
        }
        throw allocationFault(e, `Network ${n.uuid}`);
      }
    }
    return done;
  } catch (e) {
    await releasePorts(q, log, done);
    throw e;
  }
}

/** Delete the ports Nova created; unbind the ones the user brought (preserve_on_delete). */
export async function releasePorts(q: QuantumClient, log: Logger, ports: { id: string; preexisting: boolean }[] | AllocatedPort[]): Promise<void> {
  for (const x of ports) {
    const id = 'port' in x ? x.port.id : x.id;
    const pre = x.preexisting;
    try {
      if (pre) await q.updatePort(id, { device_id: '', device_owner: '' });
      else await q.deletePort(id);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) continue;
      log.error({ err: e, port: id }, 'failed to release port');
    }
  }
}

async function subnetsFromPort(q: QuantumClient, port: Port): Promise<NwSubnet[]> {
  if (!port.fixed_ips.length) return [];
  const ids = [...new Set(port.fixed_ips.map((f) => f.subnet_id))];
  const subnets: Subnet[] = await q.listSubnets({ id: ids });
  const out: NwSubnet[] = [];
  for (const s of subnets) {
    const meta: NwSubnet['meta'] = {};
    if (s.ipv6_address_mode) meta.ipv6_address_mode = s.ipv6_address_mode;
    const dhcpPorts = await q.listPorts({ network_id: s.network_id, device_owner: 'network:dhcp' });
    for (const p of dhcpPorts) {
      const ip = p.fixed_ips.find((f) => f.subnet_id === s.id);
      if (ip) meta.dhcp_server = ip.ip_address;
    }
    // Nova: DHCP on but no DHCP port yet → the gateway stands in (even when it is null).
    if (s.enable_dhcp && !('dhcp_server' in meta)) meta.dhcp_server = s.gateway_ip;
    const version = s.ip_version === 6 ? 6 : 4;
    out.push({
      cidr: s.cidr,
      version,
      gateway: { address: s.gateway_ip, type: 'gateway', version: s.gateway_ip ? version : null },
      ips: [],
      dns: (s.dns_nameservers ?? []).map((d): NwIp => ({ address: d, type: 'dns', version: isIPv4(d) ? 4 : 6 })),
      routes: (s.host_routes ?? []).map((r) => ({ cidr: r.destination, gateway: { address: r.nexthop, type: 'gateway', version: isIPv4(r.nexthop) ? 4 : 6 } })),
      meta,
    });
  }
  return out;
}

/** One VIF per port, in port order: VIF type bridge, tap devname, brq bridge, label and mtu from the network. */
export async function buildNetworkInfo(q: QuantumClient, ports: AllocatedPort[]): Promise<NetworkInfo> {
  const nets = new Map<string, Network>();
  const info: NetworkInfo = [];
  for (const { port, preexisting } of ports) {
    let net = nets.get(port.network_id);
    if (!net) {
      net = await q.showNetwork(port.network_id);
      nets.set(net.id, net);
    }
    const subnets = await subnetsFromPort(q, port);
    for (const s of subnets) {
      s.ips = port.fixed_ips
        .filter((f) => ipInCidr(f.ip_address, s.cidr))
        .map((f): NwIp => ({ address: f.ip_address, type: 'fixed', version: isIPv4(f.ip_address) ? 4 : 6, floating_ips: [] }));
    }
    const vif: Vif = {
      id: port.id,
      address: port.mac_address,
      type: 'bridge',
      devname: `tap${port.id}`.slice(0, NIC_NAME_LEN),
      vnic_type: 'normal',
      active: port.admin_state_up === false || port.status === 'ACTIVE',
      ovs_interfaceid: null,
      preserve_on_delete: preexisting,
      details: {},
      profile: {},
      network: {
        id: port.network_id,
        bridge: `brq${port.network_id}`.slice(0, NIC_NAME_LEN),
        label: net.name,
        subnets,
        meta: { injected: false, tenant_id: net.tenant_id, mtu: net.mtu ?? 1500, should_create_bridge: true },
      },
    };
    info.push(vif);
  }
  return info;
}
