// oslo.messaging-compatible casts and notifications against a real, private RabbitMQ node.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect, type ChannelModel } from 'amqplib';
import pino from 'pino';
import { loadConfig, loggingOpts, mergeSpecs } from '../src/common/config.js';
import { ConfigError } from '../src/common/errors.js';
import { Transport, maskUrl, messagingOpts, parseTransportUrl, pyJson, transportOptionsFrom, transportUrlFrom, type Args, type TransportOptions } from '../src/common/messaging.js';
import { rabbitSkipReason, startRabbit, type TestRabbit } from './helpers/rabbitmq.js';
import { getFreePort, sleep, waitFor } from './helpers/proc.js';

// ---- configuration: no broker needed ----

const spec = mergeSpecs(loggingOpts, messagingOpts);
const confDir = mkdtempSync(join(tmpdir(), 'qm-msg-conf-'));
function confFrom(ini: string, argv: string[] = []) {
  const f = join(confDir, `${randomBytes(4).toString('hex')}.conf`);
  writeFileSync(f, ini);
  return loadConfig(spec, ['--config-file', f, ...argv], { prog: 't', description: 'd' }).conf;
}

describe('transport_url', () => {
  test('unset everywhere: no URL, the daemon polls', () => {
    assert.equal(transportUrlFrom(confFrom('[DEFAULT]\n')), undefined);
  });

  test('transport_url wins over the rabbit_* names', () => {
    const conf = confFrom('[DEFAULT]\ntransport_url = rabbit://quantum:s3cret@mq1:5673/openstack\nrabbit_host = other\n');
    assert.equal(transportUrlFrom(conf), 'rabbit://quantum:s3cret@mq1:5673/openstack');
    assert.equal(conf.DEFAULT.control_exchange, 'quantum');
  });

  test("Grizzly's rabbit_* names in [DEFAULT] and as Zed's [oslo_messaging_rabbit] spells them", () => {
    const warned: string[] = [];
    const g = confFrom('[DEFAULT]\nrabbit_host = 10.0.0.5\nrabbit_port = 5673\nrabbit_userid = quantum\nrabbit_password = p@ss:w/rd\nrabbit_virtual_host = /\nrabbit_retry_interval = 4\n');
    assert.equal(transportUrlFrom(g, (m) => warned.push(m)), 'rabbit://quantum:p%40ss%3Aw%2Frd@10.0.0.5:5673/');
    assert.match(warned[0] ?? '', /deprecated: set \[DEFAULT\] transport_url = rabbit:\/\/quantum:\*\*\*@10\.0\.0\.5:5673\//);
    assert.equal(g.oslo_messaging_rabbit.rabbit_retry_interval, 4);
    const u = parseTransportUrl(transportUrlFrom(g)!);
    assert.deepEqual(u.hosts, [{ hostname: '10.0.0.5', port: 5673, username: 'quantum', password: 'p@ss:w/rd' }]);
    assert.equal(u.virtualHost, '/');

    const z = confFrom('[oslo_messaging_rabbit]\nrabbit_hosts = mq1:5672, mq2, [fd00::3]:5674\nrabbit_virtual_host = quantum\nheartbeat_timeout_threshold = 10\n');
    assert.equal(transportUrlFrom(z), 'rabbit://guest:guest@mq1:5672,guest:guest@mq2:5672,guest:guest@[fd00::3]:5674/quantum');
    assert.equal(z.oslo_messaging_rabbit.heartbeat_timeout_threshold, 10);
    assert.equal(z.oslo_messaging_rabbit.rabbit_interval_max, 30);
  });

  test('several hosts, percent-decoded credentials, vhost, ignored query options', () => {
    const u = parseTransportUrl('rabbit://us%2Fer:pa%40ss@host1:5672,u2:p2@[::1]:5673,host3/my%2Fvhost?ssl=0&kombu_compression=gzip');
    assert.deepEqual(u.hosts, [
      { hostname: 'host1', port: 5672, username: 'us/er', password: 'pa@ss' },
      { hostname: '::1', port: 5673, username: 'u2', password: 'p2' },
      { hostname: 'host3', port: 5672, username: 'guest', password: 'guest' },
    ]);
    assert.equal(u.virtualHost, 'my/vhost');
    assert.equal(u.ssl, false);
    assert.equal(parseTransportUrl('rabbit://h/').virtualHost, '/');
    assert.equal(parseTransportUrl('rabbit://h').virtualHost, '/');
    assert.equal(parseTransportUrl('rabbit://h?ssl=1').ssl, true);
    assert.deepEqual(parseTransportUrl('rabbit://').hosts, [{ hostname: 'localhost', port: 5672, username: 'guest', password: 'guest' }]);
  });

  test('transportOptionsFrom: the [oslo_messaging_rabbit] intervals in ms, undefined without a broker', () => {
    const o = transportOptionsFrom(confFrom('[DEFAULT]\ntransport_url = rabbit://u:p@mq:5672/\ncontrol_exchange = neutron\n[oslo_messaging_rabbit]\nrabbit_retry_interval = 2\nrabbit_interval_max = 10\n'), { log: pino({ level: 'silent' }), name: 'x' });
    assert.deepEqual({ ...o, log: undefined }, { url: 'rabbit://u:p@mq:5672/', exchange: 'neutron', log: undefined, name: 'x', retryIntervalMs: 2000, retryBackoffMs: 2000, retryMaxMs: 10_000, heartbeatSec: 60 });
    assert.equal(transportOptionsFrom(confFrom('[DEFAULT]\n'), { log: pino({ level: 'silent' }), name: 'x' }), undefined);
  });

  test('maskUrl hides every password', () => {
    assert.equal(maskUrl('rabbit://quantum:s3cret@mq1:5672,q2:other@mq2:5672/vh'), 'rabbit://quantum:***@mq1:5672,q2:***@mq2:5672/vh');
    assert.equal(maskUrl('rabbit://mq1:5672/'), 'rabbit://mq1:5672/');
    assert.equal(maskUrl('rabbit://user@mq1/'), 'rabbit://user@mq1/');
    assert.equal(maskUrl('kafka:u:s3cret@k1'), 'kafka:***@k1');
  });

  test('non-rabbit schemes and garbage are ConfigErrors that name the problem, never the password', () => {
    const bad = (conf: ReturnType<typeof confFrom>, re: RegExp) =>
      assert.throws(() => transportUrlFrom(conf), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, re);
        assert.doesNotMatch(e.message, /s3cret/);
        return true;
      });
    bad(confFrom('[DEFAULT]\ntransport_url = kafka://u:s3cret@k1:9092/\n'), /transport 'kafka' is not supported, only rabbit:\/\//);
    bad(confFrom('[DEFAULT]\ntransport_url = just garbage\n'), /invalid transport_url .*no scheme/);
    bad(confFrom('[DEFAULT]\ntransport_url = rabbit://u:s3cret@mq1:notaport/\n'), /bad port "notaport"/);
    bad(confFrom('[DEFAULT]\ntransport_url = rabbit://u:s3cret@:5672/\n'), /empty host name/);
    bad(confFrom('[DEFAULT]\nrabbit_hosts = mq1:99999\n'), /rabbit_hosts: bad port/);
  });

  test('pyJson writes what Python json.dumps writes', () => {
    assert.equal(pyJson({ a: 'é\u2028"\n', b: [1, 2.5, null, true], c: {}, d: [], e: undefined }), '{"a": "\\u00e9\\u2028\\"\\n", "b": [1, 2.5, null, true], "c": {}, "d": []}');
  });
});

// ---- against a real broker ----

interface Captured {
  log: pino.Logger;
  lines: Array<{ level: number; msg: string } & Record<string, unknown>>;
  has(re: RegExp, level?: number): boolean;
  count(re: RegExp): number;
}

function captureLogger(): Captured {
  const lines: Captured['lines'] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return {
    log: pino({ level: 'debug' }, stream),
    lines,
    has: (re, level) => lines.some((l) => re.test(l.msg) && (level === undefined || l.level === level)),
    count: (re) => lines.filter((l) => re.test(l.msg)).length,
  };
}

const WARN = 40;
const ERROR = 50;
const uid = () => randomBytes(3).toString('hex');
const hasPython = spawnSync('python3', ['-c', 'import json'], { stdio: 'ignore' }).status === 0;

function waitUp(t: Transport, ms = 10_000): Promise<void> {
  if (t.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('transport did not come up')), ms);
    t.on('up', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function waitEvent(t: Transport, ev: 'up' | 'down', ms = 10_000): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${ev}' within ${ms} ms`)), ms);
    t.on(ev, () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
  });
}

describe('Transport over RabbitMQ', { skip: rabbitSkipReason() ?? false, timeout: 90_000 }, () => {
  let rabbit: TestRabbit;
  const open: Transport[] = [];
  let raw: ChannelModel | undefined;

  function mk(name: string, o: Partial<TransportOptions> = {}): { t: Transport; cap: Captured } {
    const cap = captureLogger();
    const t = new Transport({ url: rabbit.url, exchange: 'quantum', log: cap.log, name, retryIntervalMs: 100, retryBackoffMs: 100, retryMaxMs: 500, heartbeatSec: 10, ...o });
    open.push(t);
    return { t, cap };
  }
  async function started(name: string, o: Partial<TransportOptions> = {}) {
    const r = mk(name, o);
    r.t.start();
    await waitUp(r.t);
    return r;
  }
  const rawConn = async () => {
    if (!raw) {
      raw = await connect(`amqp://guest:guest@127.0.0.1:${rabbit.port}/`);
      raw.on('error', () => undefined);
      raw.on('close', () => (raw = undefined));
    }
    return raw;
  };

  before(async () => {
    const t0 = Date.now();
    rabbit = await startRabbit();
    process.stderr.write(`# private RabbitMQ ${rabbit.nodename} on port ${rabbit.port} up in ${Date.now() - t0} ms\n`);
  });
  after(async () => {
    await Promise.all(open.map((t) => t.close()));
    await raw?.close().catch(() => undefined);
    await rabbit?.stop();
  });

  test('a cast to topic.host reaches only that host, to the topic one consumer, a fanout all', { timeout: 20_000 }, async () => {
    const topic = `t_${uid()}`;
    const got: Record<string, Array<[string, Args]>> = { a: [], b: [] };
    const a = await started('agent-a');
    const b = await started('agent-b');
    a.t.consume(topic, 'host-a', (m, args) => void got.a!.push([m, args]));
    b.t.consume(topic, 'host-b', (m, args) => void got.b!.push([m, args]));
    const p = await started('server');
    await waitFor(async () => {
      const qs = (await rabbit.listQueues()).filter((q) => q.name.startsWith(topic));
      return qs.length === 5 && qs.every((q) => q.consumers === (q.name === topic ? 2 : 1));
    }, 10_000, 100, 'both servers consuming');

    assert.equal(p.t.cast(topic, 'router_updated', { router_id: 'r1' }, 'host-a'), true);
    await waitFor(() => got.a!.length === 1, 5000);
    assert.deepEqual(got.a![0], ['router_updated', { router_id: 'r1' }]);
    assert.equal(p.t.cast(topic, 'sync_all', {}), true);
    await waitFor(() => got.a!.length + got.b!.length === 2, 5000);
    assert.equal(p.t.fanout(topic, 'routers_updated', { routers: ['r1', 'r2'] }), true);
    await waitFor(() => got.a!.length + got.b!.length === 4, 5000);
    await sleep(300);
    const methods = (h: 'a' | 'b') => got[h]!.map(([m]) => m);
    assert.equal(methods('b').filter((m) => m === 'router_updated').length, 0, 'host-b never sees host-a casts');
    assert.equal([...methods('a'), ...methods('b')].filter((m) => m === 'sync_all').length, 1, 'a plain topic cast reaches one consumer');
    assert.ok(methods('a').includes('routers_updated') && methods('b').includes('routers_updated'), 'the fanout reaches both');
  });

  test('notifications reach every pool; within a pool one listener gets each', { timeout: 20_000 }, async () => {
    const got: Array<[string, string, Args]> = [];
    const pools = [`pool1_${uid()}`, `pool2_${uid()}`];
    const l1 = await started('l1');
    const l2 = await started('l2');
    const l3 = await started('l3');
    l1.t.consumeNotifications(pools[0]!, (ev, payload) => void got.push(['l1', ev, payload]));
    l2.t.consumeNotifications(pools[1]!, (ev, payload) => void got.push(['l2', ev, payload]));
    l3.t.consumeNotifications(pools[1]!, (ev, payload) => void got.push(['l3', ev, payload]));
    await waitFor(async () => (await rabbit.listQueues()).filter((q) => pools.includes(q.name) && q.consumers > 0).length === 2, 10_000, 100, 'pool queues');
    const p = await started('publisher');
    assert.equal(p.t.notify('port.update.end', { port: { id: 'p1' } }, 'network.host1'), true);
    await waitFor(() => got.length === 2, 5000);
    await sleep(300);
    assert.equal(got.length, 2);
    assert.deepEqual(got.find((g) => g[0] === 'l1')?.slice(1), ['port.update.end', { port: { id: 'p1' } }]);
    assert.equal(got.filter((g) => g[0] !== 'l1').length, 1, 'one delivery for the shared pool');
  });

  test('the wire format is oslo.messaging 2.0: envelope, cast and notification bodies, properties', { timeout: 20_000 }, async () => {
    const conn = await rawConn();
    const ch = await conn.createChannel();
    const topic = `raw_${uid()}`;
    const p = await started('wire');
    const q = await ch.assertQueue('', { exclusive: true });
    await ch.bindQueue(q.queue, 'quantum', topic);
    await ch.bindQueue(q.queue, 'quantum', 'notifications.info');
    assert.ok(p.t.cast(topic, 'port_update', { port: { id: 'p1', name: 'é' }, n: [1, 2] }));
    assert.ok(p.t.notify('router.interface.create', { router_interface: { id: 'r1' } }, 'network.ctl'));
    const msgs: Array<{ key: string; props: Record<string, unknown>; body: string }> = [];
    await ch.consume(q.queue, (m) => {
      if (m) msgs.push({ key: m.fields.routingKey, props: m.properties as unknown as Record<string, unknown>, body: m.content.toString('utf8') });
    }, { noAck: true });
    await waitFor(() => msgs.length === 2, 5000);
    await ch.close();

    const cast = msgs.find((m) => m.key === topic)!;
    assert.equal(cast.props.contentType, 'application/json');
    assert.equal(cast.props.contentEncoding, 'utf-8');
    assert.equal(cast.props.deliveryMode, 2);
    assert.match(cast.body, /^\{"oslo\.version": "2\.0", "oslo\.message": "\{\\"method\\": \\"port_update\\", \\"args\\": \{\\"port\\": \{\\"id\\": \\"p1\\", \\"name\\": \\"\\\\u00e9\\"\}, \\"n\\": \[1, 2\]\}, \\"version\\": \\"1\.0\\", \\"_unique_id\\": \\"[0-9a-f]{32}\\", \\"_context_/);
    const outer = JSON.parse(cast.body) as Record<string, unknown>;
    assert.deepEqual(Object.keys(outer), ['oslo.version', 'oslo.message']);
    const inner = JSON.parse(outer['oslo.message'] as string) as Record<string, unknown>;
    assert.equal(inner.method, 'port_update');
    assert.deepEqual(inner.args, { port: { id: 'p1', name: 'é' }, n: [1, 2] });
    assert.equal(inner.version, '1.0');
    assert.match(String(inner._unique_id), /^[0-9a-f]{32}$/);
    assert.equal(inner._context_is_admin, true);
    assert.match(String(inner._context_request_id), /^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(inner._context_tenant_id, null);
    assert.equal(inner._context_project_id, null);
    assert.deepEqual(inner._context_roles, ['admin']);
    assert.ok(!('_msg_id' in inner) && !('_reply_q' in inner), 'a cast expects no reply');
    for (const k of Object.keys(inner).slice(4)) assert.match(k, /^_context_/);

    const note = msgs.find((m) => m.key === 'notifications.info')!;
    const n = JSON.parse(JSON.parse(note.body)['oslo.message'] as string) as Record<string, unknown>;
    assert.deepEqual(Object.keys(n).slice(0, 7), ['message_id', 'publisher_id', 'event_type', 'priority', 'payload', 'timestamp', '_unique_id']);
    assert.match(String(n.message_id), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(n.publisher_id, 'network.ctl');
    assert.equal(n.event_type, 'router.interface.create');
    assert.equal(n.priority, 'INFO');
    assert.deepEqual(n.payload, { router_interface: { id: 'r1' } });
    assert.match(String(n.timestamp), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$/);
    assert.ok(Math.abs(Date.parse(`${String(n.timestamp).slice(0, 23).replace(' ', 'T')}Z`) - Date.now()) < 60_000, 'UTC');

    if (hasPython) {
      // oslo's own steps: json.loads the body, json.loads oslo.message; and json.dumps gives back our bytes.
      const py = `import json,sys\nfor body in sys.stdin.read().split("\\n\\x00\\n"):\n  outer=json.loads(body)\n  assert json.dumps(outer)==body, body\n  inner=outer["oslo.message"]\n  assert json.dumps(json.loads(inner))==inner, inner\nprint("ok")\n`;
      const out = execFileSync('python3', ['-c', py], { input: msgs.map((m) => m.body).join('\n\x00\n') }).toString().trim();
      assert.equal(out, 'ok');
    }
  });

  test('list_queues / list_exchanges show what an operator knows from OpenStack', { timeout: 20_000 }, async () => {
    const host = `net-${uid()}`;
    const a = await started('quantum-l3-agent');
    a.t.consume('l3_agent', host, () => undefined);
    let qs: Awaited<ReturnType<TestRabbit['listQueues']>> = [];
    await waitFor(async () => {
      qs = await rabbit.listQueues();
      return qs.some((q) => /^l3_agent_fanout_[0-9a-f]{32}$/.test(q.name) && q.consumers === 1);
    }, 10_000, 100, 'the fanout queue');
    assert.equal(qs.find((q) => q.name === 'l3_agent')?.consumers, 1);
    assert.equal(qs.find((q) => q.name === `l3_agent.${host}`)?.consumers, 1);
    const xs = await rabbit.listExchanges();
    assert.deepEqual(xs.find((x) => x.name === 'quantum'), { name: 'quantum', type: 'topic', durable: false, auto_delete: false });
    assert.deepEqual(xs.find((x) => x.name === 'l3_agent_fanout'), { name: 'l3_agent_fanout', type: 'fanout', durable: false, auto_delete: true });
    const conns = await rabbit.ctl('list_connections', 'client_properties');
    assert.match(conns, new RegExp(`quantum-l3-agent:${process.pid}:[0-9a-f-]{36}`), 'connection_name as oslo names it');
  });

  test('a throwing handler and malformed messages are logged and acked; the consumer goes on', { timeout: 20_000 }, async () => {
    const topic = `bad_${uid()}`;
    const seen: string[] = [];
    const c = await started('consumer');
    c.t.consume(topic, 'h1', async (method) => {
      seen.push(method);
      if (method === 'boom') throw new Error('handler exploded');
      if (method === 'sync_boom') throw new Error('never async');
    });
    await waitFor(async () => (await rabbit.listQueues()).some((q) => q.name === topic && q.consumers === 1), 10_000, 100, 'queue');
    const p = await started('producer');
    p.t.cast(topic, 'boom', {});
    const ch = await (await rawConn()).createChannel();
    ch.sendToQueue(topic, Buffer.from('this is {not json'));
    ch.sendToQueue(topic, Buffer.from(JSON.stringify({ 'oslo.version': '2.0', 'oslo.message': JSON.stringify({ args: {} }) })));
    ch.sendToQueue(topic, Buffer.from(JSON.stringify({ 'oslo.version': '9.0', 'oslo.message': '{}' })));
    await ch.close();
    p.t.cast(topic, 'fine', { ok: true });
    await waitFor(() => seen.includes('fine'), 5000);
    assert.deepEqual(seen, ['boom', 'fine']);
    assert.ok(c.cap.has(/handler failed/, ERROR));
    assert.equal(c.cap.count(/malformed message/), 3);
    await waitFor(async () => (await rabbit.listQueues()).find((q) => q.name === topic)?.messages === 0, 5000, 100, 'all acked');
  });

  test('a consumer cancelled by the server (queue deleted) declares its queue again', { timeout: 20_000 }, async () => {
    const topic = `cancel_${uid()}`;
    const seen: string[] = [];
    const c = await started('consumer');
    c.t.consume(topic, 'h1', (m) => void seen.push(m));
    await waitFor(async () => (await rabbit.listQueues()).some((q) => q.name === `${topic}.h1` && q.consumers === 1), 10_000, 100, 'queue');
    await rabbit.ctl('delete_queue', `${topic}.h1`);
    await waitFor(async () => (await rabbit.listQueues()).some((q) => q.name === `${topic}.h1` && q.consumers === 1), 10_000, 100, 'queue back');
    assert.ok(c.cap.has(/cancelled a consumer/, WARN));
    const p = await started('producer');
    p.t.cast(topic, 'after_cancel', {}, 'h1');
    await waitFor(() => seen.includes('after_cancel'), 5000);
  });

  test('the control exchange already declared with other flags: said clearly, used as it is', { timeout: 20_000 }, async () => {
    const exchange = `durable_${uid()}`;
    const ch = await (await rawConn()).createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true, autoDelete: false });
    await ch.close();
    const seen: string[] = [];
    const c = await started('consumer', { exchange });
    c.t.consume('dx', 'h', (m) => void seen.push(m));
    await waitFor(async () => (await rabbit.listQueues()).some((q) => q.name === 'dx.h' && q.consumers === 1), 10_000, 100, 'queue');
    assert.ok(c.cap.lines.some((l) => l.level === ERROR && /exchange '.*' already exists with flags other than this service declares/.test(l.msg) && /inequivalent arg 'durable'/.test(String(l.err))));
    const p = await started('producer', { exchange });
    p.t.cast('dx', 'works', {}, 'h');
    await waitFor(() => seen.includes('works'), 5000);
  });

  test('broker outage: down, casts dropped (one warning), up again by itself, consumers work again', { timeout: 30_000 }, async () => {
    const topic = `outage_${uid()}`;
    const seen: string[] = [];
    const c = await started('consumer');
    c.t.consume(topic, 'h1', (m) => void seen.push(m));
    const p = await started('producer');
    await waitFor(async () => (await rabbit.listQueues()).filter((q) => q.name.startsWith(topic) && q.consumers === 1).length === 3, 10_000, 100, 'queues');
    const downs = Promise.all([waitEvent(c.t, 'down'), waitEvent(p.t, 'down')]);
    const ups = Promise.all([waitEvent(c.t, 'up', 20_000), waitEvent(p.t, 'up', 20_000)]);
    await rabbit.down();
    await downs;
    assert.equal(c.t.connected, false);
    assert.equal(p.t.cast(topic, 'lost1', {}), false);
    assert.equal(p.t.fanout(topic, 'lost2', {}), false);
    assert.equal(p.t.notify('x.y', {}, 'p'), false);
    assert.equal(p.cap.count(/not connected to the AMQP server: dropped/), 3);
    assert.equal(p.cap.lines.filter((l) => l.level === WARN && /dropped/.test(l.msg)).length, 1, 'one warning per outage');
    await sleep(1000);
    const t0 = Date.now();
    await rabbit.up();
    await ups;
    process.stderr.write(`# 'up' again ${Date.now() - t0} ms after start_app was issued\n`);
    assert.ok(p.cap.lines.filter((l) => l.level >= WARN && /unreachable/.test(l.msg)).length <= 1, 'the retries are not logged as warnings each time');
    assert.ok(p.cap.has(/^Reconnected to AMQP server/));
    assert.equal(p.t.cast(topic, 'back', {}, 'h1'), true);
    assert.equal(p.t.fanout(topic, 'back_fanout', {}), true);
    await waitFor(() => seen.includes('back') && seen.includes('back_fanout'), 5000);
    assert.ok(!seen.some((m) => m.startsWith('lost')));
  });

  test('several hosts: the unreachable first one is skipped, the next one used', { timeout: 20_000 }, async () => {
    const deadPort = await getFreePort();
    const { t, cap } = mk('two-hosts', { url: `rabbit://guest:guest@127.0.0.1:${deadPort},guest:guest@127.0.0.1:${rabbit.port}/` });
    t.start();
    await waitUp(t);
    assert.ok(cap.has(new RegExp(`127\\.0\\.0\\.1:${deadPort} is unreachable`)));
    assert.ok(cap.has(new RegExp(`^Connected to AMQP server on 127\\.0\\.0\\.1:${rabbit.port}`)));
  });

  test('a hung broker is noticed by heartbeats: "down", then "up" again once it answers', { timeout: 30_000 }, async () => {
    const { t, cap } = mk('heartbeat', { heartbeatSec: 1 });
    t.start();
    await waitUp(t);
    const down = waitEvent(t, 'down', 10_000);
    rabbit.freeze();
    try {
      const ms = await down;
      process.stderr.write(`# heartbeat loss noticed after ${ms} ms\n`);
      assert.ok(cap.lines.some((l) => /lost the connection/.test(l.msg) && /[Hh]eartbeat/.test(String(l.err))), 'the heartbeat is named as the cause');
    } finally {
      rabbit.thaw();
    }
    await waitEvent(t, 'up', 20_000);
  });

  test('broker down at start: start() does not throw, "up" once it comes', { timeout: 30_000 }, async () => {
    await rabbit.down();
    const { t, cap } = mk('early');
    const seen: string[] = [];
    t.consume('early_topic', 'h', (m) => void seen.push(m));
    const up = waitEvent(t, 'up', 20_000);
    t.start();
    await sleep(1500);
    assert.equal(t.connected, false);
    assert.equal(cap.lines.filter((l) => l.level === WARN && /AMQP server on 127\.0\.0\.1:\d+ is unreachable/.test(l.msg)).length, 1);
    assert.ok(cap.count(/is unreachable/) > 2, 'kept retrying');
    await rabbit.up();
    await up;
    const p = await started('producer');
    p.t.cast('early_topic', 'hello', {}, 'h');
    await waitFor(() => seen.includes('hello'), 5000);
  });

  test('a memory alarm blocks publishing: logged, bounded outbox, the accepted messages arrive after', { timeout: 30_000 }, async () => {
    const topic = `alarm_${uid()}`;
    let got = 0;
    const c = await started('consumer');
    c.t.consume(topic, 'h', () => void got++);
    await waitFor(async () => (await rabbit.listQueues()).some((q) => q.name === `${topic}.h` && q.consumers === 1), 10_000, 100, 'queue');
    const p = await started('producer');
    p.t.cast(topic, 'warmup', {}, 'h');
    await waitFor(() => got === 1, 5000);
    await rabbit.ctl('set_vm_memory_high_watermark', '0.0000001');
    try {
      let accepted = 1; // the warm-up
      const castOne = () => {
        const ok = p.t.cast(topic, 'm', { pad: 'x'.repeat(1000) }, 'h');
        if (ok) accepted++;
        return ok;
      };
      await waitFor(() => castOne() && p.cap.has(/blocked this connection/, WARN), 10_000, 50, 'blocked');
      let refused = 0;
      for (let i = 0; i < 40_000 && refused === 0; i++) {
        if (!castOne()) refused++;
        if (i % 1000 === 0) await sleep(1);
      }
      assert.equal(refused, 1, 'the outbox is bounded');
      assert.ok(p.cap.has(/outbox full/, WARN));
      await rabbit.ctl('set_vm_memory_high_watermark', '0.4');
      await waitFor(() => got === accepted, 20_000, 100, `all ${accepted} accepted messages`);
      assert.ok(p.cap.has(/unblocked this connection/));
    } finally {
      await rabbit.ctl('set_vm_memory_high_watermark', '0.4');
    }
  });
});
