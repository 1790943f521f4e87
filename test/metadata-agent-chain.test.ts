// Session tokens (issue 14) and request ids (issue 16) through the real agent → nova-api hop: the agent passes
// the token headers and a token PUT through, a token stays bound to its instance even for a same-IP guest of
// another tenant, Nova's answers keep their bytes, and one grep of a request id finds its line in the agent's
// log and in nova-api's.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { signInstanceId } from '../src/common/hmac.js';
import { CHAIN_SECRET, readLog, startChain, type Chain } from './helpers/chain.js';
import { httpGet, waitFor } from './helpers/proc.js';

const RID = /^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TTL = 'X-aws-ec2-metadata-token-ttl-seconds';
const TOKEN = 'X-aws-ec2-metadata-token';

describe('tokens and request ids through the metadata agent', () => {
  let c: Chain;
  let a: string;
  let b: string;

  before(async () => {
    c = await startChain({ tenants: ['tenant-a', 'tenant-b'] });
    // Two tenants' guests with the same address, each behind its own router.
    a = await c.boot('guest-a', 'tenant-a', '10.9.0.5', { user_data: Buffer.from('#!/bin/sh\necho a\n').toString('base64') });
    b = await c.boot('guest-b', 'tenant-b', '10.9.0.5');
  });
  after(async () => {
    await c?.stop();
  });

  test('a token PUT through the agent; the token opens its own instance only, not the same-IP guest of another tenant', async () => {
    const put = await c.viaAgent('tenant-a', '10.9.0.5', '/latest/api/token', { method: 'PUT', headers: { [TTL]: '120' } });
    assert.equal(put.status, 200, put.body);
    assert.match(put.body, /^v1\./);
    assert.equal(put.headers['x-aws-ec2-metadata-token-ttl-seconds'], '120', 'the TTL header comes back through the agent');
    const tokenA = put.body;
    const mine = await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/instance-id', { headers: { [TOKEN]: tokenA } });
    assert.equal(mine.status, 200);
    const viaB = await c.viaAgent('tenant-b', '10.9.0.5', '/latest/meta-data/instance-id', { headers: { [TOKEN]: tokenA } });
    assert.equal(viaB.status, 401, "guest-b (same IP, other tenant) with guest-a's token");
    const putB = await c.viaAgent('tenant-b', '10.9.0.5', '/latest/api/token', { method: 'PUT', headers: { [TTL]: '60' } });
    assert.equal(putB.status, 200);
    assert.notEqual(putB.body, tokenA);
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/instance-id', { headers: { [TOKEN]: putB.body } })).status, 401, "guest-a with guest-b's token");
    assert.equal((await c.viaAgent('tenant-b', '10.9.0.5', '/latest/meta-data/instance-id', { headers: { [TOKEN]: putB.body } })).status, 200);
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/instance-id', { headers: { [TOKEN]: 'v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } })).status, 401, 'a forged token');
    // Optional mode: no token is served as before; a bad TTL is Nova's 400; a GET of the token path its 405.
    const plain = await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/instance-id');
    assert.equal(plain.status, 200);
    assert.equal(plain.body, mine.body);
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/api/token', { method: 'PUT', headers: { [TTL]: '0' } })).status, 400);
    assert.equal((await c.viaAgent('tenant-a', '10.9.0.5', '/latest/api/token', { method: 'PUT' })).status, 400);
    const get = await c.viaAgent('tenant-a', '10.9.0.5', '/latest/api/token');
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, 'PUT');
  });

  test("existing paths: the agent's answer is Nova's, byte for byte and with its content type", async () => {
    for (const [path, uuid, tenant] of [
      ['/latest/meta-data/', a, 'tenant-a'],
      ['/latest/meta-data/instance-id', a, 'tenant-a'],
      ['/latest/user-data', a, 'tenant-a'],
      ['/openstack/latest/network_data.json', b, 'tenant-b'],
      ['/openstack', b, 'tenant-b'],
    ] as const) {
      const direct = await httpGet(`http://127.0.0.1:${c.metadataPort}${path}`, { 'x-forwarded-for': '10.9.0.5', 'x-instance-id': uuid, 'x-tenant-id': tenant, 'x-instance-id-signature': signInstanceId(CHAIN_SECRET, uuid) });
      const via = await c.viaAgent(tenant, '10.9.0.5', path);
      assert.equal(via.status, direct.status, path);
      assert.equal(via.body, direct.body, path);
      assert.equal(via.headers['content-type'], direct.headers['content-type'], path);
    }
  });

  test("a request id from the proxy is on the agent's line and nova-api's, and echoed; the body does not change", async () => {
    const rid = `req-${randomUUID()}`;
    const without = await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/hostname');
    const r = await c.viaAgent('tenant-a', '10.9.0.5', '/latest/meta-data/hostname', { headers: { 'X-Openstack-Request-Id': rid } });
    assert.equal(r.status, 200);
    assert.equal(r.body, without.body);
    assert.equal(r.headers['x-openstack-request-id'], rid);
    // One grep of the id: the agent's line for the request and nova-api's.
    const grep = (file: string) => {
      const lines = readLog(file).split('\n').filter((l) => l.includes(rid));
      return lines.length ? lines : undefined;
    };
    const agentLines = await waitFor(() => grep(c.agentLog), 5000, 50, 'the agent line');
    const novaLines = await waitFor(() => grep(c.novaLog), 5000, 50, 'the nova-api line');
    const agentLine = JSON.parse(agentLines[0]!) as Record<string, unknown>;
    assert.equal(agentLine.request_id, rid);
    assert.equal(agentLine.instance_id, a);
    assert.equal(agentLine.router_id, c.nets['tenant-a']!.routerId);
    assert.equal(agentLine.status, 200);
    const novaLine = JSON.parse(novaLines[0]!) as Record<string, unknown>;
    assert.equal(novaLine.request_id, rid);
    assert.equal(novaLine.path, '/latest/meta-data/hostname');
    assert.equal(novaLine.instance_id, a);
    assert.match(String(novaLine.msg), /status: 200/);
  });

  test('a malformed or missing request id is replaced by a new one (never logged or passed on as sent)', async () => {
    const good = randomUUID();
    for (const bad of [`REQ-${good}`, `req-${good.toUpperCase()}`, `req-${good}x`, `req-${good}\tx`, 'req-1', `${good}`]) {
      const r = await c.viaAgent('tenant-b', '10.9.0.5', '/latest/meta-data/instance-id', { headers: { 'X-Openstack-Request-Id': bad } });
      assert.equal(r.status, 200, bad);
      const made = String(r.headers['x-openstack-request-id']);
      assert.match(made, RID);
      assert.notEqual(made, bad);
      // Both daemons write their access line once the answer is sent, through an asynchronous logger.
      await waitFor(() => readLog(c.novaLog).includes(made), 5000, 50, `nova line for ${made}`);
      await waitFor(() => readLog(c.agentLog).includes(made), 5000, 50, `agent line for ${made}`);
    }
    for (const bad of [`REQ-${good}`, `req-${good.toUpperCase()}`, `req-${good}x`]) {
      assert.ok(!readLog(c.agentLog).includes(bad), `agent log has ${bad}`);
      assert.ok(!readLog(c.novaLog).includes(bad), `nova log has ${bad}`);
    }
    const none = await c.viaAgent('tenant-b', '10.9.0.5', '/latest/meta-data/instance-id');
    assert.match(String(none.headers['x-openstack-request-id']), RID);
  });
});
