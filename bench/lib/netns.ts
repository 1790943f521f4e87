// The benchmark's network: a "switch" namespace holding one Linux bridge, a router namespace plugged into it
// with a qr- device and Neutron's metadata iptables rules, and guest namespaces plugged into the same bridge.
// Nothing is created in the root namespace, so deleting the per-run namespaces removes everything.
import { parallel, run } from './exec.js';

export const METADATA_IP = '169.254.169.254';
export const ROUTER_IP = '10.1.1.1';
export const GUEST_IP = '10.1.1.2';
export const LINK_PREFIX_LEN = 16;
/** Neutron's metadata_access_mark and ROUTER_MARK_MASK. */
const MARK = '0x1/0xffff';
/** Neutron's wrapped chain prefix (iptables_manager binary name). */
const WRAP = 'neutron-l3-agent';

export interface Topology {
  prefix: string;
  sw: string;
  router: string;
  qr: string;
  guest: string;
  /** Storm guests, index → namespace and address. */
  guests: { ns: string; ip: string }[];
}

/** A per-run prefix short enough for device names (IFNAMSIZ 15). */
export function runPrefix(): string {
  return `qb${Math.floor(Math.random() * 0xffff).toString(16).padStart(4, '0')}`;
}

/** fa:16:3e is OpenStack's MAC prefix; the rest encodes a small index so neighbours can be static. */
export function macFor(index: number): string {
  const b = [(index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff];
  return ['fa', '16', '3e', ...b.map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

const ROUTER_MAC = macFor(0xfffffe);

async function ipBatch(lines: string[], ns?: string): Promise<void> {
  if (lines.length === 0) return;
  await run(['ip', ...(ns ? ['-n', ns] : []), '-batch', '-'], { input: lines.join('\n') + '\n' });
}

/** Many bare namespaces at once (`ip -batch`, 500 per call), each with its loopback up. */
export async function addNamespaces(names: readonly string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 500) await run(['ip', '-force', '-batch', '-'], { input: names.slice(i, i + 500).map((n) => `netns add ${n}\n`).join('') });
  await parallel(names, 8, async (n) => void (await run(['ip', '-n', n, 'link', 'set', 'lo', 'up'])));
}

/** Neutron's L3 agent metadata rules (Zed driver.py), in wrapped chains, sending :80 to `port`. */
export function neutronRules(port: number): string {
  return [
    '*mangle',
    `:${WRAP}-PREROUTING - [0:0]`,
    `-A PREROUTING -j ${WRAP}-PREROUTING`,
    `-A ${WRAP}-PREROUTING -d ${METADATA_IP}/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark ${MARK}`,
    'COMMIT',
    '*nat',
    `:${WRAP}-PREROUTING - [0:0]`,
    `-A PREROUTING -j ${WRAP}-PREROUTING`,
    `-A ${WRAP}-PREROUTING -d ${METADATA_IP}/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports ${port}`,
    'COMMIT',
    '*filter',
    `:${WRAP}-INPUT - [0:0]`,
    `-A INPUT -j ${WRAP}-INPUT`,
    `-A ${WRAP}-INPUT -m mark --mark ${MARK} -j ACCEPT`,
    `-A ${WRAP}-INPUT -p tcp -m tcp --dport ${port} -j DROP`,
    'COMMIT',
    '',
  ].join('\n');
}

/** Build switch, router and the main guest. Throws (after which the caller runs destroy()). */
export async function createTopology(prefix: string, metadataPort: number): Promise<Topology> {
  const t: Topology = {
    prefix,
    sw: `${prefix}-sw`,
    router: `${prefix}-router`,
    qr: `qr-${prefix}00000`.slice(0, 14),
    guest: `${prefix}-guest`,
    guests: [],
  };
  await ipBatch([`netns add ${t.sw}`, `netns add ${t.router}`, `netns add ${t.guest}`]);
  await ipBatch(
    [
      'link set lo up',
      'link add br0 type bridge forward_delay 0 stp_state 0 mcast_snooping 0',
      'link set br0 up',
      `link add pr type veth peer name ${t.qr} netns ${t.router}`,
      `link add pg type veth peer name eth0 netns ${t.guest}`,
      'link set pr master br0 up',
      'link set pg master br0 up',
    ],
    t.sw,
  );
  await ipBatch(
    ['link set lo up', `link set ${t.qr} address ${ROUTER_MAC}`, `addr add ${ROUTER_IP}/${LINK_PREFIX_LEN} dev ${t.qr}`, `link set ${t.qr} up`],
    t.router,
  );
  await ipBatch(
    [
      'link set lo up',
      `link set eth0 address ${macFor(2)}`,
      `addr add ${GUEST_IP}/${LINK_PREFIX_LEN} dev eth0`,
      'link set eth0 up',
      `route add default via ${ROUTER_IP}`,
      `neigh replace ${ROUTER_IP} lladdr ${ROUTER_MAC} dev eth0 nud permanent`,
    ],
    t.guest,
  );
  await ipBatch([`neigh replace ${GUEST_IP} lladdr ${macFor(2)} dev ${t.qr} nud permanent`], t.router);
  await run(['iptables-restore', '-w'], { ns: t.router, input: neutronRules(metadataPort) });
  return t;
}

/** Point Neutron's REDIRECT (and the INPUT drop beside it) at another local port. */
export async function redirectTo(t: Topology, port: number): Promise<void> {
  await run(
    ['iptables', '-w', '-t', 'nat', '-R', `${WRAP}-PREROUTING`, '1', '-d', `${METADATA_IP}/32`, '-i', 'qr-+', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', String(port)],
    { ns: t.router },
  );
  await run(['iptables', '-w', '-t', 'filter', '-R', `${WRAP}-INPUT`, '2', '-p', 'tcp', '-m', 'tcp', '--dport', String(port), '-j', 'DROP'], { ns: t.router });
}

/** Add storm guests with the given addresses (index i gets ips[i]); each has static neighbours both ways. */
export async function addGuests(t: Topology, ips: string[]): Promise<void> {
  const start = t.guests.length;
  const add = ips.slice(start).map((ip, k) => ({ ns: `${t.prefix}-g${start + k}`, ip, idx: start + k }));
  if (add.length === 0) return;
  await ipBatch(add.map((g) => `netns add ${g.ns}`));
  t.guests.push(...add.map(({ ns, ip }) => ({ ns, ip })));
  await ipBatch(
    add.flatMap((g) => [`link add s${g.idx} type veth peer name eth0 netns ${g.ns}`, `link set s${g.idx} master br0 up`]),
    t.sw,
  );
  const routerNeigh = add.map((g) => `neigh replace ${g.ip} lladdr ${macFor(0x10000 + g.idx)} dev ${t.qr} nud permanent`);
  await ipBatch(routerNeigh, t.router);
  // One `ip` process per guest namespace, a few at a time.
  const queue = [...add];
  const worker = async () => {
    for (let g = queue.shift(); g; g = queue.shift()) {
      await ipBatch(
        [
          'link set lo up',
          `link set eth0 address ${macFor(0x10000 + g.idx)}`,
          `addr add ${g.ip}/${LINK_PREFIX_LEN} dev eth0`,
          'link set eth0 up',
          `route add default via ${ROUTER_IP}`,
          `neigh replace ${ROUTER_IP} lladdr ${ROUTER_MAC} dev eth0 nud permanent`,
        ],
        g.ns,
      );
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

/** Delete every namespace of this run (its devices go with it). Safe to call twice. */
export async function destroyTopology(prefix: string): Promise<void> {
  const { stdout } = await run(['ip', 'netns', 'list'], { allowFail: true });
  const mine = stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`${prefix}-`));
  if (mine.length) await run(['ip', '-force', '-batch', '-'], { input: mine.map((n) => `netns delete ${n}`).join('\n') + '\n', allowFail: true });
}

/** TCP ActiveOpens of a namespace (connections it opened), from its /proc/net/snmp. */
export async function tcpActiveOpens(ns: string): Promise<number> {
  const { stdout } = await run(['cat', '/proc/net/snmp'], { ns });
  const lines = stdout.split('\n').filter((l) => l.startsWith('Tcp:'));
  const keys = lines[0]!.split(/\s+/);
  const vals = lines[1]!.split(/\s+/);
  return Number(vals[keys.indexOf('ActiveOpens')]);
}
