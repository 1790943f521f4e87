// /os-keypairs: a user's keypairs (Nova keys them by user, not project): import ssh or x509, or generate RSA.
import type { FastifyPluginAsync } from 'fastify';
import { objectBody, routes } from '../../common/fastify-app.js';
import { isDuplicateKey } from '../../db/connection.js';
import { generateSshKeypair, sshFingerprint, x509Fingerprint } from '../util.js';
import { bad, conflict, ctxOf, isObj, notAllowed, notFound, type ComputeDeps, type Ctx, type Json } from './context.js';

const KEYPAIR_NAME_RE = /^(?! )[a-zA-Z0-9. _-]+(?<! )$/;
const malformed = () => bad('Malformed request body');

export const keypairsApi: FastifyPluginAsync<ComputeDeps> = async (app, deps) => {
  const db = deps.db;
  const getKeypair = async (ctx: Ctx, name: string) => {
    const r = await db.selectFrom('key_pairs').selectAll().where('user_id', '=', ctx.userId).where('name', '=', name).executeTakeFirst();
    if (!r) throw notFound(`Keypair ${name} not found for user ${ctx.userId}`);
    return r;
  };

  const createKeypair = async (ctx: Ctx, body: Json): Promise<Json> => {
    const kp = body.keypair;
    if (!isObj(kp)) throw bad("Invalid input for field/attribute keypair. 'keypair' is a required property");
    const name = kp.name;
    if (typeof name !== 'string' || name.length < 1 || name.length > 255 || !KEYPAIR_NAME_RE.test(name)) {
      throw bad('Keypair data is invalid: Keypair name contains unsafe characters');
    }
    const type = kp.type === undefined ? 'ssh' : kp.type;
    if (type !== 'ssh' && type !== 'x509') throw bad(`Invalid input for field/attribute type. Value: ${String(type)}. '${String(type)}' is not one of ['ssh', 'x509']`);
    let publicKey = kp.public_key;
    let privateKey: string | undefined;
    if (publicKey === undefined || publicKey === null) {
      if (type === 'x509') throw bad('Generating x509 keypairs is not supported; import one with public_key');
      const g = generateSshKeypair(`Generated-by-Nova`);
      publicKey = g.publicKey;
      privateKey = g.privateKey;
    }
    if (typeof publicKey !== 'string') throw bad('Invalid input for field/attribute public_key.');
    const fingerprint = type === 'x509' ? x509Fingerprint(publicKey) : sshFingerprint(publicKey);
    try {
      await db.insertInto('key_pairs').values({ name, user_id: ctx.userId, fingerprint, public_key: publicKey, type, created_at: new Date().toISOString() } as never).execute();
    } catch (e) {
      if (isDuplicateKey(e)) throw conflict(`Key pair '${name}' already exists.`);
      throw e;
    }
    const out: Json = { name, public_key: publicKey, fingerprint, user_id: ctx.userId, type };
    if (privateKey) out.private_key = privateKey;
    return { keypair: out };
  };

  routes(
    app,
    '/os-keypairs',
    {
      GET: async (req) => {
        const ctx = ctxOf(req, deps);
        const rows = await db.selectFrom('key_pairs').selectAll().where('user_id', '=', ctx.userId).orderBy('name').execute();
        return { keypairs: rows.map((r) => ({ keypair: { name: r.name, public_key: r.public_key, fingerprint: r.fingerprint, type: r.type } })) };
      },
      POST: async (req) => createKeypair(ctxOf(req, deps), objectBody(req, malformed)),
    },
    notAllowed,
  );
  routes(
    app,
    '/os-keypairs/:name',
    {
      GET: async (req) => {
        const r = await getKeypair(ctxOf(req, deps), (req.params as { name: string }).name);
        return { keypair: { name: r.name, public_key: r.public_key, fingerprint: r.fingerprint, user_id: r.user_id, type: r.type, id: Number(r.id), created_at: r.created_at, deleted: false, deleted_at: null, updated_at: null } };
      },
      DELETE: async (req, reply) => {
        const ctx = ctxOf(req, deps);
        const name = (req.params as { name: string }).name;
        await getKeypair(ctx, name);
        await db.deleteFrom('key_pairs').where('user_id', '=', ctx.userId).where('name', '=', name).execute();
        return reply.code(202).send();
      },
    },
    notAllowed,
  );
};
