// The proxy's per-source fair scheduling of its agent connections (src/ns-proxy/fair-queue.ts): round-robin
// by source, each source within its share, longest-queue drop when the queue is full; then the same through
// a real proxy process (both modes) whose agent answers only when the test says, so the order in which
// requests reach the agent is exact.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { FairQueue, Flow } from '../src/ns-proxy/fair-queue.js';
import { upstreamPerSource } from '../src/ns-proxy/proxy.js';
import { captureServer, getFreePort, tempDir, waitFor } from './helpers/mdpath.js';
import { PROXY_MODES, startProxyIn } from './helpers/proxy-modes.js';

const ROUTER = '0f3a1c52-7d4e-4b9a-8c21-5e6f7a8b9c0d';

/** Items are "<flow name><n>": a FairQueue over named flows, and what it hands out (the clock is the test's). */
function setup(perFlow: number, max: number, names: string[]) {
  const q = new FairQueue<string>(perFlow, max, 1000);
  const flows = Object.fromEntries(names.map((n) => [n, new Flow<string>(n)])) as Record<string, Flow<string>>;
  let now = 10_000;
  const clock = {
    get now() {
      return now;
    },
    advance: (ms: number) => (now += ms),
  };
  /** Requests of two flows within the window: shares apply. */
  const compete = () => {
    q.arrived(flows[names[0]!]!, now);
    q.arrived(flows[names[1]!]!, now);
  };
  const takeAll = () => {
    const out: string[] = [];
    for (let x = q.take(now); x !== undefined; x = q.take(now)) out.push(x);
    return out;
  };
  const done = (f: Flow<string>) => q.done(f, () => now);
  return { q, flows, clock, compete, takeAll, done };
}

describe('FairQueue', () => {
  test('what waits is taken round-robin by flow, in order within each flow', () => {
    const { q, flows, clock, takeAll } = setup(100, 100, ['a', 'b', 'c']);
    for (const x of ['a1', 'a2', 'a3', 'a4', 'a5']) assert.equal(q.push(flows.a!, x, clock.now), undefined);
    for (const x of ['b1', 'b2']) q.push(flows.b!, x, clock.now);
    q.push(flows.c!, 'c1', clock.now);
    assert.equal(q.size, 8);
    assert.deepEqual(takeAll(), ['a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'a4', 'a5']);
    assert.equal(q.size, 0);
    assert.equal(flows.a!.running, 5);
  });

  test('while flows compete, none runs more than its share; done() lets its next one go', () => {
    const { q, flows, clock, compete, takeAll, done } = setup(2, 100, ['a', 'b']);
    const a = flows.a!;
    compete();
    assert.equal(q.share(clock.now), 2);
    assert.equal(q.mayRun(a, clock.now), true);
    q.started(a);
    q.started(a);
    assert.equal(q.mayRun(a, clock.now), false, 'at its share');
    for (const x of ['a1', 'a2', 'a3']) q.push(a, x, clock.now);
    q.push(flows.b!, 'b1', clock.now);
    assert.deepEqual(takeAll(), ['b1'], 'a is at its share: only b runs');
    assert.equal(done(a), true, 'a has something waiting that may run now');
    assert.deepEqual(takeAll(), ['a1']);
    assert.equal(done(a), true);
    assert.equal(done(a), true);
    assert.deepEqual(takeAll(), ['a2', 'a3']);
    assert.equal(done(flows.b!), false, 'nothing of b waits');
    assert.equal(a.running, 2);
    assert.equal(q.mayRun(flows.b!, clock.now), true);
  });

  test('a flow alone may use every connection; the share applies from another flow\'s request on, for the window', () => {
    const { q, flows, clock, takeAll, done } = setup(2, 100, ['a', 'b']);
    const a = flows.a!;
    q.arrived(a, clock.now);
    for (let i = 0; i < 10; i++) {
      assert.equal(q.mayRun(a, clock.now), true, `alone: request ${i + 1} runs`);
      q.started(a);
    }
    assert.equal(q.share(clock.now), Infinity);
    clock.advance(10);
    q.arrived(flows.b!, clock.now);
    assert.equal(q.mayRun(a, clock.now), false, 'b asked: a is over its share');
    assert.equal(q.mayRun(flows.b!, clock.now), true);
    q.push(a, 'a1', clock.now);
    assert.deepEqual(takeAll(), [], 'a waits until it is under its share');
    for (let i = 0; i < 8; i++) assert.equal(done(a), false);
    assert.equal(done(a), true, 'a at 1 of its 2');
    assert.deepEqual(takeAll(), ['a1']);
    // a's next request follows b's: the window runs from that change of source, then a is alone again.
    q.arrived(a, clock.now);
    clock.advance(999);
    q.arrived(a, clock.now);
    assert.equal(q.mayRun(a, clock.now), false, 'the sources changed 999 ms ago');
    clock.advance(1);
    assert.equal(q.mayRun(a, clock.now), true, 'a second of a alone');
    assert.equal(q.share(clock.now), Infinity);
    // The same source again after it closed every connection (a new Flow object, the same key): still alone.
    q.arrived(new Flow<string>('a'), clock.now);
    assert.equal(q.share(clock.now), Infinity);
  });

  test('a flow with something waiting does not overtake it (mayRun is false while it has a backlog)', () => {
    const { q, flows, clock } = setup(4, 100, ['a']);
    q.push(flows.a!, 'a1', clock.now);
    assert.equal(q.mayRun(flows.a!, clock.now), false);
    assert.equal(q.take(clock.now), 'a1');
    assert.equal(q.mayRun(flows.a!, clock.now), true);
  });

  test('a full queue refuses the newest request of the longest backlog, never a shorter one', () => {
    const { q, flows, clock, compete, takeAll, done } = setup(1, 4, ['a', 'b', 'c']);
    compete();
    const push = (f: string, x: string) => q.push(flows[f]!, x, clock.now);
    for (const x of ['a1', 'a2', 'a3', 'a4']) assert.equal(push('a', x), undefined);
    assert.equal(push('b', 'b1'), 'a4', 'a has the longest backlog: its newest goes');
    assert.equal(push('a', 'a5'), 'a5', 'a is still the longest: its own newcomer is refused');
    assert.equal(push('b', 'b2'), 'a3');
    assert.equal(push('c', 'c1'), 'a2', 'a and b have 2 each: the first found of the longest gives way');
    assert.equal(push('c', 'c2'), 'b2');
    // a1, b1, c1, c2 wait now: c has the longest backlog, its newcomer is refused.
    assert.equal(push('c', 'c3'), 'c3');
    assert.equal(q.size, 4);
    assert.deepEqual(takeAll(), ['a1', 'b1', 'c1']);
    done(flows.c!);
    assert.deepEqual(takeAll(), ['c2']);
  });

  test('upstream_queue = 0: everything that would wait is refused', () => {
    const { q, flows, clock } = setup(1, 0, ['a']);
    assert.equal(q.push(flows.a!, 'a1', clock.now), 'a1');
    assert.equal(q.size, 0);
  });

  test('a waiting item that ends leaves the queue; an emptied flow is skipped', () => {
    const { q, flows, clock, takeAll } = setup(10, 10, ['a', 'b']);
    for (const x of ['a1', 'a2', 'a3']) q.push(flows.a!, x, clock.now);
    q.push(flows.b!, 'b1', clock.now);
    q.remove(flows.a!, 'a2');
    q.remove(flows.b!, 'b1');
    q.remove(flows.b!, 'b1');
    assert.equal(q.size, 2);
    assert.equal(flows.b!.queued, 0);
    assert.deepEqual(takeAll(), ['a1', 'a3']);
  });

  test('a retry waits first of its flow, even in a full queue', () => {
    const { q, flows, clock, compete, takeAll, done } = setup(1, 2, ['a', 'b']);
    compete();
    q.push(flows.a!, 'a2', clock.now);
    q.push(flows.a!, 'a3', clock.now);
    assert.equal(q.push(flows.a!, 'a1', clock.now, true), undefined);
    assert.equal(q.size, 3);
    assert.deepEqual(takeAll(), ['a1']);
    done(flows.a!);
    assert.deepEqual(takeAll(), ['a2']);
  });

  test('long runs keep counts exact (the flow arrays are compacted, not grown)', () => {
    const { q, flows, clock, compete, done } = setup(3, 1000, ['a', 'b']);
    compete();
    let taken = 0;
    for (let i = 0; i < 20_000; i++) {
      q.push(flows.a!, `a${i}`, clock.now);
      if (i % 3 === 0) q.push(flows.b!, `b${i}`, clock.now);
      if (i % 7 === 0) q.remove(flows.a!, `a${i}`);
      for (let x = q.take(clock.now); x !== undefined; x = q.take(clock.now)) {
        taken++;
        done(x[0] === 'a' ? flows.a! : flows.b!);
      }
    }
    assert.equal(q.size, 0);
    assert.equal(flows.a!.running + flows.b!.running, 0);
    assert.equal(taken, 20_000 - Math.ceil(20_000 / 7) + Math.ceil(20_000 / 3));
  });

  test('upstream_connections_per_source: a sixteenth of upstream_connections, at least 2, at most all', () => {
    assert.equal(upstreamPerSource({ upstreamConnections: 64 }), 4);
    assert.equal(upstreamPerSource({ upstreamConnections: 4 }), 2);
    assert.equal(upstreamPerSource({ upstreamConnections: 1 }), 1);
    assert.equal(upstreamPerSource({ upstreamConnections: 1024 }), 64);
    assert.equal(upstreamPerSource({ upstreamConnections: 64, upstreamConnectionsPerSource: 10 }), 10);
    assert.equal(upstreamPerSource({ upstreamConnections: 8, upstreamConnectionsPerSource: 10 }), 8);
  });
});

for (const mode of PROXY_MODES) {
  describe(`fair agent connections through the proxy (${mode})`, () => {
    test('a source with a backlog neither keeps another source waiting behind it nor holds more than its share once others ask', async () => {
      const dir = tempDir();
      const sock = join(dir.path, `agent-${mode}.sock`);
      // The agent answers only when told: the order requests reach it is what the proxy scheduled.
      const held: { who: string; res: ServerResponse }[] = [];
      const agent = await captureServer(sock, (c, res) => held.push({ who: String(c.headers['x-forwarded-for']), res }));
      const port = await getFreePort();
      const proxy = await startProxyIn(mode, [`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--upstream_connections=3', '--upstream_connections_per_source=2'], port);
      const guests: Socket[] = [];
      const ask = (from: string) =>
        new Promise<void>((resolve, reject) => {
          const s = connect({ host: '127.0.0.1', port, localAddress: from }, () => {
            s.write('GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n');
            resolve();
          });
          s.on('error', reject);
          guests.push(s);
        });
      try {
        // Source .2 floods, 6 requests on a connection each: alone, it may use every agent connection.
        for (let i = 0; i < 6; i++) await ask('127.0.0.2');
        await waitFor(() => held.length === 3, 5000, 20, 'the flooder on every connection');
        assert.deepEqual(held.map((h) => h.who), ['127.0.0.2', '127.0.0.2', '127.0.0.2']);
        // .3 and .4 ask too: from now on each source holds at most 2, and what waits goes round-robin.
        await ask('127.0.0.3');
        await ask('127.0.0.4');
        await new Promise((r) => setTimeout(r, 100));
        // Answer the oldest, four times: who gets each freed connection.
        const order: string[] = [];
        for (let i = 0; i < 4; i++) {
          held.shift()!.res.end('i-1');
          await waitFor(() => held.length === 3, 5000, 10, `a request taking connection ${i + 1}`);
          order.push(held[2]!.who);
        }
        // .3 first (.2 holds 2 already), then .4, then .2 once under its share again; first come first served
        // would have given the first three to .2's backlog.
        assert.deepEqual(order, ['127.0.0.3', '127.0.0.4', '127.0.0.2', '127.0.0.2']);
        // .4's answer frees a connection: .2 has 2 and 1 more waiting, and stays at its share.
        held.shift()!.res.end('i-1');
        await new Promise((r) => setTimeout(r, 100));
        assert.deepEqual(held.map((h) => h.who), ['127.0.0.2', '127.0.0.2'], 'the flooder at its share with a connection free');
      } finally {
        for (const s of guests) s.destroy();
        await proxy.stop();
        await agent.close();
        dir.rm();
      }
    });
  });
}
