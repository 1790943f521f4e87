// The shared metadata proxy with real namespaces: one process, a listener per namespace (all on the same
// port), ids per listener, removal, kill -9 under load, and an agent restart that adopts the running proxy.
// Needs root. Everything is named with the fixture's per-run prefix and removed in after().
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { silentLogger } from '../src/common/log.js';
import { parseSharedState } from '../src/common/shared-proxy.js';
import { pidAlive } from '../src/linux/external-process.js';
import { loadNetnsSocket, netnsPath } from '../src/linux/netns-socket.js';
import { nativeAddonPath } from '../src/linux/native-addon.js';
import { SharedMetadataProxy, SharedProxyError } from '../src/linux/shared-proxy.js';
import { guestLoop } from './helpers/guest-loop.js';
import { captureServer, statusSlowOrEcho, waitFor, type Captured, type UnixServer } from './helpers/mdpath.js';
import { NetFixture, sh, uuid } from './helpers/netns.js';
import { sleep } from './helpers/proc.js';

const run = promisify(execFile);
const PORT = 9697;
const netns = loadNetnsSocket(nativeAddonPath);

/** One request from inside a namespace to its own listener (asynchronously: the fake agent runs in this process). */
async function nsGet(ns: string, path: string, headers: string[] = []): Promise<{ status: number; body: string }> {
  const { stdout } = await run('ip', ['netns', 'exec', ns, 'curl', '-s', '-m', '5', ...headers.flatMap((h) => ['-H', h]), '-w', '\n%{http_code}', `http://127.0.0.1:${PORT}${path}`]).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '\n0' }));
  const i = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) };
}

const idOf = (body: string) => (JSON.parse(body) as Captured).headers['x-neutron-router-id'] ?? (JSON.parse(body) as Captured).headers['x-neutron-network-id'];

/** Is the port free again in that namespace (a fresh bind succeeds)? */
function portFree(ns: string, port = PORT): boolean {
  try {
    netns.closeFd(netns.listenInNamespace(netnsPath(ns), '0.0.0.0', port, 1));
    return true;
  } catch {
    return false;
  }
}

describe('SharedMetadataProxy with real namespaces', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  const fx = new NetFixture();
  let state: string;
  let agent: UnixServer;
  const managers: SharedMetadataProxy[] = [];
  const manager = (o: Partial<ConstructorParameters<typeof SharedMetadataProxy>[0]> = {}) => {
    const m = new SharedMetadataProxy({ name: `${fx.prefix}-l3`, conf: { state_path: state, debug: false, verbose: false }, log: silentLogger, pruneIntervalSec: 0, ...o });
    managers.push(m);
    return m;
  };
  const ns: string[] = [];

  before(async () => {
    state = fx.statePath();
    agent = await captureServer(join(state, 'metadata_proxy'), (c, res) => statusSlowOrEcho(c, res, 'body', {}));
    for (let i = 0; i < 3; i++) ns.push(fx.namespace(`${fx.prefix}-r${i}`));
  });
  after(async () => {
    for (const m of managers) await m.destroy().catch(() => undefined);
    await agent?.close();
    fx.cleanup();
  });

  test('two namespaces, one process, the same port: each listener sends its own id, whatever the guest says', async () => {
    const m = manager();
    await m.start();
    const [a, b] = [uuid(), uuid()];
    try {
      await m.add({ kind: 'router', id: a, namespace: ns[0]!, host: '0.0.0.0', port: PORT });
      await m.add({ kind: 'network', id: b, namespace: ns[1]!, host: '0.0.0.0', port: PORT });
      // Idempotent: the same listener again changes nothing.
      await m.add({ kind: 'router', id: a, namespace: ns[0]!, host: '0.0.0.0', port: PORT });
      assert.equal(m.size, 2);
      assert.ok(m.has('router', a) && m.has('network', b));
      const ra = await nsGet(ns[0]!, '/latest/meta-data/instance-id', [`X-Neutron-Router-ID: ${b}`, 'X-Neutron-Network-ID: evil']);
      const rb = await nsGet(ns[1]!, '/openstack', [`X-Neutron-Router-ID: ${a}`]);
      assert.equal(ra.status, 200);
      assert.equal(rb.status, 200);
      const ca = JSON.parse(ra.body) as Captured;
      const cb = JSON.parse(rb.body) as Captured;
      assert.equal(ca.headers['x-neutron-router-id'], a);
      assert.equal(ca.headers['x-quantum-router-id'], a);
      assert.equal(ca.headers['x-neutron-network-id'], undefined);
      assert.equal(cb.headers['x-neutron-network-id'], b);
      assert.equal(cb.headers['x-quantum-network-id'], b);
      assert.equal(cb.headers['x-neutron-router-id'], undefined);
      assert.equal(ca.headers['x-forwarded-for'], '127.0.0.1');
      // One process serves both; it says so, and so does its state file.
      const st = await m.status();
      assert.deepEqual(st.listeners.map((l) => `${l.kind}:${l.id}@${l.namespace}`).sort(), [`network:${b}@${ns[1]}`, `router:${a}@${ns[0]}`].sort());
      const file = parseSharedState(readFileSync(m.stateFile, 'utf8'));
      assert.equal(file?.pid, m.pid);
      assert.equal(file?.listeners.length, 2);
      assert.equal(Number(readFileSync(m.pidFile, 'utf8')), m.pid);
      const args = readFileSync(`/proc/${m.pid}/cmdline`, 'utf8').split('\0');
      assert.ok(args.includes('--shared') && args.includes('--max-semi-space-size=1') && args.includes('--single-threaded'), args.join(' '));
    } finally {
      await m.destroy();
    }
  });

  test('50 namespaces in one process, all served; removing them frees every port', async () => {
    const many = Array.from({ length: 50 }, (_, i) => `${fx.prefix}-m${i}`);
    for (const n of many) fx.trackNamespace(n);
    sh(['ip', '-batch', '-'], many.map((n) => `netns add ${n}`).join('\n') + '\n');
    for (const n of many) sh(['ip', '-n', n, 'link', 'set', 'lo', 'up']);
    const m = manager();
    await m.start();
    try {
      const ids = many.map(() => uuid());
      await Promise.all(many.map((n, i) => m.add({ kind: 'router', id: ids[i]!, namespace: n, host: '0.0.0.0', port: PORT })));
      assert.equal(m.size, 50);
      for (let i = 0; i < many.length; i += 10) {
        const got = await Promise.all(many.slice(i, i + 10).map((n) => nsGet(n, '/latest')));
        got.forEach((r, k) => {
          assert.equal(r.status, 200, `namespace ${many[i + k]}`);
          assert.equal(idOf(r.body), ids[i + k]);
        });
      }
      assert.equal((await m.status()).listeners.length, 50);
      await Promise.all(many.map((_, i) => m.remove('router', ids[i]!)));
      assert.equal(m.size, 0);
      assert.equal((await m.status()).listeners.length, 0);
      for (const n of many) assert.ok(portFree(n), `port free in ${n}`);
    } finally {
      await m.destroy();
      sh(['ip', '-force', '-batch', '-'], many.map((n) => `netns delete ${n}`).join('\n') + '\n');
    }
  });

  test('remove: the port is free at once, a request in flight still gets its answer', async () => {
    const m = manager();
    await m.start();
    const id = uuid();
    try {
      await m.add({ kind: 'router', id, namespace: ns[0]!, host: '0.0.0.0', port: PORT });
      assert.equal(portFree(ns[0]!), false, 'served: the port is taken');
      const slow = nsGet(ns[0]!, '/slow/600');
      await sleep(200);
      await m.remove('router', id);
      assert.equal(m.has('router', id), false);
      assert.ok(portFree(ns[0]!), 'the port is free after remove');
      const r = await slow;
      assert.equal(r.status, 200, 'the in-flight request finished');
      assert.equal((await nsGet(ns[0]!, '/x')).status, 0, 'nothing listens any more');
    } finally {
      await m.destroy();
    }
  });

  test('a namespace that does not exist is an error; one deleted under its listener is pruned', async () => {
    const m = manager();
    await m.start();
    try {
      await assert.rejects(m.add({ kind: 'router', id: uuid(), namespace: `${fx.prefix}-nope`, host: '0.0.0.0', port: PORT }), (e: unknown) => e instanceof SharedProxyError && e.status === 'no-namespace' && e.code === 'ENOENT');
      await assert.rejects(m.add({ kind: 'network', id: uuid(), namespace: ns[2]!, host: '169.254.169.254', port: 80 }), (e: unknown) => e instanceof SharedProxyError && e.status === 'bind-failed' && e.code === 'EADDRNOTAVAIL');
      // The DHCP agent's address may come a moment later: IP_FREEBIND binds it anyway.
      const net = uuid();
      await m.add({ kind: 'network', id: net, namespace: ns[2]!, host: '169.254.169.254', port: 80, freebind: true });
      const gone = fx.namespace(`${fx.prefix}-gone`);
      const id = uuid();
      await m.add({ kind: 'router', id, namespace: gone, host: '0.0.0.0', port: PORT });
      assert.deepEqual(await m.prune(), [], 'nothing to prune yet');
      sh(['ip', 'netns', 'delete', gone]);
      assert.deepEqual(await m.prune(), [`router:${id}`]);
      assert.equal(m.has('router', id), false);
      assert.deepEqual((await m.status()).listeners.map((l) => l.id), [net]);
    } finally {
      await m.destroy();
    }
  });

  test('kill -9 under a guest loop (a connection per request): respawned at once, no connection refused, only in-flight requests fail', async () => {
    const m = manager();
    await m.start();
    const id = uuid();
    try {
      await m.add({ kind: 'router', id, namespace: ns[0]!, host: '0.0.0.0', port: PORT });
      const loop = guestLoop(ns[0]!, `http://127.0.0.1:${PORT}/latest/meta-data/instance-id`, 3000, (pid) => fx.trackPid(pid));
      await sleep(1000);
      const old = m.pid!;
      process.kill(old, 'SIGKILL');
      const r = await loop;
      await waitFor(() => m.alive, 5000, 20, 'the respawned proxy');
      assert.notEqual(m.pid, old);
      assert.equal(m.respawns, 1);
      assert.equal(r.refused, 0, `no connection refused: ${JSON.stringify(r)}`);
      assert.ok(r.failed <= 2, `only in-flight requests may fail: ${JSON.stringify(r)}`);
      assert.ok(r.ok > 100, JSON.stringify(r));
      assert.ok(r.maxGapMs < 2000, `longest gap ${r.maxGapMs} ms`);
      assert.deepEqual(r.ids, [id]);
      process.stdout.write(`# kill -9: ${r.ok} answers, ${r.failed} failed (${JSON.stringify(r.errors)}), ${r.refused} refused, longest gap ${r.maxGapMs} ms\n`);
    } finally {
      await m.destroy();
    }
  });

  test('runs as metadata_proxy_user after start, still rewrites its state file, and is still adopted', async () => {
    chmodSync(join(state, 'metadata_proxy'), 0o666);
    const conf = { state_path: state, debug: false, verbose: false, metadata_proxy_user: '65534', metadata_proxy_group: '65534' };
    const m1 = manager({ conf });
    await m1.start();
    const id = uuid();
    let m2: SharedMetadataProxy | undefined;
    try {
      const status = readFileSync(`/proc/${m1.pid}/status`, 'utf8');
      assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534/m);
      // Added after the drop: the state file is still rewritten.
      await m1.add({ kind: 'router', id, namespace: ns[0]!, host: '0.0.0.0', port: PORT });
      assert.equal(parseSharedState(readFileSync(m1.stateFile, 'utf8'))?.listeners[0]?.id, id);
      assert.equal(idOf((await nsGet(ns[0]!, '/x')).body), id);
      const old = m1.pid!;
      await m1.stop();
      m2 = manager({ conf });
      await m2.start();
      assert.ok(m2.has('router', id));
      await waitFor(() => !pidAlive(old), 10_000, 50, 'the old proxy to exit');
      assert.equal(idOf((await nsGet(ns[0]!, '/y')).body), id);
    } finally {
      await m2?.destroy();
      await m1.destroy();
    }
  });

  for (const adopt of ['pidfd', 'rebind'] as const) {
    test(`agent restart (${adopt}): a new manager adopts the running proxy${adopt === 'pidfd' ? ', serving never stops' : ' after stopping it'}; destroy leaves nothing behind`, async () => {
      const m1 = manager();
      await m1.start();
      const [a, b] = [uuid(), uuid()];
      await m1.add({ kind: 'router', id: a, namespace: ns[0]!, host: '0.0.0.0', port: PORT });
      await m1.add({ kind: 'router', id: b, namespace: ns[1]!, host: '0.0.0.0', port: PORT });
      const old = m1.pid!;
      const loop = guestLoop(ns[0]!, `http://127.0.0.1:${PORT}/latest/meta-data/instance-id`, 2500, (pid) => fx.trackPid(pid));
      await sleep(700);
      await m1.stop();
      assert.ok(pidAlive(old), 'the proxy outlives its agent');
      assert.equal((await nsGet(ns[1]!, '/alone')).status, 200, 'served while no agent runs');
      const m2 = manager({ adopt });
      try {
        await m2.start();
        assert.ok(m2.has('router', a) && m2.has('router', b), 'the listeners were adopted');
        assert.notEqual(m2.pid, old);
        await m2.add({ kind: 'router', id: a, namespace: ns[0]!, host: '0.0.0.0', port: PORT });
        assert.equal(m2.size, 2);
        await waitFor(() => !pidAlive(old), 10_000, 50, 'the old proxy to exit');
        const r = await loop;
        assert.deepEqual(r.ids, [a]);
        if (adopt === 'pidfd') assert.equal(r.failed, 0, `serving never stopped: ${JSON.stringify(r)}`);
        process.stdout.write(`# agent restart (${adopt}): ${r.ok} answers, ${r.failed} failed (${JSON.stringify(r.errors)}), longest gap ${r.maxGapMs} ms\n`);
        assert.equal(idOf((await nsGet(ns[1]!, '/after')).body), b);
        const pid = m2.pid!;
        await m2.destroy();
        assert.equal(pidAlive(pid), false, 'no process');
        assert.equal(existsSync(m2.pidFile), false, 'no pid file');
        assert.equal(existsSync(m2.stateFile), false, 'no state file');
        assert.ok(portFree(ns[0]!) && portFree(ns[1]!), 'ports free');
      } finally {
        await m2.destroy();
        if (pidAlive(old)) process.kill(old, 'SIGKILL');
      }
    });
  }
});
