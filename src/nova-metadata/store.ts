// Loading an instance with everything the metadata API renders (Nova's expected_attrs), and saving
// the guest's password into system metadata.
import { sql, type Kysely } from 'kysely';
import type { InstanceRow, NovaDatabase } from '../db/nova-schema.js';
import { isDuplicateKey } from '../db/connection.js';
import { convertPassword, extractPassword, PASSWORD_CHUNKS } from './base.js';
import type { InstanceRecord, KeyPairCopy, NetworkInfo } from './model.js';

export interface MetadataStore {
  getInstance(uuid: string): Promise<InstanceRecord | undefined>;
  /** Store password_0..3 unless a password is set: 'set', 'conflict' (one is: 409) or 'missing' (no such instance). */
  setPassword(uuid: string, password: string): Promise<PasswordWrite>;
  /** The stored password read now (not the cached view), or null when none is set. */
  getPassword(uuid: string): Promise<string | null>;
}

export type PasswordWrite = 'set' | 'conflict' | 'missing';

const ec2 = (prefix: string, id: number | null | undefined) => (id === null || id === undefined ? null : `${prefix}-${id.toString(16).padStart(8, '0')}`);

export function rowToRecord(
  row: InstanceRow,
  meta: { key: string; value: string }[],
  sysmeta: { key: string; value: string }[],
  networkInfo: NetworkInfo,
  bdms: InstanceRecord['bdms'],
  ids: { instance: number; ami: number | null; kernel: number | null; ramdisk: number | null },
): InstanceRecord {
  const flavor = JSON.parse(row.flavor) as { name: string };
  return {
    uuid: row.uuid,
    display_name: row.display_name,
    hostname: row.hostname,
    project_id: row.project_id,
    user_id: row.user_id,
    image_ref: row.image_ref,
    flavor_name: flavor.name,
    key_name: row.key_name,
    key_data: row.key_data,
    keypairs: JSON.parse(row.keypairs) as KeyPairCopy[],
    user_data: row.user_data,
    launch_index: Number(row.launch_index),
    reservation_id: row.reservation_id,
    availability_zone: row.availability_zone,
    root_device_name: row.root_device_name,
    default_ephemeral_device: row.default_ephemeral_device,
    default_swap_device: row.default_swap_device,
    security_groups: JSON.parse(row.security_groups) as string[],
    metadata: new Map(meta.map((m) => [m.key, m.value])),
    system_metadata: new Map(sysmeta.map((m) => [m.key, m.value])),
    network_info: networkInfo,
    bdms,
    device_metadata: row.device_metadata ? (JSON.parse(row.device_metadata) as InstanceRecord['device_metadata']) : null,
    numa_topology: row.numa_topology ? (JSON.parse(row.numa_topology) as InstanceRecord['numa_topology']) : null,
    ec2_ids: { instance_id: ec2('i', ids.instance)!, ami_id: ec2('ami', ids.ami), kernel_id: ec2('aki', ids.kernel), ramdisk_id: ec2('ari', ids.ramdisk) },
  };
}

/** Get-or-create an integer id for a uuid (EC2InstanceMapping / S3ImageMapping). */
export async function uuidToIntId(db: Kysely<NovaDatabase>, table: 'ec2_instances' | 's3_images', uuid: string): Promise<number> {
  const found = await db.selectFrom(table).select('id').where('uuid', '=', uuid).executeTakeFirst();
  if (found) return Number(found.id);
  try {
    const r = await db.insertInto(table).values({ uuid } as never).executeTakeFirst();
    return Number(r.insertId);
  } catch {
    // Lost a race with another writer: read theirs.
    const again = await db.selectFrom(table).select('id').where('uuid', '=', uuid).executeTakeFirstOrThrow();
    return Number(again.id);
  }
}

export class DbMetadataStore implements MetadataStore {
  constructor(private readonly db: Kysely<NovaDatabase>) {}

  /** Three queries: the instance with its info cache and EC2/image ids, its metadata rows (both kinds), its block devices. */
  async getInstance(uuid: string): Promise<InstanceRecord | undefined> {
    const db = this.db;
    const row = await db
      .selectFrom('instances')
      .leftJoin('instance_info_caches as c', 'c.instance_uuid', 'instances.uuid')
      .leftJoin('ec2_instances as e', 'e.uuid', 'instances.uuid')
      .leftJoin('s3_images as img', 'img.uuid', 'instances.image_ref')
      .selectAll('instances')
      .select(['c.network_info as _network_info', 'e.id as _ec2_id', 'img.id as _ami_id'])
      .where('instances.uuid', '=', uuid)
      .executeTakeFirst();
    if (!row) return undefined;
    const [kv, bdms] = await Promise.all([
      db
        .selectFrom('instance_metadata')
        .select([sql<number>`0`.as('sys'), 'id', 'key', 'value'])
        .where('instance_uuid', '=', uuid)
        .unionAll(db.selectFrom('instance_system_metadata').select([sql<number>`1`.as('sys'), 'id', 'key', 'value']).where('instance_uuid', '=', uuid))
        .execute(),
      db.selectFrom('block_device_mapping').select(['source_type', 'destination_type', 'device_name', 'guest_format']).where('instance_uuid', '=', uuid).orderBy('id').execute(),
    ]);
    kv.sort((a, b) => Number(a.id) - Number(b.id));
    const meta = kv.filter((r) => Number(r.sys) === 0);
    const sysmeta = kv.filter((r) => Number(r.sys) === 1);
    const imageId = async (u: string | null): Promise<number | null> => (u ? uuidToIntId(db, 's3_images', u) : null);
    const ids = {
      instance: row._ec2_id !== null && row._ec2_id !== undefined ? Number(row._ec2_id) : await uuidToIntId(db, 'ec2_instances', uuid),
      ami: row._ami_id !== null && row._ami_id !== undefined ? Number(row._ami_id) : await imageId(row.image_ref),
      kernel: await imageId(row.kernel_id),
      ramdisk: await imageId(row.ramdisk_id),
    };
    const nw = row._network_info ? (JSON.parse(row._network_info) as NetworkInfo) : [];
    return rowToRecord(row, meta, sysmeta, nw, bdms, ids);
  }

  async setPassword(uuid: string, password: string): Promise<PasswordWrite> {
    return setPasswordOnce(this.db, uuid, password);
  }

  async getPassword(uuid: string): Promise<string | null> {
    const rows = await this.db.selectFrom('instance_system_metadata').select(['key', 'value']).where('instance_uuid', '=', uuid).where('key', 'in', PASSWORD_KEYS).execute();
    return extractPassword(new Map(rows.map((r) => [r.key, r.value])));
  }
}

const PASSWORD_KEYS = Array.from({ length: PASSWORD_CHUNKS }, (_, i) => `password_${i}`);

/**
 * The guest's POST: one conditional update decides it. password_0 goes from '' to the first chunk only where
 * it is still '' (a set password always has a non-empty first chunk), so of two POSTs racing on any workers or
 * hosts exactly one updates a row; without a password_0 row yet, the unique (instance_uuid, key) lets exactly
 * one insert through. The winner writes the other chunks in the same transaction, so a reader never sees half.
 * The update comes first in the transaction: SQLite then waits for the write lock (busy_timeout) instead of
 * failing a stale read snapshot.
 */
export async function setPasswordOnce(db: Kysely<NovaDatabase>, uuid: string, password: string): Promise<PasswordWrite> {
  const chunks = convertPassword(password);
  return db.transaction().execute(async (tx) => {
    const exists = async () => (await tx.selectFrom('instances').select('id').where('uuid', '=', uuid).executeTakeFirst()) !== undefined;
    // An empty POST stores nothing visible (Nova writes empty chunks): 200 when the instance exists.
    if (password === '') return (await exists()) ? 'set' : 'missing';
    const r = await tx.updateTable('instance_system_metadata').set({ value: chunks.password_0! }).where('instance_uuid', '=', uuid).where('key', '=', 'password_0').where('value', '=', '').executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) {
      const row = await tx.selectFrom('instance_system_metadata').select('value').where('instance_uuid', '=', uuid).where('key', '=', 'password_0').executeTakeFirst();
      if (row) return 'conflict';
      if (!(await exists())) return 'missing';
      try {
        await tx.insertInto('instance_system_metadata').values({ instance_uuid: uuid, key: 'password_0', value: chunks.password_0! } as never).execute();
      } catch (e) {
        if (isDuplicateKey(e)) return 'conflict';
        throw e;
      }
    }
    await writeChunks(tx, uuid, Object.entries(chunks).filter(([k]) => k !== 'password_0'));
    return 'set';
  });
}

async function writeChunks(tx: Kysely<NovaDatabase>, uuid: string, chunks: [string, string][]): Promise<void> {
  const existing = new Set(
    (await tx.selectFrom('instance_system_metadata').select('key').where('instance_uuid', '=', uuid).where('key', 'in', chunks.map(([k]) => k)).execute()).map((r) => r.key),
  );
  for (const [key, value] of chunks) {
    if (existing.has(key)) await tx.updateTable('instance_system_metadata').set({ value }).where('instance_uuid', '=', uuid).where('key', '=', key).execute();
    else await tx.insertInto('instance_system_metadata').values({ instance_uuid: uuid, key, value } as never).execute();
  }
}

/** Write password_0..3 (also used by os-server-password DELETE with ''). */
export async function setSystemPassword(db: Kysely<NovaDatabase>, uuid: string, password: string): Promise<boolean> {
  return db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom('instances').select('id').where('uuid', '=', uuid).executeTakeFirst();
    if (!row) return false;
    await writeChunks(tx, uuid, Object.entries(convertPassword(password)));
    return true;
  });
}
