// Metadata over IPv6, every piece a real daemon (quantum-server, nova-api, quantum-metadata-agent, the L3 and
// DHCP agents), once per metadata_proxy_mode: guests in their own namespaces ask
// http://[fe80::a9fe:a9fe%eth0]/ as cloud-init does — behind a router (ip6tables REDIRECT to [::]:9697, the
// qr- device answering for fe80::a9fe:a9fe) and on an isolated IPv6-only network (the qdhcp tap holding
// fe80::a9fe:a9fe/64, the proxy on [fe80::a9fe:a9fe%tap]:80). Two tenants' guests with the very same global
// and link-local address (same MAC) each get their own instance; spoofed global addresses and MACs of another
// tenant's guest get nothing; a dual-stack guest is the same instance over 169.254.169.254 and fe80::a9fe:a9fe.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { QuantumClient, type Network, type Port } from '../src/common/quantum-client.js';
import { execute, executeFull } from '../src/linux/exec.js';
import { bridgeName, dhcpNamespace, routerNamespace, tapDeviceName } from '../src/linux/names.js';
import { NetFixture, nsExec, type Guest } from './helpers/netns.js';
import { startNodeStack, type NodeStack } from './helpers/node-stack.js';
import { waitFor } from './helpers/proc.js';

const IMAGE = '9f1a0c52-6b6e-4d0e-9a55-2f4c3b1d7e10';
const MODES = ['per-namespace', 'shared'] as const;

/** The guest's side of a request: curl in its namespace; '' with the HTTP status when it is not 200. */
async function curl(g: Guest, url: string, extra: string[] = []): Promise<{ status: number; body: string }> {
  const r = await executeFull(['curl', '-g', '-s', '--connect-timeout', '1', '-m', '10', '-w', '\n%{http_code}', ...extra, url], { netns: g.ns, checkExit: false, timeoutMs: 15_000 });
  const out = r.stdout;
  const i = out.lastIndexOf('\n');
  return { status: Number(out.slice(i + 1)) || 0, body: out.slice(0, i) };
}

const V6_META = 'http://[fe80::a9fe:a9fe%25eth0]/openstack/latest/meta_data.json';
const V4_META = 'http://169.254.169.254/openstack/latest/meta_data.json';

/** The first answer with status 200 (the router or its proxy may still be being built). */
async function uuidOf(g: Guest, url: string, extra: string[] = []): Promise<string> {
  let last: { status: number; body: string } | undefined;
  const body = await waitFor(async () => {
    last = await curl(g, url, extra).catch(() => undefined);
    return last && last.status === 200 ? last.body : undefined;
  }, 40_000, 200, `metadata from ${g.ns} at ${url}`).catch(async (e: Error) => {
    // What the guest saw last, and its neighbours and routes: enough to tell a missing proxy from a wrong ARP entry.
    const seen = await execute(['sh', '-c', 'ip neigh; ip route; ip -6 route'], { netns: g.ns }).catch((x: unknown) => String(x));
    throw new Error(`${e.message}; last answer ${last ? `${last.status} ${last.body.slice(0, 200)}` : 'none'}; guest: ${seen}`);
  });
  return (JSON.parse(body) as { uuid: string }).uuid;
}

/** The guest's link-local address once DAD is over (a tentative address is no source). */
async function linkLocalReady(g: Guest): Promise<string> {
  try {
    const ll = await waitFor(async () => {
      const arr = JSON.parse(await execute(['ip', '-j', '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'], { netns: g.ns })) as { addr_info?: { local: string; tentative?: boolean }[] }[];
      const a = arr.flatMap((l) => l.addr_info ?? []).find((x) => x.local && !x.tentative);
      return a?.local;
    }, 30_000, 100, `link-local address of ${g.ns}`);
    return ll;
  } catch (e) {
    const dbg = await execute(['sh', '-c', 'ip -6 addr show dev eth0; sysctl -a 2>/dev/null | grep "conf.eth0\\.\\|conf.all\\.\\|conf.default\\." | grep -v "_mc\\|router_sol\\|rtr_"'], { netns: g.ns }).catch((x: unknown) => String(x));
    throw new Error(`${(e as Error).message}: ${dbg}`);
  }
}

/** The modified EUI-64 link-local address a MAC gives (U/L bit flipped, ff:fe in the middle). */
function eui64(mac: string): string {
  const b = mac.split(':').map((x) => Number.parseInt(x, 16));
  b[0]! ^= 0x02;
  const w = [(b[0]! << 8) | b[1]!, (b[2]! << 8) | 0xff, (0xfe << 8) | b[3]!, (b[4]! << 8) | b[5]!];
  return `fe80::${w.map((x) => x.toString(16)).join(':')}`;
}

for (const mode of MODES) {
  describe(`IPv6 metadata, metadata_proxy_mode = ${mode}`, () => {
    const fx = new NetFixture();
    let stack: NodeStack;
    let q: QuantumClient;
    const nova = <T>(method: string, path: string, project: string, body?: unknown): Promise<T> => stack.nova<T>(method, path, project, body);

    before(async () => {
      stack = await startNodeStack(fx, { host: `${fx.prefix}-v6`, mode });
      q = stack.q;
    });

    after(async () => {
      await stack?.stop();
      fx.cleanup();
    });

    async function network(project: string, name: string): Promise<Network> {
      const net = await q.createNetwork({ name: `${fx.prefix}-${name}` }, project);
      fx.trackBridge(bridgeName(net.id));
      fx.trackNamespace(dhcpNamespace(net.id));
      return net;
    }

    /** A port with these addresses (and MAC, when given), then a server booted on it. */
    async function boot(project: string, name: string, net: Network, fixed: Array<{ subnet_id: string; ip_address: string }>, mac?: string): Promise<{ id: string; port: Port }> {
      const port = await q.createPort({ network_id: net.id, fixed_ips: fixed, ...(mac ? { mac_address: mac } : {}) }, project);
      const created = await nova<{ server: { id: string } }>('POST', '/servers', project, { server: { name, flavorRef: '1', imageRef: IMAGE, networks: [{ port: port.id }] } });
      return { id: created.server.id, port };
    }

    /** A guest namespace on the network's bridge; IPv6 addresses without DAD so they are usable at once. */
    function guest(net: Network, mac: string, v6: string[] = [], v4?: { cidr: string; gw: string }): Guest {
      const g = fx.guest({ bridge: bridgeName(net.id), mac, ...(v4 ? { cidr: v4.cidr, gateway: v4.gw } : {}) });
      for (const c of v6) nsExec(g.ns, ['ip', 'addr', 'add', c, 'dev', 'eth0', 'nodad']);
      return g;
    }

    const SAME_MAC = 'fa:16:3e:6a:00:05';

    describe('behind routers: two tenants with the same global and link-local address', () => {
      const t: Record<string, { net: Network; v4: string; v6: string; router: string; guest?: Guest; id?: string }> = {};
      let other: { id: string; port: Port } | undefined;

      before(async () => {
        for (const tenant of ['tenant-a', 'tenant-b']) {
          const net = await network(tenant, `net-${tenant}`);
          const s4 = await q.createSubnet({ network_id: net.id, cidr: '10.1.1.0/24', ip_version: 4, gateway_ip: '10.1.1.1' }, tenant);
          const s6 = await q.createSubnet({ network_id: net.id, cidr: '2001:db8:1::/64', ip_version: 6, gateway_ip: '2001:db8:1::1' }, tenant);
          const router = await q.createRouter({ name: `${fx.prefix}-r-${tenant}` }, tenant);
          fx.trackNamespace(routerNamespace(router.id));
          await q.addRouterInterface(router.id, { subnet_id: s4.id });
          await q.addRouterInterface(router.id, { subnet_id: s6.id });
          t[tenant] = { net, v4: s4.id, v6: s6.id, router: router.id };
        }
        // The very same addresses and MAC (so the same link-local fe80:: address) in both tenants.
        for (const tenant of ['tenant-a', 'tenant-b']) {
          const x = t[tenant]!;
          const { id } = await boot(tenant, `vm6-${tenant}`, x.net, [{ subnet_id: x.v6, ip_address: '2001:db8:1::5' }, ...(tenant === 'tenant-b' ? [{ subnet_id: x.v4, ip_address: '10.1.1.5' }] : [])], SAME_MAC);
          x.id = id;
          // tenant-a's guest is IPv6-only; tenant-b's is dual-stack.
          x.guest = guest(x.net, SAME_MAC, ['2001:db8:1::5/64'], tenant === 'tenant-b' ? { cidr: '10.1.1.5/24', gw: '10.1.1.1' } : undefined);
        }
        // Another tenant-b server, whose address and MAC the spoofer in tenant-a takes.
        other = await boot('tenant-b', 'vm6-other', t['tenant-b']!.net, [{ subnet_id: t['tenant-b']!.v6, ip_address: '2001:db8:1::7' }]);
        for (const x of Object.values(t)) await linkLocalReady(x.guest!);
      });

      test('an IPv6-only guest gets its own instance at [fe80::a9fe:a9fe%eth0] (link-local source, port found by MAC)', async () => {
        const a = t['tenant-a']!;
        assert.equal(await linkLocalReady(a.guest!), eui64(SAME_MAC));
        assert.equal(await uuidOf(a.guest!, V6_META), a.id);
        // cloud-init's probe of the EC2 tree works the same way.
        const r = await curl(a.guest!, 'http://[fe80::a9fe:a9fe%25eth0]/latest/meta-data/instance-id');
        assert.equal(r.status, 200);
        assert.match(r.body, /^i-[0-9a-f]{8}$/);
      });

      test('the same global and link-local address in the other tenant is the other instance', async () => {
        const a = t['tenant-a']!;
        const b = t['tenant-b']!;
        assert.equal(await uuidOf(b.guest!, V6_META), b.id);
        assert.notEqual(a.id, b.id);
        // With the global address as the source: found by the fixed IPv6, behind each guest's own router.
        assert.equal(await uuidOf(a.guest!, V6_META, ['--interface', '2001:db8:1::5']), a.id);
        assert.equal(await uuidOf(b.guest!, V6_META, ['--interface', '2001:db8:1::5']), b.id);
      });

      test('a dual-stack guest is the same instance over 169.254.169.254 and fe80::a9fe:a9fe', async () => {
        const b = t['tenant-b']!;
        assert.equal(await uuidOf(b.guest!, V4_META), b.id);
        assert.equal(await uuidOf(b.guest!, V6_META), b.id);
        const r = await curl(b.guest!, 'http://169.254.169.254/latest/meta-data/local-ipv4');
        assert.equal(r.body, '10.1.1.5');
      });

      test('the router namespace: ip6tables metadata rules, fe80::a9fe:a9fe on the qr- devices, a v6 listener on 9697', async () => {
        const ns = routerNamespace(t['tenant-a']!.router);
        const nat = await execute(['ip6tables-save', '-t', 'nat'], { netns: ns });
        assert.match(nat, /-d fe80::a9fe:a9fe\/128 -i qr-\+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697/);
        const mangle = await execute(['ip6tables-save', '-t', 'mangle'], { netns: ns });
        assert.match(mangle, /-d fe80::a9fe:a9fe\/128 -i qr-\+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1\/0xffff/);
        const addrs = await execute(['ip', '-6', '-o', 'addr', 'show'], { netns: ns });
        assert.match(addrs, /qr-\S+\s+inet6 fe80::a9fe:a9fe\/64 scope link/);
        const ss = await execute(['ss', '-Hltn'], { netns: ns });
        assert.match(ss, /\[::\]:9697/);
        // Two qr- devices on one network: only the one holding the IPv4 gateway answers ARP for it (Neutron's sysctls).
        assert.equal((await execute(['sysctl', '-n', 'net.ipv4.conf.all.arp_ignore', 'net.ipv4.conf.all.arp_announce'], { netns: ns })).trim().split('\n').join(' '), '1 2');
        assert.match(ss, /0\.0\.0\.0:9697/);
      });

      test('spoofing: another tenant\'s global address or MAC gets nothing of that tenant; an unknown MAC gets 404', async () => {
        const a = t['tenant-a']!;
        assert.ok(other);
        // On tenant-a's network, a guest with the MAC and global address of tenant-b's other server.
        const spoof = guest(a.net, other.port.mac_address, ['2001:db8:1::7/64']);
        await linkLocalReady(spoof);
        const byMac = await waitFor(async () => {
          const r = await curl(spoof, V6_META).catch(() => undefined);
          return r && r.status !== 0 ? r : undefined;
        }, 20_000, 200, 'an answer to the spoofer');
        assert.equal(byMac.status, 404, byMac.body);
        assert.ok(!byMac.body.includes(other.id));
        const byIp = await curl(spoof, V6_META, ['--interface', '2001:db8:1::7']);
        assert.equal(byIp.status, 404, byIp.body);
        assert.ok(!byIp.body.includes(other.id));
        // A link-local source whose MAC no port has.
        const stranger = guest(a.net, 'fa:16:3e:de:ad:01');
        await linkLocalReady(stranger);
        assert.equal((await curl(stranger, V6_META)).status, 404);
      });
    });

    describe('isolated IPv6-only network: the qdhcp namespace', () => {
      test('the tap holds fe80::a9fe:a9fe/64 and the guest gets its instance at [fe80::a9fe:a9fe%eth0]', async () => {
        const net = await network('tenant-a', 'iso6');
        const s6 = await q.createSubnet({ network_id: net.id, cidr: '2001:db8:9::/64', ip_version: 6, gateway_ip: null }, 'tenant-a');
        const { id, port } = await boot('tenant-a', 'vm6-iso', net, [{ subnet_id: s6.id, ip_address: '2001:db8:9::5' }]);
        const g = guest(net, port.mac_address, ['2001:db8:9::5/64']);
        await linkLocalReady(g);
        const ns = dhcpNamespace(net.id);
        try {
          assert.equal(await uuidOf(g, V6_META), id);
        } catch (e) {
          const dbg = await execute(['sh', '-c', 'ip -6 addr; ss -ltnp'], { netns: ns }).catch((x: unknown) => String(x));
          throw new Error(`${(e as Error).message}\n${dbg}\n${stack.daemon('dhcp-agent/main.js')?.output().slice(-3000)}`);
        }
        // (A global source is not answered here: the DHCP port holds no address on the IPv6 subnet, so the
        // namespace has no route back to it. Guests use their link-local source for fe80::a9fe:a9fe anyway.)
        const dhcpPort = (await q.listPorts({ network_id: net.id, device_owner: 'network:dhcp' }))[0]!;
        const tap = tapDeviceName(dhcpPort.id);
        const addrs = await execute(['ip', '-6', '-o', 'addr', 'show', 'dev', tap], { netns: ns });
        assert.match(addrs, /inet6 fe80::a9fe:a9fe\/64 scope link/);
        // Only the metadata address: the tap's own link-local one may still be in DAD at this moment.
        const md = addrs.split('\n').find((l) => l.includes('fe80::a9fe:a9fe/64')) ?? '';
        assert.doesNotMatch(md, /tentative|dadfailed/);
        // Bracketed and scoped: [fe80::a9fe:a9fe%tap...]:80 (Neutron's Zed template wrote fe80::a9fe:a9fe:80).
        const ss = await execute(['ss', '-Hltn'], { netns: ns });
        assert.ok(ss.includes(`[fe80::a9fe:a9fe]%${tap}:80`), ss);
        assert.match(ss, /169\.254\.169\.254:80/);
        if (mode === 'per-namespace') {
          const cmd = (await execute(['ip', 'netns', 'pids', ns])).split('\n').filter(Boolean).map((p) => {
            try {
              return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ');
            } catch {
              return '';
            }
          });
          assert.ok(cmd.some((c) => c.includes('--bind_address_v6=fe80::a9fe:a9fe') && c.includes(`--bind_interface=${tap}`)), cmd.join('\n'));
        }
      });
    });
  });
}
