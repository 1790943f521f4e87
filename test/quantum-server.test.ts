// quantum-server's API against the real HTTP server (in-process) on SQLite and MariaDB.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CompiledQuery } from 'kysely';
import { silentLogger } from '../src/common/log.js';
import { QuantumClient, type Port, type Subnet } from '../src/common/quantum-client.js';
import { startQuantumServer, type RunningQuantumServer } from '../src/quantum-server/app.js';
import { backends, type TestDb } from './helpers/db.js';

interface Res {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

for (const mk of backends()) {
  describe(`quantum-server API (${mk.name})`, () => {
    let tdb: TestDb;
    let srv: RunningQuantumServer;
    let qc: QuantumClient;
    let base: string;

    const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Res> => {
      const r = await fetch(`${base}${path}`, {
        method,
        headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await r.text();
      return { status: r.status, body: text ? JSON.parse(text) : undefined };
    };
    const err = (r: Res, status: number, type: string, message?: string | RegExp) => {
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body.NeutronError.type, type);
      assert.equal(typeof r.body.NeutronError.detail, 'string');
      if (typeof message === 'string') assert.equal(r.body.NeutronError.message, message);
      else if (message) assert.match(r.body.NeutronError.message, message);
    };

    before(async () => {
      tdb = await mk();
      srv = await startQuantumServer({ connection: tdb.url, host: '127.0.0.1', port: 0, log: silentLogger, agentDownTime: 75 });
      base = srv.url;
      qc = new QuantumClient({ url: base });
    });
    after(async () => {
      await qc?.close();
      await srv?.close();
      await tdb?.drop();
    });

    test('version documents, .json suffix, unknown paths and methods', async () => {
      const v = await call('GET', '/');
      assert.equal(v.status, 200);
      assert.equal(v.body.versions[0].id, 'v2.0');
      assert.equal(v.body.versions[0].status, 'CURRENT');
      const r = await call('GET', '/v2.0');
      assert.deepEqual(r.body.resources.map((x: { collection: string }) => x.collection).sort(), ['agents', 'networks', 'ports', 'routers', 'subnets']);
      assert.equal((await call('GET', '/v2.0/networks.json')).status, 200);
      err(await call('GET', '/v2.0/nonsense'), 404, 'HTTPNotFound');
      err(await call('PATCH', '/v2.0/networks'), 405, 'HTTPMethodNotAllowed');
    });

    test('networks: create, show, list, update, 404s and bad bodies', async () => {
      const c = await call('POST', '/v2.0/networks', { network: { name: 'n-crud', tenant_id: 't1' } });
      assert.equal(c.status, 201);
      const n = c.body.network;
      assert.deepEqual(Object.keys(n).sort(), ['admin_state_up', 'id', 'mtu', 'name', 'project_id', 'router:external', 'shared', 'status', 'subnets', 'tenant_id']);
      assert.equal(n.status, 'ACTIVE');
      assert.equal(n.tenant_id, 't1');
      assert.equal(n.project_id, 't1');
      assert.equal(n.admin_state_up, true);
      assert.equal(n.shared, false);
      assert.equal(n['router:external'], false);
      assert.deepEqual(n.subnets, []);
      assert.deepEqual((await call('GET', `/v2.0/networks/${n.id}`)).body.network, n);
      const u = await call('PUT', `/v2.0/networks/${n.id}.json`, { network: { name: 'n-crud2', admin_state_up: false } });
      assert.equal(u.status, 200);
      assert.equal(u.body.network.name, 'n-crud2');
      assert.equal(u.body.network.admin_state_up, false);
      err(await call('PUT', `/v2.0/networks/${n.id}`, { network: { tenant_id: 'x' } }), 400, 'HTTPBadRequest', 'Cannot update read-only attribute tenant_id');
      err(await call('POST', '/v2.0/networks', { network: { bogus: 1 } }), 400, 'HTTPBadRequest', "Unrecognized attribute(s) 'bogus'");
      err(await call('POST', '/v2.0/networks', '{"network": {'), 400, 'MalformedRequestBody', 'Malformed request body: Cannot understand JSON.');
      err(await call('POST', '/v2.0/networks', { netwerk: {} }), 400, 'HTTPBadRequest', "Unable to find 'network' in request body");
      const missing = '3d42a0d4-a980-4613-ae76-a2cddecff054';
      err(await call('GET', `/v2.0/networks/${missing}`), 404, 'NetworkNotFound', `Network ${missing} could not be found.`);
      err(await call('DELETE', `/v2.0/networks/${missing}`), 404, 'NetworkNotFound');
      // Tenant from X-Project-Id when the body names none; default admin project otherwise.
      const h = await call('POST', '/v2.0/networks', { network: { name: 'hdr' } }, { 'X-Project-Id': 'proj-h' });
      assert.equal(h.body.network.tenant_id, 'proj-h');
      const d = await call('POST', '/v2.0/networks', { network: { name: 'dflt' } });
      assert.equal(d.body.network.tenant_id, 'admin');
      const del = await call('DELETE', `/v2.0/networks/${n.id}`);
      assert.equal(del.status, 204);
      assert.equal(del.body, undefined);
      err(await call('GET', `/v2.0/networks/${n.id}`), 404, 'NetworkNotFound');
    });

    test('subnets: defaults, normalised CIDR, --no-gateway, pools, validation', async () => {
      const net = await qc.createNetwork({ name: 'n-sub' });
      const s = (await call('POST', '/v2.0/subnets', { subnet: { network_id: net.id, cidr: '10.20.0.77/24', ip_version: 4, dns_nameservers: ['8.8.8.7', '8.8.8.8'], host_routes: [{ destination: '192.168.0.0/16', nexthop: '10.20.0.254' }] } }));
      assert.equal(s.status, 201);
      const sub: Subnet = s.body.subnet;
      assert.deepEqual(Object.keys(sub).sort(), ['allocation_pools', 'cidr', 'dns_nameservers', 'enable_dhcp', 'gateway_ip', 'host_routes', 'id', 'ip_version', 'ipv6_address_mode', 'ipv6_ra_mode', 'name', 'network_id', 'project_id', 'tenant_id']);
      assert.equal(sub.cidr, '10.20.0.0/24');
      assert.equal(sub.gateway_ip, '10.20.0.1');
      assert.deepEqual(sub.allocation_pools, [{ start: '10.20.0.2', end: '10.20.0.254' }]);
      assert.deepEqual(sub.dns_nameservers, ['8.8.8.7', '8.8.8.8']);
      assert.deepEqual(sub.host_routes, [{ destination: '192.168.0.0/16', nexthop: '10.20.0.254' }]);
      assert.equal(sub.enable_dhcp, true);
      assert.equal(sub.ip_version, 4);
      assert.deepEqual((await qc.showNetwork(net.id)).subnets, [sub.id]);

      // The walkthrough's `subnet-create testnet01 172.17.17.0/24 --no-gateway`.
      const ng = await qc.createSubnet({ network_id: net.id, cidr: '172.17.17.0/24', gateway_ip: null, name: 'sub_no_gateway' });
      assert.equal(ng.gateway_ip, null);
      assert.deepEqual(ng.allocation_pools, [{ start: '172.17.17.1', end: '172.17.17.254' }]);

      const mid = await qc.createSubnet({ network_id: net.id, cidr: '10.21.0.0/29', gateway_ip: '10.21.0.4', enable_dhcp: false });
      assert.deepEqual(mid.allocation_pools, [{ start: '10.21.0.1', end: '10.21.0.3' }, { start: '10.21.0.5', end: '10.21.0.6' }]);
      assert.equal(mid.enable_dhcp, false);

      const v6 = await qc.createSubnet({ network_id: net.id, cidr: '2001:db8:0:1::/64', ip_version: 6 });
      assert.equal(v6.gateway_ip, '2001:db8:0:1::1');
      assert.deepEqual(v6.allocation_pools, [{ start: '2001:db8:0:1::2', end: '2001:db8:0:1:ffff:ffff:ffff:ffff' }]);

      const pooled = await qc.createSubnet({ network_id: net.id, cidr: '10.22.0.0/24', allocation_pools: [{ start: '10.22.0.100', end: '10.22.0.110' }] });
      assert.deepEqual(pooled.allocation_pools, [{ start: '10.22.0.100', end: '10.22.0.110' }]);

      const bad = (cidr: unknown) => call('POST', '/v2.0/subnets', { subnet: { network_id: net.id, cidr, ip_version: 4 } });
      err(await bad('10.0.0.0/33'), 400, 'HTTPBadRequest', "Invalid input for cidr. Reason: '10.0.0.0/33' is not a valid IP subnet.");
      err(await bad('banana'), 400, 'HTTPBadRequest', "Invalid input for cidr. Reason: 'banana' is not a valid IP subnet.");
      err(await bad('10.9.9.0'), 400, 'HTTPBadRequest', "Invalid input for cidr. Reason: '10.9.9.0' isn't a recognized IP subnet cidr, '10.9.9.0/32' is recommended.");
      err(await call('POST', '/v2.0/subnets', { subnet: { cidr: '10.0.0.0/24' } }), 400, 'HTTPBadRequest', "Failed to parse request. Required attribute 'network_id' not specified");
      err(await call('POST', '/v2.0/subnets', { subnet: { network_id: net.id, cidr: '10.30.0.0/24', gateway_ip: 'x.y' } }), 400, 'HTTPBadRequest', /'x\.y' is not a valid IP address/);
      err(await call('POST', '/v2.0/subnets', { subnet: { network_id: net.id, cidr: '10.30.0.0/24', allocation_pools: [{ start: '10.31.0.1', end: '10.31.0.5' }] } }), 400, 'OutOfBoundsAllocationPool');
      err(await call('POST', '/v2.0/subnets', { subnet: { network_id: net.id, cidr: '10.30.0.0/24', allocation_pools: [{ start: '10.30.0.1', end: '10.30.0.5' }] } }), 409, 'GatewayConflictWithAllocationPools', 'Gateway ip 10.30.0.1 conflicts with allocation pool 10.30.0.1-10.30.0.5.');
      err(await call('POST', '/v2.0/subnets', { subnet: { network_id: net.id, cidr: '10.30.0.0/24', dns_nameservers: ['1.1.1.1', '1.1.1.1'] } }), 400, 'HTTPBadRequest', /Duplicate nameserver/);
      err(await call('POST', '/v2.0/subnets', { subnet: { network_id: net.id, cidr: '10.30.0.0/24', ip_version: 6 } }), 400, 'InvalidInput');
      err(await call('POST', '/v2.0/subnets', { subnet: { network_id: 'c7a1c4d2-0000-4000-8000-000000000000', cidr: '10.30.0.0/24' } }), 404, 'NetworkNotFound');

      // Tenants overlap: the same CIDR on another network is fine.
      const net2 = await qc.createNetwork({ name: 'n-sub-2' });
      assert.equal((await qc.createSubnet({ network_id: net2.id, cidr: '10.20.0.0/24' })).cidr, '10.20.0.0/24');

      const up = await qc.updateSubnet(sub.id, { name: 'renamed', dns_nameservers: ['9.9.9.9'], enable_dhcp: false });
      assert.equal(up.name, 'renamed');
      assert.deepEqual(up.dns_nameservers, ['9.9.9.9']);
      assert.equal(up.enable_dhcp, false);
      err(await call('PUT', `/v2.0/subnets/${sub.id}`, { subnet: { cidr: '10.0.0.0/8' } }), 400, 'HTTPBadRequest', 'Cannot update read-only attribute cidr');
    });

    test('ports: allocation order, explicit IPs and MACs, conflicts, exhaustion', async () => {
      const net = await qc.createNetwork({ name: 'n-ports' });
      const sub = await qc.createSubnet({ network_id: net.id, cidr: '10.1.1.0/24' });
      const p1 = await qc.createPort({ network_id: net.id, device_id: 'vm-1', device_owner: 'compute:nova' });
      assert.deepEqual(Object.keys(p1).sort(), ['admin_state_up', 'binding:host_id', 'device_id', 'device_owner', 'fixed_ips', 'id', 'mac_address', 'name', 'network_id', 'project_id', 'status', 'tenant_id']);
      assert.deepEqual(p1.fixed_ips, [{ subnet_id: sub.id, ip_address: '10.1.1.2' }]);
      assert.match(p1.mac_address, /^fa:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
      const p2 = await qc.createPort({ network_id: net.id });
      assert.equal(p2.fixed_ips[0]!.ip_address, '10.1.1.3');
      const p3 = await qc.createPort({ network_id: net.id, fixed_ips: [{ ip_address: '10.1.1.50' }], mac_address: 'FA:16:3E:AA:BB:CC' });
      assert.deepEqual(p3.fixed_ips, [{ subnet_id: sub.id, ip_address: '10.1.1.50' }]);
      assert.equal(p3.mac_address, 'fa:16:3e:aa:bb:cc');
      // The freed address is handed out again first.
      await qc.deletePort(p2.id);
      assert.equal((await qc.createPort({ network_id: net.id, fixed_ips: [{ subnet_id: sub.id }] })).fixed_ips[0]!.ip_address, '10.1.1.3');

      err(await call('POST', '/v2.0/ports', { port: { network_id: net.id, fixed_ips: [{ ip_address: '10.1.1.50' }] } }), 409, 'IpAddressInUse', `Unable to complete operation for network ${net.id}. The IP address 10.1.1.50 is in use.`);
      err(await call('POST', '/v2.0/ports', { port: { network_id: net.id, mac_address: 'fa:16:3e:aa:bb:cc' } }), 409, 'MacAddressInUse', `Unable to complete operation for network ${net.id}. The mac address fa:16:3e:aa:bb:cc is in use.`);
      err(await call('POST', '/v2.0/ports', { port: { network_id: net.id, fixed_ips: [{ subnet_id: sub.id, ip_address: '10.9.9.9' }] } }), 400, 'InvalidIpForSubnet', 'IP address 10.9.9.9 is not a valid IP for the specified subnet.');
      err(await call('POST', '/v2.0/ports', { port: { network_id: net.id, fixed_ips: [{ ip_address: '10.9.9.9' }] } }), 400, 'InvalidIpForNetwork');
      err(await call('POST', '/v2.0/ports', { port: { network_id: net.id, fixed_ips: [{ ip_address: '10.1.1.256' }] } }), 400, 'HTTPBadRequest', /'10\.1\.1\.256' is not a valid IP address/);
      err(await call('POST', '/v2.0/ports', { port: { network_id: net.id, fixed_ips: [{ subnet_id: sub.id, ip_address: '10.1.1.255' }] } }), 400, 'InvalidIpForSubnet');
      err(await call('POST', '/v2.0/ports', { port: { name: 'x' } }), 400, 'HTTPBadRequest', "Failed to parse request. Required attribute 'network_id' not specified");
      err(await call('POST', '/v2.0/ports', { port: { network_id: net.id, mac_address: 'zz' } }), 400, 'HTTPBadRequest', /not a valid MAC address/);

      const small = await qc.createNetwork({ name: 'n-small' });
      await qc.createSubnet({ network_id: small.id, cidr: '192.168.5.0/30' });
      const only = await qc.createPort({ network_id: small.id });
      assert.equal(only.fixed_ips[0]!.ip_address, '192.168.5.2');
      err(await call('POST', '/v2.0/ports', { port: { network_id: small.id } }), 409, 'IpAddressGenerationFailure', `No more IP addresses available on network ${small.id}.`);

      const up = await qc.updatePort(p1.id, { name: 'renamed', 'binding:host_id': 'compute-1', fixed_ips: [{ ip_address: '10.1.1.2' }, { ip_address: '10.1.1.60' }] });
      assert.equal(up.name, 'renamed');
      assert.equal(up['binding:host_id'], 'compute-1');
      assert.deepEqual(up.fixed_ips.map((f) => f.ip_address), ['10.1.1.2', '10.1.1.60']);
      const shrunk = await qc.updatePort(p1.id, { fixed_ips: [{ ip_address: '10.1.1.60' }] });
      assert.deepEqual(shrunk.fixed_ips.map((f) => f.ip_address), ['10.1.1.60']);
      err(await call('GET', '/v2.0/ports/7b1d5f3c-9999-4000-8000-000000000000'), 404, 'PortNotFound', 'Port 7b1d5f3c-9999-4000-8000-000000000000 could not be found.');
    });

    test('port filters: the metadata agent lookups, OR on repeats, fields, bad filters', async () => {
      // Two tenants with the very same CIDR and guest IP.
      const a = await qc.createNetwork({ name: 'flt-a', tenant_id: 'ta' });
      const bn = await qc.createNetwork({ name: 'flt-b', tenant_id: 'tb' });
      const sa = await qc.createSubnet({ network_id: a.id, cidr: '10.77.0.0/24', tenant_id: 'ta' });
      const sb = await qc.createSubnet({ network_id: bn.id, cidr: '10.77.0.0/24', tenant_id: 'tb' });
      const gwA = await qc.createPort({ network_id: a.id, device_id: 'router-a', device_owner: 'network:router_interface', fixed_ips: [{ ip_address: '10.77.0.1' }] });
      const vmA = await qc.createPort({ network_id: a.id, device_id: 'vm-a', device_owner: 'compute:nova', tenant_id: 'ta' });
      const vmB = await qc.createPort({ network_id: bn.id, device_id: 'vm-b', device_owner: 'compute:nova', tenant_id: 'tb' });
      assert.equal(vmA.fixed_ips[0]!.ip_address, '10.77.0.2');
      assert.equal(vmB.fixed_ips[0]!.ip_address, '10.77.0.2');

      const rif = await qc.listPorts({ device_id: 'router-a', device_owner: ['network:router_interface', 'network:router_interface_distributed'] });
      assert.deepEqual(rif.map((p) => p.id), [gwA.id]);
      const found = await qc.listPorts({ network_id: [a.id, '00000000-0000-4000-8000-000000000000'], fixed_ips: ['ip_address=10.77.0.2'] });
      assert.deepEqual(found.map((p) => p.device_id), ['vm-a']);
      const both = await qc.listPorts({ network_id: [a.id, bn.id], fixed_ips: ['ip_address=10.77.0.2'] });
      assert.deepEqual(both.map((p) => p.device_id).sort(), ['vm-a', 'vm-b']);
      assert.deepEqual((await qc.listPorts({ fixed_ips: [`subnet_id=${sb.id}`] })).map((p) => p.id), [vmB.id]);
      assert.deepEqual((await qc.listPorts({ fixed_ips: [`subnet_id=${sa.id}`, 'ip_address=10.77.0.1'] })).map((p) => p.id), [gwA.id]);
      assert.deepEqual((await qc.listPorts({ mac_address: vmB.mac_address })).map((p) => p.id), [vmB.id]);
      assert.deepEqual((await qc.listPorts({ tenant_id: 'tb' })).map((p) => p.id), [vmB.id]);
      assert.deepEqual((await qc.listPorts({ project_id: 'tb' })).map((p) => p.id), [vmB.id]);
      assert.deepEqual((await qc.listPorts({ id: [vmA.id, vmB.id] })).map((p) => p.id).sort(), [vmA.id, vmB.id].sort());
      assert.deepEqual((await qc.listNetworks({ name: 'flt-b' })).map((n) => n.id), [bn.id]);
      assert.deepEqual((await qc.listSubnets({ network_id: a.id, cidr: '10.77.0.0/24' })).map((s) => s.id), [sa.id]);
      assert.equal((await qc.listNetworks({ 'router:external': 'True' })).length, 0);
      // Nova's X-Metadata-Provider lookup: no subnet here has a service provider, so none match (Nova then answers 400).
      assert.deepEqual(await qc.listSubnets({ advanced_service_providers: 'lb-1' }), []);

      const trimmed = await call('GET', `/v2.0/ports?device_id=vm-a&fields=id&fields=device_id`);
      assert.deepEqual(trimmed.body.ports, [{ id: vmA.id, device_id: 'vm-a' }]);
      err(await call('GET', '/v2.0/ports?hostname=x'), 400, 'HTTPBadRequest', 'hostname is invalid attribute for ports');
      err(await call('GET', '/v2.0/networks?device_id=x'), 400, 'HTTPBadRequest');
      err(await call('GET', '/v2.0/ports?fixed_ips=10.77.0.2'), 400, 'InvalidInput');
      err(await call('GET', '/v2.0/ports?admin_state_up=maybe'), 400, 'HTTPBadRequest', /cannot be converted to boolean/);
      assert.equal((await call('GET', '/v2.0/ports?admin_state_up=True&device_id=vm-a')).body.ports.length, 1);
      const page = await call('GET', `/v2.0/ports?network_id=${a.id}&limit=1&sort_key=device_id&sort_dir=asc`);
      assert.equal(page.body.ports.length, 1);
      assert.equal(page.body.ports[0].device_id, 'router-a');
      assert.equal(page.body.ports_links[0].rel, 'next');
    });

    test('the fixed-IP lookup is an index seek (EXPLAIN)', async () => {
      const q = srv.store.portsQuery({ network_id: ['a', 'b'], fixed_ips: ['ip_address=10.1.2.3'] }).compile();
      if (srv.handle.dialect === 'sqlite') {
        const plan = await srv.handle.db.executeQuery<{ detail: string }>(CompiledQuery.raw(`EXPLAIN QUERY PLAN ${q.sql}`, [...q.parameters]));
        const text = plan.rows.map((r) => r.detail).join('\n');
        assert.match(text, /SEARCH ipallocations USING (COVERING )?INDEX \S+ \(ip_address=\?/, text);
        assert.match(text, /SEARCH ports USING INDEX sqlite_autoindex_ports_1 \(id=\?\)/, text);
        assert.doesNotMatch(text, /SCAN/, text);
      } else {
        const plan = await srv.handle.db.executeQuery<{ table: string; type: string; key: string | null }>(CompiledQuery.raw(`EXPLAIN ${q.sql}`, [...q.parameters]));
        // <subqueryN> rows are the one-row materialised IN list; every real table must be reached by a key.
        const real = plan.rows.filter((r) => !r.table.startsWith('<'));
        assert.deepEqual(real.map((r) => r.table).sort(), ['ipallocations', 'ports'], JSON.stringify(plan.rows));
        for (const r of real) {
          assert.notEqual(r.type, 'ALL', JSON.stringify(plan.rows));
          assert.ok(r.key, JSON.stringify(plan.rows));
        }
      }
    });

    test('concurrent port creates never share an IP or MAC', async () => {
      const net = await qc.createNetwork({ name: 'n-race' });
      await qc.createSubnet({ network_id: net.id, cidr: '10.99.0.0/24' });
      const ports: Port[] = await Promise.all(Array.from({ length: 50 }, (_, i) => qc.createPort({ network_id: net.id, device_id: `vm-${i}` })));
      const ips = new Set(ports.map((p) => p.fixed_ips[0]!.ip_address));
      const macs = new Set(ports.map((p) => p.mac_address));
      assert.equal(ips.size, 50);
      assert.equal(macs.size, 50);
      // Two clients asking for the same explicit address: exactly one wins.
      const rs = await Promise.all([1, 2, 3].map(() => call('POST', '/v2.0/ports', { port: { network_id: net.id, fixed_ips: [{ ip_address: '10.99.0.200' }] } })));
      assert.deepEqual(rs.map((r) => r.status).sort(), [201, 409, 409]);
      assert.equal((await qc.listPorts({ network_id: net.id })).length, 51);
    });

    test('delete rules: DHCP ports go with the network, others block; SubnetInUse', async () => {
      const net = await qc.createNetwork({ name: 'n-del' });
      const sub = await qc.createSubnet({ network_id: net.id, cidr: '10.5.0.0/24' });
      const dhcp = await qc.createPort({ network_id: net.id, device_owner: 'network:dhcp', device_id: 'dhcpxyz' });
      const vm = await qc.createPort({ network_id: net.id, device_owner: 'compute:nova', device_id: 'vm' });
      err(await call('DELETE', `/v2.0/networks/${net.id}`), 409, 'NetworkInUse', `Unable to complete operation on network ${net.id}. There are one or more ports still in use on the network.`);
      err(await call('DELETE', `/v2.0/subnets/${sub.id}`), 409, 'SubnetInUse', `Unable to complete operation on subnet ${sub.id}: One or more ports have an IP allocation from this subnet.`);
      await qc.deletePort(vm.id);
      assert.equal((await call('DELETE', `/v2.0/networks/${net.id}`)).status, 204);
      err(await call('GET', `/v2.0/ports/${dhcp.id}`), 404, 'PortNotFound');
      err(await call('GET', `/v2.0/subnets/${sub.id}`), 404, 'SubnetNotFound');
    });

    test('routers: interfaces by subnet and by port, conflicts, RouterInUse, L3PortInUse', async () => {
      const net = await qc.createNetwork({ name: 'n-r', tenant_id: 'tr' });
      const sub = await qc.createSubnet({ network_id: net.id, cidr: '10.1.1.0/24' });
      const sub2 = await qc.createSubnet({ network_id: net.id, cidr: '10.1.9.0/24' });
      const nogw = await qc.createSubnet({ network_id: net.id, cidr: '10.1.8.0/24', gateway_ip: null });
      const c = await call('POST', '/v2.0/routers', { router: { name: 'r1', tenant_id: 'tr' } });
      assert.equal(c.status, 201);
      const r = c.body.router;
      assert.deepEqual(Object.keys(r).sort(), ['admin_state_up', 'external_gateway_info', 'id', 'name', 'project_id', 'status', 'tenant_id']);
      const add = await call('PUT', `/v2.0/routers/${r.id}/add_router_interface`, { subnet_id: sub.id });
      assert.equal(add.status, 200);
      assert.deepEqual(Object.keys(add.body).sort(), ['id', 'network_id', 'port_id', 'subnet_id', 'subnet_ids', 'tenant_id']);
      assert.equal(add.body.id, r.id);
      assert.equal(add.body.tenant_id, 'tr');
      assert.equal(add.body.subnet_id, sub.id);
      assert.deepEqual(add.body.subnet_ids, [sub.id]);
      assert.equal(add.body.network_id, net.id);
      const port = await qc.showPort(add.body.port_id);
      assert.equal(port.device_owner, 'network:router_interface');
      assert.equal(port.device_id, r.id);
      assert.deepEqual(port.fixed_ips, [{ subnet_id: sub.id, ip_address: '10.1.1.1' }]);

      err(await call('PUT', `/v2.0/routers/${r.id}/add_router_interface`, { subnet_id: sub.id }), 400, 'BadRequest', `Bad router request: Router already has a port on subnet ${sub.id}.`);
      err(await call('PUT', `/v2.0/routers/${r.id}/add_router_interface`, { subnet_id: nogw.id }), 400, 'BadRequest', 'Bad router request: Subnet for router interface must have a gateway IP.');
      err(await call('PUT', `/v2.0/routers/${r.id}/add_router_interface`, {}), 400, 'BadRequest');
      // Another router cannot take a gateway address that is already in use.
      const r2 = await qc.createRouter({ name: 'r2' });
      err(await call('PUT', `/v2.0/routers/${r2.id}/add_router_interface`, { subnet_id: sub.id }), 409, 'IpAddressInUse');
      err(await call('DELETE', `/v2.0/ports/${port.id}`), 409, 'L3PortInUse', `Port ${port.id} has owner network:router_interface and therefore cannot be deleted directly via the port API.`);
      err(await call('DELETE', `/v2.0/routers/${r.id}`), 409, 'RouterInUse', `Router ${r.id} still has ports`);

      // By port: a free port becomes the interface.
      const free = await qc.createPort({ network_id: net.id, fixed_ips: [{ subnet_id: sub2.id, ip_address: '10.1.9.1' }] });
      const byPort = await qc.addRouterInterface(r.id, { port_id: free.id });
      assert.equal(byPort.port_id, free.id);
      assert.equal(byPort.subnet_id, sub2.id);
      const vm = await qc.createPort({ network_id: net.id, device_id: 'vm-x' });
      err(await call('PUT', `/v2.0/routers/${r2.id}/add_router_interface`, { port_id: vm.id }), 409, 'PortInUse');

      const ifaces = await qc.listPorts({ device_id: r.id, device_owner: 'network:router_interface' });
      assert.equal(ifaces.length, 2);

      const rm = await qc.removeRouterInterface(r.id, { subnet_id: sub.id });
      assert.equal(rm.port_id, port.id);
      err(await call('GET', `/v2.0/ports/${port.id}`), 404, 'PortNotFound');
      err(await call('PUT', `/v2.0/routers/${r.id}/remove_router_interface`, { subnet_id: sub.id }), 404, 'RouterInterfaceNotFoundForSubnet', `Router ${r.id} has no interface on subnet ${sub.id}`);
      err(await call('PUT', `/v2.0/routers/${r.id}/remove_router_interface`, { port_id: vm.id }), 404, 'RouterInterfaceNotFound');
      await qc.removeRouterInterface(r.id, { port_id: free.id });
      assert.equal((await call('DELETE', `/v2.0/routers/${r.id}`)).status, 204);
      err(await call('GET', `/v2.0/routers/${r.id}`), 404, 'RouterNotFound', `Router ${r.id} could not be found.`);
    });

    test('agents: report_state upserts by (agent_type, host), alive, start_flag, delete', async () => {
      const report = { binary: 'quantum-l3-agent', host: 'net-1', agent_type: 'L3 agent', topic: 'l3_agent', configurations: { routers: 0 }, start_flag: true };
      const first = await qc.reportState(report);
      assert.equal(first.alive, true);
      assert.equal(first.admin_state_up, true);
      assert.match(first.heartbeat_timestamp, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
      await new Promise((r) => setTimeout(r, 1100));
      const again = await qc.reportState({ ...report, configurations: { routers: 3 }, start_flag: false });
      assert.equal(again.id, first.id);
      assert.deepEqual(again.configurations, { routers: 3 });
      assert.equal(again.started_at, first.started_at);
      assert.notEqual(again.heartbeat_timestamp, first.heartbeat_timestamp);
      const restarted = await qc.reportState({ ...report, start_flag: true });
      assert.notEqual(restarted.started_at, first.started_at);
      const dhcp = await qc.reportState({ ...report, binary: 'quantum-dhcp-agent', agent_type: 'DHCP agent', topic: 'dhcp_agent' });
      assert.notEqual(dhcp.id, first.id);
      assert.equal((await qc.listAgents({ agent_type: 'L3 agent' })).length, 1);
      // A heartbeat older than agent_down_time is dead.
      await srv.handle.db.updateTable('agents').set({ heartbeat_timestamp: new Date(Date.now() - 76_000).toISOString() }).where('id', '=', dhcp.id).execute();
      const shown = (await call('GET', `/v2.0/agents/${dhcp.id}`)).body.agent;
      assert.equal(shown.alive, false);
      assert.deepEqual((await qc.listAgents({ alive: 'False' })).map((x) => x.id), [dhcp.id]);
      err(await call('POST', '/v2.0/agents', { agent: { host: 'h' } }), 400, 'HTTPBadRequest', "Failed to parse request. Required attribute 'binary' not specified");
      assert.equal((await call('DELETE', `/v2.0/agents/${dhcp.id}`)).status, 204);
      err(await call('GET', `/v2.0/agents/${dhcp.id}`), 404, 'AgentNotFound');
    });
  });
}

describe('address arithmetic', () => {
  test('IPv4/IPv6 parse, canonical text, CIDR validation, default pools', async () => {
    const { canonicalIp, formatIp, parseCidrLoose } = await import('../src/common/ipaddr.js');
    const { validateSubnetCidr, defaultPools } = await import('../src/quantum-server/ipaddr.js');
    assert.equal(canonicalIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
    assert.equal(canonicalIp('2001:db8:0:1:0:0:0:0'), '2001:db8:0:1::');
    assert.equal(canonicalIp('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1');
    assert.equal(canonicalIp('2001:0:0:1:1:0:0:1'), '2001::1:1:0:0:1');
    assert.equal(canonicalIp('::ffff:10.1.2.3'), '::ffff:a01:203');
    assert.equal(canonicalIp('::'), '::');
    assert.equal(canonicalIp('10.1.1.2'), '10.1.1.2');
    assert.equal(canonicalIp('10.1.1'), undefined);
    assert.equal(canonicalIp('fe80::1%eth0'), undefined);
    const c = validateSubnetCidr('192.168.1.77/26');
    assert.ok(typeof c !== 'string');
    assert.equal(formatIp(c.network, 4), '192.168.1.64');
    assert.equal(validateSubnetCidr('10/8'), "'10/8' is not a valid IP subnet");
    assert.equal(validateSubnetCidr('2001:db8::'), "'2001:db8::' isn't a recognized IP subnet cidr, '2001:db8::/128' is recommended");
    const v4 = parseCidrLoose('10.0.0.0/30')!;
    assert.deepEqual(defaultPools(v4, 1n + v4.network).map((r) => [formatIp(r.first, 4), formatIp(r.last, 4)]), [['10.0.0.2', '10.0.0.2']]);
    const v6 = parseCidrLoose('2001:db8::/126')!;
    assert.deepEqual(defaultPools(v6, undefined).map((r) => [formatIp(r.first, 6), formatIp(r.last, 6)]), [['2001:db8::1', '2001:db8::3']]);
  });
});
