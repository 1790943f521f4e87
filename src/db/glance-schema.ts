// Tables owned by glance-api (Glance's images and image_properties, trimmed to the v2 subset).
import type { Kysely, Migration } from 'kysely';

export interface ImageRow {
  id: string;
  name: string | null;
  status: string;
  visibility: string;
  owner: string | null;
  disk_format: string | null;
  container_format: string | null;
  size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  min_disk: number;
  min_ram: number;
  protected: number;
  os_hidden: number;
  /** JSON array of strings. */
  tags: string;
  /** JSON object: the image's extra properties (Glance's image_properties rows). */
  properties: string;
  created_at: string;
  updated_at: string;
}

export interface GlanceDatabase {
  images: ImageRow;
}

export const glanceMigrations: Record<string, Migration> = {
  '001_initial': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('images')
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('name', 'varchar(255)')
        .addColumn('status', 'varchar(30)', (c) => c.notNull())
        .addColumn('visibility', 'varchar(20)', (c) => c.notNull())
        .addColumn('owner', 'varchar(255)')
        .addColumn('disk_format', 'varchar(20)')
        .addColumn('container_format', 'varchar(20)')
        .addColumn('size', 'bigint')
        .addColumn('checksum', 'varchar(32)')
        .addColumn('os_hash_algo', 'varchar(64)')
        .addColumn('os_hash_value', 'varchar(128)')
        .addColumn('min_disk', 'integer', (c) => c.notNull())
        .addColumn('min_ram', 'integer', (c) => c.notNull())
        .addColumn('protected', 'integer', (c) => c.notNull())
        .addColumn('os_hidden', 'integer', (c) => c.notNull())
        .addColumn('tags', 'text', (c) => c.notNull())
        .addColumn('properties', 'text', (c) => c.notNull())
        .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
        .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('ix_images_owner').on('images').column('owner').execute();
      await db.schema.createIndex('ix_images_visibility').on('images').column('visibility').execute();
    },
  },
};
