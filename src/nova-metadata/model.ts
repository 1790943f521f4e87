// The instance as the metadata API sees it (Nova's Instance object with the attributes
// get_metadata_by_instance_id loads), and Nova's network info model as the info cache stores it.

export interface NwIp {
  address: string | null;
  type: 'fixed' | 'floating' | 'gateway' | 'dns';
  version: 4 | 6 | null;
  floating_ips?: NwIp[];
}

export interface NwRoute {
  cidr: string;
  gateway: NwIp;
}

export interface NwSubnet {
  cidr: string;
  version: 4 | 6;
  gateway: NwIp;
  ips: NwIp[];
  dns: NwIp[];
  routes: NwRoute[];
  /** dhcp_server (IP, or null when DHCP is on but there is no gateway), ipv6_address_mode */
  meta: { dhcp_server?: string | null; ipv6_address_mode?: string };
}

export interface NwNetwork {
  id: string;
  bridge: string | null;
  label: string | null;
  subnets: NwSubnet[];
  meta: { injected: boolean; tenant_id: string; mtu: number | null; should_create_bridge?: boolean; physical_network?: string | null; tunneled?: boolean };
}

export interface Vif {
  id: string;
  address: string;
  type: string | null;
  devname: string | null;
  vnic_type: string;
  active: boolean;
  ovs_interfaceid: string | null;
  preserve_on_delete: boolean;
  details: Record<string, unknown>;
  profile: Record<string, unknown>;
  network: NwNetwork | null;
}

export type NetworkInfo = Vif[];

export interface KeyPairCopy {
  name: string;
  type: string;
  public_key: string;
}

export interface Bdm {
  source_type: string;
  destination_type: string | null;
  device_name: string | null;
  guest_format: string | null;
}

/** Device metadata as Nova's virt_device_metadata objects carry it (fields present only if set). */
export interface DeviceMeta {
  type: 'nic' | 'disk' | string;
  bus?: { type: string; address?: string };
  mac?: string;
  vlan?: number;
  vf_trusted?: boolean;
  serial?: string;
  path?: string;
  tags?: string[];
}

export interface InstanceRecord {
  uuid: string;
  display_name: string;
  hostname: string;
  project_id: string;
  user_id: string;
  image_ref: string;
  flavor_name: string;
  key_name: string | null;
  key_data: string | null;
  keypairs: KeyPairCopy[];
  user_data: string | null;
  launch_index: number;
  reservation_id: string;
  availability_zone: string | null;
  root_device_name: string | null;
  default_ephemeral_device: string | null;
  default_swap_device: string | null;
  security_groups: string[];
  /** Server metadata in row order (a Map keeps integer-like keys in place). */
  metadata: Map<string, string>;
  system_metadata: Map<string, string>;
  network_info: NetworkInfo;
  bdms: Bdm[];
  device_metadata: { devices: DeviceMeta[] } | null;
  numa_topology: { cells: { pcpuset: number[] }[] } | null;
  ec2_ids: { instance_id: string; ami_id: string | null; kernel_id: string | null; ramdisk_id: string | null };
}
