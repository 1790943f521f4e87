// Tables owned by quantum-server (Neutron's models, trimmed to what the metadata stack uses).
import type { Generated, Kysely, Migration } from 'kysely';

export interface NetworkRow {
  id: string;
  tenant_id: string;
  name: string;
  status: string;
  admin_state_up: number;
  shared: number;
  mtu: number;
  created_at: string;
  updated_at: string;
}

export interface SubnetRow {
  id: string;
  tenant_id: string;
  network_id: string;
  name: string;
  cidr: string;
  ip_version: number;
  gateway_ip: string | null;
  enable_dhcp: number;
  /** JSON: [{start, end}] */
  allocation_pools: string;
  /** JSON: ["8.8.8.8"] */
  dns_nameservers: string;
  /** JSON: [{destination, nexthop}] */
  host_routes: string;
  ipv6_ra_mode: string | null;
  ipv6_address_mode: string | null;
  created_at: string;
  updated_at: string;
}

export interface PortRow {
  id: string;
  tenant_id: string;
  network_id: string;
  name: string;
  mac_address: string;
  device_id: string;
  device_owner: string;
  admin_state_up: number;
  status: string;
  binding_host_id: string;
  created_at: string;
  updated_at: string;
}

export interface IpAllocationRow {
  port_id: string;
  subnet_id: string;
  network_id: string;
  ip_address: string;
}

export interface RouterRow {
  id: string;
  tenant_id: string;
  name: string;
  status: string;
  admin_state_up: number;
  /** JSON or null */
  external_gateway_info: string | null;
  created_at: string;
  updated_at: string;
}

export interface AgentRow {
  id: string;
  agent_type: string;
  binary: string;
  topic: string;
  host: string;
  admin_state_up: number;
  created_at: string;
  started_at: string;
  heartbeat_timestamp: string;
  /** JSON */
  configurations: string;
  description: string | null;
}

/** Neutron's RouterL3AgentBinding: which L3 agent hosts a router. */
export interface RouterL3AgentBindingRow {
  router_id: string;
  l3_agent_id: string;
}

/** Neutron's NetworkDhcpAgentBinding: which DHCP agents serve a network. */
export interface NetworkDhcpAgentBindingRow {
  network_id: string;
  dhcp_agent_id: string;
}

/**
 * What quantum-server told (or would have told) the agents: every notification cast is also written here, so an
 * agent without RabbitMQ polls only what changed since its cursor, and one whose broker was down catches up.
 */
export interface AgentNotificationRow {
  id: Generated<number>;
  /** l3_agent, dhcp_agent, or notifications (port events for the metadata agents). */
  topic: string;
  /** The agent host it is for; null: every host of the topic (fanout). */
  host: string | null;
  /** The RPC method (routers_updated, port_create_end...) or notification event type. */
  method: string;
  /** The router (l3_agent) or network (dhcp_agent) to resync, or the port (notifications). */
  resource_id: string;
  /** JSON, notifications only: the payload (the port, with its fixed IPs). */
  payload: string | null;
  created_at: string;
}

export interface QuantumDatabase {
  networks: NetworkRow;
  subnets: SubnetRow;
  ports: PortRow;
  ipallocations: IpAllocationRow;
  routers: RouterRow;
  agents: AgentRow;
  routerl3agentbindings: RouterL3AgentBindingRow;
  networkdhcpagentbindings: NetworkDhcpAgentBindingRow;
  agentnotifications: AgentNotificationRow;
}

export const quantumMigrations: Record<string, Migration> = {
  '001_initial': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('networks')
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('name', 'varchar(255)', (c) => c.notNull().defaultTo(''))
        .addColumn('status', 'varchar(16)', (c) => c.notNull())
        .addColumn('admin_state_up', 'integer', (c) => c.notNull())
        .addColumn('shared', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('mtu', 'integer', (c) => c.notNull().defaultTo(1500))
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('ix_networks_tenant_id').on('networks').column('tenant_id').execute();

      await db.schema
        .createTable('subnets')
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('network_id', 'varchar(36)', (c) => c.notNull().references('networks.id').onDelete('cascade'))
        .addColumn('name', 'varchar(255)', (c) => c.notNull().defaultTo(''))
        .addColumn('cidr', 'varchar(64)', (c) => c.notNull())
        .addColumn('ip_version', 'integer', (c) => c.notNull())
        .addColumn('gateway_ip', 'varchar(64)')
        .addColumn('enable_dhcp', 'integer', (c) => c.notNull())
        .addColumn('allocation_pools', 'text', (c) => c.notNull())
        .addColumn('dns_nameservers', 'text', (c) => c.notNull())
        .addColumn('host_routes', 'text', (c) => c.notNull())
        .addColumn('ipv6_ra_mode', 'varchar(32)')
        .addColumn('ipv6_address_mode', 'varchar(32)')
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('ix_subnets_network_id').on('subnets').column('network_id').execute();

      await db.schema
        .createTable('ports')
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('network_id', 'varchar(36)', (c) => c.notNull().references('networks.id'))
        .addColumn('name', 'varchar(255)', (c) => c.notNull().defaultTo(''))
        .addColumn('mac_address', 'varchar(32)', (c) => c.notNull())
        .addColumn('device_id', 'varchar(255)', (c) => c.notNull().defaultTo(''))
        .addColumn('device_owner', 'varchar(255)', (c) => c.notNull().defaultTo(''))
        .addColumn('admin_state_up', 'integer', (c) => c.notNull())
        .addColumn('status', 'varchar(16)', (c) => c.notNull())
        .addColumn('binding_host_id', 'varchar(255)', (c) => c.notNull().defaultTo(''))
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
        .addUniqueConstraint('uniq_ports0network_id0mac_address', ['network_id', 'mac_address'])
        .execute();
      await db.schema.createIndex('ix_ports_device_id_device_owner').on('ports').columns(['device_id', 'device_owner']).execute();
      await db.schema.createIndex('ix_ports_network_id_device_owner').on('ports').columns(['network_id', 'device_owner']).execute();
      await db.schema.createIndex('ix_ports_mac_address').on('ports').column('mac_address').execute();

      await db.schema
        .createTable('ipallocations')
        .addColumn('port_id', 'varchar(36)', (c) => c.notNull().references('ports.id').onDelete('cascade'))
        .addColumn('subnet_id', 'varchar(36)', (c) => c.notNull().references('subnets.id'))
        .addColumn('network_id', 'varchar(36)', (c) => c.notNull())
        .addColumn('ip_address', 'varchar(64)', (c) => c.notNull())
        .addPrimaryKeyConstraint('pk_ipallocations', ['ip_address', 'subnet_id'])
        .execute();
      // The metadata agent's lookup: (ip_address, network_id) must be an index seek, never a scan.
      await db.schema.createIndex('ix_ipallocations_ip_network').on('ipallocations').columns(['ip_address', 'network_id']).execute();
      await db.schema.createIndex('ix_ipallocations_port_id').on('ipallocations').column('port_id').execute();

      await db.schema
        .createTable('routers')
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('name', 'varchar(255)', (c) => c.notNull().defaultTo(''))
        .addColumn('status', 'varchar(16)', (c) => c.notNull())
        .addColumn('admin_state_up', 'integer', (c) => c.notNull())
        .addColumn('external_gateway_info', 'text')
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('agents')
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('agent_type', 'varchar(255)', (c) => c.notNull())
        .addColumn('binary', 'varchar(255)', (c) => c.notNull())
        .addColumn('topic', 'varchar(255)', (c) => c.notNull())
        .addColumn('host', 'varchar(255)', (c) => c.notNull())
        .addColumn('admin_state_up', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('started_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('heartbeat_timestamp', 'varchar(32)', (c) => c.notNull())
        .addColumn('configurations', 'text', (c) => c.notNull())
        .addColumn('description', 'text')
        .addUniqueConstraint('uniq_agents0agent_type0host', ['agent_type', 'host'])
        .execute();
    },
  },
  // Allocation scans a subnet's addresses on every port create, and subnet delete / fixed_ips=subnet_id filter by it:
  // the (ip_address, subnet_id) key cannot serve subnet_id alone.
  '002_ipallocations_subnet_id': {
    async up(db: Kysely<unknown>) {
      await db.schema.createIndex('ix_ipallocations_subnet_id').on('ipallocations').column('subnet_id').execute();
    },
  },
  // Neutron's agent schedulers (routerl3agentbindings, networkdhcpagentbindings) and the notification log.
  '003_agent_scheduling': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('routerl3agentbindings')
        // One agent per router (no HA routers here): the key makes two schedulers racing for a router agree.
        .addColumn('router_id', 'varchar(36)', (c) => c.primaryKey().references('routers.id').onDelete('cascade'))
        .addColumn('l3_agent_id', 'varchar(36)', (c) => c.notNull().references('agents.id').onDelete('cascade'))
        .execute();
      await db.schema.createIndex('ix_routerl3agentbindings_l3_agent_id').on('routerl3agentbindings').column('l3_agent_id').execute();
      await db.schema
        .createTable('networkdhcpagentbindings')
        .addColumn('network_id', 'varchar(36)', (c) => c.notNull().references('networks.id').onDelete('cascade'))
        .addColumn('dhcp_agent_id', 'varchar(36)', (c) => c.notNull().references('agents.id').onDelete('cascade'))
        .addPrimaryKeyConstraint('pk_networkdhcpagentbindings', ['network_id', 'dhcp_agent_id'])
        .execute();
      await db.schema.createIndex('ix_networkdhcpagentbindings_dhcp_agent_id').on('networkdhcpagentbindings').column('dhcp_agent_id').execute();
      await db.schema
        .createTable('agentnotifications')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('topic', 'varchar(64)', (c) => c.notNull())
        .addColumn('host', 'varchar(255)')
        .addColumn('method', 'varchar(64)', (c) => c.notNull())
        .addColumn('resource_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('payload', 'text')
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .execute();
      // An agent's poll: its topic, past its cursor.
      await db.schema.createIndex('ix_agentnotifications_topic_id').on('agentnotifications').columns(['topic', 'id']).execute();
    },
  },
};
