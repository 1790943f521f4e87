// /servers: list, detail, show, create (ports through quantum-server, the image through Glance), update, delete.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { objectBody, routes, searchParams } from '../../common/fastify-app.js';
import { staticToken } from '../../common/quantum-client.js';
import { runningInstanceState } from '../../db/nova-schema.js';
import type { NetworkInfo, Vif } from '../../nova-metadata/model.js';
import { uuidToIntId } from '../../nova-metadata/store.js';
import { allocatePorts, buildNetworkInfo, defaultNetworks, releasePorts, type RequestedNetwork } from '../network.js';
import { generatePassword, generateUid, sanitizeHostname } from '../util.js';
import { bad, ctxOf, isObj, notAllowed, quantumFor, type ComputeDeps, type Ctx, type Json } from './context.js';
import { getInstance, serverLinks, serverView } from './instances.js';
import { checkMetadata } from './server-metadata.js';

const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const ROOT_DEVICE = '/dev/vda';
const malformed = () => bad('Malformed request body');

function parseNetworks(v: unknown): RequestedNetwork[] | undefined {
  if (v === undefined) return undefined;
  if (v === 'none' || v === 'auto') return v === 'none' ? [] : undefined;
  if (!Array.isArray(v)) throw bad(`Invalid input for field/attribute networks. Value: ${JSON.stringify(v)}.`);
  const seenPorts = new Set<string>();
  return v.map((n): RequestedNetwork => {
    if (!isObj(n)) throw bad('Bad networks format');
    const r: RequestedNetwork = {};
    if (n.port !== undefined && n.port !== null) {
      if (typeof n.port !== 'string' || !UUID_RE.test(n.port)) throw bad(`Bad port format: port uuid is not in proper format (${String(n.port)})`);
      if (seenPorts.has(n.port)) throw bad(`Port ${n.port} is still in use.`);
      seenPorts.add(n.port);
      r.port = n.port;
      return r;
    }
    if (typeof n.uuid !== 'string' || !UUID_RE.test(n.uuid)) throw bad(`Bad networks format: network uuid is not in proper format (${String(n.uuid)})`);
    r.uuid = n.uuid;
    if (n.fixed_ip !== undefined) {
      if (typeof n.fixed_ip !== 'string' || !/^[0-9a-fA-F:.]+$/.test(n.fixed_ip)) throw bad(`Invalid fixed IP address (${String(n.fixed_ip)})`);
      r.fixed_ip = n.fixed_ip;
    }
    return r;
  });
}

export const serversApi: FastifyPluginAsync<ComputeDeps> = async (app, deps) => {
  const db = deps.db;
  const log = deps.log;

  const listServers = async (ctx: Ctx, detail: boolean, q: URLSearchParams): Promise<Json> => {
    let query = db.selectFrom('instances').select(['uuid', 'display_name']);
    // Nova: all_tenants is for admins; everyone else (and an admin without it) sees their project.
    const all = ctx.isAdmin && q.has('all_tenants') && !['0', 'false', 'False'].includes(q.get('all_tenants') ?? '');
    const project = q.get('project_id') ?? q.get('tenant_id');
    if (!all) query = query.where('project_id', '=', ctx.projectId);
    else if (project) query = query.where('project_id', '=', project);
    const name = q.get('name');
    if (name) query = query.where('display_name', '=', name);
    const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').execute();
    if (!detail) return { servers: rows.map((r) => ({ id: r.uuid, links: serverLinks(ctx, r.uuid), name: r.display_name })) };
    const servers: Json[] = [];
    for (const r of rows) servers.push(serverView(ctx, await getInstance(deps, { ...ctx, isAdmin: true }, r.uuid)));
    return { servers };
  };

  /** imageRef through Glance when there is one (Nova's checks: visible, active); without, any UUID. */
  const checkImage = async (ctx: Ctx, imageRef: string): Promise<void> => {
    if (!deps.glance) return;
    const img = await deps.glance.show(imageRef, deps.keystone && ctx.token ? staticToken(ctx.token) : undefined);
    if (!img) throw bad('Can not find requested image');
    if (img.status !== 'active') throw bad(`Image ${imageRef} is not active.`);
  };

  const createServer = async (ctx: Ctx, body: Json): Promise<Json> => {
    const s = body.server;
    if (!isObj(s)) throw bad("Invalid input for field/attribute server. 'server' is a required property");
    const name = s.name;
    if (typeof name !== 'string' || name.length < 1 || name.length > 255 || name.trim() !== name) {
      throw bad(`Invalid input for field/attribute name. Value: ${JSON.stringify(name)}.`);
    }
    if (s.flavorRef === undefined) throw bad("Invalid input for field/attribute server. 'flavorRef' is a required property");
    const flavorRef = String(s.flavorRef).replace(/^.*\/flavors\//, '');
    const flavor = await db.selectFrom('flavors').selectAll().where('flavorid', '=', flavorRef).executeTakeFirst();
    if (!flavor) throw bad('Invalid flavorRef provided.');
    const bdmsIn = Array.isArray(s.block_device_mapping_v2) ? (s.block_device_mapping_v2 as unknown[]) : [];
    if (s.block_device_mapping_v2 !== undefined && !Array.isArray(s.block_device_mapping_v2)) throw bad('Invalid input for field/attribute block_device_mapping_v2.');
    const bootFromVolume = bdmsIn.some((b) => isObj(b) && Number(b.boot_index) === 0 && b.source_type !== 'image');
    let imageRef = s.imageRef === undefined || s.imageRef === null ? '' : String(s.imageRef).replace(/^.*\/images\//, '');
    if (!imageRef && !bootFromVolume) {
      const imgBdm = bdmsIn.find((b) => isObj(b) && b.source_type === 'image' && Number(b.boot_index) === 0) as Json | undefined;
      if (imgBdm && typeof imgBdm.uuid === 'string') imageRef = imgBdm.uuid;
      else throw bad('Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.');
    }
    if (imageRef && !UUID_RE.test(imageRef)) throw bad(`Invalid input for field/attribute imageRef. Value: ${imageRef}. '${imageRef}' is not a 'uuid'`);
    if (imageRef) await checkImage(ctx, imageRef);
    let keyName: string | null = null;
    let keypair: { name: string; type: string; public_key: string } | undefined;
    if (s.key_name !== undefined && s.key_name !== null) {
      keyName = String(s.key_name);
      const kp = await db.selectFrom('key_pairs').selectAll().where('user_id', '=', ctx.userId).where('name', '=', keyName).executeTakeFirst();
      if (!kp) throw bad('Invalid key_name provided.');
      keypair = { name: kp.name, type: kp.type, public_key: kp.public_key };
    }
    let userData: string | null = null;
    if (s.user_data !== undefined && s.user_data !== null) {
      const ud = String(s.user_data);
      if (ud.length > 65535 || !/^[A-Za-z0-9+/\r\n]*={0,2}[\r\n]*$/.test(ud) || Buffer.from(ud, 'base64').toString('base64').replace(/=+$/, '') !== ud.replace(/[\r\n]/g, '').replace(/=+$/, '')) {
        throw bad('Invalid input for field/attribute user_data. Value: (user data). It is not a valid base64 string');
      }
      userData = ud;
    }
    const metadata = s.metadata === undefined ? {} : checkMetadata(s.metadata);
    const az = s.availability_zone === undefined || s.availability_zone === null ? 'nova' : String(s.availability_zone);
    if (az !== 'nova') throw bad(`The requested availability zone is not available`);
    let groups = ['default'];
    if (s.security_groups !== undefined) {
      if (!Array.isArray(s.security_groups)) throw bad('Invalid input for field/attribute security_groups.');
      groups = s.security_groups.map((g) => (isObj(g) && typeof g.name === 'string' ? g.name : '')).filter((g) => g);
      if (groups.length === 0) groups = ['default'];
      groups = [...new Set(groups)];
    }
    const requested = parseNetworks(s.networks);

    const uuid = randomUUID();
    const hostname = sanitizeHostname(name) || `Server-${uuid}`;
    const reservationId = generateUid('r');
    const now = new Date().toISOString();

    // Block devices: the image root on /dev/vda (libvirt), then the requested ones (data only).
    let nextLetter = 1;
    const nextDev = () => `/dev/vd${String.fromCharCode(97 + nextLetter++)}`;
    const bdmRows: Record<string, unknown>[] = [];
    if (!bootFromVolume) {
      bdmRows.push({ source_type: 'image', destination_type: 'local', device_name: ROOT_DEVICE, guest_format: null, volume_id: null, image_id: imageRef, boot_index: 0, delete_on_termination: 1, volume_size: null, disk_bus: 'virtio', device_type: 'disk', tag: null });
    }
    for (const b of bdmsIn) {
      if (!isObj(b)) throw bad('Block Device Mapping is Invalid.');
      const src = String(b.source_type ?? '');
      if (!['image', 'volume', 'snapshot', 'blank'].includes(src)) throw bad(`Invalid input for field/attribute source_type. Value: ${src}.`);
      if (src === 'image' && Number(b.boot_index) === 0 && !bootFromVolume && b.destination_type !== 'volume') continue; // the root above
      const boot = b.boot_index === undefined || b.boot_index === null ? null : Number(b.boot_index);
      const dest = b.destination_type === undefined ? (src === 'blank' ? 'local' : 'volume') : String(b.destination_type);
      const dev = typeof b.device_name === 'string' && b.device_name ? b.device_name : boot === 0 ? ROOT_DEVICE : nextDev();
      bdmRows.push({
        source_type: src,
        destination_type: dest,
        device_name: dev,
        guest_format: typeof b.guest_format === 'string' ? b.guest_format : null,
        volume_id: src === 'volume' && typeof b.uuid === 'string' ? b.uuid : null,
        image_id: src === 'image' && typeof b.uuid === 'string' ? b.uuid : null,
        boot_index: boot,
        delete_on_termination: b.delete_on_termination ? 1 : 0,
        volume_size: b.volume_size === undefined || b.volume_size === null ? null : Number(b.volume_size),
        disk_bus: typeof b.disk_bus === 'string' ? b.disk_bus : null,
        device_type: typeof b.device_type === 'string' ? b.device_type : null,
        tag: typeof b.tag === 'string' ? b.tag : null,
      });
    }
    const ephemeralDev = Number(flavor.ephemeral_gb) > 0 && !bdmRows.some((r) => r.source_type === 'blank' && r.guest_format !== 'swap') ? nextDev() : null;
    const swapDev = Number(flavor.swap) > 0 && !bdmRows.some((r) => r.guest_format === 'swap') ? nextDev() : null;

    // Ports are created and bound as the caller (Neutron's policy applies); the info cache is read as nova.
    const q = quantumFor(deps, ctx);
    const networks = requested ?? (await defaultNetworks(q, ctx.projectId));
    const ports = await allocatePorts(q, log, { instanceUuid: uuid, projectId: ctx.projectId, az, networks });
    let nwInfo: NetworkInfo;
    try {
      nwInfo = await buildNetworkInfo(deps.quantum, ports);
      const flavorCopy = { flavorid: flavor.flavorid, name: flavor.name, memory_mb: Number(flavor.memory_mb), vcpus: Number(flavor.vcpus), root_gb: Number(flavor.root_gb), ephemeral_gb: Number(flavor.ephemeral_gb), swap: Number(flavor.swap) };
      await db.transaction().execute(async (tx) => {
        await tx
          .insertInto('instances')
          .values({
            uuid,
            display_name: name,
            hostname,
            project_id: ctx.projectId,
            user_id: ctx.userId,
            image_ref: imageRef,
            kernel_id: null,
            ramdisk_id: null,
            flavor: JSON.stringify(flavorCopy),
            key_name: keyName,
            key_data: keypair?.public_key ?? null,
            keypairs: JSON.stringify(keypair ? [keypair] : []),
            user_data: userData,
            launch_index: 0,
            reservation_id: reservationId,
            availability_zone: az,
            root_device_name: ROOT_DEVICE,
            default_ephemeral_device: ephemeralDev,
            default_swap_device: swapDev,
            security_groups: JSON.stringify(groups),
            device_metadata: null,
            numa_topology: null,
            ...runningInstanceState(now),
          } as never)
          .execute();
        for (const [k, v] of Object.entries(metadata)) await tx.insertInto('instance_metadata').values({ instance_uuid: uuid, key: k, value: v } as never).execute();
        await tx.insertInto('instance_info_caches').values({ instance_uuid: uuid, network_info: JSON.stringify(nwInfo), updated_at: now }).execute();
        for (const b of bdmRows) await tx.insertInto('block_device_mapping').values({ ...b, instance_uuid: uuid } as never).execute();
      });
      // EC2 ids are assigned at boot so the metadata path only reads.
      await uuidToIntId(db, 'ec2_instances', uuid);
      if (imageRef) await uuidToIntId(db, 's3_images', imageRef);
    } catch (e) {
      await releasePorts(q, log, ports);
      throw e;
    }
    log.info({ instance: uuid, ports: ports.map((p) => p.port.id) }, `server ${name} created`);
    return {
      server: {
        security_groups: groups.map((g) => ({ name: g })),
        'OS-DCF:diskConfig': 'MANUAL',
        id: uuid,
        links: serverLinks(ctx, uuid),
        adminPass: generatePassword(),
      },
    };
  };

  const updateServer = async (ctx: Ctx, id: string, body: Json): Promise<Json> => {
    const s = body.server;
    if (!isObj(s)) throw bad("Invalid input for field/attribute server. 'server' is a required property");
    await getInstance(deps, ctx, id);
    const set: Record<string, string> = { updated_at: new Date().toISOString() };
    for (const [k, v] of Object.entries(s)) {
      if (k === 'name') {
        if (typeof v !== 'string' || v.length < 1 || v.length > 255 || v.trim() !== v) throw bad(`Invalid input for field/attribute name. Value: ${JSON.stringify(v)}.`);
        set.display_name = v;
      } else if (k === 'accessIPv4' || k === 'accessIPv6') {
        if (typeof v !== 'string') throw bad(`Invalid input for field/attribute ${k}. Value: ${JSON.stringify(v)}.`);
        set[k === 'accessIPv4' ? 'access_ip_v4' : 'access_ip_v6'] = v;
      } else if (k !== 'OS-DCF:diskConfig' && k !== 'description') {
        throw bad(`Additional properties are not allowed ('${k}' was unexpected)`);
      }
    }
    await db.updateTable('instances').set(set as never).where('uuid', '=', id).execute();
    deps.opts.onInstanceChange?.(id);
    return { server: serverView(ctx, await getInstance(deps, ctx, id)) };
  };

  const deleteServer = async (ctx: Ctx, id: string): Promise<void> => {
    const inst = await getInstance(deps, ctx, id);
    // Ports first (Nova deallocates networking before the instance row goes); ones the user brought are unbound.
    const fromCache = inst._nw.map((v: Vif) => ({ id: v.id, preexisting: v.preserve_on_delete }));
    const live = await deps.quantum.listPorts({ device_id: id });
    const ids = new Set(fromCache.map((p) => p.id));
    for (const p of live) if (!ids.has(p.id)) fromCache.push({ id: p.id, preexisting: false });
    await releasePorts(deps.quantum, log, fromCache);
    await db.transaction().execute(async (tx) => {
      await tx.deleteFrom('instance_metadata').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('instance_system_metadata').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('instance_info_caches').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('block_device_mapping').where('instance_uuid', '=', id).execute();
      await tx.deleteFrom('instances').where('uuid', '=', id).execute();
    });
    deps.opts.onInstanceChange?.(id);
  };

  routes(
    app,
    '/servers',
    {
      GET: async (req) => listServers(ctxOf(req, deps), false, searchParams(req)),
      POST: async (req, reply) => reply.code(202).send(await createServer(ctxOf(req, deps), objectBody(req, malformed))),
    },
    notAllowed,
  );
  routes(app, '/servers/detail', { GET: async (req) => listServers(ctxOf(req, deps), true, searchParams(req)) }, notAllowed);
  routes(
    app,
    '/servers/:id',
    {
      GET: async (req) => {
        const ctx = ctxOf(req, deps);
        return { server: serverView(ctx, await getInstance(deps, ctx, (req.params as { id: string }).id)) };
      },
      PUT: async (req) => updateServer(ctxOf(req, deps), (req.params as { id: string }).id, objectBody(req, malformed)),
      DELETE: async (req, reply) => {
        await deleteServer(ctxOf(req, deps), (req.params as { id: string }).id);
        return reply.code(204).send();
      },
    },
    notAllowed,
  );
};

