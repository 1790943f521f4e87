// [metadata_rate_limiting]: the sliding-window logic of src/ns-proxy/rate-limit.ts as haproxy's freq_ctr
// computes it, the flags the agents pass, and the limit through a real proxy process (both modes), for
// IPv4 and IPv6 sources at once.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import { rateLimitArgs, rateLimitIpVersions, type MetadataRateLimitingConf } from '../src/common/metadata-rate-limiting.js';
import { proxyArgv } from '../src/linux/agent-common.js';
import { RateLimiter, TABLE_SIZE, TOO_MANY_BODY } from '../src/ns-proxy/rate-limit.js';
import { captureServer, getFreePort, startProxy, statusSlowOrEcho, tempDir } from './helpers/mdpath.js';
import { PROXY_MODES, startProxyIn } from './helpers/proxy-modes.js';

const ROUTER = 'a1b2c3d4-0000-4000-8000-00000000abcd';
const ROUTER6 = 'a1b2c3d4-0000-4000-8000-00000000abce';
const cfg = { ipVersions: [4, 6] as (4 | 6)[], baseWindowMs: 10_000, baseLimit: 10, burstWindowMs: 10_000, burstLimit: 10 };

describe('RateLimiter: haproxy http_req_rate over a sliding window', () => {
  test('Neutron defaults: 10 requests in a window pass, the 11th is refused (gt 10), refused ones count too', () => {
    const rl = new RateLimiter(cfg);
    const t = 1_000_000;
    const got = Array.from({ length: 12 }, (_, i) => rl.hit('10.0.0.5', t + i));
    assert.deepEqual(got, [...Array(10).fill(false), true, true]);
    assert.equal(rl.refused, 2);
    // Another source is independent.
    assert.equal(rl.hit('10.0.0.6', t + 20), false);
  });

  test('the previous period weighs by the part of the window it still covers', () => {
    const rl = new RateLimiter(cfg);
    const t = 0;
    for (let i = 0; i < 10; i++) assert.equal(rl.hit('a', t + i), false);
    // Half a window after the period ended: 10 * 0.5 = 5 carried over; 5 more pass, the 6th is refused.
    const mid = t + 15_000;
    const r = Array.from({ length: 6 }, () => rl.hit('a', mid));
    assert.deepEqual(r, [false, false, false, false, false, true]);
    // Two windows later nothing is carried over.
    assert.equal(rl.hit('a', t + 40_000), false);
  });

  test('a burst window shorter than the base window limits its own rate', () => {
    const rl = new RateLimiter({ ...cfg, baseWindowMs: 60_000, baseLimit: 100, burstWindowMs: 1000, burstLimit: 3 });
    assert.deepEqual([0, 1, 2, 3].map((i) => rl.hit('b', 5000 + i)), [false, false, false, true]);
    // 2 s later the burst window is empty again; the base window still counts all five.
    assert.equal(rl.hit('b', 7100), false);
  });

  test('ip_versions: only the listed families are limited; both at once allowed', () => {
    const v4 = new RateLimiter({ ...cfg, ipVersions: [4], baseLimit: 0, burstLimit: 0 });
    assert.equal(v4.hit('10.0.0.1', 1), true);
    assert.equal(v4.hit('fe80::1', 1), false);
    const both = new RateLimiter({ ...cfg, baseLimit: 0, burstLimit: 0 });
    assert.equal(both.hit('10.0.0.1', 1), true);
    assert.equal(both.hit('fe80::1', 1), true);
    assert.deepEqual(rateLimitIpVersions({ ip_versions: ['4', '6', '6'] } as MetadataRateLimitingConf), { versions: [4, 6] });
    assert.ok('error' in rateLimitIpVersions({ ip_versions: ['5'] } as MetadataRateLimitingConf));
  });

  test('the table is bounded (haproxy size 10k) and entries expire', () => {
    const rl = new RateLimiter(cfg);
    for (let i = 0; i < TABLE_SIZE + 50; i++) rl.hit(`s${i}`, 1);
    assert.equal(rl.size, TABLE_SIZE);
    rl.expire(1 + 20_000);
    assert.equal(rl.size, 0);
  });

  test('the agents pass the group as flags only when enabled', () => {
    const c: MetadataRateLimitingConf = { rate_limit_enabled: false, ip_versions: ['4'], base_window_duration: 10, base_query_rate_limit: 10, burst_window_duration: 10, burst_query_rate_limit: 10 };
    assert.deepEqual(rateLimitArgs(c), []);
    const on = rateLimitArgs({ ...c, rate_limit_enabled: true, ip_versions: ['4', '6'], base_query_rate_limit: 60 });
    assert.deepEqual(on, [
      '--metadata_rate_limiting-rate_limit_enabled=True',
      '--metadata_rate_limiting-ip_versions=4,6',
      '--metadata_rate_limiting-base_window_duration=10',
      '--metadata_rate_limiting-base_query_rate_limit=60',
      '--metadata_rate_limiting-burst_window_duration=10',
      '--metadata_rate_limiting-burst_query_rate_limit=10',
    ]);
    const argv = proxyArgv({ prefix: ['p'], pidFile: '/x.pid', routerId: ROUTER, statePath: '/s', port: 9697, log: { debug: false, verbose: false }, extra: on });
    assert.deepEqual(argv.slice(-6), on);
  });
});

/** One GET on a fresh connection from `local` (127.0.0.1 or ::1) to the proxy on [::]:port. */
function get(port: number, local: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: local, port, localAddress: local });
    let buf = '';
    s.on('data', (d: Buffer) => (buf += d.toString('latin1')));
    s.on('error', (e) => reject(Object.assign(e, { message: `${e.message} (${local})` })));
    s.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(buf);
      resolve({ status: m ? Number(m[1]) : 0, body: buf.slice(buf.indexOf('\r\n\r\n') + 4) });
    });
    s.end('GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n');
  });
}

for (const mode of PROXY_MODES) {
  describe(`rate limiting through the proxy (${mode})`, () => {
    const dir = tempDir();
    after(() => dir.rm());

    test('IPv4 and IPv6 sources each get 429 beyond the limit, as haproxy words it; the agent never sees them', async () => {
      const sock = join(dir.path, `agent-${mode}.sock`);
      const agent = await captureServer(sock, (c, res) => statusSlowOrEcho(c, res, 'agent', {}));
      const flags = [`--router_id=${ROUTER}`, `--metadata_proxy_socket=${sock}`, '--metadata_rate_limiting-rate_limit_enabled', '--metadata_rate_limiting-ip_versions=4,6', '--metadata_rate_limiting-base_query_rate_limit=5', '--metadata_rate_limiting-burst_query_rate_limit=5'];
      // One listener per family (in shared mode two listeners of one process, each with its own table).
      const port = await getFreePort();
      const port6 = await getFreePort('::1');
      const proxy = await startProxyIn(mode, flags, port);
      // Another router: in shared mode a listener is keyed by its router.
      const flags6 = flags.map((f) => (f.startsWith('--router_id=') ? `--router_id=${ROUTER6}` : f));
      const proxy6 = await (mode === 'per-namespace' ? startProxy(flags6, port6, '::1') : startProxyIn(mode, [...flags6, '--bind_address=::1'], port6)).catch(async (e: unknown) => {
        await proxy.stop();
        throw e;
      });
      try {
        for (const src of ['127.0.0.1', '::1']) {
          const at = src === '::1' ? port6 : port;
          const st: number[] = [];
          let body = '';
          for (let i = 0; i < 7; i++) {
            const r = await get(at, src);
            st.push(r.status);
            if (r.status === 429) body = r.body;
          }
          assert.deepEqual(st, [200, 200, 200, 200, 200, 429, 429], `${src}: ${proxy.output()}`);
          assert.equal(body, TOO_MANY_BODY.toString());
        }
        assert.equal(agent.requests.length, 10, 'refused requests never reach the agent');
      } finally {
        await proxy6.stop();
        await proxy.stop();
        await agent.close();
      }
    });
  });
}
