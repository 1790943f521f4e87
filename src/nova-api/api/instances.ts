// An instance as the compute API reads it (row, metadata, network info cache, volumes), scoped by policy.
import type { NetworkInfo } from '../../nova-metadata/model.js';
import type { InstanceRow } from '../../db/nova-schema.js';
import { notFound, type ComputeDeps, type Ctx, type Json } from './context.js';

export type InstanceView = InstanceRow & { _meta: Record<string, string>; _nw: NetworkInfo; _volumes: string[] };

/** The instance if the caller may see it (its project's, or any for the admin role), else Nova's 404. */
export async function getInstance(deps: ComputeDeps, ctx: Ctx, id: string): Promise<InstanceView> {
  const db = deps.db;
  let q = db.selectFrom('instances').selectAll().where('uuid', '=', id);
  if (!ctx.isAdmin) q = q.where('project_id', '=', ctx.projectId);
  const row = await q.executeTakeFirst();
  if (!row) throw notFound(`Instance ${id} could not be found.`);
  const [meta, cache, vols] = await Promise.all([
    db.selectFrom('instance_metadata').select(['key', 'value']).where('instance_uuid', '=', id).orderBy('id').execute(),
    db.selectFrom('instance_info_caches').select('network_info').where('instance_uuid', '=', id).executeTakeFirst(),
    db.selectFrom('block_device_mapping').select('volume_id').where('instance_uuid', '=', id).where('destination_type', '=', 'volume').orderBy('id').execute(),
  ]);
  return {
    ...row,
    _meta: Object.fromEntries(meta.map((m) => [m.key, m.value])),
    _nw: cache ? (JSON.parse(cache.network_info) as NetworkInfo) : [],
    _volumes: vols.map((v) => v.volume_id).filter((v): v is string => !!v),
  };
}

export function serverLinks(ctx: Ctx, id: string) {
  return [
    { rel: 'self', href: `${ctx.base}/servers/${id}` },
    { rel: 'bookmark', href: `${ctx.base.replace('/v2.1', '')}/servers/${id}` },
  ];
}

export function serverView(ctx: Ctx, i: InstanceView): Json {
  const addresses: Record<string, Json[]> = {};
  for (const vif of i._nw) {
    if (!vif.network) continue;
    const label = vif.network.label ?? vif.network.id;
    const list = (addresses[label] ??= []);
    for (const s of vif.network.subnets) {
      for (const ip of s.ips) {
        list.push({ version: ip.version, addr: ip.address, 'OS-EXT-IPS:type': 'fixed', 'OS-EXT-IPS-MAC:mac_addr': vif.address });
        for (const f of ip.floating_ips ?? []) list.push({ version: f.version, addr: f.address, 'OS-EXT-IPS:type': 'floating', 'OS-EXT-IPS-MAC:mac_addr': vif.address });
      }
    }
  }
  const flavor = JSON.parse(i.flavor) as { flavorid: string };
  const root = ctx.base.replace('/v2.1', '');
  return {
    id: i.uuid,
    name: i.display_name,
    status: i.vm_state === 'active' ? 'ACTIVE' : i.vm_state.toUpperCase(),
    tenant_id: i.project_id,
    user_id: i.user_id,
    metadata: i._meta,
    hostId: '',
    image: i.image_ref ? { id: i.image_ref, links: [{ rel: 'bookmark', href: `${root}/images/${i.image_ref}` }] } : '',
    flavor: { id: flavor.flavorid, links: [{ rel: 'bookmark', href: `${root}/flavors/${flavor.flavorid}` }] },
    created: i.created_at.replace(/\.\d+Z$/, 'Z'),
    updated: i.updated_at.replace(/\.\d+Z$/, 'Z'),
    addresses,
    accessIPv4: i.access_ip_v4 ?? '',
    accessIPv6: i.access_ip_v6 ?? '',
    links: serverLinks(ctx, i.uuid),
    'OS-DCF:diskConfig': 'MANUAL',
    progress: 0,
    'OS-EXT-AZ:availability_zone': i.availability_zone ?? '',
    config_drive: '',
    key_name: i.key_name,
    // Nova prints this one as Python's isoformat with microseconds and no zone.
    'OS-SRV-USG:launched_at': i.launched_at ? i.launched_at.replace(/\.(\d{3})Z$/, '.$1000').replace(/Z$/, '.000000') : null,
    'OS-SRV-USG:terminated_at': null,
    'OS-EXT-STS:task_state': i.task_state,
    'OS-EXT-STS:vm_state': i.vm_state,
    'OS-EXT-STS:power_state': Number(i.power_state),
    'os-extended-volumes:volumes_attached': i._volumes.map((v) => ({ id: v })),
    security_groups: (JSON.parse(i.security_groups) as string[]).map((name) => ({ name })),
  };
}
