// Issue 13, Nova's side: the password POST is one conditional update (two concurrent POSTs on two metadata
// workers: exactly one 200 and one 409, and every worker then serves the winner's password), a password with
// characters outside the BMP is never split between its 255-character chunks, and the metadata server's
// connections are bounded by Nova's [wsgi] options (keep_alive, client_socket_timeout, default_pool_size).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signInstanceId } from '../src/common/hmac.js';
import { migrate, openDatabase, type Db } from '../src/db/connection.js';
import { novaMigrations, type NovaDatabase } from '../src/db/nova-schema.js';
import { convertPassword, extractPassword } from '../src/nova-metadata/base.js';
import { insertInstance } from './helpers/nova-fixtures.js';
import { readLog } from './helpers/chain.js';
import { writeIni } from './helpers/mdpath.js';
import { getFreePort, sleep, spawnDaemon, waitFor, waitForListen, type Daemon } from './helpers/proc.js';

const SECRET = 'hardening-secret';
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function call(port: number, method: string, path: string, uuid: string, o: { body?: string; rid?: string } = {}): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { connection: 'close', 'x-instance-id': uuid, 'x-tenant-id': 'proj-a', 'x-instance-id-signature': signInstanceId(SECRET, uuid), 'x-forwarded-for': '10.0.0.2' };
    if (o.rid) headers['x-openstack-request-id'] = o.rid;
    if (o.body !== undefined) headers['content-length'] = String(Buffer.byteLength(o.body));
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8'), headers: res.headers }));
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

async function startMetadata(dir: string, dbUrl: string, name: string, extra: Record<string, Record<string, string | number | boolean>>): Promise<{ port: number; log: string; d: Daemon }> {
  const port = await getFreePort();
  const log = join(dir, `${name}.log`);
  const conf = writeIni(join(dir, `${name}.conf`), {
    DEFAULT: { state_path: dir, metadata_listen: '127.0.0.1', metadata_listen_port: port, log_file: log, ...(extra.DEFAULT ?? {}) },
    database: { connection: dbUrl },
    neutron: { service_metadata_proxy: true, metadata_proxy_shared_secret: SECRET },
    ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'DEFAULT')),
  });
  const d = spawnDaemon('nova-api/metadata-main.js', ['--config-file', conf]);
  await waitForListen({ host: '127.0.0.1', port }, 30_000).catch(() => {
    throw new Error(`nova-api-metadata did not start: ${d.output()}`);
  });
  return { port, log, d };
}

/** The pid of the worker whose access line carries this request id. */
function pidOf(log: string, rid: string): number | undefined {
  for (const l of readLog(log).split('\n')) if (l.includes(rid) && l.includes('status:')) return (JSON.parse(l) as { pid: number }).pid;
  return undefined;
}

test('convert_password counts code points as Python does: a surrogate pair is never split', () => {
  const pw = `a${'😀'.repeat(254)}`; // 255 code points, 509 UTF-16 units, 1017 bytes (under MAX_SIZE 1020)
  const chunks = convertPassword(pw);
  assert.equal([...chunks.password_0!].length, 255);
  assert.equal(chunks.password_1, '');
  const long = `${'é'.repeat(100)}${'😀'.repeat(200)}${'ж'.repeat(100)}`;
  const lc = convertPassword(long);
  for (const v of Object.values(lc)) {
    assert.ok(!LONE_SURROGATE.test(v), 'no lone surrogate in a chunk');
    assert.ok([...v].length <= 255);
  }
  assert.equal(extractPassword(new Map(Object.entries(lc))), long);
  assert.equal([...lc.password_0!].length, 255);
  assert.equal([...lc.password_1!].length, 145);
});

describe('nova-api-metadata with two workers: the password POST', () => {
  let dir: string;
  let db: Db<NovaDatabase>;
  let url: string;
  let md: { port: number; log: string; d: Daemon };
  const uuids: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qm-nova-hard-'));
    url = `sqlite:///${join(dir, 'nova.sqlite')}`;
    db = openDatabase<NovaDatabase>(url);
    await migrate(db, 'nova', novaMigrations);
    for (let i = 0; i < 6; i++) uuids.push(await insertInstance(db.db, { hostname: `pw${i}` }));
    md = await startMetadata(dir, url, 'nova-md', { DEFAULT: { metadata_workers: 2 } });
    await waitFor(async () => (await call(md.port, 'GET', '/latest/meta-data/hostname', uuids[0]!)).status === 200, 30_000, 200, 'the workers');
  });
  after(async () => {
    await md?.d.stop();
    await db?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('two concurrent POSTs: exactly one 200 and one 409, and every worker then serves the same password', async () => {
    let crossWorker = 0;
    for (const uuid of uuids.slice(0, 5)) {
      // Both workers have the instance cached without a password (Nova's 15 s cache), as in a real boot.
      for (let i = 0; i < 6; i++) assert.equal((await call(md.port, 'GET', '/openstack/latest/password', uuid)).body, '');
      const rids = [`req-${randomUUID()}`, `req-${randomUUID()}`];
      const pws = [`pw-one-${uuid}`, `pw-two-${uuid}`];
      const rs = await Promise.all([0, 1].map((i) => call(md.port, 'POST', '/openstack/latest/password', uuid, { body: pws[i]!, rid: rids[i]! })));
      assert.deepEqual(rs.map((r) => r.status).sort(), [200, 409], uuid);
      const winner = pws[rs.findIndex((r) => r.status === 200)]!;
      const pids = await waitFor(() => {
        const p = rids.map((r) => pidOf(md.log, r));
        return p.every((x) => x !== undefined) ? p : undefined;
      }, 5000, 50, 'the POST lines');
      if (pids[0] !== pids[1]) crossWorker++;
      const seenBy = new Set<number>();
      for (let i = 0; i < 8; i++) {
        const rid = `req-${randomUUID()}`;
        const g = await call(md.port, 'GET', '/openstack/latest/password', uuid, { rid });
        assert.equal(g.status, 200);
        assert.equal(g.body, winner, 'every worker serves the stored password at once');
        const pid = await waitFor(() => pidOf(md.log, rid), 5000, 50, 'the GET line');
        seenBy.add(pid);
      }
      assert.equal(seenBy.size, 2, 'both workers answered the GETs');
      // A third POST on either worker: 409.
      for (let i = 0; i < 2; i++) assert.equal((await call(md.port, 'POST', '/openstack/latest/password', uuid, { body: 'late' })).status, 409);
    }
    assert.ok(crossWorker >= 1, 'at least one race was between the two workers');
  });

  test('a password with characters outside the BMP is stored whole, none split between chunks', async () => {
    const uuid = uuids[5]!;
    const pw = `a${'😀'.repeat(254)}`;
    assert.equal(Buffer.byteLength(pw), 1017);
    assert.equal((await call(md.port, 'POST', '/openstack/latest/password', uuid, { body: pw })).status, 200);
    for (let i = 0; i < 4; i++) assert.equal((await call(md.port, 'GET', '/openstack/latest/password', uuid)).body, pw);
    const rows = await db.db.selectFrom('instance_system_metadata').select(['key', 'value']).where('instance_uuid', '=', uuid).orderBy('key').execute();
    assert.deepEqual(rows.map((r) => r.key), ['password_0', 'password_1', 'password_2', 'password_3']);
    assert.equal(rows[0]!.value, pw, 'the whole password in password_0: 255 code points');
    for (const r of rows) assert.ok(!LONE_SURROGATE.test(r.value));
  });
});

describe('nova-api-metadata [wsgi] bounds', () => {
  let dir: string;
  let uuid: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qm-nova-wsgi-'));
    const db = openDatabase<NovaDatabase>(`sqlite:///${join(dir, 'nova.sqlite')}`);
    await migrate(db, 'nova', novaMigrations);
    uuid = await insertInstance(db.db, { hostname: 'w' });
    await db.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const open = (port: number) =>
    new Promise<{ s: Socket; closed: Promise<number> }>((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      const t0 = Date.now();
      const closed = new Promise<number>((r) => s.once('close', () => r(Date.now() - t0)));
      s.on('error', () => undefined);
      s.once('connect', () => resolve({ s, closed }));
      s.once('error', reject);
    });

  test('client_socket_timeout closes idle and silent connections; default_pool_size bounds the connections; keep_alive = False closes after each answer', async () => {
    const url = `sqlite:///${join(dir, 'nova.sqlite')}`;
    const md = await startMetadata(dir, url, 'wsgi', { DEFAULT: { metadata_workers: 1 }, wsgi: { client_socket_timeout: 2, default_pool_size: 4 } });
    try {
      // A connection that never sends a byte, and one idle after an answer: both closed by Nova at ~2 s.
      const silent = await open(md.port);
      const idle = await open(md.port);
      idle.s.write(`GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nX-Instance-ID: ${uuid}\r\nX-Tenant-ID: proj-a\r\nX-Instance-ID-Signature: ${signInstanceId(SECRET, uuid)}\r\n\r\n`);
      const got = await new Promise<string>((r) => idle.s.once('data', (d: Buffer) => r(d.toString())));
      assert.match(got, /^HTTP\/1\.1 200/);
      assert.match(got, /keep-alive/i);
      // Two more fill the pool of 4; a fifth is closed at once.
      const more = [await open(md.port), await open(md.port)];
      await sleep(100);
      const fifth = await open(md.port);
      const fifthClosed = await Promise.race([fifth.closed, sleep(1000).then(() => -1)]);
      assert.ok(fifthClosed >= 0 && fifthClosed < 1000, `the connection beyond default_pool_size was closed (${fifthClosed})`);
      const [a, b] = await Promise.all([silent.closed, idle.closed]);
      for (const ms of [a, b]) assert.ok(ms >= 1500 && ms < 6000, `closed after ${ms} ms`);
      for (const m of more) m.s.destroy();
      // With the others gone there is room again.
      await sleep(200);
      const r = await call(md.port, 'GET', '/latest/meta-data/hostname', uuid);
      assert.equal(r.status, 200);
    } finally {
      await md.d.stop();
    }
    const noKa = await startMetadata(dir, url, 'noka', { DEFAULT: { metadata_workers: 1 }, wsgi: { keep_alive: false } });
    try {
      const c = await open(noKa.port);
      c.s.write(`GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nX-Instance-ID: ${uuid}\r\nX-Tenant-ID: proj-a\r\nX-Instance-ID-Signature: ${signInstanceId(SECRET, uuid)}\r\n\r\n`);
      let text = '';
      c.s.on('data', (d: Buffer) => (text += d.toString()));
      const ms = await Promise.race([c.closed, sleep(3000).then(() => -1)]);
      assert.ok(ms >= 0, 'Nova closed the connection after its answer');
      assert.match(text, /^HTTP\/1\.1 200/);
      assert.match(text, /\r\nConnection: close\r\n/i);
      assert.ok(text.endsWith('w.novalocal'), 'the body unchanged');
    } finally {
      await noKa.d.stop();
    }
  });
});
