// IMDSv2-style session tokens in the Nova metadata API (in-process, signed proxy headers as the metadata agent
// sends them): PUT /latest/api/token and its TTL rules, tokens bound to their instance, expiry, optional and
// required modes, disabled = Nova's 404, the key shared by workers and kept across restarts.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listen } from '../src/common/http.js';
import { signInstanceId } from '../src/common/hmac.js';
import { silentLogger } from '../src/common/log.js';
import { QuantumClient } from '../src/common/quantum-client.js';
import { migrate, openDatabase, type Db } from '../src/db/connection.js';
import { novaMigrations, type NovaDatabase } from '../src/db/nova-schema.js';
import { MetadataHandler, type HandlerOptions } from '../src/nova-metadata/handler.js';
import { DbMetadataStore } from '../src/nova-metadata/store.js';
import { MetadataTokens, parseTtl, tokenKey } from '../src/nova-metadata/tokens.js';
import { insertInstance, sampleNetworkInfo } from './helpers/nova-fixtures.js';

const SECRET = 'token-test-secret';
const dead = new QuantumClient({ url: 'http://127.0.0.1:9', timeoutMs: 500 });

function call(port: number, method: string, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { connection: 'close', ...headers } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('metadata session tokens', () => {
  let dir: string;
  let db: Db<NovaDatabase>;
  let a: string;
  let b: string;
  const servers: Server[] = [];
  const signed = (uuid: string, extra: Record<string, string> = {}) => ({ 'X-Instance-ID': uuid, 'X-Tenant-ID': 'proj-a', 'X-Instance-ID-Signature': signInstanceId(SECRET, uuid), 'X-Forwarded-For': '10.0.0.2', ...extra });

  async function start(mode: 'disabled' | 'optional' | 'required', key = Buffer.from('k')): Promise<number> {
    const opts: HandlerOptions = { serviceMetadataProxy: true, sharedSecret: SECRET, useForwardedFor: false, cacheExpiration: 15, dhcpDomain: 'novalocal', vendordataProviders: ['StaticJSON'], tokens: { mode, issuer: new MetadataTokens(key) } };
    const h = new MetadataHandler(opts, new DbMetadataStore(db.db), dead, silentLogger);
    const s = createServer(h.handle);
    servers.push(s);
    return listen(s, '127.0.0.1', 0);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qm-tokens-'));
    db = openDatabase<NovaDatabase>(`sqlite:///${join(dir, 'nova.sqlite')}`);
    await migrate(db, 'nova', novaMigrations);
    a = await insertInstance(db.db, { display_name: 'a', network_info: sampleNetworkInfo() });
    b = await insertInstance(db.db, { display_name: 'b', network_info: sampleNetworkInfo() });
  });
  after(async () => {
    for (const s of servers) s.close();
    await db.close();
    await dead.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('PUT /latest/api/token: a token with its TTL echoed; the TTL must be 1..21600; other methods 405', async () => {
    const port = await start('optional');
    const r = await call(port, 'PUT', '/latest/api/token', signed(a, { 'X-aws-ec2-metadata-token-ttl-seconds': '21600' }));
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-aws-ec2-metadata-token-ttl-seconds'], '21600');
    assert.match(r.body, /^v1\.[A-Za-z0-9_-]{38}$/);
    for (const bad of [undefined, '0', '21601', '-5', '1.5', 'abc', '']) {
      const h = bad === undefined ? signed(a) : signed(a, { 'X-aws-ec2-metadata-token-ttl-seconds': bad });
      assert.equal((await call(port, 'PUT', '/latest/api/token', h)).status, 400, `ttl ${bad}`);
    }
    const get = await call(port, 'GET', '/latest/api/token', signed(a));
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, 'PUT');
    // Unsigned: no instance, no token.
    assert.equal((await call(port, 'PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '60' })).status, 400);
    assert.equal(parseTtl(' 60 '), 60);
  });

  test('optional: no token is served as before; this instance\'s token is accepted; another\'s, a forged or an expired one is 401', async () => {
    const port = await start('optional');
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(a))).status, 200);
    const tok = (await call(port, 'PUT', '/latest/api/token', signed(a, { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }))).body;
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(a, { 'X-aws-ec2-metadata-token': tok }))).status, 200);
    assert.equal((await call(port, 'GET', '/', signed(a, { 'X-aws-ec2-metadata-token': tok }))).status, 200);
    // Instance b presents a's token: its uuid is in the MAC, so it fails.
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(b, { 'X-aws-ec2-metadata-token': tok }))).status, 401);
    const forged = `${tok.slice(0, -2)}${tok.endsWith('AA') ? 'BB' : 'AA'}`;
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(a, { 'X-aws-ec2-metadata-token': forged }))).status, 401);
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(a, { 'X-aws-ec2-metadata-token': 'garbage' }))).status, 401);
    const issuer = new MetadataTokens(Buffer.from('k'));
    const old = issuer.issue(a, 1, Date.now() - 5000);
    assert.equal(issuer.check(old, a), 'expired');
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(a, { 'X-aws-ec2-metadata-token': old }))).status, 401);
    // A token of another key (another deployment) is no good either.
    assert.equal(new MetadataTokens(Buffer.from('other')).check(tok, a), 'invalid');
  });

  test('required: 401 without a token, the listing too; with one, everything as usual', async () => {
    const port = await start('required');
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(a))).status, 401);
    assert.equal((await call(port, 'GET', '/', signed(a))).status, 401);
    assert.equal((await call(port, 'GET', '/openstack/latest/meta_data.json', signed(a))).status, 401);
    const tok = (await call(port, 'PUT', '/latest/api/token', signed(a, { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }))).body;
    for (const p of ['/', '/latest/meta-data/instance-id', '/openstack/latest/meta_data.json']) assert.equal((await call(port, 'GET', p, signed(a, { 'X-aws-ec2-metadata-token': tok }))).status, 200, p);
  });

  test('disabled: the token path is Nova\'s 404 and token headers are ignored', async () => {
    const port = await start('disabled');
    assert.equal((await call(port, 'PUT', '/latest/api/token', signed(a, { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }))).status, 404);
    assert.equal((await call(port, 'GET', '/latest/meta-data/instance-id', signed(a, { 'X-aws-ec2-metadata-token': 'garbage' }))).status, 200);
  });

  test('the key: configured, derived from the shared secret, or one key file for every worker, kept across restarts', () => {
    assert.deepEqual(tokenKey({ configured: 'abc', sharedSecret: 'x', keyFile: '/nonexistent/k' }), Buffer.from('abc'));
    const d1 = tokenKey({ sharedSecret: 's', keyFile: '/nonexistent/k' });
    assert.deepEqual(d1, tokenKey({ sharedSecret: 's', keyFile: '/elsewhere/k' }));
    const f = join(dir, 'state', 'metadata_token.key');
    const k1 = tokenKey({ sharedSecret: '', keyFile: f });
    assert.equal(k1.length, 32);
    assert.deepEqual(tokenKey({ sharedSecret: '', keyFile: f }), k1, 'the same key again (a restart, another worker)');
    assert.equal(statSync(f).mode & 0o777, 0o600);
    const tok = new MetadataTokens(k1).issue(a, 60);
    assert.equal(new MetadataTokens(tokenKey({ sharedSecret: '', keyFile: f })).check(tok, a), 'valid');
  });
});
