// Tables owned by nova-api (Nova's models, trimmed to what the compute subset and the metadata API use).
import { sql, type Kysely, type Migration } from 'kysely';

export interface InstanceRow {
  /** Nova's integer id; the EC2 id comes from ec2_instances, as Nova does it. */
  id: number;
  uuid: string;
  display_name: string;
  hostname: string;
  project_id: string;
  user_id: string;
  image_ref: string;
  kernel_id: string | null;
  ramdisk_id: string | null;
  /** JSON: the flavor as it was at boot (Nova keeps it in instance_extra.flavor). */
  flavor: string;
  key_name: string | null;
  key_data: string | null;
  /** JSON: [{name, type, public_key}] copied at boot (instance_extra.keypairs). */
  keypairs: string;
  /** base64, as the API received it */
  user_data: string | null;
  launch_index: number;
  reservation_id: string;
  availability_zone: string | null;
  root_device_name: string | null;
  default_ephemeral_device: string | null;
  default_swap_device: string | null;
  /** JSON: ["default"] */
  security_groups: string;
  /** JSON or null: {devices: [...]} (instance_extra.device_metadata) */
  device_metadata: string | null;
  /** JSON or null: {cells: [{pcpuset: [..]}]} (instance_extra.numa_topology) */
  numa_topology: string | null;
  vm_state: string;
  power_state: number;
  task_state: string | null;
  access_ip_v4: string | null;
  access_ip_v6: string | null;
  created_at: string;
  updated_at: string;
  launched_at: string | null;
}

export interface KeyValueRow {
  id: number;
  instance_uuid: string;
  key: string;
  value: string;
}

export interface KeyPairRow {
  id: number;
  name: string;
  user_id: string;
  fingerprint: string;
  public_key: string;
  type: string;
  created_at: string;
}

export interface FlavorRow {
  id: number;
  flavorid: string;
  name: string;
  memory_mb: number;
  vcpus: number;
  root_gb: number;
  ephemeral_gb: number;
  swap: number;
  rxtx_factor: number;
  is_public: number;
  disabled: number;
  description: string | null;
  created_at: string;
}

export interface InfoCacheRow {
  instance_uuid: string;
  /** JSON: Nova's NetworkInfo model (list of VIFs) */
  network_info: string;
  updated_at: string;
}

export interface BlockDeviceMappingRow {
  id: number;
  instance_uuid: string;
  source_type: string;
  destination_type: string | null;
  device_name: string | null;
  guest_format: string | null;
  volume_id: string | null;
  image_id: string | null;
  boot_index: number | null;
  delete_on_termination: number;
  volume_size: number | null;
  disk_bus: string | null;
  device_type: string | null;
  tag: string | null;
}

export interface UuidMappingRow {
  id: number;
  uuid: string;
}

export interface NovaDatabase {
  instances: InstanceRow;
  instance_metadata: KeyValueRow;
  instance_system_metadata: KeyValueRow;
  key_pairs: KeyPairRow;
  flavors: FlavorRow;
  instance_info_caches: InfoCacheRow;
  block_device_mapping: BlockDeviceMappingRow;
  ec2_instances: UuidMappingRow;
  s3_images: UuidMappingRow;
}

/** Nova's classic default flavors (nova-manage's old defaults): id, name, MB, vCPUs, root GB. */
/**
 * The state columns of a server as created here: ACTIVE and running at once (there is no scheduler or
 * hypervisor), no access IPs, all timestamps the creation time.
 */
export function runningInstanceState(now: string): Pick<InstanceRow, 'vm_state' | 'power_state' | 'task_state' | 'access_ip_v4' | 'access_ip_v6' | 'created_at' | 'updated_at' | 'launched_at'> {
  return { vm_state: 'active', power_state: 1, task_state: null, access_ip_v4: null, access_ip_v6: null, created_at: now, updated_at: now, launched_at: now };
}

export const CLASSIC_FLAVORS: ReadonlyArray<readonly [string, string, number, number, number]> = [
  ['1', 'm1.tiny', 512, 1, 1],
  ['2', 'm1.small', 2048, 1, 20],
  ['3', 'm1.medium', 4096, 2, 40],
  ['4', 'm1.large', 8192, 4, 80],
  ['5', 'm1.xlarge', 16384, 8, 160],
];

const kvTable = async (db: Kysely<unknown>, name: string) => {
  await db.schema
    .createTable(name)
    .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('instance_uuid', 'varchar(36)', (c) => c.notNull())
    .addColumn('key', 'varchar(255)', (c) => c.notNull())
    .addColumn('value', 'varchar(255)', (c) => c.notNull())
    .addUniqueConstraint(`uniq_${name}0instance_uuid0key`, ['instance_uuid', 'key'])
    .execute();
};

export const novaMigrations: Record<string, Migration> = {
  '001_initial': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('instances')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('uuid', 'varchar(36)', (c) => c.notNull().unique())
        .addColumn('display_name', 'varchar(255)', (c) => c.notNull())
        .addColumn('hostname', 'varchar(255)', (c) => c.notNull())
        .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('user_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('image_ref', 'varchar(255)', (c) => c.notNull())
        .addColumn('kernel_id', 'varchar(255)')
        .addColumn('ramdisk_id', 'varchar(255)')
        .addColumn('flavor', 'text', (c) => c.notNull())
        .addColumn('key_name', 'varchar(255)')
        .addColumn('key_data', 'text')
        .addColumn('keypairs', 'text', (c) => c.notNull())
        .addColumn('user_data', 'text')
        .addColumn('launch_index', 'integer', (c) => c.notNull())
        .addColumn('reservation_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('availability_zone', 'varchar(255)')
        .addColumn('root_device_name', 'varchar(255)')
        .addColumn('default_ephemeral_device', 'varchar(255)')
        .addColumn('default_swap_device', 'varchar(255)')
        .addColumn('security_groups', 'text', (c) => c.notNull())
        .addColumn('device_metadata', 'text')
        .addColumn('numa_topology', 'text')
        .addColumn('vm_state', 'varchar(255)', (c) => c.notNull())
        .addColumn('power_state', 'integer', (c) => c.notNull())
        .addColumn('task_state', 'varchar(255)')
        .addColumn('access_ip_v4', 'varchar(64)')
        .addColumn('access_ip_v6', 'varchar(64)')
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('launched_at', 'varchar(32)')
        .execute();
      await db.schema.createIndex('ix_instances_project_id').on('instances').column('project_id').execute();
      await db.schema.createIndex('ix_instances_reservation_id').on('instances').column('reservation_id').execute();

      await kvTable(db, 'instance_metadata');
      await kvTable(db, 'instance_system_metadata');

      await db.schema
        .createTable('key_pairs')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('name', 'varchar(255)', (c) => c.notNull())
        .addColumn('user_id', 'varchar(255)', (c) => c.notNull())
        .addColumn('fingerprint', 'varchar(255)', (c) => c.notNull())
        .addColumn('public_key', 'text', (c) => c.notNull())
        .addColumn('type', 'varchar(16)', (c) => c.notNull())
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addUniqueConstraint('uniq_key_pairs0user_id0name', ['user_id', 'name'])
        .execute();

      await db.schema
        .createTable('flavors')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('flavorid', 'varchar(255)', (c) => c.notNull().unique())
        .addColumn('name', 'varchar(255)', (c) => c.notNull().unique())
        .addColumn('memory_mb', 'integer', (c) => c.notNull())
        .addColumn('vcpus', 'integer', (c) => c.notNull())
        .addColumn('root_gb', 'integer', (c) => c.notNull())
        .addColumn('ephemeral_gb', 'integer', (c) => c.notNull())
        .addColumn('swap', 'integer', (c) => c.notNull())
        .addColumn('rxtx_factor', 'double precision', (c) => c.notNull())
        .addColumn('is_public', 'integer', (c) => c.notNull())
        .addColumn('disabled', 'integer', (c) => c.notNull())
        .addColumn('description', 'text')
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('instance_info_caches')
        .addColumn('instance_uuid', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('network_info', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('block_device_mapping')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('instance_uuid', 'varchar(36)', (c) => c.notNull())
        .addColumn('source_type', 'varchar(255)', (c) => c.notNull())
        .addColumn('destination_type', 'varchar(255)')
        .addColumn('device_name', 'varchar(255)')
        .addColumn('guest_format', 'varchar(255)')
        .addColumn('volume_id', 'varchar(36)')
        .addColumn('image_id', 'varchar(36)')
        .addColumn('boot_index', 'integer')
        .addColumn('delete_on_termination', 'integer', (c) => c.notNull())
        .addColumn('volume_size', 'integer')
        .addColumn('disk_bus', 'varchar(255)')
        .addColumn('device_type', 'varchar(255)')
        .addColumn('tag', 'varchar(255)')
        .execute();
      await db.schema.createIndex('ix_block_device_mapping_instance_uuid').on('block_device_mapping').column('instance_uuid').execute();

      for (const t of ['ec2_instances', 's3_images']) {
        await db.schema
          .createTable(t)
          .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
          .addColumn('uuid', 'varchar(255)', (c) => c.notNull().unique())
          .execute();
      }

      const now = new Date().toISOString();
      for (const [flavorid, name, mem, vcpus, root] of CLASSIC_FLAVORS) {
        await sql`INSERT INTO flavors (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, is_public, disabled, created_at)
                  VALUES (${flavorid}, ${name}, ${mem}, ${vcpus}, ${root}, 0, 0, 1.0, 1, 0, ${now})`.execute(db);
      }
    },
  },
};
